//! The `storage_samples` table: filesystem usage of each registry's storage over time, for
//! the growth trend and the forecast. Not part of the hash chain: these are measurements,
//! not audit events.

use crate::model::text::format_time;
use crate::model::usage::Sample;
use rusqlite::{Connection, params};
use std::time::Duration;
use time::OffsetDateTime;

/// Stores one sample and drops the registry's samples older than `keep` before it.
pub(super) fn record(
    conn: &mut Connection,
    registry: &str,
    sample: &Sample,
    keep: Duration,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO storage_samples (registry, time, used_bytes, capacity_bytes, available_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            registry,
            format_time(sample.time),
            sample.used_bytes.min(i64::MAX as u64) as i64,
            sample.capacity_bytes.min(i64::MAX as u64) as i64,
            sample.available_bytes.min(i64::MAX as u64) as i64
        ],
    )?;
    tx.execute(
        "DELETE FROM storage_samples WHERE registry = ?1 AND time < ?2",
        params![registry, format_time(sample.time - keep)],
    )?;
    tx.commit()
}

/// The samples of `registry` taken after `since`, oldest first.
pub(super) fn load(
    conn: &Connection,
    registry: &str,
    since: OffsetDateTime,
) -> rusqlite::Result<Vec<Sample>> {
    let mut stmt = conn.prepare(
        "SELECT time, used_bytes, capacity_bytes, available_bytes FROM storage_samples
         WHERE registry = ?1 AND time > ?2 ORDER BY time",
    )?;
    let rows = stmt.query_map(params![registry, format_time(since)], |r| {
        let t: String = r.get(0)?;
        let time = OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?;
        Ok(Sample {
            time,
            used_bytes: r.get::<_, i64>(1)?.max(0) as u64,
            capacity_bytes: r.get::<_, i64>(2)?.max(0) as u64,
            available_bytes: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

/// The same statements for PostgreSQL.
pub(super) mod pg {
    use crate::model::text::format_time;
    use crate::model::usage::Sample;
    use postgres::Client;
    use std::time::Duration;
    use time::OffsetDateTime;

    pub(in crate::store) fn record(
        c: &mut Client,
        registry: &str,
        sample: &Sample,
        keep: Duration,
    ) -> Result<(), postgres::Error> {
        let mut tx = c.transaction()?;
        tx.execute(
            "INSERT INTO storage_samples (registry, time, used_bytes, capacity_bytes, available_bytes)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &registry,
                &format_time(sample.time),
                &(sample.used_bytes.min(i64::MAX as u64) as i64),
                &(sample.capacity_bytes.min(i64::MAX as u64) as i64),
                &(sample.available_bytes.min(i64::MAX as u64) as i64),
            ],
        )?;
        tx.execute(
            "DELETE FROM storage_samples WHERE registry = $1 AND time < $2",
            &[&registry, &format_time(sample.time - keep)],
        )?;
        tx.commit()
    }

    pub(in crate::store) fn load(
        c: &mut Client,
        registry: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<Sample>, postgres::Error> {
        let rows = c.query(
            "SELECT time, used_bytes, capacity_bytes, available_bytes FROM storage_samples
             WHERE registry = $1 AND time > $2 ORDER BY time",
            &[&registry, &format_time(since)],
        )?;
        let rfc = &time::format_description::well_known::Rfc3339;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let time = OffsetDateTime::parse(r.get::<_, &str>(0), rfc).ok()?;
                Some(Sample {
                    time,
                    used_bytes: r.get::<_, i64>(1).max(0) as u64,
                    capacity_bytes: r.get::<_, i64>(2).max(0) as u64,
                    available_bytes: r.get::<_, i64>(3).max(0) as u64,
                })
            })
            .collect())
    }
}
