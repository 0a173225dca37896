//! regwatch: watches private container registries and keeps their audit trail.
//!
//! Data flows one way: **sources** (the registry API, its storage, its logs, its
//! notifications) turn what a registry does into [`model::Event`]s and measurements; the
//! **store** commits them through its single writer, hash-chained; **rules** judge the
//! traffic windows, the measurements and the committed events; **channels** deliver what the
//! rules decide, from a durable outbox. [`http`] and [`commands`] are the two faces users
//! meet; [`daemon`] wires the tasks together.
//!
//! # Layout
//!
//! The modules form layers. A module may import only the modules its row names, all in
//! lower layers or in earlier rows of its own, so the graph has no cycle and each module can be read with only what is
//! below it in mind. A test (`layering`, in this crate) reads every `src/**/*.rs` outside
//! `#[cfg(test)]`, collects its `crate::<module>` paths and fails on any import this table
//! does not allow, so the table is the truth.
//!
//! | layer | module | what it holds | may import |
//! |---|---|---|---|
//! | 0 | [`model`] | the event type, clock, checkpoints, traffic windows, observations, signature facts, retention plans, glob, CSV and text helpers | — |
//! | 0 | [`formats`] | pure parsers: log line formats, the request classifier, notification bodies | `model` |
//! | 1 | [`config`] | the TOML configuration, typed and validated, with located errors | `model`, `formats` |
//! | 2 | [`store`] | the database: one owner module per table, the single writer, readers | `model`, `config` |
//! | 2 | [`metrics`] | write-only telemetry and the `/metrics` rendering | `model` |
//! | 2 | [`channels`] | delivering one notification: email, webhook, Alertmanager, Slack, Teams | `model`, `config` |
//! | 3 | [`sources`] | registry poller, storage monitor, log tailers | `model`, `formats`, `config`, `store`, `metrics` |
//! | 3 | [`alerting`] | the rule engine (pure), the evaluator, outbox delivery, silences | `model`, `config`, `store`, `metrics`, `channels` |
//! | 3 | [`forward`] | shipping the audit trail to SIEMs (RFC 5424 syslog over TCP/TLS, CloudEvents) from a stored cursor | `model`, `config`, `store`, `metrics`, `channels` |
//! | 3 | [`report`] | exports (CSV, JSON, NDJSON, HTML), the grouped view, retention plans rendered, scheduled reports | `model`, `config`, `store`, `metrics`, `channels` |
//! | 4 | [`http`] | the one listener: metrics, health, the audit and alert API, the notification receiver | `model`, `formats`, `config`, `store`, `metrics`, `sources`, `alerting`, `report` |
//! | 4 | [`commands`] | the CLI's subcommands other than `run` | `model`, `config`, `store`, `channels`, `sources`, `report` |
//! | 4 | [`logging`] | log output (text or JSON on stderr) | — |
//! | 5 | [`daemon`] | `regwatch run`: starts, supervises and stops every task | `model`, `config`, `store`, `metrics`, `sources`, `alerting`, `forward`, `report`, `http` |
//!
//! `main.rs` (the binary) parses the command line and calls [`daemon`] or [`commands`].

pub mod alerting;
pub mod channels;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod formats;
pub mod forward;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod report;
pub mod sources;
pub mod store;

#[cfg(test)]
mod layering;
