//! The harness itself works against the real servers: later issues rely on it.

use crate::support::*;
use std::process::Command;

#[test]
fn registry_behind_nginx_accepts_skopeo_push_and_pull_and_logs_them() {
    let registry = Registry::start(RegistryOptions::default());
    let nginx = Nginx::start(&registry);
    let images = Images::build();

    assert_ok(
        &skopeo_push(
            &images.reference("app-1.0"),
            &nginx.host(),
            "team/app:1.0",
            ALICE,
        ),
        "push via nginx",
    );
    let pulled = tempfile::tempdir().unwrap();
    assert_ok(
        &skopeo_pull(
            &nginx.host(),
            "team/app:1.0",
            BOB,
            &pulled.path().join("app"),
        ),
        "pull via nginx",
    );
    assert!(pulled.path().join("app/manifest.json").is_file());

    // bob is read-only through nginx, but the registry alone lets him write.
    let denied = skopeo_push(
        &images.reference("tool-0.1"),
        &nginx.host(),
        "bobs/tool:0.1",
        BOB,
    );
    assert!(
        !denied.status.success(),
        "bob's push through nginx should be refused"
    );
    assert_ok(
        &skopeo_push(
            &images.reference("tool-0.1"),
            &registry.host(),
            "bobs/tool:0.1",
            BOB,
        ),
        "direct push as bob",
    );

    let access = std::fs::read_to_string(nginx.access_log()).unwrap();
    assert!(
        access.contains("\"PUT /v2/team/app/manifests/1.0 HTTP/1.1\" 201"),
        "{access}"
    );
    assert!(
        access.contains(" bob [")
            && access.contains("\"POST /v2/bobs/tool/blobs/uploads/ HTTP/1.1\" 403"),
        "{access}"
    );
    let reg_log = std::fs::read_to_string(registry.log_path()).unwrap();
    assert!(
        reg_log.contains("\"http.request.uri\":\"/v2/team/app/manifests/1.0\""),
        "{reg_log}"
    );
    let catalog = Command::new("curl")
        .args([
            "-sS",
            "-u",
            "bob:bob-pass",
            &format!("{}/v2/_catalog", nginx.url()),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&catalog.stdout).trim(),
        r#"{"repositories":["bobs/tool","team/app"]}"#
    );
    let (status, metrics) = http_get(registry.debug_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("registry_http_requests_total"),
        "{metrics}"
    );
}

#[test]
fn registry_restarts_on_the_same_port_with_its_storage() {
    let mut registry = Registry::start(RegistryOptions::default());
    let images = Images::build();
    assert_ok(
        &skopeo_push(
            &images.reference("base-1.0"),
            &registry.host(),
            "team/base:1.0",
            ALICE,
        ),
        "push",
    );
    registry.stop();
    assert!(
        http_get(registry.port, "/v2/").is_err(),
        "registry still answers after stop"
    );
    registry.restart();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-u",
            "alice:alice-pass",
            &format!("{}/v2/team/base/tags/list", registry.url()),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"name":"team/base","tags":["1.0"]}"#
    );
}

#[test]
fn smtp_sink_stores_what_it_receives() {
    let smtp = SmtpSink::start();
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {})\ns.sendmail('regwatch@example.test', ['ops@example.test'], 'Subject: harness check\\r\\n\\r\\nhello from the harness\\r\\n')\ns.quit()\n",
        smtp.port
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_ok(&out, "sending a mail with smtplib");
    let mails = smtp.wait_for(1, std::time::Duration::from_secs(5));
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("Subject: harness check"), "{}", mails[0]);
    assert!(
        mails[0].contains("X-RcptTo: ops@example.test"),
        "{}",
        mails[0]
    );
}
