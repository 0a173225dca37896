//! PostgreSQL as the shared store of several agents, against a real PostgreSQL 15: one
//! chain however many writers append to it, each event stored once, every read command on
//! a PostgreSQL database, the password never shown.

use crate::support::*;
use regwatch::model::clock::SystemClock;
use regwatch::model::event::{Action, Event, Source};
use regwatch::store::{PgTarget, Store, Verdict, Writer};
use std::sync::Arc;
use std::time::Duration;

fn store(pg: &Postgres, agent: &str) -> Store {
    let url = regwatch::config::secret::Secret::new(pg.url());
    Store::postgres(PgTarget::parse(url).unwrap()).with_agent(agent)
}

fn writer(store: &Store) -> Writer {
    store
        .start_writer(1024, Arc::new(SystemClock), Box::new(|_| {}))
        .unwrap()
}

fn event(i: usize) -> Event {
    let mut e = Event::new(
        time::OffsetDateTime::now_utc(),
        Action::Push,
        Source::Notification,
    );
    e.event_id = Some(format!("ev-{i}"));
    e.repository = Some(format!("team/app{}", i % 7));
    e.actor = Some("alice".into());
    e.size = Some(i as u64);
    e
}

/// Both agents receive every event (the registry notifies both), from several senders each:
/// each event is stored once, by whichever agent committed it first, in one chain. Each also
/// gets 100 events only it is sent (a replica notifying only it), so both write into the
/// chain however the race for the shared ones goes.
#[test]
fn two_agents_append_one_chain_and_store_each_event_once() {
    let pg = Postgres::start();
    let (a, b) = (store(&pg, "agent-a"), store(&pg, "agent-b"));
    let (wa, wb) = (writer(&a), writer(&b));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const SHARED: usize = 2000;
    const OWN: usize = 100;
    const EVENTS: usize = SHARED + 2 * OWN;
    let new: usize = rt.block_on(async {
        let mut tasks = Vec::new();
        for (k, sink) in [wa.sink(), wb.sink()].into_iter().enumerate() {
            let own = SHARED + k * OWN..SHARED + (k + 1) * OWN;
            let ranges = (0..4)
                .map(|sender| sender * 500..(sender + 1) * 500)
                .chain([own]);
            for range in ranges {
                let sink = sink.clone();
                tasks.push(tokio::spawn(async move {
                    let mut new = 0;
                    for chunk in range.collect::<Vec<_>>().chunks(10) {
                        let events = chunk.iter().map(|i| event(*i)).collect();
                        new += sink.append_all(events).await.unwrap();
                    }
                    new
                }));
            }
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    wa.close_blocking();
    wb.close_blocking();
    assert_eq!(new, EVENTS, "each event reported new exactly once");
    assert_eq!(pg.count("SELECT count(*) FROM audit_events"), EVENTS as i64);
    assert_eq!(
        pg.count("SELECT count(DISTINCT event_id) FROM audit_events"),
        EVENTS as i64
    );
    // Ids are contiguous and every row links to the one before it (psql, not regwatch).
    assert_eq!(
        pg.count("SELECT max(id) - min(id) + 1 FROM audit_events"),
        EVENTS as i64
    );
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM audit_events a JOIN audit_events b ON b.id = a.id + 1
             WHERE b.prev_hash <> a.hash"
        ),
        0
    );
    let agents = pg.psql("SELECT string_agg(DISTINCT agent, ',' ORDER BY agent) FROM audit_events");
    assert_eq!(agents, "agent-a,agent-b", "both agents stored rows");
    let verdict = a.reader().unwrap().verify(None).unwrap();
    assert!(
        matches!(verdict, Verdict::Ok { rows, .. } if rows == EVENTS as u64),
        "{verdict:?}"
    );
}

/// `audit query`, `export` and `verify` read a PostgreSQL database named by `url_file`;
/// the password is in no output; a tampered row is named; a newer schema is refused.
#[test]
fn audit_commands_read_postgres_and_never_show_the_password() {
    let pg = Postgres::start();
    let w = writer(&store(&pg, "agent-a"));
    for i in 0..50 {
        w.sink().enqueue_blocking(event(i)).unwrap();
    }
    w.close_blocking();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("db-url");
    std::fs::write(&url_file, format!("{}\n", pg.url())).unwrap();
    let config = dir.path().join("regwatch.toml");
    std::fs::write(
        &config,
        ConfigBuilder::new("http://127.0.0.1:1")
            .postgres(&url_file)
            .extra(
                "[[report]]\nname = \"weekly\"\nschedule = \"0 6 * * MON\"\nformat = \"ndjson\"\noutput = \"{dir}/weekly-{date}.ndjson\"\n",
            )
            .build()
            .replace("{port}", "1")
            .replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = regwatch(args);
        assert!(
            !out.contains(PG_PASSWORD) && !err.contains(PG_PASSWORD),
            "{out}{err}"
        );
        (code, out, err)
    };

    let (code, out, err) = run(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("50 rows"), "{out}");

    let (code, out, err) = run(&[
        "audit",
        "export",
        "-c",
        cfg,
        "--repository",
        "team/app3",
        "--format",
        "ndjson",
    ]);
    assert_eq!(code, 0, "{err}");
    let expected = pg.count("SELECT count(*) FROM audit_events WHERE repository = 'team/app3'");
    assert!(expected > 0);
    assert_eq!(out.lines().count() as i64, expected, "{out}");
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["repository"], "team/app3", "{l}");
    }

    let (code, out, err) = run(&["audit", "query", "-c", cfg, "--actor", "alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("team/app3"), "{out}");

    let (code, out, err) = run(&["audit", "export", "-c", cfg, "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 51, "a header and 50 rows");

    // `report run` writes the report from PostgreSQL, with the chain head psql sees.
    let (code, out, err) = run(&["report", "run", "weekly", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let head = pg.psql("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1");
    assert!(
        out.contains(&format!("(50 events, chain head {head})")),
        "{out}"
    );
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.display().to_string().contains("weekly-"))
        .collect();
    assert_eq!(written.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&written[0])
            .unwrap()
            .lines()
            .count(),
        50
    );

    pg.psql("UPDATE audit_events SET actor = 'mallory' WHERE id = 17");
    let (code, out, err) = run(&["audit", "verify", "-c", cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("row 17 was changed"), "{out}");

    pg.psql("UPDATE regwatch_schema SET version = 99");
    let (code, out, err) = run(&["audit", "verify", "-c", cfg]);
    assert_ne!(code, 0);
    assert!(
        err.contains("schema version 99") && err.contains("newer regwatch"),
        "{out}{err}"
    );
    assert!(err.contains("postgres://regwatch@127.0.0.1"), "{err}");
}

const API_TOKEN: &str = "api-token-5be01c";
const NOTIFY_TOKEN: &str = "notify-token-91d2aa";

/// A file holding the database URL (with its password), for `url_file`.
fn url_file(pg: &Postgres) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db-url"), format!("{}\n", pg.url())).unwrap();
    dir
}

/// One agent's config: the same for every agent but its name (and, filled in by the
/// harness, its port and directory).
fn agent_config(registry: &Registry, url_dir: &tempfile::TempDir, agent: &str) -> String {
    ConfigBuilder::new(&format!("http://127.0.0.1:{}", registry.port))
        .api_token(API_TOKEN)
        .login(ALICE)
        .server("agent", agent)
        .registry("notifications_token", NOTIFY_TOKEN)
        .postgres(url_dir.path().join("db-url"))
        .build()
}

/// The registry's own counters for its `endpoint`-th notification endpoint: events it
/// queued, events still waiting, and deliveries answered 503.
fn endpoint_counts(registry: &Registry, endpoint: usize) -> (u64, u64, u64) {
    let (_, vars) = http_get(registry.debug_port, "/debug/vars").unwrap();
    let v: serde_json::Value = serde_json::from_str(&vars).unwrap();
    let m = &v["registry"]["notifications"]["endpoints"][endpoint]["Metrics"];
    (
        m["Events"].as_u64().unwrap(),
        m["Pending"].as_u64().unwrap(),
        m["Statuses"]["503 Service Unavailable"]
            .as_u64()
            .unwrap_or(0),
    )
}

fn push(images: &Images, registry: &Registry, tag: &str) {
    assert_ok(
        &skopeo_push(
            &images.reference("app-1.0"),
            &format!("127.0.0.1:{}", registry.port),
            &format!("team/app:{tag}"),
            ALICE,
        ),
        "push",
    );
}

fn notification_rows(pg: &Postgres) -> i64 {
    pg.count("SELECT count(*) FROM audit_events WHERE source = 'notification'")
}

/// Events of regwatch's own poller requests that `agent` accepted and, by design, did not
/// store (every agent is notified of every event, so one agent's count is all of them).
fn own_notifications(agent: &Daemon) -> i64 {
    let (_, m) = http_get(agent.port, "/metrics").unwrap();
    metric(
        &m,
        "regwatch_self_requests_total{registry=\"main\",source=\"notification\"}",
    )
    .unwrap_or(0.0) as i64
}

/// Waits until the registry's queue for `endpoint` is empty and every event it sent is
/// accounted for: stored, or regwatch's own request (counted, not stored). Read together
/// until they agree, as a poll may add an event of its own between two readings; an event
/// stored twice never agrees. Returns the registry's count.
fn all_sent_stored_once(
    registry: &Registry,
    endpoint: usize,
    pg: &Postgres,
    agent: &Daemon,
) -> u64 {
    let mut last = (0, 0, 0);
    let mut sent = 0;
    let agreed = (0..400).any(|_| {
        let own = own_notifications(agent);
        let (events, pending, _) = endpoint_counts(registry, endpoint);
        let rows = notification_rows(pg);
        sent = events;
        last = (events, rows, own);
        if pending == 0 && rows + own == events as i64 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        agreed,
        "the registry sent {} events, regwatch stored {} and counted {} of its own",
        last.0, last.1, last.2
    );
    sent
}

fn verify_ok(dir: &Daemon) {
    let (code, out, err) =
        regwatch(&["audit", "verify", "-c", dir.config_path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A registry notifies two agents of every event: each event is stored once (counted
/// against the registry's own counters for both endpoints), in one chain.
#[test]
fn two_agents_notified_by_one_registry_store_each_event_once() {
    let pg = Postgres::start();
    let urls = url_file(&pg);
    let (pa, pb) = (free_port(), free_port());
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{pa}/notifications")),
        notify_also: vec![format!("http://127.0.0.1:{pb}/notifications")],
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let a = Daemon::start_on(
        pa,
        tempfile::tempdir().unwrap(),
        &agent_config(&registry, &urls, "agent-a"),
        &[],
    );
    let b = Daemon::start_on(
        pb,
        tempfile::tempdir().unwrap(),
        &agent_config(&registry, &urls, "agent-b"),
        &[],
    );
    let images = Images::build();
    for tag in ["1.0", "1.1", "1.2"] {
        push(&images, &registry, tag);
    }
    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(
            &format!("127.0.0.1:{}", registry.port),
            "team/app:1.1",
            BOB,
            &pulled.path().join("app"),
        ),
        "pull",
    );
    wait_until(Duration::from_secs(30), "both endpoints to drain", || {
        endpoint_counts(&registry, 0).1 == 0 && endpoint_counts(&registry, 1).1 == 0
    });
    let (sent_a, _, _) = endpoint_counts(&registry, 0);
    let (sent_b, _, _) = endpoint_counts(&registry, 1);
    assert_eq!(
        sent_a, sent_b,
        "the registry sends every event to both agents"
    );
    assert!(sent_a >= 8, "pushes and a pull: {sent_a} events");
    assert_eq!(
        notification_rows(&pg),
        sent_a as i64,
        "each event stored once"
    );
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM (SELECT event_id FROM audit_events WHERE event_id IS NOT NULL
             GROUP BY source, event_id HAVING count(*) > 1) d"
        ),
        0
    );
    let agents = pg.psql(
        "SELECT string_agg(DISTINCT agent, ',' ORDER BY agent) FROM audit_events
         WHERE source = 'notification'",
    );
    assert!(
        agents.split(',').all(|a| a == "agent-a" || a == "agent-b"),
        "{agents}"
    );
    verify_ok(&a);
    drop(b);
}

/// How long PostgreSQL stays down under traffic (the issue's figure).
const OUTAGE: Duration = Duration::from_secs(30);

/// Failed logins through nginx, each with a user name of its own (`eve-{n}` from
/// `first`), so every access-log line has exactly one audit row to look for.
fn failed_logins(nginx: &Nginx, first: usize, n: usize) {
    for i in first..first + n {
        let status = curl_status(&[
            "-u",
            &format!("eve-{i}:wrong"),
            &format!("{}/v2/", nginx.url()),
        ]);
        assert_eq!(status, "401", "nginx refuses eve-{i}");
    }
}

/// The failed-login rows, and how many distinct users they name.
fn failed_login_rows(pg: &Postgres) -> (i64, i64) {
    let sql = "FROM audit_events WHERE action = 'auth_failure' AND source = 'log'";
    (
        pg.count(&format!("SELECT count(*) {sql}")),
        pg.count(&format!("SELECT count(DISTINCT actor) {sql}")),
    )
}

/// The agent tails nginx's access log, through which the registry is pushed to and
/// logins fail; the registry notifies the agent.
fn outage_config(registry: &Registry, nginx: &Nginx, urls: &tempfile::TempDir) -> String {
    ConfigBuilder::new(&format!("http://127.0.0.1:{}", registry.port))
        .api_token(API_TOKEN)
        .login(ALICE)
        .server("agent", "agent-a")
        .registry("notifications_token", NOTIFY_TOKEN)
        .postgres(urls.path().join("db-url"))
        .extra(&format!(
            "[[log]]\nname = \"nginx-access\"\nregistry = \"main\"\npath = \"{}\"\nformat = \"nginx_combined\"\nstart_at = \"beginning\"\n",
            nginx.access_log().display()
        ))
        .build()
}

/// PostgreSQL stops for 30 s while images are pushed through nginx and logins fail: the
/// agent stays up, unready, and answers the registry's notifications 503; once the server
/// is back the registry re-delivers, the log tailer goes on from its held batch and
/// checkpoint, and every event the registry sent and every failed login nginx logged is
/// stored exactly once. A restart afterwards re-reads nothing (the checkpoint committed
/// with the rows); the chain verifies; nothing panicked.
#[test]
fn database_down_for_30s_under_traffic_loses_and_doubles_nothing() {
    let pg = Postgres::start();
    let urls = url_file(&pg);
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let nginx = Nginx::start(&registry);
    let config = outage_config(&registry, &nginx, &urls);
    let mut agent = Daemon::start_on(port, tempfile::tempdir().unwrap(), &config, &[]);
    let images = Images::build();
    let push = |tag: &str| {
        assert_ok(
            &skopeo_push(
                &images.reference("app-1.0"),
                &nginx.host(),
                &format!("team/app:{tag}"),
                ALICE,
            ),
            "push",
        )
    };
    push("1.0");
    failed_logins(&nginx, 0, 3);
    wait_until(
        Duration::from_secs(20),
        "the first push and logins stored",
        || {
            endpoint_counts(&registry, 0).1 == 0
                && notification_rows(&pg) > 0
                && failed_login_rows(&pg).0 == 3
        },
    );
    let before = notification_rows(&pg);

    pg.stop();
    let down = std::time::Instant::now();
    let mut tags = 0;
    let mut logins = 3;
    while down.elapsed() < OUTAGE {
        push(&format!("2.{tags}"));
        tags += 1;
        failed_logins(&nginx, logins, 5);
        logins += 5;
        std::thread::sleep(Duration::from_secs(2));
    }
    // Down all along: refused to the registry, not ready, reported down, still running.
    let (_, _, refused) = endpoint_counts(&registry, 0);
    assert!(refused > 0, "the agent answered the registry 503");
    assert!(
        endpoint_counts(&registry, 0).1 > 0,
        "the registry holds the events"
    );
    assert_waits_for_its_database(&agent);
    assert!(agent.proc.is_running(), "{}", agent.proc.stderr());
    pg.start_server();

    wait_until(
        Duration::from_secs(20),
        "the agent to be ready again",
        || agent.get("/readyz").0 == 200,
    );
    wait_until(
        Duration::from_secs(60),
        "the registry's queue to drain",
        || endpoint_counts(&registry, 0).1 == 0,
    );
    let nginx_logins = tally(&nginx.access_log()).counts.failed_logins as i64;
    assert_eq!(
        nginx_logins, logins as i64,
        "nginx logged every failed login"
    );
    wait_until(Duration::from_secs(20), "every failed login stored", || {
        failed_login_rows(&pg).0 >= nginx_logins
    });
    let check = |agent: &Daemon| {
        all_sent_stored_once(&registry, 0, &pg, agent);
        assert_eq!(
            pg.count(
                "SELECT count(*) FROM (SELECT event_id FROM audit_events WHERE event_id IS NOT NULL
                 GROUP BY source, event_id HAVING count(*) > 1) d"
            ),
            0,
            "no event id twice"
        );
        assert_eq!(
            failed_login_rows(&pg),
            (nginx_logins, nginx_logins),
            "every failed login once"
        );
    };
    check(&agent);
    assert!(notification_rows(&pg) > before);
    assert!(
        pg.count("SELECT count(*) FROM audit_events WHERE action = 'push' AND tag LIKE '2.%'")
            >= tags,
        "every tag pushed while the database was down"
    );
    // Restarted, the tailer resumes from the checkpoint stored after the outage: no line
    // is read twice.
    let traffic_rows = "SELECT count(*) FROM audit_events WHERE source IN ('notification', 'log')";
    let rows = pg.count(traffic_rows);
    let stderr = agent.proc.stderr();
    let dir = agent.stop();
    let agent = Daemon::start_on(port, dir, &config, &[]);
    wait_until(Duration::from_secs(10), "the tailer to catch up", || {
        let (_, m) = agent.get("/metrics");
        metric(&m, "regwatch_log_lag_bytes{log=\"nginx-access\"}") == Some(0.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        failed_login_rows(&pg),
        (nginx_logins, nginx_logins),
        "nothing re-read after the restart"
    );
    assert_eq!(
        pg.count(traffic_rows),
        rows,
        "nothing stored twice after the restart"
    );
    verify_ok(&agent);
    for text in [stderr, agent.proc.stderr()] {
        assert!(!text.contains("panicked"), "{text}");
        assert!(!text.contains(PG_PASSWORD), "{text}");
    }
}

/// An agent started while its PostgreSQL is down does not exit: it answers /healthz, is
/// not ready (database unreachable, `regwatch_database_up 0`) and answers the registry's
/// notifications 503; when the server comes up it migrates the empty database, becomes
/// ready and stores every event the registry re-delivers, once. Its log says what it
/// waits for, without the password. A database written by a newer regwatch is still
/// refused, also when it comes up only after the agent started.
#[test]
fn an_agent_started_before_its_database_waits_for_it_then_stores() {
    let pg = Postgres::start();
    let urls = url_file(&pg);
    pg.stop();
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let config = agent_config(&registry, &urls, "agent-a");
    let mut agent = Daemon::launch_on(port, tempfile::tempdir().unwrap(), &config, &[]);
    assert_eq!(agent.get("/healthz"), (200, "ok\n".to_string()));
    assert_waits_for_its_database(&agent);
    let images = Images::build();
    push(&images, &registry, "1.0");
    wait_until(Duration::from_secs(20), "the agent to answer 503", || {
        endpoint_counts(&registry, 0).2 > 0
    });
    assert!(agent.proc.is_running(), "{}", agent.proc.stderr());
    assert!(
        endpoint_counts(&registry, 0).1 > 0,
        "the registry holds the events"
    );

    pg.start_server();
    agent.wait_ready();
    wait_until(Duration::from_secs(5), "regwatch_database_up 1", || {
        metric(&agent.get("/metrics").1, "regwatch_database_up") == Some(1.0)
    });
    assert_eq!(
        pg.count("SELECT count(*) FROM regwatch_schema"),
        1,
        "migrated"
    );
    wait_until(
        Duration::from_secs(30),
        "the registry's queue to drain",
        || endpoint_counts(&registry, 0).1 == 0,
    );
    let sent = all_sent_stored_once(&registry, 0, &pg, &agent);
    assert!(sent >= 4, "a push: {sent} events");
    assert_eq!(
        pg.count("SELECT count(*) FROM audit_events WHERE action = 'monitor_start'"),
        1
    );
    let log = agent.proc.stderr();
    assert!(log.contains("database unreachable"), "{log}");
    assert!(log.contains("database reachable; starting"), "{log}");
    assert!(
        !log.contains(PG_PASSWORD) && !log.contains("panicked"),
        "{log}"
    );
    verify_ok(&agent);

    // A newer regwatch's database, coming up after the agent started: refused, exit 65.
    let dir = agent.stop();
    pg.psql("UPDATE regwatch_schema SET version = 99");
    pg.stop();
    let mut agent = Daemon::launch_on(port, dir, &config, &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.proc.is_running(), "{}", agent.proc.stderr());
    pg.start_server();
    let (status, _) = agent
        .proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running:\n{}", agent.proc.stderr()));
    let log = agent.proc.stderr();
    assert_eq!(status.code(), Some(65), "{log}");
    assert!(
        log.contains("schema version 99") && log.contains("newer regwatch"),
        "{log}"
    );
    assert!(log.contains("postgres://regwatch@127.0.0.1"), "{log}");
    assert!(!log.contains(PG_PASSWORD), "{log}");
}

/// A notification in the shared outbox is claimed by one agent at a time: the other's claim
/// gets nothing until the hold runs out (the holder died), then it gets the row.
#[test]
fn an_outbox_row_is_claimed_by_one_agent() {
    use regwatch::store::{AlertUpdate, OutboxClaim, OutboxRow};
    let pg = Postgres::start();
    let (a, b) = (store(&pg, "agent-a"), store(&pg, "agent-b"));
    let (wa, wb) = (writer(&a), writer(&b));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let row = OutboxRow {
            idempotency_key: "k1".into(),
            channel: "mail".into(),
            payload: "{}".into(),
        };
        let update = AlertUpdate {
            states: vec![],
            outbox: vec![row],
        };
        // Both agents decided the same notification: stored once.
        wa.sink().store_alerts(update.clone()).await.unwrap();
        wb.sink().store_alerts(update).await.unwrap();
        assert_eq!(pg.count("SELECT count(*) FROM alert_outbox"), 1);
        let id = pg.count("SELECT id FROM alert_outbox");
        let now = pg.count("SELECT next_attempt_ms FROM alert_outbox") + 1;
        let claim = |now_ms: i64| OutboxClaim {
            channel: "mail".into(),
            ids: vec![id],
            now_ms,
            until_ms: now_ms + 60_000,
        };
        let (sa, sb) = (wa.sink(), wb.sink());
        let (ga, gb) = tokio::join!(sa.claim_outbox(claim(now)), sb.claim_outbox(claim(now)));
        let (ga, gb) = (ga.unwrap(), gb.unwrap());
        assert_eq!(ga.len() + gb.len(), 1, "one agent holds it: {ga:?} {gb:?}");
        assert!(
            wb.sink()
                .claim_outbox(claim(now + 1000))
                .await
                .unwrap()
                .is_empty()
        );
        // The holder never reported back: after the hold, another agent takes it.
        assert_eq!(
            wb.sink().claim_outbox(claim(now + 60_001)).await.unwrap(),
            vec![id]
        );
    });
    wa.close_blocking();
    wb.close_blocking();
}

/// An audit rule on deletes with two agents, both notified of the delete: one mail.
#[test]
fn one_mail_for_one_matching_delete_with_two_agents() {
    let pg = Postgres::start();
    let urls = url_file(&pg);
    let smtp = SmtpSink::start();
    let (pa, pb) = (free_port(), free_port());
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{pa}/notifications")),
        notify_also: vec![format!("http://127.0.0.1:{pb}/notifications")],
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let rules = format!(
        r#"
[[rule]]
name = "team-delete"
kind = "audit_match"
filter = {{ action = "delete", repository = "team/*" }}
window = "30s"
channels = ["mail"]

[[channel]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "regwatch@example.test"
to = ["oncall@example.test"]
subject = "[regwatch] {{{{ status }}}}: {{{{ rule }}}}"
timeout = "2s"
"#,
        smtp.port
    );
    let config = |agent| {
        ConfigBuilder::new(&format!("http://127.0.0.1:{}", registry.port))
            .api_token(API_TOKEN)
            .login(ALICE)
            .server("agent", agent)
            .registry("notifications_token", NOTIFY_TOKEN)
            .postgres(urls.path().join("db-url"))
            .extra(&rules)
            .build()
    };
    let a = Daemon::start_on(pa, tempfile::tempdir().unwrap(), &config("agent-a"), &[]);
    let b = Daemon::start_on(pb, tempfile::tempdir().unwrap(), &config("agent-b"), &[]);
    let images = Images::build();
    push(&images, &registry, "1.0");
    let base = format!("http://127.0.0.1:{}", registry.port);
    let digest = pg_wait_digest(&pg);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .args(["-u", &format!("{}:{}", ALICE.0, ALICE.1)])
        .arg(format!("{base}/v2/team/app/manifests/{digest}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202");
    let mails = smtp.wait_for(1, Duration::from_secs(20));
    assert_eq!(mails.len(), 1, "{}{}", a.proc.stderr(), b.proc.stderr());
    wait_until(Duration::from_secs(20), "both endpoints to drain", || {
        endpoint_counts(&registry, 0).1 == 0 && endpoint_counts(&registry, 1).1 == 0
    });
    // Both agents had every delivery round they needed to send it again.
    std::thread::sleep(Duration::from_secs(3));
    let firing: Vec<String> = smtp
        .messages()
        .into_iter()
        .filter(|m| m.contains("firing: team-delete"))
        .collect();
    assert_eq!(
        firing.len(),
        1,
        "one mail for one delete: {firing:#?}\n{}",
        pg.psql("SELECT id, action, source, repository, tag, agent FROM audit_events WHERE action = 'delete'")
    );
    // The registry reports a manifest delete as two events (manifest and tag), both
    // stored once; one alert for the repository.
    let deletes = "FROM audit_events WHERE action = 'delete' AND source = 'notification'";
    assert_eq!(pg.count(&format!("SELECT count(*) {deletes}")), 2);
    assert_eq!(
        pg.count(&format!("SELECT count(DISTINCT event_id) {deletes}")),
        2
    );
}

/// The digest of the manifest the first push stored (from the trail, as psql reads it).
fn pg_wait_digest(pg: &Postgres) -> String {
    let mut digest = String::new();
    wait_until(Duration::from_secs(20), "the push stored", || {
        digest = pg.psql(
            "SELECT digest FROM audit_events WHERE action = 'push' AND source = 'notification'
             AND tag = '1.0' LIMIT 1",
        );
        digest.starts_with("sha256:")
    });
    digest
}

/// What an agent that cannot reach its database shows: not ready, saying why, and
/// `regwatch_database_up 0`.
fn assert_waits_for_its_database(agent: &Daemon) {
    let (status, body) = agent.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: database unreachable\n"),
        "{body}"
    );
    assert_eq!(
        metric(&agent.get("/metrics").1, "regwatch_database_up"),
        Some(0.0)
    );
}

/// Whether `agent`'s /readyz says it holds `lease`.
fn holds(agent: &Daemon, lease: &str) -> bool {
    http_get(agent.port, "/readyz")
        .map(|(_, body)| body.contains(&format!("lease {lease}: held")))
        .unwrap_or(false)
}

/// kill -9 the agent holding the leases while pushes go on: the other takes them over
/// within seconds (its inventory polls resume from the stored inventory), every event the
/// registry sent is stored once, and the chain verifies.
#[test]
fn kill_9_of_the_lease_holder_moves_its_leases_and_loses_nothing() {
    let pg = Postgres::start();
    let urls = url_file(&pg);
    let (pa, pb) = (free_port(), free_port());
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{pa}/notifications")),
        notify_also: vec![format!("http://127.0.0.1:{pb}/notifications")],
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let config = |agent| {
        ConfigBuilder::new(&format!("http://127.0.0.1:{}", registry.port))
            .api_token(API_TOKEN)
            .login(ALICE)
            .server("agent", agent)
            .registry("poll_interval", "1s")
            .registry("notifications_token", NOTIFY_TOKEN)
            .postgres(urls.path().join("db-url"))
            .build()
    };
    let a = Daemon::start_on(pa, tempfile::tempdir().unwrap(), &config("agent-a"), &[]);
    let b = Daemon::start_on(pb, tempfile::tempdir().unwrap(), &config("agent-b"), &[]);
    wait_until(
        Duration::from_secs(10),
        "one agent to hold inventory",
        || holds(&a, "inventory") || holds(&b, "inventory"),
    );
    let (mut holder, survivor, survivor_endpoint, survivor_name) = if holds(&a, "inventory") {
        (a, b, 1, "agent-b")
    } else {
        (b, a, 0, "agent-a")
    };
    assert!(!holds(&survivor, "inventory"), "one holder at a time");
    let (_, metrics) = http_get(survivor.port, "/metrics").unwrap();
    assert!(
        metrics.contains("regwatch_lease_held{lease=\"inventory\"} 0")
            && metrics.contains("regwatch_database_up 1"),
        "{metrics}"
    );
    let images = Images::build();
    push(&images, &registry, "1.0");
    holder.proc.signal("KILL");
    let killed = std::time::Instant::now();
    holder.proc.wait_exit(Duration::from_secs(5)).unwrap();
    push(&images, &registry, "2.0");
    wait_until(
        Duration::from_secs(10),
        "the survivor to take the leases",
        || holds(&survivor, "inventory") && holds(&survivor, "alerting"),
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    push(&images, &registry, "3.0");
    // The survivor's poller diffs against the inventory the dead agent stored.
    wait_until(
        Duration::from_secs(20),
        "a poll by the survivor to see 3.0",
        || {
            pg.count(&format!(
                "SELECT count(*) FROM audit_events WHERE source = 'poll' AND tag = '3.0'
             AND agent = '{survivor_name}'"
            )) == 1
        },
    );
    // Polls ran on one agent at a time, and the survivor went on from what the dead one
    // stored: every new tag reported once.
    for tag in ["1.0", "2.0", "3.0"] {
        wait_until(Duration::from_secs(10), "each tag's poll event", || {
            pg.count(&format!(
                "SELECT count(*) FROM audit_events WHERE source = 'poll' AND tag = '{tag}'"
            )) >= 1
        });
        assert_eq!(
            pg.count(&format!(
                "SELECT count(*) FROM audit_events WHERE source = 'poll' AND tag = '{tag}'"
            )),
            1,
            "{}",
            pg.psql("SELECT id, action, tag, agent FROM audit_events WHERE source = 'poll'")
        );
    }
    wait_until(
        Duration::from_secs(30),
        "the survivor's endpoint to drain",
        || endpoint_counts(&registry, survivor_endpoint).1 == 0,
    );
    let (sent, _, _) = endpoint_counts(&registry, survivor_endpoint);
    assert_eq!(
        notification_rows(&pg) + own_notifications(&survivor),
        sent as i64,
        "every event once"
    );
    // The gauge is refreshed every second: it follows the lease within a couple.
    wait_until(
        Duration::from_secs(5),
        "the survivor's regwatch_lease_held{lease=\"inventory\"} to say 1",
        || {
            http_get(survivor.port, "/metrics")
                .is_ok_and(|(_, m)| m.contains("regwatch_lease_held{lease=\"inventory\"} 1"))
        },
    );
    verify_ok(&survivor);
}

/// `inventory --tags` of `agent`'s database, keyed "repository:tag", with the facts a
/// backend keeps (the push time is left out: a poll and a push notification race to date
/// a new tag, on either backend).
fn pull_facts(
    agent: &Daemon,
) -> std::collections::BTreeMap<String, (String, Option<String>, Option<String>)> {
    crate::retention::tag_rows(&agent.config_path())
        .into_iter()
        .map(|(k, r)| {
            let text = |f: &str| r[f].as_str().map(String::from);
            (
                k,
                (
                    text("digest").unwrap(),
                    text("last_pulled_at"),
                    text("last_puller"),
                ),
            )
        })
        .collect()
}

/// Tag facts on PostgreSQL: two agents notified of every event of one registry (and polling
/// it) keep the same pull facts as a regwatch on SQLite notified of the same events, in
/// `inventory --tags`: a pull by tag counts for the tag, one by digest for every tag
/// pointing at it, the pushers' blob HEADs and the pollers' reads count for none, and a tag
/// moved to another image forgets the old image's pulls.
#[test]
fn two_agents_keep_the_same_tag_facts_as_sqlite() {
    let pg = Postgres::start();
    let urls = url_file(&pg);
    let (pa, pb, ps) = (free_port(), free_port(), free_port());
    let notify = |p: u16| format!("http://127.0.0.1:{p}/notifications");
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(notify(pa)),
        notify_also: vec![notify(pb), notify(ps)],
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let polled = |b: ConfigBuilder| b.registry("poll_interval", "1s").build();
    let base = || {
        ConfigBuilder::new(&format!("http://127.0.0.1:{}", registry.port))
            .login(ALICE)
            .registry("notifications_token", NOTIFY_TOKEN)
    };
    let pg_agent = |port, name: &str| {
        let config = polled(
            base()
                .server("agent", name)
                .postgres(urls.path().join("db-url")),
        );
        Daemon::start_on(port, tempfile::tempdir().unwrap(), &config, &[])
    };
    let (a, b) = (pg_agent(pa, "agent-a"), pg_agent(pb, "agent-b"));
    let lite = Daemon::start_on(ps, tempfile::tempdir().unwrap(), &polled(base()), &[]);

    let images = Images::build();
    let host = format!("127.0.0.1:{}", registry.port);
    let push = |image: &str, to: &str| {
        assert_ok(&skopeo_push(&images.reference(image), &host, to, ALICE), to)
    };
    push("app-1.0", "team/app:1.0");
    push("app-1.0", "team/app:same"); // the same digest under a second tag
    push("app-1.1", "team/app:1.1");
    push("tool-0.1", "team/tool:0.1"); // never pulled
    wait_until(Duration::from_secs(30), "every tag known to both", || {
        [&a, &lite].iter().all(|d| pull_facts(d).len() == 4)
    });
    let digest = pull_facts(&a)["team/app:1.0"].0.clone();
    let dest = tempfile::tempdir().unwrap();
    let pull = |what: &str, to: &str| {
        assert_ok(&skopeo_pull(&host, what, BOB, &dest.path().join(to)), what)
    };
    pull("team/app:1.1", "by-tag");
    pull(&format!("team/app@{digest}"), "by-digest");
    let drained = || (0..3).all(|e| endpoint_counts(&registry, e).1 == 0);
    let pulled = |d: &Daemon, tag: &str| pull_facts(d)[tag].2.is_some();
    wait_until(Duration::from_secs(30), "both pulls in both stores", || {
        drained()
            && [&a, &lite].iter().all(|d| {
                ["team/app:1.0", "team/app:same", "team/app:1.1"]
                    .iter()
                    .all(|t| pulled(d, t))
            })
    });
    let facts = pull_facts(&b);
    for tag in ["team/app:1.0", "team/app:same", "team/app:1.1"] {
        assert_eq!(facts[tag].2.as_deref(), Some("bob"), "{tag}: {facts:#?}");
    }
    assert_eq!(
        facts["team/app:1.0"].1, facts["team/app:same"].1,
        "one pull by digest"
    );
    assert_eq!(
        facts["team/tool:0.1"].1, None,
        "HEADs and polls are not pulls"
    );
    assert_eq!(facts, pull_facts(&lite), "PostgreSQL and SQLite agree");
    // psql: one row per tag, whichever agent stored the events.
    assert_eq!(pg.count("SELECT count(*) FROM tag_facts"), 4);
    assert_eq!(
        pg.count("SELECT count(*) FROM tag_facts WHERE last_puller = 'bob'"),
        3
    );

    // 1.0 moves to app-1.1's image: its pull was of the old one.
    push("app-1.1", "team/app:1.0");
    wait_until(Duration::from_secs(30), "the move in both stores", || {
        drained()
            && [&a, &lite].iter().all(|d| {
                let f = pull_facts(d);
                f["team/app:1.0"].0 != digest && f["team/app:1.0"].1.is_none()
            })
    });
    assert_eq!(
        pull_facts(&a),
        pull_facts(&lite),
        "PostgreSQL and SQLite agree"
    );
    assert_eq!(pull_facts(&a)["team/app:same"].2.as_deref(), Some("bob"));
    verify_ok(&a);
    drop((a, b, lite));
}
