//! Retention plans rendered for people: each policy's plan as `regwatch retention plan`
//! prints it (table, JSON, CSV) and as a scheduled `[[report]]` with `kind = "retention"`
//! (CSV, JSON, HTML). The plans are computed elsewhere (pure, in `model::retention`); this
//! module only shapes them, so the command and the report cannot disagree.

use super::html::{CSS, digest_cell};
use crate::model::build::VERSION;
use crate::model::csv;
use crate::model::retention::PolicyPlan;
use crate::model::text::{format_time, human_bytes};
use maud::{DOCTYPE, PreEscaped, html};
use serde::Serialize;
use std::io::{self, Write};
use time::OffsetDateTime;

/// One candidate tag as printed.
#[derive(Debug, Serialize)]
pub struct CandidateLine {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub last_pulled_at: Option<String>,
    pub pushed_at: Option<String>,
    pub exclusive_bytes: u64,
}

/// One policy's plan as printed.
#[derive(Debug, Serialize)]
pub struct PlanOut {
    pub policy: String,
    pub registry: String,
    /// When the poll the plan was computed from ended.
    pub as_of: String,
    pub candidates: Vec<CandidateLine>,
    pub reclaimable_bytes: u64,
    pub reclaimable_blobs: u64,
    /// Tags the policy would delete but cannot: a kept tag points at the same digest.
    pub held_by_kept_tags: Vec<String>,
    /// `DELETE /v2/<repository>/manifests/<digest>`, in this order.
    pub deletions: Vec<Deletion>,
    /// What garbage-collect would free today, before any deletion (from a storage walk;
    /// `null` when none was made). Not part of `reclaimable_bytes`.
    pub already_reclaimable_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Deletion {
    pub repository: String,
    pub digest: String,
}

impl PlanOut {
    pub fn of(p: PolicyPlan, already_reclaimable_bytes: Option<u64>) -> PlanOut {
        let registry = p.registry;
        PlanOut {
            policy: p.policy,
            as_of: format_time(p.at),
            candidates: p
                .plan
                .candidates
                .into_iter()
                .map(|c| CandidateLine {
                    registry: registry.clone(),
                    repository: c.tag.repository,
                    tag: c.tag.tag,
                    digest: c.tag.digest,
                    last_pulled_at: c.tag.last_pulled_at.map(format_time),
                    pushed_at: c.tag.pushed_at.map(format_time),
                    exclusive_bytes: c.exclusive_bytes,
                })
                .collect(),
            reclaimable_bytes: p.plan.reclaimable_bytes,
            reclaimable_blobs: p.plan.reclaimable_blobs,
            held_by_kept_tags: p
                .plan
                .held
                .into_iter()
                .map(|t| format!("{}:{}", t.repository, t.tag))
                .collect(),
            deletions: p
                .plan
                .deletions
                .into_iter()
                .map(|(repository, digest)| Deletion { repository, digest })
                .collect(),
            already_reclaimable_bytes,
            registry,
        }
    }
}

/// One plan object for one policy; a JSON array of them for several.
pub fn json(out: &mut dyn Write, plans: &[PlanOut]) -> io::Result<()> {
    match plans {
        [one] => serde_json::to_writer_pretty(&mut *out, one)?,
        many => serde_json::to_writer_pretty(&mut *out, many)?,
    }
    writeln!(out)
}

/// One row per candidate tag, with its policy.
pub fn csv(out: &mut dyn Write, plans: &[PlanOut]) -> io::Result<()> {
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
    Ok(())
}

/// The terminal form: a summary line per policy, then its candidates and held tags.
pub fn table(out: &mut dyn Write, plans: &[PlanOut]) -> io::Result<()> {
    for p in plans {
        writeln!(out, "{}", summary(p))?;
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
    }
    Ok(())
}

/// "policy P (registry R): N candidate tag(s), X reclaimable …": the line a mail or a
/// terminal shows first.
pub fn summary(p: &PlanOut) -> String {
    format!(
        "policy {} (registry {}): {} candidate tag(s), {} reclaimable ({} blobs) after deleting {} manifest(s) and running garbage-collect",
        p.policy,
        p.registry,
        p.candidates.len(),
        human_bytes(p.reclaimable_bytes),
        p.reclaimable_blobs,
        p.deletions.len()
    )
}

/// A self-contained HTML page (no scripts, no external resources, every value escaped):
/// per policy its totals and the candidate table.
pub fn html(out: &mut dyn Write, plans: &[PlanOut], generated: OffsetDateTime) -> io::Result<()> {
    let page = html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { "regwatch retention report" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "Retention report" }
                p {
                    "Generated " (format_time(generated)) " by regwatch " (VERSION)
                    ". Nothing has been deleted: these are the tags each policy would delete, and exactly what deleting their manifests and then running garbage-collect would free."
                }
                @for p in plans {
                    h2 { "Policy " (p.policy) }
                    table class="meta" {
                        tr { th { "registry" } td { (p.registry) } }
                        tr { th { "as of poll" } td { (p.as_of) } }
                        tr { th { "candidates" } td class="n" { (p.candidates.len()) } }
                        tr { th { "reclaimable" } td class="n" { (human_bytes(p.reclaimable_bytes)) " (" (p.reclaimable_bytes) " bytes, " (p.reclaimable_blobs) " blobs)" } }
                        tr { th { "manifests to delete" } td class="n" { (p.deletions.len()) } }
                        @if let Some(a) = p.already_reclaimable_bytes {
                            tr { th { "already reclaimable" } td class="n" { (human_bytes(a)) " (not counted above)" } }
                        }
                    }
                    @if p.candidates.is_empty() {
                        p { "No candidate: the policy keeps every tag." }
                    } @else {
                        table class="events" {
                            tr { th { "repository" } th { "tag" } th { "digest" } th { "pushed" } th { "last pulled" } th { "exclusive bytes" } }
                            @for c in &p.candidates {
                                tr {
                                    td { (c.repository) } td { (c.tag) } (digest_cell(&c.digest))
                                    td { (c.pushed_at.as_deref().unwrap_or("-")) }
                                    td { (c.last_pulled_at.as_deref().unwrap_or("never")) }
                                    td class="n" { (c.exclusive_bytes) }
                                }
                            }
                        }
                    }
                    @if !p.held_by_kept_tags.is_empty() {
                        p { "Kept although old: a kept tag points at the same digest: " (p.held_by_kept_tags.join(", ")) }
                    }
                }
            }
        }
    };
    out.write_all(page.into_string().as_bytes())?;
    writeln!(out)
}
