//! `regwatch audit query | export | verify`.

use super::UsageError;
use crate::config::report::Format;
use crate::model::text::parse_time;
use crate::report::export;
use crate::report::grouped::{self, Grouper};
use crate::store::{AuditRow, Filter, Reader, Store, Verdict};
use anyhow::Context;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Filters shared by `query` and `export`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// From this time on: 2026-11-28, 2026-11-28T10:00:00Z, or a duration back from now (24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this user (as the registry or proxy knew them).
    #[arg(long)]
    pub actor: Option<String>,
    /// Repository name or glob, e.g. 'prod/*'.
    #[arg(long)]
    pub repository: Option<String>,
    /// push, pull, mount, delete, auth_failure, monitor_start, monitor_stop, config_reload,
    /// tag_created, tag_moved, tag_deleted, repository_created, repository_deleted,
    /// signature_attached.
    #[arg(long)]
    pub action: Option<String>,
    /// Client address (10.0.0.5 also matches 10.0.0.5:port).
    #[arg(long)]
    pub address: Option<String>,
    /// Registry name from the config.
    #[arg(long)]
    pub registry: Option<String>,
    /// notification, poll, log or daemon.
    #[arg(long)]
    pub source: Option<String>,
}

impl FilterArgs {
    pub fn to_filter(&self) -> anyhow::Result<Filter> {
        let now = time::OffsetDateTime::now_utc();
        let t = |v: &Option<String>, flag: &str| {
            v.as_deref()
                .map(|s| parse_time(s, now).map_err(|e| UsageError(format!("--{flag}: {e}"))))
                .transpose()
        };
        if let Some(a) = &self.action
            && crate::model::event::Action::parse(a).is_none()
        {
            return Err(UsageError(format!(
                "--action: unknown action {a:?}: expected one of {}",
                crate::model::event::Action::ALL
                    .map(|a| a.as_str())
                    .join(", ")
            ))
            .into());
        }
        Ok(Filter {
            since: t(&self.since, "since")?,
            until: t(&self.until, "until")?,
            actor: self.actor.clone(),
            repository: self.repository.clone(),
            action: self.action.clone(),
            address: self.address.clone(),
            registry: self.registry.clone(),
            source: self.source.clone(),
            after_id: None,
            limit: None,
        })
    }
}

fn open(store: &Store) -> anyhow::Result<Reader> {
    Ok(store.reader()?)
}

/// `audit query`: a readable table (or the grouped activity view) on stdout.
pub fn query(
    store: &Store,
    filter: &FilterArgs,
    limit: u64,
    grouped_view: bool,
) -> anyhow::Result<()> {
    let db = open(store)?;
    let mut f = filter.to_filter()?;
    f.limit = (limit > 0).then_some(limit);
    let rows: Vec<AuditRow> = db.event_rows(&f)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if grouped_view {
        let mut g = Grouper::default();
        rows.iter().for_each(|r| g.push(r));
        for a in g.finish() {
            writeln!(out, "{}  {}", a.time, grouped::describe(&a))?;
        }
    } else {
        let table: Vec<[String; 8]> = rows
            .iter()
            .map(|r| {
                let reference = match (&r.tag, &r.digest) {
                    (Some(t), _) => t.clone(),
                    (None, Some(d)) => d.chars().take(19).collect(),
                    _ => String::new(),
                };
                [
                    r.id.to_string(),
                    r.time.clone(),
                    r.action.clone(),
                    r.actor.clone().unwrap_or_default(),
                    r.repository.clone().unwrap_or_default(),
                    reference,
                    r.remote_addr.clone().unwrap_or_default(),
                    format!(
                        "{}{}",
                        r.source,
                        r.method
                            .as_deref()
                            .map(|m| format!(" {m}"))
                            .unwrap_or_default()
                    ),
                ]
            })
            .collect();
        let header = [
            "ID",
            "TIME",
            "ACTION",
            "ACTOR",
            "REPOSITORY",
            "REF",
            "ADDRESS",
            "SOURCE",
        ];
        let mut widths = header.map(str::len);
        for row in &table {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        writeln!(out, "{}", line(&header.map(String::from)))?;
        for row in &table {
            writeln!(out, "{}", line(row))?;
        }
    }
    out.flush()?;
    if limit > 0 && rows.len() as u64 == limit {
        eprintln!("(first {limit} rows; --limit 0 shows all, `audit export` streams any number)");
    }
    Ok(())
}

/// `audit export`: streams to `--output` (created 0600: the trail names people) or stdout.
pub fn export_to(
    store: &Store,
    filter: &FilterArgs,
    format: Format,
    output: Option<&PathBuf>,
) -> anyhow::Result<u64> {
    let db = open(store)?;
    let f = filter.to_filter()?;
    let n = match output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut out = BufWriter::with_capacity(1 << 16, file);
            let n = export::export(&db, &f, format, &mut out)?;
            out.flush()?;
            n
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            let n = export::export(&db, &f, format, &mut out)?;
            out.flush()?;
            n
        }
    };
    Ok(n)
}

/// `audit verify`: prints the verdict; `Ok(false)` when the chain is broken.
pub fn verify(store: &Store, expect_head: Option<&str>) -> anyhow::Result<bool> {
    let db = open(store)?;
    if let Err(problems) = db.integrity()? {
        println!("BROKEN: SQLite reports a damaged database file: {problems}");
        return Ok(false);
    }
    match db.verify(expect_head)? {
        Verdict::Ok { rows, head, anchor } => {
            println!("OK: {rows} rows, every link intact");
            println!("head {head}");
            if let Some(a) = anchor {
                println!(
                    "anchored at row {} (retention removed {} older rows, up to {})",
                    a.first_id, a.rows_deleted, a.deleted_until
                );
            }
            Ok(true)
        }
        Verdict::Broken {
            problem,
            rows_checked,
        } => {
            println!("BROKEN: {problem}");
            println!("({rows_checked} rows verified before it)");
            Ok(false)
        }
    }
}
