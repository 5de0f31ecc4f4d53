//! Server side: read the opening handshake, decide, and answer.
//!
//! [`accept`] takes every valid upgrade; [`accept_with`] lets a callback see
//! the request (path, `Origin`, offered subprotocols and extensions, all
//! headers) and accept, pick a subprotocol, or refuse with a status. For
//! servers that also answer plain HTTP on the same port, [`Handshake::read`]
//! reads the request head and leaves the decision to the caller.

use crate::error::{Error, Result};
use crate::ws::WebSocket;
use bytes::BytesMut;
use duplex_proto::handshake::server::{self, Request, UpgradeRequest};
use duplex_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What an [`accept_with`] callback decides.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Accept, echoing this subprotocol (it must be one the client offered)
    /// and adding these response headers.
    Accept {
        /// The chosen subprotocol.
        protocol: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Refuse with an HTTP status and a one-line reason.
    Reject {
        /// HTTP status, e.g. 403.
        status: u16,
        /// Reason, sent as the plain-text body.
        reason: String,
    },
}

impl Decision {
    /// Accept with no subprotocol and no extra headers.
    pub fn accept() -> Self {
        Decision::Accept {
            protocol: None,
            headers: Vec::new(),
        }
    }

    /// Refuse with `status` and `reason`.
    pub fn reject(status: u16, reason: impl Into<String>) -> Self {
        Decision::Reject {
            status,
            reason: reason.into(),
        }
    }
}

/// A request head that has been read from the stream; the caller decides
/// what to answer.
#[derive(Debug)]
pub struct Handshake<S> {
    stream: S,
    request: Request,
    leftover: BytesMut,
    config: Config,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<S> {
    /// Reads one request head, within `config.max_handshake_bytes` and
    /// `config.handshake_timeout`. A malformed or oversized head is answered
    /// (400 / 431) and returned as an error.
    pub async fn read(mut stream: S, config: Config) -> Result<Self> {
        let timeout = config.handshake_timeout;
        let mut buf = BytesMut::with_capacity(1024);
        let res = tokio::time::timeout(timeout, async {
            loop {
                match server::parse_request(&buf, &config) {
                    Ok(Some((req, n))) => {
                        let _ = buf.split_to(n);
                        return Ok(req);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Error::Protocol(e)),
                }
                if buf.capacity() - buf.len() < 512 {
                    buf.reserve(buf.len().max(1024).min(config.max_handshake_bytes));
                }
                let n = stream.read_buf(&mut buf).await?;
                if n == 0 {
                    return Err(Error::Protocol(duplex_proto::Error::MalformedHttp(
                        "connection closed mid-request",
                    )));
                }
            }
        })
        .await;
        let request = match res {
            Err(_) => {
                let _ = write_all_and_close(
                    &mut stream,
                    &server::reject(408, "handshake timed out", &[]),
                )
                .await;
                return Err(Error::HandshakeTimeout);
            }
            Ok(Err(Error::Protocol(e))) => {
                let _ = write_all_and_close(&mut stream, &server::reject_error(&e)).await;
                return Err(Error::Protocol(e));
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(r)) => r,
        };
        Ok(Handshake {
            stream,
            request,
            leftover: buf,
            config,
        })
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Validates the request as a WebSocket upgrade, asks `decide`, and
    /// answers: 101 and a [`WebSocket`], or the refusal (400/426 for an
    /// invalid upgrade, the callback's status otherwise).
    pub async fn upgrade<F>(mut self, decide: F) -> Result<WebSocket<S>>
    where
        F: FnOnce(&UpgradeRequest) -> Decision,
    {
        let up = match UpgradeRequest::validate(self.request.clone()) {
            Ok(u) => u,
            Err(e) => {
                let _ = write_all_and_close(&mut self.stream, &server::reject_error(&e)).await;
                return Err(Error::Protocol(e));
            }
        };
        match decide(&up) {
            Decision::Reject { status, reason } => {
                let _ =
                    write_all_and_close(&mut self.stream, &server::reject(status, &reason, &[]))
                        .await;
                Err(Error::Refused { status })
            }
            Decision::Accept { protocol, headers } => {
                let acc = server::accept(&up, &self.config, protocol.as_deref(), &headers);
                self.stream.write_all(&acc.response).await?;
                self.stream.flush().await?;
                let extensions = acc.deflate.map(|d| d.to_header());
                let conn = Connection::new(Role::Server, self.config, acc.deflate);
                Ok(WebSocket::from_parts(
                    self.stream,
                    conn,
                    self.leftover,
                    acc.protocol,
                    extensions,
                    None,
                ))
            }
        }
    }

    /// Answers with a plain HTTP response and closes.
    pub async fn respond(mut self, status: u16, reason: &str) -> Result<()> {
        write_all_and_close(&mut self.stream, &server::reject(status, reason, &[])).await?;
        Ok(())
    }

    /// Gives back the stream, the request and any bytes read after it.
    pub fn into_parts(self) -> (S, Request, BytesMut) {
        (self.stream, self.request, self.leftover)
    }
}

async fn write_all_and_close<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Accepts any valid WebSocket upgrade on `stream` with the default config.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<WebSocket<S>> {
    accept_with(stream, Config::default(), |_| Decision::accept()).await
}

/// Reads the request, lets `decide` see it, and answers.
pub async fn accept_with<S, F>(stream: S, config: Config, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Decision,
{
    Handshake::read(stream, config).await?.upgrade(decide).await
}
