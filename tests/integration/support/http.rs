//! Plain HTTP clients for the servers on loopback: [`http`] for regwatch's API (any method,
//! an optional bearer token, headers and a body) and [`http_get`] for the health, readiness
//! and metrics endpoints of every server. Blocking reqwest with timeouts, so a server that
//! hangs fails the test instead of hanging it.

use std::time::Duration;

/// An HTTP request to regwatch with optional bearer token; returns status and body.
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(
        method.parse().unwrap(),
        format!("http://127.0.0.1:{port}{path}"),
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req
        .send()
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}
/// A plain HTTP/1.1 GET on loopback; returns status and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().map_err(std::io::Error::other)?))
}
