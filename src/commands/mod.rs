//! The CLI's subcommands other than `run` (which is [`crate::daemon`]).

pub mod audit;
pub mod storage;
