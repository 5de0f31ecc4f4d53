//! Brokers: what the hub calls for fan-out across nodes, history and
//! presence. [`local::LocalBroker`] keeps everything in this process; a
//! broker shared by several nodes (Redis) implements the same trait, and
//! neither the hub nor the fronts know which one they have.

pub mod codec;
pub mod local;
pub mod redis;

use crate::hub::{ClientId, ClientInfo, HistoryLimits, Publication, StreamPosition};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

/// A boxed future, as the broker's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a broker call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The broker cannot be reached; the caller should fail fast.
    Unavailable(String),
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerError::Unavailable(why) => write!(f, "broker unavailable: {why}"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// What a history read asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only publications after this position. A position in another epoch
    /// reads nothing (the caller compares epochs).
    pub since: Option<StreamPosition>,
    /// At most this many.
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

/// What a node says of itself (the API's `info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStats {
    /// The node's id.
    pub uid: String,
    /// Its name (`node_name`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Connected clients.
    pub num_clients: usize,
    /// Distinct users.
    pub num_users: usize,
    /// Subscriptions.
    pub num_subs: usize,
    /// Channels with subscribers.
    pub num_channels: usize,
    /// Seconds since it started.
    pub uptime: u64,
}

/// Channels and their subscriber counts.
pub type ChannelCounts = Vec<(Arc<str>, usize)>;

/// A history read's answer.
#[derive(Debug, Clone)]
pub struct HistoryResult {
    /// The publications read.
    pub publications: Vec<Arc<Publication>>,
    /// The stream's current position.
    pub position: StreamPosition,
    /// The offset of the oldest publication still held, if any.
    pub first_offset: Option<u64>,
}

/// A command for the connections of a user, wherever they are connected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Control {
    /// Disconnect the user's connections (or only `client`), except those
    /// in `whitelist`.
    Disconnect {
        /// The user.
        user: String,
        /// Only this connection.
        client: Option<String>,
        /// Connections to leave alone.
        whitelist: Vec<String>,
        /// Close code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// Unsubscribe the user's connections (or only `client`) from a channel.
    Unsubscribe {
        /// The user.
        user: String,
        /// Only this connection.
        client: Option<String>,
        /// The channel.
        channel: String,
    },
}

/// Where a broker delivers what was published on any node: the hub.
pub trait BrokerHandler: Send + Sync {
    /// A publication for `channel` (in offset order per channel).
    fn on_publication(&self, channel: &str, publication: Arc<Publication>);
    /// A client joined `channel`.
    fn on_join(&self, channel: &str, info: Arc<ClientInfo>);
    /// A client left `channel`.
    fn on_leave(&self, channel: &str, info: Arc<ClientInfo>);
    /// Publications of `channel` may have been missed here (the broker was
    /// unreachable for longer than it could make up, or the stream was lost
    /// and has a new epoch): its subscribers must recover from history.
    fn on_lost(&self, channel: &str);
    /// A command for some connections of this node.
    fn on_control(&self, control: Control);
    /// This node's channels and their subscriber counts.
    fn local_channels(&self) -> Vec<(Arc<str>, usize)>;
    /// What this node says of itself.
    fn local_stats(&self) -> NodeStats;
}

/// Fan-out, history and presence for the hub.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Where deliveries go; set once by the hub.
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>);

    /// Appends to history (kept as `limits` say; `None`: the channel has no
    /// history and its publications carry no position) and delivers to
    /// every node with subscribers. Returns the publication's position once
    /// it is stored.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        limits: Option<HistoryLimits>,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, BrokerError>>;

    /// Announces a join to every node.
    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Announces a leave to every node.
    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// This node has subscribers on `channel` (the first one arrived).
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// This node has no subscriber on `channel` any more.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Reads history (creating the stream, and so its epoch, if needed).
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        limits: HistoryLimits,
    ) -> BoxFuture<'a, Result<HistoryResult, BrokerError>>;

    /// Drops a channel's history; its offset and epoch stay.
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Adds or refreshes a presence entry for `ttl_ms`.
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Removes a presence entry.
    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Presence members (at most `limit`).
    fn presence<'a>(
        &'a self,
        channel: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<ClientInfo>>, BrokerError>>;

    /// Presence counts: (clients, distinct users).
    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>>;

    /// Refreshes many presence entries for `ttl_ms` (a node's heartbeat).
    fn refresh_presence<'a>(
        &'a self,
        entries: Vec<(Arc<str>, Arc<ClientInfo>)>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            for (channel, info) in entries {
                self.add_presence(&channel, info, ttl_ms).await?;
            }
            Ok(())
        })
    }

    /// Sends a command to every node (this one included).
    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// The channels with subscribers on any node, with their subscriber
    /// counts summed over the nodes.
    fn channels(&self) -> BoxFuture<'_, Result<ChannelCounts, BrokerError>>;

    /// What every live node says of itself (this one included).
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStats>, BrokerError>>;

    /// Round trips to a shared broker so far (0 for the in-process one).
    fn round_trips(&self) -> u64 {
        0
    }

    /// Whether the broker works now (for readiness checks).
    fn healthy(&self) -> bool {
        true
    }

    /// Drops idle state (expired presence, idle streams); called
    /// periodically.
    fn upkeep(&self) {}

    /// The history held in this process, if it is held here:
    /// (publications, payload bytes).
    fn held(&self) -> Option<(usize, usize)> {
        None
    }
}
