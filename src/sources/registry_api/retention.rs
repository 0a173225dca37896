//! Retention from the poller's side: the join of a poll's tags with the per-tag facts the
//! store keeps (shared with `inventory --tags` and `retention plan`), and the per-policy
//! plans and gauges refreshed after each stored inventory poll.

use super::poller::TagGraph;
use crate::metrics::RegistryMetrics;
use crate::model::retention::{self, LatestPlans, Policy, PolicyPlan, Tag};
use crate::store::{Store, TagFact};
use std::collections::HashMap;
use time::OffsetDateTime;

/// Stored tag facts by (repository, tag).
pub type FactsByTag = HashMap<(String, String), TagFact>;

fn parse_time(t: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t?, &time::format_description::well_known::Rfc3339).ok()
}

/// The polled tags with their stored facts. A fact about another digest than the one the
/// registry serves now (a move the store has not seen yet) is not this image's: its times
/// are unknown (and an unknown push time is never planned for deletion).
pub fn tags_with_facts(tg: &TagGraph, facts: &FactsByTag) -> Vec<(Tag, Option<TagFact>)> {
    tg.tags
        .iter()
        .map(|(repo, tag, digest)| {
            let fact = facts
                .get(&(repo.clone(), tag.clone()))
                .filter(|f| f.digest.as_deref().is_none_or(|d| d == digest))
                .cloned();
            let t = Tag {
                repository: repo.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
                pushed_at: fact.as_ref().and_then(|f| {
                    parse_time(f.pushed_at.as_deref().or(Some(f.first_seen_at.as_str())))
                }),
                last_pulled_at: fact
                    .as_ref()
                    .and_then(|f| parse_time(f.last_pulled_at.as_deref())),
            };
            (t, fact)
        })
        .collect()
}

/// Facts by (repository, tag) from a list.
pub fn by_tag(facts: Vec<TagFact>) -> FactsByTag {
    facts
        .into_iter()
        .map(|f| ((f.repository.clone(), f.tag.clone()), f))
        .collect()
}

/// Plans the policies of `registry` from this poll and the stored facts (read on a blocking
/// thread): each plan goes to `plans`, its size to `regwatch_retention_candidates{policy}`
/// and `…_reclaimable_bytes{policy}`.
pub async fn refresh(
    store: &Store,
    metrics: &RegistryMetrics,
    plans: &LatestPlans,
    registry: &str,
    policies: &[Policy],
    tg: TagGraph,
    now: OffsetDateTime,
) {
    let mine: Vec<Policy> = policies
        .iter()
        .filter(|p| p.registry == registry)
        .cloned()
        .collect();
    if mine.is_empty() {
        return;
    }
    let store = store.clone();
    let name = registry.to_string();
    let computed = tokio::task::spawn_blocking(move || {
        let facts = store.reader().and_then(|r| r.tag_facts(&name))?;
        let tags: Vec<Tag> = tags_with_facts(&tg, &by_tag(facts))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        Ok::<_, crate::store::StoreError>(
            mine.iter()
                .map(|p| PolicyPlan {
                    policy: p.name.clone(),
                    registry: name.clone(),
                    at: now,
                    plan: retention::plan(p, &tags, &tg.graph, now),
                })
                .collect::<Vec<_>>(),
        )
    })
    .await;
    match computed {
        Ok(Ok(computed)) => {
            for p in computed {
                metrics
                    .retention_candidates
                    .with_label_values(&[&p.policy])
                    .set(p.plan.candidates.len() as i64);
                metrics
                    .retention_reclaimable_bytes
                    .with_label_values(&[&p.policy])
                    .set(p.plan.reclaimable_bytes.min(i64::MAX as u64) as i64);
                plans.set(p);
            }
        }
        Ok(Err(e)) => tracing::warn!(registry, error = %e, "retention gauges not refreshed"),
        Err(e) => tracing::warn!(registry, error = %e, "retention gauges not refreshed"),
    }
}
