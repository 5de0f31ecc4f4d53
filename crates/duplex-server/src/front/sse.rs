//! Server-Sent Events (`text/event-stream`) at `/connection/sse`, for pages
//! that only receive: `new EventSource("/connection/sse?channel=news")`.
//!
//! - Channels: `channel=` once per channel (at most
//!   [`SseConfig::max_channels`]), with the namespaces' subscribe rules of
//!   the WebSocket front: a connection token (`token=` in the query, or
//!   `Authorization: Bearer`) names the user; anonymous where the namespace
//!   allows it (`auth.allow_anonymous`); a `subscribe = "token"` channel
//!   only when the token's `channels` claim lists it.
//! - Positions: every publication's `id:` carries the position of **every**
//!   channel of the stream, `<offset>:<epoch>` per channel in the order of
//!   the URL's channels, comma-separated (`-` for a channel without
//!   history). A browser that reconnects by itself sends the last one back
//!   as `Last-Event-ID`; `?since=` (the same format) does it for a first
//!   load. Each channel then recovers exactly what it missed, or the stream
//!   says it could not with an `unrecovered` event — never a silent gap.
//! - Events: publications as unnamed events (`onmessage`), `data:`
//!   `{"channel","offset","data"}`; named events `unrecovered`
//!   `{"channel","offset","epoch"}`, `unsubscribe` `{"channel","code"}` and
//!   `disconnect` `{"code","reason"}` (the stream then ends; a page that
//!   must not come back closes its EventSource on it).
//! - `retry:` advice at the start, a comment every
//!   [`SseConfig::heartbeat`] so proxies keep the stream, `Cache-Control:
//!   no-store`, `X-Accel-Buffering: no`.
//! - Cross-origin pages: allowed origins (the WebSocket `--allow-origin`
//!   list) get `Access-Control-Allow-Origin`, with credentials when
//!   [`SseConfig::allow_credentials`]; others get 403.
//! - Limits: at most [`SseConfig::max_streams`] streams (503 beyond),
//!   separate from WebSocket connections; a stream whose mailbox overflows
//!   (it does not read fast enough) ends, and the browser reconnects and
//!   recovers.

use crate::auth::{Auth, TokenError};
use crate::hub::mailbox::Next;
use crate::hub::namespace::SubscribeRule;
use crate::hub::{
    ClientInfo, Event, Hub, HubError, Mailbox, Publication, StreamPosition, Subscribed,
    UNSUBSCRIBE_RECOVER,
};
use crate::metrics::FrontLabel;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::fmt::Write as _;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

const FRONT: FrontLabel = FrontLabel { front: "sse" };

/// The EventSource endpoint.
pub const SSE_PATH: &str = "/connection/sse";

/// Settings of the SSE front.
#[derive(Debug, Clone)]
pub struct SseConfig {
    /// Most open streams. Default 10 000.
    pub max_streams: usize,
    /// Most channels in one stream. Default 16.
    pub max_channels: usize,
    /// A comment line this often keeps proxies from closing an idle
    /// stream. Default 25 s.
    pub heartbeat: Duration,
    /// The reconnect delay advised to browsers (`retry:`). Default 2 s.
    pub retry: Duration,
    /// Most bytes queued for one stream before it is ended as too slow.
    /// Default 1 MiB.
    pub mailbox_bytes: usize,
    /// Allowed cross-origin pages may send cookies
    /// (`Access-Control-Allow-Credentials: true`). Default false.
    pub allow_credentials: bool,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            max_streams: 10_000,
            max_channels: 16,
            heartbeat: Duration::from_secs(25),
            retry: Duration::from_secs(2),
            mailbox_bytes: 1 << 20,
            allow_credentials: false,
        }
    }
}

/// The SSE front.
#[derive(Debug)]
pub struct Front {
    hub: Arc<Hub>,
    auth: Arc<Auth>,
    config: SseConfig,
    open: AtomicUsize,
}

/// The response body of a stream: chunks from the stream's task.
#[derive(Debug)]
pub struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// What a request asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) channels: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) since: Option<String>,
}

pub(crate) fn parse_query(query: &str) -> Request {
    let mut r = Request::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "channel" => r.channels.push(v.into_owned()),
            "token" => r.token = Some(v.into_owned()),
            "since" => r.since = Some(v.into_owned()),
            _ => {}
        }
    }
    r
}

/// Reads `<offset>:<epoch>,…` (one per channel, `-` for none). A list of
/// another length, or a malformed entry, recovers nothing.
pub(crate) fn parse_positions(s: &str, n: usize) -> Vec<Option<StreamPosition>> {
    let parsed: Option<Vec<Option<StreamPosition>>> = s
        .split(',')
        .map(|p| match p {
            "-" => Some(None),
            p => {
                let (offset, epoch) = p.split_once(':')?;
                let ok = !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
                ok.then_some(())?;
                Some(Some(StreamPosition {
                    offset: offset.parse().ok()?,
                    epoch: epoch.into(),
                }))
            }
        })
        .collect();
    match parsed {
        Some(v) if v.len() == n => v,
        _ => vec![None; n],
    }
}

pub(crate) fn format_positions(positions: &[Option<StreamPosition>]) -> String {
    let mut out = String::new();
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match p {
            Some(p) => {
                let _ = write!(out, "{}:{}", p.offset, p.epoch);
            }
            None => out.push('-'),
        }
    }
    out
}

/// A JSON string literal.
fn json_string(out: &mut String, s: &str) {
    crate::front::centrifuge::wire::string(out, s);
}

/// An error answer (the stream does not open): EventSource fails and does
/// not retry.
fn refuse(status: StatusCode, code: u32, message: &str) -> Response<crate::http::Body> {
    let mut body = format!("{{\"error\":{{\"code\":{code},\"message\":");
    json_string(&mut body, message);
    body.push_str("}}");
    crate::http::json_response(status, body)
}

struct Stream {
    hub: Arc<Hub>,
    info: Arc<ClientInfo>,
    mailbox: Arc<Mailbox>,
    channels: Vec<Arc<str>>,
    /// Each channel's last position sent (history channels).
    positions: Vec<Option<StreamPosition>>,
    /// Channels still subscribed.
    live: Vec<bool>,
    tx: mpsc::Sender<Bytes>,
    expires_at: Option<u64>,
    config: SseConfig,
}

impl Front {
    /// The front over `hub`.
    pub fn new(hub: Arc<Hub>, auth: Arc<Auth>, config: SseConfig) -> Front {
        Front {
            hub,
            auth,
            config,
            open: AtomicUsize::new(0),
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Answers `GET /connection/sse?…`: the stream, or why not.
    /// `cors` holds the headers of an allowed cross-origin request.
    pub async fn open(
        self: &Arc<Self>,
        query: &str,
        headers: &HeaderMap,
        cors: Vec<(header::HeaderName, HeaderValue)>,
    ) -> Response<crate::http::Body> {
        let hub = &self.hub;
        let mut req = parse_query(query);
        if req.token.is_none() {
            req.token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_string());
        }
        let since = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or(req.since.take());
        if req.channels.is_empty() {
            return refuse(StatusCode::BAD_REQUEST, 107, "no channel");
        }
        if req.channels.len() > self.config.max_channels {
            return refuse(StatusCode::BAD_REQUEST, 106, "too many channels");
        }
        // Who: the token's user, or anonymous.
        let (user, conn_info, token_channels, expires_at) = match &req.token {
            None if self.auth.config().allow_anonymous => (String::new(), None, Vec::new(), None),
            None => return refuse(StatusCode::UNAUTHORIZED, 101, "unauthorized"),
            Some(t) => match self.auth.verify_connect(t) {
                Ok(c) => (
                    c.sub,
                    c.info.map(|i| Arc::from(i.get().as_bytes())),
                    c.channels,
                    c.exp,
                ),
                Err(TokenError::Expired) => {
                    hub.metrics().auth_failure("token expired");
                    return refuse(StatusCode::UNAUTHORIZED, 109, "token expired");
                }
                Err(TokenError::Invalid(why)) => {
                    hub.metrics().auth_failure(why);
                    return refuse(StatusCode::UNAUTHORIZED, 101, "unauthorized");
                }
            },
        };
        // Each channel: its namespace and its subscribe rule.
        for (i, channel) in req.channels.iter().enumerate() {
            if req.channels[..i].contains(channel) {
                return refuse(StatusCode::BAD_REQUEST, 105, "a channel appears twice");
            }
            let opts = match hub.options(channel) {
                Ok(o) => o,
                Err(HubError::UnknownChannel) => {
                    return refuse(StatusCode::NOT_FOUND, 102, "unknown channel")
                }
                Err(_) => return refuse(StatusCode::BAD_REQUEST, 107, "bad channel name"),
            };
            let allowed = match opts.subscribe {
                SubscribeRule::Anonymous => true,
                SubscribeRule::Authenticated => !user.is_empty(),
                SubscribeRule::Token => token_channels.contains(channel),
            };
            if !allowed {
                hub.metrics().auth_failure("subscribe permission");
                return refuse(StatusCode::FORBIDDEN, 103, "permission denied");
            }
        }
        // A slot among the streams.
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.config.max_streams {
            self.open.fetch_sub(1, Ordering::AcqRel);
            hub.metrics().refuse("sse streams");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, 106, "too many streams");
        }
        let info = Arc::new(ClientInfo {
            client: crate::hub::ClientId::random(),
            user: user.into(),
            conn_info,
            chan_info: None,
        });
        let mailbox = Arc::new(Mailbox::new(self.config.mailbox_bytes));
        hub.register(info.clone(), mailbox.clone());
        let n = req.channels.len();
        let recover = since
            .as_deref()
            .map_or_else(|| vec![None; n], |s| parse_positions(s, n));
        let (tx, rx) = mpsc::channel(8);
        let mut stream = Stream {
            hub: hub.clone(),
            info,
            mailbox,
            channels: req.channels.iter().map(|c| Arc::from(c.as_str())).collect(),
            positions: vec![None; n],
            live: vec![false; n],
            tx,
            expires_at,
            config: self.config.clone(),
        };
        // Subscribe now, so that a refusal (the broker is down) is an
        // HTTP error, not a stream that ends at once.
        let mut first = format!("retry: {}\n\n", self.config.retry.as_millis());
        let mut subscribed = Vec::with_capacity(n);
        for (i, since) in recover.into_iter().enumerate() {
            match stream.subscribe(i, since).await {
                Ok((s, _)) => subscribed.push(s),
                Err(e) => {
                    stream.close().await;
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    let m = crate::front::centrifuge::calls::hub_error(&e);
                    let status = match e {
                        HubError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    return refuse(status, m.code, m.message);
                }
            }
        }
        for (i, s) in subscribed.iter().enumerate() {
            stream.replay(i, s, &mut first);
        }
        hub.metrics().connections.get_or_create(&FRONT).inc();
        hub.metrics().connections_total.get_or_create(&FRONT).inc();
        let _ = stream.tx.try_send(Bytes::from(first));
        let front = self.clone();
        tokio::spawn(async move {
            stream.run().await;
            stream.close().await;
            front.hub.metrics().connections.get_or_create(&FRONT).dec();
            front.open.fetch_sub(1, Ordering::AcqRel);
        });
        let mut r = Response::new(crate::http::Body::stream(SseBody { rx }));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        for (k, v) in cors {
            h.insert(k, v);
        }
        r
    }
}

impl Stream {
    /// Subscribes channel `i`, recovering from `since` where the namespace
    /// allows it, and sets its position: where the replay starts when it
    /// recovered, the stream's top otherwise. The replay itself is written
    /// by [`replay`](Self::replay) once every channel has a position, so
    /// that every event id carries them all.
    async fn subscribe(
        &mut self,
        i: usize,
        since: Option<StreamPosition>,
    ) -> Result<(Subscribed, Option<StreamPosition>), HubError> {
        let channel = self.channels[i].clone();
        let opts = self.hub.options(&channel)?;
        let recover = since.filter(|_| opts.recovery && opts.has_history());
        let s = self
            .hub
            .subscribe(&self.info, &self.mailbox, &channel, recover.clone())
            .await?;
        self.live[i] = true;
        self.positions[i] = match (s.recovered, &recover) {
            (true, Some(since)) => Some(since.clone()),
            _ => s.position.clone(),
        };
        Ok((s, recover))
    }

    /// Writes what subscribing channel `i` gave: the publications it
    /// missed (each event's id moving its position on, up to the stream's
    /// top), or that it could not recover them.
    fn replay(&mut self, i: usize, s: &Subscribed, out: &mut String) {
        if s.was_recovering && !s.recovered {
            out.push_str("event: unrecovered\ndata: {\"channel\":");
            json_string(out, &self.channels[i]);
            if let Some(p) = &s.position {
                let _ = write!(out, ",\"offset\":{},\"epoch\":", p.offset);
                json_string(out, &p.epoch);
            }
            out.push_str("}\n");
            let _ = writeln!(out, "id: {}\n", format_positions(&self.positions));
        }
        if s.recovered {
            for p in &s.publications {
                self.publication(i, p, out);
            }
            self.positions[i] = s.position.clone();
        }
    }

    /// A publication of channel `i` as an event, moving its position.
    fn publication(&mut self, i: usize, p: &Publication, out: &mut String) {
        if p.offset != 0 {
            if let Some(pos) = &mut self.positions[i] {
                pos.offset = p.offset;
            }
        }
        out.push_str("id: ");
        out.push_str(&format_positions(&self.positions));
        out.push_str("\ndata: {\"channel\":");
        json_string(out, &self.channels[i]);
        if p.offset != 0 {
            let _ = write!(out, ",\"offset\":{}", p.offset);
        }
        out.push(',');
        if crate::front::centrifuge::wire::is_json(&p.data) {
            // The payload is JSON on one line (the API and the WebSocket
            // front take it as raw JSON); a line break inside strings is
            // escaped, and any other is whitespace between tokens: fold it.
            out.push_str("\"data\":");
            for line in String::from_utf8_lossy(&p.data).split(['\n', '\r']) {
                out.push_str(line);
            }
        } else {
            // Binary, from a Protobuf client: `"data":null,"b64data":…`.
            crate::front::centrifuge::wire::data_field(out, &p.data);
        }
        out.push_str("}\n\n");
    }

    fn index(&self, channel: &str) -> Option<usize> {
        self.channels.iter().position(|c| &**c == channel)
    }

    /// Turns events into stream text; returns whether the stream goes on.
    async fn events(&mut self, events: crate::hub::mailbox::Events, out: &mut String) -> bool {
        for d in events {
            match &d.event {
                Event::Publication {
                    channel,
                    publication,
                } => {
                    let Some(i) = self.index(channel).filter(|&i| self.live[i]) else {
                        continue;
                    };
                    // Already sent (recovered), or not after what was sent.
                    let stale = publication.offset != 0
                        && self.positions[i]
                            .as_ref()
                            .is_some_and(|p| publication.offset <= p.offset);
                    if !stale {
                        self.publication(i, publication, out);
                    }
                }
                Event::Join { .. } | Event::Leave { .. } => {}
                Event::Unsubscribe { channel, code } => {
                    let Some(i) = self.index(channel).filter(|&i| self.live[i]) else {
                        continue;
                    };
                    self.hub.unsubscribe(&self.info, channel).await;
                    self.live[i] = false;
                    if *code >= UNSUBSCRIBE_RECOVER {
                        // This node may have missed publications: subscribe
                        // again from where the stream is.
                        let since = self.positions[i].clone();
                        match self.subscribe(i, since).await {
                            Ok((s, _)) => self.replay(i, &s, out),
                            Err(_) => return false,
                        }
                    } else {
                        out.push_str("event: unsubscribe\ndata: {\"channel\":");
                        json_string(out, channel);
                        let _ = write!(out, ",\"code\":{code}}}\n\n");
                    }
                }
                Event::Disconnect { code, reason } => {
                    let _ = write!(
                        out,
                        "event: disconnect\ndata: {{\"code\":{code},\"reason\":"
                    );
                    json_string(out, reason);
                    out.push_str("}\n\n");
                    return false;
                }
            }
        }
        true
    }

    /// The stream could not keep up: it ends, counted as a slow disconnect.
    fn slow(&self) {
        self.hub
            .metrics()
            .slow_disconnects
            .get_or_create(&FRONT)
            .inc();
        tracing::info!(client = %self.info.client, "stream queue full: ending a slow EventSource stream");
    }

    async fn send(&self, text: String) -> bool {
        // The send waits while the client does not read; an overflowing
        // mailbox meanwhile ends the stream.
        let mailbox = &self.mailbox;
        tokio::select! {
            r = self.tx.send(Bytes::from(text)) => r.is_ok(),
            _ = poll_fn(|cx| if mailbox.poll_signals(cx).overflowed { Poll::Ready(()) } else { Poll::Pending }) => {
                self.slow();
                false
            }
        }
    }

    async fn run(&mut self) {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.tick().await;
        let expires_at = self.expires_at;
        let expiry = async move {
            match expires_at {
                Some(at) => {
                    let now = unix_now();
                    tokio::time::sleep(Duration::from_secs(at.saturating_sub(now))).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            let mailbox = self.mailbox.clone();
            tokio::select! {
                next = poll_fn(|cx| mailbox.poll_next(cx, 64)) => match next {
                    Next::Events(events) => {
                        let mut out = String::new();
                        let go_on = self.events(events, &mut out).await;
                        if !out.is_empty() && !self.send(out).await {
                            return;
                        }
                        if !go_on {
                            return;
                        }
                    }
                    Next::Overflowed => {
                        self.slow();
                        return;
                    }
                },
                _ = heartbeat.tick() => {
                    if !self.send(": ping\n\n".into()).await {
                        return;
                    }
                }
                _ = &mut expiry => {
                    let text = "event: disconnect\ndata: {\"code\":3005,\"reason\":\"connection expired\"}\n\n";
                    let _ = self.send(text.into()).await;
                    return;
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Leaves every channel and the hub.
    async fn close(&mut self) {
        self.mailbox.close();
        for i in 0..self.channels.len() {
            if std::mem::take(&mut self.live[i]) {
                self.hub.unsubscribe(&self.info, &self.channels[i]).await;
            }
        }
        self.hub.unregister(&self.info);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse() {
        let r = parse_query("channel=news&channel=scores%3A42&token=a.b.c&since=1%3AAb");
        assert_eq!(r.channels, ["news", "scores:42"]);
        assert_eq!(r.token.as_deref(), Some("a.b.c"));
        assert_eq!(r.since.as_deref(), Some("1:Ab"));
        assert_eq!(parse_query(""), Request::default());
    }

    #[test]
    fn positions_round_trip_and_refuse_garbage() {
        let p = vec![
            Some(StreamPosition {
                offset: 12,
                epoch: "AbC9".into(),
            }),
            None,
        ];
        let s = format_positions(&p);
        assert_eq!(s, "12:AbC9,-");
        assert_eq!(parse_positions(&s, 2), p);
        for bad in [
            "",
            "12:AbC9",
            "x:AbC9,-",
            "12:,-",
            "12:a b,-",
            "12:AbC9,-,-",
        ] {
            assert_eq!(parse_positions(bad, 2), vec![None, None], "{bad:?}");
        }
    }
}
