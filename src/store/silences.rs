//! The `alert_silences` table: silences created over the API, kept across restarts.

use crate::model::text::format_time;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A silence created over the API: notifications of alerts whose labels match every matcher
/// are held back from `starts_at` until `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    pub matchers: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn active(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// Stores a new silence; returns its id.
pub(super) fn insert(conn: &Connection, s: &Silence) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by, comment)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            serde_json::to_string(&s.matchers).unwrap_or_default(),
            format_time(s.starts_at),
            format_time(s.ends_at),
            s.created_by,
            s.comment
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Silences that have not ended at `now`.
pub(super) fn load(conn: &Connection, now: OffsetDateTime) -> rusqlite::Result<Vec<Silence>> {
    let mut stmt = conn.prepare(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM alert_silences
         WHERE ends_at > ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([format_time(now)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, matchers, starts, ends, created_by, comment) = row?;
        out.extend(parse(id, matchers, starts, ends, created_by, comment));
    }
    Ok(out)
}

/// A stored silence; `None` (logged) when its matchers or times cannot be read.
fn parse(
    id: i64,
    matchers: String,
    starts: String,
    ends: String,
    created_by: String,
    comment: String,
) -> Option<Silence> {
    let rfc = &time::format_description::well_known::Rfc3339;
    let (Ok(matchers), Ok(starts_at), Ok(ends_at)) = (
        serde_json::from_str(&matchers),
        OffsetDateTime::parse(&starts, rfc),
        OffsetDateTime::parse(&ends, rfc),
    ) else {
        tracing::warn!(id, "unreadable silence ignored");
        return None;
    };
    Some(Silence {
        id,
        matchers,
        starts_at,
        ends_at,
        created_by,
        comment,
    })
}

/// The same statements for PostgreSQL.
pub(super) mod pg {
    use super::Silence;
    use crate::model::text::format_time;
    use postgres::GenericClient;
    use time::OffsetDateTime;

    pub(in crate::store) fn insert(
        c: &mut impl GenericClient,
        s: &Silence,
    ) -> Result<i64, postgres::Error> {
        Ok(c.query_one(
            "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by, comment)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &serde_json::to_string(&s.matchers).unwrap_or_default(),
                &format_time(s.starts_at),
                &format_time(s.ends_at),
                &s.created_by,
                &s.comment,
            ],
        )?
        .get(0))
    }

    pub(in crate::store) fn load(
        c: &mut impl GenericClient,
        now: OffsetDateTime,
    ) -> Result<Vec<Silence>, postgres::Error> {
        let rows = c.query(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM alert_silences
             WHERE ends_at > $1 ORDER BY id",
            &[&format_time(now)],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                super::parse(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
            })
            .collect())
    }
}
