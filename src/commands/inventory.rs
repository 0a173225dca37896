//! `regwatch inventory`: polls the configured registries live (always fresh, needs no
//! running daemon) and prints repositories with their total / exclusive / shared bytes, the
//! naming-policy violations, or one row per image tag with its signatures.

use crate::commands::retention as retention_cmd;
use crate::config::Config;
use crate::model::csv;
use crate::model::retention::{self, Tag};
use crate::model::text::human_bytes;
use crate::sources::registry_api::inventory;
use crate::sources::registry_api::tags::TagRow;
use crate::sources::registry_api::{Report, TagGraph, poll_once, poll_with_graph};
use crate::store::TagFact;
use anyhow::Context;
use std::collections::HashMap;
use std::io::Write;

/// What `regwatch inventory` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Repositories with their bytes (the default).
    Repositories,
    /// Naming-policy violations (`--violations`).
    Violations,
    /// One row per image tag (`--tags`).
    Tags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// `--sort`: the CLI's face of [`inventory::Sort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Total bytes, largest first.
    Size,
    /// Exclusive bytes (what deleting the repository frees), largest first.
    Exclusive,
    /// Repository name.
    Name,
}

impl From<Sort> for inventory::Sort {
    fn from(s: Sort) -> Self {
        match s {
            Sort::Size => inventory::Sort::Size,
            Sort::Exclusive => inventory::Sort::Exclusive,
            Sort::Name => inventory::Sort::Name,
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
    view: View,
    unused: Option<std::time::Duration>,
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
    let mut retention = Vec::new();
    for r in selected {
        let poll = async {
            if view == View::Tags {
                poll_with_graph(r).await.map(|(rep, tg)| (rep, Some(tg)))
            } else {
                poll_once(r).await.map(|rep| (rep, None))
            }
        };
        let (mut rep, tg) = runtime
            .block_on(poll)
            .with_context(|| format!("polling registry {} ({})", r.name, r.url))?;
        inventory::Sort::from(sort).apply(&mut rep.accounting.per_repository);
        if let Some(tg) = tg {
            retention.push(Facts::of(config, &r.name, tg)?);
        }
        reports.push(rep);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match view {
        View::Violations => {
            print_violations(&mut out, &reports, format)?;
            return Ok(reports.iter().all(|r| r.violations.is_empty()));
        }
        View::Tags => {
            let cutoff = unused.map(|d| time::OffsetDateTime::now_utc() - d);
            print_tags(&mut out, &reports, &retention, cutoff, format)?;
            out.flush()?;
            return Ok(true);
        }
        View::Repositories => {}
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
                    csv::write_record(
                        &mut out,
                        [
                            rep.registry.clone(),
                            r.repository.clone(),
                            r.tags.to_string(),
                            r.manifests.to_string(),
                            r.total_bytes.to_string(),
                            r.exclusive_bytes.to_string(),
                            r.shared_bytes.to_string(),
                        ],
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

/// What the store knows of a registry's tags, and each tagged manifest's exclusive bytes.
struct Facts {
    by_tag: HashMap<(String, String), Tag>,
    stored: HashMap<(String, String), TagFact>,
    exclusive: HashMap<(String, String), u64>,
}

impl Facts {
    fn of(config: &Config, registry: &str, tg: TagGraph) -> anyhow::Result<Facts> {
        let stored = retention_cmd::stored_facts(config, registry)?;
        let joined = crate::sources::registry_api::retention::tags_with_facts(&tg, &stored);
        let tags: Vec<Tag> = joined.iter().map(|(t, _)| t.clone()).collect();
        let excl = retention::exclusive_bytes(&tags, &tg.graph);
        let exclusive = tags
            .iter()
            .map(|t| {
                let key = (t.repository.clone(), t.digest.clone());
                let bytes = excl(&t.repository, &t.digest);
                (key, bytes)
            })
            .collect();
        let mut by_tag = HashMap::new();
        let mut kept = HashMap::new();
        for (t, f) in joined {
            let key = (t.repository.clone(), t.tag.clone());
            if let Some(f) = f {
                kept.insert(key.clone(), f);
            }
            by_tag.insert(key, t);
        }
        Ok(Facts {
            by_tag,
            stored: kept,
            exclusive,
        })
    }
}

/// One tag row with its registry: the unit of `--tags` output in every format.
#[derive(serde::Serialize)]
struct TagLine<'a> {
    registry: &'a str,
    #[serde(flatten)]
    row: &'a TagRow,
    /// When it was pushed to this digest (or first seen there); `null` when unknown.
    pushed_at: Option<String>,
    /// `null` when never seen pulled.
    last_pulled_at: Option<String>,
    last_puller: Option<String>,
    /// What deleting this tag's manifest alone would free.
    exclusive_bytes: u64,
    /// The naming-policy pattern (`tag_pattern`) the tag does not match; `null` when it does
    /// (or no policy is set).
    naming_violation: Option<&'a str>,
}

impl<'a> TagLine<'a> {
    fn new(rep: &'a Report, row: &'a TagRow, facts: &Facts) -> TagLine<'a> {
        let registry = rep.registry.as_str();
        let naming_violation = rep
            .violations
            .iter()
            .find(|v| v.repository == row.repository && v.tag.as_deref() == Some(&row.tag))
            .map(|v| v.pattern.as_str());
        let key = (row.repository.clone(), row.tag.clone());
        let tag = facts.by_tag.get(&key);
        let fmt = |t: Option<time::OffsetDateTime>| t.map(crate::model::text::format_time);
        TagLine {
            registry,
            row,
            pushed_at: fmt(tag.and_then(|t| t.pushed_at)),
            last_pulled_at: fmt(tag.and_then(|t| t.last_pulled_at)),
            last_puller: facts.stored.get(&key).and_then(|f| f.last_puller.clone()),
            exclusive_bytes: facts
                .exclusive
                .get(&(row.repository.clone(), row.digest.clone()))
                .copied()
                .unwrap_or(0),
            naming_violation,
        }
    }

    /// Not pulled since `cutoff`, or never pulled and pushed before it.
    fn unused_since(&self, cutoff: time::OffsetDateTime) -> bool {
        let before = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| t < crate::model::text::format_time(cutoff).as_str())
        };
        match &self.last_pulled_at {
            Some(_) => before(&self.last_pulled_at),
            None => before(&self.pushed_at),
        }
    }
}

/// A column of the `--tags` table and CSV: its header, its CSV name, its value (as CSV and
/// JSON write it) and how the table shows it. A field added to [`TagRow`] becomes visible by
/// adding its column here.
struct Column {
    header: &'static str,
    name: &'static str,
    /// Right-aligned (numbers).
    right: bool,
    value: fn(&TagLine<'_>) -> String,
    shown: Option<fn(&TagLine<'_>) -> String>,
}

impl Column {
    const fn left(
        header: &'static str,
        name: &'static str,
        value: fn(&TagLine<'_>) -> String,
    ) -> Column {
        Column {
            header,
            name,
            right: false,
            value,
            shown: None,
        }
    }

    const fn right(
        header: &'static str,
        name: &'static str,
        value: fn(&TagLine<'_>) -> String,
    ) -> Column {
        Column {
            right: true,
            ..Column::left(header, name, value)
        }
    }

    /// Shown differently in the table (shorter, for people).
    const fn shown_as(self, shown: fn(&TagLine<'_>) -> String) -> Column {
        Column {
            shown: Some(shown),
            ..self
        }
    }

    fn table_cell(&self, l: &TagLine<'_>) -> String {
        (self.shown.unwrap_or(self.value))(l)
    }
}

const TAG_COLUMNS: &[Column] = &[
    Column::left("REGISTRY", "registry", |l| l.registry.to_string()),
    Column::left("REPOSITORY", "repository", |l| l.row.repository.clone()),
    Column::left("TAG", "tag", |l| l.row.tag.clone()),
    // `sha256:` and 12 hex digits in the table, as `docker images` shows an id.
    Column::left("DIGEST", "digest", |l| l.row.digest.clone())
        .shown_as(|l| l.row.digest.chars().take(19).collect()),
    Column::left("SIGNATURE", "signature", |l| l.row.signature.to_string()),
    Column::right("SIGS", "signatures", |l| l.row.signatures.to_string()),
    Column::right("ATTS", "attestations", |l| l.row.attestations.to_string()),
    Column::left("SBOM", "sbom", |l| l.row.sbom.to_string())
        .shown_as(|l| if l.row.sbom { "yes" } else { "no" }.into()),
    Column::left("SIGNED BY", "signed_by", |l| l.row.signed_by.join(" ")),
    Column::left("PUSHED", "pushed_at", |l| opt(&l.pushed_at))
        .shown_as(|l| short_time(&l.pushed_at, "-")),
    Column::left("LAST PULLED", "last_pulled_at", |l| opt(&l.last_pulled_at))
        .shown_as(|l| short_time(&l.last_pulled_at, "never")),
    Column::left("LAST PULLER", "last_puller", |l| opt(&l.last_puller)),
    Column::right("EXCLUSIVE", "exclusive_bytes", |l| {
        l.exclusive_bytes.to_string()
    })
    .shown_as(|l| human_bytes(l.exclusive_bytes)),
    Column::left("NAMING", "naming_violation", |l| {
        l.naming_violation.unwrap_or_default().to_string()
    })
    .shown_as(|l| match l.naming_violation {
        Some(p) => format!("violates {p}"),
        None => "ok".into(),
    }),
];

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// `2026-11-28 10:00` in the table (minutes are enough to read).
fn short_time(v: &Option<String>, none: &str) -> String {
    match v {
        Some(t) => t.get(..16).unwrap_or(t).replace('T', " "),
        None => none.to_string(),
    }
}

fn print_tags(
    out: &mut impl Write,
    reports: &[Report],
    facts: &[Facts],
    unused: Option<time::OffsetDateTime>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let lines: Vec<TagLine<'_>> = reports
        .iter()
        .zip(facts)
        .flat_map(|(rep, f)| {
            rep.tag_rows
                .iter()
                .map(move |row| TagLine::new(rep, row, f))
        })
        .filter(|l| unused.is_none_or(|cutoff| l.unused_since(cutoff)))
        .collect();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &lines)?;
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            csv::write_record(&mut *out, TAG_COLUMNS.iter().map(|c| c.name))?;
            for l in &lines {
                csv::write_record(&mut *out, TAG_COLUMNS.iter().map(|c| (c.value)(l)))?;
            }
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = lines
                .iter()
                .map(|l| TAG_COLUMNS.iter().map(|c| c.table_cell(l)).collect())
                .collect();
            print_columns(out, &rows)?;
        }
    }
    Ok(())
}

/// The `--tags` table: columns as wide as their widest cell, numbers right-aligned.
fn print_columns(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let header: Vec<String> = TAG_COLUMNS.iter().map(|c| c.header.to_string()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(TAG_COLUMNS)
            .map(|((c, w), col)| {
                if col.right {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for row in rows {
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
                    csv::write_record(
                        &mut *out,
                        [
                            rep.registry.as_str(),
                            v.repository.as_str(),
                            v.tag.as_deref().unwrap_or(""),
                            v.pattern.as_str(),
                        ],
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
