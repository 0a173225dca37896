//! Audit-trail benchmark: notifications accepted durably per second with concurrent senders
//! (and their latency), CSV export next to `sqlite3 -csv` on the same database, and the
//! "one actor, one day" query on a large table. Peers run in the same process run, on the
//! same data.
//!
//!     cargo bench --bench audit                      # 1,000,000-row export, 10,000,000-row query
//!     cargo bench --bench audit -- --rows 2000000    # smaller query table
//!
//! Needs the sqlite3 CLI (apt-get install sqlite3).

use regwatch::model::clock::SystemClock;
use regwatch::model::event::{Action, Event, Source};
use regwatch::store::{COLUMNS, Filter, Store, StoreError, Writer};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::macros::datetime;

const TOKEN: &str = "bench-notify-token";
const SENDERS: usize = 64;
static SMOKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn smoke() -> bool {
    SMOKE.load(std::sync::atomic::Ordering::Relaxed)
}

fn send_for() -> Duration {
    if smoke() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    }
}

fn export_rows() -> u64 {
    if smoke() { 10_000 } else { 1_000_000 }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this file too (without `--bench`): then it is a quick
    // check that the benchmark still works, not a measurement.
    let full = args.iter().any(|a| a == "--bench");
    let query_rows: u64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--rows N"))
        .unwrap_or(if full { 10_000_000 } else { 20_000 });
    SMOKE.store(!full, std::sync::atomic::Ordering::Relaxed);
    assert!(
        Command::new("sqlite3").arg("-version").output().is_ok(),
        "sqlite3 CLI missing: apt-get install -y sqlite3"
    );
    println!(
        "# regwatch audit benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    notifications();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let t = Instant::now();
    fill(&db, 0, export_rows());
    let secs = t.elapsed().as_secs_f64();
    println!(
        "\n## bulk append through the writer (hash chain, 3 indexes + primary key)\nregwatch writer: {} rows in {secs:.2} s = {:.0} rows/s",
        export_rows(),
        export_rows() as f64 / secs
    );
    sqlite_insert_peer(dir.path());
    export(&db, dir.path());
    if query_rows > export_rows() {
        let t = Instant::now();
        fill(&db, export_rows(), query_rows);
        println!(
            "\n(filled to {query_rows} rows in {:.1} s)",
            t.elapsed().as_secs_f64()
        );
    }
    query(&db, query_rows.max(export_rows()));
}

/// A realistic event: digests, a UUID request id, an address, a user agent.
fn event(i: u64) -> Event {
    let base = datetime!(2026-01-01 0:00 UTC);
    // One event every 315 ms (10 million rows span 36 days), 500 actors, 2,000 repositories.
    let t = base + time::Duration::milliseconds((i as i64 * 3_153_600_000) / 100_000_000 * 10);
    let action = [
        Action::Pull,
        Action::Pull,
        Action::Pull,
        Action::Push,
        Action::Delete,
    ][(i % 5) as usize];
    let mut e = Event::new(t, action, Source::Notification);
    e.registry = Some("main".into());
    e.repository = Some(format!("team{}/app{}", i % 40, i % 2000));
    e.tag = (i % 3 == 0).then(|| format!("1.{}", i % 17));
    e.digest = Some(format!(
        "sha256:{:064x}",
        (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    ));
    e.media_type = Some("application/octet-stream".into());
    e.size = Some(1000 + i % 900_000);
    e.actor = Some(format!("user{}", (i * 7919) % 500));
    e.remote_addr = Some(format!("10.{}.{}.{}", i % 7, (i / 7) % 250, i % 250));
    e.user_agent = Some("containerd/1.7.13+unknown".into());
    e.request_id = Some(format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i,
        i % 65536,
        i % 4096,
        (i / 7) % 4096,
        i * 31
    ));
    e.method = Some("GET".into());
    e.event_id = Some(format!("{:08x}-0000-4000-8000-{:012x}", i, i));
    e
}

fn fill(db: &std::path::Path, from: u64, to: u64) {
    let writer = start_writer(db, 65_536);
    let sink = writer.sink();
    let producer = std::thread::spawn(move || {
        for i in from..to {
            sink.enqueue_blocking(event(i)).unwrap();
        }
    });
    producer.join().unwrap();
    writer.close_blocking();
}

/// The peer for bulk inserts: the sqlite3 CLI running plain INSERTs (no hashing) in
/// transactions of 100, WAL, synchronous=NORMAL, same schema and indexes.
fn sqlite_insert_peer(dir: &std::path::Path) {
    let db = dir.join("peer.db");
    // Same schema: let regwatch create it, then feed the CLI.
    start_writer(&db, 16).close_blocking();
    let n = if smoke() { 2_000u64 } else { 200_000 };
    let sql_path = dir.join("peer.sql");
    let mut sql = std::io::BufWriter::new(std::fs::File::create(&sql_path).unwrap());
    writeln!(sql, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;").unwrap();
    for i in 0..n {
        if i % 100 == 0 {
            writeln!(sql, "BEGIN;").unwrap();
        }
        let e = event(i);
        writeln!(
            sql,
            "INSERT INTO audit_events (time, registry, action, repository, tag, digest, media_type, size, actor, remote_addr, user_agent, request_id, method, source, event_id, prev_hash, hash) VALUES ('{}', 'main', '{}', '{}', {}, '{}', 'application/octet-stream', {}, '{}', '{}', 'containerd/1.7.13+unknown', '{}', 'GET', 'notification', '{}', '{:064x}', '{:064x}');",
            regwatch::model::text::format_time(e.time),
            e.action.as_str(),
            e.repository.unwrap(),
            e.tag.map(|t| format!("'{t}'")).unwrap_or_else(|| "NULL".into()),
            e.digest.unwrap(),
            e.size.unwrap(),
            e.actor.unwrap(),
            e.remote_addr.unwrap(),
            e.request_id.unwrap(),
            e.event_id.unwrap(),
            i,
            i + 1
        )
        .unwrap();
        if i % 100 == 99 {
            writeln!(sql, "COMMIT;").unwrap();
        }
    }
    drop(sql);
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sqlite3 '{}' < '{}' > /dev/null",
            db.display(),
            sql_path.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let secs = t.elapsed().as_secs_f64();
    println!(
        "sqlite3 CLI (peer, no hashing, batches of 100): {n} rows in {secs:.2} s = {:.0} rows/s",
        n as f64 / secs
    );
}

fn export(db: &std::path::Path, dir: &std::path::Path) {
    println!("\n## CSV export of {} rows", export_rows());
    let ours = dir.join("ours.csv");
    let theirs = dir.join("theirs.csv");
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let st = Command::new(env!("CARGO_BIN_EXE_regwatch"))
            .args(["audit", "export", "--format", "csv", "--database"])
            .arg(db)
            .arg("--output")
            .arg(&ours)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        best.0 = best.0.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sqlite3 -csv -header '{}' 'SELECT {} FROM audit_events ORDER BY id' > '{}'",
                db.display(),
                COLUMNS.join(", "),
                theirs.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
        best.1 = best.1.min(t.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(&ours).unwrap().len();
    assert_eq!(
        size,
        std::fs::metadata(&theirs).unwrap().len(),
        "the two CSVs differ in size"
    );
    println!(
        "regwatch audit export --format csv: {:.2} s ({:.0} rows/s, {:.0} MB)\nsqlite3 -csv (peer):               {:.2} s\nratio regwatch/sqlite3: {:.2}x (best of 3 each)",
        best.0,
        export_rows() as f64 / best.0,
        size as f64 / 1e6,
        best.1,
        best.0 / best.1
    );
}

/// The daemon's writer on `db`, with the real clock and no commit hook.
fn start_writer(db: &std::path::Path, capacity: usize) -> Writer {
    Store::sqlite(db)
        .start_writer(capacity, std::sync::Arc::new(SystemClock), Box::new(|_| {}))
        .unwrap()
}

fn query(db: &std::path::Path, rows: u64) {
    println!("\n## \"one actor, one day\" on {rows} rows");
    let reader = Store::sqlite(db).reader().unwrap();
    let filter = Filter {
        actor: Some("user42".into()),
        since: Some(datetime!(2026-01-15 0:00 UTC)),
        until: Some(datetime!(2026-01-16 0:00 UTC)),
        ..Filter::default()
    };
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..21 {
        let t = Instant::now();
        found = reader
            .events(&filter, |_| -> Result<(), StoreError> { Ok(()) })
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "library query: {found} rows, median {:.2} ms, max {:.2} ms (21 runs)",
        times[10], times[20]
    );
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args([
            "audit",
            "query",
            "--limit",
            "0",
            "--actor",
            "user42",
            "--since",
            "2026-01-15",
            "--until",
            "2026-01-16",
            "--database",
        ])
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success());
    println!(
        "regwatch audit query (whole process): {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}

/// Concurrent senders POST one-event envelopes for send_for(); every answer 200 means committed.
fn notifications() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\npath = \"{}/n.db\"\n[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:9\"\nnotifications_token = \"{TOKEN}\"\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(["run", "--config"])
        .arg(dir.path().join("c.toml"))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "regwatch did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let template = include_str!("../tests/fixtures/notifications.ndjson")
        .lines()
        .nth(11)
        .unwrap()
        .to_string();
    let id_in_template = template
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let (accepted, latencies, secs) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(SENDERS)
            .build()
            .unwrap();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let client = client.clone();
            let template = template.clone();
            let id = id_in_template.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut ok = 0u64;
                while start.elapsed() < send_for() {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body = template.replace(&id, &format!("bench-{s}-{n}"));
                    let t = Instant::now();
                    let resp = client
                        .post(format!("http://127.0.0.1:{port}/notifications"))
                        .bearer_auth(TOKEN)
                        .header(
                            "Content-Type",
                            "application/vnd.docker.distribution.events.v1+json",
                        )
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    let _ = resp.bytes().await;
                    lat.push(t.elapsed());
                    if status.is_success() {
                        ok += 1;
                    }
                }
                (ok, lat)
            }));
        }
        let mut accepted = 0;
        let mut lat = Vec::new();
        for t in tasks {
            let (ok, l) = t.await.unwrap();
            accepted += ok;
            lat.extend(l);
        }
        (accepted, lat, start.elapsed().as_secs_f64())
    });
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("n.db")).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_events WHERE source = 'notification'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!(
        "## notifications: {SENDERS} concurrent senders for {:.0} s (load generator on the same 2 cores)\n\
         accepted (200 only after commit): {accepted} = {:.0}/s; stored rows after stop: {stored}\n\
         latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        secs,
        accepted as f64 / secs,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        ms[ms.len() - 1]
    );
    assert_eq!(
        stored as u64, accepted,
        "an acknowledged notification is missing from the database"
    );
}
