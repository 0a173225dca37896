//! Sources: everything that turns what a registry does into [`crate::model::Event`]s.
pub mod harbor_syslog;
pub mod registry_api;
pub mod storage;
pub mod tail;
