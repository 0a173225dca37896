//! PostgreSQL as the shared store of several agents, against a real PostgreSQL 15: one
//! chain however many writers append to it, each event stored once, every read command on
//! a PostgreSQL database, the password never shown.

use crate::support::*;
use regwatch::model::clock::SystemClock;
use regwatch::model::event::{Action, Event, Source};
use regwatch::store::{PgTarget, Store, Verdict, Writer};
use std::sync::Arc;

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
/// each event is stored once, by whichever agent committed it first, in one chain.
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
    const EVENTS: usize = 2000;
    let new: usize = rt.block_on(async {
        let mut tasks = Vec::new();
        for sink in [wa.sink(), wb.sink()] {
            for sender in 0..4 {
                let sink = sink.clone();
                tasks.push(tokio::spawn(async move {
                    let mut new = 0;
                    for chunk in (sender * 500..(sender + 1) * 500)
                        .collect::<Vec<_>>()
                        .chunks(10)
                    {
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
            .build()
            .replace("{port}", "1"),
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
