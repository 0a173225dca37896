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

    /// Every log's checkpoint of a batch in one statement (`$1`… as arrays, `$7` the time).
    pub(in crate::store) const SAVE_ALL: &str = r#"INSERT INTO log_checkpoints
            (log, dev, ino, fp_len, fp_hash, "offset", updated_at)
         SELECT u.*, $7::text FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
            $5::text[], $6::bigint[]) AS u
         ON CONFLICT(log) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
            fp_len = excluded.fp_len, fp_hash = excluded.fp_hash, "offset" = excluded."offset",
            updated_at = excluded.updated_at"#;

    /// The parameters of [`SAVE_ALL`]: the last checkpoint of each log (a batch can carry
    /// several of one log; a row may change once per statement).
    pub(in crate::store) struct SaveAll<'a> {
        log: Vec<&'a str>,
        numbers: [Vec<i64>; 4],
        fp_hash: Vec<&'a str>,
        now: String,
    }

    impl<'a> SaveAll<'a> {
        pub(in crate::store) fn of(
            checkpoints: impl Iterator<Item = &'a Checkpoint>,
            now: OffsetDateTime,
        ) -> Self {
            let mut last = std::collections::BTreeMap::new();
            for cp in checkpoints {
                last.insert(cp.log.as_str(), cp);
            }
            let mut s = SaveAll {
                log: Vec::new(),
                numbers: Default::default(),
                fp_hash: Vec::new(),
                now: format_time(now),
            };
            for (log, cp) in last {
                s.log.push(log);
                s.fp_hash.push(&cp.fp_hash);
                for (col, v) in s
                    .numbers
                    .iter_mut()
                    .zip([cp.dev, cp.ino, cp.fp_len, cp.offset])
                {
                    col.push(v as i64);
                }
            }
            s
        }

        pub(in crate::store) fn is_empty(&self) -> bool {
            self.log.is_empty()
        }

        pub(in crate::store) fn refs(&self) -> [&(dyn postgres::types::ToSql + Sync); 7] {
            let n = &self.numbers;
            [
                &self.log,
                &n[0],
                &n[1],
                &n[2],
                &self.fp_hash,
                &n[3],
                &self.now,
            ]
        }
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
