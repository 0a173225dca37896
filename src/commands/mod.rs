//! The CLI's subcommands other than `run` (which is [`crate::daemon`]).

pub mod alerts;
pub mod audit;
pub mod inventory;
pub mod report;
pub mod retention;
pub mod storage;

/// A command-line argument the user must fix (`--since 9999999999d`): `main` exits 64
/// (EX_USAGE), as for a bad config, not 1 as for a failed command.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
