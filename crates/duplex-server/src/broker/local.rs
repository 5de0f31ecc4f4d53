//! The in-process broker: history and presence in memory, fan-out to this
//! node only. Time comes from a [`Clock`], so tests run on virtual time.

use super::{
    BoxFuture, Broker, BrokerError, BrokerHandler, ChannelCounts, Control, HistoryQuery,
    HistoryResult, NodeStats,
};
use crate::hub::history::{HistoryLimits, Stream};
use crate::hub::presence::Presence;
use crate::hub::{new_epoch, ClientId, ClientInfo, Clock, Publication, StreamPosition};
use duplex_proto::MemoryBudget;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock, Weak};

const SHARDS: usize = 16;

/// History streams idle (no publication, nothing held) this long are
/// dropped with their epoch: 24 hours. A client that comes back later gets
/// `recovered: false` (a new epoch), never a silent gap.
pub const STREAM_IDLE_MS: u64 = 24 * 3600 * 1000;

/// The in-process broker.
pub struct LocalBroker {
    streams: Vec<Mutex<HashMap<String, Stream>>>,
    presence: Vec<Mutex<HashMap<String, Presence>>>,
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    clock: Arc<dyn Clock>,
    hasher: RandomState,
    /// The server's memory budget, which history is counted in.
    budget: OnceLock<Arc<MemoryBudget>>,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").finish_non_exhaustive()
    }
}

impl LocalBroker {
    /// A broker on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        LocalBroker {
            streams: (0..SHARDS).map(|_| Mutex::default()).collect(),
            presence: (0..SHARDS).map(|_| Mutex::default()).collect(),
            handler: OnceLock::new(),
            clock,
            hasher: RandomState::new(),
            budget: OnceLock::new(),
        }
    }

    /// Counts the history kept from now on in `budget`: a publication it
    /// has no room for is refused ([`BrokerError::Unavailable`]: error 100
    /// to clients, 503 from the API) before anything is stored or
    /// delivered, so nothing acknowledged is lost. Set once, at start.
    pub fn set_memory_budget(&self, budget: Arc<MemoryBudget>) {
        let _ = self.budget.set(budget);
    }

    /// Gives back what `stream` no longer holds.
    fn settle(&self, stream: &mut Stream) {
        let held = stream.held();
        if stream.charged > held {
            if let Some(b) = self.budget.get() {
                b.release(stream.charged - held);
            }
            stream.charged = held;
        }
    }

    fn shard(&self, channel: &str) -> usize {
        (self.hasher.hash_one(channel) as usize) % SHARDS
    }

    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get().and_then(Weak::upgrade)
    }

    /// Drops idle, empty streams and expired presence entries; called
    /// periodically by the hub. Returns how many streams were dropped.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let mut dropped = 0;
        for s in &self.streams {
            let mut m = lock(s);
            let before = m.len();
            m.retain(|_, st| {
                !(st.is_empty() && now.saturating_sub(st.touched_ms) >= STREAM_IDLE_MS)
            });
            dropped += before - m.len();
        }
        for p in &self.presence {
            let mut m = lock(p);
            for set in m.values_mut() {
                set.expire(now);
            }
            m.retain(|_, set| !set.is_empty());
        }
        dropped
    }

    /// Publications held across all channels, and their payload bytes.
    pub fn history_size(&self) -> (usize, usize) {
        let mut n = (0, 0);
        for s in &self.streams {
            for st in lock(s).values() {
                n.0 += st.len();
                n.1 += st.bytes();
            }
        }
        n
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker for LocalBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        limits: Option<HistoryLimits>,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, BrokerError>> {
        Box::pin(async move {
            let handler = self.handler();
            let Some(limits) = limits else {
                if let Some(h) = handler {
                    h.on_publication(channel, Arc::new(publication));
                }
                return Ok(None);
            };
            let now = self.clock.now_ms();
            // The stream's lock is held through delivery, so subscribers see
            // a channel's publications in offset order.
            let mut streams = lock(&self.streams[self.shard(channel)]);
            let stream = streams
                .entry(channel.to_string())
                .or_insert_with(|| Stream::new(new_epoch(), now));
            if let Some(b) = self.budget.get() {
                let need = Stream::cost_of(&publication);
                if !b.try_reserve(need) {
                    return Err(BrokerError::Unavailable(
                        "memory budget spent: no room to keep the publication in history".into(),
                    ));
                }
                stream.charged += need;
            }
            let stored = stream.append(publication, now, &limits);
            self.settle(stream);
            let pos = stream.position();
            if let Some(h) = handler {
                h.on_publication(channel, stored);
            }
            Ok(Some(pos))
        })
    }

    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(h) = self.handler() {
                h.on_join(channel, info);
            }
            Ok(())
        })
    }

    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(h) = self.handler() {
                h.on_leave(channel, info);
            }
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        limits: HistoryLimits,
    ) -> BoxFuture<'a, Result<HistoryResult, BrokerError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            let mut streams = lock(&self.streams[self.shard(channel)]);
            let stream = streams
                .entry(channel.to_string())
                .or_insert_with(|| Stream::new(new_epoch(), now));
            stream.expire(now, limits.ttl_ms);
            self.settle(stream);
            let position = stream.position();
            let publications = match &query.since {
                Some(since) if !since.epoch.is_empty() && since.epoch != position.epoch => {
                    Vec::new()
                }
                since => stream.read(since.as_ref().map(|s| s.offset), query.limit, query.reverse),
            };
            Ok(HistoryResult {
                publications,
                first_offset: stream.first_offset(),
                position,
            })
        })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(s) = lock(&self.streams[self.shard(channel)]).get_mut(channel) {
                s.clear();
                self.settle(s);
            }
            Ok(())
        })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: Arc<ClientInfo>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            lock(&self.presence[self.shard(channel)])
                .entry(channel.to_string())
                .or_default()
                .add(info, now, ttl_ms);
            Ok(())
        })
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut m = lock(&self.presence[self.shard(channel)]);
            if let Some(set) = m.get_mut(channel) {
                set.remove(client);
                if set.is_empty() {
                    m.remove(channel);
                }
            }
            Ok(())
        })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Arc<ClientInfo>>, BrokerError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            Ok(lock(&self.presence[self.shard(channel)])
                .get(channel)
                .map(|s| s.list(now, limit))
                .unwrap_or_default())
        })
    }

    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            Ok(lock(&self.presence[self.shard(channel)])
                .get(channel)
                .map(|s| s.stats(now))
                .unwrap_or((0, 0)))
        })
    }

    fn control(&self, control: Control) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(h) = self.handler() {
                h.on_control(control);
            }
            Ok(())
        })
    }

    fn channels(&self) -> BoxFuture<'_, Result<ChannelCounts, BrokerError>> {
        Box::pin(async move {
            Ok(self
                .handler()
                .map(|h| h.local_channels())
                .unwrap_or_default())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeStats>, BrokerError>> {
        Box::pin(async move {
            Ok(self
                .handler()
                .map(|h| vec![h.local_stats()])
                .unwrap_or_default())
        })
    }

    fn upkeep(&self) {
        self.sweep();
    }

    fn held(&self) -> Option<(usize, usize)> {
        Some(self.history_size())
    }
}
