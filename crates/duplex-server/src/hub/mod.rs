//! The hub: channels, subscriptions, publications, history, recovery and
//! presence, shared by every front and unaware of wire protocols.
//!
//! Fronts register each connection's [`Mailbox`] and call the hub; the hub
//! calls its [`Broker`] for anything that crosses nodes (fan-out, history,
//! presence) and, when the broker delivers, queues one shared [`Delivery`]
//! per event into the mailbox of every local subscriber. A delivery is
//! serialised once per front ([`Delivery::encoded`]), however many
//! connections receive it.
//!
//! **The writer.** Once [`Hub::start_writer`] runs (the server starts it), a
//! channel's events are not handed to its subscribers one by one as they
//! arrive: they gather in the channel's pending list, and one task per hub
//! hands each channel's burst out at once. A subscriber whose connection is
//! idle over plain TCP gets the whole burst written straight into its
//! socket, framed once for all of them, in one system call
//! ([`Mailbox::hand_over`]) — the work of a raw TCP fan-out, with no
//! wake-up or poll of its task; the others get the burst queued in their
//! mailbox as before. Without the writer (tests, embedders that do not
//! start it), each event is queued at once.
//!
//! Positions: every publication in a channel with history gets an `offset`
//! (+1 per publication) within an `epoch` (a random string that changes when
//! the channel's history is lost). [`Hub::subscribe`] with a position gives
//! exactly the publications after it and `recovered: true`, or none and
//! `recovered: false` — never a partial replay.

pub mod history;
pub mod mailbox;
pub mod namespace;
pub mod presence;

use crate::broker::{Broker, BrokerError, BrokerHandler, Control, HistoryQuery, HistoryResult};
use crate::metrics::Metrics;
use bytes::Bytes;
use duplex_proto::MemoryBudget;
use duplex_proto::{PreparedMessage, SharedFraming};
pub use history::HistoryLimits;
pub use mailbox::Mailbox;
use namespace::{ChannelError, ChannelOptions, Namespaces};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A publication: its payload (raw JSON on the JSON fronts), its position
/// and who published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Offset in its channel's stream (0: the channel keeps no history).
    pub offset: u64,
    /// The payload.
    pub data: Bytes,
    /// The publishing client, when a client published it.
    pub info: Option<Arc<ClientInfo>>,
    /// When it was stored (ms since the Unix epoch, or virtual time).
    pub time_ms: u64,
}

impl Publication {
    /// A publication not yet stored.
    pub fn new(data: Bytes, info: Option<Arc<ClientInfo>>) -> Self {
        Publication {
            offset: 0,
            data,
            info,
            time_ms: 0,
        }
    }
}

/// A position in a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The latest publication's offset.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: Arc<str>,
}

/// Who a client is, as presence and join/leave show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's unique id.
    pub client: ClientId,
    /// The user id ("" for anonymous clients).
    pub user: Arc<str>,
    /// Connection info from the token (raw JSON). A thin `Arc` rather
    /// than `Bytes` (16 bytes against 32 each): every connection's info
    /// carries both fields, and most are empty.
    pub conn_info: Option<Arc<[u8]>>,
    /// Channel info from the subscription token (raw JSON).
    pub chan_info: Option<Arc<[u8]>>,
}

/// An event for subscribers.
#[derive(Debug)]
pub enum Event {
    /// A publication in a channel.
    Publication {
        /// The channel.
        channel: Arc<str>,
        /// The publication.
        publication: Arc<Publication>,
    },
    /// A client joined a channel.
    Join {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        info: Arc<ClientInfo>,
    },
    /// A client left a channel.
    Leave {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        info: Arc<ClientInfo>,
    },
    /// The server unsubscribes the receiver from a channel.
    Unsubscribe {
        /// The channel.
        channel: Arc<str>,
        /// Why: [`UNSUBSCRIBE_SERVER`] (final) or [`UNSUBSCRIBE_RECOVER`]
        /// (the client should subscribe again, recovering).
        code: u16,
    },
    /// The server disconnects the receiver.
    Disconnect {
        /// Close code.
        code: u16,
        /// Reason.
        reason: Arc<str>,
    },
}

/// An unsubscribe by the server (the API's `unsubscribe`): final.
pub const UNSUBSCRIBE_SERVER: u16 = 2000;
/// An unsubscribe because this node may have missed publications of the
/// channel ("insufficient state"): the client subscribes again and recovers
/// what it missed from history.
pub const UNSUBSCRIBE_RECOVER: u16 = 2500;

/// Fronts that encode deliveries (an index into [`Delivery`]'s cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrontKind {
    /// The Centrifugo client protocol (JSON).
    Centrifuge = 0,
    /// The Centrifugo client protocol (Protobuf).
    CentrifugeProtobuf = 1,
}

const FRONTS: usize = 2;

impl FrontKind {
    /// The front's label in the metrics.
    pub fn label(self) -> crate::metrics::FrontLabel {
        crate::metrics::FrontLabel {
            front: "centrifuge",
        }
    }
}

/// How a front frames an event for its connections (see
/// [`Hub::set_encoder`]).
pub type Encoder = fn(&Event) -> PreparedMessage;

/// An event as queued to every receiving connection: shared, and encoded
/// at most once per front.
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    encoded: [OnceLock<PreparedMessage>; FRONTS],
    /// The server's memory budget, when the delivery is counted in it.
    budget: Option<Arc<MemoryBudget>>,
    /// Bytes reserved from `budget`, given back when the delivery is
    /// dropped (the last mailbox or connection let go of it).
    charged: AtomicUsize,
    /// The budget had no room for it.
    refused: bool,
}

impl Delivery {
    /// A delivery of `event`, outside any memory budget.
    pub fn new(event: Event) -> Arc<Self> {
        Self::charged(event, None)
    }

    /// A delivery of `event` whose bytes ([`cost`](Self::cost), then each
    /// encoding) are reserved once from `budget`, however many mailboxes
    /// hold it. If the budget refuses, the delivery is uncharged
    /// ([`is_charged`](Self::is_charged)): only mailboxes within
    /// [`MemoryBudget::UNCHARGED`] take it.
    pub fn charged(event: Event, budget: Option<&Arc<MemoryBudget>>) -> Arc<Self> {
        let mut d = Delivery {
            event,
            encoded: Default::default(),
            budget: None,
            charged: AtomicUsize::new(0),
            refused: false,
        };
        if let Some(b) = budget {
            let cost = d.cost();
            if b.try_reserve(cost) {
                d.budget = Some(b.clone());
                d.charged = AtomicUsize::new(cost);
            } else {
                d.refused = true;
            }
        }
        Arc::new(d)
    }

    /// Whether the delivery's bytes are counted in the memory budget (or
    /// there is none).
    pub fn is_charged(&self) -> bool {
        !self.refused
    }

    /// The event as `front` frames it, made by `encode` for the first
    /// receiver and shared by the rest (and counted in the budget with the
    /// delivery, when it is, and there is room).
    pub fn encoded(
        &self,
        front: FrontKind,
        encode: impl FnOnce(&Event) -> PreparedMessage,
    ) -> &PreparedMessage {
        self.encoded[front as usize].get_or_init(|| {
            let m = encode(&self.event);
            if let Some(b) = &self.budget {
                let n = m.frame().len();
                if b.try_reserve(n) {
                    self.charged.fetch_add(n, Ordering::Relaxed);
                }
            }
            m
        })
    }

    /// What the delivery counts against a mailbox's bound: its payload and
    /// a fixed overhead for framing and bookkeeping.
    pub fn cost(&self) -> usize {
        const OVERHEAD: usize = 128;
        OVERHEAD
            + match &self.event {
                Event::Publication {
                    channel,
                    publication,
                } => channel.len() + publication.data.len(),
                Event::Join { channel, info } | Event::Leave { channel, info } => {
                    channel.len()
                        + info.conn_info.as_ref().map_or(0, |b| b.len())
                        + info.chan_info.as_ref().map_or(0, |b| b.len())
                }
                Event::Unsubscribe { channel, .. } => channel.len(),
                Event::Disconnect { reason, .. } => reason.len(),
            }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.release(*self.charged.get_mut());
        }
    }
}

/// Time, in milliseconds since the Unix epoch; tests pass a virtual one.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A fresh epoch: 8 random letters and digits.
pub fn new_epoch() -> Arc<str> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let s: String = (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    s.into()
}

/// A user id as the hub keeps it: every anonymous client shares one
/// empty id instead of allocating its own.
pub fn user_id(user: String) -> Arc<str> {
    static ANONYMOUS: OnceLock<Arc<str>> = OnceLock::new();
    match user.is_empty() {
        true => ANONYMOUS.get_or_init(|| "".into()).clone(),
        false => user.into(),
    }
}

/// A connection's id: a random (version 4) UUID, kept as its 16 bytes and
/// written in the UUID's text form, 8-4-4-4-12 lowercase hex digits (what
/// clients see, and what nodes exchange through a broker). Inline and
/// `Copy`: the id in a client's info, in the hub's maps and in every
/// subscriber's entry costs no allocation of its own.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId([u8; 16]);

/// Where the text form of a [`ClientId`] has its dashes.
const DASHES: [usize; 4] = [8, 13, 18, 23];

impl ClientId {
    /// Length of the text form.
    pub const TEXT_LEN: usize = 36;

    /// A fresh random id.
    pub fn random() -> Self {
        let mut b: [u8; 16] = rand::rng().random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        ClientId(b)
    }

    /// Reads the text form (hex digits in either case); `None` for
    /// anything else, which then names no client.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != Self::TEXT_LEN {
            return None;
        }
        let mut out = [0u8; 16];
        let mut digits = 0;
        for (i, &c) in text.iter().enumerate() {
            if DASHES.contains(&i) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let v = (c as char).to_digit(16)? as u8;
            out[digits / 2] |= if digits % 2 == 0 { v << 4 } else { v };
            digits += 1;
        }
        Some(ClientId(out))
    }

    /// The text form, on the stack.
    pub fn text(&self) -> ClientIdText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = self.0.iter().flat_map(|b| [b >> 4, b & 0x0f]);
        let mut out = [b'-'; Self::TEXT_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            if !DASHES.contains(&i) {
                *slot = HEX[usize::from(digits.next().unwrap_or(0))];
            }
        }
        ClientIdText(out)
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::fmt::Debug for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientId({})", &*self.text())
    }
}

/// Tests name their clients: the name's bytes (at most 16), zero-padded.
#[cfg(test)]
impl From<&str> for ClientId {
    fn from(name: &str) -> Self {
        let mut b = [0u8; 16];
        b[..name.len()].copy_from_slice(name.as_bytes());
        ClientId(b)
    }
}

#[cfg(test)]
impl ClientId {
    /// The name a test gave (`From<&str>`).
    pub(crate) fn test_name(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

/// A [`ClientId`]'s text form, as a `str`.
#[derive(Clone, Copy)]
pub struct ClientIdText([u8; ClientId::TEXT_LEN]);

impl std::ops::Deref for ClientIdText {
    type Target = str;

    fn deref(&self) -> &str {
        // Hex digits and dashes only, written by `ClientId::text`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The hub's settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Namespaces and their options.
    pub namespaces: Namespaces,
    /// Longest channel name (bytes). Default 255.
    pub max_channel_length: usize,
    /// Most subscriptions one connection may hold. Default 128.
    pub max_subscriptions: usize,
    /// Largest publication payload (bytes). Default 64 KiB.
    pub max_publication_size: usize,
    /// Most publications one history call or recovery returns. Default 1000.
    pub max_history_per_call: usize,
    /// Most presence members one call returns. Default 1000.
    pub max_presence_members: usize,
    /// How long a presence entry lives unless its connection refreshes it.
    /// Default 30 s; each node refreshes its members every third of it.
    pub presence_ttl: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            namespaces: Namespaces::default(),
            max_channel_length: 255,
            max_subscriptions: 128,
            max_publication_size: 64 * 1024,
            max_history_per_call: 1000,
            max_presence_members: 1000,
            presence_ttl: Duration::from_secs(30),
        }
    }
}

/// Why a hub call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The channel's namespace is not configured.
    UnknownChannel,
    /// The channel name is not acceptable.
    BadChannel,
    /// The feature is off for the channel's namespace.
    NotAvailable,
    /// Already subscribed.
    AlreadySubscribed,
    /// A limit was reached.
    LimitExceeded,
    /// The publication is larger than allowed.
    TooLarge,
    /// The broker failed.
    Broker(BrokerError),
}

impl From<BrokerError> for HubError {
    fn from(e: BrokerError) -> Self {
        HubError::Broker(e)
    }
}

impl From<ChannelError> for HubError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::BadName => HubError::BadChannel,
            ChannelError::Unknown => HubError::UnknownChannel,
        }
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::UnknownChannel => f.write_str("unknown channel"),
            HubError::BadChannel => f.write_str("bad channel name"),
            HubError::NotAvailable => f.write_str("not available"),
            HubError::AlreadySubscribed => f.write_str("already subscribed"),
            HubError::LimitExceeded => f.write_str("limit exceeded"),
            HubError::TooLarge => f.write_str("publication too large"),
            HubError::Broker(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HubError {}

/// What a subscribe returns.
#[derive(Debug, Clone, Default)]
pub struct Subscribed {
    /// The stream's position when the channel keeps history.
    pub position: Option<StreamPosition>,
    /// Recovered publications, oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// The client asked to recover.
    pub was_recovering: bool,
    /// Recovery gave exactly what was missed.
    pub recovered: bool,
    /// The channel's name as the hub keeps it: a connection can hold this
    /// one allocation instead of its own copy.
    pub name: Option<Arc<str>>,
}

const SHARDS: usize = 32;

/// A channel's local subscribers: who (for presence heartbeats) and where
/// their events go, found by client id, in the order they
/// subscribed (an unsubscribe moves the last one into the gap). The
/// writer hands a burst out in this order, which is roughly the order the
/// connections were accepted in: the kernel's per-socket state (file
/// table, socket, TCP control block) is then walked in allocation order
/// rather than in a hash order, which costs fewer cache and TLB misses per
/// `send` (server CPU per delivery in the broadcast benchmark: bench/notes.md).
type Subscribers = indexmap::IndexSet<Subscriber, RandomState>;

/// A channel's subscriber: its mailbox and who it is. Equal, and hashed,
/// as its client id, so that a channel's set is searched by id.
#[derive(Debug)]
struct Subscriber {
    mailbox: Arc<Mailbox>,
    info: Arc<ClientInfo>,
}

impl PartialEq for Subscriber {
    fn eq(&self, other: &Self) -> bool {
        self.info.client == other.info.client
    }
}

impl Eq for Subscriber {}

impl std::hash::Hash for Subscriber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the id hashes, for lookups by id (`Borrow` below).
        self.info.client.hash(state);
    }
}

impl std::borrow::Borrow<ClientId> for Subscriber {
    fn borrow(&self) -> &ClientId {
        &self.info.client
    }
}

/// Most bytes of events (by [`Delivery::cost`]) a channel gathers for the
/// writer while it is still handing out the channel's previous burst. Past
/// it the subscribers are told to recover from history (an unsubscribe
/// with [`UNSUBSCRIBE_RECOVER`]) and further events wait for them there.
pub const PENDING_BYTES_MAX: usize = 16 << 20;

/// A channel on this node.
#[derive(Debug)]
struct Channel {
    /// Its name (the map's key, shared).
    name: Arc<str>,
    subs: Subscribers,
    /// Events for the writer to hand out, oldest first (non-empty: the
    /// channel is in the writer's list).
    pending: Vec<Arc<Delivery>>,
    pending_bytes: usize,
    /// The pending list passed its bound: the subscribers are told to
    /// recover, and events are dropped until the writer takes the list.
    lost: bool,
}

impl Channel {
    fn new(name: Arc<str>) -> Self {
        Channel {
            name,
            subs: Subscribers::default(),
            pending: Vec::new(),
            pending_bytes: 0,
            lost: false,
        }
    }
}

type Shard = Mutex<HashMap<Arc<str>, Channel>>;

/// The hub's writer task's work list.
#[derive(Debug, Default)]
struct Writer {
    /// Channels with pending events.
    dirty: Mutex<Vec<Arc<str>>>,
    /// Wakes the writer.
    wake: Arc<tokio::sync::Notify>,
    /// Events gathered so far (the writer waits while this grows).
    gathered: Arc<std::sync::atomic::AtomicU64>,
}

/// Most times the writer lets the publishers run again before it hands a
/// burst out, while they keep adding to it.
const GATHER_ROUNDS: usize = 64;

/// The writer hands the burst out once this many turns in a row added
/// nothing to it (one is not enough: a publisher whose next requests need
/// another read from its socket misses a turn).
const GATHER_QUIET: usize = 3;

/// A client known to the hub (for the API's disconnect and unsubscribe).
#[derive(Debug, Clone)]
struct Registered {
    info: Arc<ClientInfo>,
    mailbox: Arc<Mailbox>,
}

/// The hub.
pub struct Hub {
    config: HubConfig,
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    channels: Vec<Shard>,
    clients: Mutex<HashMap<ClientId, Registered>>,
    users: Mutex<HashMap<Arc<str>, HashSet<ClientId>>>,
    hasher: RandomState,
    /// This node's id and name, and when it started (the API's `info`).
    node: OnceLock<(String, String, std::time::Instant)>,
    /// The server's memory budget, which deliveries are counted in.
    budget: OnceLock<Arc<MemoryBudget>>,
    /// Set when the writer task runs.
    writer: OnceLock<Writer>,
    /// How each front frames events, for direct writes.
    encoders: [OnceLock<Encoder>; FRONTS],
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The writer holds the hub weakly: it wakes, finds it gone, ends.
        if let Some(w) = self.writer.get() {
            w.wake.notify_one();
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// A hub over `broker`, which delivers back into it.
    pub fn new(
        config: HubConfig,
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            config,
            broker,
            clock,
            metrics,
            channels: (0..SHARDS).map(|_| Mutex::default()).collect(),
            clients: Mutex::default(),
            users: Mutex::default(),
            hasher: RandomState::new(),
            node: OnceLock::new(),
            budget: OnceLock::new(),
            writer: OnceLock::new(),
            encoders: Default::default(),
        });
        let handler: Arc<dyn BrokerHandler> = hub.clone();
        hub.broker.set_handler(Arc::downgrade(&handler));
        hub
    }

    /// Counts every delivery queued from now on in `budget` (once per
    /// delivery, however many mailboxes hold it; see [`Mailbox::push`]).
    /// Set once, at start.
    pub fn set_memory_budget(&self, budget: Arc<MemoryBudget>) {
        let _ = self.budget.set(budget);
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The options of `channel`'s namespace, after checking its name.
    pub fn options(&self, channel: &str) -> Result<&ChannelOptions, HubError> {
        Ok(self
            .config
            .namespaces
            .resolve(channel, self.config.max_channel_length)?)
    }

    fn limits(o: &ChannelOptions) -> Option<HistoryLimits> {
        o.has_history().then_some(HistoryLimits {
            size: o.history_size,
            bytes: o.history_bytes,
            ttl_ms: o.history_ttl.as_millis() as u64,
        })
    }

    /// Starts the writer task (on the current tokio runtime): from now on
    /// events gather per channel and go out in bursts, written straight
    /// into idle subscribers' sockets where they lent them (see the
    /// module's notes). Once; later calls do nothing.
    pub fn start_writer(self: &Arc<Self>) {
        if self.writer.set(Writer::default()).is_err() {
            return;
        }
        let w = self.writer.get().expect("set above");
        let (wake, gathered) = (w.wake.clone(), w.gathered.clone());
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                // Let the publishers that are ready run first, as long as
                // they add to the burst: one system call per subscriber
                // carries them all (an HTTP connection with pipelined
                // publishes, for one, yields every 16 requests).
                let (mut seen, mut quiet) = (gathered.load(Ordering::Relaxed), 0);
                for _ in 0..GATHER_ROUNDS {
                    tokio::task::yield_now().await;
                    let now = gathered.load(Ordering::Relaxed);
                    quiet = if now == seen { quiet + 1 } else { 0 };
                    if quiet == GATHER_QUIET {
                        break;
                    }
                    seen = now;
                }
                let Some(hub) = hub.upgrade() else { return };
                hub.write_pending().await;
            }
        });
    }

    /// Registers how `front` frames events, so the writer can frame them
    /// for that front's idle connections. Once per front.
    pub fn set_encoder(&self, front: FrontKind, encode: Encoder) {
        let _ = self.encoders[front as usize].set(encode);
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.channels[(self.hasher.hash_one(channel) as usize) % SHARDS]
    }

    /// Makes a client known (for [`disconnect_user`](Self::disconnect_user)).
    pub fn register(&self, info: Arc<ClientInfo>, mailbox: Arc<Mailbox>) {
        lock(&self.users)
            .entry(info.user.clone())
            .or_default()
            .insert(info.client);
        lock(&self.clients).insert(info.client, Registered { info, mailbox });
    }

    /// Forgets a client (its subscriptions must be gone already).
    pub fn unregister(&self, info: &ClientInfo) {
        lock(&self.clients).remove(&info.client);
        let mut users = lock(&self.users);
        if let Some(set) = users.get_mut(&info.user) {
            set.remove(&info.client);
            if set.is_empty() {
                users.remove(&info.user);
            }
        }
    }

    /// Subscribes a client: delivery of the channel's events into
    /// `mailbox` starts before history is read, so nothing published
    /// meanwhile is missed (the caller skips what it already got through
    /// recovery: publications with an offset at or below the returned
    /// position's). With `recover`, returns what was missed since that
    /// position, or `recovered: false` and nothing.
    pub async fn subscribe(
        &self,
        info: &Arc<ClientInfo>,
        mailbox: &Arc<Mailbox>,
        channel: &str,
        recover: Option<StreamPosition>,
    ) -> Result<Subscribed, HubError> {
        let opts = self.options(channel)?.clone();
        let mut out = Subscribed::default();
        let first = {
            let mut shard = lock(self.shard(channel));
            if !shard.contains_key(channel) {
                let name: Arc<str> = channel.into();
                shard.insert(name.clone(), Channel::new(name));
            }
            let ch = shard.get_mut(channel).expect("inserted above");
            out.name = Some(ch.name.clone());
            let subs = &mut ch.subs;
            let fresh = subs.insert(Subscriber {
                mailbox: mailbox.clone(),
                info: info.clone(),
            });
            if !fresh {
                return Err(HubError::AlreadySubscribed);
            }
            subs.len() == 1
        };
        self.metrics.subscriptions.inc();
        if first {
            self.metrics.channels.inc();
            if let Err(e) = self.broker.subscribe(channel).await {
                self.remove_subscriber(channel, info.client);
                return Err(e.into());
            }
        }
        let result = async {
            if let Some(limits) = Self::limits(&opts) {
                match recover.filter(|_| opts.recovery) {
                    Some(since) => {
                        out.was_recovering = true;
                        let (pubs, pos, ok) = self.recover(channel, since, limits).await?;
                        out.publications = pubs;
                        out.recovered = ok;
                        out.position = Some(pos);
                    }
                    None => {
                        let q = HistoryQuery::default();
                        out.position =
                            Some(self.broker.history(channel, q, limits).await?.position);
                    }
                }
            }
            if opts.presence {
                let ttl = self.config.presence_ttl.as_millis() as u64;
                self.broker.add_presence(channel, info.clone(), ttl).await?;
            }
            if opts.join_leave {
                self.broker.publish_join(channel, info.clone()).await?;
            }
            Ok::<_, HubError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.unsubscribe(info, channel).await;
                Err(e)
            }
        }
    }

    async fn recover(
        &self,
        channel: &str,
        since: StreamPosition,
        limits: HistoryLimits,
    ) -> Result<(Vec<Arc<Publication>>, StreamPosition, bool), HubError> {
        let max = self.config.max_history_per_call;
        let q = HistoryQuery {
            since: Some(since.clone()),
            limit: max + 1,
            reverse: false,
        };
        let HistoryResult {
            publications,
            position,
            ..
        } = self.broker.history(channel, q, limits).await?;
        Ok(
            match recovery_outcome(&since, &position, &publications, max) {
                true => (publications, position, true),
                false => (Vec::new(), position, false),
            },
        )
    }

    fn remove_subscriber(&self, channel: &str, client: ClientId) -> (bool, bool) {
        let mut shard = lock(self.shard(channel));
        let Some(ch) = shard.get_mut(channel) else {
            return (false, false);
        };
        let removed = ch.subs.swap_remove(&client);
        let last = ch.subs.is_empty();
        if last {
            shard.remove(channel);
        }
        drop(shard);
        if removed {
            self.metrics.subscriptions.dec();
            if last {
                self.metrics.channels.dec();
            }
        }
        (removed, last && removed)
    }

    /// Unsubscribes a client; announces its leave where join/leave is on.
    /// Best effort: broker errors are logged, the local state is removed
    /// whatever happens. The client stops receiving the channel's events
    /// when this is called, before the returned future is first polled.
    pub fn unsubscribe<'a>(
        &'a self,
        info: &'a Arc<ClientInfo>,
        channel: &'a str,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let (removed, last) = self.remove_subscriber(channel, info.client);
        async move {
            if removed {
                self.after_unsubscribe(info, channel, last).await;
            }
        }
    }

    /// Like [`unsubscribe`](Self::unsubscribe), from code that cannot wait:
    /// the client stops receiving the channel's events now, and the rest
    /// (presence, leave, the broker) runs in a task of its own.
    pub fn unsubscribe_detached(self: &Arc<Self>, info: Arc<ClientInfo>, channel: Arc<str>) {
        let (removed, last) = self.remove_subscriber(&channel, info.client);
        if removed {
            let hub = self.clone();
            tokio::spawn(async move { hub.after_unsubscribe(&info, &channel, last).await });
        }
    }

    async fn after_unsubscribe(&self, info: &Arc<ClientInfo>, channel: &str, last: bool) {
        let Ok(opts) = self.options(channel) else {
            return;
        };
        let (presence, join_leave) = (opts.presence, opts.join_leave);
        if presence {
            if let Err(e) = self.broker.remove_presence(channel, info.client).await {
                tracing::warn!(channel, error = %e, "presence removal failed");
            }
        }
        if join_leave {
            if let Err(e) = self.broker.publish_leave(channel, info.clone()).await {
                tracing::warn!(channel, error = %e, "leave announcement failed");
            }
        }
        if last {
            if let Err(e) = self.broker.unsubscribe(channel).await {
                tracing::warn!(channel, error = %e, "broker unsubscribe failed");
            }
        }
    }

    /// Refreshes a subscriber's presence entry.
    pub async fn refresh_presence(
        &self,
        info: &Arc<ClientInfo>,
        channel: &str,
    ) -> Result<(), HubError> {
        if self.options(channel)?.presence {
            let ttl = self.config.presence_ttl.as_millis() as u64;
            self.broker.add_presence(channel, info.clone(), ttl).await?;
        }
        Ok(())
    }

    /// Refreshes the presence entries of every local subscriber of a channel
    /// with presence: this node's heartbeat, run every third of the
    /// presence TTL, so the members of a node that stops (or crashes)
    /// expire within one TTL.
    pub async fn refresh_all_presence(&self) -> Result<usize, HubError> {
        let mut entries = Vec::new();
        for s in &self.channels {
            for (name, ch) in lock(s).iter() {
                if self.options(name).is_ok_and(|o| o.presence) {
                    entries.extend(ch.subs.iter().map(|sub| (name.clone(), sub.info.clone())));
                }
            }
        }
        let n = entries.len();
        if n > 0 {
            let ttl = self.config.presence_ttl.as_millis() as u64;
            self.broker.refresh_presence(entries, ttl).await?;
        }
        Ok(n)
    }

    /// Disconnects the connections of `user` on every node (only `client`
    /// if given), except those in `whitelist`.
    pub async fn disconnect_user(
        &self,
        user: &str,
        client: Option<&str>,
        whitelist: &[String],
        code: u16,
        reason: &str,
    ) -> Result<(), HubError> {
        Ok(self
            .broker
            .control(Control::Disconnect {
                user: user.to_string(),
                client: client.map(str::to_string),
                whitelist: whitelist.to_vec(),
                code,
                reason: reason.to_string(),
            })
            .await?)
    }

    /// Unsubscribes the connections of `user` (only `client` if given) from
    /// `channel`, on every node.
    pub async fn unsubscribe_user(
        &self,
        user: &str,
        client: Option<&str>,
        channel: &str,
    ) -> Result<(), HubError> {
        self.options(channel)?;
        Ok(self
            .broker
            .control(Control::Unsubscribe {
                user: user.to_string(),
                client: client.map(str::to_string),
                channel: channel.to_string(),
            })
            .await?)
    }

    /// Names this node (once), for [`nodes`](Self::nodes).
    pub fn set_node(&self, uid: &str, name: &str) {
        let _ = self
            .node
            .set((uid.to_string(), name.to_string(), std::time::Instant::now()));
    }

    /// What every live node says of itself (with a shared broker, every
    /// node of the cluster).
    pub async fn nodes(&self) -> Result<Vec<crate::broker::NodeStats>, HubError> {
        Ok(self.broker.nodes().await?)
    }

    /// Whether the broker works (for readiness).
    pub fn broker_healthy(&self) -> bool {
        self.broker.healthy()
    }

    /// Publishes into `channel`. When the channel keeps history, the
    /// publication is stored before this returns its position.
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<Arc<ClientInfo>>,
    ) -> Result<Option<StreamPosition>, HubError> {
        let opts = self.options(channel)?;
        if data.len() > self.config.max_publication_size {
            return Err(HubError::TooLarge);
        }
        let limits = Self::limits(opts);
        let source = if info.is_some() { "client" } else { "api" };
        let pos = self
            .broker
            .publish(channel, Publication::new(data, info), limits)
            .await?;
        self.metrics
            .publications
            .get_or_create(&crate::metrics::SourceLabel { source })
            .inc();
        Ok(pos)
    }

    /// Reads history: publications after `since` (all held if `None`), at
    /// most `limit` (capped by `max_history_per_call`), newest first with
    /// `reverse`.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: usize,
        reverse: bool,
    ) -> Result<HistoryResult, HubError> {
        let opts = self.options(channel)?;
        let limits = Self::limits(opts).ok_or(HubError::NotAvailable)?;
        let q = HistoryQuery {
            since,
            limit: limit.min(self.config.max_history_per_call),
            reverse,
        };
        Ok(self.broker.history(channel, q, limits).await?)
    }

    /// Drops a channel's history.
    pub async fn remove_history(&self, channel: &str) -> Result<(), HubError> {
        let opts = self.options(channel)?;
        if !opts.has_history() {
            return Err(HubError::NotAvailable);
        }
        Ok(self.broker.remove_history(channel).await?)
    }

    /// Presence members of a channel.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        if !self.options(channel)?.presence {
            return Err(HubError::NotAvailable);
        }
        Ok(self
            .broker
            .presence(channel, self.config.max_presence_members)
            .await?)
    }

    /// Presence counts: (clients, users).
    pub async fn presence_stats(&self, channel: &str) -> Result<(usize, usize), HubError> {
        if !self.options(channel)?.presence {
            return Err(HubError::NotAvailable);
        }
        Ok(self.broker.presence_stats(channel).await?)
    }

    /// Channels with subscribers on any node whose name matches `pattern`
    /// (`*` matches any run of characters), with their subscriber counts.
    pub async fn channels(
        &self,
        pattern: Option<&str>,
    ) -> Result<Vec<(Arc<str>, usize)>, HubError> {
        let mut out = self.broker.channels().await?;
        out.retain(|(name, _)| pattern.map_or(true, |p| glob(p, name)));
        out.sort();
        Ok(out)
    }

    /// Whether `channel` has subscribers on this node.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        lock(self.shard(channel)).contains_key(channel)
    }

    /// Channels with subscribers on this node, with their counts.
    pub fn local_channels(&self) -> Vec<(Arc<str>, usize)> {
        let mut out = Vec::new();
        for s in &self.channels {
            out.extend(
                lock(s)
                    .iter()
                    .map(|(name, ch)| (name.clone(), ch.subs.len())),
            );
        }
        out
    }

    /// Sends `event` to the connections of `user` (all of them, or only
    /// `client`). Returns how many were told.
    pub fn tell_user(&self, user: &str, client: Option<&str>, event: Event) -> usize {
        let mut event = Some(event);
        self.tell_user_except(user, client, &[], || event.take().expect("made once"))
    }

    /// Like [`tell_user`](Self::tell_user), skipping the clients in `keep`;
    /// `event` is made once, if anyone is told.
    pub fn tell_user_except(
        &self,
        user: &str,
        client: Option<&str>,
        keep: &[&str],
        event: impl FnOnce() -> Event,
    ) -> usize {
        // Ids in their text form, as the API and the broker's controls
        // carry them: one that does not parse names no client.
        let want = match client.map(ClientId::parse) {
            Some(None) => return 0,
            Some(Some(id)) => Some(id),
            None => None,
        };
        let keep: Vec<ClientId> = keep.iter().filter_map(|k| ClientId::parse(k)).collect();
        let ids: Vec<ClientId> = match lock(&self.users).get(user) {
            Some(set) => set
                .iter()
                .filter(|c| want.map_or(true, |w| w == **c))
                .filter(|c| !keep.contains(c))
                .copied()
                .collect(),
            None => return 0,
        };
        if ids.is_empty() {
            return 0;
        }
        let d = Delivery::charged(event(), self.budget.get());
        let clients = lock(&self.clients);
        let mut n = 0;
        for id in ids {
            if let Some(r) = clients.get(&id) {
                if r.mailbox.push(d.clone()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Connected clients and distinct users on this node.
    pub fn counts(&self) -> (usize, usize) {
        (lock(&self.clients).len(), lock(&self.users).len())
    }

    /// Every registered client (for shutdown and tests).
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        lock(&self.clients)
            .values()
            .map(|r| r.info.clone())
            .collect()
    }

    /// Hands `event` (made with the hub's own copy of the channel's name,
    /// so nothing is allocated for it and a connection can match it by
    /// pointer) to every local subscriber of `channel`: into the channel's
    /// pending list for the writer, or, without one, into every mailbox at
    /// once.
    fn deliver(&self, channel: &str, event: impl FnOnce(Arc<str>) -> Event) {
        let mut shard = lock(self.shard(channel));
        let Some(ch) = shard.get_mut(channel) else {
            return;
        };
        let mut d = Delivery::charged(event(ch.name.clone()), self.budget.get());
        let Some(writer) = self.writer.get() else {
            let n = hand_out(channel, &ch.subs, &[d]);
            self.metrics.deliveries.inc_by(n as u64);
            return;
        };
        if ch.lost {
            return;
        }
        let first = ch.pending.is_empty();
        let cost = d.cost();
        if ch.pending_bytes + cost > PENDING_BYTES_MAX && !first {
            tracing::warn!(
                channel,
                "events arrive faster than they are handed out: subscribers recover"
            );
            ch.lost = true;
            d = Delivery::new(Event::Unsubscribe {
                channel: ch.name.clone(),
                code: UNSUBSCRIBE_RECOVER,
            });
        }
        ch.pending_bytes += cost;
        ch.pending.push(d);
        writer.gathered.fetch_add(1, Ordering::Relaxed);
        if first {
            let name = ch.name.clone();
            drop(shard);
            lock(&writer.dirty).push(name);
            writer.wake.notify_one();
        }
    }

    /// The writer's round: every channel with pending events hands its
    /// burst out.
    async fn write_pending(&self) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        let dirty = std::mem::take(&mut *lock(&writer.dirty));
        for name in dirty {
            self.write_channel(&name).await;
        }
    }

    /// Hands out one channel's pending burst to its subscribers as they
    /// are when it is taken: written into the sockets of those that granted
    /// it (framed once per front and framing), queued into the mailboxes
    /// of the others. The mailboxes are handed the burst outside the
    /// shard's lock; nothing else hands this channel's events out
    /// meanwhile (only the writer does), so each subscriber gets them in
    /// order.
    async fn write_channel(&self, name: &str) {
        let (events, targets) = {
            let mut shard = lock(self.shard(name));
            let Some(ch) = shard.get_mut(name) else {
                return;
            };
            let events = std::mem::take(&mut ch.pending);
            ch.pending_bytes = 0;
            ch.lost = false;
            if events.is_empty() {
                return;
            }
            let targets: Vec<Arc<Mailbox>> = ch.subs.iter().map(|s| s.mailbox.clone()).collect();
            (events, targets)
        };
        let may_write = events
            .iter()
            .all(|d| matches!(d.event, Event::Publication { .. }));
        // One entry per (front, framing) met: the burst's bytes and where
        // each event's frame ends, or `None` if they cannot be shared.
        let mut framed: Vec<(FrontKind, SharedFraming, Option<Burst>)> = Vec::new();
        let mut delivered = 0;
        let mut written = [0u64; FRONTS];
        for (i, mailbox) in targets.iter().enumerate() {
            let mut front_written = None;
            let h = mailbox.hand_over(&events, may_write, |front, framing| {
                let k = match framed
                    .iter()
                    .position(|(f, g, _)| *f == front && *g == framing)
                {
                    Some(k) => k,
                    None => {
                        framed.push((front, framing, self.frame_burst(&events, front, framing)));
                        framed.len() - 1
                    }
                };
                front_written = Some(front);
                framed[k].2.as_ref().map(|(b, e)| (&b[..], &e[..]))
            });
            delivered += h.written + h.queued;
            if h.handed_back {
                self.metrics.direct_handbacks.inc();
            } else if let Some(front) = front_written.filter(|_| h.written == events.len()) {
                written[front as usize] += 1;
            }
            if h.overflowed {
                tracing::info!(channel = name, "mailbox full: disconnecting a slow client");
            }
            // A long burst (thousands of subscribers) lets the other tasks
            // of this thread run now and then.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
        self.metrics.deliveries.inc_by(delivered as u64);
        self.metrics.direct_writes.inc_by(written.iter().sum());
        let payload: usize = events
            .iter()
            .map(|d| match &d.event {
                Event::Publication { publication, .. } => publication.data.len(),
                _ => 0,
            })
            .sum();
        for (k, n) in written.iter().enumerate() {
            if *n > 0 {
                let front = [FrontKind::Centrifuge, FrontKind::CentrifugeProtobuf][k];
                self.metrics
                    .bytes_out
                    .get_or_create(&front.label())
                    .inc_by(n * payload as u64);
            }
        }
    }

    /// A burst's frames as `front` with `framing` sends them, concatenated,
    /// and where each ends; `None` if the front has no encoder or a frame
    /// cannot be shared (compressed first for other parameters).
    fn frame_burst(
        &self,
        events: &[Arc<Delivery>],
        front: FrontKind,
        framing: SharedFraming,
    ) -> Option<Burst> {
        let encode = *self.encoders[front as usize].get()?;
        let encodings = self.metrics.encodings.get_or_create(&front.label());
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(events.len());
        for d in events {
            let m = d.encoded(front, |e| {
                encodings.inc();
                encode(e)
            });
            bytes.extend_from_slice(&m.frame_for(framing)?.ok()?);
            ends.push(bytes.len());
        }
        Some((bytes, ends))
    }
}

/// A burst's frames, concatenated, and where each ends.
type Burst = (Vec<u8>, Vec<usize>);

/// Queues `events` (one channel's, in order) into every subscriber's
/// mailbox; returns how many were queued.
fn hand_out(channel: &str, subs: &Subscribers, events: &[Arc<Delivery>]) -> usize {
    let mut n = 0;
    for sub in subs {
        let h = sub.mailbox.queue(events);
        n += h.queued;
        if h.overflowed {
            let client = &sub.info.client;
            tracing::info!(channel, %client, "mailbox full: disconnecting a slow client");
        }
    }
    n
}

/// Whether a history read after `since` recovers exactly what was missed:
/// same epoch, consecutive from `since.offset + 1` to the stream's top, and
/// no more than `max` publications.
pub fn recovery_outcome(
    since: &StreamPosition,
    position: &StreamPosition,
    publications: &[Arc<Publication>],
    max: usize,
) -> bool {
    if since.epoch != position.epoch || since.offset > position.offset {
        return false;
    }
    let missed = position.offset - since.offset;
    if missed == 0 {
        return true;
    }
    missed as usize <= max
        && publications.len() as u64 == missed
        && publications.first().map(|p| p.offset) == Some(since.offset + 1)
        && publications.last().map(|p| p.offset) == Some(position.offset)
}

impl BrokerHandler for Hub {
    fn on_publication(&self, channel: &str, publication: Arc<Publication>) {
        self.deliver(channel, |channel| Event::Publication {
            channel,
            publication,
        });
    }

    fn on_join(&self, channel: &str, info: Arc<ClientInfo>) {
        self.deliver(channel, |channel| Event::Join { channel, info });
    }

    fn on_leave(&self, channel: &str, info: Arc<ClientInfo>) {
        self.deliver(channel, |channel| Event::Leave { channel, info });
    }

    fn on_lost(&self, channel: &str) {
        tracing::info!(
            channel,
            "publications may have been missed: subscribers recover"
        );
        self.deliver(channel, |channel| Event::Unsubscribe {
            channel,
            code: UNSUBSCRIBE_RECOVER,
        });
    }

    fn on_control(&self, control: Control) {
        match control {
            Control::Disconnect {
                user,
                client,
                whitelist,
                code,
                reason,
            } => {
                let keep: Vec<&str> = whitelist.iter().map(String::as_str).collect();
                self.tell_user_except(&user, client.as_deref(), &keep, || Event::Disconnect {
                    code,
                    reason: reason.as_str().into(),
                });
            }
            Control::Unsubscribe {
                user,
                client,
                channel,
            } => {
                self.tell_user(
                    &user,
                    client.as_deref(),
                    Event::Unsubscribe {
                        channel: channel.as_str().into(),
                        code: UNSUBSCRIBE_SERVER,
                    },
                );
            }
        }
    }

    fn local_channels(&self) -> Vec<(Arc<str>, usize)> {
        Hub::local_channels(self)
    }

    fn local_stats(&self) -> crate::broker::NodeStats {
        let (clients, users) = self.counts();
        let (uid, name, uptime) = match self.node.get() {
            Some((uid, name, started)) => (uid.clone(), name.clone(), started.elapsed().as_secs()),
            None => (String::new(), String::new(), 0),
        };
        crate::broker::NodeStats {
            uid,
            name,
            version: env!("CARGO_PKG_VERSION").to_string(),
            num_clients: clients,
            num_users: users,
            num_subs: usize::try_from(self.metrics.subscriptions.get()).unwrap_or(0),
            num_channels: usize::try_from(self.metrics.channels.get()).unwrap_or(0),
            uptime,
        }
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests;
