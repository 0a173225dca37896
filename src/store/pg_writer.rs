//! The PostgreSQL backend of the writer: one connection for the commands (opened again when
//! it breaks, so a database restart costs the batches sent meanwhile, which their senders
//! retry), each command one transaction through the table modules' PostgreSQL statements;
//! event appends on a second, pipelined connection ([`super::pg_append`]). Unlike the
//! SQLite writer it keeps no chain head in memory: other agents extend the same chain, so
//! each append reads the head under the chain lock.

use super::alerts::{self, AlertUpdate, DeliveryOutcome, OutboxClaim};
use super::inventory::{self, InventoryUpdate};
use super::manifests::{self, ManifestUpdate};
use super::pg::{PgTarget, with_client};
use super::pg_append::Appender;
use super::silences::{self, Silence};
use super::writer::{Backend, Item};
use super::{StoreError, audit, forward_cursors, samples, tag_facts};
use crate::model::Event;
use crate::model::clock::SharedClock;
use crate::model::usage::Sample;
use postgres::Client;
use std::time::Duration;
use time::OffsetDateTime;

pub(super) struct PgWriter {
    target: PgTarget,
    /// Connected on the writer's thread (the client must not be used from async tasks).
    client: Option<Client>,
    /// Event appends, on a connection of their own (see [`Appender`]).
    appender: Appender,
    agent: String,
    clock: SharedClock,
}

impl PgWriter {
    pub(super) fn new(target: PgTarget, agent: String, clock: SharedClock) -> Self {
        PgWriter {
            target,
            client: None,
            appender: Appender::default(),
            agent,
            clock,
        }
    }

    /// Runs `f` on the connection, a client error reported against the database.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Client, &str, OffsetDateTime) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let (target, agent, now) = (&self.target, self.agent.as_str(), self.clock.now());
        with_client(&mut self.client, target, |c| {
            f(c, agent, now).map_err(|e| target.error(e))
        })
    }
}

impl Backend for PgWriter {
    fn write(&mut self, items: &[Item]) -> Result<Vec<Vec<bool>>, StoreError> {
        let now = self.clock.now();
        self.appender.write(&self.target, &self.agent, now, items)
    }

    fn prune(&mut self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        self.with(|c, _, now| audit::pg::prune(c, cutoff, now))
    }

    fn inventory(&mut self, update: &InventoryUpdate) -> Result<Vec<bool>, StoreError> {
        self.with(|c, agent, now| {
            let mut tx = c.transaction()?;
            inventory::pg::apply(&mut tx, update)?;
            let events: Vec<&Event> = update.events.iter().collect();
            let flags = audit::pg::insert_events(&mut tx, agent, &events, now)?;
            tag_facts::pg::apply_inventory(&mut tx, update)?;
            tx.commit()?;
            Ok(flags)
        })
    }

    fn alerts(&mut self, update: &AlertUpdate) -> Result<(), StoreError> {
        self.with(|c, _, now| alerts::pg::apply(c, update, now))
    }

    fn delivery(&mut self, outcome: &DeliveryOutcome) -> Result<(), StoreError> {
        self.with(|c, _, now| alerts::pg::record_delivery(c, outcome, now))
    }

    fn claim(&mut self, claim: &OutboxClaim) -> Result<Vec<i64>, StoreError> {
        self.with(|c, _, _| alerts::pg::claim(c, claim))
    }

    fn silence(&mut self, silence: &Silence) -> Result<i64, StoreError> {
        self.with(|c, _, _| silences::pg::insert(c, silence))
    }

    fn sample(
        &mut self,
        registry: &str,
        sample: &Sample,
        keep: Duration,
    ) -> Result<(), StoreError> {
        self.with(|c, _, _| samples::pg::record(c, registry, sample, keep))
    }

    fn manifests(&mut self, update: &ManifestUpdate) -> Result<(), StoreError> {
        self.with(|c, _, _| manifests::pg::apply(c, update))
    }

    fn forward_cursor(&mut self, forward: &str, last_id: i64) -> Result<(), StoreError> {
        self.with(|c, _, now| forward_cursors::pg::save(c, forward, last_id, now))
    }

    fn close(&mut self) {
        // Every command committed on its own; dropping the client ends the session.
        self.client = None;
        self.appender.close();
    }
}
