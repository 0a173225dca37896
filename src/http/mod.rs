//! The one HTTP listener: `/metrics`, `/healthz`, `/readyz`, the landing page, the audit API
//! and the notification receiver.

pub mod api;
pub mod auth;
pub mod notifications;
pub mod serve;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Sink, Store};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// True once the store is open and the config loaded; false again while shutting down.
    pub ready: Arc<AtomicBool>,
    pub config: watch::Receiver<Arc<Config>>,
    pub sink: Sink,
    /// For read-only connections (the writer thread owns the only write connection).
    pub store: Store,
    pub traffic: Arc<crate::model::traffic::Traffic>,
    /// The latest inventory of every registry (the poller writes, the API reads).
    pub reports: crate::sources::registry_api::Reports,
    /// Silences in force or scheduled (the API adds, the alert evaluator reads).
    pub silences: crate::alerting::silence::Silences,
    /// The singleton tasks this agent holds, and whether it reaches the database.
    pub leases: crate::store::Leases,
}

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    // Every API route is behind the token, checked before the handler parses anything.
    let api = Router::new()
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/audit/head", get(api::head))
        .route("/api/v1/repositories", get(api::repositories))
        .route("/api/v1/alerts", get(api::alerts))
        .route(
            "/api/v1/silences",
            get(api::silences).post(api::create_silence),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_token,
        ));
    Router::new()
        .route("/", get(landing))
        .route(
            "/notifications",
            // The handler reads the body itself, after the token, within max_body_bytes.
            post(crate::http::notifications::receive),
        )
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics
        .refresh_traffic(&s.traffic, time::OffsetDateTime::now_utc().unix_timestamp());
    let (health, db) = (s.sink.health(), &s.metrics.database);
    db.writable.set(health.writable().into());
    db.replaced.set(health.replaced().into());
    db.retained_events.set(health.retained() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while started, not stopping, the database answers and the store takes commits: a
/// load balancer or the registry's health check should not send events to an agent that
/// cannot keep them. On a shared database the body also says which leases this agent holds.
async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let health = s.sink.health();
    // The database first: an agent that started while it was down is not ready for that
    // reason, and says so.
    let not_ready = if !s.leases.database_up() {
        Some("not ready: database unreachable\n")
    } else if !s.ready.load(Ordering::Acquire) {
        Some("not ready\n")
    } else if health.replaced() {
        Some("not ready: the database file was deleted or replaced; restart regwatch\n")
    } else if !health.writable() {
        Some("not ready: the database cannot be written (see the log)\n")
    } else {
        None
    };
    let (status, mut body) = match not_ready {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
        None => (StatusCode::OK, "ready\n".to_string()),
    };
    if s.store.is_shared() {
        for (lease, held) in s.leases.states() {
            let word = if held { "held" } else { "not held" };
            body.push_str(&format!("lease {lease}: {word}\n"));
        }
    }
    (status, body)
}

async fn landing(State(s): State<AppState>) -> Html<String> {
    let config = s.config.borrow().clone();
    let page = maud::html! {
        (maud::DOCTYPE)
        html {
            head { meta charset="utf-8"; title { "regwatch" } }
            body {
                h1 { "regwatch " (crate::model::build::VERSION) }
                p { "Watching:" }
                ul {
                    @for r in &config.registries { li { (r.name) " — " (r.url) } }
                }
                p {
                    a href="/metrics" { "/metrics" } " · "
                    a href="/healthz" { "/healthz" } " · "
                    a href="/readyz" { "/readyz" }
                }
            }
        }
    };
    Html(page.into_string())
}
