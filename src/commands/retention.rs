//! `regwatch retention plan`: the tags each `[[retention]]` policy would delete and exactly
//! the bytes deleting their manifests and then running `docker-registry garbage-collect`
//! would free. Read-only: it polls the registry live, reads the per-tag facts the daemon
//! stored (push and pull times), and never deletes anything; `--emit-script` prints the
//! `curl -X DELETE` lines an operator would run.
//!

use crate::config::{Config, RegistryConfig};
use crate::model::retention::{self, Plan, Policy, PolicyPlan, Tag};
use crate::report::retention::{self as shown, PlanOut};
use crate::sources::registry_api::retention::{FactsByTag, by_tag, tags_with_facts};
use crate::sources::registry_api::{TagGraph, poll_with_graph};
use crate::sources::storage::{self as monitor, Storage, walk};
use crate::store::{Store, StoreError};
use anyhow::Context;
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

/// Computes the plan of `policy` (pure) from a poll of its registry and the stored facts.
fn plan_of(policy: &Policy, tg: &TagGraph, facts: &FactsByTag, now: OffsetDateTime) -> Plan {
    let tags: Vec<Tag> = tags_with_facts(tg, facts)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    retention::plan(policy, &tags, &tg.graph, now)
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
    let policies: Vec<&Policy> = match &args.policy {
        Some(name) => vec![
            config
                .retention
                .iter()
                .find(|p| &p.name == name)
                .with_context(|| {
                    format!(
                        "no [[retention]] policy named {name:?} in the config (configured: {})",
                        names(config)
                    )
                })?,
        ],
        None => config.retention.iter().collect(),
    };
    anyhow::ensure!(
        !policies.is_empty(),
        "no [[retention]] policy in the config: add one (see packaging/regwatch.example.toml)"
    );
    let plans = plans(config, &policies)?;
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

/// The plans of `policies` as of now: each registry polled once, live, with the stored facts
/// and, where its storage is configured, a walk for what is already reclaimable.
pub fn plans<'c>(
    config: &'c Config,
    policies: &[&Policy],
) -> anyhow::Result<Vec<(&'c RegistryConfig, PlanOut)>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let now = OffsetDateTime::now_utc();
    let mut polled: HashMap<&str, (TagGraph, FactsByTag, Option<u64>)> = HashMap::new();
    let mut plans = Vec::new();
    for p in policies {
        let r = config
            .registry(&p.registry)
            .expect("the config checks policy registries");
        if !polled.contains_key(r.name.as_str()) {
            let (_, tg) = runtime
                .block_on(poll_with_graph(r))
                .with_context(|| format!("polling registry {} ({})", r.name, r.url))?;
            let facts = stored_facts(config, &r.name)?;
            polled.insert(&r.name, (tg, facts, already_reclaimable(config, r)?));
        }
        let (tg, facts, already) = &polled[r.name.as_str()];
        let plan = PolicyPlan {
            policy: p.name.clone(),
            registry: r.name.clone(),
            at: now,
            plan: plan_of(p, tg, facts, now),
        };
        plans.push((r, PlanOut::of(plan, *already)));
    }
    Ok(plans)
}

fn names(config: &Config) -> String {
    config
        .retention
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the plans in `format`.
fn print(out: &mut dyn Write, plans: &[PlanOut], format: OutputFormat) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => shown::json(out, plans),
        OutputFormat::Csv => shown::csv(out, plans),
        OutputFormat::Table => shown::table(out, plans),
    }
}

/// The shell lines that carry the plan out; credentials from the environment, never here.
fn emit_script(out: &mut dyn Write, r: &RegistryConfig, p: &PlanOut) -> std::io::Result<()> {
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
