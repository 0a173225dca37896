//! The `log_checkpoints` table: where each tailed log file was read up to. Written in the
//! same transaction as the events read from those bytes, so a crash neither loses nor
//! repeats a line. Files of a glob `[[log]]` are keyed `<log>:<file name>`.

use crate::model::Checkpoint;
use crate::model::text::format_time;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

pub(super) fn save(
    tx: &Transaction<'_>,
    c: &Checkpoint,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO log_checkpoints (log, dev, ino, fp_len, fp_hash, offset, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(log) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
            fp_len = excluded.fp_len, fp_hash = excluded.fp_hash, offset = excluded.offset,
            updated_at = excluded.updated_at",
    )?;
    stmt.execute(params![
        c.log,
        c.dev as i64,
        c.ino as i64,
        c.fp_len as i64,
        c.fp_hash,
        c.offset as i64,
        format_time(now)
    ])?;
    Ok(())
}

/// The checkpoints of every file of a glob log.
pub(super) fn load_of(conn: &Connection, log: &str) -> rusqlite::Result<Vec<Checkpoint>> {
    let mut stmt = conn.prepare(
        "SELECT log, dev, ino, fp_len, fp_hash, offset FROM log_checkpoints WHERE substr(log, 1, ?2) = ?1",
    )?;
    let prefix = format!("{log}:");
    let rows = stmt.query_map(params![prefix, prefix.len() as i64], |r| {
        Ok(Checkpoint {
            log: r.get(0)?,
            dev: r.get::<_, i64>(1)? as u64,
            ino: r.get::<_, i64>(2)? as u64,
            fp_len: r.get::<_, i64>(3)? as u64,
            fp_hash: r.get(4)?,
            offset: r.get::<_, i64>(5)? as u64,
        })
    })?;
    rows.collect()
}

/// The last checkpoint committed for `log`.
pub(super) fn load(conn: &Connection, log: &str) -> rusqlite::Result<Option<Checkpoint>> {
    conn.query_row(
        "SELECT dev, ino, fp_len, fp_hash, offset FROM log_checkpoints WHERE log = ?1",
        [log],
        |r| {
            Ok(Checkpoint {
                log: log.to_string(),
                dev: r.get::<_, i64>(0)? as u64,
                ino: r.get::<_, i64>(1)? as u64,
                fp_len: r.get::<_, i64>(2)? as u64,
                fp_hash: r.get(3)?,
                offset: r.get::<_, i64>(4)? as u64,
            })
        },
    )
    .optional()
}

/// The same statements for PostgreSQL (`offset` is a reserved word there).
pub(super) mod pg {
    use crate::model::Checkpoint;
    use crate::model::text::format_time;
    use postgres::{GenericClient, Row};
    use time::OffsetDateTime;

    pub(in crate::store) fn save(
        c: &mut impl GenericClient,
        cp: &Checkpoint,
        now: OffsetDateTime,
    ) -> Result<(), postgres::Error> {
        c.execute(
            r#"INSERT INTO log_checkpoints (log, dev, ino, fp_len, fp_hash, "offset", updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT(log) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
                fp_len = excluded.fp_len, fp_hash = excluded.fp_hash, "offset" = excluded."offset",
                updated_at = excluded.updated_at"#,
            &[
                &cp.log,
                &(cp.dev as i64),
                &(cp.ino as i64),
                &(cp.fp_len as i64),
                &cp.fp_hash,
                &(cp.offset as i64),
                &format_time(now),
            ],
        )?;
        Ok(())
    }

    fn checkpoint(r: &Row) -> Checkpoint {
        Checkpoint {
            log: r.get(0),
            dev: r.get::<_, i64>(1) as u64,
            ino: r.get::<_, i64>(2) as u64,
            fp_len: r.get::<_, i64>(3) as u64,
            fp_hash: r.get(4),
            offset: r.get::<_, i64>(5) as u64,
        }
    }

    pub(in crate::store) fn load_of(
        c: &mut impl GenericClient,
        log: &str,
    ) -> Result<Vec<Checkpoint>, postgres::Error> {
        let prefix = format!("{log}:");
        Ok(c.query(
            r#"SELECT log, dev, ino, fp_len, fp_hash, "offset" FROM log_checkpoints
                 WHERE starts_with(log, $1)"#,
            &[&prefix],
        )?
        .iter()
        .map(checkpoint)
        .collect())
    }

    pub(in crate::store) fn load(
        c: &mut impl GenericClient,
        log: &str,
    ) -> Result<Option<Checkpoint>, postgres::Error> {
        Ok(c
            .query_opt(
                r#"SELECT log, dev, ino, fp_len, fp_hash, "offset" FROM log_checkpoints WHERE log = $1"#,
                &[&log],
            )?
            .map(|r| checkpoint(&r)))
    }
}
