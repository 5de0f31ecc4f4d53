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

/// jemalloc's options, read once when it starts: memory freed (a large
/// message delivered, a connection closed) goes back to the system within
/// about a second (`dirty_decay_ms`; jemalloc's default keeps it ten
/// seconds), by a background thread rather than on the connections'
/// threads. The server's memory budget bounds what connections hold; this
/// keeps what they have let go from piling up on top of it
/// (`docs/defaults.md`).
// SAFETY: jemalloc reads this symbol (its `malloc_conf`, under the prefix
// tikv-jemalloc-sys gives every jemalloc symbol on Linux) as a
// `const char *` to a NUL-terminated string, once, at initialisation. A
// `&[u8; N]` is a thin pointer to the bytes, which are 'static, end in NUL
// and are never written. `jemalloc_reads_the_options` checks jemalloc saw
// them.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 60] = b"dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true\0";

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

#[cfg(test)]
mod tests {
    /// jemalloc took `MALLOC_CONF`: its options read back as set.
    #[test]
    fn jemalloc_reads_the_options() {
        // Something allocated: jemalloc is initialised.
        let v = vec![1u8; 4096];
        assert_eq!(v.len(), 4096);
        // SAFETY: `opt.dirty_decay_ms` and `opt.muzzy_decay_ms` are
        // `ssize_t`, `opt.background_thread` is `bool`: the types read.
        let (dirty, muzzy, background) = unsafe {
            (
                tikv_jemalloc_ctl::raw::read::<isize>(b"opt.dirty_decay_ms\0").unwrap(),
                tikv_jemalloc_ctl::raw::read::<isize>(b"opt.muzzy_decay_ms\0").unwrap(),
                tikv_jemalloc_ctl::raw::read::<bool>(b"opt.background_thread\0").unwrap(),
            )
        };
        assert_eq!((dirty, muzzy, background), (1000, 0, true));
        assert!(super::MALLOC_CONF.ends_with(b"\0"));
    }
}
