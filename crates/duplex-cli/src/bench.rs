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

use clap::{Args, Subcommand};
use duplex::proto::deflate::{DeflateParams, Deflater, Inflater, Side};
use duplex::DeflateConfig;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Options of `duplex bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Echo load: messages sent and their echoes verified byte for byte.
    Echo(EchoArgs),
    /// Open connections and hold them; reports the server's memory growth.
    Idle(IdleArgs),
    /// Connect, upgrade and close, over and over.
    Handshake(HandshakeArgs),
    /// One channel, N subscribers, a publisher: fan-out rate, latency, loss.
    Broadcast(broadcast::BroadcastArgs),
}

#[path = "bench_broadcast.rs"]
mod broadcast;

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

#[derive(Args, Debug)]
struct EchoArgs {
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

#[derive(Args, Debug)]
struct IdleArgs {
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

#[derive(Args, Debug)]
struct HandshakeArgs {
    #[command(flatten)]
    common: Common,
    /// Handshakes in progress at once.
    #[arg(short = 'c', long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
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
                Mode::Echo(e) => echo(e).await,
                Mode::Idle(i) => idle(i).await,
                Mode::Handshake(h) => handshake(h).await,
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

// ---------------------------------------------------------------- target --

/// Where to connect, and the request line's pieces.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

async fn resolve(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.rsplit(':').next().is_some_and(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && authority.contains(':')
    }) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    Ok(Target {
        addr,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

// ------------------------------------------------------------- handshake --

/// The RFC 6455 §1.3 sample key and its accept value: any fixed key will do
/// for a load generator, and a fixed one costs nothing per connection.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn upgrade_request(t: &Target, deflate: bool) -> Vec<u8> {
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n",
        t.path, t.host
    );
    if deflate {
        r.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// An open WebSocket connection: the socket, bytes that followed the
/// response head, and whether permessage-deflate was agreed.
struct Opened {
    tcp: TcpStream,
    leftover: Vec<u8>,
    deflate: bool,
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Connects and performs the opening handshake. The response must be a
/// `101` carrying the right `Sec-WebSocket-Accept`.
async fn open(t: &Target, request: &[u8]) -> Result<Opened, String> {
    let mut tcp = TcpStream::connect(t.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(request)
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let mut buf = vec![0u8; 1024];
    let mut have = 0;
    loop {
        if have == buf.len() {
            if buf.len() >= 16 << 10 {
                return Err("response head over 16 KiB".into());
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = tcp
            .read(&mut buf[have..])
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if n == 0 {
            return Err("server closed during the handshake".into());
        }
        have += n;
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end + 4];
            if !(head.starts_with(b"HTTP/1.1 101 ") || head.starts_with(b"HTTP/1.1 101\r")) {
                let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(format!(
                    "handshake refused: {}",
                    String::from_utf8_lossy(line)
                ));
            }
            if !contains_ignore_case(head, ACCEPT.as_bytes()) {
                return Err("response lacks the right Sec-WebSocket-Accept".into());
            }
            let deflate = contains_ignore_case(head, b"permessage-deflate");
            return Ok(Opened {
                tcp,
                leftover: buf[end + 4..have].to_vec(),
                deflate,
            });
        }
    }
}

// ---------------------------------------------------------------- frames --

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
/// The first byte's bit that marks a compressed message (RFC 7692).
const RSV1: u8 = 0x40;

/// The fixed masking key of every frame this generator sends.
const MASK: [u8; 4] = [0x3c, 0xa5, 0x0f, 0x96];

/// Appends a final frame with the shortest length encoding, masked with
/// `MASK` when `masked` (the payload is masked here too).
fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], masked: bool) {
    let m = if masked { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
    } else {
        out.extend_from_slice(payload);
    }
}

/// The payload of every message: printable ASCII for text, a pseudo-random
/// byte sequence for binary.
fn payload(size: usize, text: bool) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..size)
        .map(|i| {
            if text {
                b' ' + (i % 95) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

/// What every echoed frame must look like.
struct Expect {
    opcode: u8,
    /// `Some(MASK)` when the peer sends our own masked frames back.
    masked: bool,
    /// The payload exactly as it arrives on the wire.
    payload: Vec<u8>,
}

/// A streaming checker of echoed frames: parses each header, then compares
/// the payload with the expected bytes as it arrives, holding no more than
/// a partial header.
struct Checker {
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame already compared; `None` while a
    /// header is awaited.
    pos: Option<usize>,
}

/// A header's length if `b` holds all of it: `Ok(None)` means more bytes.
fn header(b: &[u8], e: &Expect) -> Result<Option<usize>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    let mut n = 2;
    let len = match b1 & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            n = 4;
            u16::from_be_bytes([b[2], b[3]]) as u64
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            n = 10;
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            u64::from_be_bytes(l)
        }
        l => l as u64,
    };
    let masked = b1 & 0x80 != 0;
    if masked {
        if b.len() < n + 4 {
            return Ok(None);
        }
        if b[n..n + 4] != MASK {
            return Err("echoed frame has another masking key".into());
        }
        n += 4;
    }
    if b0 & 0x0f == OP_CLOSE {
        return Err("server sent a close frame".into());
    }
    if b0 != 0x80 | e.opcode {
        return Err(format!("unexpected frame header byte {b0:#04x}"));
    }
    if masked != e.masked {
        return Err(format!("echoed frame masked: {masked}"));
    }
    if len != e.payload.len() as u64 {
        return Err(format!(
            "echoed frame of {len} bytes, sent {}",
            e.payload.len()
        ));
    }
    Ok(Some(n))
}

impl Checker {
    fn new() -> Self {
        Checker {
            head: [0; 14],
            have: 0,
            pos: None,
        }
    }

    /// Checks `data`; returns how many echoes it completed.
    fn feed(&mut self, mut data: &[u8], e: &Expect) -> Result<usize, String> {
        let mut done = 0;
        loop {
            match self.pos {
                None => {
                    if data.is_empty() {
                        return Ok(done);
                    }
                    if self.have == 0 {
                        match header(data, e)? {
                            Some(n) => data = &data[n..],
                            None => {
                                self.head[..data.len()].copy_from_slice(data);
                                self.have = data.len();
                                return Ok(done);
                            }
                        }
                    } else {
                        let take = (14 - self.have).min(data.len());
                        self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
                        match header(&self.head[..self.have + take], e)? {
                            Some(n) => {
                                data = &data[n - self.have..];
                                self.have = 0;
                            }
                            None => {
                                self.have += take;
                                return Ok(done);
                            }
                        }
                    }
                    self.pos = Some(0);
                }
                Some(pos) => {
                    let take = (e.payload.len() - pos).min(data.len());
                    if data[..take] != e.payload[pos..pos + take] {
                        return Err("echoed payload differs from what was sent".into());
                    }
                    data = &data[take..];
                    if pos + take == e.payload.len() {
                        done += 1;
                        self.pos = None;
                    } else {
                        self.pos = Some(pos + take);
                        return Ok(done);
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------- histogram --

/// Latency histogram in nanoseconds: exact below 128 ns, then 64 buckets per
/// power of two (under 1.6 % error), mergeable and fixed in size.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 128 + 57 * 64],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize;
        let top = (v >> (e - 6)) as usize;
        128 + (e - 7) * 64 + (top - 64)
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let e = (i - 128) / 64 + 7;
        let top = ((i - 128) % 64 + 64) as u64;
        let low = top << (e - 6);
        low + (1u64 << (e - 6)) / 2
    }

    fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    /// The `q` quantile in microseconds (0 when empty).
    fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i) as f64 / 1000.0;
            }
        }
        0.0
    }
}

// ------------------------------------------------------------------ /proc --

/// Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time (user + system, all threads) of process `pid` ("self" too), s.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may
    // contain spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// Resident set size of process `pid`, in bytes.
fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU and memory of the server and of this process at one instant.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    server_cpu: Option<f64>,
    server_rss: Option<u64>,
    own_cpu: Option<f64>,
}

fn sample(server_pid: Option<u32>) -> Sample {
    let pid = server_pid.map(|p| p.to_string());
    Sample {
        at: Instant::now(),
        server_cpu: pid.as_deref().and_then(cpu_seconds),
        server_rss: pid.as_deref().and_then(rss_bytes),
        own_cpu: cpu_seconds("self"),
    }
}

/// Figures over the window between two samples.
struct Window {
    secs: f64,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
}

fn window(a: &Sample, b: &Sample) -> Window {
    let secs = (b.at - a.at).as_secs_f64();
    Window {
        secs,
        server_cpu: a.server_cpu.zip(b.server_cpu).map(|(x, y)| y - x),
        own_cpu: a.own_cpu.zip(b.own_cpu).map(|(x, y)| y - x),
    }
}

// ------------------------------------------------------------------ JSON --

/// A JSON object written field by field (no escaping beyond what strings
/// here need: quotes, backslashes and control characters).
struct Json(String);

impl Json {
    fn new() -> Self {
        Json(String::from("{"))
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{k}\":");
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.0.push('"');
        for c in v.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }
    fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.0, "{}", (v * 1000.0).round() / 1000.0);
        } else {
            self.0.push_str("null");
        }
        self
    }
    fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }
    fn opt(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.0.push_str("null");
                self
            }
        }
    }
    fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }
    fn finish(&mut self) -> String {
        self.0.push('}');
        std::mem::take(&mut self.0)
    }
}

// ---------------------------------------------------------------- shared --

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Done,
}

/// State shared by the tasks of one run (all on one thread).
struct Shared {
    phase: Cell<Phase>,
    /// Completed operations in the measured window.
    measured: Cell<u64>,
    /// Completed operations since the start, for progress lines.
    total: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    hist: RefCell<Histogram>,
}

impl Shared {
    fn new() -> Rc<Self> {
        Rc::new(Shared {
            phase: Cell::new(Phase::Warmup),
            measured: Cell::new(0),
            total: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            hist: RefCell::new(Histogram::new()),
        })
    }

    fn error(&self, e: String) {
        // Failures after the window closed (sockets dropped at exit) do
        // not count.
        if self.phase.get() == Phase::Done {
            return;
        }
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(e);
        }
    }

    fn first_error(&self) -> String {
        self.first_error.borrow().clone().unwrap_or_default()
    }
}

/// Prints one progress line per second on stderr until `until`.
async fn progress(what: &str, sh: &Shared, until: Instant) {
    let mut last = sh.total.get();
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
        let t = sh.total.get();
        let phase = match sh.phase.get() {
            Phase::Warmup => "warm-up",
            _ => "measuring",
        };
        eprintln!(
            "{what}: {} /s ({phase}), {} errors",
            t - last,
            sh.errors.get()
        );
        last = t;
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

// ------------------------------------------------------------------ echo --

/// What every echo connection sends and expects, built once.
struct EchoPlan {
    /// `depth` copies of the masked frame, back to back.
    batch: Vec<u8>,
    frame_len: usize,
    depth: usize,
    expect: Expect,
}

async fn echo(a: EchoArgs) -> Result<Report, String> {
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
        batch: frame.repeat(a.depth),
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

/// One echo connection: keeps `depth` messages in flight, checks every
/// echo, and records each round trip while the window is open. Reads and
/// writes interleave on readiness, so a large message can be echoed while
/// it is still being sent.
async fn echo_conn(o: Opened, plan: &EchoPlan, sh: &Shared) -> Result<(), String> {
    let Opened { tcp, leftover, .. } = o;
    let mut checker = Checker::new();
    let mut rbuf = vec![0u8; (plan.batch.len()).clamp(64 << 10, 1 << 20)];
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

// ------------------------------------------------------------------ idle --

async fn idle(a: IdleArgs) -> Result<Report, String> {
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
    let growth = s0
        .server_rss
        .zip(s1.server_rss)
        .map(|(a, b)| b as f64 - a as f64);
    let per_conn = growth.filter(|_| opened > 0).map(|g| g / opened as f64);
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

/// A server frame's first byte, header length and payload length, if `b`
/// holds the whole header (server frames are unmasked).
fn unmasked_header(b: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("server frame is masked".into());
    }
    let (n, len) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as u64),
        127 if b.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(l))
        }
        126 | 127 => return Ok(None),
        l => (2, l as u64),
    };
    if len > 1 << 20 {
        return Err(format!("echo frame of {len} bytes"));
    }
    Ok(Some((b[0], n, len as usize)))
}

// ------------------------------------------------------------- handshake --

/// A masked close frame with code 1000.
fn close_frame() -> Vec<u8> {
    let mut f = Vec::new();
    put_frame(&mut f, OP_CLOSE, &1000u16.to_be_bytes(), true);
    f
}

/// One cycle: connect, upgrade, send a close, and wait for the server to
/// end the connection (its close frame, then end of stream), so that the
/// server side closes first and keeps the TIME_WAIT state.
async fn handshake_once(t: &Target, request: &[u8], close: &[u8]) -> Result<Duration, String> {
    let start = Instant::now();
    let mut o = open(t, request).await?;
    let upgraded = start.elapsed();
    o.tcp
        .write_all(close)
        .await
        .map_err(|e| format!("send close: {e}"))?;
    let mut buf = [0u8; 256];
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match o.tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    if wait.await.is_err() {
        return Err("server did not close within 5 s of the close frame".into());
    }
    Ok(upgraded)
}

async fn handshake(a: HandshakeArgs) -> Result<Report, String> {
    let target = Rc::new(resolve(&a.common.url).await?);
    let request = Rc::new(upgrade_request(&target, false));
    let close = Rc::new(close_frame());
    let sh = Shared::new();
    eprintln!(
        "handshake: {} at a time against {}",
        a.concurrency, a.common.url
    );
    for _ in 0..a.concurrency.max(1) {
        let (target, request, close, sh) =
            (target.clone(), request.clone(), close.clone(), sh.clone());
        tokio::task::spawn_local(async move {
            while sh.phase.get() != Phase::Done {
                match handshake_once(&target, &request, &close).await {
                    Ok(d) => {
                        if sh.phase.get() == Phase::Measure {
                            sh.measured.set(sh.measured.get() + 1);
                            sh.hist.borrow_mut().record(d);
                        }
                        sh.total.set(sh.total.get() + 1);
                    }
                    Err(e) => {
                        sh.error(e);
                        // Do not spin on a server that refuses.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let start = Instant::now();
    let measure_at = start + secs(a.warmup);
    let end = measure_at + secs(a.duration);
    progress("handshakes", &sh, measure_at).await;
    let s0 = sample(a.common.server_pid);
    sh.phase.set(Phase::Measure);
    progress("handshakes", &sh, end).await;
    // Handshakes still in flight finish outside the window and are not
    // counted; errors are counted up to here.
    let errors = sh.errors.get();
    sh.phase.set(Phase::Done);
    let s1 = sample(a.common.server_pid);
    let w = window(&s0, &s1);
    let n = sh.measured.get();
    let rate = n as f64 / w.secs;
    let h = sh.hist.borrow();
    let (p50, p99, p999) = (
        h.quantile_us(0.5),
        h.quantile_us(0.99),
        h.quantile_us(0.999),
    );
    let cpu_per = w.server_cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64);
    let mut human = format!(
        "handshake x{}: {rate:.0} handshakes/s, upgrade p50 {p50:.0} us, p99 {p99:.0} us, {errors} errors",
        a.concurrency
    );
    if let Some(c) = cpu_per {
        let _ = write!(human, ", server {c:.1} us CPU/handshake");
    }
    if let Some(c) = w.own_cpu {
        let _ = write!(human, ", generator {:.0}% of a core", 100.0 * c / w.secs);
    }
    if errors > 0 {
        let _ = write!(human, "; first error: {}", sh.first_error());
    }
    let json = Json::new()
        .str("mode", "handshake")
        .str("label", &a.common.label)
        .str("url", &a.common.url)
        .int("concurrency", a.concurrency as u64)
        .num("duration_s", w.secs)
        .int("handshakes", n)
        .num("handshakes_per_s", rate)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("p999_us", p999)
        .int("errors", errors)
        .str("first_error", &sh.first_error())
        .opt("server_cpu_us_per_handshake", cpu_per)
        .opt("server_cpu_util", w.server_cpu.map(|c| c / w.secs))
        .opt("generator_cpu_util", w.own_cpu.map(|c| c / w.secs))
        .finish();
    Ok(Report {
        human,
        json,
        ok: errors == 0 && n > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(opcode: u8, masked: bool, payload: &[u8]) -> Expect {
        Expect {
            opcode,
            masked,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn checker_accepts_echoes_split_anywhere() {
        for size in [0usize, 5, 125, 126, 300, 70_000] {
            let data = payload(size, false);
            let mut wire = Vec::new();
            for _ in 0..3 {
                put_frame(&mut wire, OP_BINARY, &data, false);
            }
            let e = expect(OP_BINARY, false, &data);
            for cut in [1usize, 2, 3, 7, 13, 1000] {
                let mut c = Checker::new();
                let done: usize = wire.chunks(cut).map(|ch| c.feed(ch, &e).unwrap()).sum();
                assert_eq!(done, 3, "size {size} cut {cut}");
            }
        }
    }

    #[test]
    fn checker_accepts_own_masked_frames_in_raw_mode() {
        let data = payload(1000, true);
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_TEXT, &data, true);
        let masked_payload = wire[wire.len() - 1000..].to_vec();
        let mut c = Checker::new();
        assert_eq!(
            c.feed(&wire, &expect(OP_TEXT, true, &masked_payload)),
            Ok(1)
        );
        // The same frame is wrong where an unmasked echo is expected.
        let mut c = Checker::new();
        assert!(c.feed(&wire, &expect(OP_TEXT, false, &data)).is_err());
    }

    #[test]
    fn checker_rejects_a_changed_byte_a_wrong_opcode_or_length() {
        let data = payload(200, false);
        let e = expect(OP_BINARY, false, &data);
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_BINARY, &data, false);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert!(Checker::new().feed(&wire, &e).is_err());
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_TEXT, &data, false);
        assert!(Checker::new().feed(&wire, &e).is_err());
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_BINARY, &data[..199], false);
        assert!(Checker::new().feed(&wire, &e).is_err());
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_CLOSE, &[3, 232], false);
        assert!(Checker::new().feed(&wire, &e).is_err());
    }

    #[test]
    fn rfc_masking_example() {
        // RFC 6455 §5.7 gives "Hello" masked with 37 fa 21 3d; with our key
        // the check is against a plain XOR.
        let mut f = Vec::new();
        put_frame(&mut f, OP_TEXT, b"Hello", true);
        assert_eq!(&f[..2], &[0x81, 0x85]);
        assert_eq!(&f[2..6], &MASK);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i & 3])
            .collect();
        assert_eq!(unmasked, b"Hello");
    }

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.quantile_us(q);
            assert!((got - want).abs() / want < 0.02, "q {q}: {got} vs {want}");
        }
        for v in [0u64, 1, 127, 128, 129, 1 << 20, u64::MAX / 2] {
            let i = Histogram::index(v);
            assert!(i < h.counts.len());
            let mid = Histogram::value(i);
            assert!(
                mid.abs_diff(v) as f64 <= v as f64 / 64.0 + 1.0,
                "{v} -> {mid}"
            );
        }
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("20"), Ok(20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn proc_self_is_readable() {
        assert!(cpu_seconds("self").is_some());
        assert!(rss_bytes("self").unwrap() > 0);
    }
}
