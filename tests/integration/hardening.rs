//! The hardening cases (issue 17), each against the real daemon or CLI: a store that cannot
//! write (a held write lock, a full disk), a database deleted under the daemon, log paths
//! that are not files, date arithmetic past the calendar, unauthenticated bodies and slow or
//! idle clients, credentials in URLs, a planted symlink at the report's temporary file,
//! world-readable inline secrets, future timestamps, a corrupt page, a directory the daemon
//! cannot write. Log lines are nginx's own error-log format (as captured in
//! tests/fixtures); notifications are the registry's envelope format.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "hardening-token-5d1c";
/// Nothing listens here: these tests need no registry, and the poller's failures are
/// beside the point.
const NO_REGISTRY: &str = "http://127.0.0.1:9";

fn config_with_log(log: &Path) -> String {
    ConfigBuilder::new(NO_REGISTRY)
        .api_token(TOKEN)
        .registry("poll_interval", "1h")
        .extra(&format!(
            r#"[[log]]
name = "nginx-error"
registry = "main"
path = "{}"
format = "nginx_error"
start_at = "beginning"
poll_interval = "100ms"
"#,
            log.display()
        ))
        .build()
}

/// `n` failed logins in nginx's error-log format, user names `{prefix}{i}`.
fn failed_logins(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "2026/11/28 19:59:35 [error] 15638#15638: *{i} user \"{prefix}{i}\": password mismatch, client: 127.0.0.1, server: localhost, request: \"GET /v2/ HTTP/1.1\", host: \"127.0.0.1:15080\"\n"
            )
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The stored rows of `action`, as `regwatch audit export --format ndjson` prints them.
fn rows(db: &Path, action: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = regwatch(&[
        "audit",
        "export",
        "--database",
        db.to_str().unwrap(),
        "--format",
        "ndjson",
        "--action",
        action,
    ]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_verifies(db: &Path) {
    let (code, out, err) = regwatch(&["audit", "verify", "--database", db.to_str().unwrap()]);
    assert_eq!(code, 0, "audit verify: {out}{err}");
}

/// A registry notification envelope with one push event.
fn push_envelope(id: &str, timestamp: &str) -> Vec<u8> {
    serde_json::json!({"events": [{
        "id": id,
        "timestamp": timestamp,
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": "team/app",
            "digest": "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b",
            "tag": "1.0"
        },
        "request": {"addr": "127.0.0.1:40000", "method": "PUT", "useragent": "skopeo/1.9.3"},
        "actor": {"name": "alice"}
    }]})
    .to_string()
    .into_bytes()
}

fn notify(port: u16, body: Vec<u8>) -> (u16, String) {
    http(
        "POST",
        port,
        "/notifications",
        Some(TOKEN),
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.events.v1+json",
        )],
        Some(body),
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `sqlite3 db` holding `BEGIN EXCLUSIVE` until dropped (its stdin closes).
struct WriteLock(std::process::Child);

impl WriteLock {
    fn hold(db: &Path) -> WriteLock {
        require("sqlite3", "sqlite3");
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = [0u8; 7];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .unwrap();
        assert_eq!(&line, b"locked\n");
        WriteLock(child)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `regwatch run` that is expected to refuse to start: its exit code and stderr; fails if it
/// is still running after 20 s (it accepted what it should have refused).
fn run_refused(config: &Path) -> (Option<i32>, String) {
    let dir = config.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regwatch"));
    cmd.args(["run", "--config"]).arg(config);
    let mut proc = Proc::spawn(
        "regwatch",
        &mut cmd,
        &dir.join("refused.out"),
        &dir.join("refused.err"),
    );
    let exited = proc.wait_exit(Duration::from_secs(20));
    let stderr = proc.stderr();
    match exited {
        Some((status, _)) => (status.code(), stderr),
        None => panic!("regwatch started when it should have refused:\n{stderr}"),
    }
}

fn metrics_value(d: &Daemon, series: &str) -> Option<f64> {
    metric(&d.get("/metrics").1, series)
}

/// Cases 1 and 3 with a write lock held by another process: the tailer's failed logins and
/// regwatch's own config_reload row wait, /readyz says the store cannot write, and once the
/// lock is gone everything is stored once, in a chain that verifies.
#[test]
fn a_held_write_lock_delays_but_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    append(&log, "");
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &config_with_log(&log), &[]);
    let db = d.db_path();
    wait_until(Duration::from_secs(10), "the first commit", || {
        !rows(&db, "monitor_start").is_empty()
    });
    let lock = WriteLock::hold(&db);
    append(&log, &failed_logins("locked", 50));
    d.proc.signal("HUP");
    wait_until(Duration::from_secs(20), "/readyz to say so", || {
        let (status, body) = d.get("/readyz");
        status == 503 && body.contains("cannot be written")
    });
    assert_eq!(metrics_value(&d, "regwatch_database_writable"), Some(0.0));
    let (status, body) = notify(d.port, push_envelope("while-locked", &now_rfc3339()));
    assert_eq!(status, 503, "a notification is refused, not lost: {body}");
    drop(lock);
    wait_until(Duration::from_secs(20), "the failed logins", || {
        rows(&db, "auth_failure").len() >= 50
    });
    wait_until(Duration::from_secs(10), "ready again", || {
        d.get("/readyz").0 == 200
    });
    wait_until(Duration::from_secs(10), "the retained reload row", || {
        rows(&db, "config_reload").len() == 1
    });
    let dir_back = d.stop();
    let failed = rows(&db, "auth_failure");
    assert_eq!(failed.len(), 50, "each failed login once");
    let mut users: Vec<String> = failed
        .iter()
        .map(|r| r["actor"].as_str().unwrap().to_string())
        .collect();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 50);
    assert_eq!(rows(&db, "monitor_stop").len(), 1);
    assert_verifies(&db);
    let stderr = std::fs::read_to_string(dir_back.path().join("stderr.log")).unwrap();
    assert!(
        stderr.contains("every accepted event is committed"),
        "{stderr}"
    );
}

/// Case 1 on a full disk: a 1 MiB tmpfs holds the database; while it is full, the failed
/// logins wait in the tailer (back-pressure); when space comes back, all 600 are stored.
#[test]
fn a_full_disk_loses_no_failed_login() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
        .arg(mnt.path())
        .status()
        .expect("mount (util-linux) runs");
    assert!(
        mounted.success(),
        "this test mounts a 1 MiB tmpfs and needs root (CI runs as root)"
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("error.log");
    append(&log, "");
    let db = mnt.path().join("regwatch.db");
    let config = config_with_log(&log).replace("{dir}/regwatch.db", db.to_str().unwrap());
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &config, &[]);
    wait_until(Duration::from_secs(10), "the first commit", || {
        !rows(&db, "monitor_start").is_empty()
    });
    // Fill what is left of the tmpfs.
    let filler = mnt.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    append(&log, &failed_logins("full", 600));
    wait_until(
        Duration::from_secs(30),
        "/readyz to see the full disk",
        || d.get("/readyz").0 == 503,
    );
    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(60), "all 600 failed logins", || {
        rows(&db, "auth_failure").len() >= 600
    });
    wait_until(Duration::from_secs(10), "ready again", || {
        d.get("/readyz").0 == 200
    });
    d.stop();
    assert_eq!(rows(&db, "auth_failure").len(), 600);
    assert_verifies(&db);
}

/// Case 2: the database deleted under the daemon: notifications get 503 (the registry
/// retries), /readyz and a metric say why, and a restart refuses to begin a new trail
/// silently next to the old one's marker.
#[test]
fn a_deleted_database_stops_acknowledgements_and_is_not_recreated_silently() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    append(&log, "");
    let config = config_with_log(&log);
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &config, &[]);
    let db = d.db_path();
    assert_eq!(
        notify(d.port, push_envelope("before", &now_rfc3339())).0,
        200
    );
    std::fs::remove_file(&db).unwrap();
    let (status, body) = notify(d.port, push_envelope("after", &now_rfc3339()));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("deleted"), "{body}");
    let (status, body) = d.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("deleted or replaced"), "{body}");
    assert_eq!(metrics_value(&d, "regwatch_database_replaced"), Some(1.0));
    let back = d.stop();
    let stderr = std::fs::read_to_string(back.path().join("stderr.log")).unwrap();
    assert!(
        stderr.contains("was deleted while regwatch had it open"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("every accepted event is committed"),
        "the shutdown must not claim its own stop row was stored: {stderr}"
    );

    let (code, stderr) = run_refused(&back.path().join("regwatch.toml"));
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("regwatch.db.trail"), "{stderr}");
    assert!(!db.exists() || rows(&db, "monitor_start").is_empty());
}

/// Case 5: a FIFO, a character device and a directory are refused at their line; a path
/// that does not exist yet is fine.
#[test]
fn log_paths_that_are_not_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, kind) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (dir.path(), "a directory"),
    ] {
        let cfg = dir.path().join("regwatch.toml");
        std::fs::write(&cfg, config_with_log(path).replace("{port}", "0")).unwrap();
        let (code, _, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 64, "{err}");
        assert!(err.contains("log[0].path"), "{err}");
        assert!(
            err.contains(&format!("is {kind}"))
                && err.contains("a log path must be a regular file"),
            "{err}"
        );
    }
    let cfg = dir.path().join("regwatch.toml");
    std::fs::write(
        &cfg,
        config_with_log(&dir.path().join("later.log")).replace("{port}", "0"),
    )
    .unwrap();
    let (code, _, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// Case 5 at run time: a FIFO that matches a log glob is never opened, so SIGTERM ends the
/// daemon at once.
#[test]
fn a_fifo_matching_a_log_glob_does_not_block_shutdown() {
    let logs = tempfile::tempdir().unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(logs.path().join("access-1.log"))
            .status()
            .unwrap()
            .success()
    );
    append(&logs.path().join("access-2.log"), &failed_logins("glob", 3));
    let d = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &config_with_log(&logs.path().join("access-*.log")),
        &[],
    );
    let db = d.db_path();
    wait_until(Duration::from_secs(10), "the regular file's lines", || {
        rows(&db, "auth_failure").len() == 3
    });
    d.stop();
}

/// Case 6: durations and times past the calendar are the user's mistake, never a panic.
#[test]
fn date_arithmetic_past_the_calendar_is_a_clear_error() {
    let d = Daemon::start(
        &ConfigBuilder::new(NO_REGISTRY)
            .api_token(TOKEN)
            .registry("poll_interval", "1h")
            .build(),
    );
    for q in ["since=9999999999d", "until=9999999999d"] {
        let (status, body) = http(
            "GET",
            d.port,
            &format!("/api/v1/audit?{q}"),
            Some(TOKEN),
            &[],
            None,
        );
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains("before the year 1"), "{body}");
    }
    for silence in [
        serde_json::json!({"matchers": {"alertname": "x"}, "duration": "9999999999d"}),
        serde_json::json!({"matchers": {"alertname": "x"}, "starts_at": "9999-12-31T00:00:00Z", "duration": "2d"}),
    ] {
        let (status, body) = http(
            "POST",
            d.port,
            "/api/v1/silences",
            Some(TOKEN),
            &[("Content-Type", "application/json")],
            Some(silence.to_string().into_bytes()),
        );
        assert_eq!(status, 400, "{silence}: {body}");
        assert!(body.contains("duration"), "{body}");
    }
    assert_eq!(d.get("/healthz").0, 200, "the daemon survived");
    let db = d.db_path();
    let _dir = d.stop();
    let (code, _, err) = regwatch(&[
        "audit",
        "query",
        "--database",
        db.to_str().unwrap(),
        "--since",
        "9999999999d",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--since"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("regwatch.toml");
    std::fs::write(
        &cfg,
        "[database]\nretention = \"9999999999d\"\n[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let (code, _, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(":2:") && err.contains("at most 36500d"),
        "{err}"
    );
}

/// Case 7: without a token, the answer comes before the body is sent (the body is never
/// read), so unauthenticated clients cannot make regwatch hold their megabytes.
#[test]
fn notifications_are_refused_before_their_body_is_read() {
    let d = Daemon::start(
        &ConfigBuilder::new(NO_REGISTRY)
            .api_token(TOKEN)
            .registry("poll_interval", "1h")
            .build(),
    );
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .expect("an answer without the body being sent");
    assert_eq!(&head, b"HTTP/1.1 401");
    // With the token, a body over max_body_bytes is 413.
    let (status, _) = http(
        "POST",
        d.port,
        "/notifications",
        Some(TOKEN),
        &[],
        Some(vec![b' '; 2 << 20]),
    );
    assert_eq!(status, 413);
}

/// Case 8: a client that never finishes its headers, and idle connections, are closed
/// after `header_read_timeout`; beyond `max_connections` clients wait instead of taking
/// descriptors, and /healthz is answered throughout.
#[test]
fn slow_and_idle_clients_are_closed_and_capped() {
    let d = Daemon::start(
        &ConfigBuilder::new(NO_REGISTRY)
            .server("header_read_timeout", "1s")
            .server("max_connections", 16)
            .registry("poll_interval", "1h")
            .build(),
    );
    let mut slow = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap())
        .collect();
    let start = Instant::now();
    let mut rest = Vec::new();
    let n = slow.read_to_end(&mut rest).expect("closed, not timed out");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        n == 0 || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{rest:?}"
    );
    assert_eq!(d.get("/healthz").0, 200);
    for mut c in idle.into_iter().take(5) {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf)
            .expect("the idle connection is closed");
    }
    d.stop();
}

/// Case 9: credentials in `registry.url` are refused, and never echoed.
#[test]
fn credentials_in_the_registry_url_are_refused_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("regwatch.toml");
    std::fs::write(
        &cfg,
        "[[registry]]\nname = \"main\"\nurl = \"http://alice:hunter2-secret@127.0.0.1:5000\"\n",
    )
    .unwrap();
    let (code, out, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(":3:") && err.contains("password_file"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}{err}");
}

/// Case 10: a symlink planted where the report's temporary file used to be is left alone,
/// and the report is private.
#[test]
fn a_planted_symlink_does_not_redirect_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    std::os::unix::fs::symlink(&victim, reports.join(".weekly.csv.tmp")).unwrap();
    let config = ConfigBuilder::new(NO_REGISTRY)
        .database(dir.path().join("regwatch.db"))
        .no_server()
        .extra(&format!(
            "[[report]]\nname = \"weekly\"\nschedule = \"0 6 * * MON\"\nformat = \"csv\"\nperiod = \"7d\"\noutput = \"{}/weekly.csv\"\n",
            reports.display()
        ))
        .build();
    let cfg = dir.path().join("regwatch.toml");
    std::fs::write(&cfg, config).unwrap();
    // An empty trail is enough for the report: the daemon-free writer path is the one used.
    let d = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &ConfigBuilder::new(NO_REGISTRY)
            .database(dir.path().join("regwatch.db"))
            .registry("poll_interval", "1h")
            .build(),
        &[],
    );
    d.stop();
    let (code, out, err) =
        regwatch(&["report", "run", "weekly", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let written = reports.join("weekly.csv");
    let mode = std::fs::metadata(&written).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&written)
            .unwrap()
            .starts_with("id,time")
    );
}

/// Case 11: inline secrets in a config every user can read get a warning from `check`
/// (naming the keys, not the values); a private file gets none.
#[test]
fn inline_secrets_in_a_world_readable_config_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("regwatch.toml");
    std::fs::write(
        &cfg,
        ConfigBuilder::new(NO_REGISTRY)
            .api_token(TOKEN)
            .no_database()
            .build()
            .replace("{port}", "0"),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("readable by every user")
            && err.contains("server.api_token"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains(TOKEN));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, _, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!err.contains("warning:"), "{err}");
}

/// Case 12: an event dated 9999 is stored at its receipt time with the claimed time in its
/// detail, so it falls inside today's reports and cannot hold retention back.
#[test]
fn a_notification_from_the_future_is_dated_on_receipt() {
    let d = Daemon::start(
        &ConfigBuilder::new(NO_REGISTRY)
            .api_token(TOKEN)
            .registry("poll_interval", "1h")
            .build(),
    );
    let (status, body) = notify(d.port, push_envelope("future", "9999-12-31T23:59:59Z"));
    assert_eq!(status, 200, "{body}");
    let db = d.db_path();
    let _dir = d.stop();
    let pushes = rows(&db, "push");
    assert_eq!(pushes.len(), 1);
    let time = pushes[0]["time"].as_str().unwrap();
    assert!(time.starts_with(&now_rfc3339()[..10]), "{time}");
    assert!(
        pushes[0]["detail"]
            .as_str()
            .unwrap()
            .contains("sender's time 9999-12-31T23:59:59.000000Z was in the future"),
        "{}",
        pushes[0]
    );
    let (code, out, _) = regwatch(&[
        "audit",
        "query",
        "--database",
        db.to_str().unwrap(),
        "--since",
        "1h",
        "--action",
        "push",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("team/app"), "{out}");
}

/// Case 13: a page damaged in the middle of the database is found at start (exit 65), not
/// acknowledged over.
#[test]
fn a_database_corrupt_in_its_middle_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    append(&log, &failed_logins("many", 3000));
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &config_with_log(&log), &[]);
    let db = d.db_path();
    wait_until(Duration::from_secs(30), "3000 rows", || {
        rows(&db, "auth_failure").len() == 3000
    });
    let back = d.stop();
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 64 * 4096, "{len}");
    // Garbage over one page in the middle (not the header, not the last page).
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start((len / 4096 / 2) * 4096))
        .unwrap();
    f.write_all(&[0xA5; 4096]).unwrap();
    drop(f);
    let (code, stderr) = run_refused(&back.path().join("regwatch.toml"));
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
}

/// Case 14: a database directory this user cannot write is a permission problem, said as
/// one (path and user), not "corrupt, move it aside".
#[test]
fn an_unwritable_database_directory_is_a_permission_error() {
    require("runuser", "util-linux");
    let dir = shared_tempdir("regwatch-perm-");
    // The binary where `nobody` can run it (the build directory may be under /root).
    let bin = dir.path().join("regwatch");
    std::fs::copy(env!("CARGO_BIN_EXE_regwatch"), &bin).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("regwatch.toml");
    std::fs::write(
        &cfg,
        ConfigBuilder::new(NO_REGISTRY)
            .database(data.join("regwatch.db"))
            .build()
            .replace("{port}", &free_port().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("permission denied")
            && stderr.contains("nobody")
            && stderr.contains(&data.display().to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("corrupt") && !stderr.contains("move it aside"),
        "{stderr}"
    );
}

/// Case 4: a silence written to make a backtracking matcher explode, and a failed login by
/// a long attacker-chosen user name: the evaluator, the API and shutdown stay responsive.
#[test]
fn a_glob_bomb_silence_does_not_stall_anything() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    append(&log, "");
    let config = format!(
        "{}\n[[rule]]\nname = \"guessing\"\nkind = \"auth_failures\"\nthreshold = 0\nwindow = \"1m\"\ngroup_by = \"user\"\nchannels = [\"hook\"]\n\n[[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\ntimeout = \"1s\"\n",
        config_with_log(&log)
    );
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &config, &[]);
    let silence = |user: &str| {
        http(
            "POST",
            d.port,
            "/api/v1/silences",
            Some(TOKEN),
            &[("Content-Type", "application/json")],
            Some(
                serde_json::json!({"matchers": {"user": user}, "duration": "1h"})
                    .to_string()
                    .into_bytes(),
            ),
        )
    };
    assert_eq!(silence("*a*a*a*a*a*a*a*a*a*a*a*b").0, 201);
    assert_eq!(silence("*-*-*-prod").0, 201);
    let long = "a".repeat(60);
    // Dated now, as nginx writes it, so it falls in the rule's window.
    let now = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]/[month]/[day] [hour]:[minute]:[second]"
        ))
        .unwrap();
    append(
        &log,
        &failed_logins(&long, 1).replace("2026/11/28 19:59:35", &now),
    );
    let db = d.db_path();
    wait_until(Duration::from_secs(10), "the failed login", || {
        rows(&db, "auth_failure").len() == 1
    });
    wait_until(Duration::from_secs(10), "the alert to be evaluated", || {
        let (_, body) = http("GET", d.port, "/api/v1/alerts", Some(TOKEN), &[], None);
        body.contains(&format!("{long}0"))
    });
    assert_eq!(silence("*b*").0, 201, "the API is not held up");
    assert_eq!(d.get("/healthz").0, 200);
    d.stop();
}
