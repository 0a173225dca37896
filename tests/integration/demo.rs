//! The README's first command, `scripts/demo.sh`, as a newcomer runs it (but with the test
//! build of regwatch instead of a release build, and free ports): everything starts, the traffic it sends shows up
//! in the views it prints, the chain verifies, and `scripts/demo.sh down` stops it all.

use std::process::Command;

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn the_demo_script_runs_the_main_job_and_stops_cleanly() {
    // Its own free ports, so a demo someone left running (or anything on 5000) is no matter.
    let ports = [(); 4].map(|_| crate::support::free_port());
    let dir = tempfile::Builder::new()
        .prefix("regwatch-demo-")
        .tempdir()
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("REGWATCH_DEMO_DIR", dir.path())
            .env("REGWATCH_BIN", env!("CARGO_BIN_EXE_regwatch"))
            .env("DEMO_REGISTRY_PORT", ports[0].to_string())
            .env("DEMO_DEBUG_PORT", ports[1].to_string())
            .env("DEMO_NGINX_PORT", ports[2].to_string())
            .env("DEMO_REGWATCH_PORT", ports[3].to_string())
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Stop whatever started, also when an assertion below fails.
    struct Down<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)(&["down"]);
        }
    }
    let down = Down(&run);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "alice pushed team/app:1.0",
        "bob pulled team/app:1.0",
        "bob failed to log in from 127.0.0.1",
        "team/app       2",
        "reclaimable  0 B in 0 blobs",
        "every link intact",
    ] {
        assert!(
            stdout.contains(want),
            "missing {want:?} in:\n{stdout}\n{stderr}"
        );
    }
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("wrote "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no report written:\n{stdout}"));
    let html = std::fs::read_to_string(report).unwrap();
    assert!(
        html.contains("team/app") && html.contains("alice"),
        "{report}"
    );
    assert_eq!(
        stdout.matches("auth_failure  bob").count(),
        3,
        "three wrong passwords, three rows:\n{stdout}"
    );
    assert!(
        stdout.contains("regwatch_registry_up{registry=\"demo\"} 1"),
        "{stdout}"
    );
    // The demo's figures are nginx's: its one pull, no failed pull (the pushes' blob HEADs
    // are existence checks), regwatch's polling through nginx apart, each failed login once.
    let metrics: String = stdout
        .lines()
        .filter(|l| l.starts_with("regwatch_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let nginx = crate::support::tally(&dir.path().join("logs/access.log"));
    let m = |series: &str| crate::support::metric(&metrics, series);
    assert_eq!(
        m("regwatch_pull_failures_total{registry=\"demo\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        m("regwatch_pull_failure_ratio{registry=\"demo\",window=\"1m\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        m("regwatch_pulls_total{registry=\"demo\"}"),
        Some(nginx.counts.pulls as f64),
        "{metrics}"
    );
    assert!(nginx.checks_missing > 0, "{nginx:?}");
    assert!(
        m("regwatch_blob_checks_total{registry=\"demo\"}").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    assert_eq!(
        m("regwatch_auth_failures_total{registry=\"demo\"}"),
        Some(3.0),
        "{metrics}"
    );
    let db_path = dir.path().join("regwatch.db");
    assert_eq!(
        crate::support::count(
            &db_path,
            "SELECT count(*) FROM audit_events WHERE user_agent LIKE 'regwatch/%'"
        ),
        0,
        "no row from regwatch's own polling"
    );
    let db = std::fs::metadata(&db_path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(db.permissions().mode() & 0o777, 0o600);

    drop(down);
    std::thread::sleep(std::time::Duration::from_millis(500));
    for p in ports {
        assert!(
            !listening(p),
            "127.0.0.1:{p} still open after `demo.sh down`"
        );
    }
}
