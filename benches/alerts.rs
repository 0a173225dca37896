//! Alert latency benchmark: from the failed login that crosses the threshold (the request
//! sent to nginx) to the webhook notification received, over many trials; next to the same
//! alert built the usual way in the same run: Prometheus scraping the registry's own metrics
//! every 15 s, an alerting rule evaluated every 15 s, Alertmanager (group_wait 0s) posting to
//! the same kind of webhook receiver.
//!
//!     cargo bench --bench alerts                              # 50 trials each
//!     cargo bench --bench alerts -- --trials 100 --baseline-trials 10
//!
//! regwatch: a rule `auth_failures > 10 in 1m, group_by = "user"`; each trial is a new user,
//! so each trial's 11th wrong password fires a new alert. Baseline: nginx answers the wrong
//! passwords itself (the registry never sees them), so they are sent to the registry
//! directly, and Prometheus counts them in the registry's `registry_http_requests_total
//! {handler="base",code="401"}`; trial k has its own rule (the count passed 11 (k + 1) over
//! the start), so trials need not wait for a resolve.
//! Needs docker-registry, nginx, prometheus, prometheus-alertmanager.
//! Under `cargo test --all-targets` (no `--bench`) it runs 5 regwatch trials and no
//! baseline (a baseline trial takes a minute or more).

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::fs;
use std::time::{Duration, Instant};
use support::*;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<34} trials {:>3}  p50 {:>9.1} ms  p99 {:>9.1} ms  min {:>9.1} ms  max {:>9.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[0],
        ms[ms.len() - 1]
    );
}

fn wrong_password(client: &reqwest::blocking::Client, url: &str, user: &str) {
    let status = client
        .get(format!("{url}/v2/"))
        .basic_auth(user, Some("wrong"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let trials = arg(&args, "--trials", if full { 50 } else { 5 });
    let baseline_trials = arg(&args, "--baseline-trials", if full { 50 } else { 0 });
    println!(
        "# regwatch alert latency benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let hook = WebhookSink::start();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[database]
path = "{{dir}}/regwatch.db"
[[registry]]
name = "main"
url = "{}"
[[log]]
name = "nginx-access"
registry = "main"
path = "{}"
format = "nginx_combined"
[[rule]]
name = "guessing"
kind = "auth_failures"
threshold = 10
window = "1m"
group_by = "user"
channels = ["hook"]
[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
        registry.url(),
        nginx.access_log().display(),
        hook.url()
    );
    let daemon = Daemon::start(&config);
    let client = reqwest::blocking::Client::new();
    let mut ms = Vec::new();
    for t in 0..trials {
        let user = format!("trial{t}");
        for _ in 0..10 {
            wrong_password(&client, &nginx.url(), &user);
        }
        // Let the ten be read first, so the clock starts at the line that crosses.
        std::thread::sleep(Duration::from_millis(300));
        let before = hook.received().len();
        let start = Instant::now();
        wrong_password(&client, &nginx.url(), &user);
        let got = hook.wait_for(before + 1, Duration::from_secs(10));
        assert_eq!(
            got.len(),
            before + 1,
            "trial {t}: no notification\n{}",
            daemon.proc.stderr()
        );
        let n = got[before].json();
        assert_eq!(n["labels"]["user"], user.as_str());
        ms.push((got[before].at - start).as_secs_f64() * 1000.0);
    }
    summary("regwatch (nginx log -> webhook)", ms.clone());
    daemon.stop();

    if baseline_trials == 0 {
        println!(
            "baseline (Prometheus + Alertmanager): not run in the quick check; cargo bench --bench alerts runs it"
        );
        return;
    }
    let prom_bin = require("prometheus", "prometheus");
    let am = Alertmanager::start_with_webhook(&hook.url());
    let dir = tempfile::Builder::new()
        .prefix("regwatch-prom-")
        .tempdir()
        .unwrap();
    let debug = format!("127.0.0.1:{}", registry.debug_port);
    // The registry's own count of 401s on /v2/ so far: each baseline trial adds 11, and trial
    // k's rule fires when the count passes c0 + 11 (k + 1). One alert per trial, so trials
    // follow each other without waiting for resolves; the path measured is the usual one:
    // scrape (15 s) → rule evaluation (15 s) → Alertmanager → webhook.
    let (_, text) = http_get(registry.debug_port, "/metrics").unwrap();
    let c0: f64 = parse_metrics(&text)
        .into_iter()
        .filter(|(s, _)| {
            s.starts_with("registry_http_requests_total{")
                && s.contains("handler=\"base\"")
                && s.contains("code=\"401\"")
        })
        .map(|(_, v)| v)
        .sum();
    let mut rules = String::from("groups:\n  - name: registry\n    interval: 15s\n    rules:\n");
    for k in 0..baseline_trials {
        rules.push_str(&format!(
            "      - alert: PasswordGuessing{k}\n        expr: sum(registry_http_requests_total{{handler=\"base\",code=\"401\"}}) >= {}\n",
            c0 + 11.0 * (k as f64 + 1.0)
        ));
    }
    fs::write(dir.path().join("rules.yml"), rules).unwrap();
    fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nrule_files: [\"{}\"]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{}\"]\nscrape_configs:\n  - job_name: registry\n    static_configs:\n      - targets: [\"{debug}\"]\n",
            dir.path().join("rules.yml").display(),
            am.port
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prom = Proc::spawn(
        "prometheus",
        std::process::Command::new(prom_bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        &dir.path().join("stdout.log"),
        &dir.path().join("stderr.log"),
    );
    prom.wait_port(prom_port);
    std::thread::sleep(Duration::from_secs(20));
    let mut base = Vec::new();
    // Trials start at pseudo-random points of the 15 s scrape and evaluation cycles (else
    // each would start right after the previous alert arrived, always in the same phase).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for t in 0..baseline_trials {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(x % 15_000));
        let name = format!("PasswordGuessing{t}");
        for _ in 0..10 {
            wrong_password(&client, &registry.url(), "bob");
        }
        std::thread::sleep(Duration::from_millis(300));
        let before = hook.received().len();
        let start = Instant::now();
        wrong_password(&client, &registry.url(), "bob");
        let deadline = Instant::now() + Duration::from_secs(120);
        let at = loop {
            let got = hook.received();
            if let Some(r) = got[before..].iter().find(|r| {
                r.json()["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["labels"]["alertname"] == name.as_str()))
            }) {
                break r.at;
            }
            assert!(
                Instant::now() < deadline,
                "baseline trial {t}: no alert\n{}",
                am.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        base.push((at - start).as_secs_f64() * 1000.0);
        println!("  baseline trial {t}: {:.0} ms", base[base.len() - 1]);
    }
    summary("regwatch (nginx log -> webhook)", ms);
    summary("Prometheus 15s + rule + Alertmanager", base);
}
