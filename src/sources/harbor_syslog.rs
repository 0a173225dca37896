//! `[[listen]] kind = "harbor_syslog"`: accepts Harbor's audit log forwarding connections
//! and commits each line's event (see [`crate::formats::harbor_syslog`]) to the trail, so a
//! Harbor installation gets the same chain, rules and forwarding as a distribution registry.
//! Lines are committed in the order they arrive, a batch whenever the connection has no more
//! buffered input; syslog over TCP has no acknowledgement, so a line is as safe as the commit.

use crate::config::listen::ListenConfig;
use crate::formats::harbor_syslog::{Parsed, parse_line};
use crate::model::Event;
use crate::model::clock::SharedClock;
use crate::store::Sink;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Accepts connections on `listener` until `stop`; each is read by its own task.
pub async fn run(
    listener: TcpListener,
    config: ListenConfig,
    sink: Sink,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let reader = Connection {
                    config: config.clone(),
                    sink: sink.clone(),
                    clock: clock.clone(),
                    peer,
                };
                connections.spawn(reader.read(stream, stop.clone()));
            }
            Err(e) => {
                tracing::warn!(address = %config.address, error = %e, "harbor_syslog: accept failed")
            }
        }
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// One Harbor connection.
struct Connection {
    config: ListenConfig,
    sink: Sink,
    clock: SharedClock,
    peer: SocketAddr,
}

impl Connection {
    async fn read(self, stream: TcpStream, stop: CancellationToken) {
        tracing::info!(peer = %self.peer, registry = %self.config.registry, "harbor_syslog: connected");
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut batch = Vec::new();
        loop {
            line.clear();
            let limit = self.config.max_line_bytes as u64 + 1;
            let read = {
                let mut limited = (&mut reader).take(limit);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = limited.read_until(b'\n', &mut line) => r,
                }
            };
            match read {
                Ok(0) => break,
                Ok(_) if line.len() as u64 >= limit && !line.ends_with(b"\n") => {
                    tracing::warn!(peer = %self.peer, max = self.config.max_line_bytes, "harbor_syslog: line too long; dropped");
                    if skip_line(&mut reader).await.is_err() {
                        break;
                    }
                }
                Ok(_) => self.parse(&line, &mut batch),
                Err(e) => {
                    tracing::warn!(peer = %self.peer, error = %e, "harbor_syslog: read failed");
                    break;
                }
            }
            if reader.buffer().is_empty() && !self.commit(&mut batch).await {
                return;
            }
        }
        self.commit(&mut batch).await;
        tracing::info!(peer = %self.peer, "harbor_syslog: disconnected");
    }

    fn parse(&self, line: &[u8], batch: &mut Vec<Event>) {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            return;
        }
        match parse_line(&text, &self.config.registry, self.clock.now()) {
            Ok(Parsed::Event(e)) => {
                let mut e = *e;
                e.remote_addr = Some(self.peer.ip().to_string());
                batch.push(e);
            }
            Ok(Parsed::Skipped {
                operation,
                resource_type,
            }) => tracing::debug!(
                operation,
                resource_type,
                "harbor_syslog: operation not recorded"
            ),
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "harbor_syslog: line not understood")
            }
        }
    }

    /// Commits the batch; `false` when the store is closed (the daemon is stopping).
    async fn commit(&self, batch: &mut Vec<Event>) -> bool {
        if batch.is_empty() {
            return true;
        }
        match self.sink.append_all(std::mem::take(batch)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "harbor_syslog: events not committed");
                false
            }
        }
    }
}

/// Reads up to the end of an over-long line.
async fn skip_line(reader: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}
