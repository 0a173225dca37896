//! The rules of the facts (see the module docs one level up), applied in memory to the rows
//! a transaction touches: a backend loads the rows a batch or poll [`Wanted`], [`Facts`]
//! applies the events or the poll to them in order, and the backend writes back
//! [`Facts::changes`]. One implementation for SQLite and PostgreSQL, so both keep the same
//! facts; and on PostgreSQL a batch costs three statements whatever its size.

use super::{TagFact, counts_as_pull};
use crate::model::text::format_time;
use crate::model::{Action, Event, Source};
use crate::store::inventory::InventoryUpdate;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// (registry, repository, tag): a row's key.
pub(in crate::store) type Key = (String, String, String);

/// The rows a batch or poll reads: by key, by digest (registry, repository, digest: a pull
/// or delete by digest touches every tag pointing at it), whole repositories and whole
/// registries (a poll that replaces everything).
#[derive(Debug, Default)]
pub(in crate::store) struct Wanted {
    pub tags: BTreeSet<Key>,
    pub digests: BTreeSet<Key>,
    pub repositories: BTreeSet<(String, String)>,
    pub registries: BTreeSet<String>,
}

/// What one stored event does to the facts.
enum Change<'a> {
    Push { tag: &'a str },
    PullTag { tag: &'a str },
    PullDigest { digest: &'a str },
    DeleteTag { tag: &'a str },
    DeleteDigest { digest: &'a str },
}

/// The event's change and its registry and repository; `None` for an event that changes
/// no fact (polls come through [`Facts::apply_inventory`], with the poll's full picture).
fn change(e: &Event) -> Option<(&str, &str, Change<'_>)> {
    if !matches!(e.source, Source::Notification | Source::Log) {
        return None;
    }
    let (registry, repository) = (e.registry.as_deref()?, e.repository.as_deref()?);
    let (tag, digest) = (e.tag.as_deref(), e.digest.as_deref());
    let change = match (e.action, tag, digest) {
        // A push by digest only: a blob, or an index's child manifest.
        (Action::Push, Some(tag), _) => Change::Push { tag },
        (Action::Pull, Some(tag), _) if counts_as_pull(e) => Change::PullTag { tag },
        (Action::Pull, None, Some(digest)) if counts_as_pull(e) => Change::PullDigest { digest },
        (Action::Delete, Some(tag), _) => Change::DeleteTag { tag },
        (Action::Delete, None, Some(digest)) => Change::DeleteDigest { digest },
        _ => return None,
    };
    Some((registry, repository, change))
}

/// The events the writer inserted (`new[i]` for `events[i]`) that change a fact.
fn inserted<'a>(
    events: impl Iterator<Item = &'a Event>,
    new: &'a [bool],
) -> impl Iterator<Item = (&'a Event, (&'a str, &'a str, Change<'a>))> {
    events
        .zip(new)
        .filter(|(_, n)| **n)
        .filter_map(|(e, _)| change(e).map(|c| (e, c)))
}

fn key(r: &str, repo: &str, tag: &str) -> Key {
    (r.to_string(), repo.to_string(), tag.to_string())
}

impl Wanted {
    pub(in crate::store) fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.digests.is_empty()
            && self.repositories.is_empty()
            && self.registries.is_empty()
    }

    pub(super) fn extend(&mut self, other: Wanted) {
        self.tags.extend(other.tags);
        self.digests.extend(other.digests);
        self.repositories.extend(other.repositories);
        self.registries.extend(other.registries);
    }

    /// The rows the inserted events read.
    pub(super) fn of_events<'a>(events: impl Iterator<Item = &'a Event>, new: &'a [bool]) -> Self {
        let mut w = Wanted::default();
        for (_, (r, repo, c)) in inserted(events, new) {
            match c {
                Change::Push { tag } | Change::PullTag { tag } | Change::DeleteTag { tag } => {
                    w.tags.insert(key(r, repo, tag))
                }
                Change::PullDigest { digest } | Change::DeleteDigest { digest } => {
                    w.digests.insert(key(r, repo, digest))
                }
            };
        }
        w
    }

    /// The rows a poll's changes read.
    pub(super) fn of_inventory(u: &InventoryUpdate) -> Self {
        let r = u.registry.as_str();
        let mut w = Wanted::default();
        if u.replace {
            w.registries.insert(u.registry.clone());
        }
        w.tags
            .extend(u.upsert_tags.iter().map(|(repo, t, _)| key(r, repo, t)));
        w.tags
            .extend(u.remove_tags.iter().map(|(repo, t)| key(r, repo, t)));
        w.repositories.extend(
            u.remove_repositories
                .iter()
                .map(|repo| (u.registry.clone(), repo.clone())),
        );
        w
    }
}

/// The loaded rows, changed in memory.
#[derive(Debug)]
pub(super) struct Facts {
    rows: BTreeMap<Key, TagFact>,
    /// The keys the database holds: a row removed here must be deleted there.
    stored: HashSet<Key>,
    changed: BTreeSet<Key>,
}

/// What to write back: rows to insert or replace, keys to delete.
pub(in crate::store) struct Changes {
    pub upsert: Vec<TagFact>,
    pub delete: Vec<Key>,
}

fn key_of(f: &TagFact) -> Key {
    (f.registry.clone(), f.repository.clone(), f.tag.clone())
}

fn fact(key: &Key, digest: Option<&str>, at: &str, pushed: bool) -> TagFact {
    TagFact {
        registry: key.0.clone(),
        repository: key.1.clone(),
        tag: key.2.clone(),
        digest: digest.map(String::from),
        first_seen_at: at.to_string(),
        pushed_at: pushed.then(|| at.to_string()),
        last_pulled_at: None,
        last_puller: None,
    }
}

/// Records a pull at `at` unless a later one is recorded already (events can arrive late).
fn pull(f: &mut TagFact, at: &str, actor: Option<&str>) -> bool {
    if f.last_pulled_at.as_deref().is_some_and(|last| last > at) {
        return false;
    }
    f.last_pulled_at = Some(at.to_string());
    f.last_puller = actor.map(String::from);
    true
}

/// Points the tag at another image: its pulls were of the old one.
fn moved(f: &mut TagFact, digest: Option<&str>, at: &str) {
    f.digest = digest.map(String::from);
    f.pushed_at = Some(at.to_string());
    f.last_pulled_at = None;
    f.last_puller = None;
}

impl Facts {
    /// The rows loaded for a [`Wanted`] (a row loaded twice counts once).
    pub(super) fn new(loaded: Vec<TagFact>) -> Self {
        let rows: BTreeMap<Key, TagFact> = loaded.into_iter().map(|f| (key_of(&f), f)).collect();
        Facts {
            stored: rows.keys().cloned().collect(),
            rows,
            changed: BTreeSet::new(),
        }
    }

    /// Applies the events the writer inserted, in order.
    pub(super) fn observe<'a>(&mut self, events: impl Iterator<Item = &'a Event>, new: &'a [bool]) {
        for (e, (r, repo, c)) in inserted(events, new) {
            let at = format_time(e.time);
            match c {
                Change::Push { tag } => self.pushed(&key(r, repo, tag), e.digest.as_deref(), &at),
                Change::PullTag { tag } => self.pulled_tag(&key(r, repo, tag), e, &at),
                Change::PullDigest { digest } => {
                    let actor = e.actor.as_deref();
                    self.each_at(r, repo, digest, |f| pull(f, &at, actor));
                }
                Change::DeleteTag { tag } => self.remove(&key(r, repo, tag)),
                Change::DeleteDigest { digest } => {
                    let gone: Vec<Key> = self.pointing_at(r, repo, digest).collect();
                    gone.iter().for_each(|k| self.remove(k));
                }
            }
        }
    }

    /// A manifest pushed by tag. The same digest again (a re-push, or the same push seen by
    /// both a notification and a log) keeps the first push time and the pulls; another
    /// digest, or an unknown one (a log), is a new image under the tag.
    fn pushed(&mut self, k: &Key, digest: Option<&str>, at: &str) {
        match self.rows.get_mut(k) {
            None => {
                self.rows.insert(k.clone(), fact(k, digest, at, true));
            }
            Some(f) if f.digest.is_some() && f.digest.as_deref() == digest => return,
            Some(f) => moved(f, digest, at),
        }
        self.changed.insert(k.clone());
    }

    /// A pull by tag counts for that tag (unless it names a digest the tag no longer points
    /// at). A pull of a tag not known yet (no poll, no push seen) starts its row, the digest
    /// left to the poll.
    fn pulled_tag(&mut self, k: &Key, e: &Event, at: &str) {
        let digest = e.digest.as_deref();
        if !self.rows.contains_key(k) {
            self.rows.insert(k.clone(), fact(k, digest, at, false));
            self.changed.insert(k.clone());
        }
        let f = self.rows.get_mut(k).expect("inserted above");
        let same_image = digest.is_none() || f.digest.is_none() || f.digest.as_deref() == digest;
        if same_image && pull(f, at, e.actor.as_deref()) {
            self.changed.insert(k.clone());
        }
    }

    fn pointing_at<'s>(
        &'s self,
        r: &'s str,
        repo: &'s str,
        digest: &'s str,
    ) -> impl Iterator<Item = Key> + 's {
        self.rows
            .iter()
            .filter(move |(k, f)| k.0 == r && k.1 == repo && f.digest.as_deref() == Some(digest))
            .map(|(k, _)| k.clone())
    }

    /// Calls `f` on every tag of the repository pointing at `digest`; `f` says if it changed.
    fn each_at(&mut self, r: &str, repo: &str, digest: &str, f: impl Fn(&mut TagFact) -> bool) {
        for k in self.pointing_at(r, repo, digest).collect::<Vec<_>>() {
            if f(self.rows.get_mut(&k).expect("listed above")) {
                self.changed.insert(k);
            }
        }
    }

    fn remove(&mut self, k: &Key) {
        if self.rows.remove(k).is_some() {
            self.changed.insert(k.clone());
        }
    }

    /// Applies a poll's changes: the poll says which tags exist and where they point. A tag
    /// first seen by the poll is dated by the poll; one whose digest the poll corrects moves
    /// (unless only a log had seen it, without a digest); on a first poll (`replace`), tags
    /// the poll does not list are gone.
    pub(super) fn apply_inventory(&mut self, u: &InventoryUpdate) {
        let r = u.registry.as_str();
        let at = format_time(u.time);
        if u.replace {
            let listed: HashSet<(&str, &str)> = u
                .upsert_tags
                .iter()
                .map(|(repo, tag, _)| (repo.as_str(), tag.as_str()))
                .collect();
            let gone: Vec<Key> = (self.rows.keys())
                .filter(|k| k.0 == r && !listed.contains(&(k.1.as_str(), k.2.as_str())))
                .cloned()
                .collect();
            gone.iter().for_each(|k| self.remove(k));
        }
        for (repo, tag, digest) in &u.upsert_tags {
            let k = key(r, repo, tag);
            match self.rows.get_mut(&k) {
                None => {
                    self.rows
                        .insert(k.clone(), fact(&k, Some(digest), &at, true));
                }
                Some(f) if f.digest.as_deref() == Some(digest.as_str()) => continue,
                Some(f) if f.digest.is_none() => {
                    f.digest = Some(digest.clone());
                    f.pushed_at.get_or_insert_with(|| at.clone());
                }
                Some(f) => moved(f, Some(digest), &at),
            }
            self.changed.insert(k);
        }
        for (repo, tag) in &u.remove_tags {
            self.remove(&key(r, repo, tag));
        }
        for repo in &u.remove_repositories {
            let gone: Vec<Key> = (self.rows.keys())
                .filter(|k| k.0 == r && k.1 == *repo)
                .cloned()
                .collect();
            gone.iter().for_each(|k| self.remove(k));
        }
    }

    /// The rows to write back.
    pub(super) fn changes(mut self) -> Changes {
        let mut c = Changes {
            upsert: Vec::new(),
            delete: Vec::new(),
        };
        for k in std::mem::take(&mut self.changed) {
            match self.rows.remove(&k) {
                Some(f) => c.upsert.push(f),
                None if self.stored.contains(&k) => c.delete.push(k),
                None => {} // started and removed within the batch
            }
        }
        c
    }
}
