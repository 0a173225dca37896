//! The alerting tables: `alert_states` (every alert's state machine, the state itself as
//! JSON), `alert_outbox` (notifications not yet accepted by their channel, written in the
//! same transaction as the state change that caused them) and `alert_deliveries` (every
//! attempt, kept for the record).

use crate::model::text::format_time;
use rusqlite::{Connection, Transaction, params};
use time::OffsetDateTime;

/// One alert's new state.
#[derive(Debug, Clone)]
pub struct AlertStateRow {
    pub rule: String,
    pub key: String,
    /// `inactive` removes the row; any other phase is stored as text for people reading
    /// the table.
    pub phase: &'static str,
    /// The whole state as JSON.
    pub state: String,
}

/// A notification for one channel, waiting in the outbox until the channel accepts it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub idempotency_key: String,
    pub channel: String,
    /// The notification as JSON.
    pub payload: String,
}

/// State changes and the notifications they cause, stored in one transaction.
#[derive(Debug, Clone, Default)]
pub struct AlertUpdate {
    pub states: Vec<AlertStateRow>,
    pub outbox: Vec<OutboxRow>,
}

/// What one delivery attempt of an outbox row came to.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub outbox_id: i64,
    pub channel: String,
    pub idempotency_key: String,
    /// `None`: accepted (the row leaves the outbox); `Some(error)`: retried at `retry_at_ms`.
    pub error: Option<String>,
    pub retry_at_ms: i64,
}

/// One stored alert state: its rule, group key and the state as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub rule: String,
    pub key: String,
    pub state: String,
}

/// One row of a channel's outbox.
/// Outbox rows one agent is about to send: each is held (its `next_attempt_ms` moved to
/// `until_ms`) so the other agents skip it; the attempt's outcome then deletes the row or
/// sets its retry time. An agent that dies holding a row releases it at `until_ms`, when
/// another agent sends it (receivers see the same idempotency key).
#[derive(Debug, Clone)]
pub struct OutboxClaim {
    pub channel: String,
    pub ids: Vec<i64>,
    pub now_ms: i64,
    pub until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub attempts: i64,
    pub payload: String,
    pub next_attempt_ms: i64,
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// State changes and their outbox rows: one transaction, so a notification exists exactly
/// when its state change does.
pub(super) fn apply(
    conn: &mut Connection,
    u: &AlertUpdate,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    store_states(&tx, u, &format_time(now))?;
    for o in &u.outbox {
        tx.execute(
            "INSERT OR IGNORE INTO alert_outbox (idempotency_key, channel, payload, created_at,
                attempts, next_attempt_ms)
             VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![
                o.idempotency_key,
                o.channel,
                o.payload,
                format_time(now),
                unix_ms(now)
            ],
        )?;
    }
    tx.commit()
}

fn store_states(tx: &Transaction<'_>, u: &AlertUpdate, now: &str) -> rusqlite::Result<()> {
    for s in &u.states {
        if s.phase == "inactive" {
            tx.execute(
                "DELETE FROM alert_states WHERE rule = ?1 AND key = ?2",
                params![s.rule, s.key],
            )?;
        } else {
            tx.execute(
                "INSERT INTO alert_states (rule, key, phase, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(rule, key) DO UPDATE SET phase = excluded.phase,
                    state = excluded.state, updated_at = excluded.updated_at",
                params![s.rule, s.key, s.phase, s.state, now],
            )?;
        }
    }
    Ok(())
}

/// Records an attempt; an accepted notification leaves the outbox in the same transaction.
pub(super) fn record_delivery(
    conn: &mut Connection,
    o: &DeliveryOutcome,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO alert_deliveries (outbox_id, idempotency_key, channel, time, ok, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            o.outbox_id,
            o.idempotency_key,
            o.channel,
            format_time(now),
            o.error.is_none(),
            o.error
        ],
    )?;
    match &o.error {
        None => {
            tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [o.outbox_id])?;
        }
        Some(e) => {
            tx.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2,
                    next_attempt_ms = ?3 WHERE id = ?1",
                params![o.outbox_id, e, o.retry_at_ms],
            )?;
        }
    }
    tx.commit()
}

/// Every stored alert state.
pub(super) fn states(conn: &Connection) -> rusqlite::Result<Vec<StoredState>> {
    let mut stmt = conn.prepare("SELECT rule, key, state FROM alert_states")?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredState {
            rule: r.get(0)?,
            key: r.get(1)?,
            state: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// The oldest `limit` outbox rows of `channel`, in id order.
pub(super) fn outbox(
    conn: &Connection,
    channel: &str,
    limit: i64,
) -> rusqlite::Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, attempts, payload, next_attempt_ms FROM alert_outbox
         WHERE channel = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![channel, limit], |r| {
        Ok(OutboxEntry {
            id: r.get(0)?,
            attempts: r.get(1)?,
            payload: r.get(2)?,
            next_attempt_ms: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Notifications waiting in the outbox, all channels.
pub(super) fn outbox_pending(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM alert_outbox", [], |r| r.get(0))
}

/// Waiting notifications per channel.
pub(super) fn outbox_by_channel(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT channel, count(*) FROM alert_outbox GROUP BY channel")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The same statements for PostgreSQL: the tables are shared by every agent.
pub(super) mod pg {
    use super::{AlertUpdate, DeliveryOutcome, OutboxClaim, OutboxEntry, StoredState, unix_ms};
    use crate::model::text::format_time;
    use postgres::{Client, GenericClient};
    use time::OffsetDateTime;

    pub(in crate::store) fn apply(
        c: &mut Client,
        u: &AlertUpdate,
        now: OffsetDateTime,
    ) -> Result<(), postgres::Error> {
        let mut tx = c.transaction()?;
        let at = format_time(now);
        for s in &u.states {
            if s.phase == "inactive" {
                tx.execute(
                    "DELETE FROM alert_states WHERE rule = $1 AND key = $2",
                    &[&s.rule, &s.key],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO alert_states (rule, key, phase, state, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (rule, key) DO UPDATE SET phase = excluded.phase,
                        state = excluded.state, updated_at = excluded.updated_at",
                    &[&s.rule, &s.key, &s.phase, &s.state, &at],
                )?;
            }
        }
        for o in &u.outbox {
            // Two agents deciding the same notification share its idempotency key: stored once.
            tx.execute(
                "INSERT INTO alert_outbox (idempotency_key, channel, payload, created_at,
                    attempts, next_attempt_ms)
                 VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING",
                &[
                    &o.idempotency_key,
                    &o.channel,
                    &o.payload,
                    &at,
                    &unix_ms(now),
                ],
            )?;
        }
        tx.commit()
    }

    /// Claims the claim's rows that are due and that no other agent is claiming right now
    /// (`SKIP LOCKED`: a row another transaction holds is left to it).
    pub(in crate::store) fn claim(
        c: &mut impl GenericClient,
        claim: &OutboxClaim,
    ) -> Result<Vec<i64>, postgres::Error> {
        Ok(c.query(
            "UPDATE alert_outbox SET next_attempt_ms = $4
                 WHERE id IN (SELECT id FROM alert_outbox
                              WHERE channel = $1 AND id = ANY($2) AND next_attempt_ms <= $3
                              ORDER BY id FOR UPDATE SKIP LOCKED)
                 RETURNING id",
            &[&claim.channel, &claim.ids, &claim.now_ms, &claim.until_ms],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    pub(in crate::store) fn record_delivery(
        c: &mut Client,
        o: &DeliveryOutcome,
        now: OffsetDateTime,
    ) -> Result<(), postgres::Error> {
        let mut tx = c.transaction()?;
        tx.execute(
            "INSERT INTO alert_deliveries (outbox_id, idempotency_key, channel, time, ok, error)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &o.outbox_id,
                &o.idempotency_key,
                &o.channel,
                &format_time(now),
                &o.error.is_none(),
                &o.error,
            ],
        )?;
        match &o.error {
            None => {
                tx.execute("DELETE FROM alert_outbox WHERE id = $1", &[&o.outbox_id])?;
            }
            Some(e) => {
                tx.execute(
                    "UPDATE alert_outbox SET attempts = attempts + 1, last_error = $2,
                        next_attempt_ms = $3 WHERE id = $1",
                    &[&o.outbox_id, e, &o.retry_at_ms],
                )?;
            }
        }
        tx.commit()
    }

    pub(in crate::store) fn states(
        c: &mut impl GenericClient,
    ) -> Result<Vec<StoredState>, postgres::Error> {
        Ok(c.query("SELECT rule, key, state FROM alert_states", &[])?
            .iter()
            .map(|r| StoredState {
                rule: r.get(0),
                key: r.get(1),
                state: r.get(2),
            })
            .collect())
    }

    pub(in crate::store) fn outbox(
        c: &mut impl GenericClient,
        channel: &str,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, postgres::Error> {
        Ok(c.query(
            "SELECT id, attempts, payload, next_attempt_ms FROM alert_outbox
                 WHERE channel = $1 ORDER BY id LIMIT $2",
            &[&channel, &limit],
        )?
        .iter()
        .map(|r| OutboxEntry {
            id: r.get(0),
            attempts: r.get(1),
            payload: r.get(2),
            next_attempt_ms: r.get(3),
        })
        .collect())
    }

    pub(in crate::store) fn outbox_pending(
        c: &mut impl GenericClient,
    ) -> Result<i64, postgres::Error> {
        Ok(c.query_one("SELECT count(*) FROM alert_outbox", &[])?
            .get(0))
    }

    pub(in crate::store) fn outbox_by_channel(
        c: &mut impl GenericClient,
    ) -> Result<Vec<(String, i64)>, postgres::Error> {
        Ok(c.query(
            "SELECT channel, count(*) FROM alert_outbox GROUP BY channel",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }
}
