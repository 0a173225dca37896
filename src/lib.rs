//! regwatch: watches private container registries and keeps their audit trail.
//!
//! Data flows from `sources` into [`event::Event`]s, which the single [`audit`] writer
//! commits; [`metrics`] and [`http`] expose the state; [`daemon`] wires it together.

pub mod alerting;
pub mod channels;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod formats;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod report;
pub mod sources;
pub mod store;
