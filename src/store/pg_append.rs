//! The writer's appends on PostgreSQL in two round trips. Every agent's appends take the
//! one chain lock, so the time it is held bounds the events per second of all agents
//! together; with one statement per round trip (the synchronous client: begin, lock, head,
//! stored ids, insert, commit, each prepared first) it was held for about eight. Here
//! tokio-postgres pipelines each step's statements (sent back to back, answered in order),
//! prepared once per connection:
//!
//! 1. `BEGIN`, the chain lock, the chain head, which of the batch's event ids are stored
//!    already, and the tag facts rows the batch may touch — the head is read after the
//!    lock is granted (each statement sees what was committed before it started);
//! 2. the new rows (one insert of arrays), the tag facts changes, the logs' checkpoints,
//!    `COMMIT`.
//!
//! The hashes are computed between the two, on this thread. Any error drops the connection
//! (and with it the transaction); the next batch connects again.

use super::StoreError;
use super::audit::pg::{self as audit, CHAIN_LOCK};
use super::checkpoints::pg::{SAVE_ALL, SaveAll};
use super::pg::PgTarget;
use super::tag_facts::pg::{self as facts, DeleteParams, LoadParams, UpsertParams};
use super::writer::Item;
use crate::model::Event;
use crate::model::text::format_time;
use time::OffsetDateTime;
use tokio_postgres::{Client, Statement};

/// How long ending a session may take (the server answers a terminate at once, or is gone).
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The connection the writer appends on, with its runtime (the writer thread runs no other
/// async code). Both are made on first use, on the writer's thread: a runtime must not be
/// dropped where async code runs.
#[derive(Default)]
pub(super) struct Appender {
    rt: Option<tokio::runtime::Runtime>,
    conn: Option<Conn>,
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    /// Drives the connection; ends once the client is dropped (the session with it).
    task: tokio::task::JoinHandle<()>,
    last: Statement,
    stored_ids: Statement,
    insert: Statement,
    facts_load: Statement,
    facts_delete: Statement,
    facts_upsert: Statement,
    checkpoints: Statement,
}

impl Conn {
    async fn open(target: &PgTarget) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = target.async_config().connect(tokio_postgres::NoTls).await?;
        let task = tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the next query says so.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "append connection closed");
            }
        });
        // Planned once: prepared statements get a generic plan after five runs, made
        // without the arrays' sizes, so the lookups are written to be index lookups under
        // any plan (see audit::pg::STORED_IDS).
        let (last, stored_ids, insert, facts_load, facts_delete, facts_upsert, checkpoints) = tokio::try_join!(
            biased;
            client.prepare(audit::LAST),
            client.prepare(audit::STORED_IDS),
            client.prepare(audit::INSERT),
            client.prepare(facts::LOAD),
            client.prepare(facts::DELETE),
            client.prepare(facts::UPSERT),
            client.prepare(SAVE_ALL),
        )?;
        Ok(Conn {
            client,
            task,
            last,
            stored_ids,
            insert,
            facts_load,
            facts_delete,
            facts_upsert,
            checkpoints,
        })
    }
}

impl Appender {
    /// Commits every item's events and checkpoint in one transaction; per item, which
    /// events were new.
    pub(super) fn write(
        &mut self,
        target: &PgTarget,
        agent: &str,
        now: OffsetDateTime,
        items: &[Item],
    ) -> Result<Vec<Vec<bool>>, StoreError> {
        if self.rt.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Postgres {
                    target: target.to_string(),
                    detail: format!("cannot start the append connection's runtime: {e}"),
                })?;
            self.rt = Some(rt);
        }
        let rt = self.rt.as_ref().expect("made above");
        let conn = match self.conn.take().filter(|c| !c.client.is_closed()) {
            Some(c) => c,
            None => rt
                .block_on(Conn::open(target))
                .map_err(|e| target.error(e))?,
        };
        let result = rt.block_on(append(&conn, agent, now, items));
        match result {
            Ok(_) => self.conn = Some(conn),
            Err(_) => end(rt, conn),
        }
        result.map_err(|e| target.error(e))
    }

    pub(super) fn close(&mut self) {
        if let (Some(rt), Some(conn)) = (&self.rt, self.conn.take()) {
            end(rt, conn);
        }
    }
}

/// Ends the session now, not at the next write: a transaction a failed step left open
/// would hold the chain lock the other agents wait for.
fn end(rt: &tokio::runtime::Runtime, conn: Conn) {
    let Conn { client, task, .. } = conn;
    drop(client);
    // The timer is made inside the runtime (outside it, tokio panics).
    let _ = rt.block_on(async { tokio::time::timeout(END_WAIT, task).await });
}

/// Splits the flags of a batch's events back into one list per item.
fn per_item(items: &[Item], flags: Vec<bool>) -> Vec<Vec<bool>> {
    let mut flags = flags.into_iter();
    items
        .iter()
        .map(|i| flags.by_ref().take(i.events.len()).collect())
        .collect()
}

async fn append(
    c: &Conn,
    agent: &str,
    now: OffsetDateTime,
    items: &[Item],
) -> Result<Vec<Vec<bool>>, tokio_postgres::Error> {
    let events: Vec<&Event> = items.iter().flat_map(|i| i.events.iter()).collect();
    let (sources, ids) = audit::id_params(&events);
    let wanted = facts::wanted(items.iter().map(|i| i.events.as_slice()));
    let load = LoadParams::of(&wanted);
    // Step 1; `biased`: the statements go out in this order.
    let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({CHAIN_LOCK})");
    let id_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&sources, &ids];
    let (_, last, stored, loaded) = tokio::try_join!(
        biased;
        c.client.batch_execute(&lock),
        c.client.query_opt(&c.last, &[]),
        c.client.query(&c.stored_ids, &id_params),
        async {
            match wanted.is_empty() {
                true => Ok(Vec::new()),
                false => c.client.query(&c.facts_load, &load.refs()).await,
            }
        },
    )?;
    let seen = audit::stored_set(&stored);
    let (batch, flags) = audit::chain_batch(&events, audit::last_of(last), seen);
    let flags = per_item(items, flags);
    let inserted = items.iter().zip(&flags);
    let changes = facts::changes(
        &loaded,
        inserted.map(|(i, f)| (i.events.as_slice(), f.as_slice())),
    );
    let (delete, upsert) = (DeleteParams::of(&changes), UpsertParams::of(&changes));
    // A log's checkpoint commits with the events read up to it.
    let checkpoints = SaveAll::of(items.iter().filter_map(|i| i.checkpoint.as_ref()), now);
    let received_at = format_time(now);
    let skip = || async { Ok::<u64, tokio_postgres::Error>(0) };
    // Step 2: the statements with nothing to do are not sent.
    tokio::try_join!(
        biased;
        async {
            match batch.is_empty() {
                true => skip().await,
                false => c.client.execute(&c.insert, &batch.params(&agent, &received_at)).await,
            }
        },
        async {
            match changes.delete.is_empty() {
                true => skip().await,
                false => c.client.execute(&c.facts_delete, &delete.refs()).await,
            }
        },
        async {
            match changes.upsert.is_empty() {
                true => skip().await,
                false => c.client.execute(&c.facts_upsert, &upsert.refs()).await,
            }
        },
        async {
            match checkpoints.is_empty() {
                true => skip().await,
                false => c.client.execute(&c.checkpoints, &checkpoints.refs()).await,
            }
        },
        c.client.batch_execute("COMMIT"),
    )?;
    Ok(flags)
}
