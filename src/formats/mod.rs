//! Layer 0: what bytes from a registry mean. Pure parsers (bytes in, values out, no I/O)
//! for log lines ([`log`]), the request classifier ([`classify`]) and notification bodies
//! ([`notification`]); fuzzed, and safe on hostile input.

pub mod classify;
pub mod harbor_syslog;
pub mod log;
pub mod notification;
