//! The layer map in the crate doc, enforced: every `crate::<module>` path in non-test code
//! must be one the map allows, and the map itself must only point down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A top-level module's row: its layer, its position in the table, what it may import.
#[derive(Debug)]
struct Row {
    layer: u32,
    position: usize,
    may_import: BTreeSet<String>,
}

/// Parses the `| layer | [`module`] | … | may import |` rows of the crate doc.
fn map(lib_rs: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(rest) = line.strip_prefix("//! | ") else {
            continue;
        };
        let cells: Vec<&str> = rest.split(" | ").collect();
        let Ok(layer) = cells[0].trim().parse::<u32>() else {
            continue;
        };
        let module = cells[1]
            .trim()
            .trim_matches(|c| "[]`".contains(c))
            .to_string();
        let may_import = cells
            .last()
            .expect("a row has cells")
            .trim_end_matches(" |")
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| !m.is_empty() && m != "—")
            .collect();
        let position = rows.len();
        rows.insert(
            module,
            Row {
                layer,
                position,
                may_import,
            },
        );
    }
    rows
}

/// The text without `// …` comments (doc links name other modules freely) and without the
/// bodies of `#[cfg(test)]` modules (tests may reach anywhere).
fn production_code(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item the attribute is on: up to its matching closing brace (or `;`).
        let Some(open) = after.find(['{', ';']) else {
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, b) in after.bytes().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level modules a file's code names: `crate::x`, `use crate::{x, y::z}`, and
/// `super::` chains that climb to the crate root (`depth` is the file's module depth).
fn imports(code: &str, depth: usize) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = &code[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').map(|p| ident(p.trim())));
        } else {
            found.insert(ident(after));
        }
    }
    let climb = "super::".repeat(depth);
    if depth > 0 {
        for (i, _) in code.match_indices(&climb) {
            found.insert(ident(&code[i + climb.len()..]));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to and its module depth (`a/mod.rs` is `a` at 1,
/// `a/b.rs` is `a::b` at 2); `None` for the crate root files.
fn module_of(src: &Path, file: &Path) -> Option<(String, usize)> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.len() == 1 && matches!(parts[0].as_str(), "lib" | "main" | "layering") {
        return None;
    }
    let depth = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod"));
    Some((parts[0].clone(), depth))
}

/// Every import the map does not allow, as `file: module imports other`.
fn violations(src: &Path) -> Vec<String> {
    let rows = map(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let Some((module, depth)) = module_of(src, &file) else {
            continue;
        };
        let Some(row) = rows.get(&module) else {
            bad.push(format!(
                "{}: module {module} is not in the crate doc's map",
                file.display()
            ));
            continue;
        };
        let code = production_code(&std::fs::read_to_string(&file).expect("readable"));
        for other in imports(&code, depth) {
            if other != module && !row.may_import.contains(&other) {
                bad.push(format!(
                    "{}: {module} (layer {}) imports {other}, which its row does not allow",
                    file.display(),
                    row.layer
                ));
            }
        }
    }
    bad
}

#[test]
fn the_map_points_down_only() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    let rows = map(&lib);
    assert!(
        rows.len() >= 10,
        "the map has a row per top-level module: {rows:?}"
    );
    for (module, row) in &rows {
        for other in &row.may_import {
            let target = rows
                .get(other)
                .unwrap_or_else(|| panic!("{module} may import {other}, which has no row"));
            // Down the layers, or within one layer up the table: either way to an earlier
            // row, so the allowed graph has no cycle.
            assert!(
                target.layer <= row.layer && target.position < row.position,
                "{module} (layer {}) may import {other} (layer {}): imports must point to lower layers or earlier rows",
                row.layer,
                target.layer
            );
        }
    }
}

#[test]
fn every_import_is_allowed_by_the_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "imports against the layer map:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_imports_and_skips_tests_and_comments() {
    let code = production_code(
        "use crate::store::Sink;\nuse crate::{config, model::Event};\n// crate::http is only named\n\
         fn f() { super::super::daemon::run(); }\n#[cfg(test)]\nmod tests { use crate::daemon; }\n",
    );
    let found = imports(&code, 2);
    let want: BTreeSet<String> = ["config", "daemon", "model", "store"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
    let rows =
        map("//! | 1 | [`config`] | data | `model`, `formats` |\n//! | 0 | [`model`] | x | — |");
    assert_eq!(rows["config"].layer, 1);
    assert!(rows["config"].may_import.contains("formats"));
    assert!(rows["model"].may_import.is_empty());
}
