//! Server configuration. Every default is written once, here (and in the
//! settings types of the modules it gathers); `duplex serve --help` and
//! `docs/defaults.md` list them. The CLI builds it from defaults, then a
//! TOML file (`--config`), then `DUPLEX_*` variables, then flags.

use crate::auth::{AuthConfig, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_SIZE};
use crate::front::centrifuge::CentrifugeConfig;
use crate::hub::namespace::ChannelOptions;
use crate::hub::HubConfig;
use duplex::tls::rustls;
use duplex::Policy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How `duplex serve` runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on. Default: 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Protocol limits for every WebSocket connection. Default: the
    /// library's, with permessage-deflate negotiated without context
    /// takeover either way ([`default_ws_config`]).
    pub ws: duplex::Config,
    /// Most simultaneous connections; further ones get 503. Default: 10 000.
    pub max_connections: usize,
    /// On Linux, how long the kernel may hold a new connection before
    /// handing it to the server without its first bytes
    /// (`TCP_DEFER_ACCEPT`): a client that connects and sends its request
    /// is accepted once, with the request already readable, instead of
    /// waking the server for the connection and again for the request.
    /// `None` (or zero) accepts connections as soon as they are
    /// established. Default: 1 s. Other systems ignore it.
    pub defer_accept: Option<Duration>,
    /// How long connections get to finish their closing handshake when the
    /// server shuts down. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Who may open a socket (`Origin`) and which subprotocols are spoken.
    /// Default: same-host origins and non-browser clients; no subprotocol.
    pub policy: Policy,
    /// TLS for `wss://` and `https://` on the same port; `None` serves
    /// plain `ws://` and `http://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The hub: namespaces and their limits. Default: no namespace (no
    /// channel exists).
    pub hub: HubConfig,
    /// Tokens and API keys. Default: none (no token is valid, the API is
    /// closed).
    pub auth: AuthConfig,
    /// The Centrifugo front's timers and limits.
    pub centrifuge: CentrifugeConfig,
    /// Largest HTTP API request body. Default: 1 MiB.
    pub api_max_body: usize,
    /// This node's name (API `info`). Default: "duplex".
    pub node_name: String,
    /// A Redis shared with other nodes (`--broker redis://…`); `None`
    /// keeps channels, history and presence in this process.
    pub broker: Option<crate::broker::redis::RedisOptions>,
    /// With TLS, offer HTTP/2 (ALPN `h2`) beside HTTP/1.1, and WebSockets
    /// over its streams (RFC 8441). Default true.
    pub http2: bool,
    /// Connections per source address (IPv6: per /64).
    pub per_ip: crate::per_ip::PerIpLimits,
    /// The EventSource front's limits.
    pub sse: crate::front::sse::SseConfig,
    /// Publish a tick a second to channel [`TICKER_CHANNEL`] while someone
    /// follows it (and for a minute after), for the `/live` demo. On in
    /// development mode.
    pub demo_ticker: bool,
    /// The server-wide memory budget (bytes) for what connections hold in
    /// flight: messages being received or inflated, and messages queued to
    /// send (`duplex_proto::budget`). `None`: each connection is bounded
    /// by its own limits only. Default: [`default_memory_budget`].
    pub memory_budget: Option<usize>,
}

/// Half of the memory this process may use: the host's physical memory,
/// or the cgroup's limit when that is lower (a container), and at least
/// 64 MiB. The budget covers buffers in flight only; the other half is
/// room for what it does not cover (connection state, history, presence,
/// the kernel's socket buffers, the allocator's slack). 1 GiB where
/// neither can be read.
pub fn default_memory_budget() -> usize {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kib = m
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib.saturating_mul(1024))
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let usable = match (physical, cgroup) {
        (Some(p), Some(c)) => p.min(c),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => return 1 << 30,
    };
    usize::try_from(usable / 2)
        .unwrap_or(usize::MAX)
        .max(64 << 20)
}

/// Parses a memory size: a number of bytes, optionally with a unit
/// (`512MiB`, `2 GiB`, `1.5GB`), or `off` for none.
pub fn parse_memory_size(s: &str) -> Result<Option<usize>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let b: bytesize::ByteSize = t
        .parse()
        .map_err(|e| format!("{s:?}: expected a size such as 512MiB, 2GiB or off ({e})"))?;
    let n = usize::try_from(b.as_u64()).map_err(|_| format!("{s:?}: too large"))?;
    if n == 0 {
        return Err(format!(
            "{s:?}: a budget of 0 bytes refuses everything; say off for none"
        ));
    }
    Ok(Some(n))
}

/// The channel of the development-mode ticker.
pub const TICKER_CHANNEL: &str = "ticker";

/// The server's protocol settings: the library defaults, except that
/// permessage-deflate runs without context takeover
/// ([`duplex::DeflateConfig::without_context_takeover`]), so a connection
/// keeps no zlib state between messages (about 340 KB per connection that
/// has exchanged a compressed message otherwise).
pub fn default_ws_config() -> duplex::Config {
    duplex::Config::default().with_deflate(Some(duplex::DeflateConfig::without_context_takeover()))
}

/// The default authentication settings: nothing configured, 5 s of clock
/// skew, tokens up to 8 KiB.
pub fn default_auth() -> AuthConfig {
    AuthConfig {
        leeway: DEFAULT_LEEWAY,
        max_token_size: DEFAULT_MAX_TOKEN_SIZE,
        ..AuthConfig::default()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws: default_ws_config(),
            max_connections: 10_000,
            defer_accept: Some(Duration::from_secs(1)),
            shutdown_grace: Duration::from_secs(5),
            policy: Policy::default(),
            tls: None,
            hub: HubConfig::default(),
            auth: default_auth(),
            centrifuge: CentrifugeConfig::default(),
            api_max_body: 1 << 20,
            node_name: "duplex".to_string(),
            broker: None,
            sse: crate::front::sse::SseConfig::default(),
            per_ip: crate::per_ip::PerIpLimits::default(),
            demo_ticker: false,
            memory_budget: Some(default_memory_budget()),
            http2: true,
        }
    }
}

impl ServerConfig {
    /// Development mode, for a server without a configuration file that
    /// listens on loopback only: anonymous clients may connect, subscribe
    /// and publish in the default namespace (history, presence, join/leave
    /// and recovery on), the HTTP API answers loopback peers without a
    /// key, and a ticker publishes to `ticker` for the `/live` demo.
    pub fn development(self) -> Self {
        let mut c = self;
        c.demo_ticker = true;
        c.hub.namespaces.default = Some(ChannelOptions::development());
        c.auth.allow_anonymous = true;
        c.auth.api_open_on_loopback = true;
        c
    }
}
