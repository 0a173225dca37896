//! Layer 0: the data every other layer shares, and pure helpers over it. No I/O, no clock
//! reads, no knowledge of the database, metrics or HTTP.

pub mod build;
pub mod checkpoint;
pub mod clock;
pub mod csv;
pub mod event;
pub mod glob;
pub mod observed;
pub mod signatures;
pub mod template;
pub mod text;
pub mod traffic;
pub mod usage;

pub use checkpoint::Checkpoint;
pub use event::{Action, Event, Source};
