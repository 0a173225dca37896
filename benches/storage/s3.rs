//! The storage walk on S3: the generated tree (2,000 repositories, 20,000 blobs) uploaded to
//! a real SeaweedFS, unfinished uploads as real multipart uploads; then, in one run on the
//! same bucket:
//!
//! 1. `regwatch storage` without a database (a first walk: every manifest is read),
//! 2. the daemon (`regwatch run`) until a walk of its makes no GET (its manifest cache is in
//!    the store), stopped,
//! 3. `regwatch storage` again, on the daemon's database (a second walk: lists only),
//! 4. `docker-registry garbage-collect --dry-run` on the same bucket.
//!
//! Each is a process timed by the wall clock; requests are what SeaweedFS itself counted
//! while it ran (it files ListMultipartUploads and ListParts under GET), next to what
//! regwatch says it made. The reclaimable blobs are checked equal to GC's.

use super::support::{Proc, S3_KEYS, SeaweedFs, free_port, http_get, metric, scrub_env};
use super::{Generated, Shape, generate};
use rusty_s3::actions::{CreateMultipartUpload, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BUCKET: &str = "registry";
const ROOT: &str = "bench";
const UPLOAD_THREADS: usize = 8;

pub fn run(args: &[String]) {
    let full = args.iter().any(|a| a == "--bench");
    let repos: usize = args
        .iter()
        .position(|a| a == "--s3-repos")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--s3-repos N"))
        .unwrap_or(if full { 2000 } else { 20 });
    // 9 blobs per repository plus the shared layers and orphans: 20,000 at 2,000.
    let shape = Shape {
        shared_layers: (repos / 2).max(4),
        images_per_repo: 3,
        orphans: (repos / 2).max(4),
    };
    let work = tempfile::Builder::new()
        .prefix("regwatch-s3-bench-")
        .tempdir()
        .unwrap();
    let tree = work.path().join("tree");
    let g = generate(&tree, repos, shape);
    let mut s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let t = Instant::now();
    let (objects, multipart) = upload(&s3, &tree);
    println!(
        "\n# regwatch storage benchmark on S3 (SeaweedFS, {} cores)\n\n{repos} repositories, {} blobs ({} bytes of blob data), {objects} objects and {multipart} unfinished multipart uploads, uploaded in {:.1} s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        g.blobs,
        g.blob_bytes,
        t.elapsed().as_secs_f64()
    );
    let config = regwatch_config(work.path(), &s3);
    let gc_config = gc_config(work.path(), &s3);

    let first = cli_walk(&s3, &config);
    let daemon = daemon_walks(work.path(), &config);
    let second = cli_walk(&s3, &config);
    let before = s3.requests(BUCKET);
    let gc = measured(
        scrub_env(&mut Command::new("docker-registry"))
            .args(["garbage-collect", "--dry-run"])
            .arg(&gc_config),
    );
    let gc_seen = seen(&before, &s3.requests(BUCKET));
    let gc_eligible = String::from_utf8_lossy(&gc.out)
        .lines()
        .filter(|l| l.starts_with("blob eligible for deletion: "))
        .count() as u64;

    check(&g, &first, &second, gc_eligible);
    report(&first, &daemon, &second, &gc, &gc_seen, gc_eligible);
}

/// A finished process: wall time, CPU seconds (user + system), peak RSS, stdout.
struct Measured {
    time: Duration,
    cpu: f64,
    rss_kib: u64,
    out: Vec<u8>,
}

/// Runs `cmd` under GNU time.
fn measured(cmd: &mut Command) -> Measured {
    assert!(
        Path::new("/usr/bin/time").is_file(),
        "/usr/bin/time missing: apt-get install -y time"
    );
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "TIME %U %S %M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let t = Instant::now();
    let out = timed.output().unwrap();
    let time = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?} failed:\n{stderr}",
        cmd.get_program()
    );
    let f: Vec<f64> = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("TIME "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Measured {
        time,
        cpu: f.first().unwrap_or(&0.0) + f.get(1).unwrap_or(&0.0),
        rss_kib: f.get(2).copied().unwrap_or(0.0) as u64,
        out: out.stdout,
    }
}

/// One timed walk and what it said.
struct Walk {
    time: Duration,
    cpu: f64,
    rss_kib: u64,
    /// Requests SeaweedFS answered meanwhile, by its type.
    seen: BTreeMap<String, u64>,
    report: serde_json::Value,
}

fn seen(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn cli_walk(s3: &SeaweedFs, config: &Path) -> Walk {
    let before = s3.requests(BUCKET);
    let m = measured(
        Command::new(env!("CARGO_BIN_EXE_regwatch"))
            .args(["storage", "--format", "json", "--config"])
            .arg(config),
    );
    let v: serde_json::Value = serde_json::from_slice(&m.out).unwrap();
    Walk {
        time: m.time,
        cpu: m.cpu,
        rss_kib: m.rss_kib,
        seen: seen(&before, &s3.requests(BUCKET)),
        report: v["registries"][0]["walk"].clone(),
    }
}

/// The daemon walks until one of its walks makes no GET: its cache is committed then.
/// Returns that walk's own duration and requests (from its metrics).
fn daemon_walks(dir: &Path, config: &Path) -> (f64, f64, f64) {
    let port = free_port();
    let text = fs::read_to_string(config).unwrap();
    let daemon_config = dir.join("daemon.toml");
    fs::write(
        &daemon_config,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n{text}"),
    )
    .unwrap();
    let mut proc = Proc::spawn(
        "regwatch",
        Command::new(env!("CARGO_BIN_EXE_regwatch"))
            .args(["run", "--config"])
            .arg(&daemon_config),
        &dir.join("daemon.out"),
        &dir.join("daemon.err"),
    );
    proc.wait_port(port);
    let value = |series: &str| {
        http_get(port, "/metrics")
            .ok()
            .and_then(|(_, text)| metric(&text, series))
    };
    let last = "regwatch_storage_walk_last_success_timestamp_seconds{registry=\"bench\"}";
    let gets = "regwatch_storage_walk_requests_total{kind=\"get\",registry=\"bench\"}";
    let lists = "regwatch_storage_walk_requests_total{kind=\"list\",registry=\"bench\"}";
    let duration = "regwatch_storage_walk_duration_seconds{registry=\"bench\"}";
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut previous: Option<(f64, f64, f64)> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the daemon's walks never settled"
        );
        assert!(proc.is_running(), "regwatch died:\n{}", proc.stderr());
        if let (Some(t), Some(g), Some(l)) = (value(last), value(gets), value(lists)) {
            match previous {
                Some((pt, pg, pl)) if t > pt && g == pg => {
                    let d = value(duration).unwrap();
                    proc.signal("TERM");
                    proc.wait_exit(Duration::from_secs(30))
                        .expect("regwatch stops on SIGTERM");
                    return (d, l - pl, g - pg);
                }
                Some((pt, ..)) if t == pt => {}
                _ => previous = Some((t, g, l)),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check(g: &Generated, first: &Walk, second: &Walk, gc_eligible: u64) {
    for w in [first, second] {
        assert_eq!(w.report["blobs"], g.blobs);
        assert_eq!(w.report["blob_bytes"], g.blob_bytes);
        assert_eq!(
            w.report["reclaimable_blobs"], gc_eligible,
            "regwatch and garbage-collect disagree on the bucket"
        );
        assert_eq!(w.report["reclaimable_blobs"], g.reclaimable);
        assert_eq!(w.report["uploads"], g.uploads);
    }
    assert_eq!(first.report["requests"]["get"], g.manifests);
    assert_eq!(
        second.report["requests"]["get"], 0,
        "the second walk read no manifest"
    );
    assert_eq!(second.report["cached_manifests"], g.manifests);
}

fn requests(seen: &BTreeMap<String, u64>) -> String {
    seen.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(
    first: &Walk,
    daemon: &(f64, f64, f64),
    second: &Walk,
    gc: &Measured,
    gc_seen: &BTreeMap<String, u64>,
    gc_eligible: u64,
) {
    let ours = |w: &Walk| {
        format!(
            "{} list, {} get",
            w.report["requests"]["list"], w.report["requests"]["get"]
        )
    };
    let row = |run: &str, time: f64, cpu: f64, rss: u64, seen: &str, ours: &str, result: &str| {
        println!("| {run} | {time:.2} s | {cpu:.2} s | {rss} KiB | {seen} | {ours} | {result} |");
    };
    println!(
        "\n| run | time | CPU | peak RSS | S3 requests (SeaweedFS's count) | regwatch's count | result |\n|---|---|---|---|---|---|---|"
    );
    row(
        "regwatch storage, first walk (no cache)",
        first.time.as_secs_f64(),
        first.cpu,
        first.rss_kib,
        &requests(&first.seen),
        &ours(first),
        &format!(
            "{} reclaimable blobs ({} bytes), {} uploads",
            first.report["reclaimable_blobs"],
            first.report["reclaimable_bytes"],
            first.report["uploads"]
        ),
    );
    println!(
        "| regwatch run, a walk with the manifest cache (its own duration metric) | {:.2} s | | | | {} list, {} get | |",
        daemon.0, daemon.1, daemon.2
    );
    row(
        "regwatch storage, second walk (the daemon's cache)",
        second.time.as_secs_f64(),
        second.cpu,
        second.rss_kib,
        &requests(&second.seen),
        &ours(second),
        &format!("{} cached manifests", second.report["cached_manifests"]),
    );
    row(
        "docker-registry garbage-collect --dry-run",
        gc.time.as_secs_f64(),
        gc.cpu,
        gc.rss_kib,
        &requests(gc_seen),
        "",
        &format!("{gc_eligible} blobs eligible"),
    );
    println!(
        "\nGC dry run / first walk: {:.1}x (target >= 5x); GC dry run / second walk: {:.1}x; second walk manifest GETs: {}",
        gc.time.as_secs_f64() / first.time.as_secs_f64(),
        gc.time.as_secs_f64() / second.time.as_secs_f64(),
        second.report["requests"]["get"]
    );
}

fn regwatch_config(dir: &Path, s3: &SeaweedFs) -> PathBuf {
    let path = dir.join("regwatch.toml");
    fs::write(
        &path,
        format!(
            "[database]\npath = \"{}\"\n\n[[registry]]\nname = \"bench\"\n# Not polled: only the walks talk to S3.\nurl = \"http://127.0.0.3:9\"\nstorage_interval = \"1s\"\nupload_max_age = \"1s\"\ncapacity_bytes = {}\n[registry.s3]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nroot_directory = \"/{ROOT}\"\naccess_key = \"{}\"\nsecret_key = \"{}\"\n",
            dir.join("regwatch.db").display(),
            1u64 << 40,
            s3.endpoint(),
            S3_KEYS.0,
            S3_KEYS.1
        ),
    )
    .unwrap();
    path
}

fn gc_config(dir: &Path, s3: &SeaweedFs) -> PathBuf {
    let path = dir.join("gc.yml");
    fs::write(
        &path,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {BUCKET}\n    rootdirectory: /{ROOT}\n    forcepathstyle: true\n    secure: false\n    v4auth: true\n  delete:\n    enabled: true\n",
            S3_KEYS.0,
            S3_KEYS.1,
            s3.endpoint()
        ),
    )
    .unwrap();
    path
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// Uploads every file of the tree under `ROOT/`; an upload's `data` becomes an unfinished
/// multipart upload (as the s3-aws driver leaves it), everything else an object. Returns
/// how many objects and multipart uploads were made.
fn upload(s3: &SeaweedFs, tree: &Path) -> (usize, usize) {
    let mut all = Vec::new();
    files(tree, &mut all);
    let bucket = Bucket::new(
        s3.endpoint().parse().unwrap(),
        UrlStyle::Path,
        BUCKET,
        "us-east-1",
    )
    .unwrap();
    let creds = Credentials::new(S3_KEYS.0, S3_KEYS.1);
    let http = reqwest::blocking::Client::new();
    let queue = Mutex::new(all);
    let counts = Mutex::new((0, 0));
    let sign = Duration::from_secs(3600);
    std::thread::scope(|scope| {
        for _ in 0..UPLOAD_THREADS {
            scope.spawn(|| {
                loop {
                    let Some(path) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let rel = path.strip_prefix(tree).unwrap().display().to_string();
                    let key = format!("{ROOT}/{rel}");
                    let body = fs::read(&path).unwrap();
                    let send = |req: reqwest::blocking::RequestBuilder| {
                        let r = req.send().unwrap();
                        assert!(r.status().is_success(), "{key}: {}", r.status());
                        r.text().unwrap()
                    };
                    if rel.contains("/_uploads/") && rel.ends_with("/data") {
                        let url = bucket
                            .create_multipart_upload(Some(&creds), &key)
                            .sign(sign);
                        let created = send(http.post(url));
                        let created = CreateMultipartUpload::parse_response(&created).unwrap();
                        let url = bucket
                            .upload_part(Some(&creds), &key, 1, created.upload_id())
                            .sign(sign);
                        send(http.put(url).body(body));
                        counts.lock().unwrap().1 += 1;
                    } else {
                        let url = bucket.put_object(Some(&creds), &key).sign(sign);
                        send(http.put(url).body(body));
                        counts.lock().unwrap().0 += 1;
                    }
                }
            });
        }
    });
    counts.into_inner().unwrap()
}
