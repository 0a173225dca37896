//! RFC 5424 messages from audit rows, octet-counted for a stream (RFC 6587 §3.4.1). Pure:
//! the header fields come in, bytes go out.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [regwatch@PEN id=… hash=… …] MSG`: the
//! row's columns are SD-PARAMs under a private SD-ID, so a SIEM copy can be checked against
//! `regwatch audit verify` (the chain hash and the row id are both there); MSGID is the
//! action; MSG is a one-line summary for people reading the SIEM.

use crate::store::AuditRow;
use std::fmt::Write as _;

/// What is the same in every message of one forwarder.
#[derive(Debug, Clone)]
pub struct Header {
    /// 0-23.
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub procid: u32,
    pub enterprise_number: u32,
}

/// RFC 5424 severities used: failed logins are warnings, deletions notices, the rest
/// informational.
fn severity(action: &str) -> u8 {
    match action {
        "auth_failure" => 4,
        "delete" | "tag_deleted" | "repository_deleted" => 5,
        _ => 6,
    }
}

/// `"`, `\` and `]` escaped with a backslash (RFC 5424 §6.3.3); every other character as is.
pub fn escape_param_value(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One RFC 5424 message (without framing).
pub fn message(row: &AuditRow, h: &Header) -> String {
    let pri = u16::from(h.facility) * 8 + u16::from(severity(&row.action));
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "<{pri}>1 {} {} {} {} {} ",
        row.time,
        h.hostname,
        h.app_name,
        h.procid,
        msgid(&row.action)
    );
    structured_data(row, h.enterprise_number, &mut out);
    out.push(' ');
    summary(row, &mut out);
    out
}

/// MSGID is at most 32 printable characters; actions are shorter, but a stored row is data.
fn msgid(action: &str) -> String {
    let id: String = action
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    if id.is_empty() { "-".into() } else { id }
}

/// `[regwatch@PEN id="…" …]` with every column that has a value.
fn structured_data(row: &AuditRow, pen: u32, out: &mut String) {
    let _ = write!(out, "[regwatch@{pen} id=\"{}\"", row.id);
    let fields = row.fields();
    // COLUMNS[0] is the id, written first; the rest in column order.
    for (name, value) in crate::store::COLUMNS.iter().zip(fields.iter()).skip(1) {
        if value.is_empty() {
            continue;
        }
        let _ = write!(out, " {name}=\"");
        escape_param_value(value, out);
        out.push('"');
    }
    out.push(']');
}

/// "alice push team/app:1.0 from 10.0.0.5 (registry main)", newlines flattened so one
/// message is one line in a file-based SIEM.
fn summary(row: &AuditRow, out: &mut String) {
    let start = out.len();
    out.push_str(row.actor.as_deref().unwrap_or("-"));
    out.push(' ');
    out.push_str(&row.action);
    if let Some(repo) = &row.repository {
        out.push(' ');
        out.push_str(repo);
        if let Some(tag) = &row.tag {
            out.push(':');
            out.push_str(tag);
        } else if let Some(d) = &row.digest {
            out.push('@');
            out.push_str(d);
        }
    }
    if let Some(a) = &row.remote_addr {
        out.push_str(" from ");
        out.push_str(a);
    }
    if let Some(r) = &row.registry {
        out.push_str(" (registry ");
        out.push_str(r);
        out.push(')');
    }
    let flat: String = out[start..]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out.truncate(start);
    out.push_str(&flat);
}

/// `MSG-LEN SP SYSLOG-MSG`: the length in bytes, so messages may hold any character.
pub fn frame(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            id: 42,
            time: "2026-11-28T19:59:40.123456Z".into(),
            registry: Some("main".into()),
            action: "push".into(),
            repository: Some("team/app".into()),
            tag: Some("1.0".into()),
            digest: Some("sha256:ab".into()),
            media_type: None,
            size: Some(137),
            actor: Some("alice".into()),
            remote_addr: Some("10.0.0.5".into()),
            user_agent: Some("skopeo \"1.9\" [x] \\y".into()),
            request_id: None,
            method: Some("PUT".into()),
            source: "notification".into(),
            status: None,
            event_id: Some("e-1".into()),
            detail: Some("line1\nline2".into()),
            prev_hash: "00ff".into(),
            hash: "abcd".into(),
        }
    }

    fn header() -> Header {
        Header {
            facility: 16,
            hostname: "host1".into(),
            app_name: "regwatch".into(),
            procid: 7,
            enterprise_number: 32473,
        }
    }

    #[test]
    fn a_row_becomes_an_rfc5424_message_with_escaped_structured_data() {
        let m = message(&row(), &header());
        assert_eq!(
            m,
            "<134>1 2026-11-28T19:59:40.123456Z host1 regwatch 7 push [regwatch@32473 id=\"42\" \
             time=\"2026-11-28T19:59:40.123456Z\" registry=\"main\" action=\"push\" repository=\"team/app\" \
             tag=\"1.0\" digest=\"sha256:ab\" size=\"137\" actor=\"alice\" remote_addr=\"10.0.0.5\" \
             user_agent=\"skopeo \\\"1.9\\\" [x\\] \\\\y\" method=\"PUT\" source=\"notification\" \
             event_id=\"e-1\" detail=\"line1\nline2\" prev_hash=\"00ff\" hash=\"abcd\"] \
             alice push team/app:1.0 from 10.0.0.5 (registry main)"
        );
    }

    #[test]
    fn severity_follows_the_action_and_framing_counts_bytes() {
        let mut r = row();
        r.action = "auth_failure".into();
        assert!(message(&r, &header()).starts_with("<132>1 "));
        r.action = "delete".into();
        assert!(message(&r, &header()).starts_with("<133>1 "));
        let mut out = Vec::new();
        frame("<1>1 é", &mut out);
        assert_eq!(out, "7 <1>1 é".as_bytes());
    }

    #[test]
    fn escaping_leaves_other_characters_alone() {
        let mut out = String::new();
        escape_param_value("a\"b\\c]d[e=f", &mut out);
        assert_eq!(out, "a\\\"b\\\\c\\]d[e=f");
    }
}
