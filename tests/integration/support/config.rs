//! regwatch configs for tests. Nearly every daemon test starts its TOML the same way: a
//! `[server]` listening on `127.0.0.1:{port}` (perhaps with an API token), a `[database]`
//! at `{dir}/regwatch.db`, and one `[[registry]]` named `main` with a URL, perhaps a login
//! and a few intervals; only what follows (logs, rules, channels, reports) is the test's own.
//! [`ConfigBuilder`] writes that preamble, each key once and in that order, and appends the
//! test's own TOML unchanged, so a test shows only what it is about. `{port}` and `{dir}` are
//! left for [`Daemon`](super::Daemon) to fill in. Tests about where regwatch reports a
//! mistake (`file:line:column`) keep writing their TOML literally: their line numbers are
//! part of what they assert, and must not move when the builder's layout does.

use std::fmt;
use std::path::Path;

/// A value as the builder writes it into TOML: strings quoted, numbers and booleans bare.
pub trait TomlValue {
    fn to_toml(&self) -> String;
}

impl TomlValue for str {
    fn to_toml(&self) -> String {
        let plain = |c: char| !c.is_control() && c != '\'';
        if self.contains('\\') && self.chars().all(plain) {
            // A literal string keeps a regex such as '^[0-9]+\.[0-9]+$' as it was written.
            return format!("'{self}'");
        }
        let mut out = String::from("\"");
        for c in self.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
}

impl TomlValue for String {
    fn to_toml(&self) -> String {
        self.as_str().to_toml()
    }
}

impl<T: TomlValue + ?Sized> TomlValue for &T {
    fn to_toml(&self) -> String {
        (**self).to_toml()
    }
}

impl TomlValue for Path {
    fn to_toml(&self) -> String {
        self.display().to_string().to_toml()
    }
}

impl TomlValue for std::path::PathBuf {
    fn to_toml(&self) -> String {
        self.as_path().to_toml()
    }
}

impl TomlValue for bool {
    fn to_toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for i32 {
    fn to_toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for u64 {
    fn to_toml(&self) -> String {
        self.to_string()
    }
}

/// An array, e.g. `signature_keys = ["/…/ci.pub"]`.
impl<T: TomlValue> TomlValue for [T] {
    fn to_toml(&self) -> String {
        let items: Vec<String> = self.iter().map(TomlValue::to_toml).collect();
        format!("[{}]", items.join(", "))
    }
}

/// The `[server]`, `[database]` and `[[registry]]` preamble of a test's regwatch config.
///
/// ```ignore
/// let config = ConfigBuilder::new(&registry.url())
///     .api_token(TOKEN)
///     .login(ALICE)
///     .registry("poll_interval", "2s")
///     .extra(&rules_and_channels)
///     .build();
/// let daemon = Daemon::start(&config);
/// ```
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    /// `[server]` keys in order; `None` writes no `[server]` table.
    server: Option<Vec<(String, String)>>,
    /// `[database] path` (or `url_file`, see [`postgres`](Self::postgres)); `None` writes
    /// no `[database]` table.
    database: Option<String>,
    /// The `[database]` key `database` is the value of.
    database_key: &'static str,
    /// `[[registry]]` keys in order, `name` and `url` first.
    registry: Vec<(String, String)>,
    /// The test's own TOML, appended as it is.
    extra: String,
}

impl ConfigBuilder {
    /// `listen = "127.0.0.1:{port}"`, `path = "{dir}/regwatch.db"`, and a registry `main`
    /// at `url`.
    pub fn new(url: &str) -> ConfigBuilder {
        ConfigBuilder {
            server: Some(vec![("listen".into(), "127.0.0.1:{port}".to_toml())]),
            database: Some("{dir}/regwatch.db".to_toml()),
            database_key: "path",
            registry: vec![
                ("name".into(), "main".to_toml()),
                ("url".into(), url.to_toml()),
            ],
            extra: String::new(),
        }
    }

    /// Only a `[[registry]]` (and what [`extra`](Self::extra) adds), for commands such as
    /// `check` or `alerts test` that need no server or database.
    pub fn registry_only(url: &str) -> ConfigBuilder {
        ConfigBuilder::new(url).no_server().no_database()
    }

    /// `server.listen` instead of `127.0.0.1:{port}`.
    pub fn listen(self, addr: &str) -> ConfigBuilder {
        self.server("listen", addr)
    }

    /// `server.api_token`.
    pub fn api_token(self, token: &str) -> ConfigBuilder {
        self.server("api_token", token)
    }

    /// Sets a `[server]` key (replacing it if it was set).
    pub fn server(mut self, key: &str, value: impl TomlValue) -> ConfigBuilder {
        let server = self.server.get_or_insert_with(Vec::new);
        set(server, key, value.to_toml());
        self
    }

    /// Writes no `[server]` table (regwatch's defaults apply).
    pub fn no_server(mut self) -> ConfigBuilder {
        self.server = None;
        self
    }

    /// `database.path` instead of `{dir}/regwatch.db`.
    pub fn database(mut self, path: impl AsRef<Path>) -> ConfigBuilder {
        self.database = Some(path.as_ref().display().to_string().to_toml());
        self.database_key = "path";
        self
    }

    /// `database.url_file` (a PostgreSQL URL in that file) instead of a SQLite path.
    pub fn postgres(mut self, url_file: impl AsRef<Path>) -> ConfigBuilder {
        self.database = Some(url_file.as_ref().display().to_string().to_toml());
        self.database_key = "url_file";
        self
    }

    /// Writes no `[database]` table.
    pub fn no_database(mut self) -> ConfigBuilder {
        self.database = None;
        self
    }

    /// The registry's name instead of `main`.
    pub fn name(self, name: &str) -> ConfigBuilder {
        self.registry("name", name)
    }

    /// The registry's `username` and `password` (e.g. [`ALICE`](super::ALICE)).
    pub fn login(self, (user, password): (&str, &str)) -> ConfigBuilder {
        self.registry("username", user)
            .registry("password", password)
    }

    /// Sets a `[[registry]]` key (replacing it if it was set), e.g. `poll_interval`.
    pub fn registry(mut self, key: &str, value: impl TomlValue) -> ConfigBuilder {
        set(&mut self.registry, key, value.to_toml());
        self
    }

    /// Appends the test's own TOML (its `[[log]]`, `[[rule]]`, `[[channel]]` tables …) after
    /// the preamble, unchanged.
    pub fn extra(mut self, toml: &str) -> ConfigBuilder {
        self.extra.push_str(toml);
        self
    }

    /// The config text.
    pub fn build(&self) -> String {
        self.to_string()
    }
}

fn set(table: &mut Vec<(String, String)>, key: &str, value: String) {
    match table.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => table.push((key.to_string(), value)),
    }
}

impl fmt::Display for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(server) = &self.server {
            writeln!(f, "[server]")?;
            for (k, v) in server {
                writeln!(f, "{k} = {v}")?;
            }
            writeln!(f)?;
        }
        if let Some(path) = &self.database {
            writeln!(f, "[database]\n{} = {path}\n", self.database_key)?;
        }
        writeln!(f, "[[registry]]")?;
        for (k, v) in &self.registry {
            writeln!(f, "{k} = {v}")?;
        }
        f.write_str(&self.extra)
    }
}
