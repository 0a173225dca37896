//! `regwatch inventory`: polls the configured registries live (always fresh, needs no
//! running daemon) and prints repositories with their total / exclusive / shared bytes, or
//! the naming-policy violations.

use crate::config::Config;
use crate::sources::registry_api::inventory::RepoStats;
use crate::sources::registry_api::{Report, poll_once};
use anyhow::Context;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Total bytes, largest first.
    Size,
    /// Exclusive bytes (what deleting the repository frees), largest first.
    Exclusive,
    /// Repository name.
    Name,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "size" => Some(Sort::Size),
            "exclusive" => Some(Sort::Exclusive),
            "name" => Some(Sort::Name),
            _ => None,
        }
    }

    pub fn apply(self, repos: &mut [RepoStats]) {
        match self {
            Sort::Size => repos.sort_by(|a, b| {
                b.total_bytes
                    .cmp(&a.total_bytes)
                    .then_with(|| a.repository.cmp(&b.repository))
            }),
            Sort::Exclusive => repos.sort_by(|a, b| {
                b.exclusive_bytes
                    .cmp(&a.exclusive_bytes)
                    .then_with(|| a.repository.cmp(&b.repository))
            }),
            Sort::Name => repos.sort_by(|a, b| a.repository.cmp(&b.repository)),
        }
    }
}

/// Polls the selected registries; `Ok(false)` when a naming violation was listed (so scripts
/// can fail on it).
pub fn run(
    config: &Config,
    registry: Option<&str>,
    format: OutputFormat,
    sort: Sort,
    show_violations: bool,
) -> anyhow::Result<bool> {
    let selected: Vec<_> = match registry {
        Some(name) => vec![config.registry(name).with_context(|| {
            format!(
                "no registry named {name:?} in the config (configured: {})",
                config
                    .registries
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?],
        None => config.registries.iter().collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut reports = Vec::new();
    for r in selected {
        let mut rep = runtime
            .block_on(poll_once(r))
            .with_context(|| format!("polling registry {} ({})", r.name, r.url))?;
        sort.apply(&mut rep.accounting.per_repository);
        reports.push(rep);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if show_violations {
        print_violations(&mut out, &reports, format)?;
        return Ok(reports.iter().all(|r| r.violations.is_empty()));
    }
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "registries": reports }))?;
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            writeln!(
                out,
                "registry,repository,tags,manifests,total_bytes,exclusive_bytes,shared_bytes"
            )?;
            for rep in &reports {
                for r in &rep.accounting.per_repository {
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{}",
                        csv(&rep.registry),
                        csv(&r.repository),
                        r.tags,
                        r.manifests,
                        r.total_bytes,
                        r.exclusive_bytes,
                        r.shared_bytes
                    )?;
                }
            }
        }
        OutputFormat::Table => {
            for rep in &reports {
                print_table(&mut out, rep)?;
            }
        }
    }
    out.flush()?;
    Ok(true)
}

fn print_table(out: &mut impl Write, rep: &Report) -> std::io::Result<()> {
    let a = &rep.accounting;
    writeln!(
        out,
        "registry {}: {} repositories, {} tags, {} unique ({} requests, {:.2}s)",
        rep.registry,
        a.repositories,
        a.tags,
        human_bytes(a.unique_bytes),
        rep.requests,
        rep.duration_seconds
    )?;
    let header = [
        "REPOSITORY",
        "TAGS",
        "MANIFESTS",
        "TOTAL",
        "EXCLUSIVE",
        "SHARED",
    ];
    let rows: Vec<[String; 6]> = a
        .per_repository
        .iter()
        .map(|r| {
            [
                r.repository.clone(),
                r.tags.to_string(),
                r.manifests.to_string(),
                human_bytes(r.total_bytes),
                human_bytes(r.exclusive_bytes),
                human_bytes(r.shared_bytes),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .enumerate()
            // Names left, numbers right, so columns of sizes line up.
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(&header.map(String::from)))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

fn print_violations(
    out: &mut impl Write,
    reports: &[Report],
    format: OutputFormat,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let v: Vec<_> = reports
                .iter()
                .map(|r| serde_json::json!({ "registry": r.registry, "violations": r.violations }))
                .collect();
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "registries": v }))?;
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            writeln!(out, "registry,repository,tag,pattern")?;
            for rep in reports {
                for v in &rep.violations {
                    writeln!(
                        out,
                        "{},{},{},{}",
                        csv(&rep.registry),
                        csv(&v.repository),
                        csv(v.tag.as_deref().unwrap_or("")),
                        csv(&v.pattern)
                    )?;
                }
            }
        }
        OutputFormat::Table => {
            for rep in reports {
                writeln!(
                    out,
                    "registry {}: {} naming violation(s)",
                    rep.registry,
                    rep.violations.len()
                )?;
                for v in &rep.violations {
                    match &v.tag {
                        None => writeln!(
                            out,
                            "  repository {} does not match {}",
                            v.repository, v.pattern
                        )?,
                        Some(t) => writeln!(
                            out,
                            "  tag {}:{} does not match {}",
                            v.repository, t, v.pattern
                        )?,
                    }
                }
            }
        }
    }
    Ok(())
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// 1536 → "1.5 KiB": sizes people read.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_and_csv() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(super::csv("a,\"b"), "\"a,\"\"b\"");
    }
}
