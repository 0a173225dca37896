//! The registry poller against a real docker-registry (distribution 2.8) with images pushed
//! by the real skopeo: inventory and byte accounting, catalog pagination, change events,
//! outage and recovery, bearer-token auth against a real token server.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "inventory-test-api-token";

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// Every blob (the manifest or index itself, children, configs, layers) image `tag` of the
/// OCI layout consists of, read from the layout: the independent side of the accounting.
fn layout_blobs(images: &Images, tag: &str) -> BTreeMap<String, u64> {
    let layout = images.dir.path().join("layout");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let root = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{tag} not in the layout"));
    let mut out = BTreeMap::new();
    let mut todo = vec![(
        root["digest"].as_str().unwrap().to_string(),
        root["size"].as_u64().unwrap(),
    )];
    while let Some((d, size)) = todo.pop() {
        let m: serde_json::Value = serde_json::from_slice(&read_blob(&layout, &d)).unwrap();
        out.insert(d, size);
        if let Some(children) = m["manifests"].as_array() {
            for c in children {
                todo.push((
                    c["digest"].as_str().unwrap().into(),
                    c["size"].as_u64().unwrap(),
                ));
            }
        } else {
            for b in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
                out.insert(
                    b["digest"].as_str().unwrap().into(),
                    b["size"].as_u64().unwrap(),
                );
            }
        }
    }
    out
}

/// The digest of image `tag` in the layout's index.json.
fn layout_digest(images: &Images, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(images.dir.path().join("layout/index.json")).unwrap())
            .unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A copy of `layout_tag` into `repo:tag` without re-uploading: cross-repository blob mounts
/// from `from`, then the manifest PUT (what a registry sees from `docker push` of an image
/// whose layers it has).
fn mount_copy(
    reg: &Registry,
    images: &Images,
    layout_tag: &str,
    from: &str,
    repo: &str,
    tag: &str,
) {
    let layout = images.dir.path().join("layout");
    let blobs = layout_blobs(images, layout_tag);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let root = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == layout_tag)
        .unwrap()
        .clone();
    let manifest_digest = root["digest"].as_str().unwrap();
    let client = reqwest::blocking::Client::new();
    for d in blobs.keys().filter(|d| *d != manifest_digest) {
        let r = client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?mount={d}&from={from}",
                reg.url()
            ))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "mount {d} into {repo}");
    }
    let r = client
        .put(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("Content-Type", root["mediaType"].as_str().unwrap())
        .body(read_blob(&layout, manifest_digest))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "PUT manifest {repo}:{tag}");
}

/// Total, exclusive, shared bytes per repository and the unique total, computed from the
/// layout (what each repository was given), not from the registry.
fn expected(
    repos: &BTreeMap<String, BTreeMap<String, u64>>,
) -> (BTreeMap<String, (u64, u64, u64)>, u64) {
    let mut refs: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for blobs in repos.values() {
        for (d, s) in blobs {
            refs.entry(d).or_insert((*s, 0)).1 += 1;
        }
    }
    let per = repos
        .iter()
        .map(|(name, blobs)| {
            let total: u64 = blobs.values().sum();
            let exclusive: u64 = blobs
                .iter()
                .filter(|(d, _)| refs[d.as_str()].1 == 1)
                .map(|(_, s)| s)
                .sum();
            (name.clone(), (total, exclusive, total - exclusive))
        })
        .collect();
    (per, refs.values().map(|(s, _)| s).sum())
}

fn push(images: &Images, reg: &Registry, layout_tag: &str, repo_tag: &str) {
    let out = skopeo_push_all(&images.reference(layout_tag), &reg.host(), repo_tag, ALICE);
    assert_ok(&out, &format!("skopeo copy --all {layout_tag} {repo_tag}"));
}

/// `GET /api/v1/repositories` with the token, as JSON.
fn repositories(d: &Daemon) -> serde_json::Value {
    let (status, body) = http(
        "GET",
        d.port,
        "/api/v1/repositories",
        Some(TOKEN),
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn metrics(d: &Daemon) -> String {
    d.get("/metrics").1
}

fn poll_events(db: &Path) -> Vec<String> {
    sqlite3(
        db,
        "SELECT action || ' ' || repository || ':' || coalesce(tag, '') || ' ' || coalesce(detail, '') FROM audit_events WHERE source = 'poll' ORDER BY id",
    )
    .lines()
    .map(|l| l.trim_end().to_string())
    .collect()
}

fn last_poll(d: &Daemon) -> f64 {
    metric(
        &metrics(d),
        "regwatch_registry_last_poll_timestamp_seconds{registry=\"main\"}",
    )
    .unwrap_or(0.0)
}

/// Waits for a poll that started after now, so it saw every change made before.
fn wait_next_poll(d: &Daemon) {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_until(Duration::from_secs(60), "the next inventory poll", || {
        last_poll(d) > start + 0.001
    });
    // The poll that finished after `start` may have begun before it; one more is certain.
    let after = last_poll(d);
    wait_until(Duration::from_secs(60), "another inventory poll", || {
        last_poll(d) > after
    });
}

#[test]
fn inventory_accounting_pagination_changes_and_outage() {
    let images = Images::build();
    images.add_multi_platform_index("app-1.1", "multi-1.1", "app 1.1 for two platforms");
    let mut reg = Registry::start(RegistryOptions::default());

    // What each repository holds: repo → [(tag, layout image)].
    let mut plan: Vec<(&str, &str, &str)> = vec![
        ("team/base", "1.0", "base-1.0"),
        ("team/app", "1.0", "app-1.0"),
        ("team/app", "1.1", "app-1.1"),
        ("team/app", "latest", "app-1.0"),
        ("tools/tool", "0.1", "tool-0.1"),
        ("team/multi", "1.1", "multi-1.1"),
        ("scratch/doomed", "1.0", "tool-0.1"),
        ("scratch/doomed", "2.0", "app-1.0"),
    ];
    for (repo, tag, image) in &plan {
        push(&images, &reg, image, &format!("{repo}:{tag}"));
    }
    // A deleted tag before regwatch ever looks: scratch/doomed:2.0 must not count.
    let out = skopeo(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", ALICE.0, ALICE.1),
        &format!("docker://{}/scratch/doomed:2.0", reg.host()),
    ]);
    assert_ok(&out, "skopeo delete scratch/doomed:2.0");
    plan.retain(|(r, t, _)| !(*r == "scratch/doomed" && *t == "2.0"));
    // More than 100 repositories, so the catalog takes several pages of 25.
    let fill: Vec<String> = (0..110).map(|i| format!("fill/r{i:03}")).collect();
    for r in &fill {
        mount_copy(&reg, &images, "tool-0.1", "tools/tool", r, "1.0");
    }
    let mut holds: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for (repo, _, image) in &plan {
        holds
            .entry(repo.to_string())
            .or_default()
            .extend(layout_blobs(&images, image));
        *tags.entry(repo.to_string()).or_default() += 1;
    }
    for r in &fill {
        holds.insert(r.clone(), layout_blobs(&images, "tool-0.1"));
        tags.insert(r.clone(), 1);
    }
    let (want, want_unique) = expected(&holds);

    let config = ConfigBuilder::new(&reg.url())
        .api_token(TOKEN)
        .login(ALICE)
        .registry("poll_interval", "2s")
        .registry("probe_interval", "1s")
        .registry("timeout", "2s")
        .registry("catalog_page_size", 25)
        .registry("concurrency", 4)
        .registry("tag_pattern", r"^[0-9]+\.[0-9]+$")
        .build();
    let d = Daemon::start(&config);
    wait_until(Duration::from_secs(60), "the first inventory", || {
        last_poll(&d) > 0.0
    });
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "regwatch_registry_up{registry=\"main\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "regwatch_registry_repositories{registry=\"main\"}"),
        Some(holds.len() as f64)
    );
    assert_eq!(
        metric(&m, "regwatch_registry_tags{registry=\"main\"}"),
        Some(tags.values().sum::<usize>() as f64)
    );
    assert_eq!(
        metric(&m, "regwatch_registry_unique_bytes{registry=\"main\"}"),
        Some(want_unique as f64)
    );
    // team/app:latest is the one tag outside '^[0-9]+\.[0-9]+$'.
    assert_eq!(
        metric(&m, "regwatch_naming_violations{registry=\"main\"}"),
        Some(1.0)
    );
    assert!(m.contains("regwatch_registry_probe_duration_seconds{registry=\"main\"}"));

    // The API: every repository's numbers equal what the layout says.
    let (status, body) = http("GET", d.port, "/api/v1/repositories", None, &[], None);
    assert_eq!(status, 401, "{body}");
    let v = repositories(&d);
    let rep = &v["registries"][0];
    assert_eq!(rep["registry"], "main");
    assert_eq!(rep["unique_bytes"], want_unique);
    let got: BTreeMap<String, (u64, u64, u64)> = rep["per_repository"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap().to_string(),
                (
                    r["total_bytes"].as_u64().unwrap(),
                    r["exclusive_bytes"].as_u64().unwrap(),
                    r["shared_bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
    let sizes: Vec<u64> = rep["per_repository"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_bytes"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "sorted by size: {sizes:?}"
    );
    let multi = rep["per_repository"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == "team/multi")
        .unwrap();
    assert_eq!(
        multi["manifests"], 3,
        "the index and both platforms: {multi}"
    );
    // The multi-platform image and team/app:1.1 share everything but the index and the
    // arm64 manifest and config.
    assert!(want["team/multi"].2 > 0 && want["tools/tool"].1 == 0);

    // The CLI polls live and prints the same numbers.
    let cfg = d.config_path();
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = regwatch(&["inventory", "--config", cfg, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["registries"][0]["unique_bytes"], want_unique);
    assert_eq!(cli["registries"][0]["repositories"], holds.len());
    let (code, out, err) = regwatch(&[
        "inventory",
        "--config",
        cfg,
        "--format",
        "csv",
        "--sort",
        "name",
    ]);
    assert_eq!(code, 0, "{err}");
    let app = want["team/app"];
    assert!(
        out.lines()
            .any(|l| l == format!("main,team/app,3,2,{},{},{}", app.0, app.1, app.2)),
        "{out}"
    );
    let (code, out, err) = regwatch(&["inventory", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let first_row = out.lines().nth(2).unwrap();
    let biggest = want
        .iter()
        .max_by_key(|(n, v)| (v.0, std::cmp::Reverse(*n)))
        .unwrap()
        .0;
    assert!(first_row.starts_with(biggest.as_str()), "{out}");
    let (code, out, _) = regwatch(&["inventory", "--config", cfg, "--violations"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tag team/app:latest does not match ^[0-9]+\\.[0-9]+$"),
        "{out}"
    );

    // Nothing changed yet: the baseline is not reported as news.
    assert_eq!(poll_events(&d.db_path()), Vec::<String>::new());

    // A tag move, a delete, a new repository: events after the next poll.
    push(&images, &reg, "app-1.1", "team/app:latest");
    let out = skopeo(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", ALICE.0, ALICE.1),
        &format!("docker://{}/team/app:1.0", reg.host()),
    ]);
    assert_ok(&out, "skopeo delete team/app:1.0");
    push(&images, &reg, "tool-0.1", "team/new:0.1");
    wait_next_poll(&d);
    let app10_digest = layout_digest(&images, "app-1.0");
    // A poll can fall between the three changes, so they may come in two polls: compare
    // them as a set.
    let mut events = poll_events(&d.db_path());
    events.sort();
    assert_eq!(
        events,
        vec![
            "repository_created team/new:".to_string(),
            "tag_created team/new:0.1".to_string(),
            "tag_deleted team/app:1.0".to_string(),
            format!("tag_moved team/app:latest moved from {}", app10_digest),
        ],
        "{events:#?}"
    );
    let (code, out, err) = regwatch(&[
        "audit",
        "query",
        "--config",
        cfg,
        "--source",
        "poll",
        "--action",
        "tag_moved",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tag_moved") && out.contains("team/app") && out.contains("latest"),
        "{out}"
    );

    // The registry goes away and comes back: down, then up, without restarting regwatch.
    reg.stop();
    wait_until(Duration::from_secs(20), "registry_up 0", || {
        metric(&metrics(&d), "regwatch_registry_up{registry=\"main\"}") == Some(0.0)
    });
    let errors = metric(
        &metrics(&d),
        "regwatch_poll_errors_total{registry=\"main\"}",
    )
    .unwrap();
    assert!(errors >= 1.0);
    assert_eq!(d.get("/healthz").0, 200);
    reg.restart();
    wait_until(Duration::from_secs(20), "registry_up 1", || {
        metric(&metrics(&d), "regwatch_registry_up{registry=\"main\"}") == Some(1.0)
    });
    wait_next_poll(&d);
    assert_eq!(
        poll_events(&d.db_path()).len(),
        4,
        "an outage is not a deletion"
    );

    // Restarted while the registry is down, regwatch still shows the last inventory
    // (the API and the gauges), marked with the time of that poll.
    let before = last_poll(&d);
    let api_before = repositories(&d);
    let dir = d.stop();
    reg.stop();
    let d = Daemon::start_in(dir, &config, &[]);
    let api_after = repositories(&d);
    assert_eq!(
        api_after["registries"][0]["per_repository"], api_before["registries"][0]["per_repository"],
        "the stored inventory is served after a restart"
    );
    assert_eq!(
        api_after["registries"][0]["polled_at"],
        api_before["registries"][0]["polled_at"]
    );
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "regwatch_registry_repositories{registry=\"main\"}"),
        api_before["registries"][0]["repositories"].as_f64(),
        "{m}"
    );
    assert!((last_poll(&d) - before).abs() < 0.001, "{m}");
    wait_until(
        Duration::from_secs(20),
        "registry_up 0 after restart",
        || metric(&metrics(&d), "regwatch_registry_up{registry=\"main\"}") == Some(0.0),
    );

    // Once the registry is back, the restarted regwatch diffs against the stored
    // inventory: nothing is new.
    reg.restart();
    wait_until(
        Duration::from_secs(60),
        "the first poll after restart",
        || last_poll(&d) > before,
    );
    assert_eq!(poll_events(&d.db_path()).len(), 4);
    let (code, out, err) = regwatch(&[
        "audit",
        "verify",
        "--config",
        d.config_path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn bearer_token_auth_with_a_real_token_server() {
    let tokens = TokenServer::start();
    let reg = Registry::start(RegistryOptions {
        token: Some(tokens.auth()),
        ..RegistryOptions::default()
    });
    // The registry challenges for a token, not for a password.
    let r = reqwest::blocking::get(format!("{}/v2/", reg.url())).unwrap();
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");

    let images = Images::build();
    push(&images, &reg, "app-1.0", "team/app:1.0");
    push(&images, &reg, "base-1.0", "team/base:1.0");
    let want_unique: u64 = {
        let mut all = layout_blobs(&images, "app-1.0");
        all.extend(layout_blobs(&images, "base-1.0"));
        all.values().sum()
    };
    let before = tokens.requests().len();

    let config = ConfigBuilder::new(&reg.url())
        .login(BOB)
        .registry("poll_interval", "1s")
        .registry("probe_interval", "1s")
        .build();
    let d = Daemon::start(&config);
    wait_until(Duration::from_secs(30), "two inventory polls", || {
        let m = metrics(&d);
        metric(&m, "regwatch_registry_repositories{registry=\"main\"}") == Some(2.0)
            && last_poll(&d) > 0.0
    });
    let first = last_poll(&d);
    wait_until(Duration::from_secs(30), "more polls", || {
        last_poll(&d) > first + 1.5
    });
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "regwatch_registry_up{registry=\"main\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "regwatch_registry_unique_bytes{registry=\"main\"}"),
        Some(want_unique as f64)
    );
    // Tokens are cached until they expire (300 s): one per scope over several polls.
    let ours: Vec<serde_json::Value> = tokens.requests()[before..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut scopes: BTreeSet<String> = BTreeSet::new();
    for r in &ours {
        assert_eq!(r["user"], "bob");
        assert_eq!(r["status"], 200);
        assert_eq!(r["service"], TokenServer::SERVICE);
        let s = r["scopes"].as_array().unwrap();
        let key = s.first().and_then(|v| v.as_str()).unwrap_or("").to_string();
        assert!(
            scopes.insert(key.clone()),
            "token for {key:?} fetched twice: {ours:#?}"
        );
    }
    for s in [
        "",
        "registry:catalog:*",
        "repository:team/app:pull",
        "repository:team/base:pull",
    ] {
        assert!(scopes.contains(s), "no token for {s:?}: {scopes:?}");
    }

    // A wrong password: the token server refuses, the registry shows as down, nothing panics.
    let bad = config.replace(BOB.1, "wrong");
    let d2 = Daemon::start(&bad);
    wait_until(Duration::from_secs(20), "a failed probe", || {
        metric(
            &metrics(&d2),
            "regwatch_poll_errors_total{registry=\"main\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        metric(&metrics(&d2), "regwatch_registry_up{registry=\"main\"}"),
        Some(0.0)
    );
    let log = fs::read_to_string(d2.dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("token server") && !log.contains("wrong"),
        "{log}"
    );
    let (code, _, err) = regwatch(&["inventory", "--config", d2.config_path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401") && !err.contains("wrong"), "{err}");
}

/// A "registry" that answers garbage, hangs, or sends random bytes, switchable at run time.
fn hostile_registry(mode: std::sync::Arc<std::sync::atomic::AtomicU8>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mode = mode.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                match mode.load(std::sync::atomic::Ordering::SeqCst) {
                    0 => {
                        // /v2/ looks fine, everything else is not JSON.
                        let body = if request.starts_with("GET /v2/ ") {
                            "{}"
                        } else {
                            "{\"repositories\": [garbage"
                        };
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    1 => std::thread::sleep(Duration::from_secs(30)),
                    _ => {
                        let _ =
                            conn.write_all(&[0x16, 0x03, 0x01, 0xff, 0x00, 0x13, 0x37, 0xde, 0xad]);
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_registry_answering_garbage_or_hanging_never_stalls_the_daemon() {
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let port = hostile_registry(mode.clone());
    let config = ConfigBuilder::new(&format!("http://127.0.0.1:{port}"))
        .name("bad")
        .registry("timeout", "1s")
        .registry("probe_interval", "1s")
        .registry("poll_interval", "1s")
        .build();
    let dir = tempfile::Builder::new()
        .prefix("regwatch-hostile-")
        .tempdir()
        .unwrap();
    let daemon = Daemon::start_in(dir, &config, &[]);
    let errors = |d: &Daemon| {
        metric(
            &d.get("/metrics").1,
            "regwatch_poll_errors_total{registry=\"bad\"}",
        )
        .unwrap_or(0.0)
    };
    // Garbage: the probe answers, the inventory fails and is counted.
    wait_until(
        Duration::from_secs(15),
        "garbage counted as poll errors",
        || errors(&daemon) >= 2.0,
    );
    assert_eq!(
        metric(
            &daemon.get("/metrics").1,
            "regwatch_registry_up{registry=\"bad\"}"
        ),
        Some(1.0)
    );
    // Hanging: down after the timeout, while the daemon keeps answering at once.
    mode.store(1, std::sync::atomic::Ordering::SeqCst);
    wait_until(
        Duration::from_secs(15),
        "a hanging registry shown as down",
        || {
            metric(
                &daemon.get("/metrics").1,
                "regwatch_registry_up{registry=\"bad\"}",
            ) == Some(0.0)
        },
    );
    for _ in 0..5 {
        let t = std::time::Instant::now();
        assert_eq!(daemon.get("/healthz").0, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "/healthz took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Binary noise instead of HTTP.
    mode.store(2, std::sync::atomic::Ordering::SeqCst);
    let before = errors(&daemon);
    wait_until(Duration::from_secs(15), "noise counted", || {
        errors(&daemon) >= before + 2.0
    });
    assert_eq!(daemon.get("/readyz").0, 200);
    // No audit events were made up from any of it, and the daemon stops promptly.
    let db = daemon.db_path();
    let dir = daemon.stop();
    let rows = sqlite3(
        &db,
        "SELECT count(*) FROM audit_events WHERE source = 'poll'",
    );
    assert_eq!(rows.trim(), "0");
    drop(dir);
}
