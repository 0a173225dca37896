//! Log-parsing benchmark: regwatch's full path (read, split lines, parse nginx combined,
//! classify, windows, counters) over generated registry traffic, next to mtail running an
//! equivalent program over the same file and `wc -l`, in the same run.
//!
//!     cargo bench --bench logparse            # 1,000,000 and 5,000,000 lines
//!     LOGPARSE_LINES=10000000 cargo bench --bench logparse
//!
//! Needs mtail (apt-get install -y mtail). Under `cargo test --all-targets` (no `--bench`) it
//! runs a quick 20,000-line check instead, and compares the counts with mtail's when mtail is
//! installed.

use regwatch::formats::log::LogFormat;
use regwatch::metrics::Metrics;
use regwatch::model::traffic::RegistryStats;
use regwatch::sources::tail::follower::{Follower, StartAt};
use regwatch::sources::tail::lines::LineHandler;
use std::io::{BufWriter, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A deterministic mix of registry traffic as nginx logs it (combined format).
fn generate(path: &std::path::Path, lines: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let agents = [
        "containerd/1.7.13+unknown",
        "skopeo/1.9.3",
        "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64",
        "curl/7.88.1",
    ];
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = x % 100;
        let ip = format!(
            "10.{}.{}.{}",
            (x >> 8) % 4,
            (x >> 16) % 250,
            (x >> 24) % 250
        );
        let user = format!("user{}", (x >> 32) % 200);
        let repo = format!("team{}/app{}", (x >> 40) % 20, (x >> 44) % 300);
        let digest = format!(
            "sha256:{:016x}{:016x}{:016x}{:016x}",
            x,
            x.rotate_left(17),
            x.rotate_left(31),
            i
        );
        let (s, m) = (i / 60 % 60, i / 3600 % 24);
        let time = format!("28/Nov/2026:{m:02}:{:02}:{s:02} +0000", i % 60);
        let ua = agents[(x >> 50) as usize % agents.len()];
        let (user, req, status, bytes) = match r {
            0..=64 => (
                user.as_str(),
                format!("GET /v2/{repo}/blobs/{digest} HTTP/1.1"),
                200,
                2_000_000 + x % 30_000_000,
            ),
            65..=74 => (
                user.as_str(),
                format!("GET /v2/{repo}/manifests/1.{} HTTP/1.1", x % 9),
                200,
                1_200,
            ),
            75..=79 => (
                user.as_str(),
                format!("HEAD /v2/{repo}/manifests/latest HTTP/1.1"),
                200,
                1_200,
            ),
            80..=84 => (
                user.as_str(),
                format!("GET /v2/{repo}/manifests/9.{} HTTP/1.1", x % 9),
                404,
                96,
            ),
            85..=89 => ("-", "GET /v2/ HTTP/1.1".to_string(), 401, 179),
            90..=91 => (user.as_str(), "GET /v2/ HTTP/1.1".to_string(), 401, 179),
            92..=96 => (
                user.as_str(),
                format!("PATCH /v2/{repo}/blobs/uploads/{:032x} HTTP/1.1", x),
                202,
                0,
            ),
            _ => (
                user.as_str(),
                format!("GET /v2/{repo}/tags/list HTTP/1.1"),
                200,
                80,
            ),
        };
        writeln!(
            out,
            "{ip} - {user} [{time}] \"{req}\" {status} {bytes} \"-\" \"{ua}\""
        )
        .unwrap();
    }
    out.flush().unwrap();
}

const MTAIL_PROGRAM: &str = r#"
counter pulls_total
counter pull_failures_total
counter auth_failures_total

/^(?P<addr>\S+) \S+ (?P<user>\S+) \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-) "[^"]*" "[^"]*"$/ {
  $method =~ /^(?:GET|HEAD)$/ {
    $path =~ /^\/v2\/.+\/(?:manifests|blobs)\// {
      $status != 401 {
        pulls_total++
        $status >= 400 {
          pull_failures_total++
        }
      }
    }
  }
  $status == 401 && $user != "-" {
    auth_failures_total++
  }
}
"#;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// Runs regwatch's pipeline over the file; returns (seconds, pulls, failures, auth failures).
fn ours(path: &std::path::Path) -> (f64, u64, u64, u64) {
    let counters = Metrics::new().log_counters("bench", "main");
    let handler = LineHandler {
        log: "bench".into(),
        registry: "main".into(),
        format: LogFormat::NginxCombined,
        counts: true,
        audit_requests: false,
        stats: Arc::new(Mutex::new(RegistryStats::default())),
        counters: counters.clone(),
        alert_wake: None,
        logins: Default::default(),
    };
    let mut follower = Follower::new("bench", path, StartAt::Beginning, 64 * 1024, None);
    let now = time::OffsetDateTime::now_utc();
    let start = Instant::now();
    let mut events = Vec::new();
    loop {
        let p = follower
            .poll(4 << 20, &mut |line| handler.handle(line, now, &mut events))
            .unwrap();
        // The daemon commits these with the checkpoint; here they are only counted.
        events.clear();
        if !p.more {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(counters.parse_errors.get(), 0);
    (
        secs,
        counters.pulls.get(),
        counters.pull_failures.get(),
        counters.auth_failures.get(),
    )
}

/// mtail --one_shot over the file: (seconds, peak RSS kB, pulls, failures, auth failures).
fn mtail(path: &std::path::Path, dir: &std::path::Path) -> Option<(f64, u64, u64, u64, u64)> {
    if Command::new("mtail").arg("--version").output().is_err() {
        return None;
    }
    let progs = dir.join("progs");
    std::fs::create_dir_all(&progs).unwrap();
    std::fs::write(progs.join("registry.mtail"), MTAIL_PROGRAM).unwrap();
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS %M"])
        .arg("mtail")
        .args([
            "--one_shot",
            "--one_shot_format",
            "prometheus",
            "--logtostderr",
            "--progs",
        ])
        .arg(&progs)
        .arg("--logs")
        .arg(path)
        .output()
        .expect("run mtail");
    let secs = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mtail failed: {stderr}");
    let value = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some((
        secs,
        rss,
        value("pulls_total"),
        value("pull_failures_total"),
        value("auth_failures_total"),
    ))
}

fn wc(path: &std::path::Path) -> f64 {
    let start = Instant::now();
    let out = Command::new("wc").arg("-l").arg(path).output().unwrap();
    assert!(out.status.success());
    start.elapsed().as_secs_f64()
}

/// The bench binary re-run on one file, so that its peak RSS is this size's alone (in one
/// process, what earlier sizes left in the allocator would be counted too).
fn ours_in_own_process(path: &std::path::Path) -> (f64, u64, u64, u64, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(v.len(), 5, "child printed {text:?}");
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
        v[4].parse().unwrap(),
    )
}

const CHILD: &str = "LOGPARSE_CHILD_FILE";

fn main() {
    if let Some(path) = std::env::var_os(CHILD) {
        let (secs, pulls, failures, auth) = ours(std::path::Path::new(&path));
        println!("{secs} {pulls} {failures} {auth} {}", peak_rss_kb());
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    // LOGPARSE_LINES=10000000 (comma-separated) runs other sizes, e.g. to show that peak
    // memory stops growing once the per-address key cap is reached.
    let custom: Option<Vec<u64>> = std::env::var("LOGPARSE_LINES").ok().map(|v| {
        v.split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("LOGPARSE_LINES: comma-separated line counts")
            })
            .collect()
    });
    let sizes: &[u64] = match &custom {
        Some(c) => c,
        None if full => &[1_000_000, 5_000_000],
        None => &[20_000],
    };
    let dir = tempfile::tempdir().unwrap();
    println!("# log parsing: nginx combined, registry traffic (one core for ours)");
    for &n in sizes {
        let path = dir.path().join(format!("access-{n}.log"));
        generate(&path, n);
        let size = std::fs::metadata(&path).unwrap().len();
        // Read it once so every contender starts from the page cache.
        let _ = wc(&path);
        let (secs, pulls, failures, auth, rss) = ours_in_own_process(&path);
        println!("\n## {n} lines ({:.0} MB)", size as f64 / 1e6);
        println!(
            "regwatch: {secs:.2} s = {:.2} M lines/s, peak RSS {} MB (its own process); pulls {pulls}, failures {failures}, auth failures {auth}",
            n as f64 / secs / 1e6,
            rss / 1024,
        );
        let wc_secs = wc(&path);
        println!(
            "wc -l:    {wc_secs:.2} s = {:.1} M lines/s",
            n as f64 / wc_secs / 1e6
        );
        match mtail(&path, dir.path()) {
            Some((m_secs, m_rss, m_pulls, m_failures, m_auth)) => {
                println!(
                    "mtail:    {m_secs:.2} s = {:.3} M lines/s, peak RSS {} MB; pulls {m_pulls}, failures {m_failures}, auth failures {m_auth}",
                    n as f64 / m_secs / 1e6,
                    m_rss / 1024
                );
                println!(
                    "ratios:   regwatch is {:.1}x mtail's speed; wc -l is {:.1}x regwatch's",
                    m_secs / secs,
                    secs / wc_secs
                );
                assert_eq!(
                    (pulls, failures, auth),
                    (m_pulls, m_failures, m_auth),
                    "regwatch and mtail disagree on the counts"
                );
            }
            None if full => panic!("mtail is not installed: apt-get install -y mtail"),
            None => println!(
                "mtail:    not installed (apt-get install -y mtail); skipped in the quick check"
            ),
        }
        std::fs::remove_file(&path).unwrap();
    }
}
