//! Forwarding benchmark: a backlog of audit rows shipped to a real rsyslog (imtcp, octet
//! counting), next to the usual way of shipping the same rows in the same run: util-linux
//! `logger --tcp --octet-count --rfc5424 -f` sending the NDJSON export (one message per row)
//! to a second rsyslog of the same configuration. regwatch reads the rows from the database,
//! formats RFC 5424 with the row's structured data and commits its cursor after every
//! batch; logger streams a file and remembers nothing. Both are timed from the start of the
//! sending process until rsyslog has written the last message.
//!
//!     cargo bench --bench forward                    # 200,000 rows
//!     cargo bench --bench forward -- --rows 50000
//!
//! Needs rsyslog and logger (bsdutils). Under `cargo test --all-targets` (no `--bench`) it
//! ships 2,000 rows: a check that the benchmark works, not a measurement.

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use regwatch::model::clock::SystemClock;
use regwatch::model::event::{Action, Event, Source};
use regwatch::store::Store;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use time::macros::datetime;

fn event(i: u64) -> Event {
    let t = datetime!(2026-01-01 0:00 UTC) + time::Duration::milliseconds(i as i64 * 300);
    let action = [Action::Pull, Action::Pull, Action::Push, Action::Delete][(i % 4) as usize];
    let mut e = Event::new(t, action, Source::Notification);
    e.registry = Some("main".into());
    e.repository = Some(format!("team{}/app{}", i % 40, i % 2000));
    e.tag = Some(format!("1.{}", i % 17));
    e.digest = Some(format!("sha256:{:064x}", i * 2_654_435_761));
    e.size = Some(1000 + i % 900_000);
    e.actor = Some(format!("user{}", (i * 7919) % 500));
    e.remote_addr = Some(format!("10.{}.{}.{}", i % 7, (i / 7) % 250, i % 250));
    e.user_agent = Some("containerd/1.7.13+unknown".into());
    e.method = Some("GET".into());
    e.event_id = Some(format!("{i:016x}"));
    e
}

fn fill(db: &Path, rows: u64) {
    let writer = Store::sqlite(db)
        .start_writer(65_536, std::sync::Arc::new(SystemClock), Box::new(|_| {}))
        .unwrap();
    let sink = writer.sink();
    std::thread::spawn(move || {
        for i in 0..rows {
            sink.enqueue_blocking(event(i)).unwrap();
        }
    })
    .join()
    .unwrap();
    writer.close_blocking();
}

/// Counts the lines rsyslog has written, reading only what is new.
struct Counter {
    file: std::path::PathBuf,
    offset: u64,
    lines: u64,
}

impl Counter {
    fn poll(&mut self) -> u64 {
        let Ok(mut f) = fs::File::open(&self.file) else {
            return 0;
        };
        f.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        self.offset += buf.len() as u64;
        self.lines += memchr_count(&buf);
        self.lines
    }
}

fn memchr_count(buf: &[u8]) -> u64 {
    buf.iter().filter(|b| **b == b'\n').count() as u64
}

/// Waits until `rsyslog` has written `n` messages; the time since `start`.
fn wait_for(rsyslog: &Rsyslog, n: u64, start: Instant) -> Duration {
    let mut c = Counter {
        file: rsyslog.dir.path().join("raw.log"),
        offset: 0,
        lines: 0,
    };
    let deadline = start + Duration::from_secs(600);
    while c.poll() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            c.lines
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let rows: u64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--rows N"))
        .unwrap_or(if full { 200_000 } else { 2_000 });
    require("logger", "bsdutils");
    let work = tempfile::tempdir().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-bench-forward-")
        .tempdir()
        .unwrap();
    let db = dir.path().join("regwatch.db");
    fill(&db, rows);
    println!("# forwarding {rows} audit rows to rsyslog (imtcp, octet counting)");

    // regwatch: the daemon with one forwarder and the backlog in its database.
    let ours = Rsyslog::start(SyslogInput::Tcp);
    let config = ConfigBuilder::new("http://127.0.0.1:9")
        .registry("poll_interval", "1h")
        .extra(&format!(
            "\n[[forward]]\nname = \"bench\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{}\"\nbatch_size = 500\n",
            ours.port
        ))
        .build();
    let start = Instant::now();
    let daemon = Daemon::start_in(dir, &config, &[]);
    // The daemon's own monitor_start is one more row.
    let regwatch_time = wait_for(&ours, rows + 1, start);
    let (code, out, err) = regwatch(&[
        "audit",
        "export",
        "--format",
        "ndjson",
        "--database",
        daemon.db_path().to_str().unwrap(),
        "--output",
        work.path().join("rows.ndjson").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    drop(daemon);

    // logger: the same rows as NDJSON lines, one message each, to an identical rsyslog.
    let peer = Rsyslog::start(SyslogInput::Tcp);
    let start = Instant::now();
    let status = Command::new("logger")
        .args([
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-n",
            "127.0.0.1",
            "-P",
        ])
        .arg(peer.port.to_string())
        .args(["-t", "regwatch", "-f"])
        .arg(work.path().join("rows.ndjson"))
        .status()
        .unwrap();
    assert!(status.success(), "logger failed");
    let logger_time = wait_for(&peer, rows + 1, start);

    let rate = |d: Duration| (rows + 1) as f64 / d.as_secs_f64();
    let bytes = |r: &Rsyslog| fs::metadata(r.dir.path().join("raw.log")).unwrap().len();
    println!("| sender | time | rows/s | bytes received |");
    println!("|---|---|---|---|");
    println!(
        "| regwatch (from the database, RFC 5424 + structured data, cursor per batch of 500) | {:.2} s | {:.0} | {} |",
        regwatch_time.as_secs_f64(),
        rate(regwatch_time),
        bytes(&ours)
    );
    println!(
        "| logger --tcp --octet-count --rfc5424 -f (NDJSON export, no cursor) | {:.2} s | {:.0} | {} |",
        logger_time.as_secs_f64(),
        rate(logger_time),
        bytes(&peer)
    );
    println!(
        "| ratio | regwatch {:.2}× logger's rate | | |",
        rate(regwatch_time) / rate(logger_time)
    );
}
