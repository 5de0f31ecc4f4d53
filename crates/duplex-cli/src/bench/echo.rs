//! `duplex bench echo`: N connections, D messages in flight on each, every
//! echo checked byte for byte.

use super::check::{Checker, Expect};
use super::frame::{payload, put_frame, OP_BINARY, OP_TEXT};
use super::json::Json;
use super::open::{open, resolve, upgrade_request, Opened};
use super::sample::{sample, window};
use super::shared::{progress, secs, Phase, Shared};
use super::{parse_size, Common, Report};
use clap::Args;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

#[derive(Args, Debug)]
pub(super) struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Payload size: bytes, or with a K/KiB or M/MiB suffix.
    #[arg(long, default_value = "20", value_parser = parse_size)]
    size: usize,
    /// Send text messages (ASCII payloads) instead of binary.
    #[arg(long)]
    text: bool,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The peer is a plain TCP echo: no handshake, and it sends our masked
    /// frames back as they are, so those are what is expected.
    #[arg(long)]
    raw_tcp_peer: bool,
}

/// What every echo connection sends and expects, built once.
struct EchoPlan {
    /// `depth` copies of the masked frame, back to back.
    batch: Placed,
    frame_len: usize,
    depth: usize,
    expect: Expect,
}

pub(super) async fn echo(a: EchoArgs) -> Result<Report, String> {
    if a.connections == 0 || a.depth == 0 {
        return Err("--connections and --depth must be at least 1".into());
    }
    let target = Rc::new(resolve(&a.common.url).await?);
    let opcode = if a.text { OP_TEXT } else { OP_BINARY };
    let data = payload(a.size, a.text);
    let mut frame = Vec::with_capacity(a.size + 14);
    put_frame(&mut frame, opcode, &data, true);
    let expect = if a.raw_tcp_peer {
        Expect {
            opcode,
            masked: true,
            payload: frame[frame.len() - a.size..].to_vec(),
        }
    } else {
        Expect {
            opcode,
            masked: false,
            payload: data,
        }
    };
    let plan = Rc::new(EchoPlan {
        batch: Placed::copy_of(&frame.repeat(a.depth)),
        frame_len: frame.len(),
        depth: a.depth,
        expect,
    });
    let sh = Shared::new();
    let (go_tx, go_rx) = watch::channel(false);
    let ready = Rc::new(Cell::new(0usize));
    let request = Rc::new(upgrade_request(&target, false));
    eprintln!(
        "echo: opening {} connections to {}",
        a.connections, a.common.url
    );
    for _ in 0..a.connections {
        let (target, plan, sh, ready, request) = (
            target.clone(),
            plan.clone(),
            sh.clone(),
            ready.clone(),
            request.clone(),
        );
        let mut go = go_rx.clone();
        let raw = a.raw_tcp_peer;
        tokio::task::spawn_local(async move {
            let opened = if raw {
                TcpStream::connect(target.addr)
                    .await
                    .map(|tcp| {
                        let _ = tcp.set_nodelay(true);
                        Opened {
                            tcp,
                            leftover: Vec::new(),
                            deflate: false,
                        }
                    })
                    .map_err(|e| format!("connect: {e}"))
            } else {
                open(&target, &request).await
            };
            ready.set(ready.get() + 1);
            let opened = match opened {
                Ok(o) => o,
                Err(e) => return sh.error(e),
            };
            if go.wait_for(|g| *g).await.is_err() {
                return;
            }
            if let Err(e) = echo_conn(opened, &plan, &sh).await {
                sh.error(e);
            }
        });
    }
    let open_deadline = Instant::now() + Duration::from_secs(30);
    while ready.get() < a.connections {
        if Instant::now() > open_deadline {
            return Err(format!(
                "only {} of {} connections opened in 30 s",
                ready.get(),
                a.connections
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if sh.errors.get() == a.connections as u64 {
        return Err(format!("no connection opened: {}", sh.first_error()));
    }
    let _ = go_tx.send(true);
    let start = Instant::now();
    let measure_at = start + secs(a.warmup);
    let end = measure_at + secs(a.duration);
    progress("echo msgs", &sh, measure_at).await;
    let s0 = sample(a.common.server_pid);
    sh.phase.set(Phase::Measure);
    progress("echo msgs", &sh, end).await;
    sh.phase.set(Phase::Done);
    let s1 = sample(a.common.server_pid);
    let w = window(&s0, &s1);

    let msgs = sh.measured.get();
    let rate = msgs as f64 / w.secs;
    let mbps = rate * a.size as f64 / 1e6;
    let h = sh.hist.borrow();
    let (p50, p99, p999) = (
        h.quantile_us(0.5),
        h.quantile_us(0.99),
        h.quantile_us(0.999),
    );
    let cpu_per_msg = w
        .server_cpu
        .filter(|_| msgs > 0)
        .map(|c| c * 1e6 / msgs as f64);
    let errors = sh.errors.get();
    let kind = if a.text { "text" } else { "binary" };
    let mut human = format!(
        "echo {} conns x {} B {kind} depth {}{}: {:.0} msg/s, {:.2} MB/s, \
         p50 {p50:.0} us, p99 {p99:.0} us, p99.9 {p999:.0} us, {errors} errors",
        a.connections,
        a.size,
        a.depth,
        if a.raw_tcp_peer {
            " (raw TCP peer)"
        } else {
            ""
        },
        rate,
        mbps,
    );
    if let Some(c) = cpu_per_msg {
        let _ = write!(human, ", server {c:.3} us CPU/msg");
    }
    if let Some(c) = w.server_cpu {
        let _ = write!(human, " ({:.0}% of a core)", 100.0 * c / w.secs);
    }
    if let Some(c) = w.own_cpu {
        let _ = write!(human, ", generator {:.0}% of a core", 100.0 * c / w.secs);
    }
    if errors > 0 {
        let _ = write!(human, "; first error: {}", sh.first_error());
    }
    let json = Json::new()
        .str("mode", "echo")
        .str("label", &a.common.label)
        .str("url", &a.common.url)
        .int("connections", a.connections as u64)
        .int("depth", a.depth as u64)
        .int("size", a.size as u64)
        .bool("text", a.text)
        .bool("raw_tcp_peer", a.raw_tcp_peer)
        .num("duration_s", w.secs)
        .int("messages", msgs)
        .num("msgs_per_s", rate)
        .num("mb_per_s", mbps)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("p999_us", p999)
        .int("errors", errors)
        .str("first_error", &sh.first_error())
        .opt("server_cpu_s", w.server_cpu)
        .opt("server_cpu_us_per_msg", cpu_per_msg)
        .opt("server_cpu_util", w.server_cpu.map(|c| c / w.secs))
        .opt("server_rss_bytes", s1.server_rss.map(|r| r as f64))
        .opt("generator_cpu_util", w.own_cpu.map(|c| c / w.secs))
        .finish();
    Ok(Report {
        human,
        json,
        ok: errors == 0 && msgs > 0,
    })
}

/// A buffer whose bytes start half a page into a 4 KiB page, wherever the
/// allocator put it. The kernel copies what is written from it (and what
/// is read into it) with `rep movsb`, which on AMD Zen runs up to 16 times
/// slower when the destination is 1–63 bytes past the source modulo
/// 4 KiB; the socket's page fragments mostly start near a page's
/// beginning. A buffer at a random offset (the allocator's) made whole
/// runs of the generator twice as slow as others, at random
/// (bench/notes.md); half a page away, every run costs the same.
struct Placed {
    store: Vec<u8>,
    start: usize,
    len: usize,
}

impl Placed {
    const PAGE: usize = 4096;

    fn zeroed(len: usize) -> Self {
        let store = vec![0u8; len + Self::PAGE];
        let start = (Self::PAGE / 2).wrapping_sub(store.as_ptr() as usize) & (Self::PAGE - 1);
        Placed { store, start, len }
    }

    fn copy_of(bytes: &[u8]) -> Self {
        let mut p = Self::zeroed(bytes.len());
        p.copy_from_slice(bytes);
        p
    }
}

impl std::ops::Deref for Placed {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.store[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Placed {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.store[self.start..self.start + self.len]
    }
}

/// One echo connection: keeps `depth` messages in flight, checks every
/// echo, and records each round trip while the window is open. Reads and
/// writes interleave on readiness, so a large message can be echoed while
/// it is still being sent.
async fn echo_conn(o: Opened, plan: &EchoPlan, sh: &Shared) -> Result<(), String> {
    let Opened { tcp, leftover, .. } = o;
    let mut checker = Checker::new();
    let mut rbuf = Placed::zeroed(plan.batch.len().clamp(64 << 10, 1 << 20));
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(plan.depth);
    let now = Instant::now();
    sent_at.extend((0..plan.depth).map(|_| now));
    // Bytes still to write, and where in a frame the next write starts.
    let mut pending = plan.batch.len();
    let mut cursor = 0usize;
    let mut got = checker.feed(&leftover, &plan.expect)?;
    loop {
        if got > 0 {
            let now = Instant::now();
            let measuring = sh.phase.get() == Phase::Measure;
            let mut hist = sh.hist.borrow_mut();
            for _ in 0..got {
                let t = sent_at
                    .pop_front()
                    .ok_or("more echoes than messages sent")?;
                if measuring {
                    hist.record(now - t);
                }
                sent_at.push_back(now);
            }
            drop(hist);
            if measuring {
                sh.measured.set(sh.measured.get() + got as u64);
            }
            sh.total.set(sh.total.get() + got as u64);
            pending += got * plan.frame_len;
            got = 0;
        }
        if pending > 0 {
            let len = pending.min(plan.batch.len() - cursor);
            match tcp.try_write(&plan.batch[cursor..cursor + len]) {
                Ok(n) => {
                    pending -= n;
                    cursor = (cursor + n) % plan.frame_len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        let interest = if pending > 0 {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let ready = tcp.ready(interest).await.map_err(|e| e.to_string())?;
        if ready.is_readable() {
            match tcp.try_read(&mut rbuf) {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => got = checker.feed(&rbuf[..n], &plan.expect)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}
