//! A recording HTTP receiver standing in for webhook, Slack and Teams endpoints: a thread on
//! a std `TcpListener` that keeps every request (path, lower-cased headers, body, arrival
//! time) and answers 200, or 503 while `failing` is set. [`WebhookSink::stop`] closes the
//! port, so connections are refused, and [`WebhookSink::start_on`] opens it again on the same
//! port with the same record, which is how tests take a receiver down and bring it back. It is
//! written by hand rather than with a server crate because it must answer exactly as told.

use super::proc::free_port;
use std::time::{Duration, Instant};

/// One request a [`WebhookSink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names lower-cased.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A small HTTP server recording every request (webhook, Slack and Teams receivers). It
/// answers 200, or 503 while `failing` is set; [`WebhookSink::stop`] closes the port
/// (connections refused) and [`WebhookSink::start_on`] opens it again.
pub struct WebhookSink {
    pub port: u16,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        Self::start_on(free_port(), Default::default())
    }

    pub fn start_on(
        port: u16,
        received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    ) -> WebhookSink {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s, f) = (received.clone(), stop.clone(), failing.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = std::collections::BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let status = if f.load(Ordering::Acquire) {
                    "503 Service Unavailable"
                } else {
                    r.lock().unwrap().push(Received {
                        path,
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    "200 OK"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        WebhookSink {
            port,
            received,
            failing,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests were received (and accepted).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.received();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the port; what was received stays in `received`.
    pub fn stop(mut self) -> std::sync::Arc<std::sync::Mutex<Vec<Received>>> {
        self.shutdown();
        self.received.clone()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}
