//! Supply chain against the real registry (distribution 2.8): images pushed by skopeo, their
//! cosign-format signatures, attestations and SBOMs made by the harness (keys and signatures
//! from openssl) and pushed over HTTP; regwatch's verdict per tag in `inventory --tags`, the
//! `regwatch_tags` gauge, the `signature_attached` audit row, and the `unsigned_image` rule
//! mailing through a real SMTP server.

use crate::support::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn push(images: &Images, reg: &Registry, layout_tag: &str, repo_tag: &str) -> String {
    let out = skopeo_push_all(&images.reference(layout_tag), &reg.host(), repo_tag, ALICE);
    assert_ok(&out, &format!("skopeo copy --all {layout_tag} {repo_tag}"));
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    manifest_digest(reg, repo, tag)
}

/// `regwatch inventory --tags --format json`, by "repository:tag".
fn tag_rows(config: &Path) -> BTreeMap<String, serde_json::Value> {
    let cfg = config.to_str().unwrap();
    let (code, out, err) = regwatch(&["inventory", "--config", cfg, "--tags", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter()
        .map(|r| {
            (
                format!(
                    "{}:{}",
                    r["repository"].as_str().unwrap(),
                    r["tag"].as_str().unwrap()
                ),
                r,
            )
        })
        .collect()
}

fn problems(row: &serde_json::Value) -> String {
    row["problems"].to_string()
}

#[test]
fn verdict_per_tag_for_trusted_other_and_copied_signatures_sboms_indexes_and_hostile_input() {
    let images = Images::build();
    images.add_multi_platform_index("app-1.1", "multi-1.1", "app 1.1 for two platforms");
    let reg = Registry::start(RegistryOptions::default());
    let keys = tempfile::tempdir().unwrap();
    let trusted = SigningKey::generate(keys.path(), "ci");
    let other = SigningKey::generate(keys.path(), "someone-else");

    let app10 = push(&images, &reg, "app-1.0", "prod/app:1.0");
    let app11 = push(&images, &reg, "app-1.1", "prod/app:1.1");
    let base = push(&images, &reg, "base-1.0", "prod/base:1.0");
    let tool = push(&images, &reg, "tool-0.1", "prod/tool:0.1");
    push(&images, &reg, "multi-1.1", "prod/multi:1.1");
    let hostile = push(&images, &reg, "tool-0.1", "prod/hostile:1.0");
    let broken = push(&images, &reg, "base-1.0", "prod/broken:1.0");
    let oci11 = push(&images, &reg, "app-1.1", "prod/oci11:1.0");
    let notated = push(&images, &reg, "app-1.0", "prod/notation:1.0");

    // Signed by the trusted key; by another key; a valid trusted signature whose payload
    // names another image (copied from prod/app:1.0).
    push_signatures(&reg, "prod/app", &app10, &[(&trusted, &app10)]);
    push_signatures(&reg, "prod/app", &app11, &[(&other, &app11)]);
    push_signatures(&reg, "prod/base", &base, &[(&trusted, &app10)]);
    // Unsigned, with an SBOM (OCI 1.1 referrer in the referrers tag schema) and an attestation.
    let sbom = sbom_artifact(&reg, "prod/tool", &tool);
    put_referrers_index(&reg, "prod/tool", &tool, &[sbom]);
    push_attestation(&reg, "prod/tool", &tool);
    // Signed the OCI 1.1 way: a simple-signing referrer by the trusted key beside a notation
    // signature (counted, not verifiable here) and an SBOM, all in the referrers index.
    let referrers = [
        signature_artifact(&reg, "prod/oci11", &oci11, &trusted),
        notation_artifact(&reg, "prod/oci11", &oci11),
        sbom_artifact(&reg, "prod/oci11", &oci11),
    ];
    put_referrers_index(&reg, "prod/oci11", &oci11, &referrers);
    // Only a notation signature: signed, but by nothing regwatch can verify.
    let notation = [notation_artifact(&reg, "prod/notation", &notated)];
    put_referrers_index(&reg, "prod/notation", &notated, &notation);
    // An index whose platform manifests are signed (cosign sign --recursive), not the index.
    let children = index_children(&reg, "prod/multi", "1.1");
    assert_eq!(children.len(), 2);
    for c in &children {
        push_signatures(&reg, "prod/multi", c, &[(&trusted, c)]);
    }
    // Hostile signature layers: a 300 KB annotation, garbage base64, a payload that is not
    // JSON (signed by the trusted key all the same).
    let not_json = b"<html>not a payload</html>".to_vec();
    let sig_of_not_json = trusted.sign(&not_json);
    push_signature_layers(
        &reg,
        "prod/hostile",
        &hostile,
        &[
            (
                payload(&reg, "prod/hostile", &hostile),
                serde_json::json!({ SIGNATURE_ANNOTATION: "A".repeat(300_000) }),
            ),
            (
                payload(&reg, "prod/hostile", &hostile),
                serde_json::json!({ SIGNATURE_ANNOTATION: "!!not base64!!" }),
            ),
            (
                not_json,
                serde_json::json!({ SIGNATURE_ANNOTATION: sig_of_not_json }),
            ),
        ],
    );
    // A malformed signature manifest: an empty index under the `.sig` tag.
    put_manifest(
        &reg,
        "prod/broken",
        &artifact_tag(&broken, ".sig"),
        OCI_INDEX,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    );

    let config = ConfigBuilder::new(&reg.url())
        .login(ALICE)
        .registry("signature_keys", [trusted.public.clone()].as_slice())
        .registry("tag_pattern", r"^[0-9]+\.[0-9]+$")
        .registry("poll_interval", "1s")
        .build();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("regwatch.toml");
    std::fs::write(
        &cfg_path,
        config
            .replace("{port}", &free_port().to_string())
            .replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();

    let rows = tag_rows(&cfg_path);
    let keyname = trusted.public.display().to_string();
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        [
            "prod/app:1.0",
            "prod/app:1.1",
            "prod/base:1.0",
            "prod/broken:1.0",
            "prod/hostile:1.0",
            "prod/multi:1.1",
            "prod/notation:1.0",
            "prod/oci11:1.0",
            "prod/tool:0.1"
        ],
        "one row per image tag; signature, attestation and referrers tags are no rows"
    );
    let r = &rows["prod/app:1.0"];
    assert_eq!(r["signature"], "verified", "{r}");
    assert_eq!(
        (r["signatures"].as_u64(), r["attestations"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(r["signed_by"], serde_json::json!([keyname]));
    assert_eq!(r["sbom"], false);
    assert_eq!(r["digest"], app10.as_str());

    let r = &rows["prod/app:1.1"];
    assert_eq!(
        (r["signature"].as_str(), r["signatures"].as_u64()),
        (Some("unverified"), Some(1)),
        "{r}"
    );
    assert!(problems(r).contains("no trusted key verifies it"), "{r}");
    assert_eq!(r["signed_by"], serde_json::json!([]));

    let r = &rows["prod/base:1.0"];
    assert_eq!(r["signature"], "unverified", "{r}");
    assert!(
        problems(r).contains(&format!("names {app10}, another image")),
        "{r}"
    );

    let r = &rows["prod/tool:0.1"];
    assert_eq!(r["signature"], "none", "{r}");
    assert_eq!(
        (r["signatures"].as_u64(), r["attestations"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(r["sbom"], true, "{r}");

    let r = &rows["prod/multi:1.1"];
    assert_eq!(r["signature"], "verified", "every platform is signed: {r}");
    assert_eq!(r["signatures"], 2);
    assert_eq!(r["media_type"], OCI_INDEX);

    let r = &rows["prod/oci11:1.0"];
    assert_eq!(r["signature"], "verified", "{r}");
    assert_eq!(
        (r["signatures"].as_u64(), r["sbom"].as_bool()),
        (Some(2), Some(true)),
        "{r}"
    );
    assert_eq!(r["signed_by"], serde_json::json!([keyname]));

    let r = &rows["prod/notation:1.0"];
    assert_eq!(
        (r["signature"].as_str(), r["signatures"].as_u64()),
        (Some("unverified"), Some(1)),
        "{r}"
    );
    assert!(
        problems(r).contains(
            "application/vnd.cncf.notary.signature signature, which regwatch cannot verify"
        ),
        "{r}"
    );

    let r = &rows["prod/hostile:1.0"];
    assert_eq!(
        (r["signature"].as_str(), r["signatures"].as_u64()),
        (Some("unverified"), Some(3)),
        "{r}"
    );
    let p = problems(r);
    assert!(
        p.contains("300000 bytes") && p.contains("not base64") && p.contains("not JSON"),
        "{p}"
    );

    let r = &rows["prod/broken:1.0"];
    assert_eq!(
        (r["signature"].as_str(), r["signatures"].as_u64()),
        (Some("unverified"), Some(1)),
        "{r}"
    );
    assert!(
        problems(r).contains("without a simple-signing layer"),
        "{r}"
    );

    // The table and CSV views say the same.
    let cfg = cfg_path.to_str().unwrap();
    let (code, out, err) = regwatch(&["inventory", "--config", cfg, "--tags"]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    for col in [
        "REPOSITORY",
        "TAG",
        "SIGNATURE",
        "SIGS",
        "ATTS",
        "SBOM",
        "SIGNED BY",
    ] {
        assert!(header.contains(col), "{out}");
    }
    let line = out
        .lines()
        .find(|l| l.contains("prod/app ") && l.contains(" 1.0 "))
        .unwrap();
    assert!(
        line.contains("verified") && line.contains(&format!(" {keyname} ")),
        "{out}"
    );
    let (code, out, err) = regwatch(&["inventory", "--config", cfg, "--tags", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().next().unwrap(),
        "registry,repository,tag,digest,signature,signatures,attestations,sbom,signed_by,\
         pushed_at,last_pulled_at,last_puller,exclusive_bytes,naming_violation"
    );
    assert!(
        out.lines()
            // No daemon has run yet: push and pull times unknown.
            .any(|l| l.starts_with(&format!("main,prod/tool,0.1,{tool},none,0,1,true,,,,,"))),
        "{out}"
    );
    // Signature and SBOM tags are named by their tools: no naming-policy violations.
    let (code, out, _) = regwatch(&["inventory", "--config", cfg, "--violations"]);
    assert_eq!(code, 0, "{out}");

    // The daemon counts the verdicts in regwatch_tags; the registry's tag count still has
    // every tag (the artifact tags cost storage too).
    let d = Daemon::start_in(dir, &config, &[]);
    wait_until(Duration::from_secs(60), "the first inventory", || {
        metric(
            &d.get("/metrics").1,
            "regwatch_tags{registry=\"main\",signature=\"none\"}",
        )
        .is_some()
    });
    let m = d.get("/metrics").1;
    for (status, n) in [("verified", 3.0), ("unverified", 5.0), ("none", 1.0)] {
        assert_eq!(
            metric(
                &m,
                &format!("regwatch_tags{{registry=\"main\",signature=\"{status}\"}}")
            ),
            Some(n),
            "{status}: {m}"
        );
    }
    // 9 images, 7 .sig tags (2 for the index's platforms), 1 .att, 3 referrers indexes.
    assert_eq!(
        metric(&m, "regwatch_registry_tags{registry=\"main\"}"),
        Some(20.0)
    );
    assert_eq!(
        metric(&m, "regwatch_naming_violations{registry=\"main\"}"),
        Some(0.0)
    );
}

fn metrics_of(d: &Daemon) -> String {
    d.get("/metrics").1
}

fn last_poll(d: &Daemon) -> f64 {
    metric(
        &metrics_of(d),
        "regwatch_registry_last_poll_timestamp_seconds{registry=\"main\"}",
    )
    .unwrap_or(0.0)
}

/// Waits for two polls that ended after now (the first may have begun before).
fn two_more_polls(d: &Daemon) {
    let after = last_poll(d);
    wait_until(Duration::from_secs(60), "a poll", || last_poll(d) > after);
    let after = last_poll(d);
    wait_until(Duration::from_secs(60), "another poll", || {
        last_poll(d) > after
    });
}

/// The alert states of the daemon, as `(key, phase)`.
fn alert_states(d: &Daemon) -> Vec<(String, String)> {
    let (status, body) = http("GET", d.port, "/api/v1/alerts", Some(TOKEN), &[], None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                a["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// When the daemon's polls first saw `repository:tag` (from the report it stored).
fn first_seen(db: &Path, repository: &str, tag: &str) -> Option<f64> {
    let json = sqlite3(
        db,
        "SELECT report FROM inventory_polls WHERE registry = 'main'",
    );
    let rep: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let row = rep["tag_rows"]
        .as_array()?
        .iter()
        .find(|r| r["repository"] == repository && r["tag"] == tag)?;
    let t = time::OffsetDateTime::parse(
        row["first_seen"].as_str()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

const TOKEN: &str = "signatures-test-token";
const GRACE_SECS: f64 = 6.0;

#[test]
fn the_unsigned_prod_image_is_mailed_once_and_resolves_when_signed_or_gone() {
    let images = Images::build();
    let reg = Registry::start(RegistryOptions::default());
    let smtp = SmtpSink::start();
    let keys = tempfile::tempdir().unwrap();
    let trusted = SigningKey::generate(keys.path(), "ci");

    let signed = push(&images, &reg, "app-1.0", "prod/app:1.0");
    push_signatures(&reg, "prod/app", &signed, &[(&trusted, &signed)]);
    let late = push(&images, &reg, "app-1.1", "prod/app:1.1");
    push(&images, &reg, "tool-0.1", "prod/app:2.0");
    // Unsigned too, but outside the rule's repositories.
    push(&images, &reg, "tool-0.1", "dev/tool:0.1");

    let rules = format!(
        r#"
[[rule]]
name = "unsigned-prod"
kind = "unsigned_image"
repositories = ["prod/*"]
grace = "{GRACE_SECS}s"
interval = "1s"
severity = "critical"
channels = ["mail"]

[[channel]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "regwatch@example.test"
to = ["security@example.test"]
subject = "[regwatch] {{{{ status }}}}: {{{{ labels.repository }}}}:{{{{ labels.tag }}}}"
timeout = "2s"
"#,
        smtp.port
    );
    let config = ConfigBuilder::new(&reg.url())
        .api_token(TOKEN)
        .login(ALICE)
        .registry("signature_keys", [trusted.public.clone()].as_slice())
        .registry("poll_interval", "1s")
        .registry("probe_interval", "1s")
        .extra(&rules)
        .build();
    let d = Daemon::start(&config);

    // Both unsigned prod tags fire once the grace is over, one mail each.
    let mails = smtp.wait_for(2, Duration::from_secs(90));
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let texts: Vec<String> = mails.iter().map(|m| decoded(m)).collect();
    for tag in ["1.1", "2.0"] {
        let m = texts
            .iter()
            .find(|m| m.contains(&format!("Subject: [regwatch] firing: prod/app:{tag}")))
            .unwrap_or_else(|| panic!("no firing mail for {tag}: {texts:#?}"));
        assert!(
            m.contains(&format!(
                "unsigned-prod firing: prod/app:{tag} on main has no signature a trusted key verifies"
            )),
            "{m}"
        );
    }
    let seen = first_seen(&d.db_path(), "prod/app", "1.1").expect("first_seen stored");
    let fired: Vec<(String, String)> = alert_states(&d);
    assert!(
        fired.contains(&(
            "registry=main,repository=prod/app,tag=1.1".into(),
            "firing".into()
        )),
        "{fired:?}"
    );
    assert!(
        !fired
            .iter()
            .any(|(k, _)| k.contains("dev/tool") || k.contains("tag=1.0")),
        "{fired:?}"
    );
    let m = metrics_of(&d);
    assert_eq!(
        metric(
            &m,
            "regwatch_tags{registry=\"main\",signature=\"verified\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "regwatch_tags{registry=\"main\",signature=\"none\"}"),
        Some(3.0)
    );
    // Not before the grace: the alert fired no earlier than GRACE after the first sighting.
    let since: f64 = sqlite3(
        &d.db_path(),
        "SELECT state FROM alert_states WHERE key = 'registry=main,repository=prod/app,tag=1.1'",
    )
    .trim()
    .parse::<serde_json::Value>()
    .ok()
    .and_then(|s| {
        time::OffsetDateTime::parse(
            s["fired_at"].as_str()?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
    })
    .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
    .expect("fired_at");
    assert!(
        since >= seen + GRACE_SECS - 0.01,
        "fired at {since}, first seen {seen}"
    );

    // A tag pushed and signed at once is inside its grace the whole time: it never fires.
    let quick = push(&images, &reg, "base-1.0", "prod/app:3.0");
    push_signatures(&reg, "prod/app", &quick, &[(&trusted, &quick)]);
    wait_until(Duration::from_secs(60), "prod/app:3.0 seen", || {
        first_seen(&d.db_path(), "prod/app", "3.0").is_some()
    });
    let quick_seen = first_seen(&d.db_path(), "prod/app", "3.0").unwrap();
    wait_until(Duration::from_secs(90), "a poll after 3.0's grace", || {
        last_poll(&d) > quick_seen + GRACE_SECS + 2.0
    });
    two_more_polls(&d);
    assert!(
        !alert_states(&d).iter().any(|(k, _)| k.contains("tag=3.0")),
        "{:?}",
        alert_states(&d)
    );

    // kill -9 and restart: the firing alerts are neither resolved nor mailed again.
    let mut d = d;
    d.proc.signal("KILL");
    d.proc.wait_exit(Duration::from_secs(10)).expect("killed");
    let d = Daemon::start_in(d.dir, &config, &[]);
    two_more_polls(&d);
    two_more_polls(&d);
    let subjects = || -> Vec<String> {
        smtp.messages()
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("Subject:"))
                    .map(str::to_string)
            })
            .collect()
    };
    assert_eq!(
        subjects().len(),
        2,
        "no mail again after the restart: {:?}\n{}",
        subjects(),
        std::fs::read_to_string(d.dir.path().join("stderr.log")).unwrap()
    );
    assert!(alert_states(&d).contains(&(
        "registry=main,repository=prod/app,tag=1.1".into(),
        "firing".into()
    )));

    // The signature arrives after the grace: resolved, and a signature_attached audit row.
    push_signatures(&reg, "prod/app", &late, &[(&trusted, &late)]);
    let mails = smtp.wait_for(3, Duration::from_secs(60));
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let resolved = decoded(&mails[2]);
    assert!(
        resolved.contains("Subject: [regwatch] resolved: prod/app:1.1"),
        "{resolved}"
    );
    let keyname = trusted.public.display().to_string();
    let rows = sqlite3(
        &d.db_path(),
        "SELECT repository || ':' || tag || ' ' || digest || ' ' || detail FROM audit_events WHERE action = 'signature_attached' ORDER BY id",
    );
    let rows: Vec<&str> = rows.lines().collect();
    assert!(
        rows.contains(&format!("prod/app:1.1 {late} 1 signature, verified by {keyname}").as_str()),
        "{rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("prod/app:3.0 ")),
        "{rows:#?}"
    );
    assert_eq!(
        rows.len(),
        2,
        "one per image that gained a signature: {rows:#?}"
    );
    let cfg = d.config_path();
    let (code, out, err) = regwatch(&[
        "audit",
        "query",
        "--grouped",
        "--config",
        cfg.to_str().unwrap(),
        "--action",
        "signature_attached",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("saw a signature attached to prod/app:1.1"),
        "{out}"
    );

    // The other unsigned tag goes: resolved too. Nothing else is ever mailed.
    let out = skopeo(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", ALICE.0, ALICE.1),
        &format!("docker://{}/prod/app:2.0", reg.host()),
    ]);
    assert_ok(&out, "skopeo delete prod/app:2.0");
    let mails = smtp.wait_for(4, Duration::from_secs(60));
    assert_eq!(mails.len(), 4, "{mails:#?}");
    assert!(decoded(&mails[3]).contains("Subject: [regwatch] resolved: prod/app:2.0"));
    two_more_polls(&d);
    assert_eq!(smtp.messages().len(), 4);
    let (code, out, err) = regwatch(&["audit", "verify", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn signature_keys_that_are_not_p256_public_keys_are_located_errors_at_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = SigningKey::generate(dir.path(), "ci");
    let rsa = dir.path().join("rsa.pub");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl genrsa 2048 2>/dev/null | openssl rsa -pubout -out {} 2>/dev/null",
            rsa.display()
        ))
        .output()
        .unwrap();
    assert_ok(&out, "openssl genrsa | openssl rsa -pubout");
    let text = |keys: &str| {
        format!(
            "[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:5000\"\nsignature_keys = [\n  {keys}\n]\n\n\
             [[rule]]\nname = \"unsigned\"\nkind = \"unsigned_image\"\nrepositories = [\"prod/*\"]\ngrace = \"15m\"\n"
        )
    };
    let cfg = dir.path().join("regwatch.toml");
    let keys = [&rsa, &good.private, &dir.path().join("missing.pub")]
        .map(|p| format!("\"{}\"", p.display()))
        .join(",\n  ");
    std::fs::write(&cfg, text(&keys)).unwrap();
    let (code, out, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}{err}");
    let at = cfg.display().to_string();
    // Located at the key (the entry's index in the key path).
    for (index, says) in [
        (0, "an RSA public key, not ECDSA P-256"),
        (1, "this is a private key"),
        (2, "cannot read"),
    ] {
        let prefix = format!("{at}:4:1: registry[0].signature_keys[{index}]: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(says)),
            "{prefix}… {says}\n{err}"
        );
    }
    // Nothing of the private key reaches the output.
    let private = std::fs::read_to_string(&good.private).unwrap();
    let secret_line = private.lines().nth(1).unwrap();
    assert!(!err.contains(secret_line), "{err}");

    std::fs::write(&cfg, text(&format!("\"{}\"", good.public.display()))).unwrap();
    let (code, out, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "signatures verified with {}",
            good.public.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("unsigned_image in prod/* (grace 15m, for 0s"),
        "{out}"
    );

    // repositories and grace belong to unsigned_image.
    std::fs::write(
        &cfg,
        "[[registry]]\nname = \"main\"\nurl = \"http://127.0.0.1:5000\"\n\n\
         [[rule]]\nname = \"guessing\"\nkind = \"auth_failures\"\ngrace = \"1m\"\n",
    )
    .unwrap();
    let (code, _, err) = regwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(":8:1: rule[0].grace: grace is only used by kind = \"unsigned_image\""),
        "{err}"
    );
}
