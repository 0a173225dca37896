//! Alerting end to end: the real registry behind real nginx, a real SMTP server (aiosmtpd),
//! a real Alertmanager and a recording webhook receiver; then the faults: receivers down and
//! back, kill -9 with notifications pending, restart while firing. Every test that keeps
//! alert state, an outbox, silences or storage samples runs on SQLite and on PostgreSQL
//! (`both_backends!`); those about a channel or a reload (TLS mail, SIGHUP) run once.

use crate::support::*;
use hmac::{Hmac, Mac};
use std::time::{Duration, Instant};

const TOKEN: &str = "alert-test-token";
const SECRET: &str = "webhook-signing-secret";

/// What a receiver does to check the signature: HMAC-SHA256 of the raw body.
fn signature_ok(r: &Received) -> bool {
    let Some(sig) = r.headers.get("x-regwatch-signature") else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap()).is_ok()
}

/// A decoded mail: the headers aiosmtpd adds (X-RcptTo: the envelope recipients) and the
/// text, with quoted-printable soft breaks undone.
fn mail_text(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

fn channels(smtp: &SmtpSink, hook: &WebhookSink, am: Option<&Alertmanager>) -> String {
    let mut s = format!(
        r#"
[[channel]]
name = "ops-mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "regwatch@example.test"
to = ["oncall@example.test", "security@example.test"]
subject = "[regwatch] {{{{ status }}}}: {{{{ rule }}}} ({{{{ labels.address }}}})"
timeout = "2s"

[[channel]]
name = "ops-hook"
kind = "webhook"
url = "{}"
secret_env = "REGWATCH_TEST_WEBHOOK_SECRET"
timeout = "2s"
"#,
        smtp.port,
        hook.url()
    );
    if let Some(am) = am {
        s.push_str(&format!(
            "\n[[channel]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{}\"\n",
            am.url()
        ));
    }
    s
}

fn has_alert(am: &Alertmanager, name: &str) -> bool {
    am.alerts()
        .iter()
        .any(|a| a["labels"]["alertname"] == name && a["status"]["state"] == "active")
}

both_backends!(eleven_wrong_passwords_fire_by_email_webhook_and_alertmanager_then_resolve);

fn eleven_wrong_passwords_fire_by_email_webhook_and_alertmanager_then_resolve(backend: Backend) {
    let db = TestDb::start(backend);
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let smtp = SmtpSink::start();
    let hook = WebhookSink::start();
    let am = Alertmanager::start();
    let rules = format!(
        r#"[[log]]
name = "nginx-access"
registry = "main"
path = "{}"
format = "nginx_combined"

[[rule]]
name = "password-guessing"
kind = "auth_failures"
threshold = 10
window = "30s"
group_by = "address"
severity = "critical"
labels = {{ team = "platform" }}
summary = "{{{{ value }}}} failed logins from {{{{ labels.address }}}} on {{{{ registry }}}} in {{{{ window }}}}"
description = "More than {{{{ threshold }}}} wrong passwords: someone may be guessing."
channels = ["ops-mail", "ops-hook", "am"]
{}
"#,
        nginx.access_log().display(),
        channels(&smtp, &hook, Some(&am)),
    );
    let config = db
        .configure(ConfigBuilder::new(&registry.url()))
        .api_token(TOKEN)
        .extra(&rules)
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config, &[("REGWATCH_TEST_WEBHOOK_SECRET", SECRET)]);

    for i in 0..10 {
        assert_eq!(
            curl_status(&[
                "-u",
                &format!("bob:wrong{i}"),
                &format!("{}/v2/", nginx.url())
            ]),
            "401"
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        hook.received().is_empty(),
        "ten failed logins are not more than ten"
    );
    assert_eq!(
        curl_status(&["-u", "mallory:guess", &format!("{}/v2/", nginx.url())]),
        "401"
    );

    // Firing: by mail to both recipients, by signed webhook, and in Alertmanager.
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    let n = got[0].json();
    assert_eq!(n["status"], "firing");
    assert_eq!(n["rule"], "password-guessing");
    assert_eq!(n["labels"]["address"], "127.0.0.1");
    assert_eq!(n["labels"]["registry"], "main");
    assert_eq!(n["labels"]["team"], "platform");
    assert_eq!(n["severity"], "critical");
    assert_eq!(n["value"], 11.0);
    assert_eq!(
        n["annotations"]["summary"],
        "11 failed logins from 127.0.0.1 on main in 30s"
    );
    assert!(signature_ok(&got[0]), "{:?}", got[0].headers);
    assert_eq!(
        got[0].headers.get("idempotency-key").map(String::as_str),
        n["idempotency_key"].as_str()
    );

    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    let m = mail_text(&mails[0]);
    assert!(
        m.contains("X-RcptTo: oncall@example.test, security@example.test"),
        "{m}"
    );
    assert!(
        m.contains("Subject: [regwatch] firing: password-guessing (127.0.0.1)"),
        "{m}"
    );
    assert!(
        m.contains("11 failed logins from 127.0.0.1 on main in 30s"),
        "{m}"
    );
    assert!(m.contains("someone may be guessing"), "{m}");
    assert!(m.contains("Content-Type: text/html"), "{m}");

    wait_until(Duration::from_secs(10), "the alert in Alertmanager", || {
        has_alert(&am, "password-guessing")
    });
    let (_, metrics) = daemon.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "regwatch_alerts_firing{rule=\"password-guessing\"}"
        ),
        Some(1.0)
    );
    let (status, body) = http("GET", daemon.port, "/api/v1/alerts", Some(TOKEN), &[], None);
    assert_eq!(status, 200);
    let alerts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alerts["alerts"][0]["phase"], "firing", "{body}");
    assert_eq!(alerts["alerts"][0]["labels"]["address"], "127.0.0.1");

    // Healthy again: a good login does not count; once the burst is out of the window it
    // resolves. (The window is short so that both backends' runs take 30 s, not a minute.)
    assert_eq!(
        curl_status(&["-u", "bob:bob-pass", &format!("{}/v2/", nginx.url())]),
        "200"
    );
    let got = hook.wait_for(2, Duration::from_secs(50));
    assert_eq!(got.len(), 2, "{}", daemon.proc.stderr());
    let r = got[1].json();
    assert_eq!(r["status"], "resolved");
    assert!(r["ends_at"].is_string());
    assert!(signature_ok(&got[1]));
    let mails = smtp.wait_for(2, Duration::from_secs(10));
    assert_eq!(mails.len(), 2);
    assert!(
        mail_text(&mails[1]).contains("Subject: [regwatch] resolved: password-guessing"),
        "{}",
        mails[1]
    );
    wait_until(
        Duration::from_secs(10),
        "the alert resolved in Alertmanager",
        || !has_alert(&am, "password-guessing"),
    );
    let (_, metrics) = daemon.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "regwatch_alerts_firing{rule=\"password-guessing\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "regwatch_notifications_total{channel=\"ops-hook\"}"
        ),
        Some(2.0)
    );
    assert_eq!(metric(&metrics, "regwatch_outbox_pending"), Some(0.0));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.received().len(), 2, "nothing more after resolving");
    daemon.stop();
}

both_backends!(pulls_of_missing_tags_fire_the_pull_failure_alert_and_healthy_pulls_resolve_it);

fn pulls_of_missing_tags_fire_the_pull_failure_alert_and_healthy_pulls_resolve_it(
    backend: Backend,
) {
    let db = TestDb::start(backend);
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
    let smtp = SmtpSink::start();
    let hook = WebhookSink::start();
    let config = db
        .configure(ConfigBuilder::new(&registry.url()))
        .extra(&format!(
            r#"[[log]]
name = "nginx-access"
registry = "main"
path = "{}"
format = "nginx_combined"

[[rule]]
name = "pull-failures"
kind = "pull_failure_rate"
threshold = 0.05
window = "15s"
min_pulls = 5
summary = "{{{{ value_percent }}}} of pulls failed on {{{{ registry }}}}"
channels = ["ops-mail", "ops-hook"]
{}
"#,
            nginx.access_log().display(),
            channels(&smtp, &hook, None)
        ))
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config, &[("REGWATCH_TEST_WEBHOOK_SECRET", SECRET)]);
    let manifest = |tag: &str| {
        curl_status(&[
            "-u",
            "bob:bob-pass",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("{}/v2/team/app/manifests/{tag}", nginx.url()),
        ])
    };
    for i in 0..6 {
        assert_eq!(manifest(&format!("missing-{i}")), "404");
    }
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    let n = got[0].json();
    assert_eq!(
        (n["status"].as_str(), n["rule"].as_str()),
        (Some("firing"), Some("pull-failures"))
    );
    assert_eq!(n["value"], 1.0);
    assert_eq!(
        n["annotations"]["summary"],
        "100.0 % of pulls failed on main"
    );
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert!(mail_text(&mails[0]).contains("100.0 % of pulls failed on main"));

    // Healthy traffic: good pulls for longer than the window; the failures slide out.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(17) && hook.received().len() < 2 {
        assert_eq!(manifest("1.0"), "200");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = hook.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "{}", daemon.proc.stderr());
    assert_eq!(got[1].json()["status"], "resolved");
    assert_eq!(smtp.wait_for(2, Duration::from_secs(10)).len(), 2);
    daemon.stop();
}

/// Appends failed logins of `user` from `addr` to an nginx access log, stamped now.
fn failed_logins(log: &std::path::Path, addr: &str, user: &str, n: usize) {
    use std::io::Write;
    let stamp = clf_now();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    for _ in 0..n {
        writeln!(
            f,
            "{addr} - {user} [{stamp}] \"GET /v2/ HTTP/1.1\" 401 179 \"-\" \"docker/27.0\""
        )
        .unwrap();
    }
}

/// Appends `actor`'s manifest deletes in each of `repos` to an nginx access log, stamped now.
fn deletes(log: &std::path::Path, actor: &str, repos: &[&str]) {
    use std::io::Write;
    let stamp = clf_now();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    for repo in repos {
        writeln!(
            f,
            "10.0.0.5 - {actor} [{stamp}] \"DELETE /v2/{repo}/manifests/{digest} HTTP/1.1\" 202 0 \"-\" \"curl/8\""
        )
        .unwrap();
    }
}

/// `base` (its `[database]`) with a tailed log, a failed-login rule, mail and webhook.
fn fault_config(
    base: ConfigBuilder,
    log: &std::path::Path,
    window: &str,
    smtp_port: u16,
    hook_url: &str,
) -> String {
    base.api_token(TOKEN)
        .extra(&format!(
            r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"
start_at = "beginning"

[[rule]]
name = "guessing"
kind = "auth_failures"
threshold = 10
window = "{window}"
group_by = "address"
channels = ["ops-mail", "ops-hook"]

[[channel]]
name = "ops-mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "regwatch@example.test"
to = ["oncall@example.test"]
timeout = "2s"

[[channel]]
name = "ops-hook"
kind = "webhook"
url = "{hook_url}"
secret_env = "REGWATCH_TEST_WEBHOOK_SECRET"
timeout = "2s"
"#,
            log.display()
        ))
        .build()
}

fn subjects(smtp: &SmtpSink) -> Vec<String> {
    smtp.messages()
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject: "))
                .map(str::to_string)
        })
        .collect()
}

both_backends!(
    smtp_and_webhook_down_then_back_every_notification_arrives_once,
    kill_9_with_notifications_pending_delivers_after_restart_and_restart_never_duplicates,
);

fn smtp_and_webhook_down_then_back_every_notification_arrives_once(backend: Backend) {
    let db = TestDb::start(backend);
    let smtp_port = free_port();
    let hook_port = free_port();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = fault_config(
        db.configure(ConfigBuilder::new("http://127.0.0.1:9")),
        &log,
        "3s",
        smtp_port,
        &format!("http://127.0.0.1:{hook_port}/hook"),
    );
    let daemon = Daemon::start_in(dir, &config, &[("REGWATCH_TEST_WEBHOOK_SECRET", SECRET)]);

    // Both receivers are down: the alert fires and resolves, the notifications wait.
    failed_logins(&log, "10.0.0.5", "eve", 11);
    let pending = |d: &Daemon| {
        let (_, m) = d.get("/metrics");
        metric(&m, "regwatch_outbox_pending").unwrap_or(-1.0)
    };
    wait_until(
        Duration::from_secs(15),
        "firing + resolved in the outbox",
        || pending(&daemon) == 4.0,
    );
    let (_, m) = daemon.get("/metrics");
    assert!(
        metric(
            &m,
            "regwatch_notifications_failed_total{channel=\"ops-hook\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &m,
            "regwatch_notifications_failed_total{channel=\"ops-mail\"}"
        )
        .unwrap()
            >= 1.0
    );
    let attempts = db.count("SELECT count(*) FROM alert_deliveries WHERE NOT ok");
    assert!(attempts >= 2, "{attempts}");
    std::thread::sleep(Duration::from_secs(3));

    // Back: each notification arrives, once, in order.
    let smtp = SmtpSink::start_on(smtp_port);
    let hook = WebhookSink::start_on(hook_port, Default::default());
    let got = hook.wait_for(2, Duration::from_secs(70));
    assert_eq!(got.len(), 2, "{}", daemon.proc.stderr());
    assert_eq!(got[0].json()["status"], "firing");
    assert_eq!(got[1].json()["status"], "resolved");
    assert!(got.iter().all(signature_ok));
    assert_ne!(
        got[0].json()["idempotency_key"],
        got[1].json()["idempotency_key"]
    );
    let mails = smtp.wait_for(2, Duration::from_secs(70));
    assert_eq!(mails.len(), 2);
    wait_until(Duration::from_secs(5), "the outbox to empty", || {
        pending(&daemon) == 0.0
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.received().len(), 2, "no duplicates");
    assert_eq!(smtp.messages().len(), 2, "no duplicates");
    let s = subjects(&smtp);
    assert!(s[0].contains("[firing] guessing"), "{s:?}");
    assert!(s[1].contains("[resolved] guessing"), "{s:?}");
    daemon.stop();
}

fn kill_9_with_notifications_pending_delivers_after_restart_and_restart_never_duplicates(
    backend: Backend,
) {
    let db = TestDb::start(backend);
    let smtp_port = free_port();
    let hook_port = free_port();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = fault_config(
        db.configure(ConfigBuilder::new("http://127.0.0.1:9")),
        &log,
        "1m",
        smtp_port,
        &format!("http://127.0.0.1:{hook_port}/hook"),
    );
    let env = [("REGWATCH_TEST_WEBHOOK_SECRET", SECRET)];
    let daemon = Daemon::start_in(dir, &config, &env);
    failed_logins(&log, "10.0.0.7", "eve", 11);
    wait_until(
        Duration::from_secs(10),
        "the firing notifications in the outbox",
        || {
            let (_, m) = daemon.get("/metrics");
            metric(&m, "regwatch_outbox_pending") == Some(2.0)
        },
    );

    // kill -9 while they are pending.
    let Daemon {
        dir,
        port,
        mut proc,
    } = daemon;
    proc.signal("KILL");
    proc.wait_exit(Duration::from_secs(5)).expect("killed");
    drop(proc);
    let smtp = SmtpSink::start_on(smtp_port);
    let hook = WebhookSink::start_on(hook_port, Default::default());
    let daemon = Daemon::start_on(port, dir, &config, &env);
    // On PostgreSQL a notification the killed agent had claimed (its first attempt under
    // way) is sent by no agent until the claim runs out, 2 s x (2 rows + 1) + 10 s here:
    // claims are shared, and a claim cannot tell a dead holder from a slow one.
    let limit = match backend {
        Backend::Sqlite => Duration::from_secs(10),
        Backend::Postgres => Duration::from_secs(25),
    };
    let got = hook.wait_for(1, limit);
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    assert_eq!(got[0].json()["status"], "firing");
    assert_eq!(got[0].json()["labels"]["address"], "10.0.0.7");
    assert_eq!(smtp.wait_for(1, limit).len(), 1);

    // Restart while firing: the state is kept, nothing is sent again.
    let dir = daemon.stop();
    let daemon = Daemon::start_on(port, dir, &config, &env);
    let (status, body) = http("GET", daemon.port, "/api/v1/alerts", Some(TOKEN), &[], None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["alerts"][0]["phase"], "firing", "{body}");
    assert_eq!(v["alerts"][0]["sequence"], 1, "{body}");
    std::thread::sleep(Duration::from_secs(4));
    let (_, m) = daemon.get("/metrics");
    assert_eq!(
        metric(&m, "regwatch_alerts_firing{rule=\"guessing\"}"),
        Some(1.0)
    );
    assert_eq!(hook.received().len(), 1, "no duplicate after restarts");
    assert_eq!(smtp.messages().len(), 1, "no duplicate mail after restarts");
    daemon.stop();
}

both_backends!(silences_maintenance_windows_slack_teams_and_alerts_test);

fn silences_maintenance_windows_slack_teams_and_alerts_test(backend: Backend) {
    let db = TestDb::start(backend);
    let sink = WebhookSink::start();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let base = format!("http://127.0.0.1:{}", sink.port);
    let config = db
        .configure(ConfigBuilder::new("http://127.0.0.1:9"))
        .api_token(TOKEN)
        .extra(&format!(
            r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"

[[rule]]
name = "guessing"
kind = "auth_failures"
threshold = 10
window = "1m"
group_by = "address"
channels = ["hook", "chat", "teams"]

[[rule]]
name = "guessing-by-user"
kind = "auth_failures"
threshold = 10
window = "1m"
group_by = "user"
channels = ["hook"]

# Open every minute for two: always open, so this rule never notifies.
[[maintenance]]
name = "always"
schedule = "* * * * *"
duration = "2m"
matchers = {{ alertname = "guessing-by-user" }}

[[channel]]
name = "hook"
kind = "webhook"
url = "{base}/hook"

[[channel]]
name = "chat"
kind = "slack"
url = "{base}/slack"

[[channel]]
name = "teams"
kind = "teams"
url = "{base}/teams"

[[channel]]
name = "nowhere"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
timeout = "1s"
"#,
            log.display()
        ))
        .build();
    std::fs::write(
        dir.path().join("check.toml"),
        config
            .replace("{port}", "1")
            .replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let check_config = dir.path().join("check.toml").display().to_string();

    // `alerts test`: straight to the channel, exit 0 when accepted, 1 with the reason if not.
    let (code, out, err) = regwatch(&[
        "alerts",
        "test",
        "--config",
        &check_config,
        "--channel",
        "chat",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("channel chat (slack): test notification accepted"),
        "{out}"
    );
    let (code, _, err) = regwatch(&[
        "alerts",
        "test",
        "--config",
        &check_config,
        "--channel",
        "teams",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = regwatch(&[
        "alerts",
        "test",
        "--config",
        &check_config,
        "--channel",
        "nowhere",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("channel nowhere (webhook) did not accept the test notification"),
        "{err}"
    );
    let (code, _, err) = regwatch(&[
        "alerts",
        "test",
        "--config",
        &check_config,
        "--channel",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no [[channel]] is named \"nope\""), "{err}");
    let got = sink.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/slack");
    assert!(
        got[0].json()["text"]
            .as_str()
            .unwrap()
            .contains("regwatch-test")
    );
    assert_eq!(got[1].path, "/teams");
    let card = &got[1].json()["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");

    let daemon = Daemon::start_in(dir, &config, &[]);
    let (status, body) = http(
        "POST",
        daemon.port,
        "/api/v1/silences",
        None,
        &[("content-type", "application/json")],
        Some(br#"{"matchers":{"address":"10.0.0.9"},"duration":"1h"}"#.to_vec()),
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(
        "POST",
        daemon.port,
        "/api/v1/silences",
        Some(TOKEN),
        &[("content-type", "application/json")],
        Some(br#"{"matchers":{"address":"10.0.0.9"},"duration":"1h","created_by":"ops","comment":"pentest"}"#.to_vec()),
    );
    assert_eq!(status, 201, "{body}");
    let (_, body) = http(
        "GET",
        daemon.port,
        "/api/v1/silences",
        Some(TOKEN),
        &[],
        None,
    );
    assert!(body.contains("pentest"), "{body}");

    // Silenced address, and every user (maintenance window): states change, nothing is sent.
    failed_logins(&log, "10.0.0.9", "eve", 11);
    wait_until(Duration::from_secs(10), "both alerts firing", || {
        let (_, m) = daemon.get("/metrics");
        metric(&m, "regwatch_alerts_firing{rule=\"guessing\"}") == Some(1.0)
            && metric(&m, "regwatch_alerts_firing{rule=\"guessing-by-user\"}") == Some(1.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sink.received().len(),
        2,
        "silenced: only the two test notifications"
    );

    // Another address: not silenced; webhook, Slack and Teams each get it once.
    failed_logins(&log, "10.0.0.8", "mallory", 11);
    let got = sink.wait_for(5, Duration::from_secs(10));
    assert_eq!(got.len(), 5, "{}", daemon.proc.stderr());
    let mut paths: Vec<&str> = got[2..].iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/hook", "/slack", "/teams"]);
    let hook = got[2..].iter().find(|r| r.path == "/hook").unwrap().json();
    assert_eq!(hook["labels"]["address"], "10.0.0.8");
    let slack = got[2..].iter().find(|r| r.path == "/slack").unwrap().json();
    assert!(
        slack["text"].as_str().unwrap().contains("guessing"),
        "{slack}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.received().len(), 5);
    daemon.stop();
}

both_backends!(audit_match_fires_once_on_a_committed_delete_in_prod);

/// An audit rule fires from a committed row, once for the one matching delete (a webhook
/// and a mail, then their resolutions), on either backend.
fn audit_match_fires_once_on_a_committed_delete_in_prod(backend: Backend) {
    let db = TestDb::start(backend);
    let hook = WebhookSink::start();
    let smtp = SmtpSink::start();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = db
        .configure(ConfigBuilder::new("http://127.0.0.1:9"))
        .registry("audit_from_logs", true)
        .extra(&format!(
            r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"

[[rule]]
name = "prod-delete"
kind = "audit_match"
filter = {{ action = "delete", repository = "prod/*" }}
window = "5s"
summary = "{{{{ actor }}}} deleted from {{{{ labels.repository }}}}"
channels = ["hook", "mail"]

[[channel]]
name = "hook"
kind = "webhook"
url = "{}"

[[channel]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "regwatch@example.test"
to = ["oncall@example.test"]
subject = "[regwatch] {{{{ status }}}}: {{{{ rule }}}} {{{{ labels.repository }}}}"
timeout = "2s"
"#,
            log.display(),
            hook.url(),
            smtp.port
        ))
        .build();
    let daemon = Daemon::start_in(dir, &config, &[]);
    // A delete outside prod/ does not match; the one in prod/ does.
    deletes(&log, "alice", &["dev/app", "prod/app"]);
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    let n = got[0].json();
    assert_eq!(n["rule"], "prod-delete");
    assert_eq!(n["status"], "firing");
    assert_eq!(n["labels"]["repository"], "prod/app");
    assert_eq!(n["labels"]["actor"], "alice");
    assert_eq!(n["annotations"]["summary"], "alice deleted from prod/app");
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1, "{}", daemon.proc.stderr());
    assert!(
        mails[0].contains("Subject: [regwatch] firing: prod-delete prod/app"),
        "{}",
        mails[0]
    );
    // The event is in the audit trail it was matched from, once.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE action = 'delete' AND repository = 'prod/app'"
        ),
        1
    );
    // No further deletes: resolved after the window, and nothing sent twice.
    let got = hook.wait_for(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].json()["status"], "resolved");
    let mails = smtp.wait_for(2, Duration::from_secs(10));
    assert!(
        mails[1].contains("Subject: [regwatch] resolved: prod-delete"),
        "{}",
        mails[1]
    );
    wait_until(Duration::from_secs(5), "the outbox to empty", || {
        metric(&daemon.get("/metrics").1, "regwatch_outbox_pending") == Some(0.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.received().len(), 2, "one firing, one resolved");
    assert_eq!(smtp.messages().len(), 2, "one firing, one resolved mail");
    assert_eq!(db.count("SELECT count(*) FROM alert_outbox"), 0);
    daemon.stop();
}

both_backends!(registry_down_fires_after_for_and_resolves_when_it_is_back);

fn registry_down_fires_after_for_and_resolves_when_it_is_back(backend: Backend) {
    let db = TestDb::start(backend);
    let mut registry = Registry::start(RegistryOptions::default());
    let hook = WebhookSink::start();
    let config = db
        .configure(ConfigBuilder::new(&registry.url()))
        .login(ALICE)
        .registry("probe_interval", "1s")
        .extra(&format!(
            r#"
[[rule]]
name = "registry-down"
kind = "registry_down"
for = "3s"
interval = "1s"
summary = "{{{{ registry }}}} does not answer GET /v2/"
channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
            hook.url()
        ))
        .build();
    let daemon = Daemon::start(&config);
    std::thread::sleep(Duration::from_secs(3));
    assert!(hook.received().is_empty(), "up: nothing sent");
    registry.stop();
    let stopped = Instant::now();
    let got = hook.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    assert!(
        got[0].at - stopped >= Duration::from_secs(3),
        "pending for `for` first"
    );
    let n = got[0].json();
    assert_eq!(n["status"], "firing");
    assert_eq!(n["annotations"]["summary"], "main does not answer GET /v2/");
    registry.restart();
    let got = hook.wait_for(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].json()["status"], "resolved");
    daemon.stop();
}

#[test]
fn email_over_starttls_and_implicit_tls_with_auth() {
    for mode in ["starttls", "tls"] {
        let smtp = SmtpSink::start_secure(mode, ("regwatch", "mail-pass"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("smtp-password"), "mail-pass\n").unwrap();
        let config = ConfigBuilder::registry_only("http://127.0.0.1:9")
            .extra(&format!(
                r#"[[channel]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "{mode}"
tls_ca_file = "{}"
username = "regwatch"
password_file = "smtp-password"
from = "regwatch@example.test"
to = ["oncall@example.test"]
timeout = "5s"
"#,
                smtp.port,
                smtp.ca().display()
            ))
            .build();
        let path = dir.path().join("regwatch.toml");
        std::fs::write(&path, &config).unwrap();
        let (code, out, err) = regwatch(&[
            "alerts",
            "test",
            "--config",
            path.to_str().unwrap(),
            "--channel",
            "mail",
        ]);
        assert_eq!(code, 0, "{mode}: {out}{err}");
        let mails = smtp.wait_for(1, Duration::from_secs(5));
        assert_eq!(mails.len(), 1, "{mode}");
        assert!(
            mails[0].contains("regwatch test notification"),
            "{}",
            mails[0]
        );

        // A wrong password is refused, and the error never shows the password.
        std::fs::write(dir.path().join("smtp-password"), "wrong-pass\n").unwrap();
        let (code, _, err) = regwatch(&[
            "alerts",
            "test",
            "--config",
            path.to_str().unwrap(),
            "--channel",
            "mail",
        ]);
        assert_eq!(code, 1, "{mode}: {err}");
        assert!(err.contains("did not accept"), "{err}");
        assert!(!err.contains("wrong-pass"), "{err}");
        // Without the CA the server's certificate is not trusted.
        std::fs::write(dir.path().join("smtp-password"), "mail-pass\n").unwrap();
        let no_ca: String = config
            .lines()
            .filter(|l| !l.starts_with("tls_ca_file"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, no_ca).unwrap();
        let (code, _, err) = regwatch(&[
            "alerts",
            "test",
            "--config",
            path.to_str().unwrap(),
            "--channel",
            "mail",
        ]);
        assert_eq!(code, 1, "{mode}: an untrusted certificate must fail: {err}");
        assert_eq!(smtp.messages().len(), 1);
    }
}

both_backends!(alertmanager_keeps_a_firing_alert_because_regwatch_re_sends_it);

fn alertmanager_keeps_a_firing_alert_because_regwatch_re_sends_it(backend: Backend) {
    let db = TestDb::start(backend);
    // Alertmanager forgets an alert not re-sent within resolve_timeout (3 s here).
    let am = Alertmanager::start_config(
        "global:\n  resolve_timeout: 3s\nroute:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    );
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = db
        .configure(ConfigBuilder::new("http://127.0.0.1:9"))
        .extra(&format!(
            r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"
[[rule]]
name = "guessing"
kind = "auth_failures"
threshold = 10
window = "1m"
channels = ["am"]
[[channel]]
name = "am"
kind = "alertmanager"
url = "{}"
resend_interval = "1s"
"#,
            log.display(),
            am.url()
        ))
        .build();
    let daemon = Daemon::start_in(dir, &config, &[]);
    failed_logins(&log, "10.0.0.6", "eve", 11);
    wait_until(Duration::from_secs(10), "the alert in Alertmanager", || {
        has_alert(&am, "guessing")
    });
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            has_alert(&am, "guessing"),
            "re-sent while firing, so still active:\n{}",
            daemon.proc.stderr()
        );
    }
    let alerts = am.alerts();
    assert_eq!(alerts[0]["labels"]["address"], "10.0.0.6");
    daemon.stop();
}

#[test]
fn sighup_applies_new_rules() {
    let hook = WebhookSink::start();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = |threshold: u32| {
        ConfigBuilder::new("http://127.0.0.1:9")
            .extra(&format!(
                r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"
[[rule]]
name = "guessing"
kind = "auth_failures"
threshold = {threshold}
window = "1m"
channels = ["hook"]
[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
                log.display(),
                hook.url()
            ))
            .build()
    };
    let daemon = Daemon::start_in(dir, &config(100), &[]);
    failed_logins(&log, "10.0.0.4", "eve", 11);
    std::thread::sleep(Duration::from_secs(2));
    assert!(hook.received().is_empty(), "11 is not above 100");
    daemon.reload(&config(10));
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    assert_eq!(got[0].json()["labels"]["address"], "10.0.0.4");
    daemon.stop();
}

/// The writer sends committed rows to the rules only while an `audit_match` rule exists: one
/// added by SIGHUP matches the rows committed from then on, not the ones before it.
#[test]
fn an_audit_match_rule_added_by_sighup_matches_the_rows_committed_after_it() {
    let hook = WebhookSink::start();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = |rule: &str| {
        ConfigBuilder::new("http://127.0.0.1:9")
            .registry("audit_from_logs", true)
            .extra(&format!(
                r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"
{rule}
[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
                log.display(),
                hook.url()
            ))
            .build()
    };
    let daemon = Daemon::start_in(dir, &config(""), &[]);
    deletes(&log, "alice", &["prod/old"]);
    wait_until(
        Duration::from_secs(10),
        "the first delete committed",
        || {
            metric(
                &daemon.get("/metrics").1,
                "regwatch_audit_events_total{action=\"delete\"}",
            ) == Some(1.0)
        },
    );
    let rule = r#"[[rule]]
name = "prod-delete"
kind = "audit_match"
filter = { action = "delete", repository = "prod/*" }
window = "5s"
channels = ["hook"]"#;
    daemon.reload(&config(rule));
    wait_until(Duration::from_secs(10), "the reload", || {
        daemon.proc.stderr().contains("configuration reloaded")
    });
    deletes(&log, "bob", &["prod/new"]);
    let got = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    assert_eq!(got[0].json()["labels"]["repository"], "prod/new");
    assert_eq!(got[0].json()["labels"]["actor"], "bob");
    std::thread::sleep(Duration::from_secs(2));
    let firing: Vec<_> = hook
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|n| n["status"] == "firing")
        .collect();
    assert_eq!(
        firing.len(),
        1,
        "the delete before the rule matched: {firing:?}"
    );
    daemon.stop();
}

both_backends!(
    storage_usage_fires_from_the_storage_monitor_and_resolves_when_the_threshold_is_raised
);

fn storage_usage_fires_from_the_storage_monitor_and_resolves_when_the_threshold_is_raised(
    backend: Backend,
) {
    let db = TestDb::start(backend);
    let registry = Registry::start(RegistryOptions::default());
    let hook = WebhookSink::start();
    // The test machine's disk is somewhere between 0.1 % and 99.9 % full: a threshold of
    // 0.001 is crossed, 0.999 is not.
    let config = |threshold: &str| {
        db.configure(ConfigBuilder::new(&registry.url()))
            .login(ALICE)
            .registry("storage_root", registry.storage())
            .registry("storage_usage_interval", "1s")
            .registry("storage_interval", "1s")
            .extra(&format!(
                r#"
[[rule]]
name = "storage-high"
kind = "storage_usage"
threshold = {threshold}
interval = "1s"
summary = "{{{{ registry }}}} storage above the threshold"
channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
                hook.url()
            ))
            .build()
    };
    let daemon = Daemon::start(&config("0.001"));
    let got = hook.wait_for(1, Duration::from_secs(15));
    assert_eq!(
        got.len(),
        1,
        "{}\n{}",
        daemon.get("/metrics").1,
        daemon.proc.stderr()
    );
    let n = got[0].json();
    assert_eq!(n["status"], "firing");
    assert_eq!(
        n["annotations"]["summary"],
        "main storage above the threshold"
    );
    let ratio = metric(
        &daemon.get("/metrics").1,
        "regwatch_storage_used_ratio{registry=\"main\"}",
    )
    .unwrap();
    assert!(ratio > 0.001 && ratio < 0.999, "{ratio}");
    // No forecast yet: days_until_full must not appear as 0 because a rule read it.
    assert_eq!(
        metric(
            &daemon.get("/metrics").1,
            "regwatch_storage_days_until_full{registry=\"main\"}"
        ),
        None
    );
    daemon.reload(&config("0.999"));
    let got = hook.wait_for(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{}", daemon.proc.stderr());
    assert_eq!(got[1].json()["status"], "resolved");
    daemon.stop();
}

both_backends!(a_silence_that_ends_while_firing_sends_the_held_notification);

fn a_silence_that_ends_while_firing_sends_the_held_notification(backend: Backend) {
    let db = TestDb::start(backend);
    let smtp = SmtpSink::start();
    let hook = WebhookSink::start();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-alerts-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = fault_config(
        db.configure(ConfigBuilder::new("http://127.0.0.1:9")),
        &log,
        "6s",
        smtp.port,
        &hook.url(),
    );
    let daemon = Daemon::start_in(dir, &config, &[("REGWATCH_TEST_WEBHOOK_SECRET", SECRET)]);
    for (address, duration) in [("10.0.0.21", "2s"), ("10.0.0.22", "1m")] {
        let body = format!(r#"{{"matchers":{{"address":"{address}"}},"duration":"{duration}"}}"#);
        let (status, body) = http(
            "POST",
            daemon.port,
            "/api/v1/silences",
            Some(TOKEN),
            &[("content-type", "application/json")],
            Some(body.into_bytes()),
        );
        assert_eq!(status, 201, "{body}");
    }
    failed_logins(&log, "10.0.0.21", "eve", 11);
    failed_logins(&log, "10.0.0.22", "eve", 11);
    let firing = |d: &Daemon| {
        let (_, m) = d.get("/metrics");
        metric(&m, "regwatch_alerts_firing{rule=\"guessing\"}")
    };
    wait_until(Duration::from_secs(10), "both addresses firing", || {
        firing(&daemon) == Some(2.0)
    });
    assert_eq!(hook.received().len(), 0, "silenced: nothing sent yet");

    // The 2 s silence ends while .21 still fires: its firing goes out then, not an hour later.
    // Both resolve when the 6 s window empties; .22 was never announced, so it is never
    // resolved either.
    let got = hook.wait_for(2, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "{}", daemon.proc.stderr());
    assert_eq!(got[0].json()["status"], "firing");
    assert_eq!(got[0].json()["labels"]["address"], "10.0.0.21");
    assert_eq!(got[1].json()["status"], "resolved");
    assert_eq!(got[1].json()["labels"]["address"], "10.0.0.21");
    assert!(got.iter().all(signature_ok));
    wait_until(Duration::from_secs(20), "both resolved", || {
        firing(&daemon) == Some(0.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.received().len(), 2);
    let mails = smtp.wait_for(2, Duration::from_secs(10));
    assert_eq!(mails.len(), 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.messages().len(), 2);
    daemon.stop();
}

both_backends!(storage_forecast_fires_from_the_stored_growth_history);

/// A forecast needs hours of history: the test writes six hours of samples growing at a
/// fifth of the free space a day (so the disk is full in about five days), as the monitor
/// itself would have stored them, then lets the real monitor add the present and the rule
/// judge the result.
fn storage_forecast_fires_from_the_stored_growth_history(backend: Backend) {
    let db = TestDb::start(backend);
    let registry = Registry::start(RegistryOptions::default());
    let hook = WebhookSink::start();
    let config = db
        .configure(ConfigBuilder::new(&registry.url()))
        .login(ALICE)
        .registry("storage_root", registry.storage())
        .registry("storage_usage_interval", "1s")
        .extra(&format!(
            r#"
[[rule]]
name = "disk-full-soon"
kind = "storage_forecast"
threshold = 30
interval = "1s"
summary = "{{{{ registry }}}} full in {{{{ value }}}} days"
channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
            hook.url()
        ))
        .build();
    // Without history there is no forecast, so nothing to judge.
    let daemon = Daemon::start(&config);
    wait_until(Duration::from_secs(10), "a usage sample", || {
        metric(
            &daemon.get("/metrics").1,
            "regwatch_storage_used_ratio{registry=\"main\"}",
        )
        .is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        metric(
            &daemon.get("/metrics").1,
            "regwatch_storage_days_until_full{registry=\"main\"}"
        ),
        None
    );
    assert_eq!(hook.received().len(), 0);
    let dir = daemon.stop();

    let (used, avail) = df(&registry.storage());
    let (used, avail) = (used as i64, avail as i64);
    let per_day = avail / 5;
    let now = time::OffsetDateTime::now_utc();
    let mut sql = String::from("BEGIN;");
    for i in 1..=12i64 {
        let ago = time::Duration::minutes(30 * i);
        let grown = per_day * ago.whole_seconds() / 86_400;
        sql.push_str(&format!(
            "INSERT INTO storage_samples VALUES ('main', '{}', {}, {}, {});",
            regwatch::store::format_time(now - ago),
            used - grown,
            used + avail,
            avail + grown
        ));
    }
    sql.push_str("COMMIT;");
    db.sql(&sql);

    let daemon = Daemon::start_in(dir, &config, &[]);
    let got = hook.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "{}", daemon.proc.stderr());
    let n = got[0].json();
    assert_eq!(n["status"], "firing");
    assert_eq!(n["labels"]["alertname"], "disk-full-soon");
    let m = daemon.get("/metrics").1;
    let days = metric(&m, "regwatch_storage_days_until_full{registry=\"main\"}").unwrap();
    // Five days at the written rate; whatever else this machine writes meanwhile moves the
    // newest sample only a little against a six-hour trend.
    assert!((3.0..8.0).contains(&days), "{days} days\n{m}");
    let growth = metric(
        &m,
        "regwatch_storage_growth_bytes_per_day{registry=\"main\"}",
    )
    .unwrap();
    assert!(
        (growth - per_day as f64).abs() < 0.3 * per_day as f64,
        "{growth} vs {per_day}"
    );
    let value = n["value"].as_f64().unwrap();
    assert!(value > 0.0 && value < 30.0, "{n}");
    daemon.stop();
}
