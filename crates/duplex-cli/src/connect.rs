//! `duplex connect`: an interactive WebSocket client.
//!
//! Each stdin line is sent as a text message; each received text message is
//! printed as one line, binary ones as a base64 line (or raw bytes with
//! `--binary`). At EOF or Ctrl-C the client waits until it has received as
//! many messages as it sent (the answers to what it sent), at most
//! `--answer-wait` seconds of silence, then closes with 1000.

use base64::Engine;
use clap::Args;
use duplex::{ClientOptions, ClientStream, CloseCode, Message, Proxy, Verify, WebSocket};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Exit status: the connection closed cleanly with 1000 or 1001.
const EXIT_OK: u8 = 0;
/// Exit status: could not connect (unreachable, refused upgrade, TLS,
/// proxy, bad URL or options).
const EXIT_CONNECT: u8 = 1;
/// Exit status: the connection failed without a clean closing handshake.
const EXIT_FAILED: u8 = 2;
/// Exit status: the peer closed cleanly with a code other than 1000/1001.
const EXIT_PEER_CODE: u8 = 3;

/// Options of `duplex connect`.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 closed cleanly with 1000/1001; 1 could not connect \
    (unreachable, upgrade refused, TLS, proxy); 2 the connection failed without a clean close; \
    3 the peer closed with another code."
)]
pub struct ConnectArgs {
    /// ws:// or wss:// URL to connect to.
    url: String,
    /// Echo every received message back, until the server closes (no stdin).
    #[arg(long)]
    echo: bool,
    /// Extra request header, `Name: value`. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Origin header to send (browsers always send one).
    #[arg(long)]
    origin: Option<String>,
    /// Subprotocol to offer. Repeatable, in order of preference.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// PEM file of a CA (or a self-signed certificate) to trust for wss://,
    /// besides the bundled root store. Repeatable.
    #[arg(long, value_name = "PEM")]
    ca: Vec<PathBuf>,
    /// Do not verify the server's certificate (encrypts, but anyone can
    /// pretend to be the server). Development only.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// HTTP CONNECT proxy, http://[user:pass@]host:port. Default: the
    /// https_proxy / http_proxy / all_proxy / no_proxy variables.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly even if proxy variables are set.
    #[arg(long)]
    no_proxy: bool,
    /// Send a ping every SECS seconds; a pong missing for 20 s fails the
    /// connection.
    #[arg(long, value_name = "SECS")]
    ping_interval: Option<f64>,
    /// Write binary messages to stdout as raw bytes instead of base64 lines.
    #[arg(long)]
    binary: bool,
    /// After EOF, wait at most this many seconds of silence for the answers
    /// to the messages sent before closing.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    answer_wait: f64,
    /// Largest message accepted (bytes).
    #[arg(long, default_value_t = duplex::Config::default().max_message_size)]
    max_message_size: usize,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Print nothing on stderr but errors.
    #[arg(short, long)]
    quiet: bool,
}

fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} {s}: not a duration in seconds"))
}

fn options(a: &ConnectArgs) -> Result<ClientOptions, String> {
    let mut config = duplex::Config::default().with_max_message_size(a.max_message_size);
    if a.no_deflate {
        config = config.with_deflate(None);
    }
    if let Some(p) = a.ping_interval {
        let d = seconds("--ping-interval", p)?;
        if d.is_zero() {
            return Err("--ping-interval must be positive".into());
        }
        config = config.with_ping_interval(Some(d));
    }
    let mut headers = Vec::new();
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("-H {h:?}: expected 'Name: value'"))?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("-H {h:?}: invalid header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let verify = if a.insecure {
        Verify::Insecure
    } else if a.ca.is_empty() {
        Verify::WebPki
    } else {
        Verify::WithCa(a.ca.clone())
    };
    let proxy = match (&a.proxy, a.no_proxy) {
        (Some(p), _) => Proxy::Url(p.clone()),
        (None, true) => Proxy::None,
        (None, false) => Proxy::FromEnv,
    };
    Ok(ClientOptions {
        config,
        protocols: a.subprotocols.clone(),
        origin: a.origin.clone(),
        headers,
        verify,
        proxy,
        ..Default::default()
    })
}

pub async fn run(a: ConnectArgs) -> ExitCode {
    let opts = match options(&a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("duplex connect: {e}");
            return ExitCode::from(EXIT_CONNECT);
        }
    };
    let answer_wait = match seconds("--answer-wait", a.answer_wait) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("duplex connect: {e}");
            return ExitCode::from(EXIT_CONNECT);
        }
    };
    let mut ws = match duplex::connect_with(&a.url, opts).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("duplex connect: {}: {e}", a.url);
            return ExitCode::from(EXIT_CONNECT);
        }
    };
    if !a.quiet && !a.echo {
        eprintln!(
            "duplex connect: connected to {} (subprotocol: {}, extensions: {})",
            a.url,
            ws.protocol().unwrap_or("none"),
            if ws.extensions().is_empty() {
                "none"
            } else {
                ws.extensions()
            }
        );
    }
    let result = if a.echo {
        echo(&mut ws).await
    } else {
        interactive(&mut ws, a.binary, answer_wait).await
    };
    if let Err(e) = result {
        eprintln!("duplex connect: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    let code = ws.close_code().unwrap_or(CloseCode::ABNORMAL);
    let reason = match ws.close_frame() {
        Some(Some(f)) => f.reason.to_string(),
        _ => String::new(),
    };
    if !ws.was_clean() {
        eprintln!(
            "duplex connect: connection closed without a clean closing handshake (code {})",
            code.0
        );
        return ExitCode::from(EXIT_FAILED);
    }
    if code == CloseCode::NORMAL || code == CloseCode::GOING_AWAY {
        if !a.quiet && !a.echo {
            eprintln!("duplex connect: closed ({})", code.0);
        }
        ExitCode::from(EXIT_OK)
    } else {
        eprintln!(
            "duplex connect: closed by the peer with {} {reason:?}",
            code.0
        );
        ExitCode::from(EXIT_PEER_CODE)
    }
}

async fn echo(ws: &mut WebSocket<ClientStream>) -> duplex::Result<()> {
    while let Some(m) = ws.recv().await {
        ws.feed(m?).await?;
    }
    Ok(())
}

/// Writes one received message to stdout.
fn print(out: &mut impl Write, msg: &Message, raw_binary: bool) -> std::io::Result<()> {
    match msg {
        Message::Text(t) => {
            out.write_all(t.as_str().as_bytes())?;
            out.write_all(b"\n")?;
        }
        Message::Binary(b) if raw_binary => out.write_all(b)?,
        Message::Binary(b) => {
            let line = base64::engine::general_purpose::STANDARD.encode(b);
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

enum Step {
    Line(std::io::Result<Option<String>>),
    Msg(Option<duplex::Result<Message>>),
    Interrupt,
}

/// Stdin lines out, messages to stdout; at EOF or Ctrl-C, collect the
/// answers and close with 1000. Returns when the connection has closed.
async fn interactive(
    ws: &mut WebSocket<ClientStream>,
    raw_binary: bool,
    answer_wait: Duration,
) -> duplex::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = std::io::stdout();
    let (mut sent, mut received) = (0u64, 0u64);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let step = tokio::select! {
            l = lines.next_line() => Step::Line(l),
            m = ws.recv() => Step::Msg(m),
            _ = &mut ctrl_c => Step::Interrupt,
        };
        match step {
            Step::Line(Ok(Some(line))) => {
                ws.send(Message::text(line)).await?;
                sent += 1;
            }
            Step::Line(Ok(None)) | Step::Interrupt => break,
            Step::Line(Err(e)) => {
                eprintln!("duplex connect: stdin: {e}");
                break;
            }
            Step::Msg(Some(Ok(m))) => {
                received += 1;
                print(&mut stdout, &m, raw_binary)?;
            }
            Step::Msg(Some(Err(e))) => return Err(e),
            Step::Msg(None) => return Ok(()),
        }
    }
    // Wait for the answers to what was sent, each within `answer_wait`.
    while received < sent {
        match tokio::time::timeout(answer_wait, ws.recv()).await {
            Ok(Some(Ok(m))) => {
                received += 1;
                print(&mut stdout, &m, raw_binary)?;
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Ok(()),
            Err(_) => break,
        }
    }
    ws.start_close(CloseCode::NORMAL, "").await?;
    // Messages that were already in flight when we closed are still shown.
    while let Some(m) = ws.recv().await {
        print(&mut stdout, &m?, raw_binary)?;
    }
    Ok(())
}
