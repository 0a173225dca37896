//! The shipped Prometheus rules and Grafana dashboard against the real thing: promtool
//! checks and unit-tests the rules, checks regwatch's /metrics, and a real Prometheus
//! scraping a real regwatch (watching a real registry behind nginx) evaluates every
//! dashboard query and loads every rule.

use crate::support::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool(args: &[&str]) -> std::process::Output {
    require("promtool", "prometheus");
    Command::new("promtool")
        .args(args)
        .current_dir(format!("{ROOT}/alerts"))
        .output()
        .unwrap()
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let out = promtool(&["check", "rules", "regwatch.rules.yml"]);
    assert_ok(&out, "promtool check rules");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 10 rules found"));
    assert_ok(
        &promtool(&["test", "rules", "regwatch.rules.test.yml"]),
        "promtool test rules",
    );
}

/// Every `regwatch_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"regwatch_[a-z_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

fn dashboard_exprs() -> Vec<String> {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/dashboards/regwatch.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

#[test]
fn metrics_dashboard_and_rules_work_against_a_real_prometheus() {
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let images = Images::build();
    let config = ConfigBuilder::new(&registry.url())
        .login(ALICE)
        .registry("poll_interval", "2s")
        .registry("probe_interval", "1s")
        .registry("storage_root", registry.storage())
        .registry("storage_interval", "2s")
        .registry("storage_usage_interval", "1s")
        .extra(&format!(
            r#"[[log]]
name = "nginx-access"
registry = "main"
path = "{}"
format = "nginx_combined"
[[report]]
name = "weekly-audit"
schedule = "0 6 * * MON"
format = "html"
output = "{{dir}}/audit-{{date}}.html"
[[retention]]
name = "stale"
keep_pulled_within = "30d"

[[forward]]
name = "siem"
kind = "syslog"
address = "127.0.0.1:{}"
"#,
            nginx.access_log().display(),
            free_port()
        ))
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-rules-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config, &[]);
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
        &skopeo_pull(&nginx.host(), "team/app:1.0", BOB, &pulled.path().join("a")),
        "pull",
    );
    wait_until(
        Duration::from_secs(20),
        "an inventory and a storage walk",
        || {
            let m = daemon.get("/metrics").1;
            metric(&m, "regwatch_registry_repositories{registry=\"main\"}") == Some(1.0)
                && metric(&m, "regwatch_storage_blobs{registry=\"main\"}").unwrap_or(0.0) > 0.0
                && metric(&m, "regwatch_pulls_total{registry=\"main\"}").unwrap_or(0.0) > 0.0
        },
    );
    let text = daemon.get("/metrics").1;

    // promtool's linter accepts the exposition.
    require("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, "promtool check metrics");

    // Every metric the dashboard and the rules use is one regwatch exports. Two gauges need
    // hours of history (the growth trend) and are absent before; they are named in /metrics'
    // source, which the README documents.
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let rules = std::fs::read_to_string(format!("{ROOT}/alerts/regwatch.rules.yml")).unwrap();
    let mut used: BTreeSet<String> = metric_names(&rules);
    for e in dashboard_exprs() {
        used.extend(metric_names(&e));
    }
    let need_history = [
        "regwatch_storage_days_until_full",
        "regwatch_storage_growth_bytes_per_day",
    ];
    for name in &used {
        assert!(
            exported.contains(name) || need_history.contains(&name.as_str()),
            "{name} is used but not exported:\n{text}"
        );
    }

    // A real Prometheus scrapes regwatch, loads the rules and answers every dashboard query.
    require("prometheus", "prometheus");
    let prom_dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    std::fs::write(
        prom_dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {ROOT}/alerts/regwatch.rules.yml\nscrape_configs:\n  - job_name: regwatch\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            daemon.port
        ),
    )
    .unwrap();
    let mut prom = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        &prom_dir.path().join("stdout.log"),
        &prom_dir.path().join("stderr.log"),
    );
    prom.wait_port(prom_port);
    // Prometheus opens its port before the TSDB is loaded and answers 503 (plain
    // text) until then; on a slow machine that window is long enough to be hit.
    wait_until(Duration::from_secs(60), "Prometheus /-/ready", || {
        matches!(http_get(prom_port, "/-/ready"), Ok((200, _)))
    });
    let query = |q: &str| -> serde_json::Value {
        let url = format!("http://127.0.0.1:{prom_port}/api/v1/query");
        let resp = reqwest::blocking::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
            .unwrap();
        let status = resp.status();
        let body = resp.text().unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("Prometheus answered {status} to {q:?}, not JSON ({e}): {body}")
        })
    };
    wait_until(
        Duration::from_secs(20),
        "Prometheus to scrape regwatch twice",
        || {
            let v = query("count_over_time(regwatch_registry_up{registry=\"main\"}[1m])");
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0)
                >= 2.0
        },
    );
    let up = query("regwatch_registry_up{registry=~\".*\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    for e in dashboard_exprs() {
        let q = e
            .replace("$registry", ".*")
            .replace("$job", ".*")
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        let v = query(&q);
        assert_eq!(v["status"], "success", "dashboard query {q:?} failed: {v}");
    }
    let rules: serde_json::Value =
        serde_json::from_str(&http_get(prom_port, "/api/v1/rules").unwrap().1).unwrap();
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 10);
    for r in loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
}
