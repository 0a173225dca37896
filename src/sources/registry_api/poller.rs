//! One task per registry: a frequent `GET /v2/` probe and a slower full inventory whose
//! differences to the previous one become audit events (source `poll`).

use super::artifacts;
use super::client::{ApiError, Client};
use super::inventory::{self, Manifest, RepoContent};
use super::supply::{self, Checks, Detection};
use super::tags::{self, TagRow};
use crate::config::RegistryConfig;
use crate::metrics::RegistryMetrics;
use crate::model::clock::SharedClock;
use crate::model::event::{Action, Event, Source};
use crate::model::observed::Observations;
use crate::model::signatures::{SignatureFacts, TagSignature};
use crate::store::{InventoryUpdate, Reader, Sink, Store};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Manifests by digest. Content-addressed, so a manifest read once (in any repository) never
/// has to be read again; kept across polls, pruned to what the last poll referenced.
type Cache = Arc<Mutex<HashMap<String, Manifest>>>;

/// The previous poll: repositories, and (repository, tag) → digest.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    repositories: BTreeSet<String>,
    tags: BTreeMap<(String, String), String>,
}

/// A repository or tag outside the naming policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Violation {
    pub repository: String,
    /// `None`: the repository name itself violates `repository_pattern`.
    pub tag: Option<String>,
    pub pattern: String,
}

/// One registry's last inventory, as `GET /api/v1/repositories` and `regwatch inventory`
/// show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub registry: String,
    pub polled_at: String,
    pub duration_seconds: f64,
    /// HTTP requests the poll needed (token requests included).
    pub requests: u64,
    #[serde(flatten)]
    pub accounting: inventory::Accounting,
    pub violations: Vec<Violation>,
    /// One row per image tag: what is attached to it and whether its signature verifies.
    /// Stored with the report (so first sightings and the signature verdicts survive a
    /// restart); `GET /api/v1/repositories` leaves it out.
    /// (Not `tags`: that key is the accounting's tag count.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_rows: Vec<TagRow>,
}

/// The latest report of every registry, shared with the HTTP API.
pub type Reports = Arc<RwLock<BTreeMap<String, Report>>>;

struct Polled {
    repos: BTreeMap<String, RepoContent>,
    media_types: HashMap<String, String>,
    /// Every repository's image tags, by repository and tag.
    tags: Vec<TagRow>,
}

/// Reads the whole inventory of one registry.
async fn poll(
    client: &Arc<Client>,
    cfg: &RegistryConfig,
    cache: &Cache,
    previous: &Snapshot,
    detection: &Arc<Detection>,
) -> Result<Polled, ApiError> {
    let names = client.catalog(cfg.catalog_page_size).await?;
    let mut set = JoinSet::new();
    for name in names {
        let client = client.clone();
        let cache = cache.clone();
        let known: HashMap<String, String> = previous
            .tags
            .range((name.clone(), String::new())..)
            .take_while(|((r, _), _)| *r == name)
            .map(|((_, t), d)| (t.clone(), d.clone()))
            .collect();
        let detection = detection.clone();
        set.spawn(async move {
            let (content, rows) = repository(&client, &name, &cache, &known, &detection).await?;
            Ok::<_, ApiError>((name, content, rows))
        });
    }
    let mut repos = BTreeMap::new();
    let mut tags = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (name, content, rows) = joined.expect("repository tasks do not panic")?;
        repos.insert(name, content);
        tags.extend(rows);
    }
    tags.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    let cache = cache.lock().expect("not poisoned");
    let media_types = repos
        .values()
        .flat_map(|c| c.tags.values())
        .filter_map(|d| cache.get(d).map(|m| (d.clone(), m.media_type.clone())))
        .collect();
    Ok(Polled {
        repos,
        media_types,
        tags,
    })
}

/// One repository: its tags and what they reference, and a row per image tag with what is
/// attached to it.
async fn repository(
    client: &Arc<Client>,
    name: &str,
    cache: &Cache,
    known: &HashMap<String, String>,
    detection: &Arc<Detection>,
) -> Result<(RepoContent, Vec<TagRow>), ApiError> {
    let tags = match client.tags(name).await {
        Ok(t) => t,
        // Deleted between the catalog and here: it has nothing (any more).
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut set = JoinSet::new();
    for tag in tags {
        let client = client.clone();
        let cache = cache.clone();
        let name = name.to_string();
        let was = known.get(&tag).cloned();
        set.spawn(async move {
            let r = tag_digest(&client, &name, &tag, was.as_deref(), &cache).await;
            (tag, r)
        });
    }
    let mut content = RepoContent::default();
    let mut roots = Vec::new();
    // Artifact manifests that do not parse: their tag stays (it exists), the signature in
    // it counts as unverified, and the inventory goes on.
    let mut unreadable = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (tag, r) = joined.expect("tag tasks do not panic");
        match r {
            Ok(digest) => {
                content.tags.insert(tag, digest.clone());
                roots.push(digest);
            }
            // Listed, but its manifest was deleted meanwhile: the tag is gone.
            Err(e) if e.is_not_found() => {}
            Err(ApiError::Manifest(e)) if artifacts::is_artifact_tag(&tag) => {
                let digest = e.digest().to_string();
                unreadable.insert(
                    digest.clone(),
                    format!("the signature manifest is unreadable: {e}"),
                );
                content.tags.insert(tag, digest);
            }
            Err(e) => return Err(e),
        }
    }
    // Index children: fetched once per digest, from this repository (where they must be).
    let mut pending: Vec<String> = roots.clone();
    while let Some(d) = pending.pop() {
        let children = cache
            .lock()
            .expect("not poisoned")
            .get(&d)
            .map(|m| m.children.clone())
            .unwrap_or_default();
        for c in children {
            let cached = cache.lock().expect("not poisoned").contains_key(&c);
            if !cached {
                match client.manifest(name, &c).await {
                    Ok(f) => {
                        cache
                            .lock()
                            .expect("not poisoned")
                            .insert(c.clone(), f.manifest);
                    }
                    // An index may name platforms that were never pushed (skopeo without --all).
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            }
            pending.push(c);
        }
    }
    {
        let cache = cache.lock().expect("not poisoned");
        let resolve = |d: &str| cache.get(d).cloned();
        for d in roots {
            if let Some(m) = cache.get(&d) {
                content.add(m, &resolve);
            }
        }
    }
    let attached = supply::detect(client, name, &content, cache, &unreadable, detection).await?;
    let rows = tags::rows(
        name,
        &content,
        &cache.lock().expect("not poisoned"),
        &attached,
    );
    Ok((content, rows))
}

/// The digest a tag points at, its manifest in the cache afterwards. A tag seen before costs
/// one HEAD (which answers "did it move?"); a new one one GET.
async fn tag_digest(
    client: &Client,
    repo: &str,
    tag: &str,
    was: Option<&str>,
    cache: &Cache,
) -> Result<String, ApiError> {
    let cached = |d: &str| cache.lock().expect("not poisoned").contains_key(d);
    if was.is_some_and(cached) {
        let digest = client.head_manifest(repo, tag).await?;
        if !cached(&digest) {
            let f = client.manifest(repo, &digest).await?;
            cache
                .lock()
                .expect("not poisoned")
                .insert(digest.clone(), f.manifest);
        }
        return Ok(digest);
    }
    let f = client.manifest(repo, tag).await?;
    let digest = f.manifest.digest.clone();
    cache
        .lock()
        .expect("not poisoned")
        .insert(digest.clone(), f.manifest);
    Ok(digest)
}

fn violations(cfg: &RegistryConfig, repos: &BTreeMap<String, RepoContent>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (name, c) in repos {
        if let Some(re) = &cfg.repository_pattern {
            if !re.is_match(name) {
                out.push(Violation {
                    repository: name.clone(),
                    tag: None,
                    pattern: re.as_str().to_string(),
                });
            }
        }
        if let Some(re) = &cfg.tag_pattern {
            // Signature and attestation tags are named by their tools, not by people.
            let images = c.tags.keys().filter(|t| !artifacts::is_artifact_tag(t));
            for tag in images.filter(|t| !re.is_match(t)) {
                out.push(Violation {
                    repository: name.clone(),
                    tag: Some(tag.clone()),
                    pattern: re.as_str().to_string(),
                });
            }
        }
    }
    out
}

fn report(
    cfg: &RegistryConfig,
    polled: &Polled,
    started: Instant,
    requests: u64,
    at: time::OffsetDateTime,
) -> Report {
    Report {
        registry: cfg.name.clone(),
        polled_at: crate::model::text::format_time(at),
        duration_seconds: started.elapsed().as_secs_f64(),
        requests,
        accounting: inventory::account(&polled.repos),
        violations: violations(cfg, &polled.repos),
        tag_rows: polled.tags.clone(),
    }
}

/// One inventory, without the daemon (for `regwatch inventory` and the benchmark).
pub async fn poll_once(cfg: &RegistryConfig) -> Result<Report, ApiError> {
    let client = Client::new(cfg)?;
    let cache = Cache::default();
    let started = Instant::now();
    let detection = Detection::new(cfg.signature_keys.clone(), Checks::default());
    let polled = poll(&client, cfg, &cache, &Snapshot::default(), &detection).await?;
    Ok(report(
        cfg,
        &polled,
        started,
        client.requests(),
        time::OffsetDateTime::now_utc(),
    ))
}

/// Every tag of a registry and what each manifest references: the input of retention plans
/// and of per-tag exclusive bytes.
#[derive(Debug, Clone, Default)]
pub struct TagGraph {
    /// (repository, tag, digest), every tag (signature tags included: they are tags too).
    pub tags: Vec<(String, String, String)>,
    pub graph: crate::model::retention::Graph,
}

/// [`poll_once`], with the registry's [`TagGraph`].
pub async fn poll_with_graph(cfg: &RegistryConfig) -> Result<(Report, TagGraph), ApiError> {
    let client = Client::new(cfg)?;
    let cache = Cache::default();
    let started = Instant::now();
    let detection = Detection::new(cfg.signature_keys.clone(), Checks::default());
    let polled = poll(&client, cfg, &cache, &Snapshot::default(), &detection).await?;
    let rep = report(
        cfg,
        &polled,
        started,
        client.requests(),
        time::OffsetDateTime::now_utc(),
    );
    Ok((rep, tag_graph(&polled, &cache)))
}

fn tag_graph(polled: &Polled, cache: &Cache) -> TagGraph {
    use crate::model::retention::Node;
    let tags = polled
        .repos
        .iter()
        .flat_map(|(repo, c)| {
            c.tags
                .iter()
                .map(move |(t, d)| (repo.clone(), t.clone(), d.clone()))
        })
        .collect();
    let cache = cache.lock().expect("not poisoned");
    let graph = cache
        .iter()
        .map(|(d, m)| {
            let node = Node {
                size: m.size,
                blobs: m.blobs.clone(),
                children: m.children.clone(),
            };
            (d.clone(), node)
        })
        .collect();
    TagGraph { tags, graph }
}

/// The changes from `prev` to `now` as the writer's update (events included).
fn diff(
    registry: &str,
    prev: Option<&Snapshot>,
    now: &Snapshot,
    media_types: &HashMap<String, String>,
    at: time::OffsetDateTime,
) -> InventoryUpdate {
    let mut u = InventoryUpdate {
        registry: registry.to_string(),
        time: at,
        replace: prev.is_none(),
        add_repositories: Vec::new(),
        remove_repositories: Vec::new(),
        upsert_tags: Vec::new(),
        remove_tags: Vec::new(),
        events: Vec::new(),
        repositories: now.repositories.len(),
        tags: now.tags.len(),
        unique_bytes: 0,
        report: None,
    };
    let event = |action: Action, repo: &str, tag: Option<&str>, digest: Option<&str>| {
        let mut e = Event::new(at, action, Source::Poll);
        e.registry = Some(registry.to_string());
        e.repository = Some(repo.to_string());
        e.tag = tag.map(str::to_string);
        e.digest = digest.map(str::to_string);
        e.media_type = digest.and_then(|d| media_types.get(d).cloned());
        e
    };
    let Some(prev) = prev else {
        // First poll: the baseline. Reporting every existing tag as "created" would bury
        // the trail under things that happened before regwatch was watching.
        u.add_repositories = now.repositories.iter().cloned().collect();
        u.upsert_tags = now
            .tags
            .iter()
            .map(|((r, t), d)| (r.clone(), t.clone(), d.clone()))
            .collect();
        return u;
    };
    for r in now.repositories.difference(&prev.repositories) {
        u.add_repositories.push(r.clone());
        u.events
            .push(event(Action::RepositoryCreated, r, None, None));
    }
    for ((r, t), d) in &now.tags {
        match prev.tags.get(&(r.clone(), t.clone())) {
            None => {
                u.upsert_tags.push((r.clone(), t.clone(), d.clone()));
                u.events
                    .push(event(Action::TagCreated, r, Some(t), Some(d)));
            }
            Some(old) if old != d => {
                u.upsert_tags.push((r.clone(), t.clone(), d.clone()));
                u.events.push(
                    event(Action::TagMoved, r, Some(t), Some(d))
                        .with_detail(format!("moved from {old}")),
                );
            }
            Some(_) => {}
        }
    }
    for ((r, t), d) in &prev.tags {
        if !now.tags.contains_key(&(r.clone(), t.clone())) {
            u.remove_tags.push((r.clone(), t.clone()));
            let mut e = event(Action::TagDeleted, r, Some(t), Some(d));
            e.media_type = None;
            u.events.push(e);
        }
    }
    for r in prev.repositories.difference(&now.repositories) {
        u.remove_repositories.push(r.clone());
        u.events
            .push(event(Action::RepositoryDeleted, r, None, None));
    }
    u
}

fn snapshot(repos: &BTreeMap<String, RepoContent>) -> Snapshot {
    Snapshot {
        repositories: repos.keys().cloned().collect(),
        tags: repos
            .iter()
            .flat_map(|(r, c)| {
                c.tags
                    .iter()
                    .map(move |(t, d)| ((r.clone(), t.clone()), d.clone()))
            })
            .collect(),
    }
}

/// What a poller task needs from the daemon.
#[derive(Clone)]
pub struct PollerContext {
    pub metrics: RegistryMetrics,
    pub sink: Sink,
    pub store: Store,
    /// Where the probe's verdict goes for the alert rules.
    pub observed: Observations,
    /// Where each poll's per-tag signature verdicts go for the `unsigned_image` rule.
    pub signatures: SignatureFacts,
    pub reports: Reports,
    /// Where each retention policy's plan goes after a poll, for retention reports.
    pub plans: crate::model::retention::LatestPlans,
    pub clock: SharedClock,
}

/// Runs the probe and the inventory of one registry until `stop`.
pub async fn run(
    cfg: RegistryConfig,
    policies: Vec<crate::model::retention::Policy>,
    ctx: PollerContext,
    stop: CancellationToken,
) {
    let client = match Client::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(registry = %cfg.name, error = %e, "cannot create the registry client");
            return;
        }
    };
    ctx.metrics.init(&cfg.name);
    tokio::join!(
        probe_loop(&cfg, &client, &ctx, &stop),
        inventory_loop(&cfg, &policies, &client, &ctx, &stop)
    );
}

async fn probe_loop(
    cfg: &RegistryConfig,
    client: &Client,
    ctx: &PollerContext,
    stop: &CancellationToken,
) {
    let name = cfg.name.as_str();
    let mut was_up: Option<bool> = None;
    loop {
        let start = Instant::now();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.probe() => r,
        };
        ctx.metrics
            .probe_duration_seconds
            .with_label_values(&[name])
            .set(start.elapsed().as_secs_f64());
        let up = result.is_ok();
        ctx.metrics.up.with_label_values(&[name]).set(up as i64);
        ctx.observed.update(name, |o| o.up = Some(up));
        match result {
            Ok(_) if was_up != Some(true) => {
                tracing::info!(registry = name, "registry is up")
            }
            Ok(_) => {}
            Err(e) => {
                ctx.metrics
                    .poll_errors_total
                    .with_label_values(&[name])
                    .inc();
                // Once per outage at warn; the repeats would drown the log.
                if was_up != Some(false) {
                    tracing::warn!(registry = name, error = %e, "registry is down");
                } else {
                    tracing::debug!(registry = name, error = %e, "registry still down");
                }
            }
        }
        was_up = Some(up);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cfg.probe_interval) => {}
        }
    }
}

/// The previous poll's inventory and its tag rows (from its stored report; none from a
/// report that has none or does not parse).
async fn load_previous(
    ctx: &PollerContext,
    registry: &str,
) -> Result<(Option<Snapshot>, tags::Previous), String> {
    let store = ctx.store.clone();
    let registry = registry.to_string();
    tokio::task::spawn_blocking(move || {
        let db = store.reader().map_err(|e| e.to_string())?;
        let snapshot = db
            .inventory(&registry)
            .map(|o| {
                o.map(|i| Snapshot {
                    repositories: i.repositories,
                    tags: i.tags,
                })
            })
            .map_err(|e| e.to_string())?;
        let rows = db
            .inventory_report(&registry)
            .map_err(|e| e.to_string())?
            .and_then(|json| serde_json::from_str::<Report>(&json).ok())
            .map(|rep| tags::previous(&rep.tag_rows))
            .unwrap_or_default();
        Ok((snapshot, rows))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Where a poll's report is shown: the inventory gauges, the repositories API, and the
/// signature facts the `unsigned_image` rule reads.
pub struct Published<'a> {
    pub metrics: &'a RegistryMetrics,
    pub reports: &'a Reports,
    pub signatures: &'a SignatureFacts,
}

/// The report's tags as the rule's facts; a row without `first_seen` (a report of an older
/// version) counts from the poll.
fn facts(rep: &Report, at: time::OffsetDateTime) -> Vec<TagSignature> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    rep.tag_rows
        .iter()
        .map(|r| TagSignature {
            repository: r.repository.clone(),
            tag: r.tag.clone(),
            digest: r.digest.clone(),
            signature: r.signature,
            signatures: r.signatures,
            first_seen: r
                .first_seen
                .as_deref()
                .and_then(|t| time::OffsetDateTime::parse(t, rfc3339).ok())
                .unwrap_or(at),
        })
        .collect()
}

/// Shows `rep` in the inventory gauges, the repositories API and the signature facts.
fn publish(to: &Published<'_>, rep: Report, at: time::OffsetDateTime) {
    let (metrics, reports) = (to.metrics, to.reports);
    let name = rep.registry.as_str();
    for (status, n) in tags::by_status(&rep.tag_rows) {
        metrics
            .signature_tags
            .with_label_values(&[name, status.as_str()])
            .set(n as i64);
    }
    to.signatures.set(name, facts(&rep, at));
    metrics
        .repositories
        .with_label_values(&[name])
        .set(rep.accounting.repositories as i64);
    metrics
        .tags
        .with_label_values(&[name])
        .set(rep.accounting.tags as i64);
    metrics
        .unique_bytes
        .with_label_values(&[name])
        .set(rep.accounting.unique_bytes.min(i64::MAX as u64) as i64);
    metrics
        .naming_violations
        .with_label_values(&[name])
        .set(rep.violations.len() as i64);
    metrics
        .last_poll_timestamp_seconds
        .with_label_values(&[name])
        .set(at.unix_timestamp_nanos() as f64 / 1e9);
    reports
        .write()
        .expect("not poisoned")
        .insert(rep.registry.clone(), rep);
}

/// Publishes the report that each registry's last poll stored, so the repositories API
/// and the inventory gauges answer from the first request after a start (also while a
/// registry is down) instead of staying empty until the next successful poll. Called
/// before the daemon reports ready.
pub fn restore_reports(db: &Reader, registries: &[RegistryConfig], to: &Published<'_>) {
    for r in registries {
        let name = r.name.as_str();
        let json = match db.inventory_report(name) {
            Ok(Some(j)) => j,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(registry = name, error = %e, "cannot read the stored inventory report");
                continue;
            }
        };
        // A report written by another version may not parse; the next poll replaces it.
        let parsed = serde_json::from_str::<Report>(&json)
            .map_err(|e| e.to_string())
            .and_then(|rep| {
                let rfc3339 = &time::format_description::well_known::Rfc3339;
                let at = time::OffsetDateTime::parse(&rep.polled_at, rfc3339)
                    .map_err(|e| format!("polled_at: {e}"))?;
                Ok((rep, at))
            });
        match parsed {
            Ok((rep, at)) => publish(to, rep, at),
            Err(e) => {
                tracing::warn!(registry = name, error = %e, "stored inventory report unreadable; waiting for the next poll")
            }
        }
    }
}

/// This poll's snapshot and the writer's update: the changes since `previous` as events
/// (tags and repositories, signatures attached), the totals and the report to store.
fn changes(
    name: &str,
    previous: Option<&Snapshot>,
    rows: &tags::Previous,
    polled: &Polled,
    rep: &Report,
    at: time::OffsetDateTime,
) -> (Snapshot, InventoryUpdate) {
    let now = snapshot(&polled.repos);
    let mut update = diff(name, previous, &now, &polled.media_types, at);
    if let Some(prev) = previous {
        let signed = tags::signature_events(name, &rep.tag_rows, rows, &prev.tags, at);
        update.events.extend(signed);
    }
    update.unique_bytes = rep.accounting.unique_bytes;
    update.report = serde_json::to_string(rep).ok();
    (now, update)
}

/// Only what this poll referenced stays cached (manifests, signature checks).
fn forget_unused(cache: &Cache, polled: &Polled, detection: &Detection) {
    let fetched = detection.fetched();
    let keep: BTreeSet<&String> = polled
        .repos
        .values()
        .flat_map(|c| c.manifests.keys())
        .chain(&fetched)
        .collect();
    cache
        .lock()
        .expect("not poisoned")
        .retain(|d, _| keep.contains(d));
    detection.prune_checks();
}

async fn inventory_loop(
    cfg: &RegistryConfig,
    policies: &[crate::model::retention::Policy],
    client: &Arc<Client>,
    ctx: &PollerContext,
    stop: &CancellationToken,
) {
    let name = cfg.name.as_str();
    let (mut previous, mut rows) = loop {
        match load_previous(ctx, name).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(registry = name, error = %e, "cannot read the previous inventory; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(cfg.probe_interval) => {}
                }
            }
        }
    };
    let cache = Cache::default();
    let checks = Checks::default();
    let empty = Snapshot::default();
    let published = Published {
        metrics: &ctx.metrics,
        reports: &ctx.reports,
        signatures: &ctx.signatures,
    };
    loop {
        let started = Instant::now();
        let before = client.requests();
        let detection = Detection::new(cfg.signature_keys.clone(), checks.clone());
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = poll(client, cfg, &cache, previous.as_ref().unwrap_or(&empty), &detection) => r,
        };
        let wait = match result {
            Ok(mut polled) => {
                let at = ctx.clock.now();
                let polled_at = crate::model::text::format_time(at);
                tags::carry_first_seen(&mut polled.tags, &rows, &polled_at);
                let rep = report(cfg, &polled, started, client.requests() - before, at);
                let (now, update) = changes(name, previous.as_ref(), &rows, &polled, &rep, at);
                let changes = update.events.len();
                match ctx.sink.store_inventory(update).await {
                    Ok(()) => {
                        previous = Some(now);
                        rows = tags::previous(&rep.tag_rows);
                        tracing::info!(
                            registry = name,
                            repositories = rep.accounting.repositories,
                            tags = rep.accounting.tags,
                            unique_bytes = rep.accounting.unique_bytes,
                            changes,
                            requests = rep.requests,
                            seconds = rep.duration_seconds,
                            "inventory polled"
                        );
                        let tg = tag_graph(&polled, &cache);
                        super::retention::refresh(
                            &ctx.store,
                            &ctx.metrics,
                            &ctx.plans,
                            name,
                            policies,
                            tg,
                            at,
                        )
                        .await;
                        forget_unused(&cache, &polled, &detection);
                        publish(&published, rep, at);
                        cfg.poll_interval
                    }
                    Err(e) => {
                        ctx.metrics
                            .poll_errors_total
                            .with_label_values(&[name])
                            .inc();
                        tracing::error!(registry = name, error = %e, "cannot store the inventory");
                        cfg.probe_interval
                    }
                }
            }
            Err(e) => {
                ctx.metrics
                    .poll_errors_total
                    .with_label_values(&[name])
                    .inc();
                tracing::warn!(registry = name, error = %e, "inventory poll failed; retrying");
                // Sooner than a full interval: the registry is probably just back.
                cfg.probe_interval.min(cfg.poll_interval)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(repos: &[&str], tags: &[(&str, &str, &str)]) -> Snapshot {
        Snapshot {
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            tags: tags
                .iter()
                .map(|(r, t, d)| ((r.to_string(), t.to_string()), d.to_string()))
                .collect(),
        }
    }

    /// The stored report is what a restart restores the rule's facts and first sightings
    /// from: it must read back as it was written.
    #[test]
    fn a_stored_report_with_tag_rows_reads_back() {
        let row = TagRow {
            repository: "prod/app".into(),
            tag: "1.0".into(),
            digest: "sha256:d1".into(),
            media_type: None,
            signature: crate::model::signatures::SignatureStatus::Unverified,
            signatures: 1,
            signed_by: vec![],
            attestations: 0,
            sbom: false,
            problems: vec!["no trusted key verifies it".into()],
            first_seen: Some("2026-11-28T10:00:00Z".into()),
        };
        let rep = Report {
            registry: "main".into(),
            polled_at: "2026-11-28T10:00:00Z".into(),
            duration_seconds: 0.1,
            requests: 3,
            accounting: inventory::account(&BTreeMap::new()),
            violations: vec![],
            tag_rows: vec![row.clone()],
        };
        let back: Report = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        assert_eq!(back.tag_rows, vec![row]);
        assert_eq!(back.accounting, rep.accounting);
        // A report an older regwatch stored has no rows.
        let old = r#"{"registry":"main","polled_at":"2026-11-28T10:00:00Z","duration_seconds":0.1,"requests":3,"repositories":0,"tags":0,"unique_bytes":0,"per_repository":[],"violations":[]}"#;
        assert!(
            serde_json::from_str::<Report>(old)
                .unwrap()
                .tag_rows
                .is_empty()
        );
    }

    #[test]
    fn diff_reports_appear_move_disappear() {
        let at = time::OffsetDateTime::now_utc();
        let prev = snap(
            &["a", "gone"],
            &[("a", "1", "d1"), ("a", "2", "d2"), ("gone", "x", "dx")],
        );
        let now = snap(
            &["a", "new"],
            &[("a", "1", "d1"), ("a", "2", "d3"), ("new", "v", "dv")],
        );
        let u = diff("r", Some(&prev), &now, &HashMap::new(), at);
        let got: Vec<(&str, String, Option<String>)> = u
            .events
            .iter()
            .map(|e| {
                (
                    e.action.as_str(),
                    e.repository.clone().unwrap(),
                    e.tag.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("repository_created", "new".into(), None),
                ("tag_moved", "a".into(), Some("2".into())),
                ("tag_created", "new".into(), Some("v".into())),
                ("tag_deleted", "gone".into(), Some("x".into())),
                ("repository_deleted", "gone".into(), None),
            ]
        );
        assert_eq!(u.events[1].detail.as_deref(), Some("moved from d2"));
        assert!(u.events.iter().all(|e| e.source == Source::Poll));
        assert!(!u.replace);
        assert_eq!(u.remove_repositories, vec!["gone".to_string()]);

        let first = diff("r", None, &now, &HashMap::new(), at);
        assert!(first.replace && first.events.is_empty());
        assert_eq!(first.upsert_tags.len(), 3);
    }
}
