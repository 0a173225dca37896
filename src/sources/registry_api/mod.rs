//! The registry poller: health probes, the inventory (catalog, tags, manifests) with
//! shared-layer accounting, the changes between polls as audit events, and what is attached
//! to each image (signatures verified against the configured keys, attestations, SBOMs).

pub mod artifacts;
pub mod auth;
pub mod client;
pub mod cosign;
pub mod inventory;
pub mod poller;
pub mod retention;
pub mod supply;
pub mod tags;

pub use client::{ApiError, Client};
pub use poller::{Report, Reports, TagGraph, Violation, poll_once, poll_with_graph};
