//! `duplex`: run the server, or connect as a client.

mod bench;
mod connect;
mod serve;
mod token;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Duplex: a WebSocket server and client.
#[derive(Parser)]
#[command(name = "duplex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the real-time hub (Centrifugo protocol at
    /// /connection/websocket, HTTP API at /api), echo at /echo, metrics.
    Serve(serve::ServeArgs),
    /// Connect to a WebSocket server.
    Connect(connect::ConnectArgs),
    /// Load generator: echo, idle, handshake and broadcast benchmarks.
    Bench(bench::BenchArgs),
    /// Print a connection or subscription token (HS256 JWT).
    Token(token::TokenArgs),
}

/// jemalloc instead of the system allocator: tokio allocates every task and
/// every socket registration 128-byte aligned, which glibc serves with
/// padding and a header each (an idle connection cost ~1,290 bytes of heap
/// for ~900 bytes of data); jemalloc's size classes are naturally aligned
/// (~980 bytes). Figures in bench/notes.md.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUPLEX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duplex: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Connect(a) => connect::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Token(a) => token::run(a),
        }
    });
    // A blocking read of stdin may still be pending (`connect` ends when
    // the server closes, whatever stdin does): do not wait for it.
    rt.shutdown_background();
    code
}
