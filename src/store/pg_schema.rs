//! The PostgreSQL schema: the same numbered migrations as SQLite's ([`super::schema`]),
//! written for PostgreSQL, so version N means the same tables on both backends. Append a
//! migration here whenever one is appended there.
//!
//! Differences, and why: integers are `BIGINT` (the client binds `i64` to `int8` only);
//! text that is ordered or compared by range (times, names) is `COLLATE "C"`, byte order
//! like SQLite's, whatever the database's locale; `offset` is a reserved word and is quoted;
//! ids that SQLite assigns as rowids are identities, except `audit_events.id`, which the
//! writer assigns under the chain lock so ids stay contiguous and in chain order.
//! `audit_events.agent` names the agent that stored the row (several agents share one
//! database); it is not part of the hash (the canonical row stays the same on both backends).

use super::StoreError;
use super::pg::PgTarget;
use postgres::Client;

const MIGRATIONS: &[&str] = &[
    // 1: the audit trail.
    r#"CREATE TABLE audit_events (
        id          BIGINT PRIMARY KEY,
        time        TEXT COLLATE "C" NOT NULL,
        registry    TEXT COLLATE "C",
        action      TEXT COLLATE "C" NOT NULL,
        repository  TEXT COLLATE "C",
        tag         TEXT COLLATE "C",
        digest      TEXT COLLATE "C",
        media_type  TEXT COLLATE "C",
        size        BIGINT,
        actor       TEXT COLLATE "C",
        remote_addr TEXT COLLATE "C",
        user_agent  TEXT COLLATE "C",
        request_id  TEXT COLLATE "C",
        method      TEXT COLLATE "C",
        source      TEXT COLLATE "C" NOT NULL,
        status      BIGINT,
        event_id    TEXT COLLATE "C",
        detail      TEXT COLLATE "C",
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL,
        agent       TEXT
    );
    CREATE UNIQUE INDEX audit_events_source_event_id ON audit_events(source, event_id)
        WHERE event_id IS NOT NULL;
    CREATE INDEX audit_events_time ON audit_events(time);
    CREATE INDEX audit_events_actor_time ON audit_events(actor, time);
    CREATE TABLE chain_anchor (
        id            BIGINT PRIMARY KEY CHECK (id = 1),
        first_id      BIGINT NOT NULL,
        prev_hash     TEXT   NOT NULL,
        rows_deleted  BIGINT NOT NULL,
        deleted_until TEXT   NOT NULL,
        updated_at    TEXT   NOT NULL
    );"#,
    // 2: log checkpoints.
    r#"CREATE TABLE log_checkpoints (
        log         TEXT COLLATE "C" PRIMARY KEY,
        dev         BIGINT NOT NULL,
        ino         BIGINT NOT NULL,
        fp_len      BIGINT NOT NULL,
        fp_hash     TEXT   NOT NULL,
        "offset"    BIGINT NOT NULL,
        updated_at  TEXT   NOT NULL
    );"#,
    // 3: the poller's previous inventory.
    r#"CREATE TABLE inventory_polls (
        registry     TEXT COLLATE "C" PRIMARY KEY,
        time         TEXT   NOT NULL,
        repositories BIGINT NOT NULL,
        tags         BIGINT NOT NULL,
        unique_bytes BIGINT NOT NULL
    );
    CREATE TABLE inventory_repositories (
        registry   TEXT COLLATE "C" NOT NULL,
        repository TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (registry, repository)
    );
    CREATE TABLE inventory_tags (
        registry   TEXT COLLATE "C" NOT NULL,
        repository TEXT COLLATE "C" NOT NULL,
        tag        TEXT COLLATE "C" NOT NULL,
        digest     TEXT NOT NULL,
        PRIMARY KEY (registry, repository, tag)
    );"#,
    // 4: storage usage samples.
    r#"CREATE TABLE storage_samples (
        registry        TEXT COLLATE "C" NOT NULL,
        time            TEXT COLLATE "C" NOT NULL,
        used_bytes      BIGINT NOT NULL,
        capacity_bytes  BIGINT NOT NULL,
        available_bytes BIGINT NOT NULL
    );
    CREATE INDEX storage_samples_registry_time ON storage_samples(registry, time);"#,
    // 5: alerting.
    r#"CREATE TABLE alert_states (
        rule       TEXT COLLATE "C" NOT NULL,
        key        TEXT COLLATE "C" NOT NULL,
        phase      TEXT NOT NULL,
        state      TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (rule, key)
    );
    CREATE TABLE alert_outbox (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        idempotency_key TEXT   NOT NULL,
        channel         TEXT COLLATE "C" NOT NULL,
        payload         TEXT   NOT NULL,
        created_at      TEXT   NOT NULL,
        attempts        BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        last_error      TEXT,
        UNIQUE (idempotency_key, channel)
    );
    CREATE INDEX alert_outbox_channel_due ON alert_outbox(channel, next_attempt_ms);
    CREATE TABLE alert_deliveries (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        outbox_id       BIGINT  NOT NULL,
        idempotency_key TEXT    NOT NULL,
        channel         TEXT    NOT NULL,
        time            TEXT    NOT NULL,
        ok              BOOLEAN NOT NULL,
        error           TEXT
    );
    CREATE TABLE alert_silences (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        matchers   TEXT NOT NULL,
        starts_at  TEXT COLLATE "C" NOT NULL,
        ends_at    TEXT COLLATE "C" NOT NULL,
        created_by TEXT NOT NULL,
        comment    TEXT NOT NULL
    );"#,
    // 6: the last inventory report of each registry.
    "ALTER TABLE inventory_polls ADD COLUMN report TEXT;",
    // 7: the storage walk's manifest cache.
    r#"CREATE TABLE storage_manifests (
        registry TEXT COLLATE "C" NOT NULL,
        digest   BYTEA NOT NULL,
        refs     BYTEA NOT NULL,
        PRIMARY KEY (registry, digest)
    );"#,
    // 8: each forwarder's cursor in the trail.
    r#"CREATE TABLE forward_cursors (
        forward    TEXT COLLATE "C" PRIMARY KEY,
        last_id    BIGINT NOT NULL,
        updated_at TEXT NOT NULL
    );"#,
    // 9: when each row was stored, outside the chain (retention goes by it).
    "ALTER TABLE audit_events ADD COLUMN received_at TEXT;",
    // 10: per-tag facts for retention (`inventory --tags`, `retention plan`).
    r#"CREATE TABLE tag_facts (
        registry       TEXT COLLATE "C" NOT NULL,
        repository     TEXT COLLATE "C" NOT NULL,
        tag            TEXT COLLATE "C" NOT NULL,
        digest         TEXT,
        first_seen_at  TEXT NOT NULL,
        pushed_at      TEXT,
        last_pulled_at TEXT,
        last_puller    TEXT,
        PRIMARY KEY (registry, repository, tag)
    );"#,
];

/// The schema version this build writes (the same number as SQLite's).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Serialises migrations of agents starting at the same moment (an arbitrary constant,
/// "regwatch" in ASCII, distinct from the chain lock).
const MIGRATION_LOCK: i64 = 0x7265_6777_6174_6368;

/// Brings the schema up to date, in one transaction under an advisory lock (DDL is
/// transactional in PostgreSQL: a failed migration leaves the previous version). A
/// database written by a newer regwatch is refused.
pub(super) fn migrate(client: &mut Client, target: &PgTarget) -> Result<(), StoreError> {
    let err = |e| target.error(e);
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS regwatch_schema (version BIGINT NOT NULL)")
        .map_err(err)?;
    let current: Option<i64> = tx
        .query_opt("SELECT version FROM regwatch_schema", &[])
        .map_err(err)?
        .map(|r| r.get(0));
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(too_new(target, current));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql).map_err(|e| StoreError::Postgres {
            target: target.to_string(),
            detail: format!(
                "migrating to schema version {version}: {}",
                super::pg::detail(&e)
            ),
        })?;
        tracing::info!(database = %target, version, "database schema migrated");
    }
    if current < SCHEMA_VERSION {
        tx.execute("DELETE FROM regwatch_schema", &[])
            .map_err(err)?;
        tx.execute(
            "INSERT INTO regwatch_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// For readers: the schema must exist and be one this build understands.
pub(super) fn check(client: &mut Client, target: &PgTarget) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('regwatch_schema') IS NOT NULL", &[])
        .map_err(|e| target.error(e))?
        .get(0);
    if !exists {
        return Err(StoreError::PgMissing {
            target: target.to_string(),
        });
    }
    let version: Option<i64> = client
        .query_opt("SELECT version FROM regwatch_schema", &[])
        .map_err(|e| target.error(e))?
        .map(|r| r.get(0));
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(too_new(target, v)),
        Some(_) => Ok(()),
        None => Err(StoreError::PgMissing {
            target: target.to_string(),
        }),
    }
}

fn too_new(target: &PgTarget, found: i64) -> StoreError {
    StoreError::TooNew {
        path: target.to_string().into(),
        found,
        known: SCHEMA_VERSION,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_number_of_migrations_as_sqlite() {
        // Version N must mean the same tables on both backends.
        assert_eq!(super::SCHEMA_VERSION, super::super::schema::SCHEMA_VERSION);
    }
}
