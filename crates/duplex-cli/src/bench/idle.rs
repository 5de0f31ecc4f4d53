//! `duplex bench idle`: open N connections (optionally with
//! permessage-deflate and a few echoed messages each) and hold them;
//! reports the server's memory growth per connection.

use super::frame::{put_frame, unmasked_header, OP_TEXT, RSV1};
use super::json::Json;
use super::open::{open, resolve, upgrade_request, Opened};
use super::sample::{growth_per, sample, window};
use super::shared::{secs, Phase, Shared};
use super::{Common, Report};
use clap::Args;
use duplex::proto::deflate::{DeflateParams, Deflater, Inflater, Side};
use duplex::DeflateConfig;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Args, Debug)]
pub(super) struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and hold.
    #[arg(short = 'c', long, default_value_t = 1000)]
    connections: usize,
    /// Handshakes in progress at once while opening.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Offer permessage-deflate (as browsers do) in every handshake.
    #[arg(long)]
    deflate: bool,
    /// Text messages each connection sends (compressed when
    /// permessage-deflate is agreed) and whose echo it reads and checks
    /// before it idles, so that the server's per-connection state for
    /// messages (compression contexts among it) is in the figure.
    #[arg(long, default_value_t = 0)]
    messages: u32,
}

pub(super) async fn idle(a: IdleArgs) -> Result<Report, String> {
    let target = Rc::new(resolve(&a.common.url).await?);
    let request = Rc::new(upgrade_request(&target, a.deflate));
    let message = Rc::new(IdleMessage::new()?);
    let sh = Shared::new();
    let held: Rc<RefCell<Vec<TcpStream>>> = Rc::new(RefCell::new(Vec::new()));
    let negotiated = Rc::new(Cell::new(0u64));
    let next = Rc::new(Cell::new(0usize));
    let finished = Rc::new(Cell::new(0usize));
    let workers = a.concurrency.clamp(1, a.connections.max(1));
    // Let the server settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s0 = sample(a.common.server_pid);
    eprintln!(
        "idle: opening {} connections to {}{}{}",
        a.connections,
        a.common.url,
        if a.deflate {
            ", offering permessage-deflate"
        } else {
            ""
        },
        match a.messages {
            0 => String::new(),
            m => format!(", {m} echoed message(s) each"),
        }
    );
    for _ in 0..workers {
        let (target, request, message, sh, held, negotiated, next, finished) = (
            target.clone(),
            request.clone(),
            message.clone(),
            sh.clone(),
            held.clone(),
            negotiated.clone(),
            next.clone(),
            finished.clone(),
        );
        let (n, messages) = (a.connections, a.messages);
        tokio::task::spawn_local(async move {
            while next.get() < n {
                next.set(next.get() + 1);
                let opened = async {
                    let mut o = open(&target, &request).await?;
                    for _ in 0..messages {
                        message.exchange(&mut o).await?;
                    }
                    Ok::<_, String>(o)
                };
                match opened.await {
                    Ok(o) => {
                        if o.deflate {
                            negotiated.set(negotiated.get() + 1);
                        }
                        held.borrow_mut().push(o.tcp);
                        sh.total.set(sh.total.get() + 1);
                    }
                    Err(e) => sh.error(e),
                }
            }
            finished.set(finished.get() + 1);
        });
    }
    let mut last = Instant::now();
    let mut last_n = 0;
    while finished.get() < workers {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last.elapsed() >= Duration::from_secs(1) {
            let n = held.borrow().len();
            eprintln!(
                "idle: {n} open ({} /s), {} errors",
                n - last_n,
                sh.errors.get()
            );
            last = Instant::now();
            last_n = n;
        }
    }
    let s_open = sample(a.common.server_pid);
    let opened = held.borrow().len() as u64;
    eprintln!("idle: {opened} open, holding for {} s", a.duration);
    tokio::time::sleep(secs(a.duration)).await;
    let s1 = sample(a.common.server_pid);
    // Memory is read at the end of the hold, once the server has had time
    // to give back whatever the handshakes used.
    sh.phase.set(Phase::Done);
    let open_w = window(&s0, &s_open);
    let per_conn = growth_per(s0.server_rss, s1.server_rss, opened);
    let anon_per_conn = growth_per(s0.server_anon, s1.server_anon, opened);
    let cpu_per_conn = open_w
        .server_cpu
        .filter(|_| opened > 0)
        .map(|c| c * 1e6 / opened as f64);
    let errors = sh.errors.get();
    let mut human = format!(
        "idle {opened} of {} connections{} open in {:.2} s ({:.0}/s), {errors} errors",
        a.connections,
        if a.deflate {
            format!(" ({} with permessage-deflate)", negotiated.get())
        } else {
            String::new()
        },
        open_w.secs,
        opened as f64 / open_w.secs,
    );
    if let Some(p) = per_conn {
        let _ = write!(human, ", server RSS +{p:.0} B per connection");
    }
    if let Some(p) = anon_per_conn {
        let _ = write!(human, " (anonymous +{p:.0} B)");
    }
    if let Some(c) = cpu_per_conn {
        let _ = write!(human, ", {c:.1} us server CPU per handshake");
    }
    if errors > 0 {
        let _ = write!(human, "; first error: {}", sh.first_error());
    }
    let json = Json::new()
        .str("mode", "idle")
        .str("label", &a.common.label)
        .str("url", &a.common.url)
        .int("connections", a.connections as u64)
        .int("opened", opened)
        .bool("deflate_offered", a.deflate)
        .int("messages_per_conn", a.messages as u64)
        .int("deflate_negotiated", negotiated.get())
        .num("open_s", open_w.secs)
        .num("hold_s", a.duration)
        .int("errors", errors)
        .str("first_error", &sh.first_error())
        .opt("server_rss_before_bytes", s0.server_rss.map(|r| r as f64))
        .opt("server_rss_after_bytes", s1.server_rss.map(|r| r as f64))
        .opt("rss_bytes_per_conn", per_conn)
        .opt("server_anon_before_bytes", s0.server_anon.map(|r| r as f64))
        .opt("server_anon_after_bytes", s1.server_anon.map(|r| r as f64))
        .opt("anon_bytes_per_conn", anon_per_conn)
        .opt("server_cpu_us_per_conn", cpu_per_conn)
        .finish();
    drop(held);
    Ok(Report {
        human,
        json,
        ok: errors == 0 && opened == a.connections as u64,
    })
}

/// The message idle connections exchange before they idle: a JSON-like
/// chat line, as a plain and as a compressed masked text frame.
struct IdleMessage {
    text: Vec<u8>,
    plain: Vec<u8>,
    compressed: Vec<u8>,
}

impl IdleMessage {
    fn new() -> Result<Self, String> {
        let text = br#"{"type":"chat","room":"lobby","user":"guest-4711","text":"hello, is anyone around to play a round tonight?","ts":1764000000}"#.to_vec();
        let mut plain = Vec::new();
        put_frame(&mut plain, OP_TEXT, &text, true);
        // A client compressor; fresh per message, so any peer can inflate it.
        let params = DeflateParams {
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let mut deflater = Deflater::new(Side::Client, &params, &DeflateConfig::default());
        let payload = deflater.compress(&text).map_err(|e| e.to_string())?;
        let mut compressed = Vec::new();
        put_frame(&mut compressed, OP_TEXT, &payload, true);
        compressed[0] |= RSV1;
        Ok(IdleMessage {
            text,
            plain,
            compressed,
        })
    }

    /// Sends the message and checks its echo: a final text frame, inflated
    /// first if the server compressed it.
    async fn exchange(&self, o: &mut Opened) -> Result<(), String> {
        let frame = if o.deflate {
            &self.compressed
        } else {
            &self.plain
        };
        o.tcp
            .write_all(frame)
            .await
            .map_err(|e| format!("send message: {e}"))?;
        let mut buf = std::mem::take(&mut o.leftover);
        let (b0, start, len) = loop {
            if let Some(h) = unmasked_header(&buf)? {
                if buf.len() >= h.1 + h.2 {
                    break h;
                }
            }
            let have = buf.len();
            buf.resize(have + 4096, 0);
            let n = o
                .tcp
                .read(&mut buf[have..])
                .await
                .map_err(|e| format!("read echo: {e}"))?;
            buf.truncate(have + n);
            if n == 0 {
                return Err("server closed before the echo".into());
            }
        };
        if b0 & 0x8f != 0x80 | OP_TEXT {
            return Err(format!("echo is not a final text frame (byte 0 {b0:#04x})"));
        }
        let payload = &buf[start..start + len];
        let got = if b0 & RSV1 != 0 {
            if !o.deflate {
                return Err("compressed echo without permessage-deflate".into());
            }
            let mut out = Vec::new();
            let mut inflater = Inflater::new(Side::Client, &DeflateParams::default());
            let limit = self.text.len();
            inflater
                .inflate(payload, &mut out, limit)
                .and_then(|()| inflater.finish_message(&mut out, limit))
                .map_err(|e| format!("inflate echo: {e}"))?;
            out
        } else {
            payload.to_vec()
        };
        if got != self.text {
            return Err("echo differs from the message".into());
        }
        o.leftover = buf.split_off(start + len);
        Ok(())
    }
}
