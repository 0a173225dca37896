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

/// The user agent of every HTTP request regwatch makes (poller, storage walks): what the
/// logs and notifications carry for regwatch's own traffic.
pub const SELF_USER_AGENT: &str = concat!("regwatch/", env!("CARGO_PKG_VERSION"));

/// How regwatch's own requests are recognised in logs and notifications (any version, so
/// an older instance polling the same registry is recognised too).
pub const SELF_USER_AGENT_PREFIX: &str = "regwatch/";
