//! Inventory benchmark: regwatch's poller against a real docker-registry holding 2,000
//! repositories × 3 tags (every image its own manifest and config, sharing two base layers
//! plus one layer per repository), next to the same inventory done the usual scripted way:
//! `skopeo list-tags` per repository and `skopeo inspect --raw` per tag.
//!
//!     cargo bench --bench inventory                          # 2000 repos, skopeo on 100 of them
//!     cargo bench --bench inventory -- --repos 500 --sample 50
//!
//! A second round signs every tag (cosign's `sha256-<hex>.sig` tag schema, one simple-signing
//! signature each) and polls again with the public key in `signature_keys`: what detecting and
//! verifying signatures adds, next to the scripted way without cosign (`skopeo copy` of each
//! `.sig` to a directory and `openssl dgst -verify` of its payload) on a sample.
//!
//! The storage is written directly in distribution's filesystem layout (blobs, `_layers`,
//! `_manifests/revisions`, `_manifests/tags/<t>/{current,index}`), then the registry is
//! restarted over it: pushing 6,000 images would take longer than the benchmark. HTTP
//! requests are counted twice: by regwatch's client and in the registry's access log.
//! A retention round plans a 30-day policy over the same inventory with 10,000 pulls stored
//! through the writer: its time and memory next to the poll's.
//! Needs docker-registry and skopeo (apt-get install -y docker-registry skopeo).

#[path = "../tests/integration/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use regwatch::config::{self, Origin};
use regwatch::sources::registry_api::poll_once;
use sha2::Digest;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use support::*;

const TAGS: [&str; 3] = ["1.0", "1.1", "latest"];

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
        .unwrap_or(default)
}

/// Writes one blob into the registry's storage; returns its digest.
fn blob(root: &Path, data: &[u8]) -> String {
    let hex = hex::encode(sha2::Sha256::digest(data));
    let dir = root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("data"), data).unwrap();
    format!("sha256:{hex}")
}

fn link(path: &Path, digest: &str) {
    fs::create_dir_all(path).unwrap();
    fs::write(path.join("link"), digest).unwrap();
}

fn hexpart(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// Builds `repos` repositories × 3 tags; returns the repository names.
fn populate(root: &Path, repos: usize) -> Vec<String> {
    let base1 = vec![1u8; 4096];
    let base2 = vec![2u8; 8192];
    let (b1, b2) = (blob(root, &base1), blob(root, &base2));
    let mut names = Vec::with_capacity(repos);
    for i in 0..repos {
        let name = format!("team{:02}/service-{i:04}", i % 50);
        let repo = root.join("docker/registry/v2/repositories").join(&name);
        let own = format!("layer of {name}").repeat(64).into_bytes();
        let own_d = blob(root, &own);
        for d in [&b1, &b2, &own_d] {
            link(&repo.join("_layers/sha256").join(hexpart(d)), d);
        }
        for tag in TAGS {
            let config = format!(
                "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Labels\":{{\"repo\":\"{name}\",\"tag\":\"{tag}\"}}}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
            );
            let config_d = blob(root, config.as_bytes());
            link(
                &repo.join("_layers/sha256").join(hexpart(&config_d)),
                &config_d,
            );
            let manifest = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{b1}\",\"size\":{}}},{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{b2}\",\"size\":{}}},{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{own_d}\",\"size\":{}}}]}}",
                config.len(),
                base1.len(),
                base2.len(),
                own.len()
            );
            let m = blob(root, manifest.as_bytes());
            link(
                &repo.join("_manifests/revisions/sha256").join(hexpart(&m)),
                &m,
            );
            let t = repo.join("_manifests/tags").join(tag);
            link(&t.join("current"), &m);
            link(&t.join("index/sha256").join(hexpart(&m)), &m);
        }
        names.push(name);
    }
    names
}

fn access_lines(reg: &Registry) -> usize {
    fs::read_to_string(reg.access_log_path())
        .unwrap_or_default()
        .lines()
        .count()
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert_ok(&out, &format!("skopeo {args:?}"));
}

/// Writes a `sha256-<hex>.sig` tag for every tag of `names` into the storage: a cosign
/// simple-signing payload naming the tag's manifest, signed with `key` (in process: 6,000
/// openssl runs would take longer than the benchmark), its image config and manifest.
fn sign_all(root: &Path, names: &[String], key: &p256::ecdsa::SigningKey) -> usize {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let mut n = 0;
    for name in names {
        let repo = root.join("docker/registry/v2/repositories").join(name);
        for tag in TAGS {
            let current = repo.join("_manifests/tags").join(tag).join("current/link");
            let subject = fs::read_to_string(current).unwrap();
            let payload = format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"bench/{name}\"}},\"image\":{{\"docker-manifest-digest\":\"{subject}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            );
            let sig: p256::ecdsa::Signature = key.sign(payload.as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
            let payload_d = blob(root, payload.as_bytes());
            let config = format!(
                "{{\"architecture\":\"\",\"os\":\"\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{payload_d}\"]}},\"config\":{{}}}}"
            );
            let config_d = blob(root, config.as_bytes());
            for d in [&payload_d, &config_d] {
                link(&repo.join("_layers/sha256").join(hexpart(d)), d);
            }
            let manifest = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"digest\":\"{payload_d}\",\"size\":{},\"annotations\":{{\"dev.cosignproject.cosign/signature\":\"{sig}\"}}}}]}}",
                config.len(),
                payload.len()
            );
            let m = blob(root, manifest.as_bytes());
            link(
                &repo.join("_manifests/revisions/sha256").join(hexpart(&m)),
                &m,
            );
            let t = repo
                .join("_manifests/tags")
                .join(format!("{}.sig", subject.replace(':', "-")));
            link(&t.join("current"), &m);
            link(&t.join("index/sha256").join(hexpart(&m)), &m);
            n += 1;
        }
    }
    n
}

/// The scripted check without cosign for one signed tag: copy its `.sig` to a directory
/// with skopeo, take the payload and the annotation from the manifest, `openssl dgst
/// -verify` the one against the other with the public key.
fn script_verify(reg: &Registry, name: &str, subject: &str, public: &Path, creds: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "docker://{}/{name}:{}.sig",
        reg.host(),
        subject.replace(':', "-")
    );
    let dest = format!("dir:{}", dir.path().display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        &src,
        &dest,
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let layer = &m["layers"][0];
    let payload = dir.path().join(hexpart(layer["digest"].as_str().unwrap()));
    let sig = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap();
    let der = dir.path().join("sig.der");
    {
        use base64::Engine;
        fs::write(
            &der,
            base64::engine::general_purpose::STANDARD
                .decode(sig)
                .unwrap(),
        )
        .unwrap();
    }
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&der)
        .arg(&payload)
        .output()
        .unwrap();
    assert_ok(&out, "openssl dgst -verify");
}

/// Round two: every tag signed; regwatch with the key in `signature_keys` against the
/// scripted check on `sample` repositories.
fn signed_round(reg: &mut Registry, names: &[String], sample: usize, unsigned_secs: f64) {
    use p256::pkcs8::EncodePublicKey;
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let public = keys.path().join("cosign.pub");
    let pem = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    fs::write(&public, pem).unwrap();
    let t = Instant::now();
    let signed = sign_all(&reg.storage(), names, &key);
    reg.restart();
    println!(
        "\n# signed: {signed} .sig tags written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let toml = format!(
        "[[registry]]\nname = \"bench\"\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\nsignature_keys = [\"{}\"]\n",
        reg.url(),
        ALICE.0,
        ALICE.1,
        public.display()
    );
    let cfg =
        config::parse(&toml, Origin::Embedded, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(poll_once(&cfg.registries[0]))
        .unwrap_or_else(|e| panic!("inventory failed: {e}"));
    let verified = report
        .tag_rows
        .iter()
        .filter(|r| r.signature.as_str() == "verified")
        .count();
    assert_eq!(verified, signed, "every tag verified");
    println!(
        "regwatch: {:.2}s, {} HTTP requests, {verified} of {} tags verified (unsigned round: {unsigned_secs:.2}s)",
        report.duration_seconds,
        report.requests,
        report.tag_rows.len()
    );
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    let t = Instant::now();
    for name in names.iter().take(sample) {
        let repo = reg
            .storage()
            .join("docker/registry/v2/repositories")
            .join(name);
        for tag in TAGS {
            let current = repo.join("_manifests/tags").join(tag).join("current/link");
            let subject = fs::read_to_string(current).unwrap();
            script_verify(reg, name, &subject, &public, &creds);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let factor = names.len() as f64 / sample as f64;
    println!(
        "script:   {secs:.2}s to verify {} signatures of {sample} repositories (skopeo copy + openssl per tag; the listing costs the skopeo baseline above on top); extrapolated x{factor:.0}: {:.1}s",
        sample * TAGS.len(),
        secs * factor
    );
    println!(
        "ratio:    regwatch verifies the whole registry {:.1}x faster than the script's verification alone",
        secs * factor / report.duration_seconds
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` (scripts/test.sh) runs this
    // binary without it, where a small smoke run proves it works without the full cost.
    let full = args.iter().any(|a| a == "--bench");
    let repos = arg(&args, "--repos", if full { 2000 } else { 30 });
    let sample = arg(&args, "--sample", if full { 100 } else { 3 }).min(repos);
    require("skopeo", "skopeo");
    println!(
        "# regwatch inventory benchmark ({} cores): {repos} repositories x {} tags",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        TAGS.len()
    );
    let mut reg = Registry::start(RegistryOptions::default());
    let t = Instant::now();
    let names = populate(&reg.storage(), repos);
    reg.restart();
    println!(
        "storage written in {:.1}s ({} manifests)",
        t.elapsed().as_secs_f64(),
        repos * TAGS.len()
    );

    let toml = format!(
        "[[registry]]\nname = \"bench\"\nurl = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n",
        reg.url(),
        ALICE.0,
        ALICE.1
    );
    let cfg =
        config::parse(&toml, Origin::Embedded, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let rcfg = &cfg.registries[0];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let before = access_lines(&reg);
    let report = runtime
        .block_on(poll_once(rcfg))
        .unwrap_or_else(|e| panic!("inventory failed: {e}"));
    let ours_logged = access_lines(&reg) - before;
    assert_eq!(report.accounting.repositories, repos);
    assert_eq!(report.accounting.tags, repos * TAGS.len());
    println!(
        "regwatch: {:.2}s, {} HTTP requests by its count, {} in the registry access log \
         (concurrency {}, catalog pages of {}); {} tags, {} unique bytes",
        report.duration_seconds,
        report.requests,
        ours_logged,
        rcfg.concurrency,
        rcfg.catalog_page_size,
        report.accounting.tags,
        report.accounting.unique_bytes
    );

    // The baseline, one skopeo process per call as a script would run them, sequentially.
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    let before = access_lines(&reg);
    let t = Instant::now();
    for name in names.iter().take(sample) {
        let r = format!("docker://{}/{name}", reg.host());
        skopeo(&["list-tags", "--tls-verify=false", "--creds", &creds, &r]);
        for tag in TAGS {
            let r = format!("docker://{}/{name}:{tag}", reg.host());
            skopeo(&[
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &creds,
                &r,
            ]);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let logged = access_lines(&reg) - before;
    let factor = repos as f64 / sample as f64;
    let (skopeo_secs, skopeo_requests) = (secs * factor, logged as f64 * factor);
    println!(
        "skopeo:   {secs:.2}s and {logged} HTTP requests for {sample} repositories ({} processes){}",
        sample * (1 + TAGS.len()),
        if sample < repos {
            format!(
                "; extrapolated x{factor:.0} to {repos}: {skopeo_secs:.1}s, {skopeo_requests:.0} requests \
                 (without a catalog: skopeo cannot list repositories)"
            )
        } else {
            String::new()
        }
    );
    println!(
        "ratio:    regwatch is {:.1}x faster and sends {:.2}x the requests of the skopeo baseline",
        skopeo_secs / report.duration_seconds,
        report.requests as f64 / skopeo_requests
    );
    retention_round(rcfg, &runtime, if full { 10_000 } else { 300 });
    signed_round(&mut reg, &names, sample, report.duration_seconds);
}

/// Resident set of this process now and at its peak (kB), from /proc.
fn rss_kb() -> (u64, u64) {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The retention plan over the same inventory: every tag stored with a push time 200 days
/// ago (one inventory update, as a first poll writes it), `pulls` pull events from a log
/// spread over 60 days through the writer, then the plan of a 30-day policy, timed, with the
/// memory it adds; next to the inventory poll it needs.
fn retention_round(
    rcfg: &regwatch::config::RegistryConfig,
    runtime: &tokio::runtime::Runtime,
    pulls: usize,
) {
    use regwatch::model::retention::{self, Policy};
    use regwatch::model::{Action, Event, Source};
    use regwatch::sources::registry_api::poll_with_graph;
    use regwatch::sources::registry_api::retention::{by_tag, tags_with_facts};
    use regwatch::store::{InventoryUpdate, Store};

    let t = Instant::now();
    let (_, tg) = runtime.block_on(poll_with_graph(rcfg)).unwrap();
    let poll_secs = t.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(dir.path().join("bench.db"));
    let clock: regwatch::model::clock::SharedClock =
        std::sync::Arc::new(regwatch::model::clock::SystemClock);
    let writer = store.start_writer(4096, clock, Box::new(|_| {})).unwrap();
    let sink = writer.sink();
    let now = time::OffsetDateTime::now_utc();
    let update = InventoryUpdate {
        registry: rcfg.name.clone(),
        time: now - time::Duration::days(200),
        replace: true,
        add_repositories: Vec::new(),
        remove_repositories: Vec::new(),
        upsert_tags: tg.tags.clone(),
        remove_tags: Vec::new(),
        events: Vec::new(),
        repositories: 0,
        tags: tg.tags.len(),
        unique_bytes: 0,
        report: None,
    };
    runtime.block_on(sink.store_inventory(update)).unwrap();
    let t = Instant::now();
    for (i, chunk) in (0..pulls).collect::<Vec<_>>().chunks(1000).enumerate() {
        let events = chunk
            .iter()
            .map(|n| {
                let (repo, tag, _) = &tg.tags[(n * 7919) % tg.tags.len()];
                let at = now - time::Duration::hours((*n % (60 * 24)) as i64);
                let mut e = Event::new(at, Action::Pull, Source::Log);
                e.registry = Some(rcfg.name.clone());
                e.repository = Some(repo.clone());
                e.tag = Some(tag.clone());
                e.actor = Some(format!("ci{}", n % 10));
                e.method = Some("GET".into());
                e.event_id = Some(format!("bench-{i}-{n}"));
                e
            })
            .collect();
        runtime.block_on(sink.append_all(events)).unwrap();
    }
    let write_secs = t.elapsed().as_secs_f64();
    writer.close_blocking();
    let policy = Policy {
        name: "bench".into(),
        registry: rcfg.name.clone(),
        repositories: Vec::new(),
        keep_pulled_within: Some(std::time::Duration::from_secs(30 * 86400)),
        keep_pushed_within: None,
        keep_last: 1,
        protect_tags: Vec::new(),
    };
    let (rss_before, _) = rss_kb();
    let t = Instant::now();
    let facts = store.reader().unwrap().tag_facts(&rcfg.name).unwrap();
    let read_secs = t.elapsed().as_secs_f64();
    let tags: Vec<_> = tags_with_facts(&tg, &by_tag(facts))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let plan = retention::plan(&policy, &tags, &tg.graph, now);
    let plan_secs = t.elapsed().as_secs_f64();
    let (rss_after, peak) = rss_kb();
    println!(
        "retention: {} tags, {pulls} pulls stored through the writer in {write_secs:.2}s; \
         plan {plan_secs:.3}s (facts read {read_secs:.3}s): {} candidates, {} reclaimable bytes; \
         RSS +{} kB (peak {} kB); the poll it needs: {poll_secs:.2}s",
        tags.len(),
        plan.candidates.len(),
        plan.reclaimable_bytes,
        rss_after.saturating_sub(rss_before),
        peak
    );
    println!(
        "ratio:    the plan takes {:.1}% of the inventory poll",
        100.0 * plan_secs / poll_secs
    );
}
