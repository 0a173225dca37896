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

use crate::model::text::format_time;
use crate::model::{Action, Event, Source};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

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

/// Applies the events the writer just inserted (`new[i]` for `events[i]`).
pub(super) fn observe<'a>(
    tx: &Transaction<'_>,
    events: impl Iterator<Item = &'a Event>,
    new: &[bool],
) -> rusqlite::Result<()> {
    for (e, _) in events.zip(new).filter(|(_, n)| **n) {
        if !matches!(e.source, Source::Notification | Source::Log) {
            continue; // polls come through apply_inventory, with the poll's full picture
        }
        let (Some(registry), Some(repository)) = (e.registry.as_deref(), e.repository.as_deref())
        else {
            continue;
        };
        let at = format_time(e.time);
        match e.action {
            Action::Push => pushed(tx, registry, repository, e, &at)?,
            Action::Pull if counts_as_pull(e) => pulled(tx, registry, repository, e, &at)?,
            Action::Delete => deleted(tx, registry, repository, e)?,
            _ => {}
        }
    }
    Ok(())
}

/// Whether a stored `pull` event is someone fetching an image (see the module docs).
pub fn counts_as_pull(e: &Event) -> bool {
    let blob_check =
        e.method.as_deref() == Some("HEAD") && e.media_type.as_deref() == Some(BLOB_MEDIA_TYPE);
    e.action == Action::Pull
        && !blob_check
        && !crate::model::event::is_self_user_agent(e.user_agent.as_deref())
}

fn current_digest(
    tx: &Transaction<'_>,
    key: (&str, &str, &str),
) -> rusqlite::Result<Option<Option<String>>> {
    tx.prepare_cached(
        "SELECT digest FROM tag_facts WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
    )?
    .query_row(params![key.0, key.1, key.2], |r| r.get(0))
    .optional()
}

/// A manifest pushed by tag. The same digest again (a re-push, or the same push seen by
/// both a notification and a log) keeps the first push time and the pulls; another digest,
/// or an unknown one (a log), is a new image under the tag.
fn pushed(tx: &Transaction<'_>, r: &str, repo: &str, e: &Event, at: &str) -> rusqlite::Result<()> {
    let Some(tag) = e.tag.as_deref() else {
        return Ok(()); // a blob, or an index's child manifest pushed by digest
    };
    match current_digest(tx, (r, repo, tag))? {
        None => {
            tx.prepare_cached("INSERT INTO tag_facts VALUES (?1, ?2, ?3, ?4, ?5, ?5, NULL, NULL)")?
                .execute(params![r, repo, tag, e.digest, at])?;
        }
        Some(Some(d)) if e.digest.as_deref() == Some(d.as_str()) => {}
        Some(_) => {
            tx.prepare_cached(
                "UPDATE tag_facts SET digest = ?4, pushed_at = ?5, last_pulled_at = NULL,
                    last_puller = NULL
                 WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
            )?
            .execute(params![r, repo, tag, e.digest, at])?;
        }
    }
    Ok(())
}

/// A pull by tag counts for that tag (unless it names a digest the tag no longer points
/// at); a pull by digest counts for every tag of the repository pointing at it. A pull of
/// a tag not known yet (no poll, no push seen) starts its row, the digest left to the poll.
fn pulled(tx: &Transaction<'_>, r: &str, repo: &str, e: &Event, at: &str) -> rusqlite::Result<()> {
    let actor = e.actor.as_deref();
    if let Some(tag) = e.tag.as_deref() {
        if current_digest(tx, (r, repo, tag))?.is_none() {
            tx.prepare_cached(
                "INSERT INTO tag_facts VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL)",
            )?
            .execute(params![r, repo, tag, e.digest, at])?;
        }
        tx.prepare_cached(
            "UPDATE tag_facts SET last_pulled_at = ?5, last_puller = ?6
             WHERE registry = ?1 AND repository = ?2 AND tag = ?3
               AND (?4 IS NULL OR digest IS NULL OR digest = ?4)
               AND (last_pulled_at IS NULL OR last_pulled_at <= ?5)",
        )?
        .execute(params![r, repo, tag, e.digest, at, actor])?;
    } else if let Some(digest) = e.digest.as_deref() {
        tx.prepare_cached(
            "UPDATE tag_facts SET last_pulled_at = ?4, last_puller = ?5
             WHERE registry = ?1 AND repository = ?2 AND digest = ?3
               AND (last_pulled_at IS NULL OR last_pulled_at <= ?4)",
        )?
        .execute(params![r, repo, digest, at, actor])?;
    }
    Ok(())
}

/// A manifest delete (by digest) removes every tag of the repository pointing at it; a tag
/// delete (Harbor, newer distribution) removes that tag.
fn deleted(tx: &Transaction<'_>, r: &str, repo: &str, e: &Event) -> rusqlite::Result<()> {
    if let Some(tag) = e.tag.as_deref() {
        tx.prepare_cached(
            "DELETE FROM tag_facts WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
        )?
        .execute(params![r, repo, tag])?;
    } else if let Some(digest) = e.digest.as_deref() {
        tx.prepare_cached(
            "DELETE FROM tag_facts WHERE registry = ?1 AND repository = ?2 AND digest = ?3",
        )?
        .execute(params![r, repo, digest])?;
    }
    Ok(())
}

/// Applies a poll's changes: the poll says which tags exist and where they point. A tag
/// first seen by the poll is dated by the poll; one whose digest the poll corrects moves
/// (unless only a log had seen it, without a digest); on a first poll (`replace`), tags the
/// poll does not list are gone.
pub(super) fn apply_inventory(tx: &Transaction<'_>, u: &InventoryUpdate) -> rusqlite::Result<()> {
    let r = u.registry.as_str();
    let at = format_time(u.time);
    if u.replace {
        let listed: std::collections::HashSet<(&str, &str)> = u
            .upsert_tags
            .iter()
            .map(|(repo, tag, _)| (repo.as_str(), tag.as_str()))
            .collect();
        let stored = load(tx, r)?;
        let mut del = tx.prepare_cached(
            "DELETE FROM tag_facts WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
        )?;
        for f in stored {
            if !listed.contains(&(f.repository.as_str(), f.tag.as_str())) {
                del.execute(params![r, f.repository, f.tag])?;
            }
        }
    }
    for (repo, tag, digest) in &u.upsert_tags {
        match current_digest(tx, (r, repo, tag))? {
            None => {
                tx.prepare_cached(
                    "INSERT INTO tag_facts VALUES (?1, ?2, ?3, ?4, ?5, ?5, NULL, NULL)",
                )?
                .execute(params![r, repo, tag, digest, at])?;
            }
            Some(Some(d)) if d == *digest => {}
            Some(None) => {
                tx.prepare_cached(
                    "UPDATE tag_facts SET digest = ?4, pushed_at = coalesce(pushed_at, ?5)
                     WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
                )?
                .execute(params![r, repo, tag, digest, at])?;
            }
            Some(Some(_)) => {
                tx.prepare_cached(
                    "UPDATE tag_facts SET digest = ?4, pushed_at = ?5, last_pulled_at = NULL,
                        last_puller = NULL
                     WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
                )?
                .execute(params![r, repo, tag, digest, at])?;
            }
        }
    }
    let mut del = tx.prepare_cached(
        "DELETE FROM tag_facts WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
    )?;
    for (repo, tag) in &u.remove_tags {
        del.execute(params![r, repo, tag])?;
    }
    let mut del_repo =
        tx.prepare_cached("DELETE FROM tag_facts WHERE registry = ?1 AND repository = ?2")?;
    for repo in &u.remove_repositories {
        del_repo.execute(params![r, repo])?;
    }
    Ok(())
}

/// Every tag of `registry` the store knows, by repository and tag.
pub(super) fn load(conn: &Connection, registry: &str) -> rusqlite::Result<Vec<TagFact>> {
    let mut stmt = conn.prepare_cached(
        "SELECT registry, repository, tag, digest, first_seen_at, pushed_at, last_pulled_at,
            last_puller
         FROM tag_facts WHERE registry = ?1 ORDER BY repository, tag",
    )?;
    let rows = stmt.query_map([registry], |r| {
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
    })?;
    rows.collect()
}

/// Reading the table on PostgreSQL. The PostgreSQL writer does not maintain it yet, so a
/// shared database answers with no facts (every tag "never pulled" and unknown push time,
/// which retention plans keep).
pub(super) mod pg {
    use super::TagFact;
    use postgres::GenericClient;

    pub(in crate::store) fn load(
        c: &mut impl GenericClient,
        registry: &str,
    ) -> Result<Vec<TagFact>, postgres::Error> {
        let rows = c.query(
            "SELECT registry, repository, tag, digest, first_seen_at, pushed_at, last_pulled_at,
                last_puller
             FROM tag_facts WHERE registry = $1 ORDER BY repository, tag",
            &[&registry],
        )?;
        Ok(rows
            .iter()
            .map(|r| TagFact {
                registry: r.get(0),
                repository: r.get(1),
                tag: r.get(2),
                digest: r.get(3),
                first_seen_at: r.get(4),
                pushed_at: r.get(5),
                last_pulled_at: r.get(6),
                last_puller: r.get(7),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
