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
use duplex_proto::handshake::policy::{select_protocol, OriginPolicy};
use duplex_proto::handshake::server::{self, Request, UpgradeRequest};
use duplex_proto::{Config, Connection, Role};
use std::sync::Arc;
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

/// The usual decision, as a value: refuse an `Origin` the policy does not
/// allow (403, the defence against cross-site WebSocket hijacking — see
/// [`OriginPolicy`]) and pick the first subprotocol the client offers that
/// is in `protocols`. [`accept`] applies `Policy::default()`: same-host
/// origins only, no subprotocol.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Which pages may open a socket.
    pub origins: OriginPolicy,
    /// Subprotocols this server speaks (any order; the client's preference
    /// decides among them).
    pub protocols: Vec<String>,
}

impl Policy {
    /// Applies the policy to a request.
    pub fn decide(&self, req: &UpgradeRequest) -> Decision {
        if let Err(reason) = self.origins.check_request(req) {
            return Decision::reject(403, reason);
        }
        Decision::Accept {
            protocol: select_protocol(&req.protocols, &self.protocols).map(str::to_string),
            headers: Vec::new(),
        }
    }
}

/// A request head that has been read from the stream; the caller decides
/// what to answer.
#[derive(Debug)]
pub struct Handshake<S> {
    stream: S,
    request: Request,
    /// The request head as it was read.
    head: BytesMut,
    leftover: BytesMut,
    config: Arc<Config>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<S> {
    /// Reads one request head, within `config.max_handshake_bytes` and
    /// `config.handshake_timeout`. A malformed or oversized head is answered
    /// (400 / 431) and returned as an error.
    ///
    /// `config` is a `Config` or an `Arc<Config>` shared by all of a
    /// server's connections.
    pub async fn read(mut stream: S, config: impl Into<Arc<Config>>) -> Result<Self> {
        let config: Arc<Config> = config.into();
        let timeout = config.handshake_timeout;
        let mut buf = BytesMut::with_capacity(1024);
        let res = tokio::time::timeout(timeout, async {
            loop {
                match server::parse_request(&buf, &config) {
                    Ok(Some((req, n))) => return Ok((req, n)),
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
        let (request, n) = request;
        let head = buf.split_to(n);
        Ok(Handshake {
            stream,
            request,
            head,
            leftover: buf,
            config,
        })
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Replaces the settings the socket will run with (limits chosen by
    /// route: the handshake was read with the server's general ones).
    pub fn with_config(mut self, config: impl Into<Arc<Config>>) -> Self {
        self.config = config.into();
        self
    }

    /// Validates the request as a WebSocket upgrade, asks `decide`, and
    /// answers: 101 and a [`WebSocket`], or the refusal (400/426 for an
    /// invalid upgrade, the callback's status otherwise).
    pub async fn upgrade<F>(self, decide: F) -> Result<WebSocket<S>>
    where
        F: FnOnce(&UpgradeRequest) -> Decision,
    {
        let Handshake {
            mut stream,
            request,
            leftover,
            config,
            ..
        } = self;
        let up = match UpgradeRequest::validate(request) {
            Ok(u) => u,
            Err(e) => {
                let _ = write_all_and_close(&mut stream, &server::reject_error(&e)).await;
                return Err(Error::Protocol(e));
            }
        };
        match decide(&up) {
            Decision::Reject { status, reason } => {
                let _ =
                    write_all_and_close(&mut stream, &server::reject(status, &reason, &[])).await;
                Err(Error::Refused { status, reason })
            }
            Decision::Accept { protocol, headers } => {
                let acc = server::accept(&up, &config, protocol.as_deref(), &headers);
                drop(up);
                stream.write_all(&acc.response).await?;
                stream.flush().await?;
                let extensions = acc.deflate.map(|d| d.to_header());
                let conn = Connection::new(Role::Server, config, acc.deflate);
                Ok(WebSocket::from_parts(
                    stream,
                    conn,
                    leftover,
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

    /// Answers with a complete HTTP response (`Content-Length` set,
    /// `Connection: close`) and closes: for pages and other plain HTTP on
    /// the WebSocket port.
    pub async fn respond_with(
        mut self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<()> {
        write_all_and_close(&mut self.stream, &server::response(status, headers, body)).await?;
        Ok(())
    }

    /// Gives back the stream, the request and any bytes read after it.
    pub fn into_parts(self) -> (S, Request, BytesMut) {
        (self.stream, self.request, self.leftover)
    }

    /// Gives back the stream and every byte read from it so far, the
    /// request head first: to hand the connection to an HTTP server
    /// (hyper) that reads the request again.
    pub fn into_raw_parts(self) -> (S, BytesMut) {
        let mut bytes = self.head;
        bytes.unsplit(self.leftover);
        (self.stream, bytes)
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

/// Accepts a valid WebSocket upgrade on `stream` with the default config
/// and the default [`Policy`]: a browser page from another host gets 403,
/// clients that send no `Origin` are accepted, no subprotocol is chosen.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<WebSocket<S>> {
    let policy = Policy::default();
    accept_with(stream, Config::default(), |req| policy.decide(req)).await
}

/// Reads the request, lets `decide` see it, and answers.
pub async fn accept_with<S, F>(
    stream: S,
    config: impl Into<Arc<Config>>,
    decide: F,
) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Decision,
{
    Handshake::read(stream, config).await?.upgrade(decide).await
}
