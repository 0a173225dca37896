//! One notification, the unit every channel delivers and the outbox stores.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One notification, as stored in the outbox and as posted by the webhook channel
/// (the documented JSON payload, `version` 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub version: u32,
    /// Stable for one notification across retries and restarts: receivers can drop
    /// duplicates by it (also sent as the `Idempotency-Key` header).
    pub idempotency_key: String,
    pub rule: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// `firing`, `repeat`, `refresh` or `resolved`: why it was sent.
    pub reason: String,
    pub severity: String,
    /// The rule's labels, the group labels (registry, address, user) and `alertname`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description` and the rule's other annotations, rendered.
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; set when resolved.
    pub ends_at: Option<String>,
    /// When the state change that caused this notification happened.
    pub sent_for: String,
    /// Set for test notifications (`regwatch alerts test`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Notification {
    /// A notification for `regwatch alerts test`.
    pub fn test(now: time::OffsetDateTime) -> Notification {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "regwatch-test".to_string());
        labels.insert("severity".to_string(), "info".to_string());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".to_string(),
            "regwatch test notification: this channel works".to_string(),
        );
        Notification {
            version: 1,
            idempotency_key: hex::encode(&sha2_256(rfc3339(now).as_bytes())[..16]),
            rule: "regwatch-test".into(),
            status: "firing".into(),
            reason: "test".into(),
            severity: "info".into(),
            labels,
            annotations,
            value: 0.0,
            starts_at: rfc3339(now),
            ends_at: Some(rfc3339(now + time::Duration::minutes(5))),
            sent_for: rfc3339(now),
            test: true,
        }
    }

    pub fn summary(&self) -> &str {
        self.annotations
            .get("summary")
            .map(String::as_str)
            .unwrap_or("")
    }
}

pub fn sha2_256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
