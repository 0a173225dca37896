//! The container image (packaging/Dockerfile, built by packaging/build-image.sh with the real
//! buildah): its config, its contents, and its root filesystem running the daemon as the
//! image's non-root user against the real registry. There is no container engine on the test
//! machines, so the image is unpacked with umoci and run under chroot, which tests what the
//! image holds (the binary finds its libraries, certificates and user) though not a runtime.

use crate::support::*;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_container_image_runs_the_daemon_as_its_non_root_user() {
    require("buildah", "buildah");
    require("umoci", "umoci");
    require("skopeo", "skopeo");
    let chroot = require("chroot", "coreutils");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        uid, 0,
        "running the unpacked image needs chroot, which needs root: run the tests as root (CI does)"
    );
    let work = tempfile::Builder::new()
        .prefix("regwatch-image-")
        .tempdir()
        .unwrap();
    // buildah's own store, in the temp dir (vfs: no overlay mounts needed), gone after the test.
    let storage_conf = work.path().join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/graph\"\n",
            work.path().display()
        ),
    )
    .unwrap();
    let oci = work.path().join("oci");
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/build-image.sh"
    ))
    .args(["-b", env!("CARGO_BIN_EXE_regwatch")])
    .args(["-t", "localhost/regwatch-test:latest"])
    .arg("-o")
    .arg(&oci)
    .env("IMAGE_BUILDER", "buildah")
    .env("CONTAINERS_STORAGE_CONF", &storage_conf)
    .output()
    .unwrap();
    assert_ok(&out, "packaging/build-image.sh");
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("{}:{version}", oci.display());

    let out = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{image}"))
        .output()
        .unwrap();
    assert_ok(&out, "skopeo inspect --config");
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{c}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/bin/regwatch"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["run", "--config", "/etc/regwatch/regwatch.toml"])
    );
    assert!(c["ExposedPorts"].get("10708/tcp").is_some(), "{c}");
    assert!(c["Volumes"].get("/var/lib/regwatch").is_some(), "{c}");

    let bundle = work.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_ok(&out, "umoci unpack");
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("usr/bin/regwatch").is_file());
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    assert!(!rootfs.join("bin/sh").exists(), "no shell in the image");
    let state = std::fs::metadata(rootfs.join("var/lib/regwatch")).unwrap();
    assert_eq!((state.uid(), state.mode() & 0o777), (65532, 0o700));
    assert_eq!(std::fs::metadata(rootfs.join("var/lib")).unwrap().uid(), 0);

    // The daemon from the image, as its user, against the real registry.
    let registry = Registry::start(RegistryOptions::default());
    let port = free_port();
    std::fs::write(
        rootfs.join("etc/regwatch/regwatch.toml"),
        ConfigBuilder::new(&registry.url())
            .listen(&format!("127.0.0.1:{port}"))
            .database("/var/lib/regwatch/regwatch.db")
            .login(ALICE)
            .registry("probe_interval", "1s")
            .build(),
    )
    .unwrap();
    let mut daemon = Proc::spawn(
        "regwatch (image)",
        Command::new(chroot)
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args([
                "/usr/bin/regwatch",
                "run",
                "--config",
                "/etc/regwatch/regwatch.toml",
            ]),
        &work.path().join("stdout.log"),
        &work.path().join("stderr.log"),
    );
    daemon.wait_port(port);
    wait_until(Duration::from_secs(20), "the registry seen up", || {
        http_get(port, "/metrics")
            .map(|(_, m)| metric(&m, "regwatch_registry_up{registry=\"main\"}") == Some(1.0))
            .unwrap_or(false)
    });
    let db = std::fs::metadata(rootfs.join("var/lib/regwatch/regwatch.db")).unwrap();
    assert_eq!((db.uid(), db.mode() & 0o777), (65532, 0o600));
    daemon.signal("TERM");
    let (status, _) = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("stopped on SIGTERM");
    assert!(status.success(), "{}", daemon.stderr());
}
