//! The `forward_cursors` table: for each `[[forward]]`, the id of the last audit row its
//! receiver accepted (rows its filters skip move it too). Written by the single writer
//! after a send succeeded, so the cursor is never ahead of what the receiver has. On a
//! shared database the alerting feed (audit_match rules) keeps its place here too, under
//! `(alerting)`, so the next holder of the alerting lease goes on from it.

use crate::model::text::format_time;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

/// Moves `forward`'s cursor to `last_id`. Never backwards: a late write from a stopped
/// task cannot undo a newer one.
pub(super) fn save(
    conn: &Connection,
    forward: &str,
    last_id: i64,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO forward_cursors (forward, last_id, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(forward) DO UPDATE SET last_id = max(last_id, excluded.last_id),
            updated_at = excluded.updated_at",
        params![forward, last_id, format_time(now)],
    )?;
    Ok(())
}

/// The cursor of `forward`; `None` when it never sent anything.
pub(super) fn load(conn: &Connection, forward: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT last_id FROM forward_cursors WHERE forward = ?1",
        [forward],
        |r| r.get(0),
    )
    .optional()
}

/// The same statements for PostgreSQL.
pub(super) mod pg {
    use crate::model::text::format_time;
    use postgres::GenericClient;
    use time::OffsetDateTime;

    pub(in crate::store) fn save(
        c: &mut impl GenericClient,
        forward: &str,
        last_id: i64,
        now: OffsetDateTime,
    ) -> Result<(), postgres::Error> {
        c.execute(
            "INSERT INTO forward_cursors (forward, last_id, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT(forward) DO UPDATE SET
                last_id = greatest(forward_cursors.last_id, excluded.last_id),
                updated_at = excluded.updated_at",
            &[&forward, &last_id, &format_time(now)],
        )?;
        Ok(())
    }

    pub(in crate::store) fn load(
        c: &mut impl GenericClient,
        forward: &str,
    ) -> Result<Option<i64>, postgres::Error> {
        Ok(c.query_opt(
            "SELECT last_id FROM forward_cursors WHERE forward = $1",
            &[&forward],
        )?
        .map(|r| r.get(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::schema::open_for_writing(&dir.path().join("c.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(load(&conn, "siem").unwrap(), None);
        save(&conn, "siem", 10, now).unwrap();
        save(&conn, "siem", 7, now).unwrap();
        assert_eq!(load(&conn, "siem").unwrap(), Some(10));
        save(&conn, "siem", 12, now).unwrap();
        save(&conn, "other", 1, now).unwrap();
        assert_eq!(load(&conn, "siem").unwrap(), Some(12));
        assert_eq!(load(&conn, "other").unwrap(), Some(1));
    }
}
