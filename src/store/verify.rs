//! `regwatch audit verify`: walks the hash chain and names the first row that does not match.
//!
//! The walk is a small state machine fed one row at a time ([`Walk::step`]), so it streams
//! any number of rows and is tested without a database.

use super::audit::{self, Anchor, AuditRow};
use super::chain;
use rusqlite::Connection;
use std::fmt;

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

/// The walk's state between rows.
struct Walk<'a> {
    anchor: Option<Anchor>,
    expected_prev: String,
    prev_id: Option<i64>,
    /// A row that did not link to its predecessor: the next row tells why.
    suspect: Option<AuditRow>,
    checked: u64,
    expect_head: Option<&'a str>,
    head_seen: bool,
}

impl<'a> Walk<'a> {
    fn new(anchor: Option<Anchor>, expect_head: Option<&'a str>) -> Self {
        // The first row must be the anchor's (or, without retention, any first row whose
        // link is the genesis hash).
        let expected_prev = anchor
            .as_ref()
            .map(|a| a.prev_hash.clone())
            .unwrap_or_else(|| chain::GENESIS.to_string());
        Walk {
            anchor,
            expected_prev,
            prev_id: None,
            suspect: None,
            checked: 0,
            expect_head,
            head_seen: expect_head.is_none(),
        }
    }

    /// Takes the next row in id order; a problem ends the walk.
    fn step(&mut self, row: AuditRow) -> Option<Problem> {
        if let Some(s) = self.suspect.take() {
            // `s` did not link; does this one link past it?
            return Some(if row.prev_hash == self.expected_prev {
                Problem::Inserted {
                    id: s.id,
                    prev_id: self.prev_id,
                    next_id: row.id,
                }
            } else {
                self.unlinked(&s)
            });
        }
        if row.prev_hash != self.expected_prev {
            let gap = match self.prev_id {
                Some(p) => row.id != p + 1,
                // SQLite numbers rows from 1; after retention the anchor names the first.
                None => self.anchor.as_ref().map(|a| a.first_id).unwrap_or(1) != row.id,
            };
            if gap {
                return Some(Problem::Missing {
                    after_id: self.prev_id,
                    before_id: row.id,
                });
            }
            self.suspect = Some(row);
            return None;
        }
        if chain::link(&row.prev_hash, &row.chain_row()) != row.hash {
            return Some(Problem::Changed { id: row.id });
        }
        if Some(row.hash.as_str()) == self.expect_head {
            self.head_seen = true;
        }
        self.expected_prev = row.hash;
        self.prev_id = Some(row.id);
        self.checked += 1;
        None
    }

    /// A row that does not link to its predecessor and is not explained by an insertion.
    fn unlinked(&self, s: &AuditRow) -> Problem {
        if self.prev_id.is_some_and(|p| s.id != p + 1) {
            Problem::Missing {
                after_id: self.prev_id,
                before_id: s.id,
            }
        } else {
            Problem::Relinked {
                id: s.id,
                prev_id: self.prev_id,
            }
        }
    }

    /// After the last row.
    fn finish(self) -> Verdict {
        let broken = |problem| Verdict::Broken {
            problem,
            rows_checked: self.checked,
        };
        if let Some(s) = &self.suspect {
            // The last row does not link: with nothing after it, it was appended by hand or
            // its predecessor rewritten.
            return broken(self.unlinked(s));
        }
        if !self.head_seen {
            return broken(Problem::HeadNotFound {
                head: self.expect_head.unwrap_or_default().to_string(),
            });
        }
        Verdict::Ok {
            rows: self.checked,
            head: self.expected_prev,
            anchor: self.anchor,
        }
    }
}

/// Walks every row in id order (streaming). `expect_head`, when given, must be the hash of
/// some row: it detects the removal of the newest rows, which a chain alone cannot.
pub(super) fn verify(conn: &Connection, expect_head: Option<&str>) -> rusqlite::Result<Verdict> {
    walk(audit::anchor(conn)?, expect_head, |step| {
        audit::for_each_in_chain_order(conn, |row| Ok(step(row)))
    })
}

/// The walk over the rows `rows` feeds to its callback in id order (which answers whether to
/// go on), from `anchor`: the same verdict on every backend.
pub(super) fn walk<E>(
    anchor: Option<Anchor>,
    expect_head: Option<&str>,
    rows: impl FnOnce(&mut dyn FnMut(AuditRow) -> bool) -> Result<(), E>,
) -> Result<Verdict, E> {
    let mut walk = Walk::new(anchor, expect_head);
    let mut problem = None;
    rows(&mut |row| {
        problem = walk.step(row);
        problem.is_none()
    })?;
    Ok(match problem {
        Some(problem) => Verdict::Broken {
            problem,
            rows_checked: walk.checked,
        },
        None => walk.finish(),
    })
}
