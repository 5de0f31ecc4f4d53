//! Plain HTTP, served by hyper: pages, `/metrics`, `/health`, the server
//! API, and WebSocket upgrades that arrive on a kept-alive connection.
//!
//! The accept loop reads a connection's first request head itself (the
//! `duplex` handshake parser) so that a WebSocket upgrade, the common case,
//! opens without hyper and an idle socket keeps its small memory budget.
//! Everything else is handed to hyper with the bytes already read replayed
//! in front of the socket ([`Rewind`]), so hyper parses the request again
//! and serves the connection from then on (keep-alive, bodies, chunked
//! encoding). An upgrade on such a connection goes through hyper's upgrade
//! and is served like one on the fast path.

use crate::app::App;
use crate::router::{self, Route};
use crate::web;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    /// `prefix` is read before `inner`.
    pub fn new(inner: S, prefix: BytesMut) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body: whole, or an event stream.
#[derive(Debug)]
pub enum Body {
    /// A body known in full.
    Full(Full<Bytes>),
    /// A Server-Sent Events stream.
    Stream(crate::front::sse::SseBody),
}

impl Body {
    /// A whole body.
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Full::new(b.into()))
    }

    /// A streamed body.
    pub fn stream(s: crate::front::sse::SseBody) -> Body {
        Body::Stream(s)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Pin::new(b).poll_frame(cx),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_end_stream(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(b) => b.size_hint(),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// A WebSocket accepted through hyper, waiting to be served once hyper
/// lets go of the connection.
pub type Upgraded = (duplex::upgrade::PendingUpgrade, Route);

/// Where the service leaves an accepted upgrade for the connection's task.
pub type UpgradeSlot = Arc<Mutex<Option<Upgraded>>>;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: u16, body: String) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The API key a request presents: `X-API-Key: KEY` or
/// `Authorization: apikey KEY`.
fn api_key(req: &Request<Incoming>) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key") {
        return v.to_str().ok().map(str::to_string);
    }
    let auth = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("apikey")
        .then(|| key.trim().to_string())
}

/// The CORS headers for a request's `Origin`: none without one (not a
/// cross-origin browser request), the origin echoed when the origin policy
/// (`--allow-origin`) allows it, `Err` when it does not.
fn cors(
    app: &App,
    req: &Request<Incoming>,
) -> Result<Vec<(header::HeaderName, header::HeaderValue)>, ()> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(Vec::new());
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let o = origin.to_str().map_err(|_| ())?;
    app.config
        .policy
        .origins
        .check(Some(o), host)
        .map_err(|_| ())?;
    let mut out = vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (header::VARY, header::HeaderValue::from_static("Origin")),
    ];
    if app.config.sse.allow_credentials {
        out.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::HeaderValue::from_static("true"),
        ));
    }
    Ok(out)
}

/// Answers one request.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    upgrades: UpgradeSlot,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let route = router::route(req.method().as_str(), req.uri().path());
    handle_route(app, peer, upgrades, req, route).await
}

/// Answers one request already routed.
pub async fn handle_route(
    app: Arc<App>,
    peer: SocketAddr,
    upgrades: UpgradeSlot,
    req: Request<Incoming>,
    route: Route,
) -> Result<Response<Body>, Infallible> {
    let metrics = app.hub.metrics().clone();
    let resp = match route {
        Route::Page | Route::Asset(_) => {
            let (page, content_type) = match route {
                Route::Asset(path) => {
                    web::asset(path).map_or((web::INDEX_HTML, ""), |a| (a.body, a.content_type))
                }
                _ => (web::INDEX_HTML, ""),
            };
            let mut r = Response::new(Body::full(Bytes::from_static(page.as_bytes())));
            for (k, v) in web::page_headers() {
                if let (Ok(k), Ok(v)) = (
                    header::HeaderName::from_bytes(k.as_bytes()),
                    header::HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().insert(k, v);
                }
            }
            if !content_type.is_empty() {
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(content_type),
                );
            }
            r
        }
        Route::Metrics => {
            let mut r = Response::new(Body::full(app.metrics_text()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        // Ready only with a working broker, so that a load balancer sends
        // no clients to a node that cannot reach Redis.
        Route::Health if app.hub.broker_healthy() => text(StatusCode::OK, "ok\n"),
        Route::Health => text(StatusCode::SERVICE_UNAVAILABLE, "broker unavailable\n"),
        Route::Api(method) => {
            if !app
                .auth
                .api_allowed(api_key(&req).as_deref(), peer.ip().is_loopback())
            {
                metrics.refuse("api key");
                json(
                    401,
                    r#"{"error":{"code":101,"message":"unauthorized"}}"#.into(),
                )
            } else {
                let limit = app.config.api_max_body;
                match Limited::new(req.into_body(), limit).collect().await {
                    Ok(body) => {
                        let body = body.to_bytes();
                        let a = crate::front::api::call(&app.hub, &method, &body).await;
                        json(a.status, a.body)
                    }
                    Err(e) => {
                        if e.downcast_ref::<http_body_util::LengthLimitError>()
                            .is_some()
                        {
                            metrics.refuse("api body too large");
                            json(
                                413,
                                r#"{"error":{"code":106,"message":"body too large"}}"#.into(),
                            )
                        } else {
                            json(
                                400,
                                r#"{"error":{"code":107,"message":"bad request"}}"#.into(),
                            )
                        }
                    }
                }
            }
        }
        Route::Echo | Route::Centrifuge => {
            let config = match route {
                Route::Centrifuge => (*app.ws_centrifuge).clone(),
                _ => (*app.ws).clone(),
            };
            let policy = &app.config.policy;
            let (resp, pending) = duplex::upgrade::upgrade(req, config, |r| match route {
                Route::Centrifuge => crate::front::centrifuge::decide(policy, r),
                _ => policy.decide(r),
            });
            if let Some(p) = pending {
                *upgrades.lock().unwrap_or_else(|e| e.into_inner()) = Some((p, route));
            } else {
                metrics.refuse("upgrade");
            }
            resp.map(Body::Full)
        }
        Route::Sse => match cors(&app, &req) {
            Err(()) => {
                metrics.refuse("origin");
                text(StatusCode::FORBIDDEN, "origin not allowed\n")
            }
            Ok(cors) => {
                let query = req.uri().query().unwrap_or("");
                app.sse.open(query, req.headers(), cors).await
            }
        },
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        Route::MethodNotAllowed(allow) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            r
        }
    };
    Ok(resp)
}
