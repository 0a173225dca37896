//! The poller's tables: `inventory_polls` (one row per registry: when, totals, the last
//! report as JSON), `inventory_repositories` and `inventory_tags` (what the last poll saw, so
//! a restart diffs against it instead of reporting the whole registry as new). Kept current
//! by the change events themselves, in one transaction with them.

use super::audit;
use crate::model::Event;
use crate::model::text::format_time;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::{BTreeMap, BTreeSet};

/// What one poll changed. Applied with its events in one transaction, so a crash between
/// the two can neither lose the events nor report them twice.
#[derive(Debug, Clone)]
pub struct InventoryUpdate {
    pub registry: String,
    pub time: time::OffsetDateTime,
    /// The first poll of this registry: store everything, no per-tag events.
    pub replace: bool,
    pub add_repositories: Vec<String>,
    pub remove_repositories: Vec<String>,
    /// (repository, tag, digest), inserted or replaced.
    pub upsert_tags: Vec<(String, String, String)>,
    /// (repository, tag).
    pub remove_tags: Vec<(String, String)>,
    pub events: Vec<Event>,
    pub repositories: usize,
    pub tags: usize,
    pub unique_bytes: u64,
    /// The poll's report as JSON (see [`super::Reader::inventory_report`]).
    pub report: Option<String>,
}

/// The inventory the last poll of a registry stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredInventory {
    pub repositories: BTreeSet<String>,
    /// (repository, tag) → digest.
    pub tags: BTreeMap<(String, String), String>,
}

/// Applies `u` and appends its events after `head`; returns which events were new.
pub(super) fn apply(
    tx: &Transaction<'_>,
    head: &mut String,
    u: &InventoryUpdate,
    now: time::OffsetDateTime,
) -> rusqlite::Result<Vec<bool>> {
    let r = u.registry.as_str();
    if u.replace {
        tx.execute("DELETE FROM inventory_tags WHERE registry = ?1", [r])?;
        tx.execute(
            "DELETE FROM inventory_repositories WHERE registry = ?1",
            [r],
        )?;
    }
    apply_repositories(tx, u)?;
    apply_tags(tx, u)?;
    tx.execute(
        "INSERT OR REPLACE INTO inventory_polls VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            r,
            format_time(u.time),
            u.repositories as i64,
            u.tags as i64,
            u.unique_bytes.min(i64::MAX as u64) as i64,
            u.report
        ],
    )?;
    audit::insert_events(tx, head, u.events.iter(), now)
}

fn apply_repositories(tx: &Transaction<'_>, u: &InventoryUpdate) -> rusqlite::Result<()> {
    let r = u.registry.as_str();
    let mut add =
        tx.prepare_cached("INSERT OR IGNORE INTO inventory_repositories VALUES (?1, ?2)")?;
    for repo in &u.add_repositories {
        add.execute(params![r, repo])?;
    }
    let mut del_repo = tx.prepare_cached(
        "DELETE FROM inventory_repositories WHERE registry = ?1 AND repository = ?2",
    )?;
    let mut del_repo_tags =
        tx.prepare_cached("DELETE FROM inventory_tags WHERE registry = ?1 AND repository = ?2")?;
    for repo in &u.remove_repositories {
        del_repo.execute(params![r, repo])?;
        del_repo_tags.execute(params![r, repo])?;
    }
    Ok(())
}

fn apply_tags(tx: &Transaction<'_>, u: &InventoryUpdate) -> rusqlite::Result<()> {
    let r = u.registry.as_str();
    let mut up =
        tx.prepare_cached("INSERT OR REPLACE INTO inventory_tags VALUES (?1, ?2, ?3, ?4)")?;
    for (repo, tag, digest) in &u.upsert_tags {
        up.execute(params![r, repo, tag, digest])?;
    }
    let mut del = tx.prepare_cached(
        "DELETE FROM inventory_tags WHERE registry = ?1 AND repository = ?2 AND tag = ?3",
    )?;
    for (repo, tag) in &u.remove_tags {
        del.execute(params![r, repo, tag])?;
    }
    Ok(())
}

/// The inventory the last poll of `registry` stored; `None` when it was never polled.
pub(super) fn load(conn: &Connection, registry: &str) -> rusqlite::Result<Option<StoredInventory>> {
    let polled: i64 = conn.query_row(
        "SELECT count(*) FROM inventory_polls WHERE registry = ?1",
        [registry],
        |r| r.get(0),
    )?;
    if polled == 0 {
        return Ok(None);
    }
    let mut stmt =
        conn.prepare("SELECT repository FROM inventory_repositories WHERE registry = ?1")?;
    let repositories = stmt
        .query_map([registry], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare("SELECT repository, tag, digest FROM inventory_tags WHERE registry = ?1")?;
    let tags = stmt
        .query_map([registry], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(StoredInventory { repositories, tags }))
}

/// The report of the last stored poll of `registry`, as JSON, if any.
pub(super) fn load_report(conn: &Connection, registry: &str) -> rusqlite::Result<Option<String>> {
    // No row (never polled) and a NULL report (stored before migration 6) are both None.
    Ok(conn
        .query_row(
            "SELECT report FROM inventory_polls WHERE registry = ?1",
            [registry],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// The same statements for PostgreSQL; the events go through the chained append.
pub(super) mod pg {
    use super::{InventoryUpdate, StoredInventory};
    use crate::model::text::format_time;
    use postgres::{GenericClient, Transaction};

    /// The inventory tables' part of a poll's transaction (the caller appends the events).
    pub(in crate::store) fn apply(
        tx: &mut Transaction<'_>,
        u: &InventoryUpdate,
    ) -> Result<(), postgres::Error> {
        let r = u.registry.as_str();
        if u.replace {
            tx.execute("DELETE FROM inventory_tags WHERE registry = $1", &[&r])?;
            tx.execute(
                "DELETE FROM inventory_repositories WHERE registry = $1",
                &[&r],
            )?;
        }
        for repo in &u.add_repositories {
            tx.execute(
                "INSERT INTO inventory_repositories VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&r, repo],
            )?;
        }
        for repo in &u.remove_repositories {
            let p: [&(dyn postgres::types::ToSql + Sync); 2] = [&r, repo];
            tx.execute(
                "DELETE FROM inventory_repositories WHERE registry = $1 AND repository = $2",
                &p,
            )?;
            tx.execute(
                "DELETE FROM inventory_tags WHERE registry = $1 AND repository = $2",
                &p,
            )?;
        }
        for (repo, tag, digest) in &u.upsert_tags {
            tx.execute(
                "INSERT INTO inventory_tags VALUES ($1, $2, $3, $4)
                 ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest",
                &[&r, repo, tag, digest],
            )?;
        }
        for (repo, tag) in &u.remove_tags {
            tx.execute(
                "DELETE FROM inventory_tags WHERE registry = $1 AND repository = $2 AND tag = $3",
                &[&r, repo, tag],
            )?;
        }
        tx.execute(
            "INSERT INTO inventory_polls (registry, time, repositories, tags, unique_bytes, report)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (registry) DO UPDATE SET time = excluded.time,
                repositories = excluded.repositories, tags = excluded.tags,
                unique_bytes = excluded.unique_bytes, report = excluded.report",
            &[
                &r,
                &format_time(u.time),
                &(u.repositories as i64),
                &(u.tags as i64),
                &(u.unique_bytes.min(i64::MAX as u64) as i64),
                &u.report,
            ],
        )?;
        Ok(())
    }

    pub(in crate::store) fn load(
        c: &mut impl GenericClient,
        registry: &str,
    ) -> Result<Option<StoredInventory>, postgres::Error> {
        let polled: i64 = c
            .query_one(
                "SELECT count(*) FROM inventory_polls WHERE registry = $1",
                &[&registry],
            )?
            .get(0);
        if polled == 0 {
            return Ok(None);
        }
        let repositories = c
            .query(
                "SELECT repository FROM inventory_repositories WHERE registry = $1",
                &[&registry],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let tags = c
            .query(
                "SELECT repository, tag, digest FROM inventory_tags WHERE registry = $1",
                &[&registry],
            )?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        Ok(Some(StoredInventory { repositories, tags }))
    }

    pub(in crate::store) fn load_report(
        c: &mut impl GenericClient,
        registry: &str,
    ) -> Result<Option<String>, postgres::Error> {
        Ok(c.query_opt(
            "SELECT report FROM inventory_polls WHERE registry = $1",
            &[&registry],
        )?
        .and_then(|r| r.get(0)))
    }
}
