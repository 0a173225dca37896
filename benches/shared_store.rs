//! Shared-store benchmark: notifications accepted (answered 200, which regwatch does only
//! after the commit) per second with 64 concurrent senders, against one regwatch on SQLite,
//! one agent on PostgreSQL and two agents on the same PostgreSQL (the senders split between
//! them, as behind a load balancer), in one run on the same machine. Every configuration
//! ends with a count of the stored rows, which must equal the accepted events. A first line
//! measures the senders alone (`GET /healthz`, no store): the client's own ceiling.
//!
//!     cargo bench --bench shared_store                 # 10 s per configuration
//!     cargo bench --bench shared_store -- --secs 30
//!
//! Needs PostgreSQL 15 (apt-get install -y postgresql; scripts/deps.sh). Under `cargo test
//! --all-targets` (no `--bench`) each configuration runs for one second: a check that the
//! benchmark works, not a measurement.

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{Postgres, free_port};

const TOKEN: &str = "bench-notify-token";
const SENDERS: usize = 64;

/// One regwatch agent: its process, port and directory.
struct Agent {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `regwatch run` with `database` as its `[database]` table body.
    fn start(name: &str, database: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nagent = \"{name}\"\n[database]\n{database}\n\
             [[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:9\"\nnotifications_token = \"{TOKEN}\"\n"
        );
        std::fs::write(dir.path().join("c.toml"), config).unwrap();
        let child = support::scrub_env(
            Command::new(env!("CARGO_BIN_EXE_regwatch"))
                .args(["run", "--config"])
                .arg(dir.path().join("c.toml"))
                .env("RUST_LOG", "warn"),
        )
        .spawn()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(support::http_get(port, "/readyz"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "regwatch {name} did not become ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            child,
            port,
            _dir: dir,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap();
    }
}

/// One envelope of the real registry's (one event), its id replaced per request.
fn template() -> (String, String) {
    let template = include_str!("../tests/fixtures/notifications.ndjson")
        .lines()
        .nth(11)
        .unwrap()
        .to_string();
    let id = template
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    (template, id)
}

/// What the senders send: a notification each, or (to measure the senders themselves) a
/// `GET /healthz`, which touches no store.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    Notifications,
    Healthz,
}

/// 64 senders spread over `ports` for `secs`: (accepted events, elapsed seconds, p99 ms).
fn send(ports: &[u16], secs: Duration, tag: &str) -> (u64, f64, f64) {
    send_load(ports, secs, tag, Load::Notifications)
}

fn send_load(ports: &[u16], secs: Duration, tag: &str, load: Load) -> (u64, f64, f64) {
    let (template, id) = template();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(SENDERS)
            .build()
            .unwrap();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let (client, template, id, counter) = (
                client.clone(),
                template.clone(),
                id.clone(),
                counter.clone(),
            );
            let port = ports[s % ports.len()];
            let tag = tag.to_string();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut lat) = (0u64, Vec::new());
                while start.elapsed() < secs {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body = template.replace(&id, &format!("{tag}-{s}-{n}"));
                    let t = Instant::now();
                    let request = match load {
                        Load::Healthz => client.get(format!("http://127.0.0.1:{port}/healthz")),
                        Load::Notifications => client
                            .post(format!("http://127.0.0.1:{port}/notifications"))
                            .bearer_auth(TOKEN)
                            .header(
                                "Content-Type",
                                "application/vnd.docker.distribution.events.v1+json",
                            )
                            .body(body),
                    };
                    let resp = request.send().await.unwrap();
                    let status = resp.status();
                    let _ = resp.bytes().await;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    ok += status.is_success() as u64;
                }
                (ok, lat)
            }));
        }
        let (mut accepted, mut lat) = (0, Vec::new());
        for t in tasks {
            let (ok, l) = t.await.unwrap();
            accepted += ok;
            lat.extend(l);
        }
        lat.sort_by(f64::total_cmp);
        let p99 = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)];
        (accepted, start.elapsed().as_secs_f64(), p99)
    })
}

fn report(what: &str, accepted: u64, secs: f64, p99: f64, stored: i64, base: Option<f64>) -> f64 {
    let rate = accepted as f64 / secs;
    let ratio = base
        .map(|b| format!(" ({:.2}x SQLite)", rate / b))
        .unwrap_or_default();
    println!(
        "{what:<28} {accepted:>8} accepted = {rate:>8.0} events/s{ratio}; p99 {p99:.1} ms; stored {stored}"
    );
    assert_eq!(
        stored as u64, accepted,
        "{what}: an acknowledged event is missing or doubled"
    );
    rate
}

fn sqlite_rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM audit_events WHERE source = 'notification'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map(|v| Duration::from_secs(v.parse().expect("--secs N")))
        .unwrap_or(Duration::from_secs(if full { 10 } else { 1 }));
    println!(
        "# regwatch shared-store benchmark: {SENDERS} senders, {} s each ({} cores, load generator included)",
        secs.as_secs(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    let agent = Agent::start("sqlite", &format!("path = \"{}\"", db.display()));
    // The senders' own ceiling on this machine: the same client against an endpoint that
    // stores nothing (if it were near the figures below, the client would be the limit).
    let (n, s, p99) = send_load(&[agent.port], secs, "healthz", Load::Healthz);
    println!(
        "{:<28} {n:>8} answered = {:>8.0} requests/s; p99 {p99:.1} ms (the senders' ceiling)",
        "GET /healthz, one regwatch",
        n as f64 / s
    );
    let (n, s, p99) = send(&[agent.port], secs, "sqlite");
    agent.stop();
    let base = report("SQLite, one regwatch", n, s, p99, sqlite_rows(&db), None);

    let pg = Postgres::start();
    let url_file = dir.path().join("db-url");
    std::fs::write(&url_file, pg.url()).unwrap();
    let database = format!("url_file = \"{}\"", url_file.display());
    let stored = || pg.count("SELECT count(*) FROM audit_events WHERE source = 'notification'");

    let one = Agent::start("pg-1", &database);
    let (n, s, p99) = send(&[one.port], secs, "pg1");
    one.stop();
    let before = stored();
    report("PostgreSQL, one agent", n, s, p99, before, Some(base));

    let (a, b) = (
        Agent::start("pg-a", &database),
        Agent::start("pg-b", &database),
    );
    let (n, s, p99) = send(&[a.port, b.port], secs, "pg2");
    a.stop();
    b.stop();
    report(
        "PostgreSQL, two agents",
        n,
        s,
        p99,
        stored() - before,
        Some(base),
    );
}
