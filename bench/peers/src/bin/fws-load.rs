//! `fws-load`: the second, independent load generator, built on the
//! `fastwebsockets` client rather than on anything of Duplex's.
//!
//! It runs the echo and handshake scenarios of `duplex bench` and prints the
//! same JSON (one line, last), so `bench/run.py` can report both generators
//! side by side. How it differs from `duplex bench`, on purpose, since that
//! is what an ordinary client does:
//!
//! - the upgrade is `fastwebsockets::handshake::client` (hyper's HTTP/1.1
//!   client); the frames are read and written by `fastwebsockets`;
//! - every frame is its own `write` (a `writev` above 1 KiB): a connection
//!   with 16 messages in flight writes 16 times, where `duplex bench` writes
//!   one buffer holding all 16. With `--batch` it writes as `duplex bench`
//!   does — every frame it may send, framed by `fastwebsockets`, in one
//!   `write` — so that the write pattern, not the client, can be told apart
//!   (frames are still read and checked by `fastwebsockets`);
//! - a connection's reader and writer are two futures of one task, over
//!   the split stream; the writer sends while it has credit (`--depth`,
//!   one more per echo);
//! - frames are masked with one key chosen per connection and built once
//!   (`auto_apply_mask` off), so the generator does not spend its core
//!   masking.
//!
//! Every echo is checked byte for byte.
//!
//! ```text
//! fws-load echo ws://127.0.0.1:9001/echo --server-pid PID -c 100 --depth 16 --size 20 [--text]
//!          [--warmup 1] [--duration 4] [--raw-tcp-peer] [--batch] [--label NAME]
//! fws-load handshake ws://127.0.0.1:9001/echo --server-pid PID -c 16 [--warmup 1] [--duration 3]
//! ```

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The options of both modes; each uses what applies to it.
struct Args {
    mode: String,
    url: String,
    server_pid: Option<u32>,
    label: String,
    connections: usize,
    depth: usize,
    size: usize,
    text: bool,
    warmup: f64,
    duration: f64,
    raw_tcp_peer: bool,
    /// Write every frame there is credit for in one `write`.
    batch: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("MiB").or_else(|| s.strip_suffix('M')) {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB").or_else(|| s.strip_suffix('K')) {
        (n, 1 << 10)
    } else {
        (s, 1)
    };
    num.parse::<usize>()
        .map(|n| n * mul)
        .map_err(|e| format!("size {s:?}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: fws-load echo|handshake URL [options]")?;
    let url = it.next().ok_or("missing URL")?;
    let mut a = Args {
        connections: if mode == "handshake" { 16 } else { 100 },
        mode,
        url,
        server_pid: None,
        label: String::new(),
        depth: 1,
        size: 20,
        text: false,
        warmup: 1.0,
        duration: 4.0,
        raw_tcp_peer: false,
        batch: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server-pid" => a.server_pid = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--label" => a.label = value()?,
            "-c" | "--connections" | "--concurrency" => {
                a.connections = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--depth" => a.depth = value()?.parse().map_err(|e| format!("{e}"))?,
            "--size" => a.size = parse_size(&value()?)?,
            "--text" => a.text = true,
            "--warmup" => a.warmup = value()?.parse().map_err(|e| format!("{e}"))?,
            "--duration" => a.duration = value()?.parse().map_err(|e| format!("{e}"))?,
            "--raw-tcp-peer" => a.raw_tcp_peer = true,
            "--batch" => a.batch = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.connections == 0 || a.depth == 0 {
        return Err("-c and --depth must be at least 1".into());
    }
    Ok(a)
}

/// `host:port` and path of a `ws://` URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

// ------------------------------------------------------------ /proc --

/// User + system CPU seconds of `pid` ("self" too).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

struct Sample {
    at: Instant,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
}

fn sample(pid: Option<u32>) -> Sample {
    Sample {
        at: Instant::now(),
        server_cpu: pid.and_then(|p| cpu_seconds(&p.to_string())),
        own_cpu: cpu_seconds("self"),
    }
}

// ------------------------------------------------------------ shared --

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Warmup,
    Measure,
    Done,
}

/// State every connection task shares (one thread).
struct Shared {
    phase: Cell<Phase>,
    measured: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<String>,
    /// Round trips in the measured window, µs.
    latencies: RefCell<Vec<u32>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.set(self.errors.get() + 1);
        let mut f = self.first_error.borrow_mut();
        if f.is_empty() {
            *f = e;
        }
    }
    fn record(&self, rtt: Duration) {
        if self.phase.get() == Phase::Measure {
            self.measured.set(self.measured.get() + 1);
            self.latencies
                .borrow_mut()
                .push(rtt.as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

fn quantile(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i] as f64)
}

/// Runs hyper's connection futures on the current (single) thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Connects and upgrades with `fastwebsockets::handshake::client`, then
/// takes the TCP stream back out of hyper's upgraded connection so that
/// frames go straight to the socket.
async fn open(host: &str, path: &str, raw: bool) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if raw {
        return Ok(tcp);
    }
    let req = Request::get(path)
        .header(HOST, host)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let (ws, _resp) = fastwebsockets::handshake::client(&LocalExec, req, tcp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let upgraded = ws.into_inner().into_inner();
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| "upgraded connection is not the TCP stream".to_string())?;
    if !parts.read_buf.is_empty() {
        return Err("server sent data before the first message".into());
    }
    Ok(parts.io.into_inner())
}

// -------------------------------------------------------------- echo --

struct EchoPlan {
    opcode: OpCode,
    mask: [u8; 4],
    /// The payload masked with `mask`, as written.
    masked: Vec<u8>,
    /// What each echo must carry: the payload (a WebSocket server unmasks
    /// it) or the masked bytes (a raw TCP echo sends them back as they are).
    /// The client role does not unmask, so a server that echoed a masked
    /// frame would fail this check too.
    expect: Vec<u8>,
    depth: usize,
    /// With `--batch`: the whole frame (header, key, masked payload) as
    /// `fastwebsockets` formats it, written as many times as there is
    /// credit in one `write`.
    batch: Option<Vec<u8>>,
}

async fn echo_conn(mut tcp: TcpStream, plan: &EchoPlan, sh: &Shared) -> Result<(), String> {
    let (rd, wr) = tcp.split();
    // With `--batch` the frames go straight into the socket, and
    // fastwebsockets' writer (never used) is given nothing to write to.
    let (sink, mut raw) = match plan.batch {
        Some(_) => (Sink::Discard, Some(wr)),
        None => (Sink::Socket(wr), None),
    };
    let (mut r, mut w) = fastwebsockets::after_handshake_split(rd, sink, Role::Client);
    w.set_auto_apply_mask(false);
    r.set_auto_close(false);
    r.set_auto_pong(false);
    r.set_max_message_size(plan.expect.len() + 1024);
    // Messages that may be sent now: `depth` at first, one more per echo.
    let credits = Cell::new(plan.depth);
    let wake = tokio::sync::Notify::new();
    let sent: RefCell<VecDeque<Instant>> = RefCell::new(VecDeque::with_capacity(plan.depth));
    let writer = async {
        let mut out = Vec::new();
        loop {
            while credits.get() == 0 {
                wake.notified().await;
            }
            let (Some(frame), Some(raw)) = (&plan.batch, raw.as_mut()) else {
                credits.set(credits.get() - 1);
                sent.borrow_mut().push_back(Instant::now());
                let f = Frame::new(
                    true,
                    plan.opcode,
                    Some(plan.mask),
                    Payload::Borrowed(&plan.masked),
                );
                w.write_frame(f).await.map_err(|e| format!("write: {e}"))?;
                continue;
            };
            let n = credits.replace(0);
            let now = Instant::now();
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(frame);
                sent.borrow_mut().push_back(now);
            }
            raw.write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
    };
    let reader = async {
        let mut no_send = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
        loop {
            let f = r
                .read_frame(&mut no_send)
                .await
                .map_err(|e| format!("read: {e}"))?;
            let now = Instant::now();
            if sh.phase.get() == Phase::Done {
                return Ok(());
            }
            match f.opcode {
                OpCode::Ping | OpCode::Pong => continue,
                op if op != plan.opcode => {
                    return Err(format!("expected {:?}, got {op:?}", plan.opcode));
                }
                _ => {}
            }
            if f.payload[..] != plan.expect[..] {
                return Err(format!(
                    "echo of {} B differs from what was sent",
                    f.payload.len()
                ));
            }
            let t = sent
                .borrow_mut()
                .pop_front()
                .ok_or("more echoes than messages sent")?;
            sh.record(now - t);
            credits.set(credits.get() + 1);
            wake.notify_one();
        }
    };
    // The reader ends the connection's work (the window closed, or an
    // error); the writer only ends on an error.
    tokio::select! {
        r = reader => r,
        w = writer => w,
    }
}

/// The writer half given to fastwebsockets: the socket, or (with
/// `--batch`, where frames are written straight into the socket) nothing.
enum Sink<'a> {
    Socket(tokio::net::tcp::WriteHalf<'a>),
    Discard,
}

impl tokio::io::AsyncWrite for Sink<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sink::Socket(w) => Pin::new(w).poll_write(cx, buf),
            Sink::Discard => std::task::Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sink::Socket(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            Sink::Discard => std::task::Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Sink::Socket(w) => w.is_write_vectored(),
            Sink::Discard => true,
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Socket(w) => Pin::new(w).poll_flush(cx),
            Sink::Discard => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Socket(w) => Pin::new(w).poll_shutdown(cx),
            Sink::Discard => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// A payload like `duplex bench`'s: ASCII for text, every byte value for binary.
fn payload(size: usize, text: bool) -> Vec<u8> {
    (0..size)
        .map(|i| {
            if text {
                b'a' + (i % 26) as u8
            } else {
                (i * 7 + 3) as u8
            }
        })
        .collect()
}

async fn run_echo(a: &Args) -> Result<(serde_json::Value, String), String> {
    let (host, path) = split_url(&a.url)?;
    let data = payload(a.size, a.text);
    // Every byte under 0x80, so that masked ASCII stays ASCII: a raw TCP
    // echo returns text frames masked, and the client checks their UTF-8.
    let mask: [u8; 4] = [0x5a, 0x13, 0x47, 0x21];
    let masked: Vec<u8> = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let opcode = if a.text { OpCode::Text } else { OpCode::Binary };
    let plan = Rc::new(EchoPlan {
        opcode,
        mask,
        expect: if a.raw_tcp_peer { masked.clone() } else { data },
        batch: a.batch.then(|| {
            let mut f = Frame::new(true, opcode, Some(mask), Payload::Borrowed(&masked));
            let mut buf = Vec::new();
            f.write(&mut buf).to_vec()
        }),
        masked,
        depth: a.depth,
    });
    let sh = Rc::new(Shared {
        phase: Cell::new(Phase::Warmup),
        measured: Cell::new(0),
        errors: Cell::new(0),
        first_error: RefCell::new(String::new()),
        latencies: RefCell::new(Vec::with_capacity(1 << 20)),
    });
    let mut opened = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        opened.push(open(&host, &path, a.raw_tcp_peer).await?);
    }
    for ws in opened {
        let (plan, sh) = (plan.clone(), sh.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = echo_conn(ws, &plan, &sh).await {
                if sh.phase.get() != Phase::Done {
                    sh.error(e);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let s0 = sample(a.server_pid);
    sh.phase.set(Phase::Measure);
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    sh.phase.set(Phase::Done);
    let s1 = sample(a.server_pid);
    let secs = (s1.at - s0.at).as_secs_f64();
    let msgs = sh.measured.get();
    let rate = msgs as f64 / secs;
    let mut lat = std::mem::take(&mut *sh.latencies.borrow_mut());
    lat.sort_unstable();
    let server_cpu = s0.server_cpu.zip(s1.server_cpu).map(|(x, y)| y - x);
    let own_cpu = s0.own_cpu.zip(s1.own_cpu).map(|(x, y)| y - x);
    let cpu_per_msg = server_cpu
        .filter(|_| msgs > 0)
        .map(|c| c * 1e6 / msgs as f64);
    let human = format!(
        "fws-load echo {} conns x {} B {} depth {}{}{}: {rate:.0} msg/s, server {} us CPU/msg, \
         p50 {} us, {} errors{}",
        a.connections,
        a.size,
        if a.text { "text" } else { "binary" },
        a.depth,
        if a.batch { " (batched writes)" } else { "" },
        if a.raw_tcp_peer {
            " (raw TCP peer)"
        } else {
            ""
        },
        cpu_per_msg.map_or("-".into(), |c| format!("{c:.3}")),
        quantile(&lat, 0.5).unwrap_or(0.0),
        sh.errors.get(),
        if sh.errors.get() > 0 {
            format!("; first error: {}", sh.first_error.borrow())
        } else {
            String::new()
        },
    );
    let json = serde_json::json!({
        "mode": "echo",
        "generator": "fws-load",
        "label": a.label,
        "url": a.url,
        "connections": a.connections,
        "depth": a.depth,
        "size": a.size,
        "text": a.text,
        "raw_tcp_peer": a.raw_tcp_peer,
        "batch": a.batch,
        "duration_s": secs,
        "messages": msgs,
        "msgs_per_s": rate,
        "mb_per_s": rate * a.size as f64 / 1e6,
        "p50_us": quantile(&lat, 0.5),
        "p99_us": quantile(&lat, 0.99),
        "p999_us": quantile(&lat, 0.999),
        "errors": sh.errors.get(),
        "first_error": sh.first_error.borrow().clone(),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_msg": cpu_per_msg,
        "server_cpu_util": server_cpu.map(|c| c / secs),
        "server_rss_bytes": a.server_pid.and_then(|p| rss_bytes(&p.to_string())),
        "generator_cpu_util": own_cpu.map(|c| c / secs),
    });
    Ok((json, human))
}

// --------------------------------------------------------- handshake --

/// Connect, upgrade, send a close and wait for the server to end the
/// connection. Returns the time to the upgrade.
async fn handshake_once(host: &str, path: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut ws = WebSocket::after_handshake(open(host, path, false).await?, Role::Client);
    let upgraded = start.elapsed();
    ws.write_frame(Frame::close(1000, b""))
        .await
        .map_err(|e| format!("send close: {e}"))?;
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.read_frame().await {
                Ok(f) if f.opcode == OpCode::Close => {}
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    if wait.await.is_err() {
        return Err("server did not close within 5 s of the close frame".into());
    }
    let mut tcp = ws.into_inner();
    let _ = tcp.shutdown().await;
    Ok(upgraded)
}

async fn run_handshake(a: &Args) -> Result<(serde_json::Value, String), String> {
    let (host, path) = split_url(&a.url)?;
    let sh = Rc::new(Shared {
        phase: Cell::new(Phase::Warmup),
        measured: Cell::new(0),
        errors: Cell::new(0),
        first_error: RefCell::new(String::new()),
        latencies: RefCell::new(Vec::with_capacity(1 << 16)),
    });
    for _ in 0..a.connections {
        let (sh, host, path) = (sh.clone(), host.clone(), path.clone());
        tokio::task::spawn_local(async move {
            while sh.phase.get() != Phase::Done {
                match handshake_once(&host, &path).await {
                    Ok(t) => sh.record(t),
                    Err(e) => {
                        sh.error(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let s0 = sample(a.server_pid);
    sh.phase.set(Phase::Measure);
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    sh.phase.set(Phase::Done);
    let s1 = sample(a.server_pid);
    let secs = (s1.at - s0.at).as_secs_f64();
    let n = sh.measured.get();
    let rate = n as f64 / secs;
    let mut lat = std::mem::take(&mut *sh.latencies.borrow_mut());
    lat.sort_unstable();
    let server_cpu = s0.server_cpu.zip(s1.server_cpu).map(|(x, y)| y - x);
    let own_cpu = s0.own_cpu.zip(s1.own_cpu).map(|(x, y)| y - x);
    let per = server_cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64);
    let human = format!(
        "fws-load handshake x{}: {rate:.0}/s, server {} us CPU per handshake, {} errors",
        a.connections,
        per.map_or("-".into(), |c| format!("{c:.1}")),
        sh.errors.get()
    );
    let json = serde_json::json!({
        "mode": "handshake",
        "generator": "fws-load",
        "label": a.label,
        "url": a.url,
        "concurrency": a.connections,
        "duration_s": secs,
        "handshakes": n,
        "handshakes_per_s": rate,
        "p50_us": quantile(&lat, 0.5),
        "p99_us": quantile(&lat, 0.99),
        "errors": sh.errors.get(),
        "first_error": sh.first_error.borrow().clone(),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_handshake": per,
        "server_cpu_util": server_cpu.map(|c| c / secs),
        "generator_cpu_util": own_cpu.map(|c| c / secs),
    });
    Ok((json, human))
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fws-load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let out: Pin<Box<dyn Future<Output = _>>> = match a.mode.as_str() {
        "echo" => Box::pin(run_echo(&a)),
        "handshake" => Box::pin(run_handshake(&a)),
        m => {
            eprintln!("fws-load: unknown mode {m} (echo, handshake)");
            std::process::exit(2);
        }
    };
    match local.block_on(&rt, out) {
        Ok((json, human)) => {
            let ok = json["errors"].as_u64() == Some(0);
            println!("{human}");
            println!("{json}");
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("fws-load: {e}");
            println!(
                "{}",
                serde_json::json!({"mode": a.mode, "generator": "fws-load", "errors": 1, "first_error": e})
            );
            std::process::exit(1);
        }
    }
}
