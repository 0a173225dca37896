//! The foundation as a user meets it: config errors, `check`, the daemon against a real
//! registry, metrics, health, the database file, SIGHUP and SIGTERM.

use crate::support::*;
use rusqlite::Connection;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn regwatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(args)
        .output()
        .unwrap()
}

fn check_file(text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regwatch.toml");
    std::fs::write(&path, text).unwrap();
    let out = regwatch(&["check", "--config", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn bad_config_reports_every_mistake_with_file_line_column_and_exits_64() {
    let (code, stdout, stderr, path) = check_file(
        r#"[server]
listen = "127.0.0.1:10708"
api_tokn = "x"

[database]
retention = "a while"

[[registry]]
name = "main"
url = "127.0.0.1:5000"
poll_interval = 30

[[registry]]
name = "main"
url = "http://127.0.0.1:5001"
password = "p"
"#,
    );
    assert_eq!(code, 64, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.is_empty(),
        "nothing on stdout for an invalid config: {stdout}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&path)).collect();
    let expected = [
        format!("{path}:3:1: server.api_tokn: unknown key `api_tokn`; did you mean `api_token`?"),
        format!("{path}:6:13: database.retention: invalid duration \"a while\""),
        format!(
            "{path}:10:1: registry[0].url: invalid URL \"127.0.0.1:5000\" (relative URL without a base): expected e.g. \"http://127.0.0.1:5000\""
        ),
        format!("{path}:11:17: registry[0].poll_interval: expected a duration such as \"30s\""),
        format!("{path}:14:1: registry[1].name: duplicate registry name \"main\""),
        format!("{path}:14:1: registry[1].username: a password is set but no username"),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "got:  {line}\nwant: {want}…"
        );
    }
    assert!(
        stderr.trim_end().ends_with(&format!("6 errors in {path}")),
        "{stderr}"
    );
}

#[test]
fn toml_syntax_error_and_missing_file_exit_64() {
    let (code, _, stderr, path) = check_file("[[registry]]\nname = \"a\nurl = \"http://x\"\n");
    assert_eq!(code, 64);
    assert!(stderr.starts_with(&format!("{path}:2:")), "{stderr}");
    assert!(stderr.contains("invalid TOML"), "{stderr}");

    let out = regwatch(&["check", "--config", "/nonexistent/regwatch.toml"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/regwatch.toml") && stderr.contains("cannot read config file"),
        "{stderr}"
    );
}

#[test]
fn run_with_bad_config_exits_64_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[database]\npath = \"x.db\"\nbogus = 1\n[[registry]]\nname = \"a\"\nurl = \"http://127.0.0.1:5000\"\n").unwrap();
    let out = regwatch(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":3:1: database.bogus: unknown key `bogus`")
    );
    assert!(
        !dir.path().join("x.db").exists(),
        "database created despite invalid config"
    );
}

#[test]
fn check_summarises_without_printing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "file-token-6c1e\n").unwrap();
    let path = dir.path().join("regwatch.toml");
    std::fs::write(
        &path,
        r#"[server]
api_token_file = "token"

[[registry]]
name = "main"
url = "http://127.0.0.1:5000"
username = "monitor"
password = "inline-pass-93af"

[[registry]]
name = "backup"
url = "https://registry.example.test"
username = "monitor"
password_env = "RW_TEST_PASSWORD"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("RW_TEST_PASSWORD", "env-pass-77d0")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    for secret in ["file-token-6c1e", "inline-pass-93af", "env-pass-77d0"] {
        assert!(!all.contains(secret), "secret {secret} printed:\n{all}");
    }
    assert!(
        all.contains(&format!(
            "API token from file {}",
            dir.path().join("token").display()
        )),
        "{all}"
    );
    assert!(all.contains("user monitor, password set inline"), "{all}");
    assert!(
        all.contains("user monitor, password from $RW_TEST_PASSWORD"),
        "{all}"
    );
    assert!(all.contains("registries  2"), "{all}");

    // Without the variable the same config is refused, naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("RW_TEST_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            ":14:1: registry[1].password_env: environment variable RW_TEST_PASSWORD is not set"
        ),
        "{stderr}"
    );
}

#[test]
fn version_names_the_revision() {
    let out = regwatch(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("regwatch {} (", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

fn audit_actions(db: &std::path::Path) -> Vec<(String, Option<String>)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT action, detail FROM audit_events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn daemon_serves_metrics_reloads_on_sighup_and_stops_cleanly_on_sigterm() {
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let dir = tempfile::Builder::new()
        .prefix("regwatch-daemon-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("token"), "api-token-5b2d\n").unwrap();
    let config = ConfigBuilder::new(&nginx.url())
        .server("api_token_file", "{dir}/token")
        .login(ALICE)
        .registry("poll_interval", "10s")
        .registry("storage_root", registry.storage())
        .build();
    let mut daemon = Daemon::start_in(dir, &config, &[("RUST_LOG", "trace")]);

    // /metrics parses and carries the build info and process metrics.
    let (status, text) = daemon.get("/metrics");
    assert_eq!(status, 200);
    let series = parse_metrics(&text);
    let build = series
        .iter()
        .find(|(s, _)| s.starts_with("regwatch_build_info{"))
        .expect("build info");
    assert_eq!(build.1, 1.0);
    assert!(
        build
            .0
            .contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{}",
        build.0
    );
    assert!(
        series
            .iter()
            .any(|(s, v)| s == "process_resident_memory_bytes" && *v > 0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "regwatch_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(daemon.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(daemon.get("/readyz").0, 200);
    let (status, landing) = daemon.get("/");
    assert_eq!(status, 200);
    assert!(
        landing.contains("main") && landing.contains(&nginx.url()),
        "{landing}"
    );

    // The database is private to its owner.
    let db = daemon.db_path();
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "database mode {mode:o}");

    // A broken config on SIGHUP is refused and the running one kept.
    let good = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        good.replace("poll_interval = \"10s\"", "poll_intervall = \"10s\""),
    )
    .unwrap();
    daemon.proc.signal("HUP");
    wait_until(|| {
        metric(
            &daemon.get("/metrics").1,
            "regwatch_config_last_reload_successful",
        ) == Some(0.0)
    });
    assert!(daemon.get("/").1.contains("main"));
    assert!(
        daemon
            .proc
            .stderr()
            .contains("unknown key `poll_intervall`; did you mean `poll_interval`?")
    );

    // A good one is applied.
    std::fs::write(
        daemon.config_path(),
        good.replace("name = \"main\"", "name = \"renamed\""),
    )
    .unwrap();
    daemon.proc.signal("HUP");
    wait_until(|| {
        metric(
            &daemon.get("/metrics").1,
            "regwatch_config_last_reload_successful",
        ) == Some(1.0)
    });
    assert!(daemon.get("/").1.contains("renamed"));

    // SIGTERM: exits 0 within 5 s, with every queued write committed.
    daemon.proc.signal("TERM");
    let (status, took) = daemon
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("still running 5 s after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}: {}",
        daemon.proc.stderr()
    );
    assert!(took < Duration::from_secs(5));
    let actions = audit_actions(&db);
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "monitor_start",
            "config_reload",
            "config_reload",
            "monitor_stop"
        ],
        "{actions:?}"
    );
    assert_eq!(actions[1].1.as_deref(), Some("rejected: 1 error(s)"));
    assert_eq!(actions[3].1.as_deref(), Some("stopped by SIGTERM"));

    // Secrets never reach the log, even at trace level.
    let log = daemon.proc.stderr();
    assert!(log.contains("regwatch started"), "{log}");
    for secret in ["alice-pass", "api-token-5b2d"] {
        assert!(!log.contains(secret), "secret {secret} in the log:\n{log}");
    }

    // A restart continues the same database and chain.
    let again = tempfile::Builder::new()
        .prefix("regwatch-daemon-")
        .tempdir()
        .unwrap();
    std::fs::write(again.path().join("token"), "api-token-5b2d\n").unwrap();
    let restarted = Daemon::start_in(
        again,
        &config.replace("{dir}/regwatch.db", &db.display().to_string()),
        &[],
    );
    drop(restarted);
    let conn = Connection::open(&db).unwrap();
    let broken: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_events a JOIN audit_events b ON b.id = a.id + 1 WHERE b.prev_hash != a.hash",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(broken, 0);
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_refuses_a_database_from_a_newer_version_or_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, it is a text file that someone pointed regwatch at\n".repeat(100),
    )
    .unwrap();
    for (db, want) in [
        (&newer, "has schema version 999"),
        (&junk, "is not a SQLite database or is corrupt"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            ConfigBuilder::new("http://127.0.0.1:5000")
                .name("a")
                .listen(&format!("127.0.0.1:{}", free_port()))
                .database(db)
                .build(),
        )
        .unwrap();
        let out = regwatch(&["run", "--config", cfg.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{stderr}");
        assert!(
            stderr.contains(want) && stderr.contains(&db.display().to_string()),
            "{stderr}"
        );
    }
}

#[test]
fn sigint_also_stops_cleanly_and_a_busy_port_is_reported() {
    let dir = tempfile::Builder::new()
        .prefix("regwatch-daemon-")
        .tempdir()
        .unwrap();
    let mut daemon = Daemon::start_in(
        dir,
        &ConfigBuilder::new("http://127.0.0.1:9")
            .name("a")
            .database("{dir}/r.db")
            .build(),
        &[],
    );
    // A second daemon on the same port fails with a message naming the address and key.
    let other = tempfile::tempdir().unwrap();
    let cfg = other.path().join("c.toml");
    std::fs::write(
        &cfg,
        ConfigBuilder::new("http://127.0.0.1:9")
            .name("a")
            .listen(&format!("127.0.0.1:{}", daemon.port))
            .database(other.path().join("r.db"))
            .build(),
    )
    .unwrap();
    let out = regwatch(&["run", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{} (server.listen)",
            daemon.port
        )),
        "{stderr}"
    );

    daemon.proc.signal("INT");
    let (status, _) = daemon
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("still running after SIGINT");
    assert!(status.success());
}
