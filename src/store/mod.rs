//! Layer 2: the database. One SQLite file, one writer thread, a hash chain over every row of
//! the audit trail, and every other table regwatch keeps.

pub mod chain;
pub mod query;
pub mod schema;
pub mod verify;
pub mod writer;

pub use schema::{StoreError, open_read_only};
pub use writer::{
    AlertStateRow, AlertUpdate, AuditSink, AuditWriter, Checkpoint, DeliveryOutcome, EventTap,
    InventoryUpdate, OutboxRow, load_checkpoint, load_checkpoints_of, load_inventory,
    load_inventory_report,
};

pub use crate::model::text::format_time;
