//! `regwatch retention plan`: the tags each `[[retention]]` policy would delete and exactly
//! the bytes deleting their manifests and then running `docker-registry garbage-collect`
//! would free. Read-only: it polls the registry live, reads the per-tag facts the daemon
//! stored (push and pull times), and never deletes anything; `--emit-script` prints the
//! `curl -X DELETE` lines an operator would run.
//!

use crate::config::{Config, RegistryConfig};
use crate::model::csv;
use crate::model::retention::{self, Plan, Policy, Tag};
use crate::model::text::human_bytes;
use crate::sources::registry_api::retention::{FactsByTag, by_tag, tags_with_facts};
use crate::sources::registry_api::{TagGraph, poll_with_graph};
use crate::sources::storage::{self as monitor, Storage, walk};
use crate::store::{Store, StoreError};
use anyhow::Context;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Only this policy (by its name in the config); default: every policy.
    #[arg(long)]
    pub policy: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Print the `curl -X DELETE` lines that would carry out the plan, instead of the plan.
    #[arg(long)]
    pub emit_script: bool,
}

/// The stored facts of `registry`'s tags by (repository, tag); empty (with a note on
/// stderr) when the daemon has not created the database yet.
pub fn stored_facts(config: &Config, registry: &str) -> anyhow::Result<FactsByTag> {
    let store = Store::open(&config.database)?;
    let facts = match store.reader() {
        Ok(r) => r.tag_facts(registry)?,
        Err(StoreError::Missing { .. }) => {
            eprintln!(
                "note: no database at {} yet: push and pull times are unknown (run the daemon)",
                config.database.target
            );
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    Ok(by_tag(facts))
}

/// One candidate as printed.
#[derive(Debug, Serialize)]
struct CandidateLine {
    registry: String,
    repository: String,
    tag: String,
    digest: String,
    last_pulled_at: Option<String>,
    pushed_at: Option<String>,
    exclusive_bytes: u64,
}

/// One policy's plan as printed.
#[derive(Debug, Serialize)]
struct PlanOut {
    policy: String,
    registry: String,
    candidates: Vec<CandidateLine>,
    reclaimable_bytes: u64,
    reclaimable_blobs: u64,
    /// Tags the policy would delete but cannot: a kept tag points at the same digest.
    held_by_kept_tags: Vec<String>,
    /// `DELETE /v2/<repository>/manifests/<digest>`, in this order.
    deletions: Vec<Deletion>,
    /// What garbage-collect would free today, before any deletion (from the storage walk;
    /// `null` without storage configured). Not part of `reclaimable_bytes`.
    already_reclaimable_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Deletion {
    repository: String,
    digest: String,
}

/// Computes the plan of `policy` (pure) from a poll of its registry and the stored facts.
fn plan_of(policy: &Policy, tg: &TagGraph, facts: &FactsByTag, now: OffsetDateTime) -> Plan {
    let tags: Vec<Tag> = tags_with_facts(tg, facts)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    retention::plan(policy, &tags, &tg.graph, now)
}

fn fmt_time(t: Option<OffsetDateTime>) -> Option<String> {
    t.map(crate::model::text::format_time)
}

fn already_reclaimable(config: &Config, r: &RegistryConfig) -> anyhow::Result<Option<u64>> {
    let Some(storage) = Storage::of(r) else {
        return Ok(None);
    };
    let opts = walk::WalkOptions {
        known_manifests: Some(monitor::known_manifests(
            &Store::open(&config.database)?,
            &r.name,
        )),
        ..walk::WalkOptions::default()
    };
    let walked = monitor::walk_storage(&storage, &opts).0?;
    Ok(Some(walked.report.reclaimable_bytes))
}

/// `regwatch retention plan`.
pub fn run(config: &Config, args: &PlanArgs) -> anyhow::Result<()> {
    let policies: Vec<&Policy> =
        match &args.policy {
            Some(name) => {
                vec![config.retention.iter().find(|p| &p.name == name).with_context(|| {
            format!(
                "no [[retention]] policy named {name:?} in the config (configured: {})",
                names(config)
            )
        })?]
            }
            None => config.retention.iter().collect(),
        };
    anyhow::ensure!(
        !policies.is_empty(),
        "no [[retention]] policy in the config: add one (see packaging/regwatch.example.toml)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let now = OffsetDateTime::now_utc();
    let mut polled: HashMap<&str, (TagGraph, FactsByTag)> = HashMap::new();
    let mut plans = Vec::new();
    for p in policies {
        let r = config
            .registry(&p.registry)
            .expect("the config checks policy registries");
        if !polled.contains_key(r.name.as_str()) {
            let (_, tg) = runtime
                .block_on(poll_with_graph(r))
                .with_context(|| format!("polling registry {} ({})", r.name, r.url))?;
            polled.insert(&r.name, (tg, stored_facts(config, &r.name)?));
        }
        let (tg, facts) = &polled[r.name.as_str()];
        let plan = plan_of(p, tg, facts, now);
        plans.push((r, output(p, &r.name, plan, already_reclaimable(config, r)?)));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.emit_script {
        for (r, plan) in &plans {
            emit_script(&mut out, r, plan)?;
        }
        out.flush()?;
        return Ok(());
    }
    let plans: Vec<PlanOut> = plans.into_iter().map(|(_, p)| p).collect();
    print(&mut out, &plans, args.format)?;
    out.flush()?;
    Ok(())
}

fn names(config: &Config) -> String {
    config
        .retention
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn output(p: &Policy, registry: &str, plan: Plan, already: Option<u64>) -> PlanOut {
    PlanOut {
        policy: p.name.clone(),
        registry: registry.to_string(),
        candidates: plan
            .candidates
            .into_iter()
            .map(|c| CandidateLine {
                registry: registry.to_string(),
                repository: c.tag.repository,
                tag: c.tag.tag,
                digest: c.tag.digest,
                last_pulled_at: fmt_time(c.tag.last_pulled_at),
                pushed_at: fmt_time(c.tag.pushed_at),
                exclusive_bytes: c.exclusive_bytes,
            })
            .collect(),
        reclaimable_bytes: plan.reclaimable_bytes,
        reclaimable_blobs: plan.reclaimable_blobs,
        held_by_kept_tags: plan
            .held
            .into_iter()
            .map(|t| format!("{}:{}", t.repository, t.tag))
            .collect(),
        deletions: plan
            .deletions
            .into_iter()
            .map(|(repository, digest)| Deletion { repository, digest })
            .collect(),
        already_reclaimable_bytes: already,
    }
}

/// One plan object for one policy; a JSON array of them for several.
fn print(out: &mut impl Write, plans: &[PlanOut], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            match plans {
                [one] => serde_json::to_writer_pretty(&mut *out, one)?,
                many => serde_json::to_writer_pretty(&mut *out, many)?,
            }
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            csv::write_record(
                &mut *out,
                [
                    "policy",
                    "registry",
                    "repository",
                    "tag",
                    "digest",
                    "last_pulled_at",
                    "pushed_at",
                    "exclusive_bytes",
                ],
            )?;
            for p in plans {
                for c in &p.candidates {
                    csv::write_record(
                        &mut *out,
                        [
                            p.policy.as_str(),
                            c.registry.as_str(),
                            c.repository.as_str(),
                            c.tag.as_str(),
                            c.digest.as_str(),
                            c.last_pulled_at.as_deref().unwrap_or(""),
                            c.pushed_at.as_deref().unwrap_or(""),
                            &c.exclusive_bytes.to_string(),
                        ],
                    )?;
                }
            }
        }
        OutputFormat::Table => {
            for p in plans {
                print_table(out, p)?;
            }
        }
    }
    Ok(())
}

fn print_table(out: &mut impl Write, p: &PlanOut) -> std::io::Result<()> {
    writeln!(
        out,
        "policy {} (registry {}): {} candidate tag(s), {} reclaimable ({} blobs) after deleting {} manifest(s) and running garbage-collect",
        p.policy,
        p.registry,
        p.candidates.len(),
        human_bytes(p.reclaimable_bytes),
        p.reclaimable_blobs,
        p.deletions.len()
    )?;
    if let Some(a) = p.already_reclaimable_bytes {
        writeln!(
            out,
            "  already reclaimable today (not counted above): {}",
            human_bytes(a)
        )?;
    }
    for c in &p.candidates {
        writeln!(
            out,
            "  {}:{}  {}  pushed {}  last pulled {}  exclusive {}",
            c.repository,
            c.tag,
            c.digest.chars().take(19).collect::<String>(),
            c.pushed_at.as_deref().unwrap_or("-"),
            c.last_pulled_at.as_deref().unwrap_or("never"),
            human_bytes(c.exclusive_bytes)
        )?;
    }
    for h in &p.held_by_kept_tags {
        writeln!(out, "  {h}: kept, a kept tag points at the same digest")?;
    }
    Ok(())
}

/// The shell lines that carry the plan out; credentials from the environment, never here.
fn emit_script(out: &mut impl Write, r: &RegistryConfig, p: &PlanOut) -> std::io::Result<()> {
    writeln!(out, "#!/bin/sh")?;
    writeln!(
        out,
        "# regwatch retention plan: policy {}, registry {}: frees {} bytes after garbage-collect",
        p.policy, p.registry, p.reclaimable_bytes
    )?;
    writeln!(out, "set -eu")?;
    let base = r.url.trim_end_matches('/');
    for d in &p.deletions {
        writeln!(
            out,
            "curl -fsS -X DELETE -u \"$REGISTRY_USER:$REGISTRY_PASSWORD\" '{base}/v2/{}/manifests/{}'",
            d.repository, d.digest
        )?;
    }
    writeln!(
        out,
        "# then, on the registry host: docker-registry garbage-collect /etc/docker/registry/config.yml"
    )?;
    Ok(())
}
