//! The storage monitor against a real registry's storage after real pushes and deletes, with
//! `docker-registry garbage-collect` as the oracle for what is reclaimable.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub(crate) fn curl(args: &[&str]) -> String {
    require("curl", "curl");
    let out = Command::new("curl")
        .args(["-sS", "-u", "alice:alice-pass"])
        .args(args)
        .output()
        .unwrap();
    assert_ok(&out, &format!("curl {args:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header(response: &str, name: &str) -> String {
    response
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} header in:\n{response}"))
}

pub(crate) fn manifest_digest(base: &str, repo: &str, tag: &str) -> String {
    let r = curl(&[
        "-I",
        "-H",
        ACCEPT,
        &format!("{base}/v2/{repo}/manifests/{tag}"),
    ]);
    header(&r, "Docker-Content-Digest")
}

pub(crate) fn delete_manifest(base: &str, repo: &str, digest: &str) {
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "DELETE",
        &format!("{base}/v2/{repo}/manifests/{digest}"),
    ]);
    assert_eq!(code, "202", "DELETE {repo}@{digest}");
}

/// Starts an upload and returns its absolute Location.
pub(crate) fn start_upload(base: &str, repo: &str) -> String {
    let r = curl(&[
        "-i",
        "-X",
        "POST",
        &format!("{base}/v2/{repo}/blobs/uploads/"),
    ]);
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    let loc = header(&r, "Location");
    if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    }
}

/// `blob eligible for deletion: sha256:…` lines of a garbage-collect run.
pub(crate) fn gc_eligible(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("blob eligible for deletion: "))
        .map(|d| d.trim().to_string())
        .collect()
}

pub(crate) fn garbage_collect(config: &Path, dry_run: bool) -> String {
    require("docker-registry", "docker-registry");
    let mut cmd = Command::new("docker-registry");
    scrub_env(&mut cmd).arg("garbage-collect");
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.arg(config).output().unwrap();
    assert_ok(&out, "docker-registry garbage-collect");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of the `data` files under `blobs/`: the bytes GC frees are the difference.
pub(crate) fn blob_data_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            total += blob_data_bytes(&e.path());
        } else if e.file_name() == "data" {
            total += e.metadata().unwrap().len();
        }
    }
    total
}

fn find_sizes(root: &Path, path_glob: &str) -> u64 {
    let out = Command::new("find")
        .arg(root)
        .args(["-path", path_glob, "-type", "f", "-printf", "%s\n"])
        .output()
        .unwrap();
    assert_ok(&out, "find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum()
}

fn storage_config(dir: &Path, storage: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("regwatch.toml");
    std::fs::write(
        &path,
        ConfigBuilder::new(url)
            .no_server()
            .database(dir.join("regwatch.db"))
            .name("local")
            .registry("storage_root", storage)
            .extra(extra)
            .build(),
    )
    .unwrap();
    path
}

pub(crate) fn storage_json(config: &Path) -> serde_json::Value {
    let (code, out, err) = regwatch(&[
        "storage",
        "--config",
        &config.display().to_string(),
        "--format",
        "json",
        "--list-reclaimable",
    ]);
    assert_eq!(code, 0, "regwatch storage failed:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["registries"][0].clone()
}

#[test]
fn the_gc_output_parser_reads_the_real_sample() {
    let set = gc_eligible(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gc-dry-run.txt"
    )));
    assert_eq!(set.len(), 6);
    assert!(
        set.contains("sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4")
    );
}

#[test]
fn reclaimable_blobs_and_bytes_are_what_garbage_collect_deletes() {
    let registry = Registry::start(RegistryOptions::default());
    let images = Images::build();
    let host = registry.host();
    let base = registry.url();
    for (img, dest) in [
        ("base-1.0", "team/base:1.0"),
        ("app-1.0", "team/app:1.0"),
        ("app-1.1", "team/app:1.1"),
        ("app-1.0", "deep/nested/app:1.0"),
        ("tool-0.1", "tools/tool:0.1"),
        ("tool-0.1", "scratch/doomed:1.0"),
    ] {
        assert_ok(
            &skopeo_push(&images.reference(img), &host, dest, ALICE),
            &format!("push {dest}"),
        );
    }
    // Multi-platform: an index over base-1.0 (amd64) and an arm64 variant that only the
    // index reaches. team/multi keeps its index; scratch/multi-gone's own index (another
    // digest over the same children) is deleted. GC without --delete-untagged still marks
    // the children through their revision links, so only that index blob goes.
    images.add_multi_platform_index("base-1.0", "multi", "kept");
    let gone_index = images.add_multi_platform_index("base-1.0", "multi-gone", "deleted");
    for (img, dest) in [
        ("multi", "team/multi:1.0"),
        ("multi-gone", "scratch/multi-gone:1.0"),
    ] {
        assert_ok(
            &skopeo_push_all(&images.reference(img), &host, dest, ALICE),
            &format!("push --all {dest}"),
        );
    }
    assert_eq!(
        manifest_digest(&base, "scratch/multi-gone", "1.0"),
        gone_index
    );
    delete_manifest(&base, "scratch/multi-gone", &gone_index);
    // app-1.1's manifest, config and own layer lose their last reference; app-1.0 stays
    // alive through deep/nested/app; doomed shares everything with tools/tool.
    let d = manifest_digest(&base, "team/app", "1.1");
    delete_manifest(&base, "team/app", &d);
    let d = manifest_digest(&base, "scratch/doomed", "1.0");
    delete_manifest(&base, "scratch/doomed", &d);
    // A monolithic blob upload nothing references.
    let body = b"a blob that no manifest references\n";
    let digest = format!("sha256:{}", sha256_hex(body));
    let loc = start_upload(&base, "scratch/api");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        std::str::from_utf8(body).unwrap(),
        &format!("{loc}{sep}digest={digest}"),
    ]);
    assert_eq!(code, "201");
    // Upload debris: one abandoned half-way, one cancelled.
    let abandoned = start_upload(&base, "scratch/abandoned");
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        "half an upload that is never finished",
        &abandoned,
    ]);
    let cancelled = start_upload(&base, "scratch/cancelled");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "DELETE",
        &cancelled,
    ]);
    assert_eq!(code, "204");
    std::thread::sleep(Duration::from_millis(1100));

    let work = tempfile::tempdir().unwrap();
    let config = storage_config(
        work.path(),
        &registry.storage(),
        &base,
        "upload_max_age = \"1s\"\n",
    );
    let ours = storage_json(&config);
    let walk = &ours["walk"];
    let our_set: BTreeSet<String> = walk["reclaimable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    // The oracle, on the same storage.
    let gc_set = gc_eligible(&garbage_collect(&registry.config_path(), true));
    assert_eq!(our_set, gc_set, "regwatch vs garbage-collect --dry-run");
    assert_eq!(
        gc_set.len(),
        5,
        "app-1.1 manifest, config, layer + the lone blob + the deleted index"
    );
    assert!(gc_set.contains(&digest));
    assert!(gc_set.contains(&gone_index));
    assert_eq!(walk["reclaimable_blobs"], gc_set.len() as u64);

    // A real GC on a copy frees exactly the reclaimable bytes from blob data.
    let copy = work.path().join("gc-copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(registry.storage())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let reg_conf = std::fs::read_to_string(registry.config_path()).unwrap();
    let storage = registry.storage().display().to_string();
    let line = format!("rootdirectory: {storage}\n");
    assert!(reg_conf.contains(&line), "{reg_conf}");
    let copy_conf = work.path().join("gc-copy.yml");
    std::fs::write(
        &copy_conf,
        reg_conf.replace(&line, &format!("rootdirectory: {}\n", copy.display())),
    )
    .unwrap();
    let blobs = copy.join("docker/registry/v2/blobs");
    let before = blob_data_bytes(&blobs);
    assert_eq!(walk["blob_bytes"].as_u64().unwrap(), before);
    let real = garbage_collect(&copy_conf, false);
    assert_eq!(gc_eligible(&real), gc_set);
    let freed = before - blob_data_bytes(&blobs);
    assert_eq!(walk["reclaimable_bytes"].as_u64().unwrap(), freed);
    assert!(
        freed > 16 * 1024,
        "app-1.1's own layer alone is 24 KiB of random data"
    );
    // And after the GC, nothing is left to reclaim.
    let after_dir = tempfile::tempdir().unwrap();
    let after = storage_json(&storage_config(after_dir.path(), &copy, &base, ""));
    assert_eq!(after["walk"]["reclaimable_blobs"], 0);
    assert_eq!(
        after["walk"]["blob_bytes"].as_u64().unwrap(),
        before - freed
    );

    // Both debris uploads are found (the cancelled one left only its hash state).
    let repos = registry.storage().join("docker/registry/v2/repositories");
    let cancelled_dir = repos.join("scratch/cancelled/_uploads");
    assert_eq!(std::fs::read_dir(&cancelled_dir).unwrap().count(), 1);
    assert_eq!(walk["uploads"], 2, "{walk:#}");
    assert_eq!(walk["stale_uploads"], 2, "{walk:#}");
    assert_eq!(
        walk["upload_bytes"].as_u64().unwrap(),
        find_sizes(&repos, "*/_uploads/*"),
        "{walk:#}"
    );
    assert!(walk["upload_bytes"].as_u64().unwrap() >= 37);
    // With the default age (24h) they are too young to be debris.
    let young = storage_json(&storage_config(
        after_dir.path(),
        &registry.storage(),
        &base,
        "",
    ));
    assert_eq!(young["walk"]["stale_uploads"], 0);
    assert_eq!(young["walk"]["upload_bytes"], 0);

    // Repositories as the catalog counts them, nested names included, largest first.
    let top = walk["top_repositories"].as_array().unwrap();
    let names: Vec<&str> = top.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for n in ["team/base", "team/app", "deep/nested/app", "tools/tool"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(
        top.windows(2)
            .all(|w| w[0]["bytes"].as_u64() >= w[1]["bytes"].as_u64())
    );
    let app = top.iter().find(|r| r["name"] == "team/app").unwrap();
    assert_eq!(
        app["manifests"], 1,
        "the deleted revision has no link: {app}"
    );

    // Used ratio as df computes it for the same path.
    let (used, avail) = df(&registry.storage());
    let nums = [used as f64, avail as f64];
    let df_ratio = nums[0] / (nums[0] + nums[1]);
    let ratio = ours["usage"]["used_ratio"].as_f64().unwrap();
    assert!(
        (ratio - df_ratio).abs() < 0.002,
        "ours {ratio} vs df {df_ratio}"
    );
    // df's "Avail" is f_bavail: what the registry, not root, can still write.
    let avail = ours["usage"]["available_bytes"].as_f64().unwrap();
    assert!(
        (avail - nums[1]).abs() <= 0.01 * nums[1] + 1e6,
        "ours {avail} vs df {}",
        nums[1]
    );

    // The table a person reads.
    let (code, table, err) = regwatch(&["storage", "--config", &config.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let freed_line = format!(
        "in {} blobs (what `docker-registry garbage-collect` would delete)",
        gc_set.len()
    );
    assert!(table.contains(&freed_line), "{table}");
    assert!(
        table.contains("uploads      2 unfinished, 2 older than 1s"),
        "{table}"
    );
    assert!(table.contains("deep/nested/app"), "{table}");
    assert!(
        table.contains("trend        not enough history yet"),
        "{table}"
    );
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn the_daemon_exports_storage_metrics_and_keeps_usage_samples() {
    let registry = Registry::start(RegistryOptions::default());
    let images = Images::build();
    let host = registry.host();
    assert_ok(
        &skopeo_push(&images.reference("base-1.0"), &host, "team/base:1.0", ALICE),
        "push",
    );
    let config = ConfigBuilder::new(&registry.url())
        .name("local")
        .registry("storage_root", registry.storage())
        .registry("storage_usage_interval", "1s")
        .registry("storage_interval", "1s")
        .registry("forecast_window", "1m")
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-daemon-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config, &[]);
    let scrape = || daemon.get("/metrics").1;
    let value = |series: &str| metric(&scrape(), series);

    // base-1.0: manifest, config, two layers.
    wait_until(Duration::from_secs(20), "the first walk", || {
        value("regwatch_storage_blobs{registry=\"local\"}") == Some(4.0)
    });
    let blobs_dir = registry.storage().join("docker/registry/v2/blobs");
    assert_eq!(
        value("regwatch_storage_blob_bytes{registry=\"local\"}"),
        Some(blob_data_bytes(&blobs_dir) as f64)
    );
    assert_eq!(
        value("regwatch_storage_reclaimable_bytes{registry=\"local\"}"),
        Some(0.0)
    );
    let ratio = value("regwatch_storage_used_ratio{registry=\"local\"}").unwrap();
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert!(value("regwatch_storage_capacity_bytes{registry=\"local\"}").unwrap() > 0.0);

    // Push and delete an image: the next walk sees its blobs become reclaimable.
    assert_ok(
        &skopeo_push(
            &images.reference("tool-0.1"),
            &host,
            "tools/tool:0.1",
            ALICE,
        ),
        "push",
    );
    let d = manifest_digest(&registry.url(), "tools/tool", "0.1");
    delete_manifest(&registry.url(), "tools/tool", &d);
    wait_until(
        Duration::from_secs(20),
        "reclaimable bytes after a delete",
        || {
            value("regwatch_storage_reclaimable_bytes{registry=\"local\"}").unwrap_or(0.0)
                > 32.0 * 1024.0
        },
    );
    let gc = gc_eligible(&garbage_collect(&registry.config_path(), true));
    assert_eq!(
        value("regwatch_storage_reclaimable_blobs{registry=\"local\"}"),
        Some(gc.len() as f64)
    );

    // No trend before half the window has samples; then one, with days until full or +Inf.
    assert_eq!(
        value("regwatch_storage_growth_bytes_per_day{registry=\"local\"}"),
        None
    );
    wait_until(
        Duration::from_secs(60),
        "a trend over half the window",
        || value("regwatch_storage_days_until_full{registry=\"local\"}").is_some(),
    );
    let days = value("regwatch_storage_days_until_full{registry=\"local\"}").unwrap();
    assert!(days > 0.0, "{days}");
    assert!(value("regwatch_storage_growth_bytes_per_day{registry=\"local\"}").is_some());
    let db = daemon.db_path();
    let dir = daemon.stop();
    let n: u64 = sqlite3(
        &db,
        "SELECT count(*) FROM storage_samples WHERE registry = 'local'",
    )
    .trim()
    .parse()
    .unwrap();
    assert!(n >= 30, "{n} samples");
    drop(dir);
}
