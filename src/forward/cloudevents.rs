//! CloudEvents 1.0 in structured JSON mode, sent as one batch per POST
//! (`application/cloudevents-batch+json`). Each row is one event whose `id` is stable (the
//! row id and the start of its chain hash), so a receiver deduplicates a resent batch.

use super::ForwardError;
use crate::channels::{SIGNATURE_HEADER, sign};
use crate::config::forward::CloudEventsForward;
use crate::store::AuditRow;
use serde_json::{Value, json};

pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// The event for one audit row.
pub fn event(row: &AuditRow, source: &str) -> Value {
    let mut e = json!({
        "specversion": "1.0",
        "id": event_id(row),
        "source": source,
        "type": format!("dev.regwatch.audit.{}", row.action),
        "time": row.time,
        "datacontenttype": "application/json",
        "data": row,
    });
    if let Some(repo) = &row.repository {
        e["subject"] = json!(repo);
    }
    e
}

/// `<row id>-<first 16 hex digits of its hash>`: the same on every resend, different for a
/// row of another trail that happens to have the same id.
pub fn event_id(row: &AuditRow) -> String {
    let prefix: String = row.hash.chars().take(16).collect();
    format!("{}-{prefix}", row.id)
}

/// POSTs `rows` as one batch; `Ok` only on a 2xx answer.
pub async fn post(
    client: &reqwest::Client,
    c: &CloudEventsForward,
    rows: &[AuditRow],
) -> Result<(), ForwardError> {
    let batch: Vec<Value> = rows.iter().map(|r| event(r, &c.source)).collect();
    let body = serde_json::to_vec(&batch).map_err(|e| ForwardError::Build(e.to_string()))?;
    let mut req = client
        .post(&c.url)
        .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE);
    if let Some(secret) = &c.secret {
        req = req.header(
            SIGNATURE_HEADER,
            sign(secret.value.expose().as_bytes(), &body),
        );
    }
    // Without the URL: it may carry a token, and errors end up in the log.
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| ForwardError::Http(e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(ForwardError::Refused {
        status: status.as_u16(),
        body: text.chars().take(200).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_a_structured_cloudevent_with_a_stable_id() {
        let row = AuditRow {
            id: 9,
            time: "2026-11-28T19:59:40.000000Z".into(),
            registry: Some("main".into()),
            action: "auth_failure".into(),
            repository: None,
            tag: None,
            digest: None,
            media_type: None,
            size: None,
            actor: Some("mallory".into()),
            remote_addr: None,
            user_agent: None,
            request_id: None,
            method: None,
            source: "log".into(),
            status: Some(401),
            event_id: None,
            detail: None,
            prev_hash: "00".into(),
            hash: "0123456789abcdef0123".into(),
        };
        let e = event(&row, "/regwatch");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "9-0123456789abcdef");
        assert_eq!(e["type"], "dev.regwatch.audit.auth_failure");
        assert_eq!(e["time"], "2026-11-28T19:59:40.000000Z");
        assert_eq!(e["data"]["actor"], "mallory");
        assert_eq!(e["data"]["hash"], "0123456789abcdef0123");
        assert!(e.get("subject").is_none());
    }
}
