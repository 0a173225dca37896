//! Scheduled reports (`[[report]]`): written by the daemon when the schedule fires and by
//! `regwatch report run NAME` at once, from a real audit trail (failed logins read from a
//! log), private to their owner, and checked by `regwatch check`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::*;

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

#[test]
fn reports_are_written_on_schedule_and_on_demand() {
    let dir = tempfile::Builder::new()
        .prefix("regwatch-reports-")
        .tempdir()
        .unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let log = dir.path().join("access.log");
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap();
    let line =
        format!("10.0.0.5 - eve [{stamp}] \"GET /v2/ HTTP/1.1\" 401 179 \"-\" \"docker/27.0\"\n");
    std::fs::write(&log, line.repeat(3)).unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[database]
path = "{{dir}}/regwatch.db"
[[registry]]
name = "main"
url = "http://127.0.0.1:9"
[[log]]
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
"#,
        log.display()
    );
    let daemon = Daemon::start_in(dir, &config, &[]);
    let db = daemon.db_path();
    wait_until(Duration::from_secs(10), "three failed logins", || {
        sqlite3(
            &db,
            "SELECT count(*) FROM audit_events WHERE action = 'auth_failure'",
        )
        .trim()
            == "3"
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
    let head = out.trim().rsplit(' ').next().unwrap().trim_end_matches(')');
    let html = std::fs::read_to_string(&html_path[0]).unwrap();
    assert!(html.contains(head), "the report carries the chain head");
    assert!(html.contains("eve") && html.contains("10.0.0.5"));
    let mode = std::fs::metadata(&html_path[0])
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, _, err) = regwatch(&["report", "run", "nope", "--config", &cfg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no [[report]] is named \"nope\" (configured: minutely, failed-logins)"),
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
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}
