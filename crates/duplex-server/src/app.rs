//! What every connection of a running server shares: the hub and its
//! broker, the fronts, authentication and metrics.

use crate::auth::Auth;
use crate::broker::local::LocalBroker;
use crate::broker::redis::{redact, RedisBroker};
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::front::centrifuge;
use crate::hub::{Hub, SystemClock};
use crate::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The application state of a server.
#[derive(Debug)]
pub struct App {
    /// The configuration.
    pub config: ServerConfig,
    /// `config.ws` behind one `Arc`, handed to every connection.
    pub ws: Arc<duplex::Config>,
    /// The same with the Centrifugo front's message limit, for its sockets.
    pub ws_centrifuge: Arc<duplex::Config>,
    /// The hub.
    pub hub: Arc<Hub>,
    /// The broker: in-process, or Redis shared with other nodes.
    pub broker: Arc<dyn Broker>,
    /// The Centrifugo front.
    pub centrifuge: centrifuge::Front,
    /// The EventSource front.
    pub sse: Arc<crate::front::sse::Front>,
    /// Keys.
    pub auth: Arc<Auth>,
    /// The memory budget every connection shares (`config.memory_budget`).
    pub memory_budget: Option<Arc<duplex::MemoryBudget>>,
    registry: Registry,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the broker drops idle streams and expired presence.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl App {
    /// Builds the state; fails on unusable keys, or a configured Redis
    /// that cannot be reached.
    pub async fn new(config: ServerConfig) -> Result<Arc<App>, crate::Error> {
        let metrics = Arc::new(Metrics::default());
        let clock = Arc::new(SystemClock);
        let memory_budget = config
            .memory_budget
            .map(|n| Arc::new(duplex::MemoryBudget::new(n)));
        let broker: Arc<dyn Broker> = match &config.broker {
            None => {
                let local = LocalBroker::new(clock.clone());
                if let Some(b) = &memory_budget {
                    local.set_memory_budget(b.clone());
                }
                Arc::new(local)
            }
            Some(o) => {
                let b = RedisBroker::connect(o.clone(), clock.clone())
                    .await
                    .map_err(crate::Error::Broker)?;
                tracing::info!(
                    url = %redact(&o.url),
                    prefix = %o.prefix,
                    node = %b.node(),
                    "broker: Redis"
                );
                Arc::new(b)
            }
        };
        let hub = Hub::new(config.hub.clone(), broker.clone(), clock, metrics.clone());
        hub.start_writer();
        let node_uid = crate::hub::ClientId::random().to_string();
        hub.set_node(&node_uid, &config.node_name);
        let auth = Arc::new(Auth::new(config.auth.clone())?);
        let registry = metrics.registry();
        let mut ws = config.ws.clone();
        if let Some(b) = &memory_budget {
            ws = ws.with_memory_budget(b.clone());
            hub.set_memory_budget(b.clone());
        }
        let app = Arc::new(App {
            ws_centrifuge: Arc::new(
                ws.clone()
                    .with_max_message_size(config.centrifuge.max_message_size),
            ),
            ws: Arc::new(ws),
            centrifuge: centrifuge::Front::new(
                hub.clone(),
                auth.clone(),
                config.centrifuge.clone(),
            ),
            sse: Arc::new(crate::front::sse::Front::new(
                hub.clone(),
                auth.clone(),
                config.sse.clone(),
            )),
            config,
            hub,
            broker,
            auth,
            memory_budget,
            registry,
        });
        Ok(app)
    }

    /// The development-mode ticker: a publication a second on
    /// [`TICKER_CHANNEL`](crate::config::TICKER_CHANNEL) while someone
    /// follows it on this node, and for a minute after (so a page whose
    /// stream dropped finds what it missed when it comes back).
    fn spawn_ticker(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        use crate::config::TICKER_CHANNEL;
        if !self.config.demo_ticker {
            return None;
        }
        let hub = self.hub.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            let (mut n, mut followed_at) = (0u64, None::<Instant>);
            loop {
                every.tick().await;
                if hub.has_subscribers(TICKER_CHANNEL) {
                    followed_at = Some(Instant::now());
                }
                if !followed_at.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                    continue;
                }
                n += 1;
                let data = format!("{{\"tick\":{n},\"time_ms\":{}}}", hub.now_ms());
                if let Err(e) = hub.publish(TICKER_CHANNEL, data.into(), None).await {
                    tracing::debug!(error = %e, "ticker publication failed");
                }
            }
        }))
    }

    /// Runs the periodic upkeep until the returned handle is aborted: the
    /// broker's sweep, and this node's presence heartbeat (every third of
    /// the presence TTL).
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (broker, hub) = (self.broker.clone(), self.hub.clone());
        let beat = (hub.config().presence_ttl / 3).max(Duration::from_millis(100));
        // The ticker ends with the upkeep.
        let ticker = self.spawn_ticker().map(AbortOnDrop);
        tokio::spawn(async move {
            let _ticker = ticker;
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            let mut presence = tokio::time::interval(beat);
            presence.tick().await;
            loop {
                tokio::select! {
                    _ = sweep.tick() => broker.upkeep(),
                    _ = presence.tick() => {
                        if let Err(e) = hub.refresh_all_presence().await {
                            tracing::warn!(error = %e, "presence heartbeat failed");
                        }
                    }
                }
            }
        })
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let m = self.hub.metrics();
        m.broker_round_trips.set(self.broker.round_trips() as i64);
        m.broker_up.set(i64::from(self.broker.healthy()));
        if let Some(b) = &self.memory_budget {
            m.memory_budget.set(b.limit() as i64);
            m.memory_budget_used.set(b.used() as i64);
            m.memory_budget_peak.set(b.peak() as i64);
            let counted = m.memory_budget_refusals.get();
            m.memory_budget_refusals
                .inc_by(b.refusals().saturating_sub(counted));
        }
        if let Some((n, bytes)) = self.broker.held() {
            m.history_publications.set(n as i64);
            m.history_bytes.set(bytes as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
