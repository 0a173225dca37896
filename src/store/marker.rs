//! The trail marker: a small file beside the database (`<database>.trail`) saying that an
//! audit trail is kept there. A database that is deleted or swapped for an empty one would
//! otherwise be recreated at the next start and a new chain begun silently, with `audit
//! verify` calling it intact; with the marker present, an empty database is refused instead.

use super::StoreError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the marker of the database `db` is.
pub fn path_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".trail");
    db.with_file_name(name)
}

/// Refuses a database without rows when its marker says it had some.
pub(super) fn check(db: &Path, has_rows: bool) -> Result<(), StoreError> {
    let marker = path_for(db);
    if has_rows || !marker.exists() {
        return Ok(());
    }
    Err(StoreError::HistoryMissing {
        path: db.to_path_buf(),
        marker,
    })
}

/// Writes the marker unless it is there (mode 0600, like the database).
pub(super) fn ensure(db: &Path) -> std::io::Result<()> {
    let marker = path_for(db);
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&marker)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    writeln!(
        file,
        "regwatch keeps its audit trail in {}.\n\
         While this file exists, regwatch refuses to start on an empty database here (the \
         trail was deleted or replaced). Delete it only to begin a new trail on purpose.",
        db.display()
    )?;
    file.sync_all()
}
