//! The audit trail end to end: the real registry's notifications, exactly-once delivery
//! across a regwatch restart, the API's refusals, tampering found by `audit verify`,
//! retention, and exports; each on SQLite and on PostgreSQL (`both_backends!`), checked
//! with the backend's own CLI (sqlite3, psql).

use crate::support::*;
use std::process::Command;
use std::time::Duration;

const API_TOKEN: &str = "api-token-0c9e41";
const NOTIFY_TOKEN: &str = "notify-token-7f3a2b";

/// The daemon's config on `db`: the API and notification tokens, a registry at `registry_url`.
fn config(db: &TestDb, registry_url: &str) -> String {
    db.configure(ConfigBuilder::new(registry_url))
        .api_token(API_TOKEN)
        .server("max_body_bytes", 65536)
        .registry("notifications_token", NOTIFY_TOKEN)
        .build()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// The digest the registry serves for `repo:tag` (HEAD with every manifest type accepted).
fn manifest_digest(base: &str, repo: &str, tag: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-I", "-u", "alice:alice-pass", "-H"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .arg(format!("{base}/v2/{repo}/manifests/{tag}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Docker-Content-Digest: ")
                .or_else(|| l.strip_prefix("docker-content-digest: "))
        })
        .map(|d| d.trim().to_string())
        .expect("Docker-Content-Digest header")
}

fn delete_manifest(base: &str, repo: &str, digest: &str) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-u",
            "alice:alice-pass",
        ])
        .arg(format!("{base}/v2/{repo}/manifests/{digest}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202");
}

/// The registry's own count of notification events for its endpoint, and how many wait.
fn registry_notification_counts(registry: &Registry) -> (u64, u64) {
    let (_, vars) = http_get(registry.debug_port, "/debug/vars").unwrap();
    let v: serde_json::Value = serde_json::from_str(&vars).unwrap();
    let m = &v["registry"]["notifications"]["endpoints"][0]["Metrics"];
    (
        m["Events"].as_u64().unwrap(),
        m["Pending"].as_u64().unwrap(),
    )
}

both_backends!(pushes_pulls_and_deletes_through_the_real_registry_become_exact_audit_rows);

fn pushes_pulls_and_deletes_through_the_real_registry_become_exact_audit_rows(backend: Backend) {
    let db = TestDb::start(backend);
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let nginx = Nginx::start(&registry);
    let dir = tempfile::Builder::new()
        .prefix("regwatch-audit-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_on(port, dir, &config(&db, &nginx.url()), &[]);
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
    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(
            &nginx.host(),
            "team/app:1.0",
            BOB,
            &pulled.path().join("app"),
        ),
        "pull",
    );
    let digest = manifest_digest(&nginx.url(), "team/app", "1.0");
    delete_manifest(&nginx.url(), "team/app", &digest);

    wait_until(Duration::from_secs(20), "the delete notifications", || {
        db.count("SELECT count(*) FROM audit_events WHERE action = 'delete'") == 2
    });
    // Every event the registry sent is stored, once.
    wait_until(
        Duration::from_secs(10),
        "the registry's queue to drain",
        || registry_notification_counts(&registry).1 == 0,
    );
    let (sent, _) = registry_notification_counts(&registry);
    // regwatch polls through nginx: the registry notifies it of its own manifest reads too,
    // and those are counted apart, not stored.
    let own = metric(
        &daemon.get("/metrics").1,
        "regwatch_self_requests_total{registry=\"main\",source=\"notification\"}",
    )
    .unwrap() as u64;
    assert_eq!(
        db.count("SELECT count(*) FROM audit_events WHERE source = 'notification'") as u64 + own,
        sent
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT event_id) FROM audit_events WHERE source = 'notification'")
            as u64
            + own,
        sent
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_events WHERE user_agent LIKE 'regwatch/%'"),
        0
    );

    let cols =
        "SELECT actor, repository, tag, digest, remote_addr, method, registry FROM audit_events";
    assert_eq!(
        db.rows(&format!("{cols} WHERE action = 'push' AND tag IS NOT NULL")),
        vec![vec![
            s("alice"),
            s("team/app"),
            s("1.0"),
            Some(digest.clone()),
            s("127.0.0.1"),
            s("PUT"),
            s("main")
        ]]
    );
    assert_eq!(
        db.rows(&format!(
            "{cols} WHERE action = 'pull' AND tag = '1.0' AND method = 'GET'"
        )),
        vec![vec![
            s("bob"),
            s("team/app"),
            s("1.0"),
            Some(digest.clone()),
            s("127.0.0.1"),
            s("GET"),
            s("main")
        ]]
    );
    // Four blobs (config + three layers) pushed by alice and pulled by bob.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE action = 'push' AND media_type = 'application/octet-stream'"
        ),
        4
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE action = 'pull' AND actor = 'bob' AND media_type = 'application/octet-stream'"
        ),
        4
    );
    // A delete by digest is two events of one request: the digest, and the tag it had.
    assert_eq!(
        db.rows("SELECT actor, repository, tag, digest FROM audit_events WHERE action = 'delete' ORDER BY id"
        ),
        vec![
            vec![s("alice"), s("team/app"), None, Some(digest.clone())],
            vec![s("alice"), s("team/app"), s("1.0"), None]
        ]
    );

    // The grouped view reads as what people did.
    let (code, out, err) = regwatch(&[
        "audit",
        "query",
        "--grouped",
        "--config",
        daemon.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().map(|l| l.split_once("  ").unwrap().1).collect();
    let expected = [
        "regwatch started monitoring",
        "alice pushed team/app:1.0 (4 blobs, ",
        "bob pulled team/app:1.0 (4 blobs, ",
        // The test's own `curl -I` for the digest: a manifest HEAD resolves a tag, a pull.
        "alice pulled team/app:1.0 from 127.0.0.1",
        "alice deleted team/app:1.0 from 127.0.0.1",
    ];
    assert_eq!(lines.len(), expected.len(), "{out}");
    for (got, want) in lines.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}, want {want:?}…\n{out}");
    }
    assert!(out.contains("bob pulled team/app:1.0 (4 blobs,"), "{out}");

    // The same through the API, with the token.
    let (status, body) = http(
        "GET",
        daemon.port,
        "/api/v1/audit?view=activities&actor=bob",
        Some(API_TOKEN),
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["activities"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("bob pulled team/app:1.0 (4 blobs"),
        "{body}"
    );
    let (status, csv) = http(
        "GET",
        daemon.port,
        "/api/v1/audit?action=delete",
        Some(API_TOKEN),
        &[("Accept", "text/csv")],
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("id,time,registry,action,"), "{csv}");
}

both_backends!(events_sent_while_regwatch_is_down_arrive_exactly_once_after_it_restarts);

fn events_sent_while_regwatch_is_down_arrive_exactly_once_after_it_restarts(backend: Backend) {
    let db = TestDb::start(backend);
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let dir = tempfile::Builder::new()
        .prefix("regwatch-audit-")
        .tempdir()
        .unwrap();
    let cfg = config(&db, &registry.url());
    let daemon = Daemon::start_on(port, dir, &cfg, &[]);
    let images = Images::build();
    assert_ok(
        &skopeo_push(
            &images.reference("base-1.0"),
            &registry.host(),
            "team/base:1.0",
            ALICE,
        ),
        "push",
    );
    wait_until(Duration::from_secs(10), "first push stored", || {
        db.count("SELECT count(*) FROM audit_events WHERE tag = '1.0' AND action = 'push'") == 1
    });
    let dir = daemon.stop();

    // While regwatch is down the registry keeps the events and retries.
    assert_ok(
        &skopeo_push(
            &images.reference("tool-0.1"),
            &registry.host(),
            "tools/tool:0.1",
            ALICE,
        ),
        "push while down",
    );
    wait_until(
        Duration::from_secs(10),
        "the registry to queue events",
        || registry_notification_counts(&registry).1 > 0,
    );

    let daemon = Daemon::start_on(port, dir, &cfg, &[]);
    wait_until(
        Duration::from_secs(30),
        "the registry's retries to land",
        || registry_notification_counts(&registry).1 == 0,
    );
    let (sent, _) = registry_notification_counts(&registry);
    // regwatch polls through nginx: the registry notifies it of its own manifest reads too,
    // and those are counted apart, not stored.
    let own = metric(
        &daemon.get("/metrics").1,
        "regwatch_self_requests_total{registry=\"main\",source=\"notification\"}",
    )
    .unwrap() as u64;
    assert_eq!(
        db.count("SELECT count(*) FROM audit_events WHERE source = 'notification'") as u64 + own,
        sent
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT event_id) FROM audit_events WHERE source = 'notification'")
            as u64
            + own,
        sent
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_events WHERE user_agent LIKE 'regwatch/%'"),
        0
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE repository = 'tools/tool' AND tag = '0.1' AND action = 'push'"
        ),
        1
    );
    let (code, out, _) = regwatch(&[
        "audit",
        "verify",
        "--config",
        daemon.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
}

/// Posts every sample envelope; returns the number of events stored.
fn post_samples(port: u16) -> usize {
    let samples = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/notifications.ndjson"
    ));
    let mut n = 0;
    for line in samples.lines() {
        let (status, body) = http(
            "POST",
            port,
            "/notifications",
            Some(NOTIFY_TOKEN),
            &[(
                "Content-Type",
                "application/vnd.docker.distribution.events.v1+json",
            )],
            Some(line.as_bytes().to_vec()),
        );
        assert_eq!(status, 200, "{body}");
        n += 1;
    }
    n
}

both_backends!(the_receiver_refuses_bad_requests_and_stores_nothing_from_them);

fn the_receiver_refuses_bad_requests_and_stores_nothing_from_them(backend: Backend) {
    let db = TestDb::start(backend);
    let dir = tempfile::Builder::new()
        .prefix("regwatch-audit-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config(&db, "http://127.0.0.1:9"), &[]);
    let envelope = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/notifications.ndjson"
    ))
    .lines()
    .next()
    .unwrap()
    .as_bytes()
    .to_vec();
    let before = db.count("SELECT count(*) FROM audit_events");

    let (status, body) = http(
        "POST",
        daemon.port,
        "/notifications",
        None,
        &[],
        Some(envelope.clone()),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing bearer token"), "{body}");
    let (status, body) = http(
        "POST",
        daemon.port,
        "/notifications",
        Some("wrong"),
        &[],
        Some(envelope.clone()),
    );
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"invalid token"}"#)
    );
    let (status, _) = http(
        "POST",
        daemon.port,
        "/notifications",
        Some(NOTIFY_TOKEN),
        &[],
        Some(vec![b' '; 70_000]),
    );
    assert_eq!(status, 413);
    let (status, body) = http(
        "POST",
        daemon.port,
        "/notifications",
        Some(NOTIFY_TOKEN),
        &[],
        Some(b"{\"events\": [".to_vec()),
    );
    assert_eq!(status, 400);
    assert!(body.contains("body is not valid JSON"), "{body}");
    let (status, body) = http(
        "POST",
        daemon.port,
        "/notifications",
        Some(NOTIFY_TOKEN),
        &[],
        Some(
            br#"{"events":[{"id":"x","timestamp":"2026-11-28T19:59:33Z","action":"explode"}]}"#
                .to_vec(),
        ),
    );
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"error":"event 0: unknown action \"explode\""}"#)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_events"),
        before,
        "a refused request wrote something: {:?}",
        db.rows("SELECT id, action, source, time FROM audit_events ORDER BY id")
    );

    // The API needs its token too, and the notification token is not it.
    for token in [None, Some("wrong"), Some(NOTIFY_TOKEN)] {
        let (status, _) = http("GET", daemon.port, "/api/v1/audit", token, &[], None);
        assert_eq!(status, 401, "token {token:?}");
    }
    let (status, body) = http(
        "GET",
        daemon.port,
        "/api/v1/audit?since=someday",
        Some(API_TOKEN),
        &[],
        None,
    );
    assert_eq!(status, 400);
    assert!(body.contains("invalid time \\\"someday\\\""), "{body}");

    // A re-delivered envelope is acknowledged and stored once.
    let (status, body) = http(
        "POST",
        daemon.port,
        "/notifications",
        Some(NOTIFY_TOKEN),
        &[],
        Some(envelope.clone()),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"accepted":1,"duplicates":0}"#)
    );
    let (status, body) = http(
        "POST",
        daemon.port,
        "/notifications",
        Some(NOTIFY_TOKEN),
        &[],
        Some(envelope),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"accepted":0,"duplicates":1}"#)
    );
    assert_eq!(db.count("SELECT count(*) FROM audit_events"), before + 1);
}

/// `regwatch audit verify -c CONFIG`: the database the config names, on either backend.
fn verify_config(config: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["audit", "verify", "-c", config.to_str().unwrap()];
    args.extend(extra);
    let (code, out, err) = regwatch(&args);
    (code, format!("{out}{err}"))
}

/// A daemon on `db` that takes the sample notifications.
fn start_on(db: &TestDb) -> Daemon {
    let dir = tempfile::Builder::new()
        .prefix("regwatch-audit-")
        .tempdir()
        .unwrap();
    let config = db
        .configure(ConfigBuilder::new("http://127.0.0.1:9"))
        .api_token(API_TOKEN)
        .server("max_body_bytes", 65536)
        .registry("notifications_token", NOTIFY_TOKEN)
        .build();
    Daemon::start_in(dir, &config, &[])
}

/// A daemon on `db` that the sample notifications were posted to, stopped: 117 rows.
fn sampled(db: &TestDb) -> (tempfile::TempDir, std::path::PathBuf) {
    let daemon = start_on(db);
    post_samples(daemon.port);
    let config = daemon.config_path();
    (daemon.stop(), config)
}

/// CSV text parsed by Python's csv module (not regwatch's writer): rows of fields.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import csv, io, json, sys\nprint(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read())))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, "python3 csv");
    serde_json::from_slice(&out.stdout).unwrap()
}

both_backends!(
    audit_verify_names_edited_deleted_and_inserted_rows,
    retention_keeps_the_rest_of_the_chain_verifiable,
    exports_stream_every_row_in_each_format,
);

fn audit_verify_names_edited_deleted_and_inserted_rows(backend: Backend) {
    let db = TestDb::start(backend);
    let daemon = start_on(&db);
    post_samples(daemon.port);
    // The API pages through everything with its cursor, each row once, in order.
    let mut ids: Vec<i64> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=50&cursor={c}"),
            None => "/api/v1/audit?limit=50".to_string(),
        };
        let (status, body) = http("GET", daemon.port, &path, Some(API_TOKEN), &[], None);
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        ids.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        ids,
        (1..=116).collect::<Vec<i64>>(),
        "pages must cover every row once, in order"
    );
    let (_, head_json) = http(
        "GET",
        daemon.port,
        "/api/v1/audit/head",
        Some(API_TOKEN),
        &[],
        None,
    );
    let head: serde_json::Value = serde_json::from_str(&head_json).unwrap();
    let cfg = daemon.config_path();
    let _dir = daemon.stop();
    let verify = || verify_config(&cfg, &[]);
    let (code, out) = verify();
    assert_eq!(code, 0, "{out}");
    // monitor_start, 115 events, monitor_stop
    assert!(
        out.starts_with("OK: 117 rows, every link intact\nhead "),
        "{out}"
    );
    assert!(
        out.contains(head["head"].as_str().unwrap()) || head["rows"] == 116,
        "{out} vs {head_json}"
    );

    assert_eq!(
        db.tampered("UPDATE audit_events SET actor = 'mallory' WHERE id = 40", verify),
        (1, "BROKEN: row 40 was changed: its contents do not match its stored hash\n(39 rows verified before it)\n".into())
    );

    let (code, out) = db.tampered("DELETE FROM audit_events WHERE id = 50", verify);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("BROKEN: rows are missing between row 49 and row 51"),
        "{out}"
    );

    let (code, out) = db.tampered(
        "UPDATE audit_events SET id = id + 1000 WHERE id > 60; UPDATE audit_events SET id = id - 999 WHERE id > 1000;
         INSERT INTO audit_events (id, time, registry, action, repository, actor, source, prev_hash, hash)
         VALUES (61, '2026-11-28T19:59:40.000000Z', 'main', 'pull', 'team/app', 'alice', 'notification', 'f00d', 'beef');",
        verify,
    );
    assert_eq!(code, 1);
    assert!(
        out.starts_with(
            "BROKEN: row 61 was inserted: it does not link to row 60, and row 62 links past it"
        ),
        "{out}"
    );

    // Rewriting a row together with its hash is caught at the next link.
    let (code, out) = db.tampered(
        "UPDATE audit_events SET hash = 'c0ffee' WHERE id = 70",
        verify,
    );
    assert_eq!(code, 1);
    assert!(out.starts_with("BROKEN: row 70 was changed"), "{out}");

    // The newest rows removed: only a head written down earlier tells.
    let last_hash = db.sql("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1");
    db.tampered("DELETE FROM audit_events WHERE id > 100", || {
        assert_eq!(verify().0, 0, "a shortened chain is still a chain");
        let (code, out) = verify_config(&cfg, &["--expect-head", &last_hash]);
        assert_eq!(code, 1);
        assert!(out.contains("is not in the chain"), "{out}");
    });
    // Put back, the chain verifies again.
    assert_eq!(verify().0, 0);
}

fn retention_keeps_the_rest_of_the_chain_verifiable(backend: Backend) {
    use regwatch::model::event::{Action, Event, Source};
    let db = TestDb::start(backend);
    let base = time::macros::datetime!(2026-01-01 0:00 UTC);
    // Retention goes by when rows were stored: one row received each day.
    let clock = regwatch::model::clock::ManualClock::new(base);
    let writer = db
        .store()
        .start_writer(64, std::sync::Arc::new(clock.clone()), Box::new(|_| {}))
        .unwrap();
    let sink = writer.sink();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for day in 0..30 {
            if day > 0 {
                clock.advance(time::Duration::days(1));
            }
            let mut e = Event::new(
                base + time::Duration::days(day),
                Action::Pull,
                Source::Notification,
            );
            e.actor = Some(format!("user{day}"));
            e.event_id = Some(format!("e{day}"));
            sink.append(e).await.unwrap();
        }
        let deleted = sink.prune(base + time::Duration::days(20)).await.unwrap();
        assert_eq!(deleted, 20);
        // A second pass moves the anchor further.
        assert_eq!(
            sink.prune(base + time::Duration::days(25)).await.unwrap(),
            5
        );
    });
    rt.block_on(writer.close());
    let cfg = db.cli_config();
    let (code, out) = verify_config(&cfg, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: 5 rows, every link intact\n"), "{out}");
    assert!(out.contains("anchored at row 26 (retention removed 25 older rows, up to 2026-01-26T00:00:00.000000Z)"), "{out}");
    // Deleting the first row after the anchor is still noticed.
    db.sql("DELETE FROM audit_events WHERE id = 26");
    let (code, out) = verify_config(&cfg, &[]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("BROKEN: rows are missing between the chain's start and row 27"),
        "{out}"
    );
}

fn exports_stream_every_row_in_each_format(backend: Backend) {
    let db = TestDb::start(backend);
    let (dir, cfg) = sampled(&db);
    let cfg = cfg.to_str().unwrap();

    let csv = dir.path().join("out.csv");
    let (code, _, err) = regwatch(&[
        "audit",
        "export",
        "-c",
        cfg,
        "--format",
        "csv",
        "--output",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.trim(),
        format!("117 events written to {}", csv.display())
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&csv).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Same rows and values as the database's own CLI gives (sqlite3 -csv, psql --csv).
    let ours = std::fs::read_to_string(&csv).unwrap().replace("\r\n", "\n");
    let theirs = db.csv(&format!(
        "SELECT {} FROM audit_events ORDER BY id",
        regwatch::store::COLUMNS.join(", ")
    ));
    assert_eq!(ours.lines().count(), 118);
    // The values, read by Python's csv module (psql quotes only what must be quoted)...
    let (ours_rows, theirs_rows) = (csv_rows(&ours), csv_rows(&theirs));
    for (i, (a, b)) in ours_rows.iter().zip(&theirs_rows).enumerate() {
        assert_eq!(a, b, "row {} differs from the database's CSV", i + 1);
    }
    assert_eq!(ours_rows.len(), theirs_rows.len());
    // ... and on SQLite the very bytes sqlite3 writes.
    if backend == Backend::Sqlite {
        for (i, (a, b)) in ours.lines().zip(theirs.lines()).enumerate() {
            assert_eq!(a, b, "line {} differs from sqlite3 -csv", i + 1);
        }
    }

    let (code, ndjson, _) = regwatch(&[
        "audit", "export", "-c", cfg, "--format", "ndjson", "--action", "delete",
    ]);
    assert_eq!(code, 0);
    assert_eq!(ndjson.lines().count(), 7);
    for l in ndjson.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["action"], "delete");
    }
    let (code, json, _) = regwatch(&[
        "audit",
        "export",
        "-c",
        cfg,
        "--format",
        "json",
        "--actor",
        "bob",
        "--repository",
        "team/*",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert!(
        !arr.is_empty()
            && arr
                .iter()
                .all(|r| r["actor"] == "bob"
                    && r["repository"].as_str().unwrap().starts_with("team/"))
    );
    assert_eq!(
        arr.len() as i64,
        db.count(
            "SELECT count(*) FROM audit_events WHERE actor = 'bob' AND repository LIKE 'team/%'"
        )
    );

    let (code, html, _) = regwatch(&["audit", "export", "-c", cfg, "--format", "html"]);
    assert_eq!(code, 0);
    let head = db.sql("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1");
    for needle in [
        "<h1>Registry audit report</h1>",
        "<h2>Activity over time</h2>",
        "<svg",
        "<h2>By actor</h2>",
        "<h2>Deletions</h2>",
        "<h2>Failed logins</h2>",
        "verified</span>: 117 rows",
        head.as_str(),
        "<p>117 events.</p>",
    ] {
        assert!(html.contains(needle), "HTML report lacks {needle:?}");
    }
    assert!(!html.contains("<script"), "the report must be inert");
}

both_backends!(export_into_a_closed_pipe_exits_zero);

/// `regwatch audit export | head -1`: the reader goes away after one line; regwatch stops
/// writing and exits 0, with nothing on stderr (a broken pipe is not an error).
fn export_into_a_closed_pipe_exits_zero(backend: Backend) {
    use regwatch::model::{Action, Event, Source};
    use std::io::BufRead;
    let db = TestDb::start(backend);
    let writer = db
        .store()
        .start_writer(
            1024,
            std::sync::Arc::new(regwatch::model::clock::SystemClock),
            Box::new(|_| {}),
        )
        .unwrap();
    let sink = writer.sink();
    // Far more than a pipe buffer holds, so the export is still writing when head leaves.
    for i in 0..20_000 {
        let mut e = Event::new(time::OffsetDateTime::now_utc(), Action::Pull, Source::Log);
        e.actor = Some(format!("user{i}"));
        sink.enqueue_blocking(e).unwrap();
    }
    writer.close_blocking();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(["audit", "export", "--format", "csv", "--config"])
        .arg(db.cli_config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("id,time,registry,action"), "{first}");
    // The reader is dropped here: the pipe closes with most of the export unwritten.
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
