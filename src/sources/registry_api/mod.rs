//! The registry poller: health probes, the inventory (catalog, tags, manifests) with
//! shared-layer accounting, and the changes between polls as audit events.

pub mod auth;
pub mod client;
pub mod inventory;
pub mod poller;

pub use client::{ApiError, Client};
pub use poller::{Report, Reports, Violation, poll_once};
