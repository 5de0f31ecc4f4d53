//! `duplex bench broadcast`: N subscribers on one channel and a publisher,
//! measuring fan-out: deliveries per second, publish→delivery latency, the
//! server's CPU time per delivery and its memory per subscribed connection,
//! and checking that every subscriber got every publication, in order.
//!
//! Protocols (`--protocol`):
//!
//! - `centrifuge` (Duplex, or any Centrifugo-compatible server): each
//!   subscriber opens the WebSocket, sends `connect` and `subscribe` in one
//!   frame, checks both replies, then expects pushes
//!   `{"push":{"channel":C,"pub":{"data":DATA}}}` (an `"offset"` after the
//!   data is accepted) and answers server pings `{}` with `{}`. The
//!   publisher posts `{"channel":C,"data":DATA}` to `/api/publish` on one
//!   kept-alive HTTP/1.1 connection (`X-API-Key`), requests pipelined up to
//!   the window, every answer checked.
//! - `plain` (peer servers that fan out whatever a client sends): the
//!   subscribers only open a WebSocket; the publisher is one more WebSocket
//!   connection sending DATA as a text message, which the server sends to
//!   every other connection as a text message. With `--raw-tcp-peer` no
//!   handshake is made and the publisher sends unmasked frames that a plain
//!   TCP fan-out copies to every other connection as they are.
//!
//! DATA is exactly `--size` bytes of JSON: `{"seq":N,"ts":T,"pad":"abc…"}`,
//! N counting publications from 1 and T the send time (nanoseconds since
//! the generator started, on its own clock — the subscribers are in the
//! same process). Every delivery is checked whole: the frame, the push
//! around the data, the padding; its sequence number must follow the
//! subscriber's previous one.
//!
//! The publisher goes as fast as the server delivers: it keeps at most
//! `--window` publications that some subscriber still lacks, so the server
//! is saturated but never flooded into slow-client disconnects. With
//! `--rate R` it publishes R per second instead, whatever the server does.
//!
//! Before measuring, the publisher sends probes (sequence 0, not counted)
//! until every subscriber has seen one, so a server that registers a
//! connection some time after its handshake loses nothing that counts.
//! Memory is read before the first connection and after all are
//! subscribed and held `--hold` seconds, before any publication.

use super::frame::{put_frame, unmasked_header, OP_CLOSE, OP_TEXT};
use super::json::Json;
use super::open::{open, resolve, upgrade_request, Opened, Target};
use super::sample::{growth_per, sample, window, Sample};
use super::shared::{progress, secs, Phase, Shared};
use super::{parse_size, Common, Report};
use clap::{Args, ValueEnum};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Options of `duplex bench broadcast`.
#[derive(Args, Debug)]
pub(super) struct BroadcastArgs {
    #[command(flatten)]
    common: Common,
    /// Subscriber connections.
    #[arg(short = 'c', long, default_value_t = 1000)]
    connections: usize,
    /// Bytes of each publication's data (JSON; at least 48).
    #[arg(long, default_value = "100", value_parser = parse_size)]
    size: usize,
    /// Publications per second; without it, as fast as the server delivers
    /// (see --window).
    #[arg(long)]
    rate: Option<f64>,
    /// Most publications some subscriber has not received yet; the next
    /// one waits until the slowest subscriber catches up.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of publishing before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to hold the subscribed connections idle before the server's
    /// memory is read.
    #[arg(long, default_value_t = 1.0)]
    hold: f64,
    /// Connections being opened (and subscribed) at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// What the subscribers and the publisher speak.
    #[arg(long, value_enum, default_value_t = Protocol::Centrifuge)]
    protocol: Protocol,
    /// The peer is a plain TCP fan-out (implies `--protocol plain`): no
    /// handshakes, and the publisher sends unmasked frames, which the peer
    /// copies to every other connection.
    #[arg(long)]
    raw_tcp_peer: bool,
    /// The channel (centrifuge).
    #[arg(long, default_value = "bench")]
    channel: String,
    /// The HTTP API key (centrifuge); empty sends none.
    #[arg(long, default_value = "bench")]
    api_key: String,
    /// Open the subscribers on these servers instead (repeatable; spread
    /// round-robin), while the publisher still posts to URL: nodes of one
    /// cluster, to measure delivery across nodes.
    #[arg(long = "subscribe-to", value_name = "URL")]
    subscribe_to: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// Centrifugo client protocol v2 (JSON); publications via /api/publish.
    Centrifuge,
    /// Plain WebSocket messages, fanned out by the server to the others.
    Plain,
}

/// Where a run is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Subscribers connecting and idling: nothing is published.
    Setup,
    /// Probes until every subscriber has seen one.
    Probe,
    /// Publishing.
    Run,
    /// No more publications; the last ones are being delivered.
    Stop,
}

/// What every delivery must look like, built once.
struct Plan {
    protocol: Protocol,
    raw: bool,
    size: usize,
    /// The push up to the data (centrifuge), or nothing (plain).
    prefix: Vec<u8>,
    /// Padding characters; each publication uses the first ones it needs.
    pad: Vec<u8>,
    /// `connect` and `subscribe` in one masked frame (centrifuge).
    subscribe: Vec<u8>,
    /// The answer to a server ping: `{}` as a masked text frame.
    pong: Vec<u8>,
    channel: String,
}

/// The data of one publication: exactly `size` bytes.
fn data(plan: &Plan, seq: u64, ts: u64, out: &mut Vec<u8>) {
    let start = out.len();
    let _ = write!(VecWriter(out), "{{\"seq\":{seq},\"ts\":{ts},\"pad\":\"");
    let pad = plan.size.saturating_sub(out.len() - start + 2);
    out.extend_from_slice(&plan.pad[..pad]);
    out.extend_from_slice(b"\"}");
}

/// `fmt::Write` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A decimal number at the start of `b`, and what follows it.
/// At most 19 digits, so the value fits in a `u64` (the generator parses
/// one or two per delivery: this is on its hot path).
fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    let mut n = 0;
    while let Some(&c) = b.get(n) {
        if !c.is_ascii_digit() {
            break;
        }
        if n == 19 {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
        n += 1;
    }
    (n > 0).then_some((v, &b[n..]))
}

/// Checks a publication's data; returns its sequence number and send time.
fn parse_data(plan: &Plan, d: &[u8]) -> Result<(u64, u64), String> {
    let bad = || {
        format!(
            "publication data differs from what was published: {}",
            String::from_utf8_lossy(&d[..d.len().min(80)])
        )
    };
    if d.len() != plan.size {
        return Err(bad());
    }
    let (seq, rest) = d
        .strip_prefix(b"{\"seq\":")
        .and_then(number)
        .ok_or_else(bad)?;
    let (ts, rest) = rest
        .strip_prefix(b",\"ts\":")
        .and_then(number)
        .ok_or_else(bad)?;
    let pad = rest
        .strip_prefix(b",\"pad\":\"")
        .and_then(|r| r.strip_suffix(b"\"}"))
        .ok_or_else(bad)?;
    if pad != &plan.pad[..pad.len()] {
        return Err(bad());
    }
    Ok((seq, ts))
}

/// The data inside a push: `PREFIX DATA [,"offset":N] }}}`.
fn push_data<'a>(plan: &Plan, p: &'a [u8]) -> Result<&'a [u8], String> {
    push_slice(plan, p).ok_or_else(|| {
        format!(
            "unexpected message: {}",
            String::from_utf8_lossy(&p[..p.len().min(120)])
        )
    })
}

/// [`push_data`] without the error's text.
fn push_slice<'a>(plan: &Plan, p: &'a [u8]) -> Option<&'a [u8]> {
    let end = plan.prefix.len() + plan.size;
    let ok = p.len() >= end + 3 && p.starts_with(&plan.prefix) && {
        let tail = &p[end..];
        tail == b"}}}"
            || tail
                .strip_prefix(b",\"offset\":")
                .and_then(number)
                .is_some_and(|(_, r)| r == b"}}}")
    };
    ok.then(|| &p[plan.prefix.len()..end])
}

// ----------------------------------------------------------------- state --

/// What the subscribers and the publisher share (one thread).
struct State {
    stage: Cell<Stage>,
    /// Subscribers still connected.
    alive: Cell<usize>,
    /// Subscribers that have seen a probe.
    probed: Cell<usize>,
    /// The last sequence number published (0: none yet).
    published: Cell<u64>,
    /// Every live subscriber has every publication up to this one.
    complete: Cell<u64>,
    /// Receivers so far of publications `complete + 1 ..= published`.
    pending: RefCell<VecDeque<u32>>,
    /// Publications received, all told (each checked in order).
    received: Cell<u64>,
    /// Record deliveries and latencies (the measured window).
    counting: Cell<bool>,
    /// Publications published in the measured window.
    publications: Cell<u64>,
    /// Requests the publisher sent whose answer has not come.
    unanswered: Cell<u64>,
    /// The publisher failed (its error is counted).
    publisher_failed: Cell<bool>,
    /// Wakes the publisher: a publication completed, or a probe was seen.
    wake: Notify,
    /// Where the subscribers read (one at a time: one thread).
    scratch: RefCell<Vec<u8>>,
    /// The clock of every `ts`.
    base: Instant,
}

impl State {
    /// Marks publications complete while every live subscriber has them.
    fn advance(&self) {
        let mut pending = self.pending.borrow_mut();
        let alive = self.alive.get() as u32;
        let before = self.complete.get();
        while pending.front().is_some_and(|&n| n >= alive) {
            pending.pop_front();
            self.complete.set(self.complete.get() + 1);
        }
        if self.complete.get() != before {
            self.wake.notify_one();
        }
    }

    fn gone(&self) {
        self.alive.set(self.alive.get().saturating_sub(1));
        self.advance();
    }
}

/// One subscriber's position.
struct Sub {
    /// The last publication received (0: none).
    last: u64,
    probed: bool,
    /// Both replies to `connect` + `subscribe` seen (centrifuge).
    subscribed: bool,
    /// Told when subscribed (dropped if the connection fails first).
    ready: Option<oneshot::Sender<()>>,
    /// A pong not yet written.
    unsent: Vec<u8>,
}

/// A delivery: checks the order and counts it.
fn delivered(ctx: &Ctx, sub: &mut Sub, d: &[u8], now: Instant) -> Result<(), String> {
    let (st, sh) = (&ctx.st, &ctx.sh);
    let (seq, ts) = parse_data(&ctx.plan, d)?;
    if seq == 0 {
        if sub.last != 0 {
            return Err("a probe after the publications".into());
        }
        if !sub.probed {
            sub.probed = true;
            st.probed.set(st.probed.get() + 1);
            st.wake.notify_one();
        }
        return Ok(());
    }
    if seq != sub.last + 1 {
        return Err(format!(
            "publication {seq} after {}: {}",
            sub.last,
            if seq <= sub.last {
                "out of order or twice"
            } else {
                "some lost"
            }
        ));
    }
    sub.last = seq;
    st.received.set(st.received.get() + 1);
    sh.total.set(sh.total.get() + 1);
    if st.counting.get() {
        sh.measured.set(sh.measured.get() + 1);
        let sent = st.base + Duration::from_nanos(ts);
        sh.hist
            .borrow_mut()
            .record(now.saturating_duration_since(sent));
    }
    let i = (seq - st.complete.get() - 1) as usize;
    let first = {
        let mut pending = st.pending.borrow_mut();
        let n = pending
            .get_mut(i)
            .ok_or("a publication that was never published")?;
        *n += 1;
        i == 0
    };
    if first {
        st.advance();
    }
    Ok(())
}

/// One server frame.
fn on_frame(ctx: &Ctx, sub: &mut Sub, b0: u8, p: &[u8], now: Instant) -> Result<(), String> {
    let plan = &ctx.plan;
    match b0 & 0x0f {
        OP_CLOSE => {
            let code = p.get(..2).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
            let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default());
            return Err(format!("server closed the connection: {code} {reason}"));
        }
        OP_PING => {
            put_frame(&mut sub.unsent, OP_PONG, p, !plan.raw);
            return Ok(());
        }
        OP_PONG => return Ok(()),
        _ => {}
    }
    if b0 != 0x80 | OP_TEXT {
        return Err(format!("unexpected frame header byte {b0:#04x}"));
    }
    if plan.protocol == Protocol::Plain {
        return delivered(ctx, sub, p, now);
    }
    // Most frames are one push: checked whole, without a scan for the
    // line breaks that separate several (data is JSON: it has none).
    if sub.subscribed {
        if let Some(d) = push_slice(plan, p) {
            return delivered(ctx, sub, d, now);
        }
    }
    for line in p.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if line == b"{}" {
            sub.unsent.extend_from_slice(&plan.pong);
        } else if sub.subscribed {
            delivered(ctx, sub, push_data(plan, line)?, now)?;
        } else {
            reply(sub, line)?;
        }
    }
    Ok(())
}

/// A reply to `connect` (id 1) or `subscribe` (id 2).
fn reply(sub: &mut Sub, line: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(line);
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("reply {text}: {e}"))?;
    if v.get("error").is_some() {
        return Err(format!("refused: {text}"));
    }
    match (v["id"].as_u64(), v.get("connect"), v.get("subscribe")) {
        (Some(1), Some(_), _) => Ok(()),
        (Some(2), _, Some(_)) => {
            sub.subscribed = true;
            if let Some(r) = sub.ready.take() {
                let _ = r.send(());
            }
            Ok(())
        }
        _ => Err(format!("unexpected reply: {text}")),
    }
}

/// Feeds what a read brought; whole frames are handled, the rest kept.
fn feed(ctx: &Ctx, sub: &mut Sub, partial: &mut Vec<u8>, data: &[u8]) -> Result<(), String> {
    let now = Instant::now();
    let owned;
    let mut b: &[u8] = if partial.is_empty() {
        data
    } else {
        partial.extend_from_slice(data);
        owned = std::mem::take(partial);
        &owned
    };
    while let Some((b0, start, len)) = unmasked_header(b)? {
        if b.len() < start + len {
            break;
        }
        on_frame(ctx, sub, b0, &b[start..start + len], now)?;
        b = &b[start + len..];
    }
    partial.extend_from_slice(b);
    Ok(())
}

/// Writes what of `out` the socket takes now; returns what to wait for
/// next: reading, and writing too while something is left.
fn write_some(tcp: &TcpStream, out: &mut Vec<u8>) -> std::io::Result<Interest> {
    if !out.is_empty() {
        match tcp.try_write(out) {
            Ok(n) => drop(out.drain(..n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(match out.is_empty() {
        true => Interest::READABLE,
        false => Interest::READABLE | Interest::WRITABLE,
    })
}

/// One subscriber: reads, checks and counts until the socket fails.
async fn subscriber(o: Opened, ctx: Rc<Ctx>, mut sub: Sub) -> Result<(), String> {
    let Opened { tcp, leftover, .. } = o;
    let mut partial = Vec::new();
    feed(&ctx, &mut sub, &mut partial, &leftover)?;
    loop {
        let interest = write_some(&tcp, &mut sub.unsent).map_err(|e| format!("write: {e}"))?;
        let ready = tcp.ready(interest).await.map_err(|e| e.to_string())?;
        if !ready.is_readable() {
            continue;
        }
        let mut buf = ctx.st.scratch.borrow_mut();
        match tcp.try_read(&mut buf) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => feed(&ctx, &mut sub, &mut partial, &buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Everything a task needs.
struct Ctx {
    st: State,
    sh: Rc<Shared>,
    plan: Plan,
    target: Target,
    request: Vec<u8>,
    api_key: String,
    /// Where subscribers go (the target, or the `--subscribe-to` servers)
    /// with their upgrade requests.
    sub_targets: Vec<(Target, Vec<u8>)>,
}

/// Opens one subscriber and starts its task; returns once it is
/// subscribed (centrifuge) or open (plain): `Ok(false)` if it failed
/// before, which its task has counted as an error already.
async fn open_subscriber(ctx: &Rc<Ctx>, index: usize) -> Result<bool, String> {
    let (target, request) = &ctx.sub_targets[index % ctx.sub_targets.len()];
    let mut o = if ctx.plan.raw {
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Opened {
            tcp,
            leftover: Vec::new(),
            deflate: false,
        }
    } else {
        open(target, request).await?
    };
    let (tx, rx) = oneshot::channel();
    let mut sub = Sub {
        last: 0,
        probed: false,
        subscribed: ctx.plan.protocol == Protocol::Plain,
        ready: Some(tx),
        unsent: Vec::new(),
    };
    if sub.subscribed {
        let _ = sub.ready.take().map(|r| r.send(()));
    } else {
        o.tcp
            .write_all(&ctx.plan.subscribe)
            .await
            .map_err(|e| format!("send connect: {e}"))?;
    }
    ctx.st.alive.set(ctx.st.alive.get() + 1);
    let c = ctx.clone();
    tokio::task::spawn_local(async move {
        let e = match subscriber(o, c.clone(), sub).await {
            Ok(()) => return,
            Err(e) => e,
        };
        c.st.gone();
        c.sh.error(e);
    });
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(_)) => Ok(false),
        Err(_) => Err("no subscribe reply in 10 s".into()),
    }
}

// ------------------------------------------------------------- publisher --

/// The publisher's connection.
struct Publisher {
    tcp: TcpStream,
    /// Bytes to write.
    out: Vec<u8>,
    /// Bytes of answers not yet parsed (API).
    answers: Vec<u8>,
    /// Start of an API request, up to the Content-Length value.
    head: Vec<u8>,
}

async fn publisher_open(ctx: &Ctx) -> Result<Publisher, String> {
    let head = match ctx.plan.protocol {
        Protocol::Centrifuge => {
            let key = match ctx.api_key.as_str() {
                "" => String::new(),
                k => format!("X-API-Key: {k}\r\n"),
            };
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: {}\r\n{key}Content-Type: application/json\r\nContent-Length: ",
                ctx.target.host
            )
            .into_bytes()
        }
        Protocol::Plain => Vec::new(),
    };
    let tcp = if ctx.plan.protocol == Protocol::Plain && !ctx.plan.raw {
        let o = open(&ctx.target, &ctx.request).await?;
        o.tcp
    } else {
        let tcp = TcpStream::connect(ctx.target.addr)
            .await
            .map_err(|e| format!("publisher connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tcp
    };
    Ok(Publisher {
        tcp,
        out: Vec::new(),
        answers: Vec::new(),
        head,
    })
}

impl Publisher {
    /// Queues publication `seq` sent at `ts`.
    fn publish(&mut self, plan: &Plan, st: &State, seq: u64, ts: u64) {
        let mut d = Vec::with_capacity(plan.size);
        data(plan, seq, ts, &mut d);
        match plan.protocol {
            Protocol::Centrifuge => {
                let mut body = Vec::with_capacity(d.len() + plan.channel.len() + 32);
                body.extend_from_slice(b"{\"channel\":");
                body.extend_from_slice(
                    serde_json::to_string(&plan.channel)
                        .unwrap_or_default()
                        .as_bytes(),
                );
                body.extend_from_slice(b",\"data\":");
                body.extend_from_slice(&d);
                body.push(b'}');
                self.out.extend_from_slice(&self.head);
                let _ = write!(VecWriter(&mut self.out), "{}\r\n\r\n", body.len());
                self.out.extend_from_slice(&body);
                st.unanswered.set(st.unanswered.get() + 1);
            }
            Protocol::Plain => put_frame(&mut self.out, OP_TEXT, &d, !plan.raw),
        }
        if seq > 0 {
            st.published.set(seq);
            st.pending.borrow_mut().push_back(0);
            if st.counting.get() {
                st.publications.set(st.publications.get() + 1);
            }
        }
    }

    /// Parses the API answers read so far; each must be 200 with a result.
    fn answers(&mut self, st: &State) -> Result<(), String> {
        loop {
            let Some(end) = self.answers.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.answers[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("API answer without Content-Length: {head}"))?;
            if self.answers.len() < end + 4 + len {
                return Ok(());
            }
            let body = &self.answers[end + 4..end + 4 + len];
            if !head.starts_with("HTTP/1.1 200") || !body.starts_with(b"{\"result\":") {
                return Err(format!(
                    "publish refused: {} {}",
                    head.lines().next().unwrap_or_default(),
                    String::from_utf8_lossy(body)
                ));
            }
            self.answers.drain(..end + 4 + len);
            st.unanswered.set(st.unanswered.get().saturating_sub(1));
        }
    }
}

/// Publishes while the stage and the window allow, until the task is
/// dropped.
async fn publisher(
    ctx: Rc<Ctx>,
    mut p: Publisher,
    rate: Option<f64>,
    window: u64,
) -> Result<(), String> {
    let (st, plan) = (&ctx.st, &ctx.plan);
    // Long enough for a slow server to deliver one probe to everybody
    // before the next is sent.
    let probe_every = Duration::from_millis(250);
    let mut next_probe = Instant::now();
    let mut next_due: Option<Instant> = None;
    let mut rbuf = vec![0u8; 64 << 10];
    loop {
        let now = Instant::now();
        let mut timer = None;
        match st.stage.get() {
            Stage::Setup | Stage::Stop => {}
            Stage::Probe => {
                if st.probed.get() < st.alive.get() {
                    if now >= next_probe {
                        p.publish(plan, st, 0, 0);
                        next_probe = now + probe_every;
                    }
                    timer = Some(next_probe);
                }
            }
            Stage::Run => match rate {
                None => {
                    while st.published.get() < st.complete.get() + window
                        && st.unanswered.get() < window
                    {
                        let ts = st.base.elapsed().as_nanos() as u64;
                        p.publish(plan, st, st.published.get() + 1, ts);
                    }
                }
                Some(r) => {
                    let step = Duration::from_secs_f64(1.0 / r);
                    let mut due = *next_due.get_or_insert(now);
                    while due <= now {
                        let ts = (due - st.base).as_nanos() as u64;
                        p.publish(plan, st, st.published.get() + 1, ts);
                        due += step;
                    }
                    next_due = Some(due);
                    timer = Some(due);
                }
            },
        }
        let interest =
            write_some(&p.tcp, &mut p.out).map_err(|e| format!("publisher write: {e}"))?;
        let sleep = tokio::time::sleep_until(timer.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            Into::into,
        ));
        tokio::select! {
            r = p.tcp.ready(interest) => {
                let ready = r.map_err(|e| e.to_string())?;
                if ready.is_readable() {
                    match p.tcp.try_read(&mut rbuf) {
                        Ok(0) => return Err("the server closed the publisher's connection".into()),
                        Ok(n) => {
                            if plan.protocol == Protocol::Centrifuge {
                                p.answers.extend_from_slice(&rbuf[..n]);
                                p.answers(st)?;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(format!("publisher read: {e}")),
                    }
                }
            }
            _ = st.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

// ------------------------------------------------------------------- run --

/// Waits until `done()` or `limit` passes; says which.
async fn until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

fn plan(a: &BroadcastArgs, protocol: Protocol) -> Plan {
    let channel = serde_json::to_string(&a.channel).unwrap_or_default();
    let mut subscribe = Vec::new();
    let commands = format!(
        "{{\"connect\":{{\"name\":\"duplex-bench\"}},\"id\":1}}\n{{\"subscribe\":{{\"channel\":{channel}}},\"id\":2}}"
    );
    put_frame(&mut subscribe, OP_TEXT, commands.as_bytes(), true);
    let mut pong = Vec::new();
    put_frame(&mut pong, OP_TEXT, b"{}", true);
    Plan {
        protocol,
        raw: a.raw_tcp_peer,
        size: a.size,
        prefix: match protocol {
            Protocol::Centrifuge => {
                format!("{{\"push\":{{\"channel\":{channel},\"pub\":{{\"data\":").into_bytes()
            }
            Protocol::Plain => Vec::new(),
        },
        pad: (0..a.size).map(|i| b'a' + (i % 26) as u8).collect(),
        subscribe,
        pong,
        channel: a.channel.clone(),
    }
}

/// Opens every subscriber, `concurrency` at a time; returns how many are
/// subscribed.
async fn open_all(ctx: &Rc<Ctx>, n: usize, concurrency: usize) -> usize {
    let next = Rc::new(Cell::new(0usize));
    let opened = Rc::new(Cell::new(0usize));
    let finished = Rc::new(Cell::new(0usize));
    let workers = concurrency.clamp(1, n);
    for _ in 0..workers {
        let (ctx, next, opened, finished) =
            (ctx.clone(), next.clone(), opened.clone(), finished.clone());
        tokio::task::spawn_local(async move {
            while next.get() < n {
                let index = next.get();
                next.set(index + 1);
                match open_subscriber(&ctx, index).await {
                    Ok(true) => opened.set(opened.get() + 1),
                    Ok(false) => {}
                    Err(e) => ctx.sh.error(e),
                }
            }
            finished.set(finished.get() + 1);
        });
    }
    let mut last = Instant::now();
    while finished.get() < workers {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "broadcast: {} subscribed, {} errors",
                opened.get(),
                ctx.sh.errors.get()
            );
            last = Instant::now();
        }
    }
    opened.get()
}

pub(super) async fn run(a: BroadcastArgs) -> Result<Report, String> {
    if a.connections == 0 || a.window == 0 {
        return Err("--connections and --window must be at least 1".into());
    }
    if a.size < 48 {
        return Err("--size must be at least 48 (the sequence number and time stamp)".into());
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    let protocol = if a.raw_tcp_peer {
        Protocol::Plain
    } else {
        a.protocol
    };
    let target = resolve(&a.common.url).await?;
    let request = upgrade_request(&target, false);
    let mut sub_targets = Vec::new();
    for url in &a.subscribe_to {
        let t = resolve(url).await?;
        let r = upgrade_request(&t, false);
        sub_targets.push((t, r));
    }
    if sub_targets.is_empty() {
        sub_targets.push((target.clone(), request.clone()));
    }
    let ctx = Rc::new(Ctx {
        st: State {
            stage: Cell::new(Stage::Setup),
            alive: Cell::new(0),
            probed: Cell::new(0),
            published: Cell::new(0),
            complete: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
            received: Cell::new(0),
            counting: Cell::new(false),
            publications: Cell::new(0),
            unanswered: Cell::new(0),
            publisher_failed: Cell::new(false),
            wake: Notify::new(),
            scratch: RefCell::new(vec![0u8; 1 << 20]),
            base: Instant::now(),
        },
        sh: Shared::new(),
        plan: plan(&a, protocol),
        target,
        request,
        api_key: a.api_key.clone(),
        sub_targets,
    });
    let (st, sh) = (&ctx.st, &ctx.sh);
    let mode = match (protocol, a.raw_tcp_peer) {
        (Protocol::Centrifuge, _) => "centrifuge, publisher: HTTP API",
        (Protocol::Plain, false) => "plain, publisher: a WebSocket client",
        (Protocol::Plain, true) => "raw TCP peer",
    };
    // Let the server settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s0 = sample(a.common.server_pid);
    let to = if a.subscribe_to.is_empty() {
        a.common.url.clone()
    } else {
        a.subscribe_to.join(", ")
    };
    eprintln!(
        "broadcast: opening {} subscribers to {to} ({mode})",
        a.connections
    );
    let subscribed = open_all(&ctx, a.connections, a.concurrency).await;
    if subscribed == 0 {
        return Err(format!("no subscriber: {}", sh.first_error()));
    }
    let s_open = sample(a.common.server_pid);
    eprintln!(
        "broadcast: {subscribed} subscribed, holding for {} s",
        a.hold
    );
    tokio::time::sleep(secs(a.hold)).await;
    let s_sub = sample(a.common.server_pid);
    let open_s = (s_open.at - s0.at).as_secs_f64();

    let p = publisher_open(&ctx).await?;
    let c = ctx.clone();
    let (rate, depth) = (a.rate, a.window);
    tokio::task::spawn_local(async move {
        if let Err(e) = publisher(c.clone(), p, rate, depth).await {
            c.st.publisher_failed.set(true);
            c.sh.error(e);
        }
    });
    st.stage.set(Stage::Probe);
    st.wake.notify_one();
    let probed = || st.probed.get() >= st.alive.get() || st.publisher_failed.get();
    if !until(Duration::from_secs(10), probed).await {
        sh.error(format!(
            "only {} of {} subscribers got a probe publication in 10 s",
            st.probed.get(),
            st.alive.get()
        ));
    }
    st.stage.set(Stage::Run);
    st.wake.notify_one();
    let start = Instant::now();
    let measure_at = start + secs(a.warmup);
    let end = measure_at + secs(a.duration);
    progress("deliveries", sh, measure_at).await;
    let s1 = sample(a.common.server_pid);
    st.counting.set(true);
    sh.phase.set(Phase::Measure);
    progress("deliveries", sh, end).await;
    st.counting.set(false);
    let s2 = sample(a.common.server_pid);
    st.stage.set(Stage::Stop);
    // Every publication must reach every subscriber: wait while they
    // still arrive.
    let mut seen = (st.received.get(), Instant::now());
    let drained = loop {
        let all = st.complete.get() >= st.published.get() && st.unanswered.get() == 0;
        if all || st.publisher_failed.get() {
            break true;
        }
        if st.received.get() != seen.0 {
            seen = (st.received.get(), Instant::now());
        } else if seen.1.elapsed() > Duration::from_secs(5) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let published = st.published.get();
    let lost = (published * subscribed as u64).saturating_sub(st.received.get());
    if lost > 0 {
        sh.error(format!(
            "{lost} deliveries missing 5 s after the last one arrived"
        ));
    } else if !drained {
        sh.error(format!(
            "{} API answers missing 5 s after the last delivery",
            st.unanswered.get()
        ));
    }
    let s3 = sample(a.common.server_pid);
    let errors = sh.errors.get();
    let first_error = sh.first_error();
    sh.phase.set(Phase::Done);

    let w = window(&s1, &s2);
    let deliveries = sh.measured.get();
    let rate = deliveries as f64 / w.secs;
    let pub_rate = st.publications.get() as f64 / w.secs;
    let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| sh.hist.borrow().quantile_us(q));
    let cpu_per = match deliveries {
        0 => None,
        n => w.server_cpu.map(|c| c * 1e6 / n as f64),
    };
    let rss_per = growth_per(s0.server_rss, s_sub.server_rss, subscribed as u64);
    let anon_per = growth_per(s0.server_anon, s_sub.server_anon, subscribed as u64);
    let mut human = format!(
        "broadcast {subscribed} of {} subscribers x {} B ({mode}, {}): {rate:.0} deliveries/s \
         ({pub_rate:.0} publications/s), p50 {p50:.0} us, p99 {p99:.0} us, p99.9 {p999:.0} us, \
         {lost} lost, {errors} errors",
        a.connections,
        a.size,
        match a.rate {
            Some(r) => format!("{r} publications/s"),
            None => format!("window {}", a.window),
        },
    );
    if let Some(c) = cpu_per {
        let _ = write!(human, ", server {c:.3} us CPU/delivery");
    }
    if let Some(c) = w.server_cpu {
        let _ = write!(human, " ({:.0}% of a core)", 100.0 * c / w.secs);
    }
    if let Some(r) = rss_per {
        let _ = write!(human, ", server RSS +{r:.0} B per subscribed connection");
    }
    if let Some(r) = anon_per {
        let _ = write!(human, " (anonymous +{r:.0} B)");
    }
    if let Some(c) = w.own_cpu {
        let _ = write!(human, ", generator {:.0}% of a core", 100.0 * c / w.secs);
    }
    if errors > 0 {
        let _ = write!(human, "; first error: {first_error}");
    }
    let rss = |s: &Sample| s.server_rss.map(|r| r as f64);
    let json = Json::new()
        .str("mode", "broadcast")
        .str("label", &a.common.label)
        .str("url", &a.common.url)
        .str(
            "protocol",
            if a.raw_tcp_peer {
                "raw-tcp"
            } else {
                match protocol {
                    Protocol::Centrifuge => "centrifuge",
                    Protocol::Plain => "plain",
                }
            },
        )
        .int("connections", a.connections as u64)
        .int("subscribed", subscribed as u64)
        .int("size", a.size as u64)
        .int("window", a.window)
        .opt("rate", a.rate)
        .num("open_s", open_s)
        .num("duration_s", w.secs)
        .int("publications", st.publications.get())
        .int("deliveries", deliveries)
        .num("deliveries_per_s", rate)
        .num("publications_per_s", pub_rate)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("p999_us", p999)
        .int("published_total", published)
        .int("lost", lost)
        .bool("complete", lost == 0 && subscribed == a.connections)
        .int("errors", errors)
        .str("first_error", &first_error)
        .opt("server_cpu_s", w.server_cpu)
        .opt("server_cpu_us_per_delivery", cpu_per)
        .opt("server_cpu_util", w.server_cpu.map(|c| c / w.secs))
        .opt("generator_cpu_util", w.own_cpu.map(|c| c / w.secs))
        .opt("server_rss_before_bytes", rss(&s0))
        .opt("server_rss_subscribed_bytes", rss(&s_sub))
        .opt("server_rss_after_bytes", rss(&s3))
        .opt("rss_bytes_per_conn", rss_per)
        .opt("anon_bytes_per_conn", anon_per)
        .finish();
    Ok(Report {
        human,
        json,
        ok: errors == 0 && lost == 0 && deliveries > 0 && subscribed == a.connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: BroadcastArgs,
    }

    fn plan_for(args: &[&str]) -> Plan {
        let a = Cli::parse_from([&["bench", "ws://127.0.0.1:1/"][..], args].concat()).a;
        let protocol = if a.raw_tcp_peer {
            Protocol::Plain
        } else {
            a.protocol
        };
        plan(&a, protocol)
    }

    #[test]
    fn data_is_json_of_the_exact_size_and_parses_back() {
        for size in ["48", "100", "1KiB"] {
            let p = plan_for(&["--size", size]);
            for (seq, ts) in [
                (0, 0),
                (1, 123_456_789),
                (u32::MAX as u64, 9_999_999_999_999),
            ] {
                let mut d = Vec::new();
                data(&p, seq, ts, &mut d);
                assert_eq!(d.len(), p.size, "size {size}");
                let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
                assert_eq!((v["seq"].as_u64(), v["ts"].as_u64()), (Some(seq), Some(ts)));
                assert_eq!(parse_data(&p, &d), Ok((seq, ts)));
                let last = d.len() - 3;
                d[last] ^= 1;
                assert!(parse_data(&p, &d).is_err());
            }
        }
    }

    #[test]
    fn pushes_are_checked_around_the_data() {
        let p = plan_for(&["--channel", "news"]);
        let mut d = Vec::new();
        data(&p, 7, 9, &mut d);
        let push = |tail: &str| {
            let mut m = br#"{"push":{"channel":"news","pub":{"data":"#.to_vec();
            m.extend_from_slice(&d);
            m.extend_from_slice(tail.as_bytes());
            m
        };
        assert_eq!(push_data(&p, &push("}}}")), Ok(&d[..]));
        assert_eq!(push_data(&p, &push(r#","offset":42}}}"#)), Ok(&d[..]));
        assert!(push_data(&p, &push(r#","info":{"client":"x"}}}}"#)).is_err());
        assert!(push_data(&p, &push("}}")).is_err());
        let other = plan_for(&["--channel", "sport"]);
        assert!(push_data(&other, &push("}}}")).is_err());
    }

    #[test]
    fn numbers_are_read_up_to_nineteen_digits() {
        assert_eq!(number(b"0,"), Some((0, &b","[..])));
        assert_eq!(
            number(b"1234567890123456789}"),
            Some((1234567890123456789, &b"}"[..]))
        );
        assert_eq!(number(b"12345678901234567890"), None);
        assert_eq!(number(b",1"), None);
        assert_eq!(number(b""), None);
    }
}
