//! Delivering one notification to one channel. `Ok` only when the receiver accepted it
//! (SMTP 250 after DATA, HTTP 2xx); anything else stays in the outbox and is retried.

pub mod notification;

use crate::config::channel::{ChannelConfig, ChannelKind, EmailChannel, SmtpTls};
use crate::config::secret::Resolved;
use hmac::{Hmac, Mac};
use lettre::message::MultiPart;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
pub use notification::Notification;
use serde_json::json;

/// The header carrying the webhook body's HMAC-SHA256 (`sha256=<hex>`).
pub const SIGNATURE_HEADER: &str = "X-Regwatch-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("building the message: {0}")]
    Build(String),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the receiver answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// `sha256=<hex>` of `body` under `secret`: what receivers recompute to check the signature.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `n` to channel `c`.
pub async fn deliver(
    c: &ChannelConfig,
    client: &reqwest::Client,
    n: &Notification,
) -> Result<(), DeliveryError> {
    let req = match &c.kind {
        ChannelKind::Email(email) => return self::email(email, c.timeout, n).await,
        ChannelKind::Webhook { url, secret } => webhook(client, url, secret.as_ref(), n)?,
        ChannelKind::Alertmanager { url, .. } => alertmanager(client, url, n),
        ChannelKind::Slack { url } => slack(client, url, n),
        ChannelKind::Teams { url } => teams(client, url, n),
    };
    send(req, c).await
}

/// The notification as JSON, signed over exactly the bytes sent when there is a secret.
fn webhook(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&Resolved>,
    n: &Notification,
) -> Result<reqwest::RequestBuilder, DeliveryError> {
    let body = serde_json::to_vec(n).map_err(|e| DeliveryError::Build(e.to_string()))?;
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, &n.idempotency_key);
    if let Some(secret) = secret {
        req = req.header(
            SIGNATURE_HEADER,
            sign(secret.value.expose().as_bytes(), &body),
        );
    }
    Ok(req.body(body))
}

fn alertmanager(client: &reqwest::Client, url: &str, n: &Notification) -> reqwest::RequestBuilder {
    let base = url.trim_end_matches('/');
    let mut alert = json!({
        "labels": n.labels,
        "annotations": n.annotations,
        "startsAt": n.starts_at,
        "generatorURL": "regwatch://rules/".to_string() + &n.rule,
    });
    // Without endsAt Alertmanager keeps a firing alert for its resolve_timeout;
    // regwatch re-sends it every minute while it fires. endsAt resolves it.
    if let Some(end) = &n.ends_at {
        alert["endsAt"] = json!(end);
    }
    client
        .post(format!("{base}/api/v2/alerts"))
        .json(&json!([alert]))
}

fn slack(client: &reqwest::Client, url: &str, n: &Notification) -> reqwest::RequestBuilder {
    let text = format!(
        "{} *{}* [{}] {}",
        if n.status == "resolved" {
            ":white_check_mark:"
        } else {
            ":rotating_light:"
        },
        n.rule,
        n.status.to_uppercase(),
        n.summary()
    );
    client.post(url).json(&json!({ "text": text }))
}

fn teams(client: &reqwest::Client, url: &str, n: &Notification) -> reqwest::RequestBuilder {
    let facts: Vec<_> = n
        .labels
        .iter()
        .map(|(k, v)| json!({ "title": k, "value": v }))
        .collect();
    let card = json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "size": "Medium", "weight": "Bolder",
                      "text": format!("[{}] {}", n.status.to_uppercase(), n.rule) },
                    { "type": "TextBlock", "wrap": true, "text": n.summary() },
                    { "type": "FactSet", "facts": facts }
                ]
            }
        }]
    });
    client.post(url).json(&card)
}

async fn send(req: reqwest::RequestBuilder, c: &ChannelConfig) -> Result<(), DeliveryError> {
    // Without the URL: Slack and Teams webhook URLs are secrets themselves, and errors are
    // logged and stored in the outbox.
    let resp = req
        .timeout(c.timeout)
        .send()
        .await
        .map_err(|e| DeliveryError::Http(e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(DeliveryError::Refused {
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    })
}

const DEFAULT_SUBJECT: &str = "[regwatch] [{{ status }}] {{ rule }} on {{ registry }}";

async fn email(
    c: &EmailChannel,
    timeout: std::time::Duration,
    n: &Notification,
) -> Result<(), DeliveryError> {
    let build = |e: &dyn std::fmt::Display| DeliveryError::Build(e.to_string());
    let vars = crate::model::template::Vars {
        rule: &n.rule,
        status: &n.status,
        severity: &n.severity,
        value: n.value,
        threshold: 0.0,
        window: "",
        labels: &n.labels,
    };
    let subject =
        crate::model::template::render(c.subject.as_deref().unwrap_or(DEFAULT_SUBJECT), &vars);
    let mut text = match &c.body {
        Some(t) => crate::model::template::render(t, &vars),
        None => n.summary().to_string(),
    };
    text.push_str("\n\n");
    if let Some(d) = n.annotations.get("description") {
        text.push_str(d);
        text.push_str("\n\n");
    }
    for (k, v) in &n.labels {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text.push_str(&format!("started: {}\n", n.starts_at));
    if let Some(e) = &n.ends_at {
        text.push_str(&format!("ended: {e}\n"));
    }
    let html = maud::html! {
        (maud::DOCTYPE)
        html {
            body {
                h2 { "[" (n.status.to_uppercase()) "] " (n.rule) }
                p { (text.lines().next().unwrap_or_default()) }
                table {
                    @for (k, v) in &n.labels {
                        tr { th { (k) } td { (v) } }
                    }
                }
            }
        }
    }
    .into_string();
    let mut msg = Message::builder()
        .from(c.from.clone())
        .subject(subject)
        // The idempotency key as Message-ID: a mail re-sent after a crash between the
        // server's 250 and the outbox update is recognisable as the same message.
        .message_id(Some(format!("<{}@regwatch>", n.idempotency_key)));
    for t in &c.to {
        msg = msg.to(t.parse().map_err(|e| build(&e))?);
    }
    let msg = msg
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| build(&e))?;
    smtp_send(c, timeout, msg).await
}

/// Mails `text`, with a file attached (path, content type) if given, through the email
/// channel `c` (deliveries taking at most `timeout`) to its recipients: how scheduled
/// reports reach people.
pub async fn email_file(
    c: &EmailChannel,
    timeout: std::time::Duration,
    subject: &str,
    text: String,
    attachment: Option<(&std::path::Path, &str)>,
) -> Result<(), DeliveryError> {
    use lettre::message::{Attachment, SinglePart, header::ContentType};
    let build = |e: &dyn std::fmt::Display| DeliveryError::Build(e.to_string());
    let mut msg = Message::builder().from(c.from.clone()).subject(subject);
    for t in &c.to {
        msg = msg.to(t.parse().map_err(|e| build(&e))?);
    }
    let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(text));
    if let Some((file, content_type)) = attachment {
        let body = std::fs::read(file)
            .map_err(|e| DeliveryError::Build(format!("reading {}: {e}", file.display())))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        parts = parts.singlepart(Attachment::new(name).body(
            body,
            ContentType::parse(content_type).map_err(|e| build(&e))?,
        ));
    }
    let msg = msg.multipart(parts).map_err(|e| build(&e))?;
    smtp_send(c, timeout, msg).await
}

/// Sends `msg` through the email channel `c`: its server, TLS mode and credentials.
async fn smtp_send(
    c: &EmailChannel,
    timeout: std::time::Duration,
    msg: Message,
) -> Result<(), DeliveryError> {
    let host = c.smtp_host.as_str();
    let tls = |wrap: bool| -> Result<Tls, DeliveryError> {
        let mut params = TlsParameters::builder(host.to_string());
        if let Some(ca) = &c.tls_ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| DeliveryError::Build(format!("reading {}: {e}", ca.display())))?;
            params = params.add_root_certificate(Certificate::from_pem(&pem)?);
        }
        let params = params.build_rustls()?;
        Ok(if wrap {
            Tls::Wrapper(params)
        } else {
            Tls::Required(params)
        })
    };
    // STARTTLS is required, never opportunistic: a server (or someone in between) that
    // drops the STARTTLS offer must not get the password in clear.
    let (tls, port) = match c.tls {
        SmtpTls::Tls => (tls(true)?, 465),
        SmtpTls::None => (Tls::None, 25),
        SmtpTls::Starttls => (tls(false)?, 587),
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(c.smtp_port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        transport =
            transport.credentials(Credentials::new(u.clone(), p.value.expose().to_string()));
    }
    transport.build().send(msg).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
