//! The registry's notification envelopes (and Harbor's webhook payloads) as [`Event`]s.
//!
//! Pure: bytes in, events out. The HTTP side (token, body limit, commit-then-answer) is in
//! [`crate::http`].

use crate::model::event::{Action, Event, Source};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("event {index}: {message}")]
    Event { index: usize, message: String },
    #[error(
        "unrecognised payload: expected a registry envelope {{\"events\":[…]}} or a Harbor webhook {{\"type\":…,\"event_data\":…}}"
    )]
    Unrecognised,
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<RegistryEvent>,
}

#[derive(Deserialize)]
struct RegistryEvent {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    action: String,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    request: Request,
    #[serde(default)]
    actor: Actor,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Target {
    media_type: Option<String>,
    size: Option<u64>,
    digest: Option<String>,
    repository: Option<String>,
    tag: Option<String>,
    from_repository: Option<String>,
}

#[derive(Deserialize, Default)]
struct Request {
    id: Option<String>,
    addr: Option<String>,
    method: Option<String>,
    useragent: Option<String>,
}

#[derive(Deserialize, Default)]
struct Actor {
    name: Option<String>,
}

/// Parses a notification body for `registry`. Registry envelopes and Harbor payloads are told
/// apart by their shape.
/// How far ahead of regwatch's clock a sender's timestamp may be before it is not believed.
pub const MAX_SKEW: time::Duration = time::Duration::minutes(5);

/// Events dated more than [`MAX_SKEW`] after `now` (a sender's wrong clock, or a forged
/// `9999-12-31`) are dated `now`, their detail keeping the time they claimed: such a row
/// would otherwise fall outside every report period. Log times are bounded the same way.
pub fn bound_times(events: &mut [Event], now: OffsetDateTime) {
    for e in events.iter_mut().filter(|e| e.time > now + MAX_SKEW) {
        let claimed = format!(
            "sender's time {} was in the future",
            crate::model::text::format_time(e.time)
        );
        e.detail = Some(match e.detail.take() {
            Some(d) => format!("{d}; {claimed}"),
            None => claimed,
        });
        e.time = now;
    }
}

pub fn parse(body: &[u8], registry: &str) -> Result<Vec<Event>, NotificationError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| NotificationError::Json(e.to_string()))?;
    if value.get("events").is_some() {
        parse_envelope(value, registry)
    } else if value.get("type").is_some() && value.get("event_data").is_some() {
        parse_harbor(value, body, registry)
    } else {
        Err(NotificationError::Unrecognised)
    }
}

fn parse_envelope(
    value: serde_json::Value,
    registry: &str,
) -> Result<Vec<Event>, NotificationError> {
    let envelope: Envelope = serde_json::from_value(value)
        .map_err(|e| NotificationError::Json(format!("not a registry envelope: {e}")))?;
    envelope
        .events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let action = match e.action.as_str() {
                "push" => Action::Push,
                "pull" => Action::Pull,
                "mount" => Action::Mount,
                "delete" => Action::Delete,
                other => {
                    return Err(NotificationError::Event {
                        index,
                        message: format!("unknown action {other:?}"),
                    });
                }
            };
            if e.id.is_empty() {
                return Err(NotificationError::Event {
                    index,
                    message: "empty id".into(),
                });
            }
            let mut ev = Event::new(e.timestamp, action, Source::Notification);
            ev.registry = Some(registry.to_string());
            ev.repository = e.target.repository;
            ev.tag = e.target.tag;
            ev.digest = e.target.digest;
            ev.media_type = e.target.media_type;
            ev.size = e.target.size;
            ev.actor = e.actor.name.filter(|n| !n.is_empty());
            ev.remote_addr = e.request.addr;
            ev.user_agent = e.request.useragent;
            ev.request_id = e.request.id;
            ev.method = e.request.method;
            ev.event_id = Some(e.id);
            ev.detail = e
                .target
                .from_repository
                .map(|f| format!("mounted from {f}"));
            Ok(ev)
        })
        .collect()
}

#[derive(Deserialize)]
struct Harbor {
    #[serde(rename = "type")]
    kind: String,
    occur_at: i64,
    #[serde(default)]
    operator: Option<String>,
    event_data: HarborData,
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    resources: Vec<HarborResource>,
    repository: HarborRepository,
}

#[derive(Deserialize)]
struct HarborResource {
    digest: Option<String>,
    tag: Option<String>,
}

#[derive(Deserialize)]
struct HarborRepository {
    repo_full_name: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

/// Harbor sends no event id: the id is derived from the payload, so Harbor's retries of the
/// same payload are stored once.
fn parse_harbor(
    value: serde_json::Value,
    body: &[u8],
    registry: &str,
) -> Result<Vec<Event>, NotificationError> {
    let h: Harbor = serde_json::from_value(value)
        .map_err(|e| NotificationError::Json(format!("not a Harbor webhook payload: {e}")))?;
    let action = match h.kind.as_str() {
        "PUSH_ARTIFACT" => Action::Push,
        "PULL_ARTIFACT" => Action::Pull,
        "DELETE_ARTIFACT" => Action::Delete,
        other => {
            return Err(NotificationError::Event {
                index: 0,
                message: format!(
                    "unsupported Harbor event type {other:?} (expected PUSH_ARTIFACT, PULL_ARTIFACT or DELETE_ARTIFACT)"
                ),
            });
        }
    };
    let time =
        OffsetDateTime::from_unix_timestamp(h.occur_at).map_err(|e| NotificationError::Event {
            index: 0,
            message: format!("occur_at {}: {e}", h.occur_at),
        })?;
    let repo = h.event_data.repository;
    let repository = repo
        .repo_full_name
        .or_else(|| match (repo.namespace, repo.name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n),
            _ => None,
        });
    let payload_id = hex::encode(Sha256::digest(body));
    let resources = if h.event_data.resources.is_empty() {
        vec![HarborResource {
            digest: None,
            tag: None,
        }]
    } else {
        h.event_data.resources
    };
    Ok(resources
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut ev = Event::new(time, action, Source::Notification);
            ev.registry = Some(registry.to_string());
            ev.repository = repository.clone();
            ev.tag = r.tag;
            ev.digest = r.digest;
            ev.actor = h.operator.clone().filter(|o| !o.is_empty());
            ev.event_id = Some(format!("harbor:{payload_id}:{i}"));
            ev.detail = Some(format!("harbor {}", h.kind));
            ev
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &str = include_str!("../../tests/fixtures/notifications.ndjson");

    #[test]
    fn every_real_envelope_parses() {
        let mut by_action = std::collections::BTreeMap::new();
        let mut n = 0;
        for line in SAMPLES.lines() {
            for e in parse(line.as_bytes(), "main").unwrap() {
                *by_action.entry(e.action.as_str()).or_insert(0) += 1;
                assert!(e.event_id.is_some() && e.repository.is_some() && e.actor.is_some());
                n += 1;
            }
        }
        assert_eq!(n, 115);
        assert_eq!(by_action["delete"], 7);
        assert_eq!(by_action["mount"], 6);
    }

    #[test]
    fn maps_the_fields_of_a_manifest_push_and_a_tag_delete() {
        let push = SAMPLES
            .lines()
            .flat_map(|l| parse(l.as_bytes(), "main").unwrap())
            .find(|e| {
                e.action == Action::Push
                    && e.tag.as_deref() == Some("1.0")
                    && e.repository.as_deref() == Some("team/app")
            })
            .unwrap();
        assert_eq!(
            push.media_type.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(push.actor.as_deref(), Some("alice"));
        assert_eq!(push.method.as_deref(), Some("PUT"));
        assert_eq!(push.remote_addr.as_deref(), Some("127.0.0.1"));
        assert!(push.digest.as_deref().unwrap().starts_with("sha256:"));
        let del = parse(SAMPLES.lines().nth(84).unwrap().as_bytes(), "main").unwrap();
        assert_eq!(del[0].action, Action::Delete);
        assert_eq!(del[0].tag.as_deref(), Some("1.0"));
        assert_eq!(del[0].digest, None);
        assert_eq!(
            del[0].request_id.as_deref(),
            Some("3456efb3-8bb8-400e-a730-56fac7fa331d")
        );
    }

    #[test]
    fn mounts_name_their_source() {
        let mount = SAMPLES
            .lines()
            .flat_map(|l| parse(l.as_bytes(), "main").unwrap())
            .find(|e| e.action == Action::Mount)
            .unwrap();
        assert!(
            mount
                .detail
                .as_deref()
                .unwrap()
                .starts_with("mounted from "),
            "{:?}",
            mount.detail
        );
    }

    #[test]
    fn harbor_push_is_accepted_and_its_id_is_stable() {
        let body = br#"{"type":"PUSH_ARTIFACT","occur_at":1586922308,"operator":"admin","event_data":{"resources":[{"digest":"sha256:8a9e","tag":"latest","resource_url":"harbor.example/library/nginx:latest"}],"repository":{"date_created":1586922308,"name":"nginx","namespace":"library","repo_full_name":"library/nginx","repo_type":"private"}}}"#;
        let a = parse(body, "harbor").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].action, Action::Push);
        assert_eq!(a[0].repository.as_deref(), Some("library/nginx"));
        assert_eq!(a[0].tag.as_deref(), Some("latest"));
        assert_eq!(a[0].actor.as_deref(), Some("admin"));
        assert_eq!(a[0].event_id, parse(body, "harbor").unwrap()[0].event_id);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(matches!(
            parse(b"{not json", "m"),
            Err(NotificationError::Json(_))
        ));
        assert_eq!(
            parse(b"{\"hello\":1}", "m"),
            Err(NotificationError::Unrecognised)
        );
        assert!(
            parse(
                br#"{"events":[{"id":"x","timestamp":"yesterday","action":"push"}]}"#,
                "m"
            )
            .is_err()
        );
        let err = parse(
            br#"{"events":[{"id":"x","timestamp":"2026-11-28T19:59:33Z","action":"explode"}]}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "event 0: unknown action \"explode\"");
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..2000 {
            let len = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let alphabet = b"{}[]\":,eventsidtimestamp0123456789 ";
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse(&bytes, "m");
        }
    }

    #[test]
    fn times_from_the_future_are_dated_on_receipt_and_say_so() {
        let body = br#"{"events":[
            {"id":"a","timestamp":"9999-12-31T23:59:59Z","action":"push","target":{"repository":"r","digest":"sha256:00"}},
            {"id":"b","timestamp":"2026-11-28T19:59:33Z","action":"push","target":{"repository":"r","digest":"sha256:00"}}]}"#;
        let mut events = parse(body, "main").unwrap();
        let now = time::macros::datetime!(2026-11-28 20:00 UTC);
        bound_times(&mut events, now);
        assert_eq!(events[0].time, now);
        assert!(
            events[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("sender's time 9999-12-31T23:59:59.000000Z was in the future")
        );
        assert_eq!(
            events[1].time,
            time::macros::datetime!(2026-11-28 19:59:33 UTC)
        );
        assert_eq!(events[1].detail, None);
    }
}
