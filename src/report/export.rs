//! Exports of the audit trail: CSV, JSON, NDJSON and the HTML report ([`super::html`]). All
//! stream rows from the store to the writer, so memory stays flat on millions of rows.

use crate::config::report::Format;
use crate::model::csv;
use crate::store::{AuditRow, COLUMNS, Filter, Reader, StoreError};
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the audit store: {0}")]
    Db(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] io::Error),
}

/// Writes every row `filter` selects to `out` in `format`; returns the row count.
pub fn export(
    db: &Reader,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    match format {
        Format::Csv => {
            write_csv_header(out)?;
            db.events(filter, |r| write_csv_row(out, r))
        }
        Format::Ndjson => db.events(filter, |r| -> Result<(), ExportError> {
            serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
            Ok(())
        }),
        Format::Json => {
            out.write_all(b"[")?;
            let mut first = true;
            let n = db.events(filter, |r| -> Result<(), ExportError> {
                out.write_all(if first { b"\n" } else { b",\n" })?;
                first = false;
                serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
                Ok(())
            })?;
            out.write_all(b"\n]\n")?;
            Ok(n)
        }
        Format::Html => super::html::report(db, filter, out),
    }
}

pub fn write_csv_header(out: &mut dyn Write) -> Result<(), ExportError> {
    csv::write_record(out, COLUMNS)?;
    Ok(())
}

/// One row as CSV, in [`COLUMNS`] order (see [`crate::model::csv`] for the quoting).
pub fn write_csv_row(out: &mut dyn Write, row: &AuditRow) -> Result<(), ExportError> {
    csv::write_record(out, row.fields())?;
    Ok(())
}
