//! The stream a syslog forwarder writes to: plain TCP or TLS (rustls), and the check that
//! the receiver is still there. Syslog over TCP has no acknowledgement, so a write into a
//! connection the receiver has closed "succeeds" into the void; looking for the receiver's
//! close (or reset) before and after each batch turns that into a failed send that is
//! retried on a new connection.

use crate::config::forward::{SyslogForward, TlsSettings, Transport};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("TLS handshake with {address}: {source}")]
    Handshake {
        address: String,
        source: std::io::Error,
    },
    #[error("writing: {0}")]
    Write(std::io::Error),
    #[error("the receiver closed the connection")]
    Closed,
    #[error(
        "{address} closed the TLS session after the handshake (is a client certificate it trusts configured? tls_cert_file, tls_key_file)"
    )]
    Rejected { address: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// An open connection to the receiver.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Builds the TLS client settings once per forwarder (reading the PEM files).
pub fn tls_connector(tls: &TlsSettings) -> Result<TlsConnector, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(pem_error(path))? {
                roots
                    .add(cert.map_err(pem_error(path))?)
                    .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem_error(cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_error(cert))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TransportError::Tls(e.to_string()))?
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Names the file, never its content (a key file's bytes must not reach a log).
fn pem_error(
    path: &std::path::Path,
) -> impl Fn(rustls::pki_types::pem::Error) -> TransportError + '_ {
    move |e| TransportError::Tls(format!("{}: {e}", path.display()))
}

/// Connects (and for TLS, shakes hands) within `limit`.
pub async fn connect(
    s: &SyslogForward,
    tls: Option<&TlsConnector>,
    limit: Duration,
) -> Result<Stream, TransportError> {
    let address = format!("{}:{}", s.host, s.port);
    let open = async {
        let tcp = TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(|source| TransportError::Connect {
                address: address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match (s.transport, tls) {
            (Transport::Tls, Some(connector)) => {
                let name = s
                    .tls
                    .as_ref()
                    .and_then(|t| t.server_name.clone())
                    .unwrap_or_else(|| s.host.clone());
                let name = ServerName::try_from(name)
                    .map_err(|e| TransportError::Tls(format!("server name: {e}")))?;
                let stream = connector.connect(name, tcp).await.map_err(|source| {
                    TransportError::Handshake {
                        address: address.clone(),
                        source,
                    }
                })?;
                Ok(Stream::Tls(Box::new(stream)))
            }
            (Transport::Tls, None) => Err(TransportError::Tls("no TLS settings".into())),
            (Transport::Tcp, _) => Ok(Stream::Tcp(tcp)),
        }
    };
    let mut stream = tokio::time::timeout(limit, open)
        .await
        .map_err(|_| TransportError::Timeout(limit))??;
    if matches!(stream, Stream::Tls(_)) && stream.rejected_within(REJECTION_WAIT).await {
        return Err(TransportError::Rejected {
            address: address.clone(),
        });
    }
    Ok(stream)
}

/// How long a new TLS session is watched for the receiver's verdict on it. In TLS 1.3 the
/// client finishes its handshake before the server has checked the client certificate; a
/// receiver that refuses it (rsyslog's `x509/certvalid`) closes right after, and a batch
/// written in between would count as sent. Paid once per connection.
const REJECTION_WAIT: Duration = Duration::from_millis(250);

impl Stream {
    /// Writes `bytes` and flushes them to the socket within `limit`.
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), TransportError> {
        let write = async {
            match self {
                Stream::Tcp(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
            }
        };
        tokio::time::timeout(limit, write)
            .await
            .map_err(|_| TransportError::Timeout(limit))?
            .map_err(TransportError::Write)
    }

    /// Whether the receiver has closed or reset the connection, without waiting: a syslog
    /// receiver never sends application data, so a read that is ready means end of stream
    /// (or an error). TLS records that are not data (session tickets) are consumed by rustls.
    pub async fn closed_by_peer(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            let mut buf = [0u8; 256];
            let mut rb = ReadBuf::new(&mut buf);
            let polled = match self {
                Stream::Tcp(s) => Pin::new(s).poll_read(cx, &mut rb),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, &mut rb),
            };
            Poll::Ready(match polled {
                Poll::Pending => false,
                Poll::Ready(Ok(())) => rb.filled().is_empty(),
                Poll::Ready(Err(_)) => true,
            })
        })
        .await
    }

    /// Whether the receiver closes the connection within `wait` (see [`REJECTION_WAIT`]).
    async fn rejected_within(&mut self, wait: Duration) -> bool {
        let mut buf = [0u8; 256];
        let read = async {
            match self {
                Stream::Tcp(s) => s.read(&mut buf).await,
                Stream::Tls(s) => s.read(&mut buf).await,
            }
        };
        matches!(tokio::time::timeout(wait, read).await, Ok(Ok(0) | Err(_)))
    }

    /// Ends the session politely (TLS close_notify), within a short limit.
    pub async fn close(mut self) {
        let shut = async {
            let _ = match &mut self {
                Stream::Tcp(s) => s.shutdown().await,
                Stream::Tls(s) => s.shutdown().await,
            };
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), shut).await;
    }
}
