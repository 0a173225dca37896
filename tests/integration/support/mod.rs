//! The test harness: real servers from Debian packages, each on free loopback ports and in
//! its own temporary directory, stopped when dropped. One module per server or concern, all
//! re-exported here, so a test says `use crate::support::*;` and then `Registry::start(…)`.
//!
//! - [`proc`]: [`Proc`] (a child killed on drop), [`require`], [`free_port`], [`wait_until`].
//! - [`registry`]: [`Registry`], `docker-registry` (distribution 2.8) with htpasswd or token
//!   auth, the debug server with Prometheus metrics, optionally notifications to regwatch.
//! - [`nginx`]: [`Nginx`] in front of it with its own basic auth (same htpasswd), combined
//!   and JSON access logs, an error log; `bob` is read-only through it.
//! - [`nginx_logs`]: [`tally`], nginx's access log counted by hand (pulls, blob checks,
//!   failed logins, regwatch's own lines), the oracle for the traffic metrics; [`clf_now`],
//!   the time for lines a test appends.
//! - [`token_server`]: [`TokenServer`], a registry token server for bearer-token auth.
//! - [`images`]: [`Images`], small OCI images built with `umoci`, pushed and pulled with
//!   `skopeo`.
//! - [`cosign`]: [`SigningKey`] (openssl P-256 keys) and cosign-format signatures,
//!   attestations and referrers-tag-schema SBOMs pushed over the registry API.
//! - [`s3`]: [`SeaweedFs`], a real S3 server (SeaweedFS from PyPI) for registries on object
//!   storage, with its own count of the requests it answered.
//! - [`postgres`]: [`Postgres`], a PostgreSQL 15 cluster of its own (`initdb`, `pg_ctl`),
//!   stoppable under traffic, and `psql` to check what regwatch stored.
//! - [`backends`]: [`TestDb`], the SQLite file or PostgreSQL cluster a test runs on, and
//!   `both_backends!`, which runs one test body on each.
//! - [`smtp`]: [`SmtpSink`], aiosmtpd writing a Maildir, plain or with TLS and AUTH.
//! - [`rsyslog`]: [`Rsyslog`], Debian's rsyslogd with an imtcp input (plain or TLS with a
//!   test CA), writing what it receives raw and as parsed, stoppable and restartable.
//! - [`alertmanager`]: [`Alertmanager`], Debian's `prometheus-alertmanager`, single node.
//! - [`webhook`]: [`WebhookSink`], a recording HTTP receiver (webhook, Slack, Teams) that can
//!   fail or close on demand.
//! - [`cloudevents`]: [`CloudEventsReceiver`], batches validated by the CloudEvents Python
//!   SDK, HMAC-checked, failing on demand.
//! - [`daemon`]: [`Daemon`], the regwatch binary under test, and [`regwatch`] for one CLI run.
//! - [`config`]: [`ConfigBuilder`], the `[server]`/`[database]`/`[[registry]]` preamble of
//!   a test's regwatch config.
//! - [`http`], [`metrics`]: HTTP clients and the Prometheus text format.
//! - [`oracles`]: sqlite3, df and curl, the independent readers results are checked against.
//!
//! A missing program fails the test with the `apt-get install` line that provides it.
//!
//! The benches mount this harness too (through tests/support/mod.rs) and use a few pieces of
//! it, hence `dead_code` is allowed here rather than item by item.

#![allow(dead_code)]

pub mod alertmanager;
pub mod backends;
pub mod cloudevents;
pub mod config;
pub mod cosign;
pub mod daemon;
pub mod http;
pub mod images;
pub mod metrics;
pub mod nginx;
pub mod nginx_logs;
pub mod oracles;
pub mod postgres;
pub mod proc;
pub mod registry;
pub mod rsyslog;
pub mod s3;
pub mod smtp;
pub mod token_server;
pub mod webhook;

pub use alertmanager::*;
pub use backends::*;
pub use cloudevents::*;
pub use config::*;
pub use cosign::*;
pub use daemon::*;
pub use http::*;
pub use images::*;
pub use metrics::*;
pub use nginx::*;
pub use nginx_logs::*;
pub use oracles::*;
pub use postgres::*;
pub use proc::*;
pub use registry::*;
pub use rsyslog::*;
pub use s3::*;
pub use smtp::*;
pub use token_server::*;
pub use webhook::*;
