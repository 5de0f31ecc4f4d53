//! `duplex serve`.

use clap::Args;
use duplex::proto::handshake::policy::OriginPolicy;
use duplex::Policy;
use duplex_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `duplex serve`; each also reads a `DUPLEX_*` variable.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file: namespaces, keys, limits
    /// (docs/configuration.md). Flags and DUPLEX_* variables override it.
    /// Without one, a server on loopback runs in development mode
    /// (anonymous clients, the default namespace open, the API open to
    /// loopback); on any other address the hub stays closed.
    #[arg(long, value_name = "FILE", env = "DUPLEX_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "DUPLEX_LISTEN")]
    listen: Option<SocketAddr>,
    /// Largest message accepted (bytes, after reassembly and inflation);
    /// larger ones close the connection with 1009.
    #[arg(
        long,
        env = "DUPLEX_MAX_MESSAGE_SIZE",
        default_value_t = duplex::Config::default().max_message_size
    )]
    max_message_size: usize,
    /// Most frames in one fragmented message; more closes with 1008.
    #[arg(
        long,
        env = "DUPLEX_MAX_FRAGMENTS",
        default_value_t = duplex::Config::default().max_fragments
    )]
    max_fragments: usize,
    /// Refuse permessage-deflate even when clients offer it.
    #[arg(long, env = "DUPLEX_NO_DEFLATE")]
    no_deflate: bool,
    /// Compress with context takeover (each connection keeps its
    /// compression history: better ratios on small, repetitive messages,
    /// about 340 KB per connection that has exchanged a compressed
    /// message). Without it, neither side keeps a history between messages
    /// and a connection holds no compression state while idle.
    #[arg(
        long,
        env = "DUPLEX_DEFLATE_CONTEXT_TAKEOVER",
        conflicts_with = "no_deflate"
    )]
    deflate_context_takeover: bool,
    /// Server-wide memory budget for messages in flight (being received,
    /// inflated, or queued to send), e.g. 512MiB or 2GiB, or off: a
    /// connection that needs more than is left is closed with 1009 (in the
    /// middle of a message) or 1013 (try again later) [default: half of
    /// physical memory, or of the cgroup's limit].
    #[arg(long, value_name = "SIZE", env = "DUPLEX_MEMORY_BUDGET", value_parser = parse_budget)]
    memory_budget: Option<Budget>,
    /// Most simultaneous connections; more are answered 503 [default: 10000].
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most simultaneous connections from one address (IPv6: one /64); more
    /// are answered 503; 0 for no limit; loopback peers are exempt
    /// [default: 1000].
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// HS256 secret for connection and subscription tokens (overrides the
    /// file's auth.token_hmac_secret).
    #[arg(
        long,
        value_name = "SECRET",
        env = "DUPLEX_TOKEN_HMAC_SECRET",
        hide_env_values = true
    )]
    token_hmac_secret: Option<String>,
    /// Key of the HTTP API (overrides the file's auth.api_key).
    #[arg(
        long,
        value_name = "KEY",
        env = "DUPLEX_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Share channels, history and presence with other nodes through Redis:
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS
    /// (overrides the file's broker.url). Without it, everything stays in
    /// this process.
    #[arg(
        long,
        value_name = "URL",
        env = "DUPLEX_BROKER",
        hide_env_values = true
    )]
    broker: Option<String>,
    /// Prefix of every Redis key and channel, so that several deployments
    /// can share one Redis [default: duplex].
    #[arg(long, value_name = "NAME", env = "DUPLEX_BROKER_PREFIX")]
    broker_prefix: Option<String>,
    /// The --broker URLs (comma-separated) are seed nodes of a Redis
    /// Cluster: channels are spread over its masters, fan-out uses sharded
    /// pub/sub.
    #[arg(long, env = "DUPLEX_BROKER_CLUSTER")]
    broker_cluster: bool,
    /// Also accept sockets opened by pages from ORIGIN
    /// (`scheme://host[:port]`; `*` for any). Repeatable. Without it, a
    /// browser page may connect only from this server's own host and port
    /// (Origin must match Host; 403 otherwise) — the defence against
    /// cross-site WebSocket hijacking. Clients that send no Origin (not
    /// browsers) are always accepted.
    #[arg(
        long = "allow-origin",
        value_name = "ORIGIN",
        env = "DUPLEX_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    allow_origin: Vec<String>,
    /// A subprotocol this server speaks. Repeatable; the first one the
    /// client offers that is listed here is chosen. A browser that offers
    /// only unlisted ones gets no Sec-WebSocket-Protocol back and fails
    /// the connection (close code 1006).
    #[arg(
        long = "subprotocol",
        value_name = "NAME",
        env = "DUPLEX_SUBPROTOCOL",
        value_delimiter = ','
    )]
    subprotocol: Vec<String>,
    /// PEM certificate chain: serve wss:// and https:// (needs --tls-key).
    #[arg(
        long,
        value_name = "PEM",
        env = "DUPLEX_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        value_name = "PEM",
        env = "DUPLEX_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Make a self-signed development certificate for localhost, 127.0.0.1
    /// and ::1 at start, write it to --tls-dir and serve wss:// with it.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
    /// Where --tls-self-signed writes cert.pem and key.pem.
    #[arg(long, value_name = "DIR", requires = "tls_self_signed")]
    tls_dir: Option<PathBuf>,
}

/// `--memory-budget`: a size, or `None` for off.
#[derive(Debug, Clone)]
struct Budget(Option<usize>);

fn parse_budget(s: &str) -> Result<Budget, String> {
    duplex_server::config::parse_memory_size(s).map(Budget)
}

pub async fn run(a: ServeArgs) -> ExitCode {
    let mut ws = duplex_server::config::default_ws_config()
        .with_max_message_size(a.max_message_size)
        .with_max_fragments(a.max_fragments);
    if a.no_deflate {
        ws = ws.with_deflate(None);
    } else if a.deflate_context_takeover {
        ws = ws.with_deflate(Some(duplex::DeflateConfig::default()));
    }
    let mut config = ServerConfig::default();
    let mut file_origins = Vec::new();
    if let Some(path) = &a.config {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("duplex serve: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        match duplex_server::config_file::apply(&mut config, &text) {
            Ok(extras) => file_origins = extras.allow_origin,
            Err(e) => {
                eprintln!("duplex serve: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if let Some(n) = a.max_connections {
        config.max_connections = n;
    }
    if let Some(Budget(b)) = a.memory_budget {
        config.memory_budget = b;
    }
    if let Some(n) = a.max_connections_per_ip {
        config.per_ip.max_connections = n;
    }
    if let Some(s) = &a.token_hmac_secret {
        config.auth.hmac_secret = Some(s.clone());
    }
    if let Some(k) = &a.api_key {
        config.auth.api_key = Some(k.clone());
    }
    if let Some(url) = &a.broker {
        let ok = url
            .split(',')
            .all(|u| u.trim().starts_with("redis://") || u.trim().starts_with("rediss://"));
        if !ok || (url.contains(',') && !a.broker_cluster) {
            eprintln!(
                "duplex serve: --broker {url:?}: expected a redis:// or rediss:// URL (several, comma-separated, with --broker-cluster)"
            );
            return ExitCode::from(2);
        }
        let mut o = config.broker.take().unwrap_or_default();
        o.url = url.clone();
        config.broker = Some(o);
    }
    if a.broker_cluster {
        match config.broker.as_mut() {
            Some(o) => o.cluster = true,
            None => {
                eprintln!(
                    "duplex serve: --broker-cluster needs --broker (or broker.url in the file)"
                );
                return ExitCode::from(2);
            }
        }
    }
    if let Some(p) = &a.broker_prefix {
        if p.is_empty() || p.contains(['{', '}']) {
            eprintln!("duplex serve: --broker-prefix {p:?}: must be non-empty, without {{ or }}");
            return ExitCode::from(2);
        }
        match config.broker.as_mut() {
            Some(o) => o.prefix = p.clone(),
            None => {
                eprintln!(
                    "duplex serve: --broker-prefix needs --broker (or broker.url in the file)"
                );
                return ExitCode::from(2);
            }
        }
    }
    let development = a.config.is_none() && config.listen.ip().is_loopback();
    if development {
        config = config.development();
    }
    let mut origins = OriginPolicy::default();
    for o in file_origins.iter().chain(&a.allow_origin) {
        if !OriginPolicy::is_valid_entry(o) {
            eprintln!("duplex serve: --allow-origin {o:?}: expected scheme://host[:port] or *");
            return ExitCode::from(2);
        }
        origins = origins.allow(o);
    }
    let tls = if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        match duplex::tls::server_config(cert, key) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("duplex serve: {e}");
                return ExitCode::from(2);
            }
        }
    } else if a.tls_self_signed {
        let dir = a
            .tls_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("duplex-dev-tls"));
        match duplex_server::tls::self_signed(&dir) {
            Ok(s) => {
                tracing::info!(
                    "self-signed certificate for localhost, 127.0.0.1 and ::1 written to {} (key {}); trust it in clients to connect over wss://",
                    s.cert.display(),
                    s.key.display()
                );
                Some(s.config)
            }
            Err(e) => {
                eprintln!("duplex serve: --tls-self-signed: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let secure = tls.is_some();
    let listen = config.listen;
    let config = ServerConfig {
        ws,
        policy: Policy {
            origins,
            protocols: a.subprotocol.clone(),
        },
        tls,
        ..config
    };
    if development {
        tracing::info!(
            "development mode (no --config, loopback only): anonymous clients may connect, subscribe and publish in the default namespace; the HTTP API answers loopback clients without a key"
        );
    } else if a.config.is_none() {
        tracing::warn!(
            "listening on {listen} without --config: the hub is closed (no namespace, no token key, no API key) until a configuration file opens it; development mode applies on loopback addresses only"
        );
    }
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("duplex serve: cannot start on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    match server.local_addr() {
        Ok(addr) => {
            let (http, ws) = if secure {
                ("https", "wss")
            } else {
                ("http", "ws")
            };
            tracing::info!(
                "listening on {http}://{addr} (echo tester page at {http}://{addr}/, demos at {http}://{addr}/chat, {http}://{addr}/game and {http}://{addr}/live, WebSocket echo at {ws}://{addr}/echo, Centrifugo protocol at {ws}://{addr}/connection/websocket, EventSource at {http}://{addr}/connection/sse, API at {http}://{addr}/api, metrics at {http}://{addr}/metrics)"
            )
        }
        Err(e) => tracing::warn!("listening (address unknown: {e})"),
    }
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    // The accept loop runs on a worker thread, beside the connections it
    // spawns: run from `block_on` it sat on the main thread, and every
    // accepted connection cost a cross-thread wake-up and context switch.
    match tokio::spawn(server.run(shutdown)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("duplex serve: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("duplex serve: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The limits a plain `duplex serve` runs with are the library's.
    #[test]
    fn limits_default_to_the_library_defaults() {
        let a = Cli::try_parse_from(["serve"]).unwrap().serve;
        let d = duplex::Config::default();
        assert_eq!(a.max_message_size, d.max_message_size);
        assert_eq!(a.max_fragments, d.max_fragments);
        let a = Cli::try_parse_from(["serve", "--max-fragments", "7"])
            .unwrap()
            .serve;
        assert_eq!(a.max_fragments, 7);
    }
}
