//! The storage monitor on object storage: a real registry (distribution's s3-aws driver) on a
//! real S3 server (SeaweedFS), images pushed with skopeo, `docker-registry garbage-collect`
//! on the same bucket as the oracle for what is reclaimable, SeaweedFS's own filer listing
//! for what is stored and its own request counters for what a walk cost.

use crate::storage::{
    curl, delete_manifest, garbage_collect, gc_eligible, manifest_digest, start_upload,
    storage_json,
};
use crate::support::*;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const BUCKET: &str = "registry";
const ROOT: &str = "/regprefix";

/// SeaweedFS with the bucket, and a registry storing in it.
fn s3_registry(redirect: bool) -> (SeaweedFs, Registry) {
    let mut s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let registry = Registry::start(RegistryOptions {
        s3: Some(S3Backend {
            endpoint: s3.endpoint(),
            bucket: BUCKET.into(),
            root: ROOT.into(),
            keys: (S3_KEYS.0.into(), S3_KEYS.1.into()),
            redirect,
        }),
        ..RegistryOptions::default()
    });
    (s3, registry)
}

/// Blob sizes by digest, from the filer's listing of the bucket (not through S3).
fn stored_blobs(s3: &SeaweedFs) -> HashMap<String, u64> {
    s3.filer_files(&format!("/buckets/{BUCKET}{ROOT}/docker/registry/v2/blobs"))
        .into_iter()
        .filter_map(|(path, size)| {
            let mut parts = path.rsplit('/');
            let (Some("data"), Some(hex)) = (parts.next(), parts.next()) else {
                return None;
            };
            Some((format!("sha256:{hex}"), size))
        })
        .collect()
}

fn sum(files: &[(String, u64)]) -> u64 {
    files.iter().map(|f| f.1).sum()
}

#[test]
fn the_walk_on_s3_finds_what_garbage_collect_finds_and_multipart_debris() {
    let (s3, registry) = s3_registry(true);
    let images = Images::build();
    let (host, base) = (registry.host(), registry.url());
    for (img, dest) in [
        ("base-1.0", "team/base:1.0"),
        ("app-1.0", "team/app:1.0"),
        ("app-1.1", "team/app:1.1"),
        ("app-1.0", "deep/nested/app:1.0"),
        ("tool-0.1", "scratch/doomed:1.0"),
    ] {
        assert_ok(
            &skopeo_push(&images.reference(img), &host, dest, ALICE),
            &format!("push {dest}"),
        );
    }
    images.add_multi_platform_index("base-1.0", "multi", "kept");
    assert_ok(
        &skopeo_push_all(&images.reference("multi"), &host, "team/multi:1.0", ALICE),
        "push --all",
    );
    // app-1.1's own layer, config and manifest, and all of doomed, lose their references.
    for (repo, tag) in [("team/app", "1.1"), ("scratch/doomed", "1.0")] {
        let d = manifest_digest(&base, repo, tag);
        delete_manifest(&base, repo, &d);
    }
    // An upload abandoned half-way: its data is an unfinished multipart upload.
    let abandoned = start_upload(&base, "scratch/abandoned");
    let half = "half an upload that is never finished";
    curl(&[
        "-o",
        "/dev/null",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        half,
        &abandoned,
    ]);
    std::thread::sleep(Duration::from_millis(1100));

    // regwatch reads the storage section of the registry's own config.yml.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("regwatch.toml");
    std::fs::write(
        &config,
        ConfigBuilder::registry_only(&base)
            .database(work.path().join("regwatch.db"))
            .name("s3reg")
            .registry("registry_config", registry.config_path())
            .registry("upload_max_age", "1s")
            .build(),
    )
    .unwrap();
    let (code, out, err) = regwatch(&["check", "--config", &config.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let from = registry.config_path().display().to_string();
    assert!(
        out.contains(&format!(
            "storage s3://{BUCKET}/regprefix at {} (path style, region us-east-1; access key from file {from}, secret key from file {from}) from {from}",
            s3.endpoint()
        )),
        "{out}"
    );
    assert!(
        !out.contains(S3_KEYS.1) && !out.contains(S3_KEYS.0),
        "{out}"
    );

    let before = s3.requests(BUCKET);
    let ours = storage_json(&config);
    let walk = &ours["walk"];
    let after = s3.requests(BUCKET);
    let our_set: BTreeSet<String> = walk["reclaimable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let gc_set = gc_eligible(&garbage_collect(&registry.config_path(), true));
    assert_eq!(
        our_set, gc_set,
        "regwatch vs garbage-collect --dry-run on the bucket"
    );
    assert_eq!(
        gc_set.len(),
        6,
        "app-1.1's and doomed's manifest, config and own layer"
    );
    // What --delete-untagged would also delete: revisions no tag points to (here the index's
    // two children in team/multi, which distribution 2.8 deletes even under a tagged index).
    let out = scrub_env(&mut std::process::Command::new("docker-registry"))
        .args(["garbage-collect", "--dry-run", "--delete-untagged"])
        .arg(registry.config_path())
        .output()
        .unwrap();
    assert_ok(&out, "garbage-collect --delete-untagged");
    let untagged = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("manifest eligible for deletion: "))
        .count();
    assert_eq!(walk["untagged_manifests"], untagged as u64, "{walk:#}");
    assert_eq!(untagged, 2);

    // Bytes as the filer stores them.
    let blobs = stored_blobs(&s3);
    assert_eq!(walk["blobs"], blobs.len() as u64);
    assert_eq!(walk["blob_bytes"], blobs.values().sum::<u64>());
    let freed: u64 = gc_set.iter().map(|d| blobs[d]).sum();
    assert_eq!(walk["reclaimable_bytes"], freed);
    assert!(freed > 24 * 1024, "app-1.1's own layer alone is 24 KiB");

    // The abandoned upload, with its size: its files and its multipart parts.
    let upload_dir = s3.filer_files(&format!(
        "/buckets/{BUCKET}{ROOT}/docker/registry/v2/repositories/scratch/abandoned/_uploads"
    ));
    let parts = s3.filer_files(&format!("/buckets/{BUCKET}/.uploads"));
    assert!(sum(&parts) >= half.len() as u64, "{parts:?}");
    assert_eq!(
        (walk["uploads"].clone(), walk["stale_uploads"].clone()),
        (1.into(), 1.into()),
        "{walk:#}"
    );
    assert_eq!(
        walk["upload_bytes"],
        sum(&upload_dir) + half.len() as u64,
        "{upload_dir:?} {parts:?}"
    );

    // Repositories, tags, per-repository bytes.
    assert_eq!(walk["repositories"], 5);
    assert_eq!(walk["tags"], 4, "{walk:#}");
    let top = walk["top_repositories"].as_array().unwrap();
    let app = top.iter().find(|r| r["name"] == "team/app").unwrap();
    assert_eq!(
        (app["manifests"].clone(), app["tags"].clone()),
        (1.into(), 1.into())
    );
    assert!(top.iter().any(|r| r["name"] == "deep/nested/app"));

    // What it cost, as SeaweedFS counted it (it files ListMultipartUploads and ListParts
    // under GET): lists, and a GET per manifest (tags resolved by their ETag, links by
    // their key).
    let requests = &walk["requests"];
    let seen = |kind| SeaweedFs::delta(&before, &after, kind);
    let (list, get) = (
        requests["list"].as_u64().unwrap(),
        requests["get"].as_u64().unwrap(),
    );
    assert_eq!(
        list + get,
        seen("LIST") + seen("GET"),
        "{before:?} {after:?}"
    );
    // One ListMultipartUploads page and one ListParts for the abandoned upload.
    assert_eq!(seen("GET"), get + 2, "{before:?} {after:?}");
    // base-1.0 (also a child of the index), app-1.0 (in two repositories, read once), the
    // index and its arm64 child.
    let manifests = 4;
    assert_eq!(requests["get"], manifests, "{walk:#}");
    assert!(ours["usage"].is_null(), "no capacity_bytes: no usage ratio");
    let stored = sum(&s3.filer_files(&format!("/buckets/{BUCKET}{ROOT}"))) + sum(&parts);
    assert_eq!(ours["stored_bytes"], stored);

    // A tag link whose ETag is not its content's MD5 (multipart, SSE-KMS) is read instead.
    let link = format!(
        "{}/docker/registry/v2/repositories/team/base/_manifests/tags/1.0/current/link",
        &ROOT[1..]
    );
    let digest = manifest_digest(&base, "team/base", "1.0");
    s3.put_multipart(BUCKET, &link, digest.as_bytes());
    let again = storage_json(&config);
    assert_eq!(again["walk"]["tags"], 4, "{again:#}");
    assert_eq!(again["walk"]["requests"]["get"], manifests + 1, "{again:#}");
    assert_eq!(again["walk"]["reclaimable"], walk["reclaimable"]);

    let (code, table, err) = regwatch(&["storage", "--config", &config.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("trend        none: set capacity_bytes"),
        "{table}"
    );
    assert!(
        table.contains(&format!(" list, {} get requests)", manifests + 1)),
        "{table}"
    );
}

#[test]
fn the_daemon_walks_s3_and_its_second_walk_reads_no_manifest() {
    let (s3, registry) = s3_registry(true);
    let images = Images::build();
    for (img, dest) in [("base-1.0", "team/base:1.0"), ("app-1.0", "team/app:1.0")] {
        assert_ok(
            &skopeo_push(&images.reference(img), &registry.host(), dest, ALICE),
            "push",
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("regwatch-daemon-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("s3-secret"), format!("{}\n", S3_KEYS.1)).unwrap();
    let s3_table = format!(
        "endpoint = \"{}\"\nbucket = \"{BUCKET}\"\nroot_directory = \"{ROOT}\"\naccess_key = \"{}\"\nsecret_key_file = \"s3-secret\"\n",
        s3.endpoint(),
        S3_KEYS.0
    );
    // The registry's own access log (its stdout), from its end (the pushes' HEAD checks
    // are not what is counted here): pulls answered 307 are pulls.
    let log = format!(
        "[[log]]\nname = \"access\"\nregistry = \"s3reg\"\npath = \"{}\"\nformat = \"registry_access\"\n",
        registry.access_log_path().display()
    );
    // The registry's API is not polled (its catalog would be S3 requests too): what SeaweedFS
    // counts are the walks'.
    let config = ConfigBuilder::new("http://127.0.0.3:9")
        .name("s3reg")
        .registry("storage_interval", "2s")
        .registry("capacity_bytes", 10u64 << 20)
        .extra(&format!("{log}[registry.s3]\n{s3_table}"))
        .build();
    let daemon = Daemon::start_in(dir, &config, &[]);
    let value = |series: &str| metric(&daemon.get("/metrics").1, series);
    let last = "regwatch_storage_walk_last_success_timestamp_seconds{registry=\"s3reg\"}";
    let gets = "regwatch_storage_walk_requests_total{kind=\"get\",registry=\"s3reg\"}";
    wait_until(Duration::from_secs(30), "the first walk", || {
        value(last).is_some()
    });
    let first = value(last).unwrap();
    let gets_first = value(gets).unwrap();
    assert_eq!(gets_first, 2.0, "one GET per manifest");
    assert!(
        value("regwatch_storage_walk_requests_total{kind=\"list\",registry=\"s3reg\"}").unwrap()
            > 0.0
    );
    assert_eq!(
        value("regwatch_storage_walk_requests_total{kind=\"head\",registry=\"s3reg\"}"),
        Some(0.0)
    );
    let lists = "regwatch_storage_walk_requests_total{kind=\"list\",registry=\"s3reg\"}";
    let (before, lists_before) = (s3.requests(BUCKET), value(lists).unwrap());
    wait_until(Duration::from_secs(30), "a second walk", || {
        value(last).is_some_and(|t| t > first)
    });
    let (after, lists_after) = (s3.requests(BUCKET), value(lists).unwrap());
    assert_eq!(
        value(gets),
        Some(gets_first),
        "the second walk read no manifest"
    );
    // All SeaweedFS answered meanwhile were list requests (it files ListMultipartUploads
    // under GET).
    let seen = |kind| SeaweedFs::delta(&before, &after, kind);
    assert_eq!(
        seen("GET") + seen("LIST"),
        (lists_after - lists_before) as u64,
        "{before:?} {after:?}"
    );
    assert_eq!(seen("GET"), 1, "ListMultipartUploads only");
    let blobs = stored_blobs(&s3);
    assert_eq!(
        value("regwatch_storage_blobs{registry=\"s3reg\"}"),
        Some(blobs.len() as f64)
    );
    assert_eq!(
        value("regwatch_storage_blob_bytes{registry=\"s3reg\"}"),
        Some(blobs.values().sum::<u64>() as f64)
    );
    assert_eq!(
        value("regwatch_storage_reclaimable_blobs{registry=\"s3reg\"}"),
        Some(0.0)
    );
    // Usage against capacity_bytes: what the bucket holds under the root.
    let stored = sum(&s3.filer_files(&format!("/buckets/{BUCKET}{ROOT}"))) as f64;
    assert_eq!(
        value("regwatch_storage_used_bytes{registry=\"s3reg\"}"),
        Some(stored)
    );
    assert_eq!(
        value("regwatch_storage_capacity_bytes{registry=\"s3reg\"}"),
        Some((10u64 << 20) as f64)
    );
    let ratio = value("regwatch_storage_used_ratio{registry=\"s3reg\"}").unwrap();
    assert!(
        (ratio - stored / (10u64 << 20) as f64).abs() < 1e-9,
        "{ratio}"
    );

    // Pulls with redirects on: every blob GET is answered 307 and is a successful pull.
    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(
            &registry.host(),
            "team/app:1.0",
            ALICE,
            &pulled.path().join("app"),
        ),
        "pull",
    );
    let access = std::fs::read_to_string(registry.access_log_path()).unwrap();
    let redirected = access
        .lines()
        .filter(|l| l.contains("GET /v2/team/app/blobs/sha256:") && l.contains("\" 307 "))
        .count();
    assert_eq!(
        redirected, 4,
        "config and three layers, each redirected:\n{access}"
    );
    wait_until(Duration::from_secs(20), "the pulls in the counters", || {
        value("regwatch_pulls_total{registry=\"s3reg\"}").unwrap_or(0.0) >= 5.0
    });
    assert_eq!(
        value("regwatch_pull_failures_total{registry=\"s3reg\"}"),
        Some(0.0)
    );

    // The cache is in the store: a restart's first walk reads nothing either.
    let dir = daemon.stop();
    let cached = count(
        &dir.path().join("regwatch.db"),
        "SELECT count(*) FROM storage_manifests WHERE registry = 's3reg'",
    );
    assert_eq!(cached, 2);
    let before = s3.requests(BUCKET);
    let daemon = Daemon::start_in(dir, &config, &[]);
    let value = |series: &str| metric(&daemon.get("/metrics").1, series);
    wait_until(
        Duration::from_secs(30),
        "the first walk after a restart",
        || value(last).is_some(),
    );
    assert_eq!(value(gets), Some(0.0));
    assert_eq!(
        SeaweedFs::delta(&before, &s3.requests(BUCKET), "GET"),
        1,
        "ListMultipartUploads only"
    );
    let stderr = daemon.proc.stderr();
    assert!(!stderr.contains(S3_KEYS.1), "{stderr}");
}

#[test]
fn a_wrong_key_a_missing_bucket_and_no_server_are_clear_errors_and_counted() {
    let mut s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let table = |endpoint: &str, bucket: &str, secret: &str| {
        format!(
            "[registry.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\naccess_key = \"{}\"\nsecret_key = \"{secret}\"\n",
            S3_KEYS.0
        )
    };
    let wrong_secret = "not-the-secret-key-at-all-9876";
    // Nothing listens there: servers of other tests bind 127.0.0.1.
    let unreachable = format!("http://127.0.0.3:{}", free_port());
    let cases = [
        (
            "wrongkey",
            table(&s3.endpoint(), BUCKET, wrong_secret),
            "SignatureDoesNotMatch",
        ),
        (
            "nobucket",
            table(&s3.endpoint(), "no-such-bucket", S3_KEYS.1),
            "NoSuchBucket",
        ),
        (
            "noserver",
            table(&unreachable, BUCKET, S3_KEYS.1),
            "cannot reach the endpoint",
        ),
    ];
    let mut config = ConfigBuilder::new("http://127.0.0.1:9")
        .name("wrongkey")
        .registry("storage_interval", "1s")
        .extra(&cases[0].1)
        .build();
    for (name, t, _) in &cases[1..] {
        config.push_str(&format!(
            "[[registry]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:9\"\nstorage_interval = \"1s\"\n{t}"
        ));
    }
    let daemon = Daemon::start(&config);
    let value = |series: &str| metric(&daemon.get("/metrics").1, series);
    for (name, _, _) in &cases {
        let errors = format!("regwatch_storage_walk_errors_total{{registry=\"{name}\"}}");
        wait_until(
            Duration::from_secs(60),
            &format!("a failed walk of {name}"),
            || value(&errors).unwrap_or(0.0) >= 2.0,
        );
        assert_eq!(
            value(&format!("regwatch_storage_blobs{{registry=\"{name}\"}}")),
            None
        );
    }
    assert_eq!(daemon.get("/healthz").0, 200);
    let stderr = daemon.proc.stderr();
    for (name, _, message) in &cases {
        assert!(
            stderr.lines().any(|l| l.contains("storage walk failed")
                && l.contains(name)
                && l.contains(message)),
            "no clear error for {name}:\n{stderr}"
        );
    }
    assert!(stderr.contains("check secret_key"), "{stderr}");
    for secret in [
        wrong_secret,
        S3_KEYS.1,
        "X-Amz-Signature",
        "X-Amz-Credential",
    ] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }

    // The CLI says the same and exits 1, no panic.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regwatch.toml");
    std::fs::write(
        &path,
        config
            .replace("{port}", "0")
            .replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let (code, _, err) = regwatch(&[
        "storage",
        "--config",
        &path.display().to_string(),
        "--registry",
        "wrongkey",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("SignatureDoesNotMatch") && err.contains("check secret_key"),
        "{err}"
    );
    assert!(
        !err.contains(wrong_secret) && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn check_reads_a_filesystem_registry_config() {
    let registry = Registry::start(RegistryOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regwatch.toml");
    std::fs::write(
        &path,
        ConfigBuilder::registry_only(&registry.url())
            .registry("registry_config", registry.config_path())
            .build(),
    )
    .unwrap();
    let (code, out, err) = regwatch(&["check", "--config", &path.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "storage {} from {} (usage every 1m",
            registry.storage().display(),
            registry.config_path().display()
        )),
        "{out}"
    );
    // A storage the registry names but regwatch cannot see is an error at the key.
    let yml = dir.path().join("config.yml");
    std::fs::write(
        &yml,
        "storage:\n  filesystem:\n    rootdirectory: /nonexistent/registry\n",
    )
    .unwrap();
    std::fs::write(
        &path,
        format!("[[registry]]\nname = \"a\"\nurl = \"http://x\"\nregistry_config = \"config.yml\"\nstorage_root = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let (code, _, err) = regwatch(&["check", "--config", &path.display().to_string()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(":4:1: registry[0].registry_config: a registry has one storage"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[[registry]]\nname = \"a\"\nurl = \"http://x\"\nregistry_config = \"config.yml\"\n",
    )
    .unwrap();
    let (code, _, err) = regwatch(&["check", "--config", &path.display().to_string()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(":4:1: registry[0].registry_config: storage.filesystem.rootdirectory of")
            && err.contains("/nonexistent/registry, which is not a directory here"),
        "{err}"
    );
}
