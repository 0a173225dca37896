//! Forwarding the audit trail (`[[forward]]`) to a real rsyslog: every row arrives once with
//! its chain hash, a receiver that is down gets the rows it missed in order when it comes
//! back, a dead receiver holds up nobody, and a kill -9 during a catch-up loses nothing.
//! The audit rows come from registry notifications posted to regwatch's receiver, the same
//! path the registry uses.

use crate::support::*;
use rusqlite::Connection;
use std::collections::HashMap;
use std::time::Duration;

const NOTIFY_TOKEN: &str = "notify-token-5e1d7a";

/// The daemon's config: a registry nobody polls successfully (its notifications are the
/// source), then `forwards`.
fn config(forwards: &str) -> String {
    ConfigBuilder::new("http://127.0.0.1:9")
        .server("max_body_bytes", 1_000_000)
        .registry("notifications_token", NOTIFY_TOKEN)
        .registry("poll_interval", "1h")
        .extra(forwards)
        .build()
}

/// Posts one envelope of `n` registry events (`action`, ids `<tag>-<i>`); returns them.
fn post_events(port: u16, tag: &str, action: &str, n: usize) {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("{tag}-{i}"),
                "timestamp": "2026-11-28T19:59:33.405167784Z",
                "action": action,
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 400 + i,
                    "digest": format!("sha256:{:064x}", i),
                    "repository": format!("team/{tag}"),
                    "tag": format!("v{i}"),
                },
                "request": {"id": format!("req-{tag}-{i}"), "addr": "10.0.0.5", "method": "PUT",
                            "useragent": "skopeo \"1.9\" [ci]"},
                "actor": {"name": "alice"},
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap();
    let (status, text) = http(
        "POST",
        port,
        "/notifications",
        Some(NOTIFY_TOKEN),
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.events.v1+json",
        )],
        Some(body),
    );
    assert_eq!(status, 200, "{text}");
}

/// Every stored row: id → (action, hash).
fn stored(db: &std::path::Path) -> Vec<(i64, String, String)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, action, hash FROM audit_events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The received messages of APP-NAME `app`: (row id, hash), in arrival order.
fn received(rsyslog: &Rsyslog, app: &str) -> Vec<(i64, String)> {
    rsyslog
        .raw()
        .iter()
        .filter(|m| m.split(' ').nth(3) == Some(app))
        .map(|m| {
            let id = sd_param(m, "id").unwrap_or_else(|| panic!("no id in {m}"));
            (id.parse().unwrap(), sd_param(m, "hash").unwrap())
        })
        .collect()
}

fn syslog_forward(name: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[[forward]]\nname = \"{name}\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nbatch_size = 7\n{extra}"
    )
}

fn metric_of(daemon: &Daemon, series: &str) -> Option<f64> {
    metric(&daemon.get("/metrics").1, series)
}

#[test]
fn every_row_reaches_rsyslog_once_with_its_hash_and_a_dead_receiver_holds_up_nobody() {
    let rsyslog = Rsyslog::start(SyslogInput::Tcp);
    let dead = free_port();
    let forwards = syslog_forward("siem", rsyslog.port, "")
        + &syslog_forward(
            "deletes",
            rsyslog.port,
            "actions = [\"delete\"]\nrepositories = [\"team/*\"]\napp_name = \"regwatch-deletes\"\n",
        )
        + &syslog_forward("dead", dead, "");
    let daemon = Daemon::start(&config(&forwards));
    post_events(daemon.port, "app", "push", 40);
    post_events(daemon.port, "gone", "delete", 5);
    post_events(daemon.port, "base", "pull", 12);
    let rows = stored(&daemon.db_path());
    assert_eq!(rows.len(), 58, "monitor_start and 57 events");
    wait_until(Duration::from_secs(20), "every row in rsyslog", || {
        received(&rsyslog, "regwatch").len() >= rows.len()
    });
    // Exactly once each, in trail order, with the stored hash.
    let got = received(&rsyslog, "regwatch");
    let want: Vec<(i64, String)> = rows.iter().map(|(id, _, h)| (*id, h.clone())).collect();
    assert_eq!(got, want);
    // rsyslog's own RFC 5424 parser read APP-NAME, MSGID (the action) and our SD-ID.
    let parsed = rsyslog.parsed();
    let actions: HashMap<i64, &str> = rows.iter().map(|(id, a, _)| (*id, a.as_str())).collect();
    for line in parsed.iter().filter(|l| l.starts_with("regwatch ")) {
        let mut parts = line.splitn(3, ' ');
        let (_, msgid, sd) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        assert!(sd.starts_with("[regwatch@32473 id=\""), "{line}");
        let id: i64 = sd_param(sd, "id").unwrap().parse().unwrap();
        assert_eq!(msgid, actions[&id], "{line}");
    }
    // Escaped values come back as they were stored.
    let push = rsyslog
        .raw()
        .into_iter()
        .find(|m| m.contains(" push ["))
        .unwrap();
    assert_eq!(
        sd_param(&push, "user_agent").unwrap(),
        "skopeo \"1.9\" [ci]"
    );
    assert_eq!(sd_param(&push, "actor").unwrap(), "alice");
    // The filtered forwarder sent the deletes only.
    wait_until(Duration::from_secs(10), "the deletes", || {
        received(&rsyslog, "regwatch-deletes").len() >= 5
    });
    let deletes: Vec<(i64, String)> = rows
        .iter()
        .filter(|(_, a, _)| a == "delete")
        .map(|(id, _, h)| (*id, h.clone()))
        .collect();
    assert_eq!(received(&rsyslog, "regwatch-deletes"), deletes);
    // The dead receiver is retried and behind (its lag follows the trail between attempts);
    // the others are at the head.
    wait_until(
        Duration::from_secs(30),
        "errors and the whole trail as lag for the dead receiver",
        || {
            let m = daemon.get("/metrics").1;
            metric(&m, "regwatch_forward_errors_total{forward=\"dead\"}").unwrap_or(0.0) >= 2.0
                && metric(&m, "regwatch_forward_lag_rows{forward=\"dead\"}") == Some(58.0)
        },
    );
    // The dead forwarder measures its lag at each attempt; under load its last attempt may
    // predate the last commits, so wait for one that saw them all.
    wait_until(Duration::from_secs(30), "the dead receiver's lag", || {
        metric_of(&daemon, "regwatch_forward_lag_rows{forward=\"dead\"}") == Some(58.0)
    });
    let m = daemon.get("/metrics").1;
    assert_eq!(
        metric(&m, "regwatch_forward_lag_rows{forward=\"siem\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "regwatch_forward_sent_total{forward=\"siem\"}"),
        Some(58.0)
    );
    assert_eq!(
        metric(&m, "regwatch_forward_sent_total{forward=\"deletes\"}"),
        Some(5.0)
    );
    assert_eq!(
        metric(&m, "regwatch_forward_errors_total{forward=\"siem\"}"),
        Some(0.0)
    );
}

#[test]
fn rows_pushed_while_rsyslog_is_down_arrive_in_order_none_twice() {
    let mut rsyslog = Rsyslog::start(SyslogInput::Tcp);
    let daemon = Daemon::start(&config(&syslog_forward("siem", rsyslog.port, "")));
    post_events(daemon.port, "before", "push", 10);
    wait_until(Duration::from_secs(20), "the first rows", || {
        received(&rsyslog, "regwatch").len() == 11
    });
    rsyslog.stop();
    post_events(daemon.port, "during", "push", 30);
    post_events(daemon.port, "during2", "delete", 3);
    wait_until(
        Duration::from_secs(20),
        "failed sends while rsyslog is down",
        || {
            metric_of(&daemon, "regwatch_forward_errors_total{forward=\"siem\"}").unwrap_or(0.0)
                >= 1.0
        },
    );
    wait_until(
        Duration::from_secs(20),
        "the lag to show the missed rows",
        || metric_of(&daemon, "regwatch_forward_lag_rows{forward=\"siem\"}") == Some(33.0),
    );
    rsyslog.start_again();
    let rows = stored(&daemon.db_path());
    wait_until(Duration::from_secs(30), "the missed rows", || {
        received(&rsyslog, "regwatch").len() >= rows.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let want: Vec<(i64, String)> = rows.iter().map(|(id, _, h)| (*id, h.clone())).collect();
    assert_eq!(received(&rsyslog, "regwatch"), want, "in order, none twice");
}

#[test]
fn kill_9_during_a_catch_up_loses_nothing() {
    let mut rsyslog = Rsyslog::start(SyslogInput::Tcp);
    rsyslog.stop();
    let forwards =
        syslog_forward("siem", rsyslog.port, "").replace("batch_size = 7", "batch_size = 2");
    let mut daemon = Daemon::start(&config(&forwards));
    for i in 0..20 {
        post_events(daemon.port, &format!("backlog{i}"), "push", 100);
    }
    let rows = stored(&daemon.db_path());
    assert_eq!(rows.len(), 2001);
    rsyslog.start_again();
    wait_until(Duration::from_secs(30), "the catch-up to start", || {
        !received(&rsyslog, "regwatch").is_empty()
    });
    daemon.proc.signal("KILL");
    daemon.proc.wait_exit(Duration::from_secs(10)).unwrap();
    let at_kill = received(&rsyslog, "regwatch").len();
    assert!(
        at_kill < rows.len(),
        "killed during the catch-up ({at_kill} sent)"
    );
    let dir = daemon.dir;
    daemon = Daemon::start_in(dir, &config(&forwards), &[]);
    wait_until(Duration::from_secs(60), "the rest of the catch-up", || {
        let got = received(&rsyslog, "regwatch");
        let ids: std::collections::HashSet<i64> = got.iter().map(|(id, _)| *id).collect();
        stored(&daemon.db_path())
            .iter()
            .all(|(id, _, _)| ids.contains(id))
    });
    let rows = stored(&daemon.db_path());
    let got = received(&rsyslog, "regwatch");
    let hashes: HashMap<i64, &str> = rows.iter().map(|(id, _, h)| (*id, h.as_str())).collect();
    let mut seen = HashMap::new();
    for (id, hash) in &got {
        assert_eq!(hashes[id], hash, "row {id} arrived with its stored hash");
        *seen.entry(*id).or_insert(0) += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 at {at_kill} of {} rows sent: {duplicates} duplicates",
        rows.len()
    );
    // Only the batch in flight when regwatch died can arrive twice.
    assert!(duplicates <= 2, "{duplicates} duplicates");
    assert_eq!(seen.len(), rows.len(), "nothing lost");
}

#[test]
fn tls_to_rsyslog_with_a_test_ca_and_a_client_certificate() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = make_test_ca(ca_dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = make_test_ca(other_dir.path());
    let rsyslog = Rsyslog::start(SyslogInput::Tls(&ca, true));
    let tls = |name: &str, app: &str, ca_file: &std::path::Path, client: bool| {
        let mut extra = format!(
            "transport = \"tls\"\napp_name = \"{app}\"\ntls_ca_file = {}\n",
            ca_file.to_toml()
        );
        if client {
            extra += &format!(
                "tls_cert_file = {}\ntls_key_file = {}\n",
                ca.client_cert().to_toml(),
                ca.client_key().to_toml()
            );
        }
        syslog_forward(name, rsyslog.port, &extra)
    };
    let forwards = tls("siem", "regwatch", &ca.ca(), true)
        + &tls("nocert", "regwatch-nocert", &ca.ca(), false)
        + &tls("wrongca", "regwatch-wrongca", &other_ca.ca(), true);
    let daemon = Daemon::start(&config(&forwards));
    post_events(daemon.port, "tls", "push", 20);
    let rows = stored(&daemon.db_path());
    wait_until(Duration::from_secs(20), "every row over TLS", || {
        received(&rsyslog, "regwatch").len() >= rows.len()
    });
    let want: Vec<(i64, String)> = rows.iter().map(|(id, _, h)| (*id, h.clone())).collect();
    assert_eq!(received(&rsyslog, "regwatch"), want);
    // Without a client certificate rsyslog refuses the session; with a server certificate
    // from another CA regwatch refuses it. Neither counts anything as sent.
    for name in ["nocert", "wrongca"] {
        let errors = format!("regwatch_forward_errors_total{{forward=\"{name}\"}}");
        wait_until(Duration::from_secs(10), &errors, || {
            metric_of(&daemon, &errors).unwrap_or(0.0) >= 2.0
        });
        let sent = format!("regwatch_forward_sent_total{{forward=\"{name}\"}}");
        assert_eq!(metric_of(&daemon, &sent), Some(0.0));
        let lag = format!("regwatch_forward_lag_rows{{forward=\"{name}\"}}");
        assert_eq!(metric_of(&daemon, &lag), Some(rows.len() as f64));
    }
    assert!(received(&rsyslog, "regwatch-nocert").is_empty());
    assert!(received(&rsyslog, "regwatch-wrongca").is_empty());
    let log = std::fs::read_to_string(daemon.dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("closed the TLS session after the handshake"),
        "{log}"
    );
}

#[test]
fn cloudevents_batches_pass_the_sdk_and_a_failing_receiver_gets_everything_once() {
    const SECRET: &str = "ce-secret-41d0";
    let receiver = CloudEventsReceiver::start(Some(SECRET));
    let forwards = format!(
        "\n[[forward]]\nname = \"ce\"\nkind = \"cloudevents\"\nurl = {}\nsource = \"/regwatch/test\"\nsecret = {}\nbatch_size = 10\n",
        receiver.url().to_toml(),
        SECRET.to_toml()
    );
    let daemon = Daemon::start(&config(&forwards));
    post_events(daemon.port, "ce", "push", 25);
    let rows = stored(&daemon.db_path());
    wait_until(Duration::from_secs(20), "every row as a CloudEvent", || {
        receiver.events().len() >= rows.len()
    });
    assert_eq!(receiver.refused(), "", "{}", receiver.stderr());
    let events = receiver.events();
    for (e, (id, action, hash)) in events.iter().zip(&rows) {
        assert_eq!(e["id"], format!("{id}-{}", &hash[..16]));
        assert_eq!(e["type"], format!("dev.regwatch.audit.{action}"));
        assert_eq!(e["source"], "/regwatch/test");
        assert_eq!(e["data"]["id"], *id);
        assert_eq!(e["data"]["hash"], hash.as_str());
    }
    assert_eq!(events[1]["subject"], "team/ce");
    assert_eq!(events[1]["time"], "2026-11-28T19:59:33.405167+00:00");

    receiver.set_failing(true);
    post_events(daemon.port, "down", "delete", 15);
    wait_until(Duration::from_secs(20), "refused batches", || {
        metric_of(&daemon, "regwatch_forward_errors_total{forward=\"ce\"}").unwrap_or(0.0) >= 2.0
    });
    receiver.set_failing(false);
    let rows = stored(&daemon.db_path());
    wait_until(Duration::from_secs(30), "the missed rows", || {
        receiver.events().len() >= rows.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<String> = receiver
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = rows
        .iter()
        .map(|(id, _, hash)| format!("{id}-{}", &hash[..16]))
        .collect();
    assert_eq!(got, want, "in order, none twice");
    assert_eq!(
        metric_of(&daemon, "regwatch_forward_sent_total{forward=\"ce\"}"),
        Some(rows.len() as f64)
    );
}

/// Harbor's audit log forwarding lines (Go log/syslog around Harbor's text logger, built
/// from Harbor's formatter: 2.13 lines with resourceType, one older line without).
const HARBOR_LINES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/harbor-audit-forward.log"
));

#[test]
fn harbor_audit_lines_over_tcp_become_rows_that_are_forwarded_too() {
    use std::io::Write;
    let rsyslog = Rsyslog::start(SyslogInput::Tcp);
    let harbor_port = free_port();
    let extra = format!(
        "\n[[listen]]\nkind = \"harbor_syslog\"\naddress = \"127.0.0.1:{harbor_port}\"\nregistry = \"main\"\nmax_line_bytes = 4096\n{}",
        syslog_forward(
            "siem",
            rsyslog.port,
            "actions = [\"push\", \"pull\", \"delete\", \"auth_failure\"]\n"
        )
    );
    let daemon = Daemon::start(&config(&extra));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", harbor_port)).unwrap();
    let mut lines: Vec<&str> = HARBOR_LINES.lines().collect();
    let long = format!("<6>2026-12-01T09:40:00Z h audit[1]: {}", "x".repeat(10_000));
    lines.insert(3, "this is not syslog");
    lines.insert(4, &long);
    for line in &lines {
        conn.write_all(line.as_bytes()).unwrap();
        conn.write_all(b"\n").unwrap();
    }
    drop(conn);
    let db = daemon.db_path();
    let query = "SELECT time, action, repository, tag, digest, actor, registry, source, remote_addr FROM audit_events WHERE source = 'log' ORDER BY id";
    wait_until(Duration::from_secs(10), "the Harbor rows", || {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM audit_events WHERE source = 'log'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            >= 6
    });
    let conn = Connection::open(&db).unwrap();
    let mut stmt = conn.prepare(query).unwrap();
    let got: Vec<Vec<Option<String>>> = stmt
        .query_map([], |r| {
            (0..9).map(|i| r.get::<_, Option<String>>(i)).collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let want: Vec<Vec<Option<String>>> = [
        [
            "2026-12-01T09:14:02.118734Z",
            "push",
            "library/app",
            "1.4.2",
            "",
            "alice",
        ],
        [
            "2026-12-01T09:14:09.550012Z",
            "pull",
            "library/app",
            "1.4.2",
            "",
            "ci-bot",
        ],
        [
            "2026-12-01T09:15:31.002000Z",
            "pull",
            "library/app",
            "",
            "sha256:5b1c6e0f3d2a4b8c9e7f6a5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291",
            "robot$deploy",
        ],
        [
            "2026-12-01T09:21:44.900000Z",
            "auth_failure",
            "",
            "",
            "",
            "mallory",
        ],
        [
            "2026-12-01T09:30:12.400000Z",
            "delete",
            "library/app",
            "1.4.1",
            "",
            "alice",
        ],
        [
            "2026-12-01T09:31:00.250000Z",
            "pull",
            "legacy/tool",
            "latest",
            "",
            "bob",
        ],
    ]
    .iter()
    .map(|r| {
        let mut row: Vec<Option<String>> = r.iter().map(|v| s(v)).collect();
        row.extend([s("main"), s("log"), s("127.0.0.1")]);
        row
    })
    .collect();
    assert_eq!(got, want);
    let stderr = std::fs::read_to_string(daemon.dir.path().join("stderr.log")).unwrap();
    assert!(stderr.contains("line not understood"), "{stderr}");
    assert!(stderr.contains("line too long"), "{stderr}");
    // The same trail, so the same forwarding: the Harbor rows reach rsyslog with their hashes.
    wait_until(
        Duration::from_secs(10),
        "the Harbor rows in rsyslog",
        || received(&rsyslog, "regwatch").len() >= 6,
    );
    let hashes: Vec<String> = conn
        .prepare("SELECT hash FROM audit_events WHERE source = 'log' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let forwarded: Vec<String> = received(&rsyslog, "regwatch")
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    assert_eq!(forwarded, hashes);
    let (code, out, _) = regwatch(&["audit", "verify", "--database", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_names_each_forward_and_listen_mistake_at_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regwatch.toml");
    // Written literally: the line numbers are what this test asserts.
    std::fs::write(
        &path,
        "[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:9\"\n\n\
         [[forward]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"siem.example.com:6514\"\ntransport = \"udp\"\n\n\
         [[forward]]\nname = \"lake\"\nkind = \"cloudevents\"\nurl = \"ftp://lake\"\nfacility = \"auth\"\n\n\
         [[listen]]\nkind = \"harbor_syslog\"\naddress = \"127.0.0.1:1514\"\nregistry = \"harbor\"\n",
    )
    .unwrap();
    let (code, out, err) = regwatch(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}{err}");
    let file = path.display().to_string();
    for want in [
        format!("{file}:9:1: forward[0].transport: expected \"tcp\" or \"tls\", not \"udp\""),
        format!(
            "{file}:14:1: forward[1].url: expected an http:// or https:// URL, not \"ftp://lake\""
        ),
        format!("{file}:15:1: forward[1].facility: facility is not used by cloudevents forwarders"),
        format!("{file}:20:1: listen[0].registry: no [[registry]] is named \"harbor\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn a_clean_stop_during_a_catch_up_sends_nothing_twice() {
    let mut rsyslog = Rsyslog::start(SyslogInput::Tcp);
    rsyslog.stop();
    let forwards =
        syslog_forward("siem", rsyslog.port, "").replace("batch_size = 7", "batch_size = 2");
    let daemon = Daemon::start(&config(&forwards));
    for i in 0..20 {
        post_events(daemon.port, &format!("stop{i}"), "push", 100);
    }
    rsyslog.start_again();
    wait_until(Duration::from_secs(30), "the catch-up to start", || {
        !received(&rsyslog, "regwatch").is_empty()
    });
    let dir = daemon.stop();
    let at_stop = received(&rsyslog, "regwatch").len();
    let daemon = Daemon::start_in(dir, &config(&forwards), &[]);
    assert!(
        at_stop < 2000,
        "stopped during the catch-up ({at_stop} sent)"
    );
    // The restart's own monitor_start is queued, not necessarily committed, at /readyz:
    // compare with the trail as it is once everything arrived.
    wait_until(Duration::from_secs(60), "the rest of the catch-up", || {
        received(&rsyslog, "regwatch").len() >= stored(&daemon.db_path()).len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let rows = stored(&daemon.db_path());
    let want: Vec<(i64, String)> = rows.iter().map(|(id, _, h)| (*id, h.clone())).collect();
    assert_eq!(
        received(&rsyslog, "regwatch"),
        want,
        "every row once, in order"
    );
}
