//! What can go wrong with the database, in words an operator can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create database {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} is not a SQLite database or is corrupt ({detail}); \
         move it aside and restart to begin a new one, or restore it from a backup"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "database {path} has schema version {found}, but this regwatch understands up to {known}: \
         it was written by a newer regwatch; upgrade regwatch (do not downgrade a database)"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migrating database {path} to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error(
        "permission denied: {path} is not {what} by user {user}; the database is not damaged: \
         fix the ownership or mode (the database, its directory and its -wal/-shm files), \
         or run regwatch as the user that owns them"
    )]
    Permission {
        path: PathBuf,
        /// "writable" or "readable".
        what: &'static str,
        user: String,
    },
    #[error(
        "database {path} was {how} while regwatch had it open: nothing more is stored or \
         acknowledged; put the file back or restart regwatch (which then refuses to begin a \
         new trail next to the old one's marker)"
    )]
    Replaced { path: PathBuf, how: &'static str },
    #[error(
        "database {path} holds no audit trail, but {marker} says one was kept here: the database \
         was deleted or replaced. Restore it from a backup, or delete {marker} to begin a new \
         trail on purpose"
    )]
    HistoryMissing { path: PathBuf, marker: PathBuf },
    #[error("no audit database at {path} (database.path); has regwatch run yet?")]
    Missing { path: PathBuf },
    #[error("database write failed: {0}")]
    Write(rusqlite::Error),
    #[error("reading the database: {0}")]
    Read(rusqlite::Error),
    #[error("audit batch not committed: {0}")]
    Batch(String),
    /// A PostgreSQL error; `target` is the database as shown (never with its password).
    #[error("database {target}: {detail}")]
    Postgres { target: String, detail: String },
    /// The server could not be reached or cut the connection (down, restarting, starting
    /// up, out of connection slots): worth trying again, unlike a refused login or schema.
    #[error("database {target} unreachable: {detail}")]
    PgUnreachable { target: String, detail: String },
    #[error("no regwatch schema in database {target} (database.url); has regwatch run yet?")]
    PgMissing { target: String },
    #[error("the audit store is closed (regwatch is shutting down)")]
    Closed,
}

impl StoreError {
    /// The database could not be reached: the same request may succeed later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::PgUnreachable { .. })
    }
}
