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
    /// Protocol limits for every WebSocket connection.
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

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws: duplex::Config::default(),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(5),
            policy: Policy::default(),
            tls: None,
        }
    }
}
