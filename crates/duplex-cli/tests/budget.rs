//! The server-wide memory budget against the attack it exists for, in a
//! `duplex serve` process of its own: 2,000 clients each send 32 MiB of a
//! 48 MiB frame and then hold their connection open. Without a budget the
//! server would hold 64 GiB for them (20 such clients raised its RSS by
//! 660 MiB); with one, those that fit keep their partial message, the rest
//! are closed with 1009 or 1013, the server's memory stays within the
//! budget plus a constant, and a well-behaved client is served throughout.

mod common;

use duplex::{Message, WebSocket};
use duplex_proto::frame::{FrameHeader, OpCode};
use duplex_proto::handshake::client::{ClientHandshake, ClientRequest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 2000;
const FRAME: u64 = 48 << 20;
const SENT: usize = 32 << 20;
const BUDGET_MIB: u64 = 256;

/// What the server may hold beyond the budget, in MiB
/// (`docs/defaults.md`, "Server-wide memory budget"): the first 16 KiB
/// each connection reads free of charge (2,000 × 16 KiB = 31 MiB), the
/// connections' own state (a few KiB each), the warm buffers kept for
/// large frames (at most 80 MiB for the process) and memory freed by refused connections in
/// the last second or so, which jemalloc has not yet given back. Measured:
/// the peak stays under the budget itself (229–242 MiB), since buffers are
/// charged by capacity.
const CONSTANT_MIB: u64 = 128;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens a WebSocket to `/echo` without compression and returns the
/// stream. Its send buffer is small, as a remote peer's bandwidth would
/// make it: what it pushes past the server's reads waits in the kernel,
/// and 2,000 of them must not exhaust the host's socket memory.
async fn upgrade(addr: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_send_buffer_size(256 << 10).unwrap();
    let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
    let req = ClientRequest {
        host: addr.to_string(),
        target: "/echo".into(),
        ..Default::default()
    };
    let (hs, request) = ClientHandshake::new(&req, &duplex::Config::default().with_deflate(None));
    s.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        s.read_exact(&mut byte).await.unwrap();
        buf.push(byte[0]);
        if hs.parse_response(&buf).unwrap().is_some() {
            return s;
        }
    }
}

/// Reads the server's frames until its close frame: the lengths of the
/// data frames before it, and its code (`None` if the stream ended
/// without one).
async fn frames(mut r: tokio::net::tcp::OwnedReadHalf) -> (Vec<u64>, Option<u16>) {
    let mut data = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        while let Ok(Some((h, n))) = FrameHeader::parse(&buf) {
            let end = n + h.payload_len as usize;
            if buf.len() < end {
                break;
            }
            if h.opcode == OpCode::Close {
                return (
                    data,
                    buf.get(n..n + 2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                );
            }
            assert!(buf[n..end].iter().all(|&b| b == 0), "the bytes sent");
            data.push(h.payload_len);
            buf.drain(..end);
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (data, None),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// How an attacker ended up.
#[derive(Debug)]
enum Outcome {
    /// Sent its 32 MiB and is holding: the server keeps its partial frame.
    Holding(
        tokio::net::tcp::OwnedWriteHalf,
        tokio::task::JoinHandle<(Vec<u64>, Option<u16>)>,
    ),
    /// The server closed it with this code.
    Closed(Option<u16>),
}

/// One attacker: 32 MiB of a 48 MiB frame, written until done or until the
/// server's close frame arrives.
async fn attack(s: TcpStream, zeros: Arc<Vec<u8>>) -> Outcome {
    let (r, mut w) = s.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let seen = closed.clone();
    let mut reader = tokio::spawn(async move {
        let got = frames(r).await;
        seen.store(true, Ordering::SeqCst);
        got
    });
    // Binary, FIN, masked with a zero key, 64-bit length.
    let mut header = vec![0x82, 0xff];
    header.extend_from_slice(&FRAME.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    let mut sent = 0;
    let mut ok = w.write_all(&header).await.is_ok();
    while ok && sent < SENT && !closed.load(Ordering::SeqCst) {
        let n = (SENT - sent).min(zeros.len());
        tokio::select! {
            r = w.write(&zeros[..n]) => match r {
                Ok(k) => sent += k,
                Err(_) => ok = false,
            },
            got = &mut reader => return Outcome::Closed(got.unwrap().1),
        }
    }
    if sent == SENT && !closed.load(Ordering::SeqCst) {
        Outcome::Holding(w, reader)
    } else {
        Outcome::Closed(reader.await.unwrap().1)
    }
}

/// Echo round trips of 1 KiB messages, each answered within 10 s.
async fn echo_round_trips(ws: &mut WebSocket<duplex::MaybeTlsStream<TcpStream>>, n: usize) {
    for i in 0..n {
        let msg = Message::binary(vec![i as u8; 1024]);
        ws.send(msg.clone()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("an echo within 10 s while the server is under attack")
            .unwrap_or_else(|| panic!("closed: {:?}", ws.close_code()))
            .unwrap();
        assert_eq!(got, msg);
    }
}

/// Bytes queued in the kernel on established TCP connections to or from
/// `port` (`/proc/net/tcp`: unsent and unread): 0 once the server has read
/// everything its peers sent, and they everything it sent.
fn queued_on(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state, queues) = (f[1], f[2], f[3], f[4]);
            // Established connections only (a closed one keeps its FIN
            // counted as a byte).
            if state != "01" || (hex_port(local) != port && hex_port(remote) != port) {
                return None;
            }
            let (tx, rx) = queues.split_once(':')?;
            Some(u64::from_str_radix(tx, 16).ok()? + u64::from_str_radix(rx, 16).ok()?)
        })
        .sum()
}

async fn metric(addr: &str, name: &str) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partial_large_frames_stay_within_the_budget_and_small_clients_are_served() {
    let budget = format!("{BUDGET_MIB}MiB");
    let (mut server, addr) = common::serve_with(
        &[
            "--memory-budget",
            &budget,
            "--max-message-size",
            "67108864",
            "--max-connections",
            "4000",
        ],
        "http",
    );
    let pid = server.id();
    let mut good = duplex::connect(&format!("ws://{addr}/echo")).await.unwrap();
    echo_round_trips(&mut good, 10).await;
    let base_kib = status_kib(pid, "VmRSS:");

    let zeros = Arc::new(vec![0u8; 256 << 10]);
    let started = Instant::now();
    // All connected first, then all sending.
    let opening: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { upgrade(&addr).await })
        })
        .collect();
    let mut streams = Vec::new();
    for o in opening {
        streams.push(o.await.unwrap());
    }
    let attackers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(attack(s, zeros.clone())))
        .collect();
    // Served while the attack runs.
    echo_round_trips(&mut good, 50).await;
    let mut outcomes = Vec::new();
    for a in attackers {
        outcomes.push(a.await.unwrap());
    }
    // Every byte sent has been read (or refused) by the server.
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while queued_on(port) > 0 {
        if Instant::now() > deadline {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
            let busy: Vec<_> = table
                .lines()
                .filter(|l| !l.contains(" 00000000:00000000 "))
                .take(20)
                .collect();
            panic!("the server stopped reading: {busy:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attack_secs = started.elapsed().as_secs_f64();
    // And once every attacker holds or was closed.
    echo_round_trips(&mut good, 50).await;
    let rss_mib = status_kib(pid, "VmRSS:").saturating_sub(base_kib) / 1024;
    let peak_mib = status_kib(pid, "VmHWM:").saturating_sub(base_kib) / 1024;
    let used = metric(&addr, "duplex_memory_budget_used_bytes").await;
    let refusals = metric(&addr, "duplex_memory_budget_refusals_total").await;

    let mut holding = Vec::new();
    let (mut c1009, mut c1013) = (0, 0);
    for o in outcomes {
        match o {
            // Closed after it had sent everything: its close frame has
            // been read off the socket already (the queues are empty).
            Outcome::Holding(w, mut reader) => {
                match tokio::time::timeout(Duration::from_millis(500), &mut reader).await {
                    Ok(got) => match got.unwrap().1 {
                        Some(1009) => c1009 += 1,
                        Some(1013) => c1013 += 1,
                        other => panic!("a holder ended with {other:?}"),
                    },
                    Err(_) => holding.push((w, reader)),
                }
            }
            Outcome::Closed(Some(1009)) => c1009 += 1,
            Outcome::Closed(Some(1013)) => c1013 += 1,
            Outcome::Closed(other) => panic!("an attacker ended with {other:?}"),
        }
    }
    eprintln!(
        "{CLIENTS} clients in {attack_secs:.1} s: {} holding, {c1009} closed 1009, {c1013} closed 1013; \
         budget used {:.1} MiB, {refusals} refusals; server RSS +{rss_mib} MiB now, peak +{peak_mib} MiB \
         (budget {BUDGET_MIB} MiB + {CONSTANT_MIB} MiB)",
        holding.len(),
        used / 1048576.0,
    );
    // Those that fit are held (each costs its 32 MiB less the allowance);
    // no more than fit.
    assert!(!holding.is_empty(), "the budget holds some partial frames");
    assert!(
        holding.len() as u64 <= BUDGET_MIB / 32,
        "{} held",
        holding.len()
    );
    assert_eq!(holding.len() + c1009 + c1013, CLIENTS);
    assert!(refusals >= (c1009 + c1013) as f64);
    assert!(used <= (BUDGET_MIB << 20) as f64);
    assert!(
        peak_mib <= BUDGET_MIB + CONSTANT_MIB,
        "server peak RSS grew {peak_mib} MiB, over the budget plus {CONSTANT_MIB} MiB"
    );
    // Nothing accepted is lost: a holder that finishes its frame gets its
    // whole message back, then closes cleanly.
    let (mut w, reader) = holding.pop().unwrap();
    drop(holding);
    w.write_all(&vec![0u8; (FRAME as usize) - SENT])
        .await
        .unwrap();
    w.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .await
        .unwrap();
    let (data, code) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the echo and the close within 60 s")
        .unwrap();
    assert_eq!((data, code), (vec![FRAME], Some(1000)));
    echo_round_trips(&mut good, 10).await;
    assert_eq!(metric(&addr, "duplex_memory_budget_used_bytes").await, 0.0);
    server.kill().unwrap();
    server.wait().unwrap();
}
