//! A reading of a registry's storage usage, as the storage monitor takes it and the
//! database keeps it for the growth trend.

use time::OffsetDateTime;

/// One reading of the filesystem, as stored in `storage_samples`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub time: OffsetDateTime,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}
