//! Log tailing end to end: real traffic through the real nginx in front of the real
//! registry, counted exactly; rotation under continuous writes; kill -9 and restart.

use crate::support::*;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// The registry's own count of requests by handler, method and status class, from its
/// Prometheus endpoint: an oracle independent of the logs regwatch parses.
fn registry_requests(
    registry: &Registry,
    handlers: &[&str],
    methods: &[&str],
    failed: bool,
) -> f64 {
    let (_, text) = http_get(registry.debug_port, "/metrics").unwrap();
    parse_metrics(&text)
        .into_iter()
        .filter(|(s, _)| s.starts_with("registry_http_requests_total{"))
        .filter(|(s, _)| {
            handlers
                .iter()
                .any(|h| s.contains(&format!("handler=\"{h}\"")))
        })
        .filter(|(s, _)| {
            methods
                .iter()
                .any(|m| s.contains(&format!("method=\"{m}\"")))
        })
        .filter(|(s, _)| !failed || s.contains("code=\"4") || s.contains("code=\"5"))
        .map(|(_, v)| v)
        .sum()
}

/// Pulls by the registry's own count: manifest GET/HEAD and blob GET (a blob HEAD is a
/// pusher's existence check).
fn registry_pulls(registry: &Registry, failed: bool) -> f64 {
    registry_requests(registry, &["manifest"], &["get", "head"], failed)
        + registry_requests(registry, &["blob"], &["get"], failed)
}

#[test]
fn real_traffic_through_nginx_is_counted_exactly() {
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let images = Images::build();
    assert_ok(
        &skopeo_push(
            &images.reference("app-1.0"),
            &nginx.host(),
            "team/app:1.0",
            ALICE,
        ),
        "push",
    );
    // Count from here on: the push above is history.
    // The poller talks to the registry directly: its requests must not show in the
    // nginx log whose lines this test counts.
    let config = ConfigBuilder::new(&registry.url())
        .extra(&format!(
            r#"[[log]]
name = "nginx-access"
registry = "main"
path = "{}"
format = "nginx_combined"
[[log]]
name = "nginx-error"
registry = "main"
path = "{}"
format = "nginx_error"
counts = false
"#,
            nginx.access_log().display(),
            nginx.error_log().display()
        ))
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-logs-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config, &[]);
    let pulls_before = registry_pulls(&registry, false);
    let failures_before = registry_pulls(&registry, true);
    let lines_before = std::fs::read_to_string(nginx.access_log())
        .unwrap()
        .lines()
        .count();

    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(
            &nginx.host(),
            "team/app:1.0",
            BOB,
            &pulled.path().join("ok"),
        ),
        "good pull",
    );
    let missing = skopeo_pull(
        &nginx.host(),
        "team/app:9.9",
        BOB,
        &pulled.path().join("missing"),
    );
    assert!(
        !missing.status.success(),
        "pulling a missing tag should fail"
    );
    let missing = skopeo_pull(
        &nginx.host(),
        "team/nothere:1.0",
        BOB,
        &pulled.path().join("missing-repo"),
    );
    assert!(!missing.status.success());
    for _ in 0..3 {
        assert_eq!(
            curl_status(&["-u", "bob:wrong", &format!("{}/v2/", nginx.url())]),
            "401"
        );
    }
    for _ in 0..2 {
        assert_eq!(
            curl_status(&["-u", "eve:guess", &format!("{}/v2/", nginx.url())]),
            "401"
        );
    }
    for _ in 0..2 {
        // The normal challenge: no credentials. Not a failed login.
        assert_eq!(curl_status(&[&format!("{}/v2/", nginx.url())]), "401");
    }

    let pulls = registry_pulls(&registry, false) - pulls_before;
    let failures = registry_pulls(&registry, true) - failures_before;
    assert!(
        pulls >= 6.0 && failures >= 2.0,
        "pulls {pulls}, failures {failures}"
    );
    let lines = std::fs::read_to_string(nginx.access_log())
        .unwrap()
        .lines()
        .count()
        - lines_before;
    wait_until(
        Duration::from_secs(10),
        "every access-log line read",
        || {
            metric(
                &daemon.get("/metrics").1,
                "regwatch_log_lines_total{log=\"nginx-access\"}",
            ) == Some(lines as f64)
        },
    );
    let text = daemon.get("/metrics").1;
    assert_eq!(
        metric(&text, "regwatch_pulls_total{registry=\"main\"}"),
        Some(pulls),
        "{text}"
    );
    assert_eq!(
        metric(&text, "regwatch_pull_failures_total{registry=\"main\"}"),
        Some(failures),
        "{text}"
    );
    assert_eq!(
        metric(&text, "regwatch_auth_failures_total{registry=\"main\"}"),
        Some(5.0),
        "{text}"
    );
    // All from 127.0.0.1: the busiest address has all five.
    assert_eq!(
        metric(&text, "regwatch_auth_failure_burst_max{registry=\"main\"}"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "regwatch_pull_failure_ratio{registry=\"main\",window=\"1m\"}"
        ),
        Some(failures / pulls),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "regwatch_log_parse_errors_total{log=\"nginx-access\"}"
        ),
        Some(0.0),
        "{text}"
    );
    // The error log is read (its failed-login lines parse) and paired with the access log's
    // 401s: each failed login counts once (counts = false leaves its requests alone).
    wait_until(Duration::from_secs(10), "the error log read", || {
        metric(
            &daemon.get("/metrics").1,
            "regwatch_log_lines_total{log=\"nginx-error\"}",
        )
        .unwrap_or(0.0)
            > 0.0
    });
    assert_eq!(
        metric(
            &daemon.get("/metrics").1,
            "regwatch_log_parse_errors_total{log=\"nginx-error\"}"
        ),
        Some(0.0)
    );

    let db = daemon.db_path();
    wait_until(
        Duration::from_secs(10),
        "auth failures in the audit trail",
        || {
            count(
                &db,
                "SELECT count(*) FROM audit_events WHERE action = 'auth_failure'",
            ) == 5
        },
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'auth_failure' AND actor = 'bob' AND remote_addr = '127.0.0.1' AND source = 'log' AND detail IN ('log nginx-access', 'log nginx-error: password mismatch')"
        ),
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'auth_failure' AND actor = 'eve' AND (user_agent LIKE 'curl/%' OR detail = 'log nginx-error: user not found')"
        ),
        2
    );
    // Without audit_from_logs, pulls are left to the registry's notifications.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull'"
        ),
        0
    );
}

/// Appends numbered pull lines, one write per line, reopening the file each time (as a
/// logger does after rotation), holding `lock` while writing.
fn writer(
    path: std::path::PathBuf,
    lock: std::sync::Arc<std::sync::Mutex<()>>,
    n: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 0..n {
            let _g = lock.lock().unwrap();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            writeln!(
                f,
                "10.1.{}.{} - bob [28/Nov/2026:19:59:36 +0000] \"GET /v2/load/blobs/sha256:{:064x} HTTP/1.1\" 200 1024 \"-\" \"loadgen/1.0\"",
                i / 250 % 250,
                i % 250,
                i
            )
            .unwrap();
            drop(_g);
            if i % 50 == 0 {
                std::thread::sleep(pause);
            }
        }
    })
}

fn tail_config(log: &std::path::Path) -> String {
    ConfigBuilder::new("http://127.0.0.1:9")
        .registry("audit_from_logs", true)
        .extra(&format!(
            r#"[[log]]
name = "load"
registry = "main"
path = "{}"
format = "nginx_combined"
start_at = "beginning"
poll_interval = "100ms"
"#,
            log.display()
        ))
        .build()
}

fn assert_exactly_once(db: &std::path::Path, n: usize) {
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull'"
        ) as usize,
        n,
        "lines lost or doubled"
    );
    assert_eq!(
        count(
            db,
            "SELECT count(DISTINCT digest) FROM audit_events WHERE action = 'pull'"
        ) as usize,
        n,
        "a line counted twice"
    );
}

#[test]
fn rotation_under_continuous_writes_loses_and_doubles_nothing() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    std::fs::write(&path, "").unwrap();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-logs-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &tail_config(&path), &[]);
    let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
    const N: usize = 6000;
    let w = writer(path.clone(), lock.clone(), N, Duration::from_millis(10));
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        match round % 3 {
            // logrotate's default: rename, the logger re-creates the file.
            0 => std::fs::rename(&path, logs.path().join(format!("access.log.{round}"))).unwrap(),
            // copytruncate: copy, then truncate in place (atomic with respect to the logger,
            // as logrotate cannot be; lines written in between are lost by design there).
            1 => {
                let _g = lock.lock().unwrap();
                std::fs::copy(&path, logs.path().join(format!("access.log.{round}"))).unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
            }
            // Deleted while being read; the logger re-creates it.
            _ => {
                let _g = lock.lock().unwrap();
                std::fs::rename(&path, logs.path().join(format!("access.log.{round}"))).unwrap();
                std::fs::remove_file(logs.path().join(format!("access.log.{round}"))).ok();
            }
        }
    }
    w.join().unwrap();
    let db = daemon.db_path();
    wait_until(Duration::from_secs(20), "every line read", || {
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull'",
        ) as usize
            >= N
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&db, N);
    let text = daemon.get("/metrics").1;
    assert_eq!(
        metric(&text, "regwatch_pulls_total{registry=\"main\"}"),
        Some(N as f64)
    );
    assert_eq!(
        metric(&text, "regwatch_log_lines_total{log=\"load\"}"),
        Some(N as f64)
    );
}

#[test]
fn kill_9_and_restart_neither_loses_nor_repeats_a_line() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    std::fs::write(&path, "").unwrap();
    let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
    const N: usize = 20_000;
    let w = writer(path.clone(), lock.clone(), N, Duration::from_millis(2));
    let mut dir = tempfile::Builder::new()
        .prefix("regwatch-logs-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let config = tail_config(&path);
    for round in 0..4 {
        let mut daemon = Daemon::start_on(port, dir, &config, &[]);
        if round == 1 {
            // The rotation below happens while regwatch is down; it can find the old file
            // only from a checkpoint naming it. On a loaded machine the first rounds may be
            // killed before their first commit, so wait for one (then kill at once).
            let db = daemon.db_path();
            wait_until(Duration::from_secs(30), "a log checkpoint", || {
                count(&db, "SELECT count(*) FROM log_checkpoints") > 0
            });
        }
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        daemon.proc.signal("KILL");
        daemon
            .proc
            .wait_exit(Duration::from_secs(5))
            .expect("killed");
        dir = daemon.dir;
        if round == 1 {
            // A rotation while regwatch is down: the rest of the old file must still be read.
            std::fs::rename(&path, logs.path().join("access.log.1")).unwrap();
        }
    }
    w.join().unwrap();
    let daemon = Daemon::start_on(port, dir, &config, &[]);
    let db = daemon.db_path();
    let ok = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull'",
        ) as usize
            >= N
    });
    if !ok {
        eprintln!(
            "rows {} distinct {} stderr:\n{}",
            count(
                &db,
                "SELECT count(*) FROM audit_events WHERE action = 'pull'"
            ),
            count(
                &db,
                "SELECT count(DISTINCT digest) FROM audit_events WHERE action = 'pull'"
            ),
            daemon.proc.stderr()
        );
        eprintln!(
            "CHECKPOINT {}",
            sqlite3(&db, "SELECT * FROM log_checkpoints")
        );
        let have: std::collections::HashSet<String> =
            sqlite3(&db, "SELECT digest FROM audit_events WHERE action = 'pull'")
                .lines()
                .map(str::to_string)
                .collect();
        let missing: Vec<usize> = (0..N)
            .filter(|i| !have.contains(&format!("sha256:{:064x}", i)))
            .collect();
        eprintln!("MISSING {missing:?}");
        for m in &missing {
            let needle = format!("{:064x}", m);
            for f in ["access.log", "access.log.1"] {
                let text = std::fs::read_to_string(logs.path().join(f)).unwrap();
                if let Some(pos) = text.find(&needle) {
                    eprintln!("MISSING {m} in {f} at byte {pos} of {}", text.len());
                }
            }
        }
        eprintln!(
            "{}",
            Command::new("ls")
                .arg("-li")
                .arg(logs.path())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap()
        );
        panic!("not all read");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&db, N);
    let (code, out, _) = regwatch(&["audit", "verify", "--database", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

fn pull_line(i: usize) -> String {
    format!(
        "10.2.0.{} - bob [28/Nov/2026:19:59:36 +0000] \"GET /v2/glob/blobs/sha256:{:064x} HTTP/1.1\" 200 10 \"-\" \"loadgen/1.0\"\n",
        i % 250,
        i
    )
}

fn append(path: &std::path::Path, lines: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in lines {
        f.write_all(pull_line(i).as_bytes()).unwrap();
    }
}

#[test]
fn a_glob_follows_every_matching_file_including_new_ones() {
    let logs = tempfile::tempdir().unwrap();
    append(&logs.path().join("a.access.log"), 0..3);
    append(&logs.path().join("b.access.log"), 3..5);
    append(&logs.path().join("other.log"), 100..110);
    let config = tail_config(&logs.path().join("*.access.log"));
    let dir = tempfile::Builder::new()
        .prefix("regwatch-logs-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let daemon = Daemon::start_on(port, dir, &config, &[]);
    let db = daemon.db_path();
    let pulls = |db: &std::path::Path| {
        count(
            db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull'",
        )
    };
    wait_until(Duration::from_secs(10), "both files read", || {
        pulls(&db) == 5
    });
    // A file that appears later is read from its start; a non-matching one is ignored.
    append(&logs.path().join("c.access.log"), 5..9);
    append(&logs.path().join("other.log"), 110..120);
    wait_until(Duration::from_secs(10), "the new file read", || {
        pulls(&db) == 9
    });
    let dir = daemon.stop();
    append(&logs.path().join("a.access.log"), 9..10);
    let daemon = Daemon::start_on(port, dir, &config, &[]);
    let db = daemon.db_path();
    wait_until(Duration::from_secs(10), "the appended line read", || {
        pulls(&db) == 10
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&db, 10);
    let keys = sqlite3(&db, "SELECT log FROM log_checkpoints ORDER BY log");
    assert_eq!(
        keys,
        "load:a.access.log\nload:b.access.log\nload:c.access.log\n"
    );
}

#[test]
fn sighup_adds_and_changes_logs_under_writes_without_loss() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    std::fs::write(&path, "").unwrap();
    let second = logs.path().join("second.log");
    append(&second, 1_000_000..1_000_010);
    let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
    const N: usize = 10_000;
    let w = writer(path.clone(), lock, N, Duration::from_millis(10));
    let dir = tempfile::Builder::new()
        .prefix("regwatch-logs-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_on(free_port(), dir, &tail_config(&path), &[]);
    let db = daemon.db_path();
    let pulls = || {
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull'",
        ) as usize
    };
    wait_until(Duration::from_secs(20), "the first lines", || pulls() > 0);

    // A second log is added while the first is being written to.
    let written = std::fs::read_to_string(daemon.config_path()).unwrap();
    let with_second = format!(
        "{written}\n[[log]]\nname = \"second\"\nregistry = \"main\"\npath = \"{}\"\nformat = \"nginx_combined\"\nstart_at = \"beginning\"\npoll_interval = \"100ms\"\n",
        second.display()
    );
    std::fs::write(daemon.config_path(), &with_second).unwrap();
    daemon.proc.signal("HUP");
    wait_until(Duration::from_secs(20), "the added log read", || {
        metric(
            &daemon.get("/metrics").1,
            "regwatch_log_lines_total{log=\"second\"}",
        ) == Some(10.0)
    });
    // The first log's settings change: its tailer restarts from its checkpoint.
    std::fs::write(
        daemon.config_path(),
        with_second.replacen("poll_interval = \"100ms\"", "poll_interval = \"50ms\"", 1),
    )
    .unwrap();
    daemon.proc.signal("HUP");
    // Signals do not queue: a SIGHUP sent before the daemon took the previous one merges
    // with it. So the next one waits until this reload is on record.
    let reloaded = || {
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'config_reload' AND detail = 'reloaded'",
        )
    };
    wait_until(Duration::from_secs(20), "the second reload", || {
        reloaded() == 2
    });
    // A reload that changes no log leaves the tailers alone.
    daemon.proc.signal("HUP");
    w.join().unwrap();
    wait_until(Duration::from_secs(60), "every line read", || {
        pulls() >= N + 10
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&db, N + 10);
    let reloads = count(
        &db,
        "SELECT count(*) FROM audit_events WHERE action = 'config_reload' AND detail = 'reloaded'",
    );
    assert_eq!(reloads, 3);
    // Started once, restarted by each of the two reloads that changed a log.
    let stderr = daemon.proc.stderr();
    let starts = stderr
        .lines()
        .filter(|l| l.contains("tailing") && l.contains("log=load"))
        .count();
    assert_eq!(starts, 3, "{stderr}");
}
