//! Bearer-token checks for the API and the notification receiver.

use crate::config::secret::Secret;
use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A JSON error answer: `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = Json(serde_json::json!({ "error": message.into() }));
    if status == StatusCode::UNAUTHORIZED {
        (
            status,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"regwatch\"")],
            body,
        )
            .into_response()
    } else {
        (status, body).into_response()
    }
}

/// Checks the API token: `Some(answer)` refuses the request, saying what is wrong without
/// echoing the token.
pub fn refuse(headers: &HeaderMap, token: Option<&Secret>) -> Option<Response> {
    let Some(expected) = token else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "no API token is configured (server.api_token / api_token_file / api_token_env), so the API is closed",
        ));
    };
    match bearer(headers) {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer …)",
        )),
        Some(t) if expected.matches(t) => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "invalid token")),
    }
}

/// Middleware on every `/api/v1` route: the request reaches its handler only with the
/// configured token (read per request, so a reloaded token applies at once).
pub async fn require_api_token(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = state
        .config
        .borrow()
        .server
        .api_token
        .as_ref()
        .map(|t| t.value.clone());
    match refuse(request.headers(), token.as_ref()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
