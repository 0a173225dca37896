//! Opening the database: file mode, pragmas, migrations, and the checks that make
//! `regwatch run` refuse a database it cannot trust.

use super::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Schema migrations; `PRAGMA user_version` is the number applied. Append, never edit.
///
/// Indexes cost the writer dearly (each one a random B-tree insert per row, measured in
/// benches/audit.rs), so only the ones the common questions need exist: time ranges, one
/// actor's activity, and the event-id dedupe. Repository filters scan the time range.
const MIGRATIONS: &[&str] = &[
    // 1: the audit trail.
    "CREATE TABLE audit_events (
        id          INTEGER PRIMARY KEY,
        time        TEXT    NOT NULL,
        registry    TEXT,
        action      TEXT    NOT NULL,
        repository  TEXT,
        tag         TEXT,
        digest      TEXT,
        media_type  TEXT,
        size        INTEGER,
        actor       TEXT,
        remote_addr TEXT,
        user_agent  TEXT,
        request_id  TEXT,
        method      TEXT,
        source      TEXT    NOT NULL,
        status      INTEGER,
        event_id    TEXT,
        detail      TEXT,
        prev_hash   TEXT    NOT NULL,
        hash        TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX audit_events_source_event_id ON audit_events(source, event_id)
        WHERE event_id IS NOT NULL;
    CREATE INDEX audit_events_time ON audit_events(time);
    CREATE INDEX audit_events_actor_time ON audit_events(actor, time);
    -- Retention deletes the oldest rows; the anchor keeps the link the first remaining row
    -- points to, so the rest of the chain still verifies.
    CREATE TABLE chain_anchor (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        first_id      INTEGER NOT NULL,
        prev_hash     TEXT    NOT NULL,
        rows_deleted  INTEGER NOT NULL,
        deleted_until TEXT    NOT NULL,
        updated_at    TEXT    NOT NULL
    );",
    // 2: where each tailed log was read up to, committed with the events from those bytes.
    "CREATE TABLE log_checkpoints (
        log         TEXT    PRIMARY KEY,
        dev         INTEGER NOT NULL,
        ino         INTEGER NOT NULL,
        fp_len      INTEGER NOT NULL,
        fp_hash     TEXT    NOT NULL,
        offset      INTEGER NOT NULL,
        updated_at  TEXT    NOT NULL
    );",
    // 3: the registry poller's previous inventory, so a restart diffs against what was
    // there instead of reporting the whole registry as new. Kept current by the change
    // events themselves (one transaction), so it is never ahead of or behind the trail.
    "CREATE TABLE inventory_polls (
        registry     TEXT PRIMARY KEY,
        time         TEXT    NOT NULL,
        repositories INTEGER NOT NULL,
        tags         INTEGER NOT NULL,
        unique_bytes INTEGER NOT NULL
    );
    CREATE TABLE inventory_repositories (
        registry   TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (registry, repository)
    ) WITHOUT ROWID;
    CREATE TABLE inventory_tags (
        registry   TEXT NOT NULL,
        repository TEXT NOT NULL,
        tag        TEXT NOT NULL,
        digest     TEXT NOT NULL,
        PRIMARY KEY (registry, repository, tag)
    ) WITHOUT ROWID;",
    // 4: filesystem usage of each registry's storage, for the growth trend and forecast.
    // Not part of the hash chain: these are measurements, not audit events.
    "CREATE TABLE storage_samples (
        registry        TEXT    NOT NULL,
        time            TEXT    NOT NULL,
        used_bytes      INTEGER NOT NULL,
        capacity_bytes  INTEGER NOT NULL,
        available_bytes INTEGER NOT NULL
    );
    CREATE INDEX storage_samples_registry_time ON storage_samples(registry, time);",
    // 5: alerting. The state of every alert (rule + group key; the state itself as JSON),
    // the outbox of notifications not yet accepted by their channel (written in the same
    // transaction as the state change that caused them), and every delivery attempt.
    "CREATE TABLE alert_states (
        rule       TEXT NOT NULL,
        key        TEXT NOT NULL,
        phase      TEXT NOT NULL,
        state      TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (rule, key)
    ) WITHOUT ROWID;
    CREATE TABLE alert_outbox (
        id              INTEGER PRIMARY KEY,
        idempotency_key TEXT    NOT NULL,
        channel         TEXT    NOT NULL,
        payload         TEXT    NOT NULL,
        created_at      TEXT    NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        last_error      TEXT,
        UNIQUE (idempotency_key, channel)
    );
    CREATE INDEX alert_outbox_channel_due ON alert_outbox(channel, next_attempt_ms);
    CREATE TABLE alert_deliveries (
        id              INTEGER PRIMARY KEY,
        outbox_id       INTEGER NOT NULL,
        idempotency_key TEXT    NOT NULL,
        channel         TEXT    NOT NULL,
        time            TEXT    NOT NULL,
        ok              INTEGER NOT NULL,
        error           TEXT
    );
    CREATE TABLE alert_silences (
        id         INTEGER PRIMARY KEY,
        matchers   TEXT NOT NULL,
        starts_at  TEXT NOT NULL,
        ends_at    TEXT NOT NULL,
        created_by TEXT NOT NULL,
        comment    TEXT NOT NULL
    );",
    // 6: the last inventory report of each registry (JSON), so the repositories API and
    // the inventory gauges answer right after a restart, also while the registry is down,
    // instead of staying empty until the next successful poll.
    "ALTER TABLE inventory_polls ADD COLUMN report TEXT;",
    // 7: what each manifest of a registry's storage references (sha256 digests, 32 raw bytes
    // each, concatenated), so a storage walk reads each manifest once. A cache, not audit data.
    "CREATE TABLE storage_manifests (
        registry TEXT NOT NULL,
        digest   BLOB NOT NULL,
        refs     BLOB NOT NULL,
        PRIMARY KEY (registry, digest)
    ) WITHOUT ROWID;",
    // 8: where each `[[forward]]` is in the audit trail: the id of the last row its
    // receiver accepted (or that its filters skipped). Advanced only after a send
    // succeeded, so a restart resends at most the batch in flight.
    "CREATE TABLE forward_cursors (
        forward    TEXT    PRIMARY KEY,
        last_id    INTEGER NOT NULL,
        updated_at TEXT    NOT NULL
    ) WITHOUT ROWID;",
    // 9: when the writer committed each row, outside the hash chain. Retention prunes by it
    // (the trail's own order), so a source's clock, or one event dated 9999, cannot stop it.
    "ALTER TABLE audit_events ADD COLUMN received_at TEXT;",
    // 10: what is known of every tag for retention: its digest, when it was first
    // seen and pushed, when it was last pulled and by whom. Derived from committed audit
    // events and poll changes, in their transaction; not part of the hash chain.
    "CREATE TABLE tag_facts (
        registry       TEXT NOT NULL,
        repository     TEXT NOT NULL,
        tag            TEXT NOT NULL,
        digest         TEXT,
        first_seen_at  TEXT NOT NULL,
        pushed_at      TEXT,
        last_pulled_at TEXT,
        last_puller    TEXT,
        PRIMARY KEY (registry, repository, tag)
    ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating if needed, mode 0600) the database for the single writer and brings its
/// schema up to date.
pub(super) fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    check_access(path)?;
    ensure_private_file(path)?;
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    check_readable(&conn, path)?;
    // WAL lets readers (API, exports) run while the writer commits; NORMAL is durable across
    // process crashes, which is the failure the checkpoints are designed around.
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
        .map_err(corrupt)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(corrupt)?;
    // The unique event-id index takes inserts at random places; 64 MiB of page cache keeps
    // its hot pages in memory on large trails.
    conn.pragma_update(None, "cache_size", -65536)
        .map_err(corrupt)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(corrupt)?;
    check_integrity_at_start(&conn, path)?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Files up to this size get SQLite's whole structural check before the daemon accepts
/// anything (about 0.5 s here); larger ones are checked in the background instead
/// (`regwatch_database_integrity_ok`), so a big trail does not delay every start by seconds.
const START_CHECK_MAX_BYTES: u64 = 512 << 20;

fn check_integrity_at_start(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len > START_CHECK_MAX_BYTES {
        return Ok(());
    }
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    integrity(conn)
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(corrupt)
}

/// Says which of the database's directory or file this user cannot write, before SQLite
/// would report it as a file it cannot open (read as "corrupt, move it aside": advice that
/// would make an operator discard the trail over a permissions problem).
fn check_access(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The directory: SQLite creates the -wal and -shm files there.
    for (p, mode, what) in [
        (dir, libc::W_OK | libc::X_OK, "writable"),
        (path, libc::R_OK | libc::W_OK, "readable and writable"),
    ] {
        if (p == path && !p.exists()) || effective_access(p, mode) {
            continue;
        }
        return Err(StoreError::Permission {
            path: p.to_path_buf(),
            what,
            user: effective_user(),
        });
    }
    Ok(())
}

/// `faccessat(AT_EACCESS)`: as the effective user, the one that will open the file.
fn effective_access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// The effective user's name (or uid when it has none), for the permission message.
fn effective_user() -> String {
    // SAFETY: geteuid cannot fail; getpwuid returns a pointer into static storage or null,
    // read at once on this thread.
    unsafe {
        let uid = libc::geteuid();
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            return format!("uid {uid}");
        }
        let name = std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy();
        format!("{name} (uid {uid})")
    }
}

/// A read-only connection for queries and exports.
pub(super) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_path_buf(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    check_readable(&conn, path)?;
    let version = user_version(&conn, path)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// The audit trail is personal data (who pulled what from where): nobody but the owner may
/// read it. A new file is created 0600 before SQLite touches it (SQLite gives the -wal and
/// -shm files the same mode); an existing file with wider permissions is tightened.
fn ensure_private_file(path: &Path) -> Result<(), StoreError> {
    let create_err = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(create_err)?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "database file was readable by others; setting mode 0600"
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(create_err)?;
            }
            Ok(())
        }
        Err(e) => Err(create_err(e)),
    }
}

/// Reads the header, the schema and the newest row, so a foreign or damaged file is refused
/// at once, also by the read-only commands. The writer adds `PRAGMA quick_check` (see
/// [`check_integrity_at_start`]); `regwatch audit verify` always runs it.
fn check_readable(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(corrupt)?;
    if tables > 0 {
        let has_audit: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
                [],
                |r| r.get(0),
            )
            .map_err(corrupt)?;
        if has_audit == 1 {
            conn.query_row("SELECT max(id) FROM audit_events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map_err(corrupt)?;
        }
    }
    Ok(())
}

/// SQLite's own structural check of every page (`PRAGMA quick_check`); `Ok(())` or the first
/// problems it names.
pub(super) fn integrity(conn: &Connection) -> rusqlite::Result<Result<(), String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(if lines == ["ok"] {
        Ok(())
    } else {
        Err(lines.join("; "))
    })
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let current = user_version(conn, path)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        let err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            err(e)
        })?;
        tracing::info!(path = %path.display(), version, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_file_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let conn = open_for_writing(&path).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), SCHEMA_VERSION);
        drop(conn);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        open_for_writing(&path).unwrap();
    }

    #[test]
    fn refuses_newer_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let conn = open_for_writing(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = open_for_writing(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
        let err = open_for_writing(&junk).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a SQLite database or is corrupt"),
            "{err}"
        );
    }
}
