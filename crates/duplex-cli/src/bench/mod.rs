//! `duplex bench`: a WebSocket load generator.
//!
//! Modes: `echo` (N connections, D messages in flight on each, every echo
//! checked byte for byte), `idle` (open N connections and hold them) and
//! `handshake` (connect + upgrade + close, as many per second as possible).
//! Each run prints progress on stderr, then one human line and one JSON line
//! on stdout.
//!
//! The generator must never be what limits a measurement, so it does as
//! little as a client can: frames are built and masked once at start (one
//! fixed masking key — this is a load generator, not a browser), sockets are
//! read in large chunks, only frame headers are parsed and payloads are
//! compared with the expected bytes in place, and everything runs on one
//! thread (a current-thread runtime: pin it to a core of its own).
//!
//! It shares no code with the library it measures: the frame header writer
//! and parser and the opening handshake here are written out on their own,
//! so a bug in `duplex-proto` cannot hide behind the same bug in the checker.
//!
//! With `--server-pid`, the server's CPU time (utime + stime from
//! `/proc/PID/stat`) and resident memory (`VmRSS` from `/proc/PID/status`)
//! are read at the start and the end of the measured window, giving the
//! server's CPU time per message — on a machine with few cores the figure
//! that separates fast servers, since throughput stops at whichever side
//! saturates its core first.
//!
//! One concern a file: the modes in `echo`, `idle`, `handshake` and
//! `broadcast`; what they share in `open` (the URL and the opening
//! handshake), `frame` (the frame writer, payloads, server frame headers),
//! `check` (the echo checker), `histogram`, `sample` (/proc), `json` (the
//! JSON line) and `shared` (a run's phase, counts and progress lines).

mod broadcast;
mod check;
mod echo;
mod frame;
mod handshake;
mod histogram;
mod idle;
mod json;
mod open;
mod sample;
mod shared;

use clap::{Args, Subcommand};
use std::process::ExitCode;

/// Options of `duplex bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Echo load: messages sent and their echoes verified byte for byte.
    Echo(echo::EchoArgs),
    /// Open connections and hold them; reports the server's memory growth.
    Idle(idle::IdleArgs),
    /// Connect, upgrade and close, over and over.
    Handshake(handshake::HandshakeArgs),
    /// One channel, N subscribers, a publisher: fan-out rate, latency, loss.
    Broadcast(broadcast::BroadcastArgs),
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Server URL, e.g. ws://127.0.0.1:8080/echo (with --raw-tcp-peer only
    /// the host and port are used).
    url: String,
    /// Read this process's CPU time and RSS from /proc at the start and the
    /// end of the measured window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name copied into the JSON line (e.g. the server's).
    #[arg(long, default_value = "")]
    label: String,
}

/// Runs the generator on a thread of its own with a current-thread runtime.
pub async fn run(a: BenchArgs) -> ExitCode {
    tokio::task::spawn_blocking(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("duplex bench: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
        let local = tokio::task::LocalSet::new();
        let outcome = local.block_on(&rt, async move {
            match a.mode {
                Mode::Echo(e) => echo::echo(e).await,
                Mode::Idle(i) => idle::idle(i).await,
                Mode::Handshake(h) => handshake::handshake(h).await,
                Mode::Broadcast(b) => broadcast::run(b).await,
            }
        });
        match outcome {
            Ok(report) => {
                println!("{}", report.human);
                println!("{}", report.json);
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("duplex bench: {e}");
                ExitCode::from(1)
            }
        }
    })
    .await
    .unwrap_or(ExitCode::from(1))
}

/// What a run prints, and whether it went without errors.
struct Report {
    human: String,
    json: String,
    ok: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB").or(t.strip_suffix(['K', 'k'])) {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix("MiB").or(t.strip_suffix(['M', 'm'])) {
        (n, 1 << 20)
    } else {
        (t, 1)
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|e| format!("{s}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("20"), Ok(20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("x").is_err());
    }
}
