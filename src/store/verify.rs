//! `regwatch audit verify`: walks the hash chain and names the first row that does not match.

use super::chain;
use super::query::{AuditRow, COLUMNS};
use rusqlite::{Connection, OptionalExtension};
use std::fmt;

/// Where the chain starts: the genesis hash, or the anchor retention left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub first_id: i64,
    pub prev_hash: String,
    pub rows_deleted: i64,
    pub deleted_until: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row's contents no longer give its stored hash.
    Changed { id: i64 },
    /// The row does not link to its predecessor, and its successor links past it.
    Inserted {
        id: i64,
        prev_id: Option<i64>,
        next_id: i64,
    },
    /// A gap in the ids with a broken link: rows were deleted.
    Missing {
        after_id: Option<i64>,
        before_id: i64,
    },
    /// The link to the predecessor is broken without a gap: the predecessor was rewritten
    /// with a recomputed hash, or rows were reordered.
    Relinked { id: i64, prev_id: Option<i64> },
    /// A head hash written down earlier is not in the chain any more.
    HeadNotFound { head: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prev = |p: &Option<i64>| {
            p.map(|p| format!("row {p}"))
                .unwrap_or_else(|| "the chain's start".into())
        };
        match self {
            Problem::Changed { id } => {
                write!(
                    f,
                    "row {id} was changed: its contents do not match its stored hash"
                )
            }
            Problem::Inserted {
                id,
                prev_id,
                next_id,
            } => write!(
                f,
                "row {id} was inserted: it does not link to {}, and row {next_id} links past it",
                prev(prev_id)
            ),
            Problem::Missing {
                after_id,
                before_id,
            } => write!(
                f,
                "rows are missing between {} and row {before_id}: row {before_id} links to a row that is gone",
                prev(after_id)
            ),
            Problem::Relinked { id, prev_id } => write!(
                f,
                "row {id} does not link to {}: that row was rewritten (with a recomputed hash) or rows were reordered",
                prev(prev_id)
            ),
            Problem::HeadNotFound { head } => write!(
                f,
                "the expected head {head} is not in the chain: rows at or before it were removed or changed"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok {
        rows: u64,
        head: String,
        anchor: Option<Anchor>,
    },
    Broken {
        problem: Problem,
        rows_checked: u64,
    },
}

pub fn anchor(conn: &Connection) -> rusqlite::Result<Option<Anchor>> {
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

/// Walks every row in id order (streaming). `expect_head`, when given, must be the hash of
/// some row: it detects the removal of the newest rows, which a chain alone cannot.
pub fn verify(conn: &Connection, expect_head: Option<&str>) -> rusqlite::Result<Verdict> {
    let anchor = anchor(conn)?;
    let mut expected_prev = anchor
        .as_ref()
        .map(|a| a.prev_hash.clone())
        .unwrap_or_else(|| chain::GENESIS.to_string());
    let mut prev_id: Option<i64> = None;
    // The first row must be the anchor's (or, without retention, any first row whose link is
    // the genesis hash).
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM audit_events ORDER BY id",
        COLUMNS.join(", ")
    ))?;
    let mut rows = stmt.query([])?;
    let mut suspect: Option<AuditRow> = None;
    let mut checked = 0u64;
    let mut head_seen = expect_head.is_none();
    while let Some(r) = rows.next()? {
        let row = AuditRow::from_sql(r)?;
        if let Some(s) = suspect.take() {
            // `s` did not link; does this one link past it?
            let problem = if row.prev_hash == expected_prev {
                Problem::Inserted {
                    id: s.id,
                    prev_id,
                    next_id: row.id,
                }
            } else if prev_id.map(|p| s.id != p + 1).unwrap_or(false) {
                Problem::Missing {
                    after_id: prev_id,
                    before_id: s.id,
                }
            } else {
                Problem::Relinked { id: s.id, prev_id }
            };
            return Ok(Verdict::Broken {
                problem,
                rows_checked: checked,
            });
        }
        if row.prev_hash != expected_prev {
            let gap = match prev_id {
                Some(p) => row.id != p + 1,
                // SQLite numbers rows from 1; after retention the anchor names the first.
                None => anchor.as_ref().map(|a| a.first_id).unwrap_or(1) != row.id,
            };
            if gap {
                return Ok(Verdict::Broken {
                    problem: Problem::Missing {
                        after_id: prev_id,
                        before_id: row.id,
                    },
                    rows_checked: checked,
                });
            }
            suspect = Some(row);
            continue;
        }
        if chain::link(&row.prev_hash, &row.chain_row()) != row.hash {
            return Ok(Verdict::Broken {
                problem: Problem::Changed { id: row.id },
                rows_checked: checked,
            });
        }
        if Some(row.hash.as_str()) == expect_head {
            head_seen = true;
        }
        expected_prev = row.hash;
        prev_id = Some(row.id);
        checked += 1;
    }
    if let Some(s) = suspect {
        // The last row does not link: with nothing after it, it was appended by hand or its
        // predecessor rewritten.
        let problem = if prev_id.map(|p| s.id != p + 1).unwrap_or(false) {
            Problem::Missing {
                after_id: prev_id,
                before_id: s.id,
            }
        } else {
            Problem::Relinked { id: s.id, prev_id }
        };
        return Ok(Verdict::Broken {
            problem,
            rows_checked: checked,
        });
    }
    if !head_seen {
        return Ok(Verdict::Broken {
            problem: Problem::HeadNotFound {
                head: expect_head.unwrap_or_default().to_string(),
            },
            rows_checked: checked,
        });
    }
    Ok(Verdict::Ok {
        rows: checked,
        head: expected_prev,
        anchor,
    })
}

/// The current head hash and row count, cheaply (no walk).
pub fn head(conn: &Connection) -> rusqlite::Result<(i64, String)> {
    let count: i64 = conn.query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))?;
    Ok((count, head_hash(conn)?))
}

/// The hash of the newest row (the genesis hash for an empty trail): one index lookup.
pub fn head_hash(conn: &Connection) -> rusqlite::Result<String> {
    let head: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(head.unwrap_or_else(|| chain::GENESIS.to_string()))
}
