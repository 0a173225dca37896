//! regwatch's integration tests: one test binary, one module per area, all sharing the
//! harness in [`support`].
//!
//! Each test runs regwatch (the binary cargo built for this test run, or the library where a
//! test needs its internals) against real servers from Debian packages: docker-registry,
//! nginx, aiosmtpd, Alertmanager, Prometheus, with images built by umoci and moved by skopeo.
//! They were once a binary per file; as modules of one binary the harness and every
//! dependency are compiled and linked once, and `cargo test --test integration` runs them all.
//!
//! The tests run on several threads in one process, so none of them may change what the
//! process shares: no `std::env::set_var`, no `set_current_dir`, no fixed ports or fixed
//! paths. Environment a child needs is set on its `Command`; every server, daemon and scratch
//! file lives on a free loopback port and in its own temporary directory.
//!
//! Run one area with `cargo test --test integration alerts::`, one test by its name.

mod support;

mod alerts;
mod audit;
mod container;
mod demo;
mod forward;
mod foundation;
mod hardening;
mod harness;
mod inventory;
mod logs;
mod packaging;
mod postgres;
mod reports;
mod retention;
mod rules;
mod signatures;
mod storage;
mod storage_s3;
mod tail_model;
mod traffic;
