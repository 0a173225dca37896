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
}
