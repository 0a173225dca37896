//! Traffic as people make it, counted as nginx logged it: skopeo pushes through nginx (new
//! layers, then layers the registry already has), pulls, a missing tag, wrong passwords with
//! both of nginx's logs tailed, regwatch itself polling through the same nginx, and the
//! registry's notifications. Every figure regwatch shows is checked against an independent
//! reading of nginx's own log files.

use crate::support::*;
use std::time::Duration;

const API_TOKEN: &str = "traffic-api-token";
const NOTIFY_TOKEN: &str = "traffic-notify-token";

fn line_count(path: &std::path::Path) -> f64 {
    std::fs::read(path)
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count() as f64
}

fn logs_config(nginx: &Nginx) -> String {
    format!(
        r#"[[log]]
name = "nginx-access"
registry = "main"
path = "{}"
format = "nginx_combined"
start_at = "beginning"

[[log]]
name = "nginx-error"
registry = "main"
path = "{}"
format = "nginx_error"
start_at = "beginning"
"#,
        nginx.access_log().display(),
        nginx.error_log().display()
    )
}

/// Waits until regwatch has read every line of both nginx logs, then returns its metrics
/// and nginx's tally as of that moment (the poller keeps adding lines, so both are read
/// together until they agree).
fn settled(daemon: &Daemon, nginx: &Nginx) -> (String, Tally) {
    let mut last = None;
    wait_until(
        Duration::from_secs(20),
        "every line of both logs read",
        || {
            let access = line_count(&nginx.access_log());
            let error = line_count(&nginx.error_log());
            let tally = tally(&nginx.access_log());
            let text = daemon.get("/metrics").1;
            let read =
                |log: &str| metric(&text, &format!("regwatch_log_lines_total{{log=\"{log}\"}}"));
            let done = read("nginx-access") == Some(access)
                && read("nginx-error") == Some(error)
                && tally.lines as f64 == access;
            last = Some((text, tally));
            done
        },
    );
    last.unwrap()
}

#[test]
fn pushes_pulls_missing_tags_and_wrong_passwords_count_as_nginx_logged_them() {
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let nginx = Nginx::start(&registry);
    let images = Images::build();
    // regwatch polls through nginx as alice, every second: its requests land in the same
    // access log, and the registry notifies regwatch of its manifest reads.
    let config = ConfigBuilder::new(&nginx.url())
        .login(ALICE)
        .api_token(API_TOKEN)
        .registry("notifications_token", NOTIFY_TOKEN)
        .registry("poll_interval", "1s")
        .extra(&logs_config(&nginx))
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-traffic-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_on(port, dir, &config, &[]);

    let push = |image: &str, to: &str| {
        assert_ok(
            &skopeo_push(&images.reference(image), &nginx.host(), to, ALICE),
            to,
        )
    };
    push("app-1.0", "team/app:1.0"); // every layer new: blob HEADs answered 404
    push("app-1.1", "team/app:1.1"); // shares base's layers: HEADs answered 200
    push("app-1.0", "team/app:again"); // all layers known
    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(&nginx.host(), "team/app:1.0", BOB, &pulled.path().join("a")),
        "pull",
    );
    let missing = skopeo_pull(&nginx.host(), "team/app:9.9", BOB, &pulled.path().join("m"));
    assert!(!missing.status.success(), "a missing tag cannot be pulled");
    for (creds, path) in [
        ("bob:wrong", "/v2/"),
        ("bob:wrong", "/v2/"),
        ("bob:wrong", "/v2/"),
        ("bob:wrong", "/v2/team/app/manifests/1.0"),
        ("eve:guess", "/v2/"),
        ("eve:guess", "/v2/"),
    ] {
        let url = format!("{}{path}", nginx.url());
        assert_eq!(curl_status(&["-u", creds, &url]), "401");
    }
    // The challenge every client meets first: not a failed login.
    assert_eq!(curl_status(&[&format!("{}/v2/", nginx.url())]), "401");

    // regwatch has polled the pushed tags through nginx (and been notified of it).
    wait_until(Duration::from_secs(20), "a poll after the pushes", || {
        let text = daemon.get("/metrics").1;
        metric(
            &text,
            "regwatch_self_requests_total{registry=\"main\",source=\"notification\"}",
        )
        .unwrap_or(0.0)
            > 0.0
    });
    let (text, nginx_says) = settled(&daemon, &nginx);
    assert!(
        nginx_says.checks_missing > 0 && nginx_says.checks_found > 0 && nginx_says.counts.own > 0,
        "the scenario has new and known layers and regwatch's own requests: {nginx_says:?}"
    );
    let want = &nginx_says.counts;
    assert!(
        want.failed_pulls > 0 && want.pulls > want.failed_pulls,
        "{want:?}"
    );
    let m = |series: &str| metric(&text, series).unwrap_or(-1.0);
    let got = Counts {
        pulls: m("regwatch_pulls_total{registry=\"main\"}") as usize,
        failed_pulls: m("regwatch_pull_failures_total{registry=\"main\"}") as usize,
        checks: m("regwatch_blob_checks_total{registry=\"main\"}") as usize,
        failed_logins: m("regwatch_auth_failures_total{registry=\"main\"}") as usize,
        own: m("regwatch_self_requests_total{registry=\"main\",source=\"log\"}") as usize,
    };
    assert_eq!(&got, want, "{text}");
    assert_eq!(want.failed_logins, 6);
    assert_eq!(
        error_log_logins(&nginx.error_log()),
        6,
        "nginx's error log reports each failed login too"
    );
    assert_eq!(
        m("regwatch_pull_failure_ratio{registry=\"main\",window=\"5m\"}"),
        want.failed_pulls as f64 / want.pulls as f64
    );

    // The trail: one row per failed login; none from regwatch's polling.
    let db = daemon.db_path();
    wait_until(Duration::from_secs(10), "the failed logins stored", || {
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'auth_failure'",
        ) == 6
    });
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'auth_failure' AND actor = 'bob' \
             AND detail IN ('log nginx-access', 'log nginx-error: password mismatch')"
        ),
        4
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'auth_failure' AND actor = 'eve' \
             AND detail IN ('log nginx-access', 'log nginx-error: user not found')"
        ),
        2
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE user_agent LIKE 'regwatch/%'"
        ),
        0
    );
    // alice only pushed; the poller reads as alice: no pull of hers but blob checks.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull' AND actor = 'alice' \
             AND NOT (method = 'HEAD' AND media_type = 'application/octet-stream')"
        ),
        0
    );
    assert!(
        count(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'pull' AND actor = 'bob'"
        ) > 0
    );

    // The grouped view and the HTML report agree.
    let cfg = daemon.config_path();
    let cfg = cfg.to_str().unwrap();
    let (code, grouped, err) = regwatch(&["audit", "query", "--grouped", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(grouped.contains("bob pulled team/app:1.0"), "{grouped}");
    assert!(grouped.contains("alice pushed team/app:1.1"), "{grouped}");
    assert!(!grouped.contains("alice pulled"), "{grouped}");
    let html = daemon.dir.path().join("report.html");
    let (code, _, err) = regwatch(&[
        "audit",
        "export",
        "--format",
        "html",
        "--output",
        html.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(html).unwrap();
    let blob_heads = count(
        &db,
        "SELECT count(*) FROM audit_events WHERE action = 'pull' AND method = 'HEAD' \
         AND media_type = 'application/octet-stream'",
    );
    let pulls = count(
        &db,
        "SELECT count(*) FROM audit_events WHERE action = 'pull'",
    ) - blob_heads;
    assert!(blob_heads > 0);
    assert!(
        html.contains(&format!(
            "<td>blob check</td><td class=\"n\">{blob_heads}</td>"
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!("<td>pull</td><td class=\"n\">{pulls}</td>")),
        "{html}"
    );
    daemon.stop();
}

#[test]
fn pushing_several_images_keeps_the_pull_failure_rule_quiet() {
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let images = Images::build();
    let hook = WebhookSink::start();
    let config = ConfigBuilder::new(&registry.url())
        .extra(&logs_config(&nginx))
        .extra(&format!(
            r#"
[[rule]]
name = "pull-failures"
kind = "pull_failure_rate"
threshold = 0.05
window = "1m"
min_pulls = 1
channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
timeout = "2s"
"#,
            hook.url()
        ))
        .build();
    let daemon = Daemon::start(&config);
    for (image, to) in [
        ("base-1.0", "team/base:1.0"),
        ("app-1.0", "team/app:1.0"),
        ("app-1.1", "team/app:1.1"),
        ("tool-0.1", "tools/tool:0.1"),
        ("app-1.0", "other/app:1.0"),
    ] {
        assert_ok(
            &skopeo_push(&images.reference(image), &nginx.host(), to, ALICE),
            to,
        );
    }
    let (text, nginx_says) = settled(&daemon, &nginx);
    assert!(
        nginx_says.checks_missing >= 5,
        "{nginx_says:?}\n{}",
        std::fs::read_to_string(nginx.access_log()).unwrap()
    );
    let m = |series: &str| metric(&text, series);
    assert_eq!(
        m("regwatch_pull_failures_total{registry=\"main\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        m("regwatch_blob_checks_total{registry=\"main\"}"),
        Some(nginx_says.counts.checks as f64)
    );
    assert_eq!(
        m("regwatch_pull_failure_ratio{registry=\"main\",window=\"1m\"}"),
        None,
        "no pulls, no ratio: {text}"
    );
    // Several evaluations pass without a notification...
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.received().len(), 0, "{}", daemon.proc.stderr());
    // ...while the rule is live: one real failed pull fires it.
    let url = format!("{}/v2/team/app/manifests/9.9", nginx.url());
    assert_eq!(curl_status(&["-u", "bob:bob-pass", &url]), "404");
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    assert_eq!(got[0].json()["status"], "firing");
    daemon.stop();
}
