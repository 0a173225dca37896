//! The shipped example config is valid as shipped (apart from files only a real host has).

use std::process::Command;

#[test]
fn example_config_passes_check_once_its_files_exist() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/regwatch.example.toml"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), "t\n").unwrap();
    std::fs::write(dir.path().join("registry-password"), "p\n").unwrap();
    std::fs::write(dir.path().join("smtp-password"), "s\n").unwrap();
    std::fs::write(dir.path().join("webhook-secret"), "w\n").unwrap();
    std::fs::create_dir(dir.path().join("storage")).unwrap();
    let d = dir.path().display().to_string();
    let text = text
        .replace("/etc/regwatch", &d)
        .replace("/var/lib/docker-registry", &format!("{d}/storage"))
        .replace("/var/lib/regwatch", &d);
    let path = dir.path().join("regwatch.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regwatch"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("main         http://127.0.0.1:5000 (user monitor, password from file"),
        "{stdout}"
    );
    assert!(stdout.contains("retention 400d"), "{stdout}");
    assert!(
        stdout.contains("stale-dev    registry main, dev/*, team/*; keeps pulled within 30d, pushed within 7d, the newest 3 per repository, tags latest, release-*"),
        "{stdout}"
    );
    assert!(
        stdout.contains("weekly-retention html retention plan of stale-dev at \"0 6 * * MON\" UTC"),
        "{stdout}"
    );
}

#[test]
fn the_debian_package_holds_the_binary_unit_config_and_user_setup() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/build-deb.sh"
        ))
        .arg(env!("CARGO_BIN_EXE_regwatch"))
        .arg(out_dir.path())
        .env("REGWATCH_DEB_FAST", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-deb.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        deb.ends_with(".deb") && std::path::Path::new(&deb).is_file(),
        "{deb}"
    );

    let info = Command::new("dpkg-deb")
        .args(["--field", &deb, "Package", "Version", "Depends"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: regwatch"), "{info}");
    assert!(
        info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );

    let contents = Command::new("dpkg-deb")
        .args(["--contents", &deb])
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/regwatch"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/regwatch.service",
        ),
        ("-rw-r----- root/root", "./etc/regwatch/regwatch.toml"),
        (
            "-rw-r--r-- root/root",
            "./usr/share/regwatch/dashboards/regwatch.json",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/regwatch/alerts/regwatch.rules.yml",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} ({mode}) missing:\n{contents}"
        );
    }
    let conffiles = Command::new("dpkg-deb")
        .args(["--info", &deb, "conffiles"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        "/etc/regwatch/regwatch.toml"
    );

    // The packaged binary runs, and the packaged unit starts it with the packaged config.
    let root = tempfile::tempdir().unwrap();
    let x = Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(root.path())
        .status()
        .unwrap();
    assert!(x.success());
    let v = Command::new(root.path().join("usr/bin/regwatch"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("regwatch "));
    let unit =
        std::fs::read_to_string(root.path().join("lib/systemd/system/regwatch.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/regwatch run --config /etc/regwatch/regwatch.toml"),
        "{unit}"
    );
}
