//! Sources: everything that turns what a registry does into [`crate::event::Event`]s.
pub mod notifications;
pub mod webhook;
