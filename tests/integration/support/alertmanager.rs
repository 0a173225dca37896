//! A real Alertmanager (Debian's prometheus-alertmanager) as an alert channel: one node
//! (`--cluster.listen-address=` turns off gossip, which would need another port and slows the
//! start), one receiver that sends nothing or forwards to a webhook, and its own v2 API for
//! tests to see which alerts it holds. Start-up waits for `/-/ready`, because the port opens
//! before the API is wired up.

use super::http::http_get;
use super::proc::{Proc, free_port, require, wait_until};
use std::fs;
use std::process::Command;
use std::time::Duration;

/// A real Alertmanager (Debian's prometheus-alertmanager), alone: no cluster peers
/// (`--cluster.listen-address=`), one receiver that sends nothing. Tests read its own API.
pub struct Alertmanager {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Self::start_config(
            "route:\n  receiver: blackhole\n  group_wait: 0s\nreceivers:\n  - name: blackhole\n",
        )
    }

    /// Routing every alert to a webhook at once (group_wait 0s), resolved ones too.
    pub fn start_with_webhook(url: &str) -> Alertmanager {
        Self::start_config(&format!(
            "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: \"{url}\"\n        send_resolved: true\n"
        ))
    }

    pub fn start_config(config: &str) -> Alertmanager {
        let bin = require("prometheus-alertmanager", "prometheus-alertmanager");
        let dir = tempfile::Builder::new()
            .prefix("regwatch-am-")
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        let port = free_port();
        let mut proc = Proc::spawn(
            "alertmanager",
            Command::new(bin)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("alertmanager.yml").display()
                ))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address="),
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        // The port opens before the API is wired up; /-/ready says when it is.
        wait_until(Duration::from_secs(30), "Alertmanager /-/ready", || {
            matches!(http_get(port, "/-/ready"), Ok((200, _)))
        });
        Alertmanager { dir, port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts` (Alertmanager lists alerts that are not resolved yet).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.port, "/api/v2/alerts").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}
