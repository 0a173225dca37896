//! Sources: everything that turns what a registry does into [`crate::event::Event`]s.
pub mod classify;
pub mod formats;
pub mod notifications;
pub mod registry_api;
pub mod storage;
pub mod tail;
pub mod webhook;
