//! The `tag_facts` table: one row per tag of every registry, with its digest, when it was
//! first seen and pushed, and when it was last pulled and by whom (for `inventory --tags`
//! and retention plans).
//!
//! Kept current in the transaction that commits what it is derived from: audit events from
//! notifications and logs ([`observe`]) and a poll's inventory changes ([`apply_inventory`]),
//! so it is never ahead of or behind the trail and survives restarts. Only events the writer
//! really inserted are applied (a re-delivered notification changes nothing).
//!
//! What counts as a pull of a tag: a stored `pull` of the tag by name, or of the digest the
//! tag points at. Not a pull: a blob `HEAD` (a pusher's existence check, media type
//! `application/octet-stream`) and regwatch's own requests (`regwatch/<version>`; the
//! sources already keep them out of the trail, checked again here for rows of older
//! versions). When a tag moves to another digest, its pulls were of the old image: they are
//! forgotten with it.
//!
//! The rules are applied in memory ([`rules`]) to the rows a batch touches, loaded and
//! written back by each backend: the statements below for SQLite, [`pg`] for
//! PostgreSQL (where several agents keep the same table under the chain lock).

pub(super) mod pg;
mod rules;

use crate::model::{Action, Event};
use rules::{Changes, Facts, Wanted};
use rusqlite::{Connection, Transaction, params};

use super::inventory::InventoryUpdate;

/// The media type distribution's notifications give blobs.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// One tag as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFact {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    /// `None` while only a log (which does not name digests) has seen the tag.
    pub digest: Option<String>,
    pub first_seen_at: String,
    /// When the tag was pushed to its digest (a push event), or first seen there by a poll.
    pub pushed_at: Option<String>,
    pub last_pulled_at: Option<String>,
    pub last_puller: Option<String>,
}

/// Applies the events the writer just inserted, per item (`new[i]` for `events[i]`).
pub(super) fn observe<'a>(
    tx: &Transaction<'_>,
    items: impl Iterator<Item = (&'a [Event], &'a [bool])> + Clone,
) -> rusqlite::Result<()> {
    let wanted = items
        .clone()
        .fold(Wanted::default(), |mut w, (events, new)| {
            w.extend(Wanted::of_events(events.iter(), new));
            w
        });
    if wanted.is_empty() {
        return Ok(());
    }
    let mut facts = Facts::new(load_wanted(tx, &wanted)?);
    for (events, new) in items {
        facts.observe(events.iter(), new);
    }
    store(tx, facts.changes())
}

/// Whether a stored `pull` event is someone fetching an image (see the module docs).
pub fn counts_as_pull(e: &Event) -> bool {
    let blob_check =
        e.method.as_deref() == Some("HEAD") && e.media_type.as_deref() == Some(BLOB_MEDIA_TYPE);
    e.action == Action::Pull
        && !blob_check
        && !crate::model::event::is_self_user_agent(e.user_agent.as_deref())
}

/// Applies a poll's changes (see [`Facts::apply_inventory`]).
pub(super) fn apply_inventory(tx: &Transaction<'_>, u: &InventoryUpdate) -> rusqlite::Result<()> {
    let wanted = Wanted::of_inventory(u);
    let mut facts = Facts::new(load_wanted(tx, &wanted)?);
    facts.apply_inventory(u);
    store(tx, facts.changes())
}

const SELECT: &str = "SELECT registry, repository, tag, digest, first_seen_at, pushed_at,
    last_pulled_at, last_puller FROM tag_facts";

fn fact(r: &rusqlite::Row<'_>) -> rusqlite::Result<TagFact> {
    Ok(TagFact {
        registry: r.get(0)?,
        repository: r.get(1)?,
        tag: r.get(2)?,
        digest: r.get(3)?,
        first_seen_at: r.get(4)?,
        pushed_at: r.get(5)?,
        last_pulled_at: r.get(6)?,
        last_puller: r.get(7)?,
    })
}

fn three(k: &rules::Key) -> Vec<&str> {
    vec![k.0.as_str(), k.1.as_str(), k.2.as_str()]
}

/// The rows `w` names (one statement per key: SQLite answers in microseconds).
fn load_wanted(conn: &Connection, w: &Wanted) -> rusqlite::Result<Vec<TagFact>> {
    let mut out = Vec::new();
    let mut by = |clause: &str, keys: &mut dyn Iterator<Item = Vec<&str>>| {
        let mut stmt = conn.prepare_cached(&format!("{SELECT} WHERE {clause}"))?;
        for k in keys {
            let rows = stmt.query_map(rusqlite::params_from_iter(k), fact)?;
            for f in rows {
                out.push(f?);
            }
        }
        Ok::<_, rusqlite::Error>(())
    };
    by(
        "registry = ?1 AND repository = ?2 AND tag = ?3",
        &mut w.tags.iter().map(three),
    )?;
    by(
        "registry = ?1 AND repository = ?2 AND digest = ?3",
        &mut w.digests.iter().map(three),
    )?;
    by(
        "registry = ?1 AND repository = ?2",
        &mut w
            .repositories
            .iter()
            .map(|k| vec![k.0.as_str(), k.1.as_str()]),
    )?;
    by(
        "registry = ?1",
        &mut w.registries.iter().map(|r| vec![r.as_str()]),
    )?;
    Ok(out)
}

fn store(tx: &Transaction<'_>, c: Changes) -> rusqlite::Result<()> {
    let mut del = tx.prepare_cached(
        "DELETE FROM tag_facts WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
    )?;
    for (r, repo, tag) in &c.delete {
        del.execute(params![r, repo, tag])?;
    }
    let mut put = tx.prepare_cached(
        "INSERT OR REPLACE INTO tag_facts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for f in &c.upsert {
        put.execute(params![
            f.registry,
            f.repository,
            f.tag,
            f.digest,
            f.first_seen_at,
            f.pushed_at,
            f.last_pulled_at,
            f.last_puller
        ])?;
    }
    Ok(())
}

/// Every tag of `registry` the store knows, by repository and tag.
pub(super) fn load(conn: &Connection, registry: &str) -> rusqlite::Result<Vec<TagFact>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE registry = ?1 ORDER BY repository, tag"
    ))?;
    let rows = stmt.query_map([registry], fact)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;
    use crate::model::clock::SystemClock;
    use crate::store::{Store, Writer};
    use std::sync::Arc;
    use time::macros::datetime;

    fn writer(path: &std::path::Path) -> Writer {
        Store::sqlite(path)
            .start_writer(64, Arc::new(SystemClock), Box::new(|_| {}))
            .unwrap()
    }

    fn ev(action: Action, minute: u8, tag: Option<&str>, digest: Option<&str>) -> Event {
        let t = datetime!(2026-11-01 10:00 UTC) + time::Duration::minutes(minute.into());
        let mut e = Event::new(t, action, Source::Notification);
        e.registry = Some("main".into());
        e.repository = Some("app".into());
        e.tag = tag.map(String::from);
        e.digest = digest.map(String::from);
        e.actor = Some(format!("user{minute}"));
        e.method = Some("GET".into());
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.event_id = Some(format!("{action:?}{minute}{tag:?}{digest:?}"));
        e
    }

    fn facts(path: &std::path::Path) -> Vec<TagFact> {
        Store::sqlite(path)
            .reader()
            .unwrap()
            .tag_facts("main")
            .unwrap()
    }

    #[test]
    fn pulls_by_tag_and_digest_count_checks_and_own_requests_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let w = writer(&path);
        let sink = w.sink();
        sink.enqueue_blocking(ev(Action::Push, 0, Some("1.0"), Some("sha256:a")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Push, 0, Some("same"), Some("sha256:a")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Push, 1, Some("2.0"), Some("sha256:b")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Pull, 2, Some("1.0"), Some("sha256:a")))
            .unwrap();
        // By digest: both tags pointing at sha256:a.
        sink.enqueue_blocking(ev(Action::Pull, 3, None, Some("sha256:a")))
            .unwrap();
        // A blob HEAD of 2.0's digest-alike and regwatch's own read: neither is a pull.
        let mut check = ev(Action::Pull, 4, None, Some("sha256:b"));
        check.method = Some("HEAD".into());
        check.media_type = Some(BLOB_MEDIA_TYPE.into());
        sink.enqueue_blocking(check).unwrap();
        let mut own = ev(Action::Pull, 5, Some("2.0"), Some("sha256:b"));
        own.user_agent = Some("regwatch/0.1.0".into());
        sink.enqueue_blocking(own).unwrap();
        // A re-delivery of the first pull, and an older pull arriving late, change nothing.
        sink.enqueue_blocking(ev(Action::Pull, 2, Some("1.0"), Some("sha256:a")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Pull, 1, Some("same"), Some("sha256:a")))
            .unwrap();
        w.close_blocking();
        let f = facts(&path);
        assert_eq!(f.len(), 3, "{f:#?}");
        let (one, two, same) = (&f[0], &f[1], &f[2]);
        assert_eq!(one.tag, "1.0");
        assert_eq!(
            one.last_pulled_at.as_deref(),
            Some("2026-11-01T10:03:00.000000Z")
        );
        assert_eq!(one.last_puller.as_deref(), Some("user3"));
        assert_eq!(
            one.pushed_at.as_deref(),
            Some("2026-11-01T10:00:00.000000Z")
        );
        assert_eq!(two.tag, "2.0");
        assert_eq!(two.last_pulled_at, None, "{two:?}");
        assert_eq!(same.last_pulled_at, one.last_pulled_at);
    }

    #[test]
    fn moves_forget_pulls_deletes_remove_and_facts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let w = writer(&path);
        let sink = w.sink();
        sink.enqueue_blocking(ev(Action::Push, 0, Some("1.0"), Some("sha256:a")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Push, 0, Some("keep"), Some("sha256:c")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Pull, 1, Some("1.0"), Some("sha256:a")))
            .unwrap();
        sink.enqueue_blocking(ev(Action::Pull, 1, Some("keep"), Some("sha256:c")))
            .unwrap();
        // 1.0 moves to sha256:b: the pull was of the old image.
        sink.enqueue_blocking(ev(Action::Push, 2, Some("1.0"), Some("sha256:b")))
            .unwrap();
        w.close_blocking();
        let f = facts(&path);
        assert_eq!(f[0].digest.as_deref(), Some("sha256:b"));
        assert_eq!(
            f[0].pushed_at.as_deref(),
            Some("2026-11-01T10:02:00.000000Z")
        );
        assert_eq!(f[0].last_pulled_at, None);

        // Restart: the facts are there, and a delete by digest removes the tag.
        let w = writer(&path);
        assert_eq!(facts(&path).len(), 2);
        w.sink()
            .enqueue_blocking(ev(Action::Delete, 3, None, Some("sha256:b")))
            .unwrap();
        w.close_blocking();
        let f = facts(&path);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].tag, "keep");
        assert_eq!(
            f[0].last_pulled_at.as_deref(),
            Some("2026-11-01T10:01:00.000000Z")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn polls_date_new_tags_correct_digests_and_drop_vanished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let w = writer(&path);
        let sink = w.sink();
        // A log saw a pull of 1.0 (no digest) before any poll, and a tag that is gone.
        let mut log_pull = ev(Action::Pull, 1, Some("1.0"), None);
        log_pull.source = Source::Log;
        sink.append(log_pull).await.unwrap();
        sink.append(ev(Action::Push, 1, Some("gone"), Some("sha256:g")))
            .await
            .unwrap();
        let update = |replace, upsert: Vec<(&str, &str)>, remove: Vec<&str>| InventoryUpdate {
            registry: "main".into(),
            time: datetime!(2026-11-01 11:00 UTC),
            replace,
            add_repositories: vec!["app".into()],
            remove_repositories: vec![],
            upsert_tags: upsert
                .into_iter()
                .map(|(t, d)| ("app".into(), t.into(), d.into()))
                .collect(),
            remove_tags: remove
                .into_iter()
                .map(|t| ("app".into(), t.into()))
                .collect(),
            events: vec![],
            repositories: 1,
            tags: 2,
            unique_bytes: 0,
            report: None,
        };
        sink.store_inventory(update(
            true,
            vec![("1.0", "sha256:a"), ("2.0", "sha256:b")],
            vec![],
        ))
        .await
        .unwrap();
        let f = facts(&path);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].digest.as_deref(), Some("sha256:a"));
        assert_eq!(
            f[0].last_pulled_at.as_deref(),
            Some("2026-11-01T10:01:00.000000Z")
        );
        assert_eq!(
            f[1].pushed_at.as_deref(),
            Some("2026-11-01T11:00:00.000000Z")
        );
        sink.store_inventory(update(false, vec![("1.0", "sha256:z")], vec!["2.0"]))
            .await
            .unwrap();
        w.close().await;
        let f = facts(&path);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].digest.as_deref(), Some("sha256:z"));
        assert_eq!(f[0].last_pulled_at, None, "moved by the poll");
    }
}
