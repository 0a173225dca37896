//! Retention against a real registry: skopeo pushes (shared layers, one digest under two
//! tags, the same manifest in two repositories), pulls by tag and by digest with the
//! registry's notifications stored by the daemon, regwatch's own polling and the pushers'
//! blob HEADs in the same notifications. `inventory --tags` and `retention plan` are read as
//! JSON; the oracle for `reclaimable_bytes` is the real thing: the plan's manifests deleted
//! through the registry API, `docker-registry garbage-collect` run on a copy of the storage,
//! and the bytes it freed from blob data.

use crate::storage::{blob_data_bytes, curl, garbage_collect, gc_eligible};
use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

const NOTIFY_TOKEN: &str = "retention-notify-token";

/// Version tags only: `old` and `release-1.0` violate it.
const NAMING: &str = "^[0-9][0-9.]*$";

const POLICY: &str = r#"
[[retention]]
name = "stale-dev"
registry = "main"
repositories = ["dev/*"]
keep_pulled_within = "1h"
protect_tags = ["release-*"]
"#;

/// `inventory --tags --format json` by "repository:tag".
pub(crate) fn tag_rows(config: &std::path::Path) -> BTreeMap<String, serde_json::Value> {
    let cfg = config.display().to_string();
    let (code, out, err) = regwatch(&["inventory", "--config", &cfg, "--tags", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter()
        .map(|r| {
            let key = format!(
                "{}:{}",
                r["repository"].as_str().unwrap(),
                r["tag"].as_str().unwrap()
            );
            (key, r)
        })
        .collect()
}

/// A retention report the daemon writes every minute (JSON) and one run by hand (HTML).
fn retention_reports(dir: &std::path::Path) -> String {
    let dir = dir.display();
    format!(
        "[[report]]\nname = \"minutely-retention\"\nkind = \"retention\"\nschedule = \"* * * * *\"\n\
         format = \"json\"\noutput = \"{dir}/scheduled-{{time}}.json\"\n\
         [[report]]\nname = \"retention-page\"\nkind = \"retention\"\npolicies = [\"stale-dev\"]\n\
         schedule = \"0 6 * * MON\"\nformat = \"html\"\noutput = \"{dir}/page.html\"\n"
    )
}

/// The scheduled retention reports written so far, oldest first.
fn scheduled_reports(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json"))
        .collect();
    files.sort();
    files
}

fn plan(config: &std::path::Path, extra: &[&str]) -> (String, String) {
    let cfg = config.display().to_string();
    let mut args = vec!["retention", "plan", "--config", &cfg];
    args.extend_from_slice(extra);
    let (code, out, err) = regwatch(&args);
    assert_eq!(code, 0, "{err}");
    (out, err)
}

/// Runs garbage-collect on a copy of `registry`'s storage; the blob bytes it freed.
fn gc_on_copy(registry: &Registry, work: &std::path::Path) -> (u64, BTreeSet<String>) {
    let copy = work.join("gc-copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(registry.storage())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let conf = std::fs::read_to_string(registry.config_path()).unwrap();
    let line = format!("rootdirectory: {}\n", registry.storage().display());
    assert!(conf.contains(&line), "{conf}");
    let copy_conf = work.join("gc-copy.yml");
    std::fs::write(
        &copy_conf,
        conf.replace(&line, &format!("rootdirectory: {}\n", copy.display())),
    )
    .unwrap();
    let blobs = copy.join("docker/registry/v2/blobs");
    let before = blob_data_bytes(&blobs);
    let deleted = gc_eligible(&garbage_collect(&copy_conf, false));
    (before - blob_data_bytes(&blobs), deleted)
}

#[test]
fn the_plan_frees_exactly_what_garbage_collect_frees_and_pulls_are_counted_right() {
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let images = Images::build();
    let reports = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new(&registry.url())
        .login(ALICE)
        .registry("notifications_token", NOTIFY_TOKEN)
        .registry("poll_interval", "1s")
        .registry("storage_root", registry.storage())
        .registry("tag_pattern", NAMING)
        .extra(POLICY)
        .extra(&retention_reports(reports.path()))
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-retention-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_on(port, dir, &config, &[]);
    let host = registry.host();
    let push = |image: &str, to: &str| {
        assert_ok(&skopeo_push(&images.reference(image), &host, to, ALICE), to)
    };
    // app-1.0 and app-1.1 share base's layers; tool is unrelated.
    push("app-1.0", "dev/app:1.0"); // candidate: its own layer goes, base's stay (1.1 kept)
    push("app-1.1", "dev/app:1.1"); // pulled by tag: kept
    push("tool-0.1", "dev/tool:0.1"); // pulled by digest: kept
    push("tool-0.1", "dev/tool:old"); // same digest: pulled with it
    push("base-1.0", "dev/base:1"); // unpulled, but its digest is kept (below)
    push("base-1.0", "prod/base:1"); // outside the policy
    push("base-1.0", "dev/base:release-1.0"); // protected: dev/base:1 is held by it
    push("app-1.0", "dev/old:1"); // candidate; shares everything with dev/app:1.0
    // An index over tool (kept in dev/tool) and an arm64 variant: a candidate whose
    // platform manifests are revisions of their own, deleted with it.
    images.add_multi_platform_index("tool-0.1", "multi", "retention");
    assert_ok(
        &skopeo_push_all(&images.reference("multi"), &host, "dev/multi:1", ALICE),
        "index",
    );

    // The daemon's first polls read every manifest (as regwatch/…): not pulls.
    let cfg = daemon.config_path();
    wait_until(
        Duration::from_secs(30),
        "every tag known with its push time",
        || {
            let rows = tag_rows(&cfg);
            rows.len() == 9 && rows.values().all(|r| r["pushed_at"].is_string())
        },
    );
    let rows = tag_rows(&cfg);
    let tool = rows["dev/tool:0.1"]["digest"].as_str().unwrap().to_string();
    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(&host, "dev/app:1.1", BOB, &pulled.path().join("a")),
        "pull by tag",
    );
    assert_ok(
        &skopeo_pull(
            &host,
            &format!("dev/tool@{tool}"),
            BOB,
            &pulled.path().join("t"),
        ),
        "pull by digest",
    );
    wait_until(Duration::from_secs(20), "both pulls stored", || {
        let rows = tag_rows(&cfg);
        rows["dev/app:1.1"]["last_pulled_at"].is_string()
            && rows["dev/tool:0.1"]["last_pulled_at"].is_string()
    });
    // A few more polls and a push of known layers (blob HEADs) change no pull time.
    push("app-1.0", "dev/app:1.0");
    std::thread::sleep(Duration::from_secs(3));

    // Restart: the facts are in the database.
    let dir = daemon.stop();
    let daemon = Daemon::start_on(port, dir, &config, &[]);
    let rows = tag_rows(&cfg);
    let keys = [
        "registry",
        "repository",
        "tag",
        "digest",
        "pushed_at",
        "last_pulled_at",
        "last_puller",
        "exclusive_bytes",
        "naming_violation",
    ];
    for (k, r) in &rows {
        for key in keys {
            assert!(r.get(key).is_some(), "{k} has no {key}: {r}");
        }
    }
    assert_eq!(rows["dev/app:1.1"]["last_puller"], "bob");
    assert_eq!(
        rows["dev/tool:0.1"]["last_puller"], "bob",
        "pulled by digest"
    );
    assert_eq!(
        rows["dev/tool:old"]["last_puller"], "bob",
        "same digest, pulled too"
    );
    for never in [
        "dev/app:1.0",
        "dev/base:1",
        "dev/old:1",
        "prod/base:1",
        "dev/multi:1",
    ] {
        assert!(
            rows[never]["last_pulled_at"].is_null(),
            "{never}: polls and blob HEADs are not pulls: {}",
            rows[never]
        );
    }
    // --unused: nothing is an hour old; a second ago, every tag qualifies (never pulled and
    // pushed before, or pulled before).
    let unused = |age: &str| {
        let c = cfg.display().to_string();
        let args = [
            "inventory",
            "--config",
            &c,
            "--tags",
            "--unused",
            age,
            "--format",
            "json",
        ];
        let (code, out, err) = regwatch(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len()
    };
    assert_eq!(unused("1h"), 0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(unused("1s"), 9);
    // The naming policy per tag, in the same view.
    assert_eq!(rows["dev/tool:old"]["naming_violation"], NAMING);
    assert_eq!(rows["dev/base:release-1.0"]["naming_violation"], NAMING);
    assert!(rows["dev/app:1.0"]["naming_violation"].is_null());
    // The same manifest in two repositories: deleting one alone frees nothing.
    assert_eq!(rows["dev/app:1.0"]["exclusive_bytes"], 0);
    assert!(rows["dev/app:1.1"]["exclusive_bytes"].as_u64().unwrap() > 16 * 1024);
    let (out, _) = plan(&cfg, &["--format", "json"]);
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The daemon's gauges, refreshed after each poll, say the same as the command.
    wait_until(Duration::from_secs(20), "the retention gauges", || {
        let text = daemon.get("/metrics").1;
        let policy = |m: &str| metric(&text, &format!("{m}{{policy=\"stale-dev\"}}"));
        policy("regwatch_retention_candidates") == Some(3.0)
            && policy("regwatch_retention_reclaimable_bytes") == p["reclaimable_bytes"].as_f64()
    });
    // The scheduled retention report written after this (each minute) is the same plan.
    let before = scheduled_reports(reports.path()).len();
    wait_until(
        Duration::from_secs(75),
        "a scheduled retention report",
        || scheduled_reports(reports.path()).len() > before,
    );
    let newest = scheduled_reports(reports.path()).pop().unwrap();
    let scheduled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&newest).unwrap()).unwrap();
    for key in [
        "candidates",
        "reclaimable_bytes",
        "deletions",
        "held_by_kept_tags",
    ] {
        assert_eq!(scheduled[key], p[key], "{key}: {scheduled:#}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&newest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "reports are private");
    let _dir = daemon.stop(); // kept: the plan reads its database below
    // `report run` of the HTML one: every candidate, the bytes, nothing deleted.
    let (code, out, err) = regwatch(&[
        "report",
        "run",
        "retention-page",
        "--config",
        &cfg.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 candidate tags"), "{out}");
    let page = std::fs::read_to_string(reports.path().join("page.html")).unwrap();
    for c in p["candidates"].as_array().unwrap() {
        let (repo, tag) = (
            c["repository"].as_str().unwrap(),
            c["tag"].as_str().unwrap(),
        );
        assert!(
            page.contains(&format!("<td>{repo}</td><td>{tag}</td>")),
            "{repo}:{tag} not in the page"
        );
    }
    let bytes = p["reclaimable_bytes"].as_u64().unwrap().to_string();
    assert!(page.contains(&format!("({bytes} bytes,")), "{page}");

    let candidates: BTreeSet<String> = p["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            for key in [
                "registry",
                "repository",
                "tag",
                "digest",
                "last_pulled_at",
                "pushed_at",
                "exclusive_bytes",
            ] {
                assert!(c.get(key).is_some(), "{key} missing: {c}");
            }
            format!(
                "{}:{}",
                c["repository"].as_str().unwrap(),
                c["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        candidates,
        ["dev/app:1.0", "dev/multi:1", "dev/old:1"]
            .map(String::from)
            .into(),
        "{p:#}"
    );
    let held: BTreeSet<&str> = p["held_by_kept_tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    // dev/tool:old was pulled too (by its digest), so only dev/base:1 is held.
    assert_eq!(held, ["dev/base:1"].into(), "{p:#}");
    let reclaimable = p["reclaimable_bytes"].as_u64().unwrap();
    let already = p["already_reclaimable_bytes"].as_u64().unwrap();
    assert!(
        reclaimable > 16 * 1024,
        "app-1.0's own layer is 24 KiB: {p:#}"
    );

    // The script names exactly the plan's deletions.
    let (script, _) = plan(&cfg, &["--emit-script", "--policy", "stale-dev"]);
    let deletes: Vec<&str> = script.lines().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(
        deletes.len(),
        p["deletions"].as_array().unwrap().len(),
        "{script}"
    );

    // The oracle: delete the plan's manifests, garbage-collect, compare the bytes freed.
    let work = tempfile::tempdir().unwrap();
    let base = registry.url();
    for d in p["deletions"].as_array().unwrap() {
        let code = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            &format!(
                "{base}/v2/{}/manifests/{}",
                d["repository"].as_str().unwrap(),
                d["digest"].as_str().unwrap()
            ),
        ]);
        assert_eq!(code, "202", "DELETE {d}");
    }
    let (freed, deleted) = gc_on_copy(&registry, work.path());
    assert_eq!(
        already, 0,
        "a registry only pushed to has nothing reclaimable before the plan"
    );
    assert_eq!(freed, reclaimable, "{deleted:?}\n{p:#}");
    assert_eq!(
        deleted.len() as u64,
        p["reclaimable_blobs"].as_u64().unwrap(),
        "{deleted:?}"
    );
    // The index, its arm64 manifest and config, app-1.0's manifest, config and own layer.
    assert_eq!(deleted.len(), 6, "{deleted:?}");
}

/// The per-tag facts through nginx, with the registry's notifications and nginx's access log
/// both feeding the daemon and regwatch polling through the same nginx: a pull (by tag)
/// dates the tag; a move (a new image pushed to the tag) forgets the old image's pulls and
/// dates the new push; a delete forgets the tag, so the same image pushed again is a new,
/// never-pulled tag. Neither the poller's manifest reads nor the pushes' blob HEADs (both
/// in the access log and in the notifications) are pulls.
#[test]
fn tag_facts_follow_pulls_moves_and_deletes_through_nginx() {
    let port = free_port();
    let registry = Registry::start(RegistryOptions {
        notify_url: Some(format!("http://127.0.0.1:{port}/notifications")),
        notify_token: Some(NOTIFY_TOKEN.into()),
        ..RegistryOptions::default()
    });
    let nginx = Nginx::start(&registry);
    let images = Images::build();
    let logs = format!(
        "[[log]]\nname = \"nginx-access\"\nregistry = \"main\"\npath = \"{}\"\n\
         format = \"nginx_combined\"\nstart_at = \"beginning\"\n",
        nginx.access_log().display()
    );
    let config = ConfigBuilder::new(&nginx.url())
        .login(ALICE)
        .registry("notifications_token", NOTIFY_TOKEN)
        .registry("poll_interval", "1s")
        .extra(&logs)
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-tag-facts-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_on(port, dir, &config, &[]);
    let cfg = daemon.config_path();
    let host = nginx.host();
    let push = |image: &str, to: &str| {
        assert_ok(&skopeo_push(&images.reference(image), &host, to, ALICE), to)
    };
    push("app-1.0", "dev/app:1");
    push("tool-0.1", "dev/tool:1");
    let row = |key: &str| tag_rows(&cfg).get(key).cloned();
    wait_until(Duration::from_secs(30), "both tags dated", || {
        ["dev/app:1", "dev/tool:1"]
            .iter()
            .all(|k| row(k).is_some_and(|r| r["pushed_at"].is_string()))
    });
    let pulled = tempfile::tempdir().unwrap();
    for (i, tag) in ["dev/app:1", "dev/tool:1"].iter().enumerate() {
        let to = pulled.path().join(i.to_string());
        assert_ok(&skopeo_pull(&host, tag, BOB, &to), tag);
    }
    wait_until(Duration::from_secs(20), "both pulls stored", || {
        ["dev/app:1", "dev/tool:1"]
            .iter()
            .all(|k| row(k).is_some_and(|r| r["last_puller"] == "bob"))
    });
    let first = row("dev/app:1").unwrap();

    // A move: app-1.1 pushed to dev/app:1 (its base layers known: blob HEADs answered 200).
    std::thread::sleep(Duration::from_millis(1100)); // a later second for the new push time
    push("app-1.1", "dev/app:1");
    wait_until(Duration::from_secs(20), "the move seen", || {
        row("dev/app:1").is_some_and(|r| r["digest"] != first["digest"])
    });
    // A delete: the manifest of dev/tool:1, through nginx as alice.
    let tool = row("dev/tool:1").unwrap();
    let delete = format!(
        "{}/v2/dev/tool/manifests/{}",
        nginx.url(),
        tool["digest"].as_str().unwrap()
    );
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    assert_eq!(curl_status(&["-u", &creds, "-X", "DELETE", &delete]), "202");
    wait_until(Duration::from_secs(20), "the delete seen", || {
        row("dev/tool:1").is_none()
    });
    push("tool-0.1", "dev/tool:1"); // the same image again
    wait_until(Duration::from_secs(20), "the re-push dated", || {
        row("dev/tool:1").is_some_and(|r| r["pushed_at"].is_string())
    });
    // A few more polls through nginx (manifest GETs as regwatch/…) must change nothing.
    std::thread::sleep(Duration::from_secs(3));
    let moved = row("dev/app:1").unwrap();
    assert!(
        moved["last_pulled_at"].is_null() && moved["last_puller"].is_null(),
        "a moved tag's pulls were the old image's: {moved}"
    );
    assert!(
        moved["pushed_at"].as_str() > first["pushed_at"].as_str(),
        "the move is the new push time: {moved} after {first}"
    );
    let again = row("dev/tool:1").unwrap();
    assert_eq!(again["digest"], tool["digest"]);
    assert!(
        again["last_pulled_at"].is_null(),
        "a deleted tag's pulls are forgotten: {again}"
    );
    assert!(
        again["pushed_at"].as_str() > tool["pushed_at"].as_str(),
        "{again}"
    );
    drop(daemon);
}
