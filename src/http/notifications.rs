//! `POST /notifications`: the registry's notification envelopes (and Harbor webhooks).
//!
//! Answers 2xx only after every event of the body is committed, so the registry retries
//! anything not stored; re-deliveries are recognised by event id and stored once.

use super::AppState;
use super::auth::{bearer, error};
use crate::config::Config;
use crate::formats::notification;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, serde::Deserialize)]
pub struct NotifyQuery {
    /// Which registry sent it, when its token does not already say.
    registry: Option<String>,
}

/// Which registry a token belongs to: a registry's own `notifications_token` names it; the
/// server's API token needs `?registry=` unless only one registry is configured.
pub fn registry_for(
    config: &Config,
    token: &[u8],
    named: Option<&str>,
) -> Result<String, (StatusCode, String)> {
    if let Some(r) = config.registries.iter().find(|r| {
        r.notifications_token
            .as_ref()
            .is_some_and(|t| t.value.matches(token))
    }) {
        return match named {
            Some(n) if n != r.name => Err((
                StatusCode::BAD_REQUEST,
                format!("this token belongs to registry {:?}, not {n:?}", r.name),
            )),
            _ => Ok(r.name.clone()),
        };
    }
    if !config
        .server
        .api_token
        .as_ref()
        .is_some_and(|t| t.value.matches(token))
    {
        let configured = config.server.api_token.is_some()
            || config
                .registries
                .iter()
                .any(|r| r.notifications_token.is_some());
        return Err((
            StatusCode::UNAUTHORIZED,
            if configured {
                "invalid token".into()
            } else {
                "no notification token is configured (registry.notifications_token or server.api_token), so notifications are refused".into()
            },
        ));
    }
    match (named, config.registries.as_slice()) {
        (Some(n), _) => config
            .registry(n)
            .map(|r| r.name.clone())
            .ok_or_else(|| (StatusCode::BAD_REQUEST, format!("unknown registry {n:?} in ?registry="))),
        (None, [only]) => Ok(only.name.clone()),
        (None, _) => Err((
            StatusCode::BAD_REQUEST,
            "several registries are configured: name the sender with ?registry=NAME or give each registry its own notifications_token".into(),
        )),
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Query(query): Query<NotifyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer …)",
        );
    };
    let config = state.config.borrow().clone();
    let registry = match registry_for(&config, token, query.registry.as_deref()) {
        Ok(r) => r,
        Err((status, msg)) => return error(status, msg),
    };
    // Only now is the body read: an unauthenticated client cannot make regwatch hold its
    // megabyte (300 stalled bodies took 300 MB when the body came first).
    let limit = config.server.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body not read (max_body_bytes is {limit}): {e}"),
            );
        }
    };
    let events = match notification::parse(&body, &registry) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // The registry notifies regwatch of its own poller's manifest reads too: those are
    // not anyone's pulls, so they are counted apart and never enter the trail.
    let (own, mut events): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| crate::model::event::is_self_user_agent(e.user_agent.as_deref()));
    notification::bound_times(&mut events, time::OffsetDateTime::now_utc());
    let received = events.len();
    match state.sink.append_all(events).await {
        Ok(stored) => {
            // Counted once accepted, so a body the registry re-sends after a 503 counts once.
            state
                .metrics
                .traffic
                .self_requests_total
                .with_label_values(&[&registry, "notification"])
                .inc_by(own.len() as u64);
            tracing::debug!(registry, received, stored, "notification stored");
            (
                StatusCode::OK,
                Json(serde_json::json!({ "accepted": stored, "duplicates": received - stored })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(registry, error = %e, "notification not stored; the registry will retry");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored, retry later: {e}"),
            )
        }
    }
}
