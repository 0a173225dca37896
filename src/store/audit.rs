//! The `audit_events` and `chain_anchor` tables: appending hash-chained rows, retention's
//! pruning, and reading with the filters shared by the CLI, the API and exports (a streaming
//! row iterator: constant memory on millions of rows).

use super::chain::{self, GENESIS};
use crate::model::text::format_time;
use crate::model::{Event, glob};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use time::OffsetDateTime;

/// What to select. Every field narrows the result; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Inclusive lower bound.
    pub since: Option<OffsetDateTime>,
    /// Exclusive upper bound.
    pub until: Option<OffsetDateTime>,
    pub actor: Option<String>,
    /// A glob (`prod/*`, `team/app`), matched case-sensitively like repository names.
    pub repository: Option<String>,
    pub action: Option<String>,
    /// An address as logged: `10.0.0.5` also matches `10.0.0.5:54158`.
    pub address: Option<String>,
    pub registry: Option<String>,
    pub source: Option<String>,
    /// Rows after this id (cursor pagination).
    pub after_id: Option<i64>,
    pub limit: Option<u64>,
}

/// One stored row, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub time: String,
    pub registry: Option<String>,
    pub action: String,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<i64>,
    pub actor: Option<String>,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub method: Option<String>,
    pub source: String,
    pub status: Option<i64>,
    pub event_id: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Column order of `SELECT`s and exports.
pub const COLUMNS: &[&str] = &[
    "id",
    "time",
    "registry",
    "action",
    "repository",
    "tag",
    "digest",
    "media_type",
    "size",
    "actor",
    "remote_addr",
    "user_agent",
    "request_id",
    "method",
    "source",
    "status",
    "event_id",
    "detail",
    "prev_hash",
    "hash",
];

impl AuditRow {
    pub(super) fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
        Ok(AuditRow {
            id: r.get(0)?,
            time: r.get(1)?,
            registry: r.get(2)?,
            action: r.get(3)?,
            repository: r.get(4)?,
            tag: r.get(5)?,
            digest: r.get(6)?,
            media_type: r.get(7)?,
            size: r.get(8)?,
            actor: r.get(9)?,
            remote_addr: r.get(10)?,
            user_agent: r.get(11)?,
            request_id: r.get(12)?,
            method: r.get(13)?,
            source: r.get(14)?,
            status: r.get(15)?,
            event_id: r.get(16)?,
            detail: r.get(17)?,
            prev_hash: r.get(18)?,
            hash: r.get(19)?,
        })
    }

    /// The row's columns in chain order, for recomputing its hash.
    pub fn chain_row(&self) -> chain::Row<'_> {
        chain::Row {
            time: &self.time,
            registry: self.registry.as_deref(),
            action: &self.action,
            repository: self.repository.as_deref(),
            tag: self.tag.as_deref(),
            digest: self.digest.as_deref(),
            media_type: self.media_type.as_deref(),
            size: self.size,
            actor: self.actor.as_deref(),
            remote_addr: self.remote_addr.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
            method: self.method.as_deref(),
            source: &self.source,
            status: self.status,
            event_id: self.event_id.as_deref(),
            detail: self.detail.as_deref(),
        }
    }

    /// Column values as text (empty for null), in [`COLUMNS`] order.
    pub fn fields(&self) -> [std::borrow::Cow<'_, str>; 20] {
        use std::borrow::Cow;
        fn o(v: &Option<String>) -> Cow<'_, str> {
            Cow::Borrowed(v.as_deref().unwrap_or(""))
        }
        let n = |v: Option<i64>| {
            v.map(|v| Cow::Owned(v.to_string()))
                .unwrap_or(Cow::Borrowed(""))
        };
        [
            Cow::Owned(self.id.to_string()),
            Cow::Borrowed(self.time.as_str()),
            o(&self.registry),
            Cow::Borrowed(self.action.as_str()),
            o(&self.repository),
            o(&self.tag),
            o(&self.digest),
            o(&self.media_type),
            n(self.size),
            o(&self.actor),
            o(&self.remote_addr),
            o(&self.user_agent),
            o(&self.request_id),
            o(&self.method),
            Cow::Borrowed(self.source.as_str()),
            n(self.status),
            o(&self.event_id),
            o(&self.detail),
            Cow::Borrowed(self.prev_hash.as_str()),
            Cow::Borrowed(self.hash.as_str()),
        ]
    }
}

impl Filter {
    /// The `WHERE … ORDER BY id LIMIT` part and its parameters.
    fn clause(&self) -> (String, Vec<Value>) {
        let mut conds: Vec<&str> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(t) = self.since {
            conds.push("time >= ?");
            params.push(Value::Text(format_time(t)));
        }
        if let Some(t) = self.until {
            conds.push("time < ?");
            params.push(Value::Text(format_time(t)));
        }
        let mut eq = |col: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                conds.push(col);
                params.push(Value::Text(v.clone()));
            }
        };
        eq("actor = ?", &self.actor);
        let repository = self.repository.as_deref().map(glob::to_sqlite_glob);
        eq("repository GLOB ?", &repository);
        eq("action = ?", &self.action);
        eq("registry = ?", &self.registry);
        eq("source = ?", &self.source);
        if let Some(a) = &self.address {
            // Direct requests are logged as ip:port, proxied ones as ip.
            conds.push("(remote_addr = ? OR remote_addr GLOB ?)");
            params.push(Value::Text(a.clone()));
            params.push(Value::Text(format!("{}:*", glob_escape(a))));
        }
        if let Some(id) = self.after_id {
            conds.push("id > ?");
            params.push(Value::Integer(id));
        }
        let mut sql = String::new();
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as u64)));
        }
        (sql, params)
    }

    /// The clause without its `ORDER BY` and `LIMIT`, for aggregates.
    fn unlimited_clause(&self) -> (String, Vec<Value>) {
        let mut unlimited = self.clone();
        unlimited.limit = None;
        let (clause, params) = unlimited.clause();
        (clause.trim_end_matches(" ORDER BY id").to_string(), params)
    }
}

/// Calls `f` for every row `filter` selects, in id order, without holding more than one row.
/// Returns the number of rows. `E` carries both the callback's errors and the query's.
pub(super) fn for_each<E>(
    conn: &Connection,
    filter: &Filter,
    mut f: impl FnMut(&AuditRow) -> Result<(), E>,
) -> Result<u64, E>
where
    E: From<rusqlite::Error>,
{
    let (clause, params) = filter.clause();
    let sql = format!("SELECT {} FROM audit_events{clause}", COLUMNS.join(", "));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        f(&AuditRow::from_sql(r)?)?;
        n += 1;
    }
    Ok(n)
}

/// Counts per value of `column` (for report totals), largest first.
pub(super) fn totals_by(
    conn: &Connection,
    filter: &Filter,
    column: &str,
    top: usize,
) -> rusqlite::Result<Vec<(String, i64)>> {
    assert!(COLUMNS.contains(&column), "totals over a known column only");
    let (clause, params) = filter.unlimited_clause();
    let value = if column == "action" {
        // A blob HEAD is a pusher's existence check, not a pull; rows of regwatch's own
        // requests (stored by versions that did not drop them) are not anyone's pulls.
        "CASE WHEN user_agent LIKE 'regwatch/%' THEN 'regwatch (own request)' \
         WHEN action = 'pull' AND method = 'HEAD' AND media_type = 'application/octet-stream' \
         THEN 'blob check' ELSE action END"
            .to_string()
    } else {
        format!("coalesce({column}, '(none)')")
    };
    let sql = format!(
        "SELECT {value}, count(*) AS n FROM audit_events{clause}
             GROUP BY 1 ORDER BY n DESC, 1 LIMIT {top}"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

/// The earliest and latest event time the filter selects.
pub(super) fn time_bounds(
    conn: &Connection,
    filter: &Filter,
) -> rusqlite::Result<(Option<String>, Option<String>)> {
    let (clause, params) = filter.unlimited_clause();
    let sql = format!("SELECT min(time), max(time) FROM audit_events{clause}");
    conn.query_row(&sql, rusqlite::params_from_iter(params), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

/// Counts per time bucket (`bucket_chars` of the time text: 13 = hour, 10 = day).
pub(super) fn activity(
    conn: &Connection,
    filter: &Filter,
    bucket_chars: usize,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let (clause, params) = filter.unlimited_clause();
    let sql = format!(
        "SELECT substr(time, 1, {bucket_chars}), count(*) FROM audit_events{clause} GROUP BY 1 ORDER BY 1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// Appends `events` after `head`, chaining each new row to the one before; `head` moves to
/// the last new row. A re-delivery (same source and event id) is skipped: its flag is false.
/// `received_at`: the commit's time (not hashed: the chain covers what happened, this is
/// bookkeeping for retention).
pub(super) fn insert_events<'a>(
    tx: &Transaction<'_>,
    head: &mut String,
    events: impl Iterator<Item = &'a Event>,
    received_at: OffsetDateTime,
) -> rusqlite::Result<Vec<bool>> {
    let received_at = format_time(received_at);
    let mut inserted = Vec::new();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO audit_events (time, registry, action, repository, tag, digest,
            media_type, size, actor, remote_addr, user_agent, request_id, method, source,
            status, event_id, detail, prev_hash, hash, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?;
    for e in events {
        let time = format_time(e.time);
        let row = chain_row(e, &time);
        let hash = chain::link(head, &row);
        let n = stmt.execute(params![
            row.time,
            row.registry,
            row.action,
            row.repository,
            row.tag,
            row.digest,
            row.media_type,
            row.size,
            row.actor,
            row.remote_addr,
            row.user_agent,
            row.request_id,
            row.method,
            row.source,
            row.status,
            row.event_id,
            row.detail,
            head.as_str(),
            hash,
            received_at
        ])?;
        if n == 1 {
            *head = hash;
        }
        inserted.push(n == 1);
    }
    Ok(inserted)
}

/// The columns an event is stored as, in chain order.
fn chain_row<'a>(e: &'a Event, time: &'a str) -> chain::Row<'a> {
    chain::Row {
        time,
        registry: e.registry.as_deref(),
        action: e.action.as_str(),
        repository: e.repository.as_deref(),
        tag: e.tag.as_deref(),
        digest: e.digest.as_deref(),
        media_type: e.media_type.as_deref(),
        size: e.size.map(|s| s.min(i64::MAX as u64) as i64),
        actor: e.actor.as_deref(),
        remote_addr: e.remote_addr.as_deref(),
        user_agent: e.user_agent.as_deref(),
        request_id: e.request_id.as_deref(),
        method: e.method.as_deref(),
        source: e.source.as_str(),
        status: e.status.map(i64::from),
        event_id: e.event_id.as_deref(),
        detail: e.detail.as_deref(),
    }
}

/// Deletes rows older than `cutoff` (but never the newest row, which holds the chain head)
/// and moves the anchor to the first remaining row. Returns the number of rows deleted.
pub(super) fn prune(
    conn: &mut Connection,
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
) -> rusqlite::Result<u64> {
    let cutoff = format_time(cutoff);
    let tx = conn.transaction()?;
    let first_kept: Option<(i64, String)> = tx
        // Rows older than the cutoff by when they were stored (rows from before migration 8
        // by their own time): ids grow with it, so the first young row ends the old ones
        // whatever time a source put on its events.
        .query_row(
            "SELECT id, prev_hash FROM audit_events
             WHERE coalesce(received_at, time) >= ?1 OR id = (SELECT max(id) FROM audit_events)
             ORDER BY id LIMIT 1",
            [&cutoff],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((first_id, prev_hash)) = first_kept else {
        return Ok(0);
    };
    let deleted = tx.execute("DELETE FROM audit_events WHERE id < ?1", [first_id])? as u64;
    if deleted > 0 {
        tx.execute(
            "INSERT INTO chain_anchor (id, first_id, prev_hash, rows_deleted, deleted_until, updated_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET first_id = excluded.first_id,
                prev_hash = excluded.prev_hash,
                rows_deleted = chain_anchor.rows_deleted + excluded.rows_deleted,
                deleted_until = excluded.deleted_until, updated_at = excluded.updated_at",
            params![first_id, prev_hash, deleted as i64, cutoff, format_time(now)],
        )?;
    }
    tx.commit()?;
    Ok(deleted)
}

/// Where the chain starts: the genesis hash, or the anchor retention left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub first_id: i64,
    pub prev_hash: String,
    pub rows_deleted: i64,
    pub deleted_until: String,
}

pub(super) fn anchor(conn: &Connection) -> rusqlite::Result<Option<Anchor>> {
    conn.query_row(
        "SELECT first_id, prev_hash, rows_deleted, deleted_until FROM chain_anchor WHERE id = 1",
        [],
        |r| {
            Ok(Anchor {
                first_id: r.get(0)?,
                prev_hash: r.get(1)?,
                rows_deleted: r.get(2)?,
                deleted_until: r.get(3)?,
            })
        },
    )
    .optional()
}

/// The current head hash and row count, cheaply (no walk).
pub(super) fn head(conn: &Connection) -> rusqlite::Result<(i64, String)> {
    let count: i64 = conn.query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))?;
    Ok((count, head_hash(conn)?))
}

/// The hash of the newest row (the genesis hash for an empty trail): one index lookup.
pub(super) fn head_hash(conn: &Connection) -> rusqlite::Result<String> {
    let head: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(head.unwrap_or_else(|| GENESIS.to_string()))
}

/// The id of the newest row, 0 for an empty trail.
pub(super) fn last_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM audit_events", [], |r| {
        r.get(0)
    })
}

/// Every row in id order, for the chain walk.
pub(super) fn for_each_in_chain_order(
    conn: &Connection,
    mut f: impl FnMut(AuditRow) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM audit_events ORDER BY id",
        COLUMNS.join(", ")
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if !f(AuditRow::from_sql(r)?)? {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clause_binds_every_filter() {
        let f = Filter {
            actor: Some("alice".into()),
            repository: Some("prod/*".into()),
            address: Some("10.0.0.5".into()),
            after_id: Some(7),
            limit: Some(10),
            ..Filter::default()
        };
        let (sql, params) = f.clause();
        assert_eq!(
            sql,
            " WHERE actor = ? AND repository GLOB ? AND (remote_addr = ? OR remote_addr GLOB ?) AND id > ? ORDER BY id LIMIT 10"
        );
        assert_eq!(params.len(), 5);
    }
}
