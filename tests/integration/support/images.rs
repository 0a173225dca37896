//! Test images and how they move: small OCI images built with umoci into an OCI layout
//! (the test machines have no container engine), with random content so that every build has
//! its own digests, and skopeo to push them to a registry and pull them back as a given user.
//! The layout is also the independent side of byte accounting: tests take blob sizes from it,
//! not from the registry whose numbers regwatch is checked against.

use super::proc::{assert_ok, require};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

/// Small OCI images in an OCI layout, built with umoci (no Docker engine).
pub struct Images {
    pub dir: tempfile::TempDir,
}

impl Images {
    /// `base-1.0` (two layers), `app-1.0` and `app-1.1` (the base layers plus one own layer
    /// each), `tool-0.1` (unrelated). Content is random, so digests differ per build.
    pub fn build() -> Images {
        require("umoci", "umoci");
        let dir = tempfile::Builder::new()
            .prefix("regwatch-oci-")
            .tempdir()
            .unwrap();
        let layout = dir.path().join("layout");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let l = |tag: &str| format!("{}:{tag}", layout.display());
        let umoci = |args: &[&str]| {
            let out = Command::new("umoci").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "umoci {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let random_file = |name: &str, len: usize| {
            let mut f = fs::File::create(src.join(name)).unwrap();
            let mut r = fs::File::open("/dev/urandom").unwrap();
            let mut buf = vec![0u8; len];
            r.read_exact(&mut buf).unwrap();
            f.write_all(&buf).unwrap();
            src.join(name).display().to_string()
        };
        umoci(&["init", "--layout", &layout.display().to_string()]);
        umoci(&["new", "--image", &l("base-1.0")]);
        let release = src.join("release");
        fs::write(&release, "NAME=\"regwatch test base\"\n").unwrap();
        umoci(&[
            "insert",
            "--image",
            &l("base-1.0"),
            &release.display().to_string(),
            "/etc/release",
        ]);
        let blob = random_file("base.bin", 64 * 1024);
        umoci(&[
            "insert",
            "--image",
            &l("base-1.0"),
            &blob,
            "/usr/share/base.bin",
        ]);
        umoci(&[
            "config",
            "--image",
            &l("base-1.0"),
            "--os",
            "linux",
            "--architecture",
            "amd64",
        ]);
        for (tag, size) in [("app-1.0", 16 * 1024), ("app-1.1", 24 * 1024)] {
            let f = random_file(tag, size);
            umoci(&[
                "insert",
                "--image",
                &l("base-1.0"),
                "--tag",
                tag,
                &f,
                "/app/app.bin",
            ]);
        }
        umoci(&["new", "--image", &l("tool-0.1")]);
        let f = random_file("tool.bin", 32 * 1024);
        umoci(&["insert", "--image", &l("tool-0.1"), &f, "/usr/bin/tool"]);
        umoci(&[
            "config",
            "--image",
            &l("tool-0.1"),
            "--os",
            "linux",
            "--architecture",
            "amd64",
        ]);
        Images { dir }
    }

    /// `oci:<layout>:<tag>` for skopeo.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.path().join("layout").display())
    }

    /// Adds `name` to the layout: an OCI image index over `base` (amd64) and an arm64
    /// variant of it (same layers, another config, tagged `{base}-arm64`), like
    /// shared/tools/realenv.sh builds. `note` goes into the index's annotations, so two
    /// indexes over the same children can have different digests. Push with
    /// [`skopeo_push_all`]. Returns the index digest.
    pub fn add_multi_platform_index(&self, base: &str, name: &str, note: &str) -> String {
        let layout = self.dir.path().join("layout");
        let index_path = layout.join("index.json");
        let read_index = || -> serde_json::Value {
            serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap()
        };
        let find = |index: &serde_json::Value, tag: &str| {
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .cloned()
        };
        let arm = format!("{base}-arm64");
        if find(&read_index(), &arm).is_none() {
            let out = Command::new("umoci")
                .args(["config", "--image"])
                .arg(format!("{}:{base}", layout.display()))
                .args(["--tag", &arm, "--architecture", "arm64"])
                .output()
                .unwrap();
            assert_ok(&out, "umoci config --architecture arm64");
        }
        let mut index = read_index();
        let mut children = Vec::new();
        for (tag, arch) in [(base, "amd64"), (arm.as_str(), "arm64")] {
            let m = find(&index, tag).unwrap();
            children.push(serde_json::json!({
                "mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
                "platform": {"architecture": arch, "os": "linux"}
            }));
        }
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
            "annotations": {"org.opencontainers.image.description": note},
        }))
        .unwrap();
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&body))
        };
        fs::write(layout.join("blobs/sha256").join(&digest), &body).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{digest}"),
                "size": body.len(),
                "annotations": {"org.opencontainers.image.ref.name": name}
            }));
        fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        format!("sha256:{digest}")
    }
}

/// Runs `skopeo --insecure-policy ARGS…` (test registries have no signature policy).
pub fn skopeo(args: &[&str]) -> Output {
    require("skopeo", "skopeo");
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap()
}

/// Pushes `src` (e.g. [`Images::reference`]) to `host/repo:tag` as `creds`.
pub fn skopeo_push(src: &str, host: &str, repo_tag: &str, creds: (&str, &str)) -> Output {
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", creds.0, creds.1),
        src,
        &format!("docker://{host}/{repo_tag}"),
    ])
}

/// [`skopeo_push`] with `--all`: an image index is pushed with every child manifest.
pub fn skopeo_push_all(src: &str, host: &str, repo_tag: &str, creds: (&str, &str)) -> Output {
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{}:{}", creds.0, creds.1),
        src,
        &format!("docker://{host}/{repo_tag}"),
    ])
}

/// Pulls `host/repo:tag` into a `dir:` destination as `creds`.
pub fn skopeo_pull(host: &str, repo_tag: &str, creds: (&str, &str), dest: &Path) -> Output {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("{}:{}", creds.0, creds.1),
        &format!("docker://{host}/{repo_tag}"),
        &format!("dir:{}", dest.display()),
    ])
}
