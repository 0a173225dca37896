//! A CloudEvents receiver (tests/fixtures/cloudevents_receiver.py): validates every batch
//! with the CloudEvents Python SDK (PyPI `cloudevents`) plus the required attributes the SDK
//! would otherwise fill in, checks the HMAC signature when given a secret, records what it
//! accepted, and answers 503 while told to fail.

use super::proc::{Proc, free_port, require};
use std::fs;
use std::process::Command;

pub struct CloudEventsReceiver {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl CloudEventsReceiver {
    pub fn start(secret: Option<&str>) -> CloudEventsReceiver {
        let python = require("python3", "python3");
        let probe = Command::new(&python)
            .args(["-c", "import cloudevents.core.formats.json"])
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "the CloudEvents Python SDK is not installed: run `python3 -m pip install cloudevents` (all test dependencies: scripts/deps.sh)"
        );
        let dir = tempfile::Builder::new()
            .prefix("regwatch-cloudevents-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut cmd = Command::new(python);
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cloudevents_receiver.py"
        ))
        .arg(port.to_string())
        .arg(dir.path());
        if let Some(s) = secret {
            cmd.arg(s);
        }
        let mut proc = Proc::spawn(
            "cloudevents-receiver",
            &mut cmd,
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
        );
        proc.wait_port(port);
        CloudEventsReceiver { dir, port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    /// The events accepted so far, in arrival order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.path().join("events.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Why requests were refused (empty when none was).
    pub fn refused(&self) -> String {
        fs::read_to_string(self.dir.path().join("refused.log")).unwrap_or_default()
    }

    /// While failing, every request is answered 503.
    pub fn set_failing(&self, failing: bool) {
        let flag = self.dir.path().join("fail");
        if failing {
            fs::write(flag, "").unwrap();
        } else {
            let _ = fs::remove_file(flag);
        }
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}
