//! Reading the audit trail: filters shared by the CLI, the API and exports, and a streaming
//! row iterator (constant memory on millions of rows).

use rusqlite::Connection;
use rusqlite::types::Value;
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
    pub fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
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
    pub fn chain_row(&self) -> super::chain::Row<'_> {
        super::chain::Row {
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
            params.push(Value::Text(super::format_time(t)));
        }
        if let Some(t) = self.until {
            conds.push("time < ?");
            params.push(Value::Text(super::format_time(t)));
        }
        let mut eq = |col: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                conds.push(col);
                params.push(Value::Text(v.clone()));
            }
        };
        eq("actor = ?", &self.actor);
        eq("repository GLOB ?", &self.repository);
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

    /// Calls `f` for every matching row in id order, without holding more than one row.
    /// Returns the number of rows.
    pub fn for_each<E>(
        &self,
        conn: &Connection,
        mut f: impl FnMut(&AuditRow) -> Result<(), E>,
    ) -> Result<u64, E>
    where
        E: From<rusqlite::Error>,
    {
        let (clause, params) = self.clause();
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
    pub fn totals_by(
        &self,
        conn: &Connection,
        column: &str,
        top: usize,
    ) -> rusqlite::Result<Vec<(String, i64)>> {
        assert!(COLUMNS.contains(&column), "totals over a known column only");
        let mut unlimited = self.clone();
        unlimited.limit = None;
        let (clause, params) = unlimited.clause();
        let clause = clause.trim_end_matches(" ORDER BY id");
        let sql = format!(
            "SELECT coalesce({column}, '(none)'), count(*) AS n FROM audit_events{clause}
             GROUP BY 1 ORDER BY n DESC, 1 LIMIT {top}"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect()
    }

    /// The earliest and latest event time the filter selects.
    pub fn time_bounds(
        &self,
        conn: &Connection,
    ) -> rusqlite::Result<(Option<String>, Option<String>)> {
        let mut unlimited = self.clone();
        unlimited.limit = None;
        let (clause, params) = unlimited.clause();
        let clause = clause.trim_end_matches(" ORDER BY id");
        let sql = format!("SELECT min(time), max(time) FROM audit_events{clause}");
        conn.query_row(&sql, rusqlite::params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// Counts per time bucket (`bucket_chars` of the time text: 13 = hour, 10 = day).
    pub fn activity(
        &self,
        conn: &Connection,
        bucket_chars: usize,
    ) -> rusqlite::Result<Vec<(String, i64)>> {
        let mut unlimited = self.clone();
        unlimited.limit = None;
        let (clause, params) = unlimited.clause();
        let clause = clause.trim_end_matches(" ORDER BY id");
        let sql = format!(
            "SELECT substr(time, 1, {bucket_chars}), count(*) FROM audit_events{clause} GROUP BY 1 ORDER BY 1"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect()
    }
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

/// Parses a time argument: `2026-11-28`, `2026-11-28T10:00:00Z` (RFC 3339), or a duration
/// back from `now` (`24h`, `7d`).
pub fn parse_time(arg: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let arg = arg.trim();
    if let Ok(t) = OffsetDateTime::parse(arg, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    if let Ok(d) = time::Date::parse(
        arg,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        return Ok(d.midnight().assume_utc());
    }
    if let Ok(d) = humantime::parse_duration(arg) {
        return Ok(now - d);
    }
    Err(format!(
        "invalid time {arg:?}: expected a date (2026-11-28), an RFC 3339 time (2026-11-28T10:00:00Z) or a duration back from now (24h, 7d)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn time_arguments() {
        let now = datetime!(2026-11-28 12:00 UTC);
        assert_eq!(
            parse_time("2026-11-27", now).unwrap(),
            datetime!(2026-11-27 0:00 UTC)
        );
        assert_eq!(
            parse_time("24h", now).unwrap(),
            datetime!(2026-11-27 12:00 UTC)
        );
        assert_eq!(
            parse_time("2026-11-28T10:00:00+02:00", now).unwrap(),
            datetime!(2026-11-28 8:00 UTC)
        );
        assert!(parse_time("last tuesday", now).is_err());
    }

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
