//! The Centrifugo client protocol v2 at `/connection/websocket`, so the
//! official Centrifugo SDKs (centrifuge-js, centrifuge-python, ...) connect
//! unchanged: JSON by default, Protobuf (binary payloads) when the socket
//! negotiated the subprotocol `centrifuge-protobuf`. `docs/protocol.md`
//! says what is supported and every deliberate difference.
//!
//! Both encodings decode to the same [`wire::Command`] and answer with the
//! same [`reply::Reply`], so everything between is one code path.
//!
//! One task per connection: it reads commands, answers them (the replies to
//! one frame leave together in one frame), and moves hub events from the
//! connection's [`Mailbox`] into the socket, each event framed once for
//! every receiver ([`Delivery::encoded`]). Events are taken from the mailbox
//! only while the socket's write buffer has room, so a client that does not
//! read fills its mailbox, which then overflows: disconnect 3008 "slow".

pub(crate) mod calls;
pub mod proto;
pub(crate) mod reply;
mod subs;
pub(crate) mod wire;

use crate::alarms::{Alarms, Slot};
use crate::auth::{Auth, TokenError};
use crate::hub::mailbox::{Events, Next};
use crate::hub::namespace::{PublishRule, SubscribeRule};
use crate::hub::{
    ClientInfo, Event, FrontKind, Hub, Mailbox, StreamPosition, Subscribed, UNSUBSCRIBE_RECOVER,
};
use crate::metrics::{FrontLabel, MethodLabel};
use crate::shared_tcp::SharedTcp;
use crate::shutdown::{Shutdown, Stage};
use calls::hub_error;
use duplex::{CloseCode, Message, WebSocket};
use duplex_proto::handshake::server::UpgradeRequest;
use prometheus_client::metrics::counter::Counter;
use reply::{ConnectResult, Encoding, Out, Reply, SubscribeResult};
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use wire::{Command, Disconnect, ProtoError};

const FRONT: FrontLabel = FrontLabel {
    front: "centrifuge",
};

/// Settings of the Centrifugo front.
#[derive(Debug, Clone)]
pub struct CentrifugeConfig {
    /// How often the server pings (an empty command). Default 25 s.
    pub ping_interval: Duration,
    /// How long the client has to answer a ping. Default 10 s.
    pub pong_timeout: Duration,
    /// Most bytes queued in a connection's mailbox. Default 1 MiB.
    pub mailbox_bytes: usize,
    /// Most commands in one frame. Default 100.
    pub max_commands_per_frame: usize,
    /// Commands per second a connection may send on average. Default 100.
    pub commands_per_second: u32,
    /// Commands a connection may send in a burst. Default 200.
    pub command_burst: u32,
    /// How long an expired connection (or subscription) may stay before it
    /// is closed, for its refresh to arrive. Default 25 s.
    pub expired_close_delay: Duration,
    /// How long an open socket may wait before sending `connect`.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// Largest frame of commands a client may send (after inflation);
    /// larger ones close the connection with 1009. Default 1 MiB.
    pub max_message_size: usize,
}

impl Default for CentrifugeConfig {
    fn default() -> Self {
        CentrifugeConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            mailbox_bytes: 1 << 20,
            max_commands_per_frame: 100,
            commands_per_second: 100,
            command_burst: 200,
            expired_close_delay: Duration::from_secs(25),
            connect_timeout: Duration::from_secs(10),
            max_message_size: 1 << 20,
        }
    }
}

/// What the front shares between connections.
#[derive(Debug)]
pub struct Front {
    /// The hub.
    pub hub: Arc<Hub>,
    /// Token keys.
    pub auth: Arc<Auth>,
    /// Settings.
    pub config: CentrifugeConfig,
    counters: Counters,
    /// Every connection's next deadline, on one timer task.
    alarms: Alarms,
}

/// The front's counters, looked up in their families once (not per event).
#[derive(Debug)]
struct Counters {
    encodings: Counter,
    bytes_out: Counter,
    bytes_in: Counter,
}

impl Front {
    /// The front over `hub`.
    pub fn new(hub: Arc<Hub>, auth: Arc<Auth>, config: CentrifugeConfig) -> Front {
        hub.set_encoder(FrontKind::Centrifuge, |e| {
            reply::encode_event(e, Encoding::Json)
        });
        hub.set_encoder(FrontKind::CentrifugeProtobuf, |e| {
            reply::encode_event(e, Encoding::Protobuf)
        });
        let m = hub.metrics();
        let counters = Counters {
            encodings: m.encodings.get_or_create(&FRONT).clone(),
            bytes_out: m.bytes_out.get_or_create(&FRONT).clone(),
            bytes_in: m.bytes_in.get_or_create(&FRONT).clone(),
        };
        Front {
            hub,
            auth,
            config,
            counters,
            alarms: Alarms::new(),
        }
    }

    /// Wakes every connection to look at the server's shutdown stage
    /// (call after [`Shutdown::advance`]).
    pub fn wake_all(&self) {
        self.alarms.ring_all();
    }

    /// Alarms set and not yet rung: one per open connection, and none
    /// left behind by connections that ended.
    pub fn pending_alarms(&self) -> usize {
        self.alarms.pending()
    }
}

/// One subscription of a connection.
struct Sub {
    /// Who the client is in this channel (with its channel info).
    info: Arc<ClientInfo>,
    /// Publications the subscribe reply already covers.
    skip: Skip,
    /// When the subscription token expires (Unix seconds).
    expires_at: Option<u64>,
    /// Joins and leaves are pushed (asked for, or forced by the namespace).
    join_leave: bool,
}

/// The publications a new subscription must not deliver again: those at or
/// below the position its reply gave (and its recovered publications).
/// Delivery into the mailbox begins before the hub reads that position, so
/// a publication in flight then can still come out of the mailbox after
/// the reply. Such publications arrive within moments of the subscribe, so
/// the skip ends at the first publication past the position, or two pings
/// after the subscribe (25–50 s by default), whichever is first: a stream
/// that starts its offsets again in a new epoch (after a day without
/// publications, or a Redis that lost it) is then never skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Skip {
    /// Skip offsets at or below this (0: nothing to skip).
    until: u64,
    /// A ping has gone by since the subscribe.
    aged: bool,
}

impl Skip {
    fn until(offset: u64) -> Self {
        Skip {
            until: offset,
            aged: false,
        }
    }

    /// Nothing to skip (the hub may write into the socket directly).
    fn is_done(&self) -> bool {
        self.until == 0
    }

    /// Whether to skip a publication at `offset` (0: no history). The first
    /// past the position ends the skip: a channel's publications come in
    /// order.
    fn skips(&mut self, offset: u64) -> bool {
        if offset == 0 || self.until == 0 {
            return false;
        }
        if offset <= self.until {
            return true;
        }
        *self = Skip::default();
        false
    }

    /// At a ping: the second since the subscribe ends the skip.
    fn ping(&mut self) {
        match self.aged {
            true => *self = Skip::default(),
            false => self.aged = self.until != 0,
        }
    }
}

/// The state of one connection.
struct Client<'f> {
    front: &'f Front,
    /// JSON, or Protobuf (by the socket's subprotocol).
    encoding: Encoding,
    mailbox: Arc<Mailbox>,
    /// Set by `connect`.
    info: Option<Arc<ClientInfo>>,
    subs: subs::Subs<Sub>,
    /// When the connection token expires (Unix seconds).
    expires_at: Option<u64>,
    /// When to ping next; before `connect`, when to give up waiting for
    /// it.
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    tokens: f64,
    refilled: Instant,
    /// Where the connection's alarm is set, if it is.
    armed: Option<Slot>,
    /// The socket is lent to the hub for direct writes while idle.
    direct: bool,
}

/// Why the loop stopped.
enum Wake {
    Frame(Message),
    Events(Events),
    Overflow,
    Tick,
    Closed,
}

/// Seconds until a token's `exp` (at least 1: the SDKs refresh after
/// `ttl` seconds, and 0 would make them refresh in a loop).
fn ttl(exp: u64) -> u64 {
    exp.saturating_sub(unix_now()).max(1)
}

/// The upgrade policy of `/connection/websocket`: the server's own (Origin,
/// configured subprotocols), except that a client offering
/// `centrifuge-protobuf` gets it, and speaks Protobuf.
pub fn decide(policy: &duplex::Policy, req: &UpgradeRequest) -> duplex::Decision {
    match policy.decide(req) {
        duplex::Decision::Accept { headers, .. }
            if req
                .protocols
                .iter()
                .any(|p| p == reply::PROTOBUF_SUBPROTOCOL) =>
        {
            duplex::Decision::Accept {
                protocol: Some(reply::PROTOBUF_SUBPROTOCOL.to_string()),
                headers,
            }
        }
        d => d,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves one connection until it closes, fails, or the server shuts down
/// (then disconnects the client with 3001 "shutdown", which advises a
/// reconnect).
///
/// Over a plain TCP socket ([`SharedTcp`]) whose messages can be framed
/// once for many (no permessage-deflate, or no server context takeover),
/// the connection lends the hub its socket: while it is idle, the hub
/// writes the channels' bursts straight into it ([`Mailbox`]'s direct
/// writes).
pub async fn serve<S>(front: &Front, ws: &mut WebSocket<S>, shutdown: &Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let hub = &front.hub;
    hub.metrics().connections.get_or_create(&FRONT).inc();
    hub.metrics().connections_total.get_or_create(&FRONT).inc();
    let now = Instant::now();
    let mut c = Client {
        front,
        encoding: Encoding::of(ws.protocol()),
        mailbox: Arc::new(Mailbox::new(front.config.mailbox_bytes)),
        info: None,
        subs: subs::Subs::default(),
        expires_at: None,
        next_ping: now + front.config.connect_timeout,
        pong_deadline: None,
        tokens: f64::from(front.config.command_burst),
        refilled: now,
        armed: None,
        direct: false,
    };
    let shared = (ws.get_ref() as &dyn std::any::Any).downcast_ref::<SharedTcp>();
    if let Some(tcp) = shared.filter(|t| t.socket().framing().is_some()) {
        c.mailbox
            .set_direct(tcp.socket().clone(), c.encoding.front_kind());
        c.direct = true;
    }
    let disconnect = c.run(ws, shutdown).await;
    if let Some(d) = disconnect {
        if d == wire::SLOW {
            hub.metrics().slow_disconnects.get_or_create(&FRONT).inc();
        }
        // Boxed, as is the cleanup: the idle connection's state must not
        // be sized by what happens once at its end.
        Box::pin(async {
            tokio::select! {
                _ = ws.close(CloseCode(d.code), &d.reason) => {}
                _ = shutdown.reached(Stage::Now) => {}
            }
        })
        .await;
    }
    Box::pin(c.cleanup()).await;
    hub.metrics().connections.get_or_create(&FRONT).dec();
}

impl Client<'_> {
    /// The loop; returns the disconnect to send, if the server ends it.
    async fn run<S>(&mut self, ws: &mut WebSocket<S>, shutdown: &Shutdown) -> Option<Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            // Set before the stage is read: `Front::wake_all` after the
            // stage changed rings every alarm set by then.
            self.arm();
            if shutdown.stage() >= Stage::Closing {
                return Some(wire::SHUTDOWN);
            }
            let connected = self.info.is_some();
            // Direct writes skip the per-subscription filter, so they wait
            // until no subscription has recovered publications to skip.
            let may_grant =
                self.direct && connected && self.subs.values().all(|s| s.skip.is_done());
            let encoding = self.encoding;
            let wake = poll_fn(|cx| {
                // An overflow is seen whatever the socket does (the push
                // that overflowed woke this task); the alarm rang for a
                // deadline, or for the shutdown. This also takes back the
                // hub's grant to write into the socket.
                let signals = self.mailbox.poll_signals(cx);
                if let Some((d, written)) = &signals.tail {
                    // The rest of a frame the hub began: before all else.
                    let m = d.encoded(encoding.front_kind(), |e| reply::encode_event(e, encoding));
                    let frame = ws
                        .connection()
                        .shared_framing()
                        .and_then(|f| m.frame_for(f));
                    match frame {
                        Some(Ok(frame)) => ws.start_send_prepared_rest(&frame, *written),
                        // The hub wrote the beginning of exactly these bytes.
                        _ => return Poll::Ready(Wake::Closed),
                    }
                }
                if signals.overflowed {
                    return Poll::Ready(Wake::Overflow);
                }
                if signals.rung {
                    return Poll::Ready(Wake::Tick);
                }
                // Hub events, while the socket has room for them.
                if connected {
                    if let Poll::Ready(Ok(())) = ws.poll_ready(cx) {
                        // Registered for pushes by `poll_signals` above.
                        match self.mailbox.take(64) {
                            Some(Next::Events(e)) => return Poll::Ready(Wake::Events(e)),
                            Some(Next::Overflowed) => return Poll::Ready(Wake::Overflow),
                            None => {}
                        }
                    }
                }
                let _ = ws.poll_flush(cx);
                match ws.poll_recv(cx) {
                    Poll::Ready(Some(Ok(m))) => return Poll::Ready(Wake::Frame(m)),
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Wake::Closed),
                    Poll::Pending => {}
                }
                // Idle: everything written, waiting for the client. The hub
                // may write into the socket until this task runs again (a
                // push, an alarm or the socket wakes it).
                if may_grant
                    && ws.buffered_amount() == 0
                    && ws.ready_state() == duplex::ReadyState::Open
                {
                    self.mailbox.grant();
                }
                Poll::Pending
            })
            .await;
            let out = match wake {
                Wake::Closed => return None,
                Wake::Overflow => {
                    tracing::info!(
                        client = ?self.client_id(),
                        "mailbox overflow: slow client disconnected"
                    );
                    return Some(wire::SLOW);
                }
                Wake::Events(events) => {
                    if let Some(d) = self.send_events(ws, events) {
                        return Some(d);
                    }
                    continue;
                }
                Wake::Tick => match self.tick() {
                    Ok(ping) => {
                        let mut out = Out::new(self.encoding);
                        if ping {
                            out.ping();
                        }
                        out
                    }
                    Err(d) => return Some(d),
                },
                Wake::Frame(m) => {
                    self.front
                        .counters
                        .bytes_in
                        .inc_by(m.as_bytes().len() as u64);
                    match Box::pin(self.frame(m)).await {
                        Ok(replies) => replies,
                        Err(d) => return Some(d),
                    }
                }
            };
            if !out.is_empty() {
                self.front.counters.bytes_out.inc_by(out.len() as u64);
                if ws.start_send(out.into_message()).is_err() {
                    return None;
                }
            }
        }
    }

    /// Sets the alarm for the next deadline, unless it is set for then or
    /// earlier already (an early ring only makes the loop look again).
    fn arm(&mut self) {
        let alarms = &self.front.alarms;
        let slot = alarms.slot(self.deadline());
        let earlier = match self.armed {
            None => true,
            Some(armed) => slot < armed,
        };
        if earlier {
            alarms.set(slot, &self.mailbox);
            self.armed = Some(slot);
        }
    }

    fn client_id(&self) -> Option<crate::hub::ClientId> {
        self.info.as_ref().map(|i| i.client)
    }

    /// How long past a token's `exp` the connection (or subscription) may
    /// stay: the close delay for its refresh to arrive, plus the clock skew
    /// tokens are verified with — a token accepted at connect within the
    /// skew must not be closed before it would be refused, or a client
    /// without a fresh token would reconnect in a loop instead of being
    /// told 109.
    fn expiry_grace(&self) -> u64 {
        self.front.config.expired_close_delay.as_secs() + self.front.auth.config().leeway.as_secs()
    }

    /// The next time something is due: a ping, a pong, an expiry, or (not
    /// yet connected) the connect timeout.
    fn deadline(&self) -> Instant {
        if self.info.is_none() {
            return self.next_ping;
        }
        let mut d = self.next_ping;
        if let Some(p) = self.pong_deadline {
            d = d.min(p);
        }
        let delay = self.expiry_grace();
        let expiries = self
            .expires_at
            .into_iter()
            .chain(self.subs.values().filter_map(|s| s.expires_at));
        if let Some(at) = expiries.min() {
            let secs = (at + delay).saturating_sub(unix_now());
            d = d.min(Instant::now() + Duration::from_secs(secs));
        }
        d
    }

    /// Timers: the connect timeout, pings and their pongs, expiries.
    /// Returns whether to ping, or the disconnect.
    fn tick(&mut self) -> Result<bool, Disconnect> {
        // The alarm rang: it is no longer set.
        self.armed = None;
        let now = Instant::now();
        if self.info.is_none() {
            return match now >= self.next_ping {
                true => Err(wire::STALE),
                false => Ok(false),
            };
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Err(wire::NO_PONG);
        }
        let delay = self.expiry_grace();
        let unix = unix_now();
        if self.expires_at.is_some_and(|at| unix >= at + delay) {
            return Err(wire::EXPIRED);
        }
        if self
            .subs
            .values()
            .any(|s| s.expires_at.is_some_and(|at| unix >= at + delay))
        {
            return Err(wire::SUB_EXPIRED);
        }
        if now < self.next_ping {
            return Ok(false);
        }
        self.next_ping = now + self.front.config.ping_interval;
        self.pong_deadline = Some(now + self.front.config.pong_timeout);
        for sub in self.subs.values_mut() {
            sub.skip.ping();
        }
        Ok(true)
    }

    /// Frames hub events into the socket (each encoded once for all its
    /// receivers). Returns a disconnect the events asked for.
    fn send_events<S>(&mut self, ws: &mut WebSocket<S>, events: Events) -> Option<Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let counters = &self.front.counters;
        let mut sent = 0u64;
        let (total, mut reserved) = (events.len(), false);
        for (i, d) in events.into_iter().enumerate() {
            let channel = match &d.event {
                Event::Publication {
                    channel,
                    publication,
                } => {
                    let Some(sub) = self.subs.get_mut(channel) else {
                        continue;
                    };
                    if sub.skip.skips(publication.offset) {
                        continue;
                    }
                    channel
                }
                Event::Join { channel, .. } | Event::Leave { channel, .. } => {
                    match self.subs.get(channel) {
                        Some(sub) if sub.join_leave => channel,
                        _ => continue,
                    }
                }
                Event::Unsubscribe { channel, code } => {
                    let (channel, code) = (channel.clone(), *code);
                    if let Some(sub) = self.subs.remove(&channel) {
                        // Out of the channel now: the hub must not write
                        // its events into this socket once it idles again.
                        self.front
                            .hub
                            .unsubscribe_detached(sub.info, channel.clone());
                        let reason = if code >= UNSUBSCRIBE_RECOVER {
                            "insufficient state"
                        } else {
                            "server unsubscribe"
                        };
                        let mut out = Out::new(self.encoding);
                        out.unsubscribe(&channel, code, reason);
                        if ws.start_send(out.into_message()).is_err() {
                            return None;
                        }
                    }
                    continue;
                }
                Event::Disconnect { code, reason } => {
                    counters.bytes_out.inc_by(sent);
                    return Some(Disconnect::custom(*code, reason));
                }
            };
            let _ = channel;
            let encoding = self.encoding;
            let m = d.encoded(encoding.front_kind(), |e| {
                counters.encodings.inc();
                reply::encode_event(e, encoding)
            });
            sent += m.payload().len() as u64;
            if !reserved {
                // Room for the batch at once: the events of one burst are
                // mostly the same channel's, of much the same size.
                ws.reserve_outbound(m.frame().len(), total - i);
                reserved = true;
            }
            if ws.start_send_prepared(m).is_err() {
                break;
            }
        }
        counters.bytes_out.inc_by(sent);
        None
    }

    fn rate_ok(&mut self) -> bool {
        let now = Instant::now();
        let rate = f64::from(self.front.config.commands_per_second);
        let burst = f64::from(self.front.config.command_burst);
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handles one frame of commands (text for JSON, binary for
    /// Protobuf: the other kind is a bad request); returns the replies.
    async fn frame(&mut self, m: Message) -> Result<Out, Disconnect> {
        let mut out = Out::new(self.encoding);
        let max = self.front.config.max_commands_per_frame;
        match (m, self.encoding) {
            (Message::Text(text), Encoding::Json) => {
                let lines = text.as_str().split('\n').filter(|l| !l.trim().is_empty());
                for (n, line) in lines.enumerate() {
                    if n >= max {
                        return Err(wire::BAD_REQUEST_DISCONNECT);
                    }
                    let cmd: Command =
                        serde_json::from_str(line).map_err(|_| wire::BAD_REQUEST_DISCONNECT)?;
                    self.command(cmd, &mut out).await?;
                }
            }
            (Message::Binary(frame), Encoding::Protobuf) => {
                for (n, cmd) in proto::Commands::new(frame).enumerate() {
                    if n >= max {
                        return Err(wire::BAD_REQUEST_DISCONNECT);
                    }
                    let cmd = cmd.map_err(|_| wire::BAD_REQUEST_DISCONNECT)?;
                    self.command(cmd, &mut out).await?;
                }
            }
            _ => return Err(wire::BAD_REQUEST_DISCONNECT),
        }
        Ok(out)
    }

    async fn command(&mut self, cmd: Command, out: &mut Out) -> Result<(), Disconnect> {
        let id = cmd.id;
        let method = cmd.method();
        if method == "pong" {
            self.pong_deadline = None;
            return Ok(());
        }
        self.front
            .hub
            .metrics()
            .commands
            .get_or_create(&MethodLabel { method })
            .inc();
        if self.info.is_none() {
            return match cmd.connect {
                Some(req) => self.connect(id, req, out).await,
                None => Err(wire::BAD_REQUEST_DISCONNECT),
            };
        }
        // Any command proves the client is alive.
        self.pong_deadline = None;
        if method == "send" {
            // Asynchronous messages to the server have no handler here.
            return Ok(());
        }
        if id == 0 {
            return Err(wire::BAD_REQUEST_DISCONNECT);
        }
        if !self.rate_ok() {
            out.error(id, wire::TOO_MANY_REQUESTS);
            return Ok(());
        }
        let hub = self.front.hub.clone();
        let r = if let Some(req) = cmd.subscribe {
            self.subscribe(id, req, out).await
        } else if let Some(req) = cmd.unsubscribe {
            self.unsubscribe(id, &req.channel, out).await
        } else if let Some(req) = cmd.publish {
            self.publish(id, req, out).await
        } else if let Some(req) = cmd.presence {
            let call = calls::presence(&hub, &req.channel);
            self.subscriber_read(id, &req.channel, call, out).await
        } else if let Some(req) = cmd.presence_stats {
            let call = calls::presence_stats(&hub, &req.channel);
            self.subscriber_read(id, &req.channel, call, out).await
        } else if let Some(req) = cmd.history {
            let call = calls::history(&hub, &req);
            self.subscriber_read(id, &req.channel, call, out).await
        } else if let Some(req) = cmd.refresh {
            return self.refresh(id, &req.token, out);
        } else if let Some(req) = cmd.sub_refresh {
            self.sub_refresh(id, &req.channel, &req.token, out)
        } else if cmd.connect.is_some() {
            return Err(wire::BAD_REQUEST_DISCONNECT);
        } else {
            Err(wire::METHOD_NOT_FOUND)
        };
        if let Err(e) = r {
            out.error(id, e);
        }
        Ok(())
    }

    async fn connect(
        &mut self,
        id: u32,
        req: wire::ConnectRequest,
        out: &mut Out,
    ) -> Result<(), Disconnect> {
        let hub = self.front.hub.clone();
        let auth = &self.front.auth;
        let (user, conn_info, channels, exp) = if req.token.is_empty() {
            if !auth.config().allow_anonymous {
                hub.metrics().auth_failure("no token");
                out.error(id, wire::UNAUTHORIZED);
                return Ok(());
            }
            (String::new(), None, Vec::new(), None)
        } else {
            match auth.verify_connect(&req.token) {
                Ok(c) => (
                    c.sub,
                    c.info.map(|i| Arc::from(i.get().as_bytes())),
                    c.channels,
                    c.exp,
                ),
                Err(TokenError::Expired) => {
                    hub.metrics().auth_failure("token expired");
                    out.error(id, wire::TOKEN_EXPIRED);
                    return Ok(());
                }
                Err(TokenError::Invalid(why)) => {
                    hub.metrics().auth_failure(why);
                    tracing::info!(reason = why, "connect refused: invalid token");
                    return Err(wire::INVALID_TOKEN);
                }
            }
        };
        let info = Arc::new(ClientInfo {
            client: crate::hub::ClientId::random(),
            user: crate::hub::user_id(user),
            conn_info,
            chan_info: None,
        });
        hub.register(info.clone(), self.mailbox.clone());
        self.info = Some(info.clone());
        self.expires_at = exp;
        self.next_ping = Instant::now() + self.front.config.ping_interval;
        // Server-side subscriptions from the token, recovering where the
        // client says it was.
        let mut subs = Vec::new();
        for channel in channels.iter().take(hub.config().max_subscriptions) {
            let recover = req
                .subs
                .get(channel)
                .filter(|r| r.recover)
                .map(|r| StreamPosition {
                    offset: r.offset,
                    epoch: r.epoch.as_str().into(),
                });
            // Server-side subscriptions have no subscribe command to ask
            // for joins and leaves: the namespace's setting decides.
            match self.join(channel, info.clone(), recover, None, true).await {
                Ok((subscribed, recoverable)) => {
                    let s = SubscribeResult {
                        subscribed,
                        recoverable,
                        expires_in: None,
                    };
                    subs.push((Arc::<str>::from(channel.as_str()), s));
                }
                Err(e) => tracing::warn!(%channel, error = ?e, "server-side subscription failed"),
            }
        }
        let r = ConnectResult {
            client: info.client,
            expires_in: exp.map(ttl),
            ping: Some(self.front.config.ping_interval.as_secs().max(1)),
            subs,
        };
        out.reply(id, &Reply::Connect(r));
        Ok(())
    }

    /// Subscribes in the hub and records the subscription. Returns the
    /// hub's answer and whether the channel is recoverable.
    async fn join(
        &mut self,
        channel: &str,
        info: Arc<ClientInfo>,
        recover: Option<StreamPosition>,
        expires_at: Option<u64>,
        asks_join_leave: bool,
    ) -> Result<(Subscribed, bool), ProtoError> {
        let hub = self.front.hub.clone();
        let opts = hub.options(channel).map_err(|e| hub_error(&e))?;
        let recoverable = opts.recovery && opts.has_history();
        let join_leave = opts.join_leave && (asks_join_leave || opts.force_push_join_leave);
        if self.subs.contains_key(channel) {
            return Err(wire::ALREADY_SUBSCRIBED);
        }
        if self.subs.len() >= hub.config().max_subscriptions {
            return Err(wire::LIMIT_EXCEEDED);
        }
        let s = hub
            .subscribe(&info, &self.mailbox, channel, recover)
            .await
            .map_err(|e| hub_error(&e))?;
        // Whether or not this subscribe recovered: see `Skip`.
        let skip = Skip::until(s.position.as_ref().map_or(0, |p| p.offset));
        let name = s.name.clone().unwrap_or_else(|| channel.into());
        self.subs.insert(
            name,
            Sub {
                info,
                skip,
                expires_at,
                join_leave,
            },
        );
        Ok((s, recoverable))
    }

    async fn subscribe(
        &mut self,
        id: u32,
        req: wire::SubscribeRequest,
        out: &mut Out,
    ) -> Result<(), ProtoError> {
        let base = self.info.clone().ok_or(wire::UNAUTHORIZED)?;
        let hub = self.front.hub.clone();
        let opts = hub.options(&req.channel).map_err(|e| hub_error(&e))?;
        let (chan_info, expires_at) = if !req.token.is_empty() {
            match self
                .front
                .auth
                .verify_subscription(&req.token, &req.channel, &base.user)
            {
                Ok(c) => (c.info.map(|i| Arc::from(i.get().as_bytes())), c.exp),
                Err(TokenError::Expired) => {
                    hub.metrics().auth_failure("subscription token expired");
                    return Err(wire::TOKEN_EXPIRED);
                }
                Err(TokenError::Invalid(why)) => {
                    hub.metrics().auth_failure(why);
                    return Err(wire::PERMISSION_DENIED);
                }
            }
        } else {
            let allowed = match opts.subscribe {
                SubscribeRule::Anonymous => true,
                SubscribeRule::Authenticated => !base.user.is_empty(),
                SubscribeRule::Token => false,
            };
            if !allowed {
                hub.metrics().auth_failure("subscribe permission");
                return Err(wire::PERMISSION_DENIED);
            }
            (None, None)
        };
        let info = match chan_info {
            None => base,
            Some(ci) => Arc::new(ClientInfo {
                chan_info: Some(ci),
                ..(*base).clone()
            }),
        };
        let recover = req.recover.then(|| StreamPosition {
            offset: req.offset,
            epoch: req.epoch.as_str().into(),
        });
        let (subscribed, recoverable) = self
            .join(&req.channel, info, recover, expires_at, req.join_leave)
            .await?;
        let r = SubscribeResult {
            subscribed,
            recoverable,
            expires_in: expires_at.map(ttl),
        };
        out.reply(id, &Reply::Subscribe(r));
        Ok(())
    }

    async fn unsubscribe(
        &mut self,
        id: u32,
        channel: &str,
        out: &mut Out,
    ) -> Result<(), ProtoError> {
        if let Some(sub) = self.subs.remove(channel) {
            self.front.hub.unsubscribe(&sub.info, channel).await;
        }
        out.reply(id, &Reply::Unsubscribe);
        Ok(())
    }

    async fn publish(
        &mut self,
        id: u32,
        req: wire::PublishRequest,
        out: &mut Out,
    ) -> Result<(), ProtoError> {
        let hub = self.front.hub.clone();
        let opts = hub.options(&req.channel).map_err(|e| hub_error(&e))?;
        let data = req.data.ok_or(wire::BAD_REQUEST)?;
        let sub = self.subs.get(req.channel.as_str());
        let info = match (opts.publish, sub) {
            (PublishRule::Subscribers, Some(s)) => s.info.clone(),
            _ => return Err(wire::PERMISSION_DENIED),
        };
        hub.publish(&req.channel, data, Some(info))
            .await
            .map_err(|e| hub_error(&e))?;
        out.reply(id, &Reply::Publish);
        Ok(())
    }

    fn require_sub(&self, channel: &str) -> Result<(), ProtoError> {
        self.front.hub.options(channel).map_err(|e| hub_error(&e))?;
        match self.subs.contains_key(channel) {
            true => Ok(()),
            false => Err(wire::PERMISSION_DENIED),
        }
    }

    /// Answers a read of a channel the client is subscribed to
    /// (presence, presence stats, history) with what `call` gives.
    async fn subscriber_read(
        &self,
        id: u32,
        channel: &str,
        call: impl Future<Output = Result<Reply, ProtoError>>,
        out: &mut Out,
    ) -> Result<(), ProtoError> {
        self.require_sub(channel)?;
        let r = call.await?;
        out.reply(id, &r);
        Ok(())
    }

    fn refresh(&mut self, id: u32, token: &str, out: &mut Out) -> Result<(), Disconnect> {
        let info = self.info.clone().ok_or(wire::BAD_REQUEST_DISCONNECT)?;
        match self.front.auth.verify_connect(token) {
            Ok(c) if *c.sub == *info.user => {
                self.expires_at = c.exp;
                let r = ConnectResult {
                    client: info.client,
                    expires_in: c.exp.map(ttl),
                    ..Default::default()
                };
                out.reply(id, &Reply::Refresh(r));
                Ok(())
            }
            Ok(_) => {
                self.front
                    .hub
                    .metrics()
                    .auth_failure("refresh for another user");
                Err(wire::INVALID_TOKEN)
            }
            Err(TokenError::Expired) => {
                out.error(id, wire::TOKEN_EXPIRED);
                Ok(())
            }
            Err(TokenError::Invalid(why)) => {
                self.front.hub.metrics().auth_failure(why);
                Err(wire::INVALID_TOKEN)
            }
        }
    }

    fn sub_refresh(
        &mut self,
        id: u32,
        channel: &str,
        token: &str,
        out: &mut Out,
    ) -> Result<(), ProtoError> {
        let user = self
            .info
            .as_ref()
            .map(|i| i.user.clone())
            .unwrap_or_default();
        let c = match self.front.auth.verify_subscription(token, channel, &user) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(wire::TOKEN_EXPIRED),
            Err(TokenError::Invalid(_)) => return Err(wire::PERMISSION_DENIED),
        };
        let sub = self.subs.get_mut(channel).ok_or(wire::PERMISSION_DENIED)?;
        sub.expires_at = c.exp;
        out.reply(
            id,
            &Reply::SubRefresh {
                expires_in: c.exp.map(ttl),
            },
        );
        Ok(())
    }

    /// Leaves every channel and forgets the client.
    async fn cleanup(&mut self) {
        self.mailbox.close();
        if let Some(slot) = self.armed.take() {
            self.front.alarms.cancel(slot, &self.mailbox);
        }
        let hub = self.front.hub.clone();
        for (channel, sub) in self.subs.drain() {
            hub.unsubscribe(&sub.info, &channel).await;
        }
        if let Some(info) = self.info.take() {
            hub.unregister(&info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Skip;

    #[test]
    fn a_skip_ends_past_the_position_or_at_the_second_ping() {
        let mut s = Skip::until(10);
        assert!(
            !s.skips(0),
            "publications without history are never skipped"
        );
        assert!(s.skips(9) && s.skips(10) && !s.is_done());
        assert!(!s.skips(11) && s.is_done(), "the next one ends it");
        assert!(!s.skips(5), "and nothing is skipped after");

        // A quiet channel: two pings end it, so offsets that start again in
        // a new epoch are delivered.
        let mut s = Skip::until(10);
        s.ping();
        assert!(s.skips(10), "one ping may come right after the subscribe");
        s.ping();
        assert!(s.is_done() && !s.skips(1));

        let mut none = Skip::until(0);
        none.ping();
        assert_eq!(none, Skip::default());
    }
}
