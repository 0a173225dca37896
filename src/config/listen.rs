//! `[[listen]]`: inputs regwatch listens on besides its HTTP server. Today one kind,
//! `harbor_syslog`: the TCP endpoint Harbor's `audit_log_forward_endpoint` points at, whose
//! lines become audit rows of a configured registry.

use super::diagnose::{Errors, KeyPath};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;

/// `[[listen]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    kind: String,
    address: String,
    registry: String,
    #[serde(default = "default_max_line")]
    max_line_bytes: usize,
}

/// A checked `[[listen]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    pub kind: ListenKind,
    /// Where to accept connections (loopback unless Harbor runs on another host).
    pub address: SocketAddr,
    /// The configured registry the lines' events belong to.
    pub registry: String,
    /// Longer lines are dropped (and logged), so one sender cannot grow a buffer without end.
    pub max_line_bytes: usize,
}

/// What a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    /// Harbor's audit log forwarding: Go `log/syslog` lines over TCP.
    HarborSyslog,
}

impl ListenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenKind::HarborSyslog => "harbor_syslog",
        }
    }
}

fn default_max_line() -> usize {
    64 * 1024
}

/// Checks every `[[listen]]`; `registries` are the configured registry names and `http` the
/// server's own address (which a listener cannot share).
pub(super) fn listens(
    raw: Vec<RawListen>,
    registries: &[&str],
    http: Option<SocketAddr>,
    errs: &mut Errors<'_>,
) -> Option<Vec<ListenConfig>> {
    let mut seen: HashSet<SocketAddr> = http.into_iter().collect();
    let checked: Vec<Option<ListenConfig>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let at = KeyPath::default().key("listen").index(i);
            listen(l, &at, registries, &mut seen, errs)
        })
        .collect();
    checked.into_iter().collect()
}

fn listen(
    l: RawListen,
    at: &KeyPath,
    registries: &[&str],
    seen: &mut HashSet<SocketAddr>,
    errs: &mut Errors<'_>,
) -> Option<ListenConfig> {
    let kind = match l.kind.as_str() {
        "harbor_syslog" => Some(ListenKind::HarborSyslog),
        other => {
            errs.at_key(
                at,
                "kind",
                format!("unknown listen kind {other:?}: expected harbor_syslog"),
            );
            None
        }
    };
    let address = match l.address.parse::<SocketAddr>() {
        Ok(a) if !seen.insert(a) => {
            errs.at_key(
                at,
                "address",
                format!("{a} is already used by server.listen or another [[listen]]"),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errs.at_key(
                at,
                "address",
                format!(
                    "expected an IP address and port such as \"127.0.0.1:1514\", not {:?}",
                    l.address
                ),
            );
            None
        }
    };
    if !registries.contains(&l.registry.as_str()) {
        errs.at_key(
            at,
            "registry",
            format!("no [[registry]] is named {:?}", l.registry),
        );
    }
    if !(256..=1 << 20).contains(&l.max_line_bytes) {
        errs.at_key(at, "max_line_bytes", "must be between 256 and 1048576");
    }
    registries.contains(&l.registry.as_str()).then_some(())?;
    Some(ListenConfig {
        kind: kind?,
        address: address?,
        registry: l.registry,
        max_line_bytes: l.max_line_bytes,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Origin, parse};
    use std::path::Path;

    #[test]
    fn a_harbor_listener_and_its_located_mistakes() {
        let base = "[[registry]]\nname = \"harbor\"\nurl = \"http://x\"\n";
        let c = parse(
            &format!("{base}[[listen]]\nkind = \"harbor_syslog\"\naddress = \"127.0.0.1:1514\"\nregistry = \"harbor\"\n"),
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.listens[0].address.to_string(), "127.0.0.1:1514");
        assert_eq!(c.listens[0].max_line_bytes, 65536);
        let e = parse(
            &format!(
                "{base}[[listen]]\nkind = \"syslog\"\naddress = \"localhost\"\nregistry = \"hub\"\n"
            ),
            Origin::Embedded,
            Path::new("/"),
        )
        .unwrap_err();
        let got: Vec<String> = e.lines();
        assert_eq!(
            got,
            [
                "5:1 listen[0].kind: unknown listen kind \"syslog\": expected harbor_syslog",
                "6:1 listen[0].address: expected an IP address and port such as \"127.0.0.1:1514\", not \"localhost\"",
                "7:1 listen[0].registry: no [[registry]] is named \"hub\"",
            ]
        );
    }
}
