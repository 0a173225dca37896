//! Scheduled reports (`[[report]]`): written by the daemon when the schedule fires and by
//! `regwatch report run NAME` at once, from a real audit trail (failed logins read from a
//! log), private to their owner, and checked by `regwatch check`.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const COLUMNS: &str = "id,time,registry,action,repository,tag,digest,media_type,size,actor,remote_addr,user_agent,request_id,method,source,status,event_id,detail,prev_hash,hash";

fn reports_in(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// The attachments of a raw mail message, decoded by Python's own `email` package:
/// (file name, content type, bytes).
fn attachments(message: &str) -> Vec<(String, String, Vec<u8>)> {
    let script = "import email, sys, json\n\
                  m = email.message_from_string(sys.stdin.read())\n\
                  print(json.dumps([[p.get_filename(), p.get_content_type(), list(p.get_payload(decode=True))] for p in m.walk() if p.get_filename()]))";
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

both_backends!(reports_are_written_on_schedule_and_on_demand);

/// The head `regwatch audit verify -c CONFIG` reports for an intact chain.
fn verified_head(config: &str) -> String {
    let (code, out, err) = regwatch(&["audit", "verify", "-c", config]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("head "))
        .unwrap_or_else(|| panic!("no head in {out}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn reports_are_written_on_schedule_and_on_demand(backend: Backend) {
    let db = TestDb::start(backend);
    let smtp = SmtpSink::start();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-reports-")
        .tempdir()
        .unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let log = dir.path().join("access.log");
    let stamp = clf_now();
    let line =
        format!("10.0.0.5 - eve [{stamp}] \"GET /v2/ HTTP/1.1\" 401 179 \"-\" \"docker/27.0\"\n");
    std::fs::write(&log, line.repeat(3)).unwrap();
    let config = db
        .configure(ConfigBuilder::new("http://127.0.0.1:9"))
        .extra(&format!(
            r#"[[log]]
name = "access"
registry = "main"
path = "{}"
format = "nginx_combined"
start_at = "beginning"

[[report]]
name = "minutely"
schedule = "* * * * *"
format = "csv"
period = "1h"
output = "reports/{{name}}-{{time}}.csv"

[[report]]
name = "failed-logins"
schedule = "0 6 * * MON"
format = "html"
action = "auth_failure"
output = "reports/failed-logins-{{date}}.html"
channels = ["mail"]

[[report]]
name = "too-big-to-mail"
schedule = "0 6 1 * *"
format = "csv"
output = "reports/{{name}}.csv"
channels = ["mail"]
max_attachment_bytes = 100

[[channel]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "regwatch@example.test"
to = ["auditor@example.test"]
"#,
            log.display(),
            smtp.port
        ))
        .build();
    let daemon = Daemon::start_in(dir, &config, &[]);
    wait_until(Duration::from_secs(10), "three failed logins", || {
        db.count("SELECT count(*) FROM audit_events WHERE action = 'auth_failure'") == 3
    });
    let cfg = daemon.config_path().display().to_string();

    // On demand: the weekly HTML report now.
    let (code, out, err) = regwatch(&["report", "run", "failed-logins", "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let html_path = reports_in(&reports, "failed-logins-");
    assert_eq!(html_path.len(), 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "wrote {} (3 events, chain head ",
            html_path[0].display()
        )),
        "{out}"
    );
    let first = out.lines().next().unwrap();
    let head = first.rsplit(' ').next().unwrap().trim_end_matches(')');
    // The head of the chain the report was made from, as `audit verify` finds it.
    assert_eq!(head, verified_head(&cfg), "{out}");
    let html = std::fs::read_to_string(&html_path[0]).unwrap();
    assert!(html.contains(head), "the report carries the chain head");
    assert!(html.contains("eve") && html.contains("10.0.0.5"));
    let mode = std::fs::metadata(&html_path[0])
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // ... and mailed, with the file attached as it is on disk.
    assert!(out.contains("mailed through mail"), "{out}");
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].contains("Subject: [regwatch] report failed-logins: 3 events"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains(head), "the mail names the chain head");
    let files = attachments(&mails[0]);
    assert_eq!(files.len(), 1, "{}", mails[0]);
    assert_eq!(
        files[0].0,
        html_path[0].file_name().unwrap().to_string_lossy()
    );
    assert_eq!(files[0].1, "text/html");
    assert_eq!(files[0].2, html.as_bytes());
    // Over max_attachment_bytes: the mail says where the file is instead.
    let (code, out, err) = regwatch(&["report", "run", "too-big-to-mail", "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    let mails = smtp.wait_for(2, Duration::from_secs(10));
    assert_eq!(mails.len(), 2);
    assert!(attachments(&mails[1]).is_empty(), "{}", mails[1]);
    assert!(
        mails[1].contains("more than max_attachment_bytes (100)"),
        "{}",
        mails[1]
    );

    let (code, _, err) = regwatch(&["report", "run", "nope", "--config", &cfg]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "no [[report]] is named \"nope\" (configured: minutely, failed-logins, too-big-to-mail)"
        ),
        "{err}"
    );

    // On schedule: the next minute.
    wait_until(Duration::from_secs(75), "the minutely report", || {
        !reports_in(&reports, "minutely-").is_empty()
    });
    let csv_path = &reports_in(&reports, "minutely-")[0];
    let csv = std::fs::read_to_string(csv_path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(COLUMNS));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.iter()
            .filter(|l| l.contains(",auth_failure,") && l.contains(",eve,"))
            .count(),
        3,
        "{csv}"
    );
    assert!(rows.iter().any(|l| l.contains(",monitor_start,")), "{csv}");
    let mode = std::fs::metadata(csv_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        reports_in(&reports, ".").is_empty(),
        "no temporary file left"
    );
    let m = daemon.get("/metrics").1;
    assert!(
        metric(&m, "regwatch_report_runs_total{report=\"minutely\"}").unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "regwatch_report_failures_total{report=\"minutely\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "regwatch_report_last_rows{report=\"minutely\"}"),
        Some(rows.len() as f64)
    );
    // Its schedule (Mondays at 06:00) has not come; `report run` is not a scheduled run.
    assert_eq!(
        metric(&m, "regwatch_report_runs_total{report=\"failed-logins\"}"),
        Some(0.0)
    );
    daemon.stop();
}

#[test]
fn report_mistakes_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regwatch.toml");
    std::fs::write(
        &path,
        r#"[[registry]]
name = "main"
url = "http://127.0.0.1:5000"

[[report]]
name = "weekly"
schedule = "0 0 6 * * MON"
format = "pdf"
action = "pushed"
registry = "other"
output = "missing/{name}.csv"
channels = ["hook", "nowhere"]

[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
"#,
    )
    .unwrap();
    let (code, _, err) = regwatch(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    let p = path.display();
    for want in [
        format!("{p}:7:1: report[0].schedule: expected a 5-field crontab expression"),
        format!(
            "{p}:8:1: report[0].format: unknown format \"pdf\": expected csv, json, ndjson or html"
        ),
        format!("{p}:9:1: report[0].action: unknown action \"pushed\""),
        format!("{p}:10:1: report[0].registry: no [[registry]] is named \"other\""),
        format!(
            "{p}:11:1: report[0].output: directory {}/missing does not exist",
            dir.path().display()
        ),
        format!(
            "{p}:12:1: report[0].channels[0]: channel \"hook\" is a webhook channel: reports are mailed, so only email channels can carry them"
        ),
        format!("{p}:12:1: report[0].channels[1]: no [[channel]] is named \"nowhere\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}
