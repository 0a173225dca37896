//! Retention plans, pure: from the tags of a registry (with their push and pull times), what
//! each manifest references and a policy, which tags are candidates for deletion and exactly
//! how many bytes deleting their manifests and then running `docker-registry garbage-collect`
//! would free.
//!
//! The rules are garbage-collect's (distribution 2.8, without `--delete-untagged`): every
//! manifest revision of every repository is marked with everything it references (layers,
//! config, an index's children); a blob not marked is deleted. So:
//! - deleting a tag means deleting its manifest (by digest) in its repository, which also
//!   removes every other tag of that repository pointing at it: a candidate whose digest a
//!   kept tag of the same repository points at cannot be deleted and is reported apart;
//! - an index's platform manifests are revisions of their own: the plan deletes them with
//!   the index, unless a kept tag still reaches them;
//! - a blob is freed only when no kept manifest, in any repository, references it.
//!
//! What the registry stores but no tag reaches (untagged revisions, blobs already
//! unreferenced) is not in this input: blobs garbage-collect would free today are reported
//! apart by the storage walk, never mixed into `reclaimable_bytes`.

use super::glob;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// A `[[retention]]` policy, typed (see `config::retention` for the file form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub registry: String,
    /// Repository globs the policy applies to; empty = every repository.
    pub repositories: Vec<String>,
    pub keep_pulled_within: Option<Duration>,
    pub keep_pushed_within: Option<Duration>,
    /// The newest N tags of each repository (by push time) are always kept.
    pub keep_last: usize,
    /// Tag globs never deleted.
    pub protect_tags: Vec<String>,
}

impl Policy {
    pub fn covers(&self, repository: &str) -> bool {
        self.repositories.is_empty()
            || self
                .repositories
                .iter()
                .any(|g| glob::matches(g, repository))
    }
}

/// One tag with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// When it was pushed to this digest (or first seen there); `None` when unknown.
    pub pushed_at: Option<OffsetDateTime>,
    pub last_pulled_at: Option<OffsetDateTime>,
}

/// What one manifest references: its own size, its config and layer blobs, its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub size: u64,
    pub blobs: Vec<(String, u64)>,
    pub children: Vec<String>,
}

/// Every manifest reachable from a tag, by digest (content-addressed: the same in every
/// repository).
pub type Graph = HashMap<String, Node>;

/// Why a tag is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kept {
    OutsidePolicy,
    Protected,
    KeepLast,
    PulledWithin,
    PushedWithin,
    /// Nothing is known of its push time: regwatch never plans what it knows nothing about.
    Unknown,
}

/// A tag the policy would delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub tag: Tag,
    /// Bytes referenced by this tag's manifest and by no other tagged manifest anywhere.
    pub exclusive_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    /// Candidates not deletable: a kept tag of the same repository points at their digest.
    pub held: Vec<Tag>,
    /// (repository, digest) to `DELETE /v2/<repository>/manifests/<digest>`, index children
    /// after their index.
    pub deletions: Vec<(String, String)>,
    /// What garbage-collect frees after those deletions.
    pub reclaimable_bytes: u64,
    pub reclaimable_blobs: u64,
}

/// A policy's plan as of one inventory poll of its registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPlan {
    pub policy: String,
    pub registry: String,
    /// When the poll it was computed from ended.
    pub at: OffsetDateTime,
    pub plan: Plan,
}

/// The daemon's latest plan of each policy, by policy name: written after each inventory
/// poll (the poll's graph is not kept anywhere else), read by scheduled retention reports.
#[derive(Debug, Clone, Default)]
pub struct LatestPlans(Arc<Mutex<BTreeMap<String, PolicyPlan>>>);

impl LatestPlans {
    pub fn set(&self, plan: PolicyPlan) {
        self.lock().insert(plan.policy.clone(), plan);
    }

    pub fn get(&self, policy: &str) -> Option<PolicyPlan> {
        self.lock().get(policy).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PolicyPlan>> {
        // A panic while holding it cannot leave a half-written map: insert is one step.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why `t` is kept under `p` at `now`, or `None` when it is a candidate. `newest` is the set
/// of the repository's newest `keep_last` tags.
fn kept(p: &Policy, t: &Tag, now: OffsetDateTime, newest: &HashSet<&str>) -> Option<Kept> {
    let within = |at: Option<OffsetDateTime>, d: Option<Duration>| match (at, d) {
        (Some(at), Some(d)) => now - at <= d,
        _ => false,
    };
    if !p.covers(&t.repository) {
        Some(Kept::OutsidePolicy)
    } else if p.protect_tags.iter().any(|g| glob::matches(g, &t.tag)) {
        Some(Kept::Protected)
    } else if newest.contains(t.tag.as_str()) {
        Some(Kept::KeepLast)
    } else if within(t.last_pulled_at, p.keep_pulled_within) {
        Some(Kept::PulledWithin)
    } else if within(t.pushed_at, p.keep_pushed_within) {
        Some(Kept::PushedWithin)
    } else if t.pushed_at.is_none() {
        Some(Kept::Unknown)
    } else {
        None
    }
}

/// The newest `n` tags of each repository, by push time then name (unknown times newest:
/// nothing is planned for them anyway).
fn newest_per_repository(tags: &[Tag], n: usize) -> HashMap<&str, HashSet<&str>> {
    let mut by_repo: BTreeMap<&str, Vec<&Tag>> = BTreeMap::new();
    for t in tags {
        by_repo.entry(&t.repository).or_default().push(t);
    }
    by_repo
        .into_iter()
        .map(|(repo, mut ts)| {
            ts.sort_by(|a, b| {
                let key = |t: &Tag| (t.pushed_at.is_none(), t.pushed_at);
                key(b).cmp(&key(a)).then_with(|| b.tag.cmp(&a.tag))
            });
            (
                repo,
                ts.into_iter().take(n).map(|t| t.tag.as_str()).collect(),
            )
        })
        .collect()
}

/// Manifest digests reachable from `roots` (the roots themselves included).
fn closure<'a>(graph: &'a Graph, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = roots.into_iter().collect();
    while let Some(d) = stack.pop() {
        if !seen.insert(d) {
            continue;
        }
        if let Some(n) = graph.get(d) {
            stack.extend(n.children.iter().map(String::as_str));
        }
    }
    seen
}

/// Marks everything the manifests `revisions` reference (themselves included) into `marks`.
fn mark<'a>(graph: &'a Graph, revisions: &BTreeSet<&'a str>, marks: &mut HashMap<&'a str, u64>) {
    for d in revisions {
        let Some(n) = graph.get(*d) else { continue };
        marks.insert(d, n.size);
        for (b, s) in &n.blobs {
            marks.insert(b, *s);
        }
    }
}

/// The plan for `policy` over every tag of its registry.
pub fn plan(policy: &Policy, tags: &[Tag], graph: &Graph, now: OffsetDateTime) -> Plan {
    let newest = newest_per_repository(tags, policy.keep_last);
    let empty = HashSet::new();
    let (mut keep, mut cand): (Vec<&Tag>, Vec<&Tag>) = (Vec::new(), Vec::new());
    for t in tags {
        let n = newest.get(t.repository.as_str()).unwrap_or(&empty);
        match kept(policy, t, now, n) {
            Some(_) => keep.push(t),
            None => cand.push(t),
        }
    }
    let mut kept_roots: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in &keep {
        kept_roots
            .entry(&t.repository)
            .or_default()
            .insert(&t.digest);
    }
    let mut out = Plan::default();
    let mut cand_roots: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in cand {
        let held = kept_roots
            .get(t.repository.as_str())
            .is_some_and(|k| k.contains(t.digest.as_str()));
        if held {
            out.held.push(t.clone());
        } else {
            cand_roots
                .entry(&t.repository)
                .or_default()
                .insert(&t.digest);
            out.candidates.push(Candidate {
                tag: t.clone(),
                exclusive_bytes: 0,
            });
        }
    }
    // Marks before and after, repository by repository, as garbage-collect does.
    let (mut before, mut after) = (HashMap::new(), HashMap::new());
    let mut repos: BTreeSet<&str> = kept_roots.keys().copied().collect();
    repos.extend(cand_roots.keys().copied());
    for repo in repos {
        let none = BTreeSet::new();
        let k = closure(graph, kept_roots.get(repo).unwrap_or(&none).iter().copied());
        let c = closure(graph, cand_roots.get(repo).unwrap_or(&none).iter().copied());
        mark(graph, &k, &mut after);
        mark(graph, &k, &mut before);
        mark(graph, &c, &mut before);
        let roots = cand_roots.get(repo).unwrap_or(&none);
        // Roots first (in name order), then the children they alone reach.
        for d in roots.iter().chain(c.iter().filter(|d| !roots.contains(*d))) {
            if !k.contains(d) {
                out.deletions.push((repo.to_string(), d.to_string()));
            }
        }
    }
    for (d, s) in &before {
        if !after.contains_key(d) {
            out.reclaimable_bytes += s;
            out.reclaimable_blobs += 1;
        }
    }
    let exclusive = exclusive_bytes(tags, graph);
    for c in &mut out.candidates {
        c.exclusive_bytes = exclusive(&c.tag.repository, &c.tag.digest);
    }
    out
}

/// For each tagged manifest (repository, digest): the bytes it references that no other
/// tagged manifest references, in any repository (what deleting it alone would free).
pub fn exclusive_bytes<'a>(tags: &'a [Tag], graph: &'a Graph) -> impl Fn(&str, &str) -> u64 + 'a {
    let roots: BTreeSet<(&str, &str)> = tags
        .iter()
        .map(|t| (t.repository.as_str(), t.digest.as_str()))
        .collect();
    let mut refs: HashMap<&str, (u64, u32)> = HashMap::new();
    let mut per_root: HashMap<(&str, &str), HashMap<&str, u64>> = HashMap::new();
    for &(repo, d) in &roots {
        let mut marks = HashMap::new();
        mark(graph, &closure(graph, [d]), &mut marks);
        for (b, s) in &marks {
            refs.entry(b).or_insert((*s, 0)).1 += 1;
        }
        per_root.insert((repo, d), marks);
    }
    move |repo, digest| {
        per_root.get(&(repo, digest)).map_or(0, |marks| {
            marks
                .keys()
                .filter_map(|b| refs.get(b).filter(|(_, n)| *n == 1).map(|(s, _)| *s))
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 00:00 UTC);
    const DAY: Duration = Duration::from_secs(86400);

    fn tag(repo: &str, tag: &str, digest: &str, pushed_days: u64, pulled_days: Option<u64>) -> Tag {
        Tag {
            repository: repo.into(),
            tag: tag.into(),
            digest: digest.into(),
            pushed_at: Some(NOW - DAY * pushed_days as u32),
            last_pulled_at: pulled_days.map(|d| NOW - DAY * d as u32),
        }
    }

    fn image(size: u64, blobs: &[(&str, u64)]) -> Node {
        Node {
            size,
            blobs: blobs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
            children: vec![],
        }
    }

    fn policy() -> Policy {
        Policy {
            name: "p".into(),
            registry: "main".into(),
            repositories: vec!["dev/*".into()],
            keep_pulled_within: Some(DAY * 30),
            keep_pushed_within: Some(DAY * 7),
            keep_last: 1,
            protect_tags: vec!["release-*".into()],
        }
    }

    /// base (shared by m1, m2 and prod's m4), own layers per image, m3 tagged twice.
    fn graph() -> Graph {
        let mut g = Graph::new();
        g.insert("m1".into(), image(10, &[("base", 1000), ("l1", 100)]));
        g.insert("m2".into(), image(20, &[("base", 1000), ("l2", 200)]));
        g.insert("m3".into(), image(30, &[("l3", 300)]));
        g.insert("m4".into(), image(40, &[("base", 1000), ("l4", 400)]));
        g.insert("m5".into(), image(50, &[("l5", 500), ("l1", 100)]));
        g
    }

    #[test]
    fn keeps_by_every_rule_and_counts_only_blobs_no_kept_manifest_references() {
        let tags = vec![
            tag("dev/app", "old", "m1", 100, None),       // candidate
            tag("dev/app", "older", "m2", 200, Some(90)), // candidate
            tag("dev/app", "pulled", "m3", 100, Some(3)), // kept: pulled within 30d
            tag("dev/app", "alias", "m3", 100, None),     // held: m3 is kept
            tag("dev/app", "release-1", "m5", 300, None), // protected
            tag("dev/app", "newest", "m4", 20, None),     // keep_last (newest)
            tag("prod/app", "old", "m1", 400, None),      // outside the policy
        ];
        let p = plan(&policy(), &tags, &graph(), NOW);
        let names: Vec<&str> = p.candidates.iter().map(|c| c.tag.tag.as_str()).collect();
        assert_eq!(names, ["old", "older"]);
        assert_eq!(p.held.len(), 1);
        assert_eq!(p.held[0].tag, "alias");
        // m1 is still in prod/app (a revision there), l1 also in m5: only m2 and l2 go.
        assert_eq!(p.reclaimable_bytes, 20 + 200);
        assert_eq!(p.reclaimable_blobs, 2);
        assert_eq!(
            p.deletions,
            [
                ("dev/app".to_string(), "m1".to_string()),
                ("dev/app".into(), "m2".into())
            ]
        );
        // m1 alone frees nothing (prod/app has it, m5 has l1); m2 its own layer and body.
        assert_eq!(p.candidates[0].exclusive_bytes, 0);
        assert_eq!(p.candidates[1].exclusive_bytes, 220);
    }

    #[test]
    fn an_index_goes_with_the_children_no_kept_tag_reaches() {
        let mut g = graph();
        g.insert(
            "idx".into(),
            Node {
                size: 5,
                blobs: vec![],
                children: vec!["m2".into(), "m3".into()],
            },
        );
        let tags = vec![
            tag("dev/x", "multi", "idx", 100, None),
            tag("dev/x", "arm", "m3", 1, None), // kept (pushed within 7 days)
        ];
        let mut p = policy();
        p.keep_last = 0;
        let plan = plan(&p, &tags, &g, NOW);
        assert_eq!(plan.candidates.len(), 1);
        assert_eq!(
            plan.deletions,
            [
                ("dev/x".to_string(), "idx".to_string()),
                ("dev/x".into(), "m2".into())
            ]
        );
        // idx, m2, base, l2 (no other repository here).
        assert_eq!(plan.reclaimable_bytes, 5 + 20 + 1000 + 200);
    }

    #[test]
    fn unknown_push_times_and_an_empty_policy_delete_nothing() {
        let mut t = tag("dev/a", "t", "m1", 100, None);
        t.pushed_at = None;
        let p = plan(&policy(), &[t], &graph(), NOW);
        assert!(p.candidates.is_empty());
        assert_eq!(p.reclaimable_bytes, 0);
        let p = plan(&policy(), &[], &graph(), NOW);
        assert_eq!(p, Plan::default());
    }
}
