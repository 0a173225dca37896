//! Leases for singleton work (inventory polls, storage walks, scheduled reports, retention,
//! alert evaluation): with several agents on one PostgreSQL, one agent at a time does each.
//!
//! A lease is a session-level advisory lock (`pg_try_advisory_lock`) on a connection kept
//! for the purpose: held as long as that session lives, so when its agent dies (even by
//! kill -9) the server ends the session and releases the lock, and another agent's next try
//! (every [`TRY_EVERY`]) takes it. The same connection answers whether the database is
//! reachable. A SQLite database has one agent: it holds every lease, always.

use super::pg::PgTarget;
use super::{Location, Store};
use postgres::Client;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How often the lease thread checks its session and tries the leases it does not hold:
/// the longest a lease stays with nobody after its holder died.
const TRY_EVERY: Duration = Duration::from_secs(1);

/// The advisory-lock class of regwatch's leases (the first key of the two-key form).
const LEASE_CLASS: i32 = 0x7277_6c73; // "rwls"

/// The leases an agent competes for, and whether it reaches the database.
#[derive(Clone)]
pub struct Leases {
    held: Arc<BTreeMap<&'static str, watch::Sender<bool>>>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// The second key of a lease's advisory lock: stable across agents and versions.
fn lease_key(name: &str) -> i32 {
    let h = Sha256::digest(name.as_bytes());
    i32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

impl Leases {
    /// Starts competing for `names` on `store` (on PostgreSQL, a thread with its own session;
    /// on SQLite every lease is held at once).
    pub fn start(store: &Store, names: &[&'static str]) -> Leases {
        let local = !store.is_shared();
        let held = names
            .iter()
            .map(|n| (*n, watch::Sender::new(local)))
            .collect();
        let leases = Leases {
            held: Arc::new(held),
            up: Arc::new(AtomicBool::new(local)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        if let Location::Postgres(target) = store.location() {
            let (l, t) = (leases.clone(), target.clone());
            let spawned = std::thread::Builder::new()
                .name("db-leases".into())
                .spawn(move || l.keep(&t));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the lease thread; this agent holds no lease");
            }
        }
        leases
    }

    /// Whether this agent holds `name` now (false for a lease it does not compete for).
    pub fn held(&self, name: &str) -> bool {
        self.held.get(name).is_some_and(|s| *s.borrow())
    }

    /// Follows `name`: true while this agent holds it.
    pub fn watch(&self, name: &str) -> watch::Receiver<bool> {
        match self.held.get(name) {
            Some(s) => s.subscribe(),
            None => watch::Sender::new(false).subscribe(),
        }
    }

    /// Every lease and whether it is held, by name.
    pub fn states(&self) -> Vec<(&'static str, bool)> {
        self.held.iter().map(|(n, s)| (*n, *s.borrow())).collect()
    }

    /// Whether the database answered the last check.
    pub fn database_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Releases every lease (the session ends) and stops the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn set_all(&self, held: bool) {
        for s in self.held.values() {
            s.send_if_modified(|h| std::mem::replace(h, held) != held);
        }
    }

    /// The lease thread: keeps one session, takes free leases, and on a broken session
    /// drops them all (the server released the locks with it) until it reconnects.
    fn keep(&self, target: &PgTarget) {
        let mut session: Option<Client> = None;
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.round(&mut session, target) {
                if self.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "database unreachable; this agent gives up its leases");
                }
                session = None;
                self.set_all(false);
            }
            std::thread::sleep(TRY_EVERY);
        }
        drop(session);
        self.set_all(false);
    }

    fn round(&self, session: &mut Option<Client>, target: &PgTarget) -> Result<(), String> {
        if session.as_ref().is_none_or(Client::is_closed) {
            *session = Some(target.connect().map_err(|e| e.to_string())?);
        }
        let c = session.as_mut().expect("connected above");
        c.simple_query("SELECT 1")
            .map_err(|e| super::pg::detail(&e))?;
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("database reachable");
        }
        for (name, s) in self.held.iter() {
            if *s.borrow() {
                continue;
            }
            let got: bool = c
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&LEASE_CLASS, &lease_key(name)],
                )
                .map_err(|e| super::pg::detail(&e))?
                .get(0);
            if got {
                tracing::info!(lease = name, "lease taken: this agent does it now");
                s.send_replace(true);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_agent_holds_every_lease() {
        let dir = tempfile::tempdir().unwrap();
        let l = Leases::start(&Store::sqlite(dir.path().join("a.db")), &["inventory"]);
        assert!(l.held("inventory") && l.database_up());
        assert!(!l.held("unknown"));
        assert_ne!(lease_key("inventory"), lease_key("storage"));
    }
}
