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

    /// The event the row stores (for rules that read what other agents committed); `None`
    /// for a row this build cannot read back (an unknown action or source, a bad time).
    pub fn to_event(&self) -> Option<Event> {
        let time =
            OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
                .ok()?;
        let action = crate::model::Action::parse(&self.action)?;
        let source = crate::model::Source::parse(&self.source)?;
        let mut e = Event::new(time, action, source);
        e.registry = self.registry.clone();
        e.repository = self.repository.clone();
        e.tag = self.tag.clone();
        e.digest = self.digest.clone();
        e.media_type = self.media_type.clone();
        e.size = self.size.map(|s| s.max(0) as u64);
        e.actor = self.actor.clone();
        e.remote_addr = self.remote_addr.clone();
        e.user_agent = self.user_agent.clone();
        e.request_id = self.request_id.clone();
        e.method = self.method.clone();
        e.status = self.status.and_then(|s| u16::try_from(s).ok());
        e.event_id = self.event_id.clone();
        e.detail = self.detail.clone();
        Some(e)
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

/// The SQL dialect a [`Filter`] is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound value of a filter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// Collects parameters and writes each one's placeholder (`?` or `$n`).
struct Binder {
    dialect: Dialect,
    params: Vec<Param>,
}

impl Binder {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        match self.dialect {
            Dialect::Sqlite => "?".into(),
            Dialect::Postgres => format!("${}", self.params.len()),
        }
    }
}

impl Filter {
    /// The `WHERE … ORDER BY id LIMIT` part and its parameters (SQLite).
    fn clause(&self) -> (String, Vec<Value>) {
        let (sql, params) = self.clause_in(Dialect::Sqlite);
        let values = params
            .into_iter()
            .map(|p| match p {
                Param::Text(t) => Value::Text(t),
                Param::Int(i) => Value::Integer(i),
            })
            .collect();
        (sql, values)
    }

    /// The `WHERE … ORDER BY id LIMIT` part in `dialect`, and its parameters.
    pub(super) fn clause_in(&self, dialect: Dialect) -> (String, Vec<Param>) {
        let mut b = Binder {
            dialect,
            params: Vec::new(),
        };
        let mut conds: Vec<String> = Vec::new();
        if let Some(t) = self.since {
            conds.push(format!("time >= {}", b.bind(Param::Text(format_time(t)))));
        }
        if let Some(t) = self.until {
            conds.push(format!("time < {}", b.bind(Param::Text(format_time(t)))));
        }
        for (col, v) in [("actor", &self.actor)] {
            if let Some(v) = v {
                conds.push(format!("{col} = {}", b.bind(Param::Text(v.clone()))));
            }
        }
        if let Some(r) = &self.repository {
            conds.push(match dialect {
                Dialect::Sqlite => format!(
                    "repository GLOB {}",
                    b.bind(Param::Text(glob::to_sqlite_glob(r)))
                ),
                Dialect::Postgres => {
                    format!("repository LIKE {}", b.bind(Param::Text(glob::to_like(r))))
                }
            });
        }
        for (col, v) in [
            ("action", &self.action),
            ("registry", &self.registry),
            ("source", &self.source),
        ] {
            if let Some(v) = v {
                conds.push(format!("{col} = {}", b.bind(Param::Text(v.clone()))));
            }
        }
        if let Some(a) = &self.address {
            // Direct requests are logged as ip:port, proxied ones as ip.
            let exact = b.bind(Param::Text(a.clone()));
            conds.push(match dialect {
                Dialect::Sqlite => format!(
                    "(remote_addr = {exact} OR remote_addr GLOB {})",
                    b.bind(Param::Text(format!("{}:*", glob_escape(a))))
                ),
                Dialect::Postgres => format!(
                    "(remote_addr = {exact} OR starts_with(remote_addr, {}))",
                    b.bind(Param::Text(format!("{a}:")))
                ),
            });
        }
        if let Some(id) = self.after_id {
            conds.push(format!("id > {}", b.bind(Param::Int(id))));
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
        (sql, b.params)
    }

    /// The clause without its `ORDER BY` and `LIMIT`, for aggregates.
    fn unlimited_clause(&self) -> (String, Vec<Value>) {
        let mut unlimited = self.clone();
        unlimited.limit = None;
        let (clause, params) = unlimited.clause();
        (clause.trim_end_matches(" ORDER BY id").to_string(), params)
    }

    /// [`unlimited_clause`](Self::unlimited_clause) in `dialect`.
    pub(super) fn unlimited_clause_in(&self, dialect: Dialect) -> (String, Vec<Param>) {
        let mut unlimited = self.clone();
        unlimited.limit = None;
        let (clause, params) = unlimited.clause_in(dialect);
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

/// The same statements for PostgreSQL. Appends take the chain lock (an advisory lock held
/// until the transaction ends), so several agents extend one chain: each reads the head, the
/// next id and which events are already stored under the lock, computes the hashes and
/// inserts the whole batch in one statement.
pub(super) mod pg {
    use super::{AuditRow, COLUMNS, Dialect, Filter, Param, chain, chain_row};
    use crate::model::Event;
    use crate::model::text::format_time;
    use postgres::fallible_iterator::FallibleIterator;
    use postgres::types::ToSql;
    use postgres::{Client, GenericClient, Row, Transaction};
    use std::collections::HashSet;
    use time::OffsetDateTime;

    /// The advisory lock that serialises appends to the chain across agents ("auditlog").
    pub(in crate::store) const CHAIN_LOCK: i64 = 0x6175_6469_746c_6f67;

    type Params = Vec<Box<dyn ToSql + Sync + Send>>;

    fn params(ps: Vec<Param>) -> Params {
        ps.into_iter()
            .map(|p| -> Box<dyn ToSql + Sync + Send> {
                match p {
                    Param::Text(t) => Box::new(t),
                    Param::Int(i) => Box::new(i),
                }
            })
            .collect()
    }

    fn refs(ps: &Params) -> Vec<&(dyn ToSql + Sync)> {
        ps.iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    fn row(r: &Row) -> AuditRow {
        AuditRow {
            id: r.get(0),
            time: r.get(1),
            registry: r.get(2),
            action: r.get(3),
            repository: r.get(4),
            tag: r.get(5),
            digest: r.get(6),
            media_type: r.get(7),
            size: r.get(8),
            actor: r.get(9),
            remote_addr: r.get(10),
            user_agent: r.get(11),
            request_id: r.get(12),
            method: r.get(13),
            source: r.get(14),
            status: r.get(15),
            event_id: r.get(16),
            detail: r.get(17),
            prev_hash: r.get(18),
            hash: r.get(19),
        }
    }

    /// Streams the rows `filter` selects in id order until `f` says stop; the row count.
    pub(in crate::store) fn for_each(
        c: &mut Client,
        filter: &Filter,
        mut f: impl FnMut(AuditRow) -> bool,
    ) -> Result<u64, postgres::Error> {
        let (clause, ps) = filter.clause_in(Dialect::Postgres);
        let sql = format!("SELECT {} FROM audit_events{clause}", COLUMNS.join(", "));
        let ps = params(ps);
        let mut rows = c.query_raw(&sql, refs(&ps))?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            if !f(row(&r)) {
                break;
            }
        }
        Ok(n)
    }

    pub(in crate::store) fn totals_by(
        c: &mut Client,
        filter: &Filter,
        column: &str,
        top: usize,
    ) -> Result<Vec<(String, i64)>, postgres::Error> {
        assert!(COLUMNS.contains(&column), "totals over a known column only");
        let (clause, ps) = filter.unlimited_clause_in(Dialect::Postgres);
        let value = match column {
            "id" | "size" | "status" => format!("{column}::text"),
            _ => column.to_string(),
        };
        let sql = format!(
            "SELECT coalesce({value}, '(none)') COLLATE \"C\", count(*) AS n FROM audit_events{clause}
             GROUP BY 1 ORDER BY n DESC, 1 LIMIT {top}"
        );
        let ps = params(ps);
        Ok(c.query(&sql, &refs(&ps))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    pub(in crate::store) fn time_bounds(
        c: &mut Client,
        filter: &Filter,
    ) -> Result<(Option<String>, Option<String>), postgres::Error> {
        let (clause, ps) = filter.unlimited_clause_in(Dialect::Postgres);
        let sql = format!("SELECT min(time), max(time) FROM audit_events{clause}");
        let ps = params(ps);
        let r = c.query_one(&sql, &refs(&ps))?;
        Ok((r.get(0), r.get(1)))
    }

    pub(in crate::store) fn activity(
        c: &mut Client,
        filter: &Filter,
        bucket_chars: usize,
    ) -> Result<Vec<(String, i64)>, postgres::Error> {
        let (clause, ps) = filter.unlimited_clause_in(Dialect::Postgres);
        let sql = format!(
            "SELECT substr(time, 1, {bucket_chars}), count(*) FROM audit_events{clause} GROUP BY 1 ORDER BY 1"
        );
        let ps = params(ps);
        Ok(c.query(&sql, &refs(&ps))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    pub(in crate::store) fn head(
        c: &mut impl GenericClient,
    ) -> Result<(i64, String), postgres::Error> {
        let count: i64 = c
            .query_one("SELECT count(*) FROM audit_events", &[])?
            .get(0);
        Ok((count, last(c)?.1))
    }

    /// The newest row's id (0 for an empty trail) and hash (the genesis hash then).
    pub(in crate::store) fn last(
        c: &mut impl GenericClient,
    ) -> Result<(i64, String), postgres::Error> {
        Ok(last_of(c.query_opt(LAST, &[])?))
    }

    pub(in crate::store) fn anchor(
        c: &mut Client,
    ) -> Result<Option<super::Anchor>, postgres::Error> {
        Ok(c
            .query_opt(
                "SELECT first_id, prev_hash, rows_deleted, deleted_until FROM chain_anchor WHERE id = 1",
                &[],
            )?
            .map(|r| super::Anchor {
                first_id: r.get(0),
                prev_hash: r.get(1),
                rows_deleted: r.get(2),
                deleted_until: r.get(3),
            }))
    }

    /// The columns of the rows one append inserts, as arrays for one `unnest` insert.
    #[derive(Default)]
    pub(in crate::store) struct Batch<'a> {
        id: Vec<i64>,
        time: Vec<String>,
        registry: Vec<Option<&'a str>>,
        action: Vec<&'a str>,
        repository: Vec<Option<&'a str>>,
        tag: Vec<Option<&'a str>>,
        digest: Vec<Option<&'a str>>,
        media_type: Vec<Option<&'a str>>,
        size: Vec<Option<i64>>,
        actor: Vec<Option<&'a str>>,
        remote_addr: Vec<Option<&'a str>>,
        user_agent: Vec<Option<&'a str>>,
        request_id: Vec<Option<&'a str>>,
        method: Vec<Option<&'a str>>,
        source: Vec<&'a str>,
        status: Vec<Option<i64>>,
        event_id: Vec<Option<&'a str>>,
        detail: Vec<Option<&'a str>>,
        prev_hash: Vec<String>,
        hash: Vec<String>,
    }

    impl<'a> Batch<'a> {
        fn push(&mut self, id: i64, e: &'a Event, time: String, prev: &str, hash: &str) {
            let r = chain_row(e, "");
            self.id.push(id);
            self.time.push(time);
            self.registry.push(r.registry);
            self.action.push(r.action);
            self.repository.push(r.repository);
            self.tag.push(r.tag);
            self.digest.push(r.digest);
            self.media_type.push(r.media_type);
            self.size.push(r.size);
            self.actor.push(r.actor);
            self.remote_addr.push(r.remote_addr);
            self.user_agent.push(r.user_agent);
            self.request_id.push(r.request_id);
            self.method.push(r.method);
            self.source.push(r.source);
            self.status.push(r.status);
            self.event_id.push(r.event_id);
            self.detail.push(r.detail);
            self.prev_hash.push(prev.to_string());
            self.hash.push(hash.to_string());
        }
    }

    /// Which of the batch's (source, event id) are stored already: `$1` sources, `$2` ids.
    /// Read under the chain lock, so no other agent can store one of them before this
    /// transaction ends. One index lookup per id whatever the plan (a prepared statement's
    /// generic plan, made without the array's size, chose a hash join over the whole
    /// trail): the `LIMIT` keeps the lateral subquery a lookup per row of the array.
    pub(in crate::store) const STORED_IDS: &str = "SELECT a.source, a.event_id
         FROM unnest($1::text[], $2::text[]) AS u(source, event_id)
         CROSS JOIN LATERAL (SELECT source, event_id FROM audit_events a
             WHERE a.source = u.source AND a.event_id = u.event_id LIMIT 1) a";

    /// The newest row's id and hash (none for an empty trail).
    pub(in crate::store) const LAST: &str =
        "SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1";

    /// The parameters of [`STORED_IDS`] for `events`.
    pub(in crate::store) fn id_params<'a>(events: &[&'a Event]) -> (Vec<&'a str>, Vec<&'a str>) {
        events
            .iter()
            .filter_map(|e| e.event_id.as_deref().map(|id| (e.source.as_str(), id)))
            .unzip()
    }

    /// The answer of [`STORED_IDS`].
    pub(in crate::store) fn stored_set(rows: &[Row]) -> HashSet<(String, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// The answer of [`LAST`]: the newest row's id (0 for an empty trail) and hash (the
    /// genesis hash then).
    pub(in crate::store) fn last_of(row: Option<Row>) -> (i64, String) {
        row.map(|r| (r.get(0), r.get(1)))
            .unwrap_or_else(|| (0, chain::GENESIS.to_string()))
    }

    fn stored_ids(
        tx: &mut Transaction<'_>,
        events: &[&Event],
    ) -> Result<HashSet<(String, String)>, postgres::Error> {
        let (sources, ids) = id_params(events);
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(stored_set(&tx.query(STORED_IDS, &[&sources, &ids])?))
    }

    /// The rows of `events` chained after the newest row (`last`), skipping those already
    /// stored (`seen`) and repeats within the batch; which events were new.
    pub(in crate::store) fn chain_batch<'a>(
        events: &[&'a Event],
        last: (i64, String),
        mut seen: HashSet<(String, String)>,
    ) -> (Batch<'a>, Vec<bool>) {
        let (mut id, mut head) = last;
        let mut batch = Batch::default();
        let mut flags = Vec::with_capacity(events.len());
        for e in events {
            if let Some(eid) = &e.event_id {
                if !seen.insert((e.source.as_str().to_string(), eid.clone())) {
                    flags.push(false);
                    continue;
                }
            }
            let time = format_time(e.time);
            let hash = chain::link(&head, &chain_row(e, &time));
            id += 1;
            batch.push(id, e, time, &head, &hash);
            head = hash;
            flags.push(true);
        }
        (batch, flags)
    }

    /// Appends `events` to the chain in `tx`, recording `agent` on each row; which events
    /// were new (a re-delivery, by source and event id, is skipped, whichever agent stored
    /// the first delivery).
    /// `received_at`: the commit's time, outside the chain (retention goes by it).
    pub(in crate::store) fn insert_events(
        tx: &mut Transaction<'_>,
        agent: &str,
        events: &[&Event],
        received_at: OffsetDateTime,
    ) -> Result<Vec<bool>, postgres::Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])?;
        let last = last(tx)?;
        let seen = stored_ids(tx, events)?;
        let (batch, flags) = chain_batch(events, last, seen);
        if !batch.is_empty() {
            let received_at = format_time(received_at);
            tx.execute(INSERT, &batch.params(&agent, &received_at))?;
        }
        Ok(flags)
    }

    /// One statement for the whole batch: `$1`…`$20` the columns as arrays, `$21` the agent,
    /// `$22` when it was received. No `ON CONFLICT DO NOTHING`: under the chain lock a
    /// duplicate cannot get here, and if a row written without the lock made one, failing
    /// the transaction (the sender retries) keeps the chain intact where skipping a row
    /// would break the links computed after it.
    pub(in crate::store) const INSERT: &str =
        "INSERT INTO audit_events (id, time, registry, action, repository, tag, digest,
                media_type, size, actor, remote_addr, user_agent, request_id, method, source,
                status, event_id, detail, prev_hash, hash, agent, received_at)
             SELECT u.*, $21::text, $22::text FROM unnest($1::bigint[], $2::text[], $3::text[],
                $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[],
                $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                $16::bigint[], $17::text[], $18::text[], $19::text[], $20::text[]) AS u";

    impl Batch<'_> {
        pub(in crate::store) fn is_empty(&self) -> bool {
            self.id.is_empty()
        }

        /// The parameters of [`INSERT`].
        pub(in crate::store) fn params<'s>(
            &'s self,
            agent: &'s &str,
            received_at: &'s String,
        ) -> [&'s (dyn ToSql + Sync); 22] {
            let b = self;
            [
                &b.id,
                &b.time,
                &b.registry,
                &b.action,
                &b.repository,
                &b.tag,
                &b.digest,
                &b.media_type,
                &b.size,
                &b.actor,
                &b.remote_addr,
                &b.user_agent,
                &b.request_id,
                &b.method,
                &b.source,
                &b.status,
                &b.event_id,
                &b.detail,
                &b.prev_hash,
                &b.hash,
                agent,
                received_at,
            ]
        }
    }

    /// Retention, as for SQLite, under the chain lock (the newest row is never deleted).
    pub(in crate::store) fn prune(
        c: &mut Client,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, postgres::Error> {
        let cutoff = format_time(cutoff);
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])?;
        let first_kept = tx.query_opt(
            "SELECT id, prev_hash FROM audit_events
             WHERE coalesce(received_at, time) >= $1 OR id = (SELECT max(id) FROM audit_events)
             ORDER BY id LIMIT 1",
            &[&cutoff],
        )?;
        let Some(first) = first_kept else {
            return Ok(0);
        };
        let (first_id, prev_hash): (i64, String) = (first.get(0), first.get(1));
        let deleted = tx.execute("DELETE FROM audit_events WHERE id < $1", &[&first_id])?;
        if deleted > 0 {
            tx.execute(
                "INSERT INTO chain_anchor (id, first_id, prev_hash, rows_deleted, deleted_until, updated_at)
                 VALUES (1, $1, $2, $3, $4, $5)
                 ON CONFLICT(id) DO UPDATE SET first_id = excluded.first_id,
                    prev_hash = excluded.prev_hash,
                    rows_deleted = chain_anchor.rows_deleted + excluded.rows_deleted,
                    deleted_until = excluded.deleted_until, updated_at = excluded.updated_at",
                &[&first_id, &prev_hash, &(deleted as i64), &cutoff, &format_time(now)],
            )?;
        }
        tx.commit()?;
        Ok(deleted)
    }
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
