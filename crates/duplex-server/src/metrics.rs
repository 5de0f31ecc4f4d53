//! Prometheus metrics of the server, served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label naming a front (`echo`, `centrifuge`, `api`...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontLabel {
    /// The front.
    pub front: &'static str,
}

/// A label naming the HTTP version a WebSocket was opened over.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// `1.1` or `2`.
    pub http: &'static str,
}

/// A label naming a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

/// A label naming where a publication came from (`client` or `api`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source.
    pub source: &'static str,
}

/// A label naming an API or protocol method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The method.
    pub method: &'static str,
}

/// Every metric of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections, by front.
    pub connections: Family<FrontLabel, Gauge>,
    /// Connections accepted since start, by front.
    pub connections_total: Family<FrontLabel, Counter>,
    /// Client subscriptions held on this node.
    pub subscriptions: Gauge,
    /// Channels with at least one subscriber on this node.
    pub channels: Gauge,
    /// Publications accepted, by source.
    pub publications: Family<SourceLabel, Counter>,
    /// Events queued to connections (one per receiving connection).
    pub deliveries: Counter,
    /// Bursts of a channel's publications the hub wrote straight into an
    /// idle subscriber's socket (one per socket and burst).
    pub direct_writes: Counter,
    /// Bursts meant for a direct write that went, whole or in part, to the
    /// connection's mailbox instead: its socket was full, or it woke
    /// meanwhile.
    pub direct_handbacks: Counter,
    /// Events serialised and framed, by front (once per event and front,
    /// however many receivers).
    pub encodings: Family<FrontLabel, Counter>,
    /// Bytes of WebSocket messages received, by front.
    pub bytes_in: Family<FrontLabel, Counter>,
    /// Bytes of WebSocket messages sent, by front (payloads).
    pub bytes_out: Family<FrontLabel, Counter>,
    /// Connections disconnected because their mailbox overflowed.
    pub slow_disconnects: Family<FrontLabel, Counter>,
    /// Failed authentications, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Refused handshakes and HTTP requests, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Commands received on the Centrifugo front, by method.
    pub commands: Family<MethodLabel, Counter>,
    /// HTTP API calls, by method.
    pub api_calls: Family<MethodLabel, Counter>,
    /// Publications held in history on this node (set when scraped).
    pub history_publications: Gauge,
    /// Payload bytes held in history on this node (set when scraped).
    pub history_bytes: Gauge,
    /// WebSockets opened, by the HTTP version of their handshake.
    pub websockets: Family<HttpLabel, Counter>,
    /// Round trips to a shared broker (Redis) so far (set when scraped).
    pub broker_round_trips: Gauge,
    /// 1 while the broker works, 0 while it cannot be reached (set when
    /// scraped; `/health` says the same).
    pub broker_up: Gauge,
    /// The server-wide memory budget, bytes (set when scraped).
    pub memory_budget: Gauge,
    /// Bytes reserved from it now (set when scraped).
    pub memory_budget_used: Gauge,
    /// The most bytes ever reserved from it at once (set when scraped).
    pub memory_budget_peak: Gauge,
    /// Reservations it refused: each closed a connection with 1009 or 1013
    /// (brought up to date when scraped).
    pub memory_budget_refusals: Counter,
}

impl Metrics {
    /// Registers every metric under the `duplex_` prefix.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("duplex");
        r.register(
            "websockets_opened",
            "WebSockets opened, by the HTTP version of their handshake (1.1: Upgrade; 2: extended CONNECT, RFC 8441)",
            self.websockets.clone(),
        );
        r.register(
            "broker_round_trips",
            "Round trips to the shared broker (Redis) made by this node",
            self.broker_round_trips.clone(),
        );
        r.register(
            "broker_up",
            "1 while the broker works, 0 while it cannot be reached",
            self.broker_up.clone(),
        );
        r.register(
            "connections",
            "Open connections, by front",
            self.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "Connections accepted, by front",
            self.connections_total.clone(),
        );
        r.register(
            "subscriptions",
            "Client subscriptions on this node",
            self.subscriptions.clone(),
        );
        r.register(
            "channels",
            "Channels with subscribers on this node",
            self.channels.clone(),
        );
        r.register(
            "publications",
            "Publications accepted, by source",
            self.publications.clone(),
        );
        r.register(
            "deliveries",
            "Events queued to connections",
            self.deliveries.clone(),
        );
        r.register(
            "direct_writes",
            "Bursts of publications written straight into idle subscribers' sockets",
            self.direct_writes.clone(),
        );
        r.register(
            "direct_handbacks",
            "Bursts meant for a direct write that went, whole or in part, to the connection's mailbox (a full socket, or the connection woke)",
            self.direct_handbacks.clone(),
        );
        r.register(
            "encodings",
            "Events serialised and framed, by front",
            self.encodings.clone(),
        );
        r.register(
            "received_bytes",
            "Message bytes received, by front",
            self.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Message bytes sent, by front",
            self.bytes_out.clone(),
        );
        r.register(
            "slow_disconnects",
            "Connections closed for a full mailbox, by front",
            self.slow_disconnects.clone(),
        );
        r.register(
            "auth_failures",
            "Failed authentications, by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "refused",
            "Refused handshakes and requests, by reason",
            self.refused.clone(),
        );
        r.register(
            "commands",
            "Client protocol commands, by method",
            self.commands.clone(),
        );
        r.register(
            "api_calls",
            "HTTP API calls, by method",
            self.api_calls.clone(),
        );
        r.register(
            "history_publications",
            "Publications held in history",
            self.history_publications.clone(),
        );
        r.register(
            "history_bytes",
            "Payload bytes held in history",
            self.history_bytes.clone(),
        );
        r.register(
            "memory_budget_bytes",
            "Server-wide memory budget for messages in flight (being received, inflated or queued to send)",
            self.memory_budget.clone(),
        );
        r.register(
            "memory_budget_used_bytes",
            "Bytes reserved from the memory budget now",
            self.memory_budget_used.clone(),
        );
        r.register(
            "memory_budget_peak_bytes",
            "Most bytes reserved from the memory budget at once",
            self.memory_budget_peak.clone(),
        );
        r.register(
            "memory_budget_refusals",
            "Reservations the memory budget refused (each closed a connection with 1009 or 1013)",
            self.memory_budget_refusals.clone(),
        );
        r
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts an authentication failure.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
