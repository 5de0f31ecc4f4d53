//! The Redis broker: several `duplex serve` nodes share channels, history
//! and presence through one Redis (standalone, `rediss://` with TLS).
//!
//! - **Fan-out**: a node subscribes (one pub/sub connection) to the Redis
//!   channel of each hub channel it has local subscribers on, and only to
//!   those. A publication reaches every node through Redis, the publishing
//!   node included, so every node delivers a channel's publications in the
//!   same order.
//! - **History**: one Lua script per publication appends to the channel's
//!   stream (`XADD` with the offset as the entry id), increments the offset
//!   in the stream's meta hash (which also holds the epoch) and publishes —
//!   atomically, in one round trip. Two nodes publishing to one channel can
//!   never produce two publications at one offset. When the meta hash is
//!   gone (Redis flushed, or the key expired), the next call creates a new
//!   epoch, so clients learn `recovered: false` instead of receiving a gap.
//! - **Presence**: a hash of members and a sorted set of their expiry
//!   times per channel. Each node refreshes its members on a heartbeat
//!   (the hub's), so a crashed node's members expire within one TTL.
//! - **Failures**: commands fail fast while Redis is unreachable
//!   ([`BrokerError::Unavailable`]). The pub/sub connection reconnects with
//!   backoff, subscribes again to every channel it needs, and for each
//!   channel with history reads what was published meanwhile and delivers
//!   it in order; when it cannot know (a new epoch, or more missed than one
//!   read returns), the hub tells that channel's subscribers to recover.
//! - **Nodes**: each node registers itself in a sorted set with a
//!   heartbeat, and listens on a control channel for commands for all
//!   nodes (disconnecting a user) and for surveys (the channel list).

use super::codec::{self, ChannelMessage};
use super::local::STREAM_IDLE_MS;
use super::{
    BoxFuture, Broker, BrokerError, BrokerHandler, ChannelCounts, Control, HistoryQuery,
    HistoryResult, NodeStats,
};
use crate::hub::StreamPosition;
use crate::hub::{new_epoch, ClientId, ClientInfo, Clock, HistoryLimits, Publication};
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisError, Script, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How to reach Redis, and the broker's timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS); with
    /// `cluster`, the seed nodes, comma-separated.
    pub url: String,
    /// A Redis Cluster: keys are spread over its masters by channel, and
    /// fan-out uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`).
    pub cluster: bool,
    /// Prefix of every key and channel name, so that several deployments
    /// can share one Redis. No `{` or `}`.
    pub prefix: String,
    /// Connecting to Redis gives up after this long. Default 1 s.
    pub connect_timeout: Duration,
    /// A command without an answer after this long fails. Default 2 s.
    pub command_timeout: Duration,
    /// The pub/sub connection's reconnect backoff grows up to this.
    /// Default 2 s.
    pub max_backoff: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            prefix: "duplex".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// How often a node re-registers itself and checks its connections.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node that has not re-registered for this long is taken as gone.
const NODE_TTL_MS: u64 = 10_000;
/// How long a survey (the channel list) waits for the other nodes.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many missed publications are read back after the pub/sub
/// connection was lost; with more, the channel's subscribers recover
/// themselves.
const MAX_CATCH_UP: usize = 1000;

// KEYS: stream, meta. ARGV: body, size, stream ttl ms, meta ttl ms, new
// epoch, pub/sub channel, publish command (`publish`, or `spublish` on a
// cluster). Returns {offset, epoch}.
const PUBLISH_LUA: &str = r"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('hset', KEYS[2], 'e', epoch)
  redis.call('del', KEYS[1])
end
local offset = redis.call('hincrby', KEYS[2], 's', 1)
local id = string.format('%d', offset)
redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], id .. '-1', 'd', ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[4])
redis.call(ARGV[7], ARGV[6], 'p' .. id .. ':' .. epoch .. ':' .. ARGV[1])
return {offset, epoch}
";

// KEYS: stream, meta. ARGV: new epoch, meta ttl ms (0: keep the key's
// expiry, or give a new meta hash the idle time), since offset ('' for
// none), limit (0: read nothing), reverse ('1'), since epoch ('' for any),
// idle ms. Returns {top offset, epoch, first entry, entries}.
const HISTORY_LUA: &str = r"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[2], 'e', epoch)
  redis.call('del', KEYS[1])
  redis.call('pexpire', KEYS[2], ARGV[7])
end
if tonumber(ARGV[2]) > 0 then redis.call('pexpire', KEYS[2], ARGV[2]) end
local top = redis.call('hget', KEYS[2], 's') or '0'
local first = redis.call('xrange', KEYS[1], '-', '+', 'COUNT', 1)
local entries = {}
local limit = tonumber(ARGV[4])
if limit > 0 and (ARGV[6] == '' or ARGV[6] == epoch) then
  if ARGV[5] == '1' then
    local from = '+'
    if ARGV[3] ~= '' then from = '(' .. ARGV[3] .. '-1' end
    entries = redis.call('xrevrange', KEYS[1], from, '-', 'COUNT', limit)
  else
    local from = '-'
    if ARGV[3] ~= '' then from = '(' .. ARGV[3] .. '-1' end
    entries = redis.call('xrange', KEYS[1], from, '+', 'COUNT', limit)
  end
end
return {top, epoch, first, entries}
";

// KEYS: members hash, expiry zset. ARGV: now ms. Drops expired members,
// returns the others as HGETALL does.
const PRESENCE_LUA: &str = r"
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
for i = 1, #expired, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #expired) do chunk[#chunk + 1] = expired[j] end
  redis.call('hdel', KEYS[1], unpack(chunk))
end
if #expired > 0 then redis.call('zremrangebyscore', KEYS[2], '-inf', ARGV[1]) end
return redis.call('hgetall', KEYS[1])
";

// KEYS: members hash, expiry zset. ARGV: client, info, expires at ms, ttl ms.
const PRESENCE_ADD_LUA: &str = r"
redis.call('zadd', KEYS[2], ARGV[3], ARGV[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[4])
redis.call('pexpire', KEYS[2], ARGV[4])
return 1
";

/// A message on the control channel.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum ControlMessage {
    Command(Control),
    Survey {
        id: u64,
        from: String,
    },
    Channels {
        id: u64,
        to: String,
        from: String,
        channels: Vec<(String, usize)>,
        #[serde(default)]
        node: Option<NodeStats>,
    },
}

/// A hub channel this node has subscribers on.
#[derive(Debug, Default)]
struct ChannelState {
    /// Subscribe calls minus unsubscribe calls.
    refs: u32,
    /// The last position delivered here (history channels), to drop
    /// duplicates and notice gaps.
    last: Option<StreamPosition>,
    /// A cluster connection was lost since: read back what was missed
    /// once the channel's subscription is confirmed again.
    stale: bool,
}

/// A survey's answers: from which node, its channels, its stats.
type Answer = (String, Vec<(String, usize)>, Option<NodeStats>);
type Survey = mpsc::UnboundedSender<Answer>;

/// The command connection: one Redis, or a cluster (routed by key slot).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

struct Inner {
    options: RedisOptions,
    /// The standalone client (its pub/sub connection is separate).
    client: Option<redis::Client>,
    conn: Conn,
    node: Arc<str>,
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    clock: Arc<dyn Clock>,
    channels: Mutex<HashMap<Arc<str>, ChannelState>>,
    /// The pub/sub connection's command half, when connected. Held across
    /// (un)subscribe calls so that they and a resubscription never
    /// interleave.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    pubsub_up: AtomicBool,
    commands_ok: AtomicBool,
    surveys: Mutex<HashMap<u64, Survey>>,
    next_survey: AtomicU64,
    publish: Script,
    history: Script,
    presence: Script,
    presence_add: Script,
    round_trips: AtomicU64,
    /// Cluster: a node connection was lost; subscribe again.
    resubscribe: tokio::sync::Notify,
}

/// The Redis broker. Dropping it stops its background tasks.
pub struct RedisBroker {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &redact(&self.inner.options.url))
            .field("prefix", &self.inner.options.prefix)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// A Redis call given at most `limit`: its error, or `what` timing out,
/// as the broker's error.
async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(unavailable(format!("{what} timed out"))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisBroker {
    /// Connects to Redis (failing if it cannot be reached now) and starts
    /// the pub/sub connection and the node heartbeat.
    pub async fn connect(
        options: RedisOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisBroker, BrokerError> {
        if options.prefix.contains(['{', '}']) {
            return Err(BrokerError::Unavailable(
                "the Redis key prefix must not contain { or }".into(),
            ));
        }
        if options.url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; ours is ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let deadline = options.connect_timeout + options.command_timeout;
        let (client, conn, pushes) = if options.cluster {
            let seeds: Vec<&str> = options.url.split(',').map(str::trim).collect();
            let (tx, rx) = mpsc::unbounded_channel();
            let cluster = ClusterClientBuilder::new(seeds)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.command_timeout)
                .retries(1)
                .build()
                .map_err(unavailable)?;
            let conn = within(deadline, "connecting", cluster.get_async_connection()).await?;
            (None, Conn::Cluster(conn), Some(rx))
        } else {
            let client = redis::Client::open(options.url.as_str()).map_err(unavailable)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(Some(options.command_timeout))
                .set_number_of_retries(1)
                .set_max_delay(options.max_backoff);
            let conn = within(
                deadline,
                "connecting",
                client.get_connection_manager_with_config(config),
            )
            .await?;
            (Some(client), Conn::Single(conn), None)
        };
        let inner = Arc::new(Inner {
            options,
            client,
            conn,
            node: ClientId::random().to_string().into(),
            handler: OnceLock::new(),
            clock,
            channels: Mutex::default(),
            sink: tokio::sync::Mutex::new(None),
            pubsub_up: AtomicBool::new(false),
            commands_ok: AtomicBool::new(true),
            surveys: Mutex::default(),
            next_survey: AtomicU64::new(1),
            publish: Script::new(PUBLISH_LUA),
            history: Script::new(HISTORY_LUA),
            presence: Script::new(PRESENCE_LUA),
            presence_add: Script::new(PRESENCE_ADD_LUA),
            round_trips: AtomicU64::new(0),
            resubscribe: tokio::sync::Notify::new(),
        });
        // The scripts are loaded now (on every master of a cluster), so the
        // first publications do not each find them missing and reload them.
        for script in [
            &inner.publish,
            &inner.history,
            &inner.presence,
            &inner.presence_add,
        ] {
            inner
                .run(|mut c| async move { script.load_async(&mut c).await })
                .await?;
        }
        // The first pub/sub subscription is made here, so that a node that
        // starts is subscribed to its control channel.
        let mut tasks = Vec::new();
        let fanout = match (pushes, &inner.conn) {
            (Some(rx), Conn::Cluster(c)) => {
                let mut c = c.clone();
                within(deadline, "SSUBSCRIBE", c.ssubscribe(inner.control_name())).await?;
                inner.pubsub_up.store(true, Ordering::Relaxed);
                tasks.push(tokio::spawn(inner.clone().resubscribe_cluster()));
                tokio::spawn(inner.clone().run_pushes(rx))
            }
            _ => {
                let first = inner.open_pubsub().await?;
                tokio::spawn(inner.clone().run_pubsub(first))
            }
        };
        tasks.push(fanout);
        tasks.push(tokio::spawn(inner.clone().heartbeat()));
        Ok(RedisBroker { inner, tasks })
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

impl Inner {
    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get().and_then(Weak::upgrade)
    }

    fn key(&self, channel: &str, suffix: &str) -> String {
        // The channel is the hash tag: every key of a channel, and its
        // pub/sub channel, live in one cluster slot.
        format!("{}.{{{}}}.{}", self.options.prefix, channel, suffix)
    }

    fn pubsub_name(&self, channel: &str) -> String {
        format!("{}.{{{}}}", self.options.prefix, channel)
    }

    fn control_name(&self) -> String {
        format!("{}.control", self.options.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}.nodes", self.options.prefix)
    }

    /// The hub channel of a Redis pub/sub channel name.
    fn channel_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.options.prefix.as_str())?
            .strip_prefix(".{")?
            .strip_suffix('}')
    }

    /// Runs a command (or script) on the shared connection, counting the
    /// round trip and noting whether Redis answered.
    async fn run<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, BrokerError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        self.attempt(f).await.map_err(|(e, _)| e)
    }

    /// Runs a read, once more if the connection had broken (the shared
    /// connection reconnects after its first failure): reads may be
    /// repeated, writes are not.
    async fn read<T, F>(&self, f: impl Fn(Conn) -> F) -> Result<T, BrokerError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        match self.attempt(&f).await {
            Err((_, true)) => self.attempt(&f).await.map_err(|(e, _)| e),
            r => r.map_err(|(e, _)| e),
        }
    }

    /// One try; an error says whether the connection was at fault.
    async fn attempt<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, (BrokerError, bool)>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.options.command_timeout, f(self.conn.clone())).await {
            Ok(Ok(v)) => {
                self.commands_ok.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                let broken = e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
                if broken {
                    self.commands_ok.store(false, Ordering::Relaxed);
                }
                Err((unavailable(e), broken))
            }
            Err(_) => {
                self.commands_ok.store(false, Ordering::Relaxed);
                Err((unavailable("Redis did not answer in time"), false))
            }
        }
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    fn publish_command(&self) -> &'static str {
        if self.options.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    async fn publish_raw(&self, name: String, message: Bytes) -> Result<(), BrokerError> {
        let command = self.publish_command();
        self.run(|mut c| async move {
            redis::cmd(command)
                .arg(name)
                .arg(&message[..])
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// Reads a channel's stream: its position, the oldest offset held and
    /// up to `limit` publications after `since`. `meta_ttl_ms` renews how
    /// long the channel's offset and epoch live (0: leave it).
    async fn read_history(
        &self,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        reverse: bool,
        meta_ttl_ms: u64,
    ) -> Result<(StreamPosition, Option<u64>, Vec<Publication>), BrokerError> {
        let (stream, meta) = (self.key(channel, "s"), self.key(channel, "m"));
        let epoch = new_epoch();
        let since_offset = since.map(|s| s.offset.to_string()).unwrap_or_default();
        let since_epoch = since.map(|s| s.epoch.to_string()).unwrap_or_default();
        let script = &self.history;
        let (stream, meta, epoch) = (&stream, &meta, &epoch);
        let (since_offset, since_epoch) = (&since_offset, &since_epoch);
        let value: Value = self
            .read(|mut c| async move {
                script
                    .key(stream)
                    .key(meta)
                    .arg(&**epoch)
                    .arg(meta_ttl_ms)
                    .arg(since_offset)
                    .arg(limit)
                    .arg(if reverse { "1" } else { "0" })
                    .arg(since_epoch)
                    .arg(STREAM_IDLE_MS)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        parse_history(value).map_err(|e| BrokerError::Unavailable(e.to_string()))
    }

    /// Opens a pub/sub connection and subscribes it to the control channel
    /// and every channel with local subscribers; installs its sink.
    async fn open_pubsub(&self) -> Result<redis::aio::PubSubStream, BrokerError> {
        let deadline = self.options.connect_timeout + self.options.command_timeout;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| unavailable("no standalone Redis"))?;
        let pubsub = within(deadline, "connecting", client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let mut slot = self.sink.lock().await;
        let mut names = vec![self.control_name()];
        names.extend(lock(&self.channels).keys().map(|c| self.pubsub_name(c)));
        for chunk in names.chunks(512) {
            within(
                self.options.command_timeout,
                "SUBSCRIBE",
                sink.subscribe(chunk),
            )
            .await?;
        }
        *slot = Some(sink);
        self.pubsub_up.store(true, Ordering::Relaxed);
        Ok(stream)
    }

    /// The pub/sub loop: delivers messages in order; on a lost connection,
    /// reconnects with backoff and catches up.
    async fn run_pubsub(self: Arc<Self>, first: redis::aio::PubSubStream) {
        let mut stream = Some(first);
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(s) = stream.take() {
                backoff = Duration::from_millis(50);
                self.consume(s).await;
                self.pubsub_up.store(false, Ordering::Relaxed);
                *self.sink.lock().await = None;
                tracing::warn!(node = %self.node, "lost the Redis pub/sub connection; reconnecting");
            }
            tokio::time::sleep(backoff).await;
            match self.open_pubsub().await {
                Ok(s) => {
                    tracing::info!(node = %self.node, "Redis pub/sub connection restored");
                    self.catch_up().await;
                    stream = Some(s);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Redis pub/sub reconnect failed");
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
    }

    /// The cluster's pushes: messages of shard channels in order; a lost
    /// node connection marks every positioned channel stale, and each reads
    /// back what it missed once its subscription is confirmed again (the
    /// cluster connection resubscribes by itself).
    async fn run_pushes(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
        while let Some(push) = rx.recv().await {
            match push.kind {
                PushKind::SMessage | PushKind::Message => {
                    let mut data = push.data.into_iter();
                    if let (Some(name), Some(Value::BulkString(payload))) =
                        (data.next(), data.next())
                    {
                        if let Some(name) = text(name) {
                            self.on_message(&name, payload.into()).await;
                        }
                    }
                }
                PushKind::Disconnection => {
                    tracing::warn!(node = %self.node, "lost a Redis Cluster connection; reconnecting and subscribing again");
                    self.pubsub_up.store(false, Ordering::Relaxed);
                    for state in lock(&self.channels).values_mut() {
                        state.stale = state.last.is_some();
                    }
                    self.resubscribe.notify_one();
                }
                PushKind::SSubscribe => {
                    let Some(name) = push.data.into_iter().next().and_then(text) else {
                        continue;
                    };
                    let Some(channel) = self.channel_of(&name) else {
                        continue;
                    };
                    let from = lock(&self.channels).get_mut(channel).and_then(|s| {
                        std::mem::take(&mut s.stale)
                            .then(|| s.last.clone())
                            .flatten()
                    });
                    if let (Some(from), Some(h)) = (from, self.handler()) {
                        self.fill(&*h, channel, &from).await;
                    }
                }
                _ => {}
            }
        }
    }

    /// Cluster: after a lost node connection, subscribes again to the
    /// control channel and every channel with local subscribers, retrying
    /// with backoff until every subscription is confirmed (Redis answers a
    /// repeated `SSUBSCRIBE` with a confirmation, so this is safe whatever
    /// the cluster connection already restored by itself).
    async fn resubscribe_cluster(self: Arc<Self>) {
        let Conn::Cluster(conn) = &self.conn else {
            return;
        };
        loop {
            self.resubscribe.notified().await;
            let mut backoff = Duration::from_millis(50);
            loop {
                tokio::time::sleep(backoff).await;
                let _slot = self.sink.lock().await;
                let mut names = vec![self.control_name()];
                names.extend(lock(&self.channels).keys().map(|c| self.pubsub_name(c)));
                let mut failed = false;
                for name in names {
                    let mut c = conn.clone();
                    let r = tokio::time::timeout(self.options.command_timeout, c.ssubscribe(&name))
                        .await;
                    if !matches!(r, Ok(Ok(()))) {
                        failed = true;
                        break;
                    }
                }
                if !failed {
                    self.pubsub_up.store(true, Ordering::Relaxed);
                    tracing::info!(node = %self.node, "Redis Cluster subscriptions restored");
                    break;
                }
                backoff = (backoff * 2).min(self.options.max_backoff);
            }
        }
    }

    /// Reads one connection's messages until it ends or stops answering.
    async fn consume(&self, mut stream: redis::aio::PubSubStream) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(m) => self.on_message(m.get_channel_name(), Bytes::copy_from_slice(m.get_payload_bytes())).await,
                    None => return,
                },
                _ = tick.tick() => {
                    let Some(mut sink) = self.sink.lock().await.clone() else { return };
                    let pong = tokio::time::timeout(self.options.command_timeout, sink.ping::<Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }

    async fn on_message(&self, name: &str, payload: Bytes) {
        if name == self.control_name() {
            self.on_control(&payload).await;
            return;
        }
        let Some(channel) = self.channel_of(name) else {
            return;
        };
        let Some(handler) = self.handler() else {
            return;
        };
        match codec::decode_message(payload) {
            Err(e) => tracing::warn!(channel, error = %e, "dropped a broker message"),
            Ok(ChannelMessage::Join(info)) => handler.on_join(channel, Arc::new(info)),
            Ok(ChannelMessage::Leave(info)) => handler.on_leave(channel, Arc::new(info)),
            Ok(ChannelMessage::Publication(p, _)) if p.offset == 0 => {
                handler.on_publication(channel, Arc::new(p));
            }
            Ok(ChannelMessage::Publication(p, epoch)) => {
                self.on_positioned(&*handler, channel, p, epoch).await;
            }
        }
    }

    /// A publication with a position: delivered if it is the next one,
    /// dropped if already delivered; a gap is filled from history first.
    async fn on_positioned(
        &self,
        handler: &dyn BrokerHandler,
        channel: &str,
        p: Publication,
        epoch: Arc<str>,
    ) {
        enum Step {
            Deliver,
            Skip,
            Lost,
            Fill(StreamPosition),
        }
        let step = {
            let mut channels = lock(&self.channels);
            let Some(state) = channels.get_mut(channel) else {
                return;
            };
            let here = StreamPosition {
                offset: p.offset,
                epoch: epoch.clone(),
            };
            match &state.last {
                None => {
                    state.last = Some(here);
                    Step::Deliver
                }
                Some(last) if last.epoch != epoch => {
                    state.last = Some(here);
                    Step::Lost
                }
                Some(last) if p.offset <= last.offset => Step::Skip,
                Some(last) if p.offset == last.offset + 1 => {
                    state.last = Some(here);
                    Step::Deliver
                }
                Some(last) => Step::Fill(last.clone()),
            }
        };
        match step {
            Step::Deliver => handler.on_publication(channel, Arc::new(p)),
            Step::Skip => {}
            Step::Lost => handler.on_lost(channel),
            Step::Fill(from) => {
                // Missed while the connection was down, or in flight when
                // the node caught up: read them, then deliver this one.
                self.fill(handler, channel, &from).await;
                let mut channels = lock(&self.channels);
                if let Some(state) = channels.get_mut(channel) {
                    if state
                        .last
                        .as_ref()
                        .is_some_and(|l| l.offset + 1 == p.offset && l.epoch == epoch)
                    {
                        state.last = Some(StreamPosition {
                            offset: p.offset,
                            epoch,
                        });
                        drop(channels);
                        handler.on_publication(channel, Arc::new(p));
                    }
                }
            }
        }
    }

    /// Delivers what history holds after `from` (in order, exactly), or
    /// tells the hub the channel's subscribers must recover.
    async fn fill(&self, handler: &dyn BrokerHandler, channel: &str, from: &StreamPosition) {
        let read = self
            .read_history(channel, Some(from), MAX_CATCH_UP + 1, false, 0)
            .await;
        let (top, pubs) = match read {
            Ok((top, _, pubs)) => (top, pubs),
            Err(e) => {
                // Its subscribers recover, each from its own position, and
                // the first of them sets the channel's position again.
                tracing::warn!(channel, error = %e, "cannot read missed publications");
                if let Some(state) = lock(&self.channels).get_mut(channel) {
                    if state.last.as_ref() == Some(from) {
                        state.last = None;
                    }
                }
                handler.on_lost(channel);
                return;
            }
        };
        let arcs: Vec<Arc<Publication>> = pubs.into_iter().map(Arc::new).collect();
        let exact = crate::hub::recovery_outcome(from, &top, &arcs, MAX_CATCH_UP);
        {
            let mut channels = lock(&self.channels);
            let Some(state) = channels.get_mut(channel) else {
                return;
            };
            if state.last.as_ref() != Some(from) {
                return; // someone else moved it on
            }
            state.last = Some(top.clone());
        }
        if exact {
            for p in arcs {
                handler.on_publication(channel, p);
            }
        } else {
            handler.on_lost(channel);
        }
    }

    /// After a reconnect: every history channel reads what it missed.
    async fn catch_up(&self) {
        let Some(handler) = self.handler() else {
            return;
        };
        let positioned: Vec<(Arc<str>, StreamPosition)> = lock(&self.channels)
            .iter()
            .filter_map(|(c, s)| s.last.clone().map(|l| (c.clone(), l)))
            .collect();
        for (channel, from) in positioned {
            self.fill(&*handler, &channel, &from).await;
        }
    }

    async fn on_control(&self, payload: &[u8]) {
        let msg: ControlMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "dropped a control message");
                return;
            }
        };
        match msg {
            ControlMessage::Command(c) => {
                if let Some(h) = self.handler() {
                    h.on_control(c);
                }
            }
            ControlMessage::Survey { id, from } => {
                let handler = self.handler();
                let channels = handler
                    .as_ref()
                    .map(|h| h.local_channels())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(c, n)| (c.to_string(), n))
                    .collect();
                let reply = ControlMessage::Channels {
                    id,
                    to: from,
                    from: self.node.to_string(),
                    channels,
                    node: handler.map(|h| h.local_stats()),
                };
                if let Ok(body) = serde_json::to_vec(&reply) {
                    // Not awaited here: the pub/sub loop keeps reading.
                    let (conn, name) = (self.conn.clone(), self.control_name());
                    let command = self.publish_command();
                    tokio::spawn(async move {
                        let mut conn = conn;
                        let _ = redis::cmd(command)
                            .arg(name)
                            .arg(body)
                            .query_async::<i64>(&mut conn)
                            .await;
                    });
                }
            }
            ControlMessage::Channels {
                id,
                to,
                from,
                channels,
                node,
            } => {
                if *to == *self.node {
                    if let Some(tx) = lock(&self.surveys).get(&id) {
                        let _ = tx.send((from, channels, node));
                    }
                }
            }
        }
    }

    /// Asks every live node (this one included) for its channels and
    /// stats; waits for all of them, at most [`SURVEY_TIMEOUT`].
    async fn survey(&self) -> Result<Vec<Answer>, BrokerError> {
        let mut waiting = self.live_nodes().await?;
        waiting.insert(self.node.to_string());
        let id = self.next_survey.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.surveys).insert(id, tx);
        let ask = ControlMessage::Survey {
            id,
            from: self.node.to_string(),
        };
        let body = serde_json::to_vec(&ask).map_err(unavailable)?;
        let sent = self.publish_raw(self.control_name(), body.into()).await;
        let mut answers = Vec::new();
        if sent.is_ok() {
            let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
            while !waiting.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(answer)) => {
                        if waiting.remove(&answer.0) {
                            answers.push(answer);
                        }
                    }
                    _ => break,
                }
            }
            if !waiting.is_empty() {
                tracing::debug!(missing = waiting.len(), "survey: some nodes did not answer");
            }
        }
        lock(&self.surveys).remove(&id);
        sent?;
        Ok(answers)
    }

    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let now = self.clock.now_ms();
            let (key, node) = (self.nodes_key(), self.node.clone());
            let r = self
                .run(|mut c| async move {
                    redis::pipe()
                        .cmd("ZADD")
                        .arg(&key)
                        .arg(now)
                        .arg(&*node)
                        .ignore()
                        .cmd("ZREMRANGEBYSCORE")
                        .arg(&key)
                        .arg("-inf")
                        .arg(now.saturating_sub(NODE_TTL_MS * 3))
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(NODE_TTL_MS * 3)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "node heartbeat failed");
            }
        }
    }

    async fn live_nodes(&self) -> Result<HashSet<String>, BrokerError> {
        let (key, since) = (
            self.nodes_key(),
            self.clock.now_ms().saturating_sub(NODE_TTL_MS),
        );
        let key = &key;
        let nodes: Vec<String> = self
            .read(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg(since)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(nodes.into_iter().collect())
    }
}

/// Reads the history script's answer.
fn parse_history(
    v: Value,
) -> Result<(StreamPosition, Option<u64>, Vec<Publication>), codec::DecodeError> {
    let bad = codec::DecodeError("unexpected history reply");
    let Value::Array(mut parts) = v else {
        return Err(bad);
    };
    if parts.len() != 4 {
        return Err(bad);
    }
    let entries = parts.pop().ok_or(bad.clone())?;
    let first = parts.pop().ok_or(bad.clone())?;
    let epoch = text(parts.pop().ok_or(bad.clone())?).ok_or(bad.clone())?;
    let top = text(parts.pop().ok_or(bad.clone())?)
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or(bad.clone())?;
    let first_offset = stream_entries(first)?.first().map(|(o, _)| *o);
    let publications = stream_entries(entries)?
        .into_iter()
        .map(|(offset, body)| codec::decode_publication(body, offset))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        StreamPosition {
            offset: top,
            epoch: epoch.into(),
        },
        first_offset,
        publications,
    ))
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `[[id, [field, value, ...]], ...]` → `[(offset, body)]`.
fn stream_entries(v: Value) -> Result<Vec<(u64, Bytes)>, codec::DecodeError> {
    let bad = codec::DecodeError("unexpected stream entry");
    let Value::Array(items) = v else {
        return Err(bad);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            return Err(bad);
        };
        if pair.len() != 2 {
            return Err(bad);
        }
        let Value::Array(fields) = pair.pop().ok_or(bad.clone())? else {
            return Err(bad);
        };
        let id = text(pair.pop().ok_or(bad.clone())?).ok_or(bad.clone())?;
        let offset = id
            .split_once('-')
            .and_then(|(o, _)| o.parse::<u64>().ok())
            .ok_or(bad.clone())?;
        let mut body = None;
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if matches!(&k, Value::BulkString(b) if b == b"d") {
                if let Value::BulkString(b) = v {
                    body = Some(Bytes::from(b));
                }
            }
        }
        out.push((offset, body.ok_or(bad.clone())?));
    }
    Ok(out)
}

/// The history TTL of a stream key: the configured one, or (none
/// configured) as long as idle streams are kept.
fn stream_ttl(limits: &HistoryLimits) -> u64 {
    if limits.ttl_ms > 0 {
        limits.ttl_ms
    } else {
        STREAM_IDLE_MS
    }
}

impl Broker for RedisBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        mut publication: Publication,
        limits: Option<HistoryLimits>,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            publication.time_ms = inner.clock.now_ms();
            let body = codec::encode_publication(&publication);
            let Some(limits) = limits else {
                let msg = codec::publication_message(&body);
                inner.publish_raw(inner.pubsub_name(channel), msg).await?;
                return Ok(None);
            };
            let (stream, meta) = (inner.key(channel, "s"), inner.key(channel, "m"));
            let (name, epoch) = (inner.pubsub_name(channel), new_epoch());
            let script = &inner.publish;
            let command = inner.publish_command().to_ascii_lowercase();
            let ttl = stream_ttl(&limits);
            let (offset, epoch): (u64, String) = inner
                .run(|mut c| async move {
                    script
                        .key(stream)
                        .key(meta)
                        .arg(&body[..])
                        .arg(limits.size.max(1))
                        .arg(ttl)
                        .arg(STREAM_IDLE_MS.max(ttl))
                        .arg(&*epoch)
                        .arg(name)
                        .arg(command)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(Some(StreamPosition {
                offset,
                epoch: epoch.into(),
            }))
        })
    }

    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let inner = &self.inner;
        Box::pin(inner.publish_raw(
            inner.pubsub_name(channel),
            codec::presence_message(true, &info),
        ))
    }

    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let inner = &self.inner;
        Box::pin(inner.publish_raw(
            inner.pubsub_name(channel),
            codec::presence_message(false, &info),
        ))
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut slot = inner.sink.lock().await;
            let first = {
                let mut channels = lock(&inner.channels);
                let state = channels.entry(channel.into()).or_default();
                state.refs += 1;
                state.refs == 1
            };
            if !first {
                return Ok(());
            }
            let name = inner.pubsub_name(channel);
            let result = match (slot.as_mut(), &inner.conn) {
                (_, Conn::Cluster(c)) => {
                    inner.round_trips.fetch_add(1, Ordering::Relaxed);
                    let mut c = c.clone();
                    within(
                        inner.options.command_timeout,
                        "SSUBSCRIBE",
                        c.ssubscribe(&name),
                    )
                    .await
                }
                (None, _) => Err(unavailable("no pub/sub connection to Redis")),
                (Some(sink), _) => {
                    inner.round_trips.fetch_add(1, Ordering::Relaxed);
                    within(
                        inner.options.command_timeout,
                        "SUBSCRIBE",
                        sink.subscribe(&name),
                    )
                    .await
                }
            };
            if result.is_err() {
                let mut channels = lock(&inner.channels);
                if let Some(state) = channels.get_mut(channel) {
                    state.refs -= 1;
                    if state.refs == 0 {
                        channels.remove(channel);
                    }
                }
            }
            result
        })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut slot = inner.sink.lock().await;
            let last = {
                let mut channels = lock(&inner.channels);
                match channels.get_mut(channel) {
                    None => return Ok(()),
                    Some(state) => {
                        state.refs = state.refs.saturating_sub(1);
                        if state.refs == 0 {
                            channels.remove(channel);
                            true
                        } else {
                            false
                        }
                    }
                }
            };
            if !last {
                return Ok(());
            }
            if let Conn::Cluster(c) = &inner.conn {
                inner.round_trips.fetch_add(1, Ordering::Relaxed);
                let mut c = c.clone();
                let name = inner.pubsub_name(channel);
                let limit = inner.options.command_timeout;
                return within(limit, "SUNSUBSCRIBE", c.sunsubscribe(&name)).await;
            }
            // Without a connection there is nothing to undo: the next one
            // subscribes only to the channels still needed.
            if let Some(sink) = slot.as_mut() {
                inner.round_trips.fetch_add(1, Ordering::Relaxed);
                let name = inner.pubsub_name(channel);
                let limit = inner.options.command_timeout;
                within(limit, "UNSUBSCRIBE", sink.unsubscribe(&name)).await?;
            }
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        limits: HistoryLimits,
    ) -> BoxFuture<'a, Result<HistoryResult, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (position, first, mut publications) = inner
                .read_history(
                    channel,
                    query.since.as_ref(),
                    query.limit,
                    query.reverse,
                    STREAM_IDLE_MS.max(stream_ttl(&limits)),
                )
                .await?;
            // A subscribed channel's first known position: what arrives
            // later through pub/sub is compared with it.
            if let Some(state) = lock(&inner.channels).get_mut(channel) {
                if state.last.is_none() {
                    state.last = Some(position.clone());
                }
            }
            let mut first_offset = first;
            if limits.ttl_ms > 0 {
                // The stream key expires history_ttl after the last
                // publication; older entries of a live stream are dropped
                // here, as the in-process broker drops them.
                let now = inner.clock.now_ms();
                let fresh = |p: &Publication| now.saturating_sub(p.time_ms) < limits.ttl_ms;
                let before = publications.len();
                publications.retain(fresh);
                if publications.len() < before {
                    // The oldest held is known only when reading from the
                    // start; otherwise it is unknown.
                    let from_start = query.since.is_none() && !query.reverse;
                    first_offset = publications
                        .first()
                        .map(|p| p.offset)
                        .filter(|_| from_start);
                }
            }
            Ok(HistoryResult {
                publications: publications.into_iter().map(Arc::new).collect(),
                position,
                first_offset,
            })
        })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let stream = self.inner.key(channel, "s");
            self.inner
                .run(|mut c| async move {
                    redis::cmd("DEL")
                        .arg(stream)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await
                .map(drop)
        })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.refresh_presence(vec![(channel.into(), info)], ttl_ms)
    }

    fn refresh_presence<'a>(
        &'a self,
        entries: Vec<(Arc<str>, Arc<ClientInfo>)>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let expires = inner.clock.now_ms() + ttl_ms;
            // Batches of 256, pipelined; on a cluster, one channel's
            // entries per batch (a pipeline cannot cross slots).
            let mut batches: Vec<Vec<(Arc<str>, Arc<ClientInfo>)>> = Vec::new();
            if inner.options.cluster {
                let mut by_channel: HashMap<Arc<str>, Vec<_>> = HashMap::new();
                for e in entries {
                    by_channel.entry(e.0.clone()).or_default().push(e);
                }
                for list in by_channel.into_values() {
                    batches.extend(list.chunks(256).map(<[_]>::to_vec));
                }
            } else {
                batches.extend(entries.chunks(256).map(<[_]>::to_vec));
            }
            let script = &inner.presence_add;
            let send = |batch: Vec<(Arc<str>, Arc<ClientInfo>)>| {
                let mut pipe = redis::pipe();
                for (channel, info) in &batch {
                    pipe.cmd("EVALSHA")
                        .arg(script.get_hash())
                        .arg(2)
                        .arg(inner.key(channel, "p"))
                        .arg(inner.key(channel, "z"))
                        .arg(&*info.client.text())
                        .arg(&codec::encode_info(info)[..])
                        .arg(expires)
                        .arg(ttl_ms)
                        .ignore();
                }
                inner.run(|mut c| async move {
                    match pipe.query_async::<()>(&mut c).await {
                        Err(e)
                            if e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                        {
                            script.load_async(&mut c).await?;
                            pipe.query_async::<()>(&mut c).await
                        }
                        r => r,
                    }
                })
            };
            let mut results =
                futures_util::stream::iter(batches.into_iter().map(send)).buffer_unordered(8);
            while let Some(r) = results.next().await {
                r?;
            }
            Ok(())
        })
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let client = client.text();
            let client = &*client;
            let inner = &self.inner;
            let (h, z) = (inner.key(channel, "p"), inner.key(channel, "z"));
            inner
                .run(|mut c| async move {
                    redis::pipe()
                        .cmd("HDEL")
                        .arg(h)
                        .arg(client)
                        .ignore()
                        .cmd("ZREM")
                        .arg(z)
                        .arg(client)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
        })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<ClientInfo>>, BrokerError>> {
        Box::pin(async move {
            let mut members = self.members(channel).await?;
            members.truncate(limit);
            Ok(members)
        })
    }

    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>> {
        Box::pin(async move {
            let members = self.members(channel).await?;
            let users: HashSet<&str> = members.iter().map(|m| &*m.user).collect();
            Ok((members.len(), users.len()))
        })
    }

    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let body =
                serde_json::to_vec(&ControlMessage::Command(control)).map_err(unavailable)?;
            let inner = &self.inner;
            inner.publish_raw(inner.control_name(), body.into()).await
        })
    }

    fn channels(&self) -> BoxFuture<'_, Result<ChannelCounts, BrokerError>> {
        Box::pin(async move {
            let mut sums: HashMap<String, usize> = HashMap::new();
            for (_, channels, _) in self.inner.survey().await? {
                for (c, n) in channels {
                    *sums.entry(c).or_default() += n;
                }
            }
            Ok(sums.into_iter().map(|(c, n)| (c.into(), n)).collect())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStats>, BrokerError>> {
        Box::pin(async move {
            let mut nodes: Vec<NodeStats> = self
                .inner
                .survey()
                .await?
                .into_iter()
                .filter_map(|(_, _, node)| node)
                .collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name).then(a.uid.cmp(&b.uid)));
            Ok(nodes)
        })
    }

    fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    fn healthy(&self) -> bool {
        self.inner.pubsub_up.load(Ordering::Relaxed)
            && self.inner.commands_ok.load(Ordering::Relaxed)
    }
}

impl RedisBroker {
    async fn members(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, BrokerError> {
        let inner = &self.inner;
        let (h, z, now) = (
            inner.key(channel, "p"),
            inner.key(channel, "z"),
            inner.clock.now_ms(),
        );
        let (script, h, z) = (&inner.presence, &h, &z);
        let pairs: Vec<(String, Vec<u8>)> = inner
            .read(|mut c| async move { script.key(h).key(z).arg(now).invoke_async(&mut c).await })
            .await?;
        let mut out = Vec::with_capacity(pairs.len());
        for (_, info) in pairs {
            match codec::decode_info(info.into()) {
                Ok(i) => out.push(Arc::new(i)),
                Err(e) => tracing::warn!(channel, error = %e, "dropped a presence entry"),
            }
        }
        out.sort_by_key(|i| i.client);
        Ok(out)
    }
}
