//! Server configuration (`duplex serve` flags map onto these fields).

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
    /// How long connections get to finish their closing handshake when the
    /// server shuts down. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Who may open a socket (`Origin`) and which subprotocols are spoken.
    /// Default: same-host origins and non-browser clients; no subprotocol.
    pub policy: Policy,
    /// TLS for `wss://` and `https://` on the same port; `None` serves
    /// plain `ws://` and `http://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The server's protocol settings: the library defaults, except that
/// permessage-deflate runs without context takeover
/// ([`duplex::DeflateConfig::without_context_takeover`]), so a connection
/// keeps no zlib state between messages (about 340 KB per connection that
/// has exchanged a compressed message otherwise).
pub fn default_ws_config() -> duplex::Config {
    duplex::Config::default().with_deflate(Some(duplex::DeflateConfig::without_context_takeover()))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws: default_ws_config(),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(5),
            policy: Policy::default(),
            tls: None,
        }
    }
}
