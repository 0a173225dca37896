//! Harbor's audit log forwarding (`audit_log_forward_endpoint`): one line per audit entry,
//! written by Go's `log/syslog` over TCP (`<PRI>TIMESTAMP HOST TAG[PID]: MSG\n`, RFC 3339
//! timestamp) around Harbor's own text log format (`TIME [LEVEL] [file:line][k="v" …]: MSG`).
//! The fields are `operator`, `time` and, since Harbor 2.13, `resourceType`; the message is
//! `action:<operation>, resource:<resource>` (2.13 adds `, operation_description:…`).
//!
//! Pure: a line in, an [`Event`] (or the reason there is none) out.

use crate::model::{Action, Event, Source};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why a line gave no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HarborLineError {
    #[error("not a syslog line (expected <PRI>TIMESTAMP HOST TAG: MSG)")]
    NotSyslog,
    #[error("no audit fields (operator=\"…\") in the message")]
    NoFields,
    #[error("no action:…, resource:… in the message")]
    NoAction,
}

/// A line that parsed: an audit event, or an operation the trail does not record (project,
/// robot and other configuration changes, successful logins), named for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Event(Box<Event>),
    Skipped {
        operation: String,
        resource_type: String,
    },
}

/// The parts of the syslog wrapper.
struct Wrapper<'a> {
    time: Option<OffsetDateTime>,
    message: &'a str,
}

/// `<PRI>TIMESTAMP HOSTNAME TAG[PID]: MSG` (Go's network format).
fn unwrap_syslog(line: &str) -> Option<Wrapper<'_>> {
    let rest = line.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    if pri.is_empty() || pri.len() > 3 || !pri.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (stamp, rest) = rest.split_once(' ')?;
    let (_host, rest) = rest.split_once(' ')?;
    let (_tag, message) = rest.split_once(": ")?;
    Some(Wrapper {
        time: OffsetDateTime::parse(stamp, &Rfc3339).ok(),
        message,
    })
}

/// The `[k="v" …]` block Harbor's logger adds for `WithField`: (key, value) pairs. Values
/// are printed with Go's `%v`, unescaped; one ends at a quote followed by a space or `]`.
fn fields(message: &str) -> Option<(Vec<(&str, &str)>, &str)> {
    let at = message.find("[operator=\"").or_else(|| {
        // Keys are sorted; `operator` is not always the first.
        let op = message.find(" operator=\"")?;
        message[..op].rfind('[')
    })?;
    let mut rest = &message[at + 1..];
    let mut pairs = Vec::new();
    loop {
        let (key, after) = rest.split_once("=\"")?;
        let key = key.trim_start();
        let mut end = None;
        for (i, _) in after.match_indices('"') {
            let next = after[i + 1..].chars().next();
            if matches!(next, Some(' ') | Some(']')) {
                end = Some(i);
                break;
            }
        }
        let end = end?;
        pairs.push((key, &after[..end]));
        rest = &after[end + 1..];
        if let Some(after_block) = rest.strip_prefix(']') {
            return Some((pairs, after_block));
        }
    }
}

fn field<'a>(pairs: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `action:<op>, resource:<res>[, operation_description:<text>]`.
fn action_and_resource(message: &str) -> Option<(&str, &str, Option<&str>)> {
    let message = message.trim_start_matches(':').trim();
    let rest = message.strip_prefix("action:")?;
    let (op, rest) = rest.split_once(", resource:")?;
    let (resource, description) = match rest.split_once(", operation_description:") {
        Some((r, d)) => (r, Some(d.trim_end())),
        None => (rest.trim_end(), None),
    };
    Some((op.trim(), resource.trim(), description))
}

/// Go's `time.Time` `%v`: `2026-12-01 23:51:26.123456789 +0000 UTC`.
fn go_time(text: &str) -> Option<OffsetDateTime> {
    let mut parts = text.split(' ');
    let (date, clock, offset) = (parts.next()?, parts.next()?, parts.next()?);
    let sign = offset.get(..1)?;
    let (hh, mm) = (offset.get(1..3)?, offset.get(3..5)?);
    if !matches!(sign, "+" | "-") {
        return None;
    }
    let rfc = format!("{date}T{clock}{sign}{hh}:{mm}");
    OffsetDateTime::parse(&rfc, &Rfc3339).ok()
}

/// The audit action of a Harbor operation on a resource type (`None`: not recorded).
fn action(operation: &str, resource_type: &str, description: Option<&str>) -> Option<Action> {
    let failed = description.is_some_and(|d| d.to_ascii_lowercase().contains("fail"));
    match (operation.to_ascii_lowercase().as_str(), resource_type) {
        ("pull", _) => Some(Action::Pull),
        ("create", "artifact" | "tag" | "") => Some(Action::Push),
        ("delete", "artifact" | "tag" | "repository" | "") => Some(Action::Delete),
        ("login_failed" | "login_failure", _) => Some(Action::AuthFailure),
        ("login", _) if failed => Some(Action::AuthFailure),
        _ => None,
    }
}

/// `project/repo:tag`, `project/repo@sha256:…` or `project/repo`.
fn split_resource(resource: &str) -> (&str, Option<&str>, Option<&str>) {
    if let Some((repo, digest)) = resource.split_once('@') {
        return (repo, None, Some(digest));
    }
    match resource.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag), None),
        _ => (resource, None, None),
    }
}

/// Parses one forwarded line (without its newline) for `registry`; `received` stamps an
/// event whose line carries no readable time.
pub fn parse_line(
    line: &str,
    registry: &str,
    received: OffsetDateTime,
) -> Result<Parsed, HarborLineError> {
    let w = unwrap_syslog(line.trim_end_matches(['\r', '\n'])).ok_or(HarborLineError::NotSyslog)?;
    let (pairs, message) = fields(w.message).ok_or(HarborLineError::NoFields)?;
    let (operation, resource, description) =
        action_and_resource(message).ok_or(HarborLineError::NoAction)?;
    let resource_type = field(&pairs, "resourceType").unwrap_or("");
    let Some(action) = action(operation, resource_type, description) else {
        return Ok(Parsed::Skipped {
            operation: operation.to_string(),
            resource_type: resource_type.to_string(),
        });
    };
    let time = field(&pairs, "time")
        .and_then(go_time)
        .or(w.time)
        .unwrap_or(received);
    let mut e = Event::new(time, action, Source::Log);
    e.registry = Some(registry.to_string());
    e.actor = field(&pairs, "operator")
        .filter(|o| !o.is_empty())
        .map(String::from);
    if action != Action::AuthFailure && !resource.is_empty() {
        let (repo, tag, digest) = split_resource(resource);
        e.repository = Some(repo.to_string());
        e.tag = tag.map(String::from);
        e.digest = digest.map(String::from);
    }
    let mut detail = format!("harbor audit log: {operation}");
    if !resource_type.is_empty() {
        detail.push(' ');
        detail.push_str(resource_type);
    }
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        detail.push_str(" (");
        detail.push_str(d);
        detail.push(')');
    }
    e.detail = Some(detail);
    Ok(Parsed::Event(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-02 00:00 UTC);

    fn event(line: &str) -> Event {
        match parse_line(line, "harbor", NOW).unwrap() {
            Parsed::Event(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pull_with_the_2_13_fields() {
        let e = event(
            "<6>2026-12-01T23:51:26Z harbor-core audit[1]: 2026-12-01T23:51:26Z [INFO] [/pkg/auditext/manager.go:72][operator=\"alice\" resourceType=\"artifact\" time=\"2026-12-01 23:51:26.123456789 +0000 UTC\"]: action:pull, resource:library/nginx:1.27, operation_description:pull artifact",
        );
        assert_eq!(e.action, Action::Pull);
        assert_eq!(e.actor.as_deref(), Some("alice"));
        assert_eq!(e.repository.as_deref(), Some("library/nginx"));
        assert_eq!(e.tag.as_deref(), Some("1.27"));
        assert_eq!(e.time, datetime!(2026-12-01 23:51:26.123456789 UTC));
        assert_eq!(e.registry.as_deref(), Some("harbor"));
        assert_eq!(
            e.detail.as_deref(),
            Some("harbor audit log: pull artifact (pull artifact)")
        );
    }

    #[test]
    fn legacy_lines_digests_deletes_and_failed_logins() {
        let e = event(
            "<6>2026-12-01T23:51:27Z core audit[9]: 2026-12-01T23:51:27Z [INFO] [/controller/event/handler/auditlog/auditlog.go:80][operator=\"bob\" time=\"2026-12-01 23:51:27 +0100 CET\"]:action:create, resource:team/app@sha256:abcd",
        );
        assert_eq!(e.action, Action::Push);
        assert_eq!(e.digest.as_deref(), Some("sha256:abcd"));
        assert_eq!(e.tag, None);
        assert_eq!(e.time, datetime!(2026-12-01 22:51:27 UTC));
        let d = event(
            "<6>2026-12-01T23:51:28Z core audit[9]: 2026-12-01T23:51:28Z [INFO] [/x.go:1][operator=\"admin\" resourceType=\"repository\" time=\"2026-12-01 23:51:28 +0000 UTC\"]: action:delete, resource:team/old",
        );
        assert_eq!(
            (d.action, d.repository.as_deref()),
            (Action::Delete, Some("team/old"))
        );
        let f = event(
            "<6>2026-12-01T23:51:29Z core audit[9]: 2026-12-01T23:51:29Z [INFO] [/x.go:1][operator=\"mallory\" resourceType=\"user\" time=\"2026-12-01 23:51:29 +0000 UTC\"]: action:login, resource:mallory, operation_description:login failed",
        );
        assert_eq!(
            (f.action, f.actor.as_deref()),
            (Action::AuthFailure, Some("mallory"))
        );
        assert_eq!(f.repository, None);
    }

    #[test]
    fn other_operations_are_skipped_and_garbage_is_named() {
        let skipped = parse_line(
            "<6>2026-12-01T23:51:30Z core audit[9]: 2026-12-01T23:51:30Z [INFO] [/x.go:1][operator=\"admin\" resourceType=\"project\" time=\"2026-12-01 23:51:30 +0000 UTC\"]: action:create, resource:newproject",
            "harbor",
            NOW,
        )
        .unwrap();
        assert_eq!(
            skipped,
            Parsed::Skipped {
                operation: "create".into(),
                resource_type: "project".into()
            }
        );
        assert_eq!(
            parse_line("hello", "h", NOW),
            Err(HarborLineError::NotSyslog)
        );
        assert_eq!(
            parse_line("<6>2026-12-01T23:51:30Z h t[1]: no fields", "h", NOW),
            Err(HarborLineError::NoFields)
        );
        assert_eq!(
            parse_line(
                "<6>2026-12-01T23:51:30Z h t[1]: x [operator=\"a\"]: nothing",
                "h",
                NOW
            ),
            Err(HarborLineError::NoAction)
        );
        // Unterminated or odd inputs end in an error, never a panic.
        for s in [
            "<",
            "<1>",
            "<1>a b",
            "<1>a b c: [operator=\"",
            "<1>a b c: [operator=\"x\" y=\"",
            "<999>é é é: é",
        ] {
            let _ = parse_line(s, "h", NOW);
        }
    }
}
