//! `/api/v1/audit`: the audit trail over HTTP (token required), cursor-paginated, as JSON or
//! CSV.

use super::AppState;
use super::auth::error;
use crate::model::text::parse_time;
use crate::report::export::{write_csv_header, write_csv_row};
use crate::report::grouped::{self, Grouper};
use crate::store::{AuditRow, Filter, Reader, Store};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

const DEFAULT_LIMIT: u64 = 100;

/// Runs `read` on a read-only connection in the blocking pool (SQLite calls block); a
/// failure, or a panic in `read`, answers 500 with the message.
async fn read_db<T: IntoResponse + Send + 'static>(
    store: Store,
    read: impl FnOnce(&Reader) -> Result<T, String> + Send + 'static,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let db = store.reader().map_err(|e| e.to_string())?;
        read(&db)
    })
    .await;
    match result {
        Ok(Ok(r)) => r.into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
const MAX_LIMIT: u64 = 10_000;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    repository: Option<String>,
    action: Option<String>,
    address: Option<String>,
    registry: Option<String>,
    source: Option<String>,
    limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `events` (raw rows, default) or `activities` (the grouped view).
    view: Option<String>,
}

fn filter(p: &AuditParams) -> Result<Filter, String> {
    let now = time::OffsetDateTime::now_utc();
    let time = |v: &Option<String>| v.as_deref().map(|s| parse_time(s, now)).transpose();
    Ok(Filter {
        since: time(&p.since)?,
        until: time(&p.until)?,
        actor: p.actor.clone(),
        repository: p.repository.clone(),
        action: p.action.clone(),
        address: p.address.clone(),
        registry: p.registry.clone(),
        source: p.source.clone(),
        after_id: p
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| format!("invalid cursor {c:?}"))
            })
            .transpose()?,
        limit: Some(p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)),
    })
}

/// The audit API's query string (`since=7d&actor=bob&limit=50`) as the filter it selects:
/// what `GET /api/v1/audit` does before it reads the database, for the fuzz target.
pub fn parse_audit_query(query: &str) -> Result<Filter, String> {
    let uri: axum::http::Uri = format!("/api/v1/audit?{query}")
        .parse()
        .map_err(|e| format!("invalid query string: {e}"))?;
    let Query(params) = Query::<AuditParams>::try_from_uri(&uri).map_err(|e| e.body_text())?;
    filter(&params)
}

pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let f = match filter(&params) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    let grouped = match params.view.as_deref() {
        None | Some("events") => false,
        Some("activities") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown view {other:?}: expected events or activities"),
            );
        }
    };
    read_db(state.store.clone(), move |db| {
        let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
        if csv {
            let mut out = Vec::new();
            write_csv_header(&mut out).map_err(|e| e.to_string())?;
            let mut last = None;
            let n = db
                .events(&f, |r| {
                    last = Some(r.id);
                    write_csv_row(&mut out, r)
                })
                .map_err(|e| e.to_string())?;
            let mut resp = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                out,
            )
                .into_response();
            if let (true, Some(id)) = (n == limit, last) {
                resp.headers_mut()
                    .insert("X-Next-Cursor", id.to_string().parse().expect("digits"));
            }
            return Ok(resp);
        }
        let rows: Vec<AuditRow> = db.event_rows(&f).map_err(|e| e.to_string())?;
        let next = (rows.len() as u64 == limit)
            .then(|| rows.last().map(|r| r.id.to_string()))
            .flatten();
        let body = if grouped {
            let mut g = Grouper::default();
            rows.iter().for_each(|r| g.push(r));
            let acts: Vec<serde_json::Value> = g
                .finish()
                .into_iter()
                .map(|a| {
                    let mut v = serde_json::to_value(&a).expect("serializable");
                    v["summary"] = grouped::describe(&a).into();
                    v
                })
                .collect();
            serde_json::json!({ "activities": acts, "next_cursor": next })
        } else {
            serde_json::json!({ "events": rows, "next_cursor": next })
        };
        Ok(Json(body).into_response())
    })
    .await
}

/// `GET /api/v1/audit/head`: the chain head, to write down elsewhere.
pub async fn head(State(state): State<AppState>) -> Response {
    read_db(state.store.clone(), |db| {
        let (rows, head) = db.head().map_err(|e| e.to_string())?;
        Ok(Json(serde_json::json!({ "rows": rows, "head": head })))
    })
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoriesParams {
    registry: Option<String>,
    /// `size` (total bytes, default), `exclusive` or `name`.
    sort: Option<String>,
}

/// `GET /api/v1/repositories`: the last inventory of each registry with per-repository
/// total / exclusive / shared bytes (not metric labels: one series per repository would be
/// unbounded cardinality).
pub async fn repositories(
    State(state): State<AppState>,
    params: Result<Query<RepositoriesParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let sort = match crate::sources::registry_api::inventory::Sort::parse(
        params.sort.as_deref().unwrap_or("size"),
    ) {
        Some(s) => s,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "unknown sort: expected size, exclusive or name",
            );
        }
    };
    let config = state.config.borrow().clone();
    if let Some(name) = &params.registry {
        if config.registry(name).is_none() {
            return error(
                StatusCode::NOT_FOUND,
                format!("no registry named {name:?} is configured"),
            );
        }
    }
    let reports = state.reports.read().expect("not poisoned").clone();
    let registries: Vec<serde_json::Value> = config
        .registries
        .iter()
        .filter(|r| params.registry.as_ref().is_none_or(|n| *n == r.name))
        .map(|r| match reports.get(&r.name) {
            Some(rep) => {
                let mut rep = rep.clone();
                sort.apply(&mut rep.accounting.per_repository);
                // Per repository here; the per-tag rows are `regwatch inventory --tags`.
                rep.tag_rows.clear();
                serde_json::to_value(rep).expect("serializable")
            }
            // Not polled yet since regwatch started.
            None => serde_json::json!({ "registry": r.name, "polled_at": null }),
        })
        .collect();
    Json(serde_json::json!({ "registries": registries })).into_response()
}

/// `GET /api/v1/alerts`: every stored alert state (pending, firing, resolved) and the
/// number of notifications waiting in the outbox.
pub async fn alerts(State(state): State<AppState>) -> Response {
    read_db(state.store.clone(), |db| {
        let states = crate::alerting::evaluator::load_states(db).map_err(|e| e.to_string())?;
        let mut list: Vec<_> = states.into_values().flat_map(|m| m.into_values()).collect();
        list.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
        let pending = db.outbox_pending().map_err(|e| e.to_string())?;
        Ok(Json(
            serde_json::json!({ "alerts": list, "outbox_pending": pending }),
        ))
    })
    .await
}

/// The body of `POST /api/v1/silences`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Label → value or glob (`alertname` is the rule); at least one.
    matchers: std::collections::BTreeMap<String, String>,
    /// RFC 3339; default now.
    starts_at: Option<String>,
    /// RFC 3339; or give `duration`.
    ends_at: Option<String>,
    /// "2h", "30m": from `starts_at`.
    duration: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// `POST /api/v1/silences`: holds back notifications of matching alerts until it ends.
pub async fn create_silence(
    State(state): State<AppState>,
    body: Result<Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if new.matchers.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "a silence needs at least one matcher (e.g. {\"alertname\": \"password-guessing\"})",
        );
    }
    let rfc = &time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let starts_at = match new
        .starts_at
        .as_deref()
        .map(|s| time::OffsetDateTime::parse(s, rfc))
    {
        None => now,
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("starts_at: {e}")),
    };
    let ends_at = match (new.ends_at.as_deref(), new.duration.as_deref()) {
        (Some(e), None) => match time::OffsetDateTime::parse(e, rfc) {
            Ok(t) => t,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("ends_at: {e}")),
        },
        (None, Some(d)) => match silence_end(starts_at, d) {
            Ok(t) => t,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("duration: {e}")),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either ends_at (RFC 3339) or duration (e.g. \"2h\")",
            );
        }
    };
    if ends_at <= starts_at || ends_at <= now {
        return error(
            StatusCode::BAD_REQUEST,
            "the silence ends before it starts or in the past",
        );
    }
    let mut silence = crate::store::Silence {
        id: 0,
        matchers: new.matchers,
        starts_at,
        ends_at,
        created_by: new.created_by,
        comment: new.comment,
    };
    match state.sink.store_silence(silence.clone()).await {
        Ok(id) => {
            silence.id = id;
            state
                .silences
                .write()
                .expect("silences lock")
                .push(silence.clone());
            (StatusCode::CREATED, Json(silence)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `starts_at + duration`, checked: a duration past the calendar (`9999999999d`, or any from a
/// `starts_at` near the year 9999) is the client's error, not a panic.
fn silence_end(
    starts_at: time::OffsetDateTime,
    duration: &str,
) -> Result<time::OffsetDateTime, String> {
    let d = humantime::parse_duration(duration).map_err(|e| e.to_string())?;
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| starts_at.checked_add(d))
        .ok_or_else(|| format!("{duration:?} from {starts_at} ends after the year 9999"))
}

/// `GET /api/v1/silences`: the silences that have not ended.
pub async fn silences(State(state): State<AppState>) -> Response {
    let now = time::OffsetDateTime::now_utc();
    let list: Vec<_> = state
        .silences
        .read()
        .expect("silences lock")
        .iter()
        .filter(|s| s.ends_at > now)
        .cloned()
        .collect();
    Json(serde_json::json!({ "silences": list })).into_response()
}
