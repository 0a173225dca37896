//! Where a registry keeps its blobs, for the storage monitor: a local `storage_root`, an S3
//! bucket (`[registry.s3]`), or whichever of the two the registry's own `config.yml` names
//! (`registry_config`), so users who run the registry from that file configure storage once.
//!
//! The three are exclusive: a registry has one storage. The S3 settings mirror the s3-aws
//! driver's (`bucket`, `region`, `regionendpoint`, `rootdirectory`); the keys are secrets and
//! follow the usual inline / `*_file` / `*_env` rule, or come from the registry's file or the
//! `REGISTRY_STORAGE_S3_*` variables the registry itself reads.

use super::diagnose::{Errors, KeyPath};
use super::secret::{self, Resolved, Secret, SecretFields, SecretSource};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// `[registry.s3]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    endpoint: Option<String>,
    bucket: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    root_directory: String,
    access_key: Option<Secret>,
    access_key_file: Option<PathBuf>,
    access_key_env: Option<String>,
    secret_key: Option<Secret>,
    secret_key_file: Option<PathBuf>,
    secret_key_env: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// An S3 bucket holding a registry's storage (distribution's `storage.s3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Storage {
    /// Where requests go: the configured endpoint, or AWS's for the region.
    pub endpoint: reqwest::Url,
    /// Path-style (`endpoint/bucket/key`) for every endpoint but AWS's own, which uses
    /// virtual-hosted buckets; MinIO, Ceph and SeaweedFS want path style.
    pub path_style: bool,
    pub bucket: String,
    pub region: String,
    /// The driver's `rootdirectory` without leading or trailing `/`: keys start with
    /// `<root_directory>/docker/registry/v2/` (or `docker/registry/v2/` when empty).
    pub root_directory: String,
    pub access_key: Resolved,
    pub secret_key: Resolved,
}

impl S3Storage {
    /// The key prefix of distribution's layout: `[root/]docker/registry/v2/`.
    pub fn layout_prefix(&self) -> String {
        if self.root_directory.is_empty() {
            "docker/registry/v2/".into()
        } else {
            format!("{}/docker/registry/v2/", self.root_directory)
        }
    }
}

impl fmt::Display for S3Storage {
    /// For `regwatch check` and logs: where, never the keys' values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s3://{}/{} at {} ({}, region {}; access key {}, secret key {})",
            self.bucket,
            self.root_directory,
            self.endpoint.as_str().trim_end_matches('/'),
            if self.path_style {
                "path style"
            } else {
                "virtual-hosted"
            },
            self.region,
            self.access_key.source,
            self.secret_key.source
        )
    }
}

/// The checked storage of one registry.
#[derive(Debug, Clone, Default)]
pub(super) struct Checked {
    pub root: Option<PathBuf>,
    pub s3: Option<S3Storage>,
    /// `registry_config`, resolved.
    pub registry_config: Option<PathBuf>,
}

/// The storage keys of one `[[registry]]` as written.
pub(super) struct Given<'a> {
    pub storage_root: Option<&'a Path>,
    pub s3: Option<&'a RawS3>,
    pub registry_config: Option<&'a Path>,
    pub capacity_bytes: Option<u64>,
}

/// Checks the storage keys of the registry at `at`; `None` when a mistake was reported.
pub(super) fn check(
    given: Given<'_>,
    at: &KeyPath,
    base: &Path,
    errs: &mut Errors<'_>,
) -> Option<Checked> {
    let exclusive = [
        ("storage_root", given.storage_root.is_some()),
        ("s3", given.s3.is_some()),
        ("registry_config", given.registry_config.is_some()),
    ];
    let named: Vec<&str> = exclusive.iter().filter(|e| e.1).map(|e| e.0).collect();
    if named.len() > 1 {
        errs.at_key(
            at,
            named[1],
            format!(
                "a registry has one storage: give {} only (not {})",
                named.join(" or "),
                named.join(" and ")
            ),
        );
        return None;
    }
    let mut out = Checked::default();
    if let Some(root) = given.storage_root {
        let root = base.join(root);
        if !root.is_dir() {
            errs.at_key(
                at,
                "storage_root",
                format!("{} is not a directory", root.display()),
            );
            return None;
        }
        out.root = Some(root);
    }
    if let Some(raw) = given.s3 {
        out.s3 = Some(s3(raw, &at.clone().key("s3"), base, errs)?);
    }
    if let Some(file) = given.registry_config {
        let path = base.join(file);
        match from_registry_config(&path, &EnvVars) {
            Ok(Found::Root(root)) => out.root = Some(root),
            Ok(Found::S3(s3)) => out.s3 = Some(*s3),
            Err(msg) => {
                errs.at_key(at, "registry_config", msg);
                return None;
            }
        }
        out.registry_config = Some(path);
    }
    if given.capacity_bytes.is_some() && out.s3.is_none() {
        errs.at_key(
            at,
            "capacity_bytes",
            "capacity_bytes is for S3 storage (a bucket quota); a storage_root's capacity is its filesystem's",
        );
        return None;
    }
    if given.capacity_bytes == Some(0) {
        errs.at_key(at, "capacity_bytes", "must be greater than 0");
        return None;
    }
    Some(out)
}

fn s3(raw: &RawS3, at: &KeyPath, base: &Path, errs: &mut Errors<'_>) -> Option<S3Storage> {
    let mut ok = true;
    let keys = [("access_key", 0), ("secret_key", 1)].map(|(key, i)| {
        let fields = if i == 0 {
            SecretFields {
                inline: raw.access_key.as_ref(),
                file: raw.access_key_file.as_deref(),
                env: raw.access_key_env.as_deref(),
            }
        } else {
            SecretFields {
                inline: raw.secret_key.as_ref(),
                file: raw.secret_key_file.as_deref(),
                env: raw.secret_key_env.as_deref(),
            }
        };
        match secret::read(errs, at, key, fields, base).checked() {
            Some(Some(r)) => Some(r),
            Some(None) => {
                errs.at(
                    at,
                    format!("missing {key} (or {key}_file / {key}_env): regwatch signs its requests with the bucket's keys"),
                );
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        }
    });
    let endpoint = match endpoint(raw.endpoint.as_deref(), &raw.region) {
        Ok(e) => Some(e),
        Err(msg) => {
            errs.at_key(at, "endpoint", msg);
            None
        }
    };
    if raw.bucket.is_empty() || raw.bucket.contains('/') {
        errs.at_key(at, "bucket", "a bucket name, without slashes");
        ok = false;
    }
    if raw.region.is_empty() {
        errs.at_key(
            at,
            "region",
            "must not be empty (us-east-1 for most S3 servers)",
        );
        ok = false;
    }
    let [access_key, secret_key] = keys;
    let (endpoint, path_style) = endpoint?;
    if !ok {
        return None;
    }
    Some(S3Storage {
        endpoint,
        path_style,
        bucket: raw.bucket.clone(),
        region: raw.region.clone(),
        root_directory: root_directory(&raw.root_directory),
        access_key: access_key?,
        secret_key: secret_key?,
    })
}

/// The endpoint URL and whether to use path-style addressing: path style for a configured
/// endpoint, virtual-hosted buckets on AWS's regional endpoint when none is given.
fn endpoint(given: Option<&str>, region: &str) -> Result<(reqwest::Url, bool), String> {
    let Some(text) = given else {
        let url = format!("https://s3.{region}.amazonaws.com");
        return reqwest::Url::parse(&url)
            .map(|u| (u, false))
            .map_err(|e| format!("no endpoint and region {region:?} makes no AWS URL: {e}"));
    };
    match reqwest::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok((u, true)),
        Ok(_) => Err(format!(
            "unsupported endpoint {text:?}: expected http:// or https:// with a host"
        )),
        Err(e) => Err(format!(
            "invalid endpoint {text:?} ({e}): expected e.g. \"http://127.0.0.1:9000\""
        )),
    }
}

fn root_directory(root: &str) -> String {
    root.trim_matches('/').to_string()
}

/// What the registry's config file says its storage is.
#[derive(Debug)]
enum Found {
    Root(PathBuf),
    S3(Box<S3Storage>),
}

/// The environment, as the registry reads it (tests pass their own).
trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

struct EnvVars;

impl Env for EnvVars {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

#[derive(Deserialize)]
struct RegistryYaml {
    storage: Option<serde_yaml_ng::Mapping>,
}

/// Reads `storage.filesystem.rootdirectory` or `storage.s3` from distribution's config file.
/// Like the registry, `REGISTRY_STORAGE_S3_<KEY>` variables override the file's S3 values
/// (how keys are usually kept out of it).
fn from_registry_config(path: &Path, env: &dyn Env) -> Result<Found, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the registry config {}: {e}", path.display()))?;
    let yaml: RegistryYaml = serde_yaml_ng::from_str(&text).map_err(|e| {
        // serde_yaml_ng's message names line and column already.
        format!("{} is not a registry config: {e}", path.display())
    })?;
    let storage = yaml
        .storage
        .ok_or_else(|| format!("{} has no storage section", path.display()))?;
    let section = |name: &str| storage.get(name).and_then(|v| v.as_mapping());
    if let Some(fs) = section("filesystem") {
        let root = yaml_str(fs, "rootdirectory").unwrap_or_else(|| "/var/lib/registry".into());
        let root = PathBuf::from(root);
        if !root.is_dir() {
            return Err(format!(
                "storage.filesystem.rootdirectory of {} is {}, which is not a directory here (regwatch must run on the registry's host)",
                path.display(),
                root.display()
            ));
        }
        return Ok(Found::Root(root));
    }
    let Some(s3) = section("s3") else {
        let drivers: Vec<String> = storage
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .filter(|k| !matches!(k.as_str(), "delete" | "cache" | "maintenance" | "redirect"))
            .collect();
        return Err(format!(
            "the storage of {} is {}: regwatch walks filesystem and s3 storage",
            path.display(),
            if drivers.is_empty() {
                "not configured".to_string()
            } else {
                drivers.join(", ")
            }
        ));
    };
    s3_from_yaml(s3, path, env).map(|s| Found::S3(Box::new(s)))
}

fn s3_from_yaml(
    s3: &serde_yaml_ng::Mapping,
    path: &Path,
    env: &dyn Env,
) -> Result<S3Storage, String> {
    let value = |key: &str| -> Option<(String, SecretSource)> {
        let var = format!("REGISTRY_STORAGE_S3_{}", key.to_uppercase());
        match env.var(&var) {
            Some(v) => Some((v, SecretSource::Env(var))),
            None => yaml_str(s3, key).map(|v| (v, SecretSource::File(path.to_path_buf()))),
        }
    };
    let need = |key: &str| {
        value(key).ok_or_else(|| {
            format!(
                "storage.s3.{key} is not in {} nor in $REGISTRY_STORAGE_S3_{}: regwatch needs it to walk the bucket",
                path.display(),
                key.to_uppercase()
            )
        })
    };
    let (bucket, _) = need("bucket")?;
    let (region, _) = need("region")?;
    let (access, access_source) = need("accesskey")?;
    let (secret, secret_source) = need("secretkey")?;
    let secure = value("secure").is_none_or(|(v, _)| v != "false");
    let given = value("regionendpoint").map(|(e, _)| {
        if e.contains("://") {
            e
        } else {
            format!("{}://{e}", if secure { "https" } else { "http" })
        }
    });
    let (endpoint, _) = endpoint(given.as_deref(), &region)
        .map_err(|e| format!("storage.s3.regionendpoint of {}: {e}", path.display()))?;
    // The driver addresses buckets virtual-hosted unless `forcepathstyle` (which MinIO and
    // Ceph setups set): regwatch addresses the bucket the way the registry does.
    let path_style = value("forcepathstyle").is_some_and(|(v, _)| v == "true");
    Ok(S3Storage {
        endpoint,
        path_style,
        bucket,
        region,
        root_directory: root_directory(&value("rootdirectory").map(|v| v.0).unwrap_or_default()),
        access_key: Resolved {
            value: Secret::new(access),
            source: access_source,
        },
        secret_key: Resolved {
            value: Secret::new(secret),
            source: secret_source,
        },
    })
}

/// A scalar of the registry's YAML as text (`secure: false` and `secure: "false"` alike).
fn yaml_str(map: &serde_yaml_ng::Mapping, key: &str) -> Option<String> {
    match map.get(key)? {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, &'static str>);
    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    fn write(dir: &Path, yaml: &str) -> PathBuf {
        let p = dir.join("config.yml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    #[test]
    fn reads_the_s3_section_like_the_registry_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "version: 0.1\nstorage:\n  s3:\n    accesskey: AKID\n    secretkey: from-the-file\n    region: eu-west-1\n    regionendpoint: 127.0.0.1:8333\n    bucket: reg\n    rootdirectory: /prefix/\n    forcepathstyle: true\n    secure: false\n    v4auth: true\n  delete:\n    enabled: true\n",
        );
        let vars = Vars(HashMap::from([(
            "REGISTRY_STORAGE_S3_SECRETKEY",
            "from-the-env",
        )]));
        let Found::S3(s) = from_registry_config(&p, &vars).unwrap() else {
            panic!("not s3")
        };
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:8333/");
        assert!(s.path_style);
        assert_eq!((s.bucket.as_str(), s.region.as_str()), ("reg", "eu-west-1"));
        assert_eq!(s.layout_prefix(), "prefix/docker/registry/v2/");
        assert_eq!(s.access_key.value.expose(), "AKID");
        assert_eq!(s.access_key.source, SecretSource::File(p.clone()));
        assert_eq!(s.secret_key.value.expose(), "from-the-env");
        let shown = s.to_string();
        assert!(
            !shown.contains("from-the-env") && !shown.contains("AKID"),
            "{shown}"
        );
        assert!(
            shown.contains("secret key from $REGISTRY_STORAGE_S3_SECRETKEY"),
            "{shown}"
        );

        // AWS itself: no endpoint, virtual-hosted buckets.
        let p = write(
            dir.path(),
            "storage:\n  s3:\n    accesskey: a\n    secretkey: b\n    region: us-west-2\n    bucket: reg\n",
        );
        let Found::S3(s) = from_registry_config(&p, &Vars(HashMap::new())).unwrap() else {
            panic!("not s3")
        };
        assert_eq!(s.endpoint.as_str(), "https://s3.us-west-2.amazonaws.com/");
        assert!(!s.path_style);
        assert_eq!(s.layout_prefix(), "docker/registry/v2/");
    }

    #[test]
    fn names_what_is_missing_or_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let none = Vars(HashMap::new());
        let p = write(
            dir.path(),
            "storage:\n  s3:\n    region: x\n    bucket: reg\n    accesskey: a\n",
        );
        let e = from_registry_config(&p, &none).unwrap_err();
        assert!(e.contains("storage.s3.secretkey is not in"), "{e}");
        let p = write(
            dir.path(),
            "storage:\n  azure:\n    accountname: x\n  delete: {}\n",
        );
        let e = from_registry_config(&p, &none).unwrap_err();
        assert!(
            e.contains("is azure: regwatch walks filesystem and s3"),
            "{e}"
        );
        let p = write(dir.path(), "storage: [\n");
        let e = from_registry_config(&p, &none).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let p = write(
            dir.path(),
            &format!(
                "storage:\n  filesystem:\n    rootdirectory: {}\n",
                dir.path().display()
            ),
        );
        assert!(
            matches!(from_registry_config(&p, &none).unwrap(), Found::Root(r) if r == dir.path())
        );
    }

    fn errors(text: &str) -> Vec<String> {
        match crate::config::parse(text, crate::config::Origin::Embedded, Path::new("/")) {
            Ok(_) => vec![],
            Err(e) => e.lines(),
        }
    }

    const REG: &str = "[[registry]]\nname = \"a\"\nurl = \"http://x\"\n";

    #[test]
    fn s3_table_is_checked_with_located_errors_and_never_printed() {
        let c = crate::config::parse(
            &format!(
                "{REG}capacity_bytes = 1000000\n[registry.s3]\nendpoint = \"http://127.0.0.1:8333\"\nbucket = \"registry\"\nroot_directory = \"/regprefix\"\naccess_key = \"AKIDVALUE\"\nsecret_key = \"SECRETVALUE\"\n"
            ),
            crate::config::Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        let s3 = c.registries[0].s3.as_ref().unwrap();
        assert_eq!(s3.region, "us-east-1");
        assert!(s3.path_style);
        assert_eq!(s3.layout_prefix(), "regprefix/docker/registry/v2/");
        let summary = c.summary();
        assert!(
            summary.contains("storage s3://registry/regprefix at http://127.0.0.1:8333 (path style, region us-east-1; access key set inline, secret key set inline) (capacity 976.6 KiB"),
            "{summary}"
        );
        assert!(
            !summary.contains("SECRETVALUE") && !summary.contains("AKIDVALUE"),
            "{summary}"
        );
        assert!(!format!("{c:?}").contains("SECRETVALUE"));

        let e = errors(&format!(
            "{REG}storage_root = \"/\"\n[registry.s3]\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\n"
        ));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with(
                "5:11 registry[0].s3: a registry has one storage: give storage_root or s3 only"
            ),
            "{e:#?}"
        );
        let e = errors(&format!(
            "{REG}[registry.s3]\nbucket = \"b/c\"\nendpoint = \"ftp://x\"\naccess_key = \"a\"\n"
        ));
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("4:11 registry[0].s3: missing secret_key"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("5:1 registry[0].s3.bucket: a bucket name"),
            "{e:#?}"
        );
        assert!(
            e[2].starts_with("6:1 registry[0].s3.endpoint: unsupported endpoint"),
            "{e:#?}"
        );
        let e = errors(&format!("{REG}storage_root = \"/\"\ncapacity_bytes = 5\n"));
        assert!(
            e[0].starts_with("5:1 registry[0].capacity_bytes: capacity_bytes is for S3"),
            "{e:#?}"
        );
        let e = errors(&format!(
            "{REG}registry_config = \"/nonexistent/config.yml\"\n"
        ));
        assert!(
            e[0].starts_with("4:1 registry[0].registry_config: cannot read the registry config /nonexistent/config.yml"),
            "{e:#?}"
        );
    }
}
