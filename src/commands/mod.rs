//! The CLI's subcommands other than `run` (which is [`crate::daemon`]).

pub mod alerts;
pub mod audit;
pub mod inventory;
pub mod report;
pub mod storage;
