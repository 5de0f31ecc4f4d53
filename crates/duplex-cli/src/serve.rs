//! `duplex serve`.

use clap::Args;
use duplex_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::process::ExitCode;

/// Options of `duplex serve`; each also reads a `DUPLEX_*` variable.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DUPLEX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest message accepted (bytes, after reassembly and inflation);
    /// larger ones close the connection with 1009.
    #[arg(long, env = "DUPLEX_MAX_MESSAGE_SIZE", default_value_t = 64 << 20)]
    max_message_size: usize,
    /// Most frames in one fragmented message; more closes with 1008.
    #[arg(long, env = "DUPLEX_MAX_FRAGMENTS", default_value_t = 131_072)]
    max_fragments: usize,
    /// Refuse permessage-deflate even when clients offer it.
    #[arg(long, env = "DUPLEX_NO_DEFLATE")]
    no_deflate: bool,
    /// Most simultaneous connections; more are answered 503.
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
}

pub async fn run(a: ServeArgs) -> ExitCode {
    let mut ws = duplex::Config::default()
        .with_max_message_size(a.max_message_size)
        .with_max_fragments(a.max_fragments);
    if a.no_deflate {
        ws = ws.with_deflate(None);
    }
    let config = ServerConfig {
        listen: a.listen,
        ws,
        max_connections: a.max_connections,
        ..Default::default()
    };
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("duplex serve: cannot listen on {}: {e}", a.listen);
            return ExitCode::from(1);
        }
    };
    match server.local_addr() {
        Ok(addr) => {
            tracing::info!("listening on http://{addr} (WebSocket echo at ws://{addr}/echo)")
        }
        Err(e) => tracing::warn!("listening (address unknown: {e})"),
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match server.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duplex serve: {e}");
            ExitCode::from(1)
        }
    }
}
