//! hyper 1 and axum 0.8 integration (features `hyper` and `axum`): serve
//! WebSockets from the same router as the rest of an HTTP application.
//!
//! With hyper directly, [`upgrade`] validates a request, applies a
//! [`Decision`], and returns the response to send (101, or the refusal) and,
//! when accepted, a [`PendingUpgrade`] that resolves to a [`WebSocket`] once
//! hyper hands over the connection. With axum, the [`WebSocketUpgrade`]
//! extractor does the same in a handler:
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # mod demo {
//! use duplex::upgrade::WebSocketUpgrade;
//! async fn socket(ws: WebSocketUpgrade) -> axum_core::response::Response {
//!     ws.on_upgrade(|mut ws| async move {
//!         while let Some(Ok(msg)) = ws.recv().await {
//!             if ws.send(msg).await.is_err() { break; }
//!         }
//!     })
//! }
//! # }
//! ```
//!
//! Only HTTP/1.1 upgrades are handled (not RFC 8441's HTTP/2 extended
//! CONNECT); serve with HTTP/1 and upgrades enabled (`axum::serve` does).

use crate::error::{Error, Result};
use crate::server::Decision;
#[cfg(feature = "axum")]
use crate::server::Policy;
use crate::ws::WebSocket;
use bytes::{Bytes, BytesMut};
use duplex_proto::deflate::DeflateParams;
use duplex_proto::handshake::server::{self, Request, UpgradeRequest};
use duplex_proto::handshake::Headers;
use duplex_proto::{Config, Connection, Role};
use http_body_util::Full;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The stream under a WebSocket upgraded through hyper.
pub type UpgradedStream = TokioIo<hyper::upgrade::Upgraded>;

/// A response with a small in-memory body.
pub type HttpResponse = http::Response<Full<Bytes>>;

/// An accepted upgrade waiting for hyper to hand over the connection (which
/// happens after the 101 response has been written).
#[derive(Debug)]
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    config: Config,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl PendingUpgrade {
    /// The subprotocol that was agreed.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Waits for the connection and wraps it in a [`WebSocket`].
    pub async fn into_websocket(self) -> Result<WebSocket<UpgradedStream>> {
        let upgraded = self
            .on_upgrade
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let extensions = self.deflate.map(|d| d.to_header());
        let conn = Connection::new(Role::Server, self.config, self.deflate);
        Ok(WebSocket::from_parts(
            TokioIo::new(upgraded),
            conn,
            BytesMut::new(),
            self.protocol,
            extensions,
            None,
        ))
    }
}

/// The request head as the protocol core sees it.
fn core_request(parts: &http::request::Parts) -> Request {
    let mut headers: Headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let minor_version = match parts.version {
        http::Version::HTTP_09 | http::Version::HTTP_10 => 0,
        _ => 1,
    };
    // HTTP/1.1 requests always carry Host; hyper may present it only in the
    // URI (absolute-form targets).
    if headers.get("host").is_none() {
        if let Some(a) = parts.uri.authority() {
            headers.push("host", a.as_str().as_bytes());
        }
    }
    Request {
        method: parts.method.as_str().to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        minor_version,
        headers,
    }
}

fn plain_response(status: u16, headers: &[(String, String)], body: String) -> HttpResponse {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body + "\n")))
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
}

/// The refusal response for a handshake error (400, 405, 426 …).
fn error_response(e: &duplex_proto::Error) -> HttpResponse {
    let status = e.http_status();
    let mut headers = Vec::new();
    if status == 426 {
        headers.push(("sec-websocket-version".to_string(), "13".to_string()));
        headers.push(("upgrade".to_string(), "websocket".to_string()));
    }
    if status == 405 {
        headers.push(("allow".to_string(), "GET".to_string()));
    }
    plain_response(status, &headers, e.to_string())
}

/// Validates `parts` as a WebSocket upgrade and takes hyper's upgrade
/// handle from its extensions. `Err` is the refusal to send.
fn validate(
    parts: &mut http::request::Parts,
) -> std::result::Result<(UpgradeRequest, OnUpgrade), Box<HttpResponse>> {
    let req =
        UpgradeRequest::validate(core_request(parts)).map_err(|e| Box::new(error_response(&e)))?;
    let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
        Box::new(plain_response(
            426,
            &[],
            "this connection cannot be upgraded (HTTP/1.1 with upgrades is required)".into(),
        ))
    })?;
    Ok((req, on_upgrade))
}

/// Answers an upgrade request according to `decide`.
fn respond(
    req: &UpgradeRequest,
    on_upgrade: OnUpgrade,
    config: Config,
    decision: Decision,
) -> (HttpResponse, Option<PendingUpgrade>) {
    match decision {
        Decision::Reject { status, reason } => (plain_response(status, &[], reason), None),
        Decision::Accept { protocol, headers } => {
            let acc = server::accept(req, &config, protocol.as_deref(), &headers);
            let mut b = http::Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
            for (k, v) in acc.headers() {
                b = b.header(k, v);
            }
            match b.body(Full::new(Bytes::new())) {
                Ok(resp) => (
                    resp,
                    Some(PendingUpgrade {
                        on_upgrade,
                        config,
                        protocol: acc.protocol,
                        deflate: acc.deflate,
                    }),
                ),
                Err(e) => (plain_response(500, &[], e.to_string()), None),
            }
        }
    }
}

/// Validates a hyper HTTP/2 request as an RFC 8441 extended CONNECT with
/// `:protocol` `websocket` and lets `decide` see it. Send the returned
/// response (200 when accepted: HTTP/2 has no 101); if it is a 200, await
/// the [`PendingUpgrade`] for the socket, which runs over that one stream.
/// The hyper server must have advertised `SETTINGS_ENABLE_CONNECT_PROTOCOL`
/// (`http2::Builder::enable_connect_protocol`).
#[cfg(feature = "http2")]
pub fn upgrade_h2<B, F>(
    request: http::Request<B>,
    config: Config,
    decide: F,
) -> (HttpResponse, Option<PendingUpgrade>)
where
    F: FnOnce(&UpgradeRequest) -> Decision,
{
    let (mut parts, _body) = request.into_parts();
    if parts.method != http::Method::CONNECT {
        return (
            plain_response(405, &[], "method must be CONNECT".into()),
            None,
        );
    }
    let websocket = parts
        .extensions
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return (
            plain_response(400, &[], ":protocol must be websocket".into()),
            None,
        );
    }
    let req = match UpgradeRequest::validate_extended_connect(core_request(&parts)) {
        Ok(r) => r,
        Err(e) => return (error_response(&e), None),
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return (
            plain_response(400, &[], "this stream cannot be taken over".into()),
            None,
        );
    };
    let decision = decide(&req);
    match decision {
        Decision::Reject { status, reason } => (plain_response(status, &[], reason), None),
        Decision::Accept { protocol, headers } => {
            let acc = server::accept(&req, &config, protocol.as_deref(), &headers);
            let mut b = http::Response::builder().status(http::StatusCode::OK);
            // HTTP/2 has no Upgrade or Connection, and no key to answer.
            let h1_only = ["upgrade", "connection", "sec-websocket-accept"];
            for (k, v) in acc.headers() {
                if !h1_only.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                    b = b.header(k, v);
                }
            }
            match b.body(Full::new(Bytes::new())) {
                Ok(resp) => (
                    resp,
                    Some(PendingUpgrade {
                        on_upgrade,
                        config,
                        protocol: acc.protocol,
                        deflate: acc.deflate,
                    }),
                ),
                Err(e) => (plain_response(500, &[], e.to_string()), None),
            }
        }
    }
}

/// Validates a hyper request as a WebSocket upgrade and lets `decide` see
/// it. Send the returned response; if it is a 101, await the
/// [`PendingUpgrade`] (typically in a spawned task) for the socket.
pub fn upgrade<B, F>(
    request: http::Request<B>,
    config: Config,
    decide: F,
) -> (HttpResponse, Option<PendingUpgrade>)
where
    F: FnOnce(&UpgradeRequest) -> Decision,
{
    let (mut parts, _body) = request.into_parts();
    match validate(&mut parts) {
        Ok((req, on_upgrade)) => {
            let decision = decide(&req);
            respond(&req, on_upgrade, config, decision)
        }
        Err(resp) => (*resp, None),
    }
}

#[cfg(feature = "axum")]
pub use self::axum_extractor::WebSocketUpgrade;

#[cfg(feature = "axum")]
mod axum_extractor {
    use super::*;
    use axum_core::extract::FromRequestParts;
    use axum_core::response::{IntoResponse, Response};
    use std::future::Future;

    /// axum extractor for a WebSocket upgrade. Rejects requests that are not
    /// valid upgrades (400/405/426). [`on_upgrade`](Self::on_upgrade)
    /// applies the [`Policy`] (default: same-host `Origin` only, no
    /// subprotocol) and answers.
    #[derive(Debug)]
    pub struct WebSocketUpgrade {
        request: UpgradeRequest,
        on_upgrade: OnUpgrade,
        config: Config,
        policy: Policy,
    }

    impl WebSocketUpgrade {
        /// The validated request: path, `Origin`, offered subprotocols and
        /// extensions, all headers.
        pub fn request(&self) -> &UpgradeRequest {
            &self.request
        }

        /// Limits, compression and timeouts for this socket.
        pub fn config(mut self, config: Config) -> Self {
            self.config = config;
            self
        }

        /// Who may connect and which subprotocols are spoken.
        pub fn policy(mut self, policy: Policy) -> Self {
            self.policy = policy;
            self
        }

        /// Answers by the policy and, if accepted, runs `callback` with the
        /// socket in a new task once the connection is handed over.
        pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
        where
            F: FnOnce(WebSocket<UpgradedStream>) -> Fut + Send + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            let decision = self.policy.decide(&self.request);
            self.decide(decision, callback)
        }

        /// Like [`on_upgrade`](Self::on_upgrade) with an explicit decision
        /// (the policy is not applied).
        pub fn decide<F, Fut>(self, decision: Decision, callback: F) -> Response
        where
            F: FnOnce(WebSocket<UpgradedStream>) -> Fut + Send + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            let (resp, pending) = respond(&self.request, self.on_upgrade, self.config, decision);
            if let Some(p) = pending {
                tokio::spawn(async move {
                    match p.into_websocket().await {
                        Ok(ws) => callback(ws).await,
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
            }
            resp.map(axum_core::body::Body::new)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
        type Rejection = Response;

        async fn from_request_parts(
            parts: &mut http::request::Parts,
            _state: &S,
        ) -> std::result::Result<Self, Self::Rejection> {
            let (request, on_upgrade) =
                validate(parts).map_err(|r| r.map(axum_core::body::Body::new).into_response())?;
            Ok(WebSocketUpgrade {
                request,
                on_upgrade,
                config: Config::default(),
                policy: Policy::default(),
            })
        }
    }
}
