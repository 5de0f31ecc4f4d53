//! Hostile inputs against a real `duplex-server` on loopback: each ends with
//! the stated close code or HTTP status, and the server keeps serving. The
//! deflate bomb, whose memory must be measured in a process of its own, is
//! in `crates/duplex-cli/tests/memory.rs`.

use duplex::Message;
use duplex_server::{Server, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Tests that move tens of MiB take turns, so that on a small machine the
/// write-timeout test's stall is not competing with a large echo. (The
/// memory bound of a deflate bomb is measured in a server process of its
/// own: `crates/duplex-cli/tests/memory.rs`.)
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Running {
    addr: std::net::SocketAddr,
    connections: duplex_server::server::Connections,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(cfg: duplex::Config) -> Running {
    serve(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ws: cfg,
        ..Default::default()
    })
    .await
}

async fn serve(config: ServerConfig) -> Running {
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let connections = server.connections();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        connections,
        _stop: tx,
    }
}

/// Opens a raw upgraded connection (no extension offered unless `ext`).
async fn raw_upgrade(addr: std::net::SocketAddr, ext: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let ext = ext
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

fn frame(fin: bool, rsv1: bool, op: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let first = (fin as u8) << 7 | (rsv1 as u8) << 6 | op;
    duplex::proto::frame::encode_raw(first, masked.then_some([0x5a, 0xa5, 0x3c, 0xc3]), payload)
}

/// Reads server frames until a close frame; returns its code.
async fn read_close_code<R: AsyncRead + Unpin>(s: &mut R) -> u16 {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h)
                .await
                .expect("server closed without a close frame");
            let len = match h[1] & 0x7f {
                126 => s.read_u16().await.unwrap() as usize,
                127 => s.read_u64().await.unwrap() as usize,
                n => n as usize,
            };
            let mut p = vec![0u8; len];
            s.read_exact(&mut p).await.unwrap();
            if h[0] & 0x0f == 8 {
                return u16::from_be_bytes([p[0], p[1]]);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("no close frame in time")
}

/// A normal client still gets its echo.
async fn still_serving(addr: std::net::SocketAddr) {
    let mut ws = duplex::connect(&format!("ws://{addr}/echo")).await.unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("still here")
    );
    ws.close(duplex::CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.was_clean());
}

#[tokio::test]
async fn huge_declared_length_closes_1009_at_once() {
    let srv = start(duplex::Config::default()).await;
    let mut s = raw_upgrade(srv.addr, None).await;
    let mut h = vec![0x82, 0xff];
    h.extend_from_slice(&(1u64 << 62).to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&h).await.unwrap();
    assert_eq!(read_close_code(&mut s).await, 1009);
    still_serving(srv.addr).await;
}

#[tokio::test]
async fn continuation_flood_closes_at_the_fragment_limit() {
    // The default limit (131 072 fragments): about 900 KB of 1-byte frames.
    let srv = start(duplex::Config::default()).await;
    let limit = duplex::Config::default().max_fragments;
    let s = raw_upgrade(srv.addr, None).await;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut batch = frame(false, false, 2, true, b"x");
        let one = frame(false, false, 0, true, b"x");
        for _ in 0..limit + 10 {
            batch.extend_from_slice(&one);
        }
        let _ = w.write_all(&batch).await;
        w
    });
    // `max_fragments` is reached long before `max_message_size` (131 073
    // one-byte frames are 128 KiB of payload): 1008, policy violation.
    assert_eq!(read_close_code(&mut r).await, 1008);
    drop(writer);
    still_serving(srv.addr).await;
}

#[tokio::test]
async fn unmasked_client_frame_closes_1002() {
    let srv = start(duplex::Config::default()).await;
    let mut s = raw_upgrade(srv.addr, None).await;
    s.write_all(&frame(true, false, 1, false, b"hello"))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut s).await, 1002);
    still_serving(srv.addr).await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let srv = start(duplex::Config::default()).await;
    let mut s = raw_upgrade(srv.addr, None).await;
    s.write_all(&frame(true, false, 1, true, b"caf\xc3\x28"))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut s).await, 1007);
    still_serving(srv.addr).await;
}

#[tokio::test]
async fn megabyte_request_header_gets_431_not_a_megabyte_buffer() {
    let srv = start(duplex::Config::default()).await;
    let s = TcpStream::connect(srv.addr).await.unwrap();
    let (mut r, w) = s.into_split();
    let writer = megabyte_head(w, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    drop(writer);
    still_serving(srv.addr).await;
}

/// Writes `start` and then 1 MiB of one header's value, never ending the
/// head; the task returns the write half (kept open) when done or refused.
fn megabyte_head(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    start: &'static [u8],
) -> tokio::task::JoinHandle<tokio::net::tcp::OwnedWriteHalf> {
    tokio::spawn(async move {
        let _ = w.write_all(start).await;
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..16 {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        w
    })
}

/// A connection that has had one request answered (200 from `/health`),
/// kept alive for the next.
async fn kept_alive(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    s
}

/// Reads until the server closes; panics if it takes 10 s. Returns what
/// arrived and how long it took.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closed the connection within 10 s");
    (out, started.elapsed())
}

/// A TLS client that opens TCP and never finishes its TLS handshake is
/// closed once `handshake_timeout` passes (the TLS handshake counts
/// against it), as is one that sends nothing at all.
#[tokio::test]
async fn a_tls_handshake_that_never_ends_is_closed_within_the_handshake_timeout() {
    let dir = std::env::temp_dir().join(format!("duplex-hostile-tls-{}", std::process::id()));
    let tls = duplex_server::tls::self_signed(&dir).unwrap();
    let srv = serve(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ws: duplex::Config::default().with_handshake_timeout(Duration::from_millis(300)),
        tls: Some(tls.config),
        ..Default::default()
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // The first bytes of a ClientHello record, then nothing.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    let (out, took) = until_closed(&mut s).await;
    assert!(out.is_empty(), "{out:?}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // One that sends nothing.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let (_, took) = until_closed(&mut silent).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

/// On a kept-alive HTTP/1.1 connection, a later request head that never
/// ends is bounded by the same handshake timeout (hyper's header read
/// timeout): the connection is closed, and the server goes on serving.
#[tokio::test]
async fn a_later_head_that_never_ends_is_closed_within_the_handshake_timeout() {
    let cfg = duplex::Config::default().with_handshake_timeout(Duration::from_millis(300));
    let srv = start(cfg).await;
    let mut s = kept_alive(srv.addr).await;
    // The second head: half of it, then nothing.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (out, took) = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
    still_serving(srv.addr).await;
}

/// More header fields than `max_headers` (64), in a head well under the
/// size limit: 431, and the server goes on serving.
#[tokio::test]
async fn a_head_with_too_many_header_fields_gets_431() {
    let srv = start(duplex::Config::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut head = String::from(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    for i in 0..70 {
        head.push_str(&format!("X-F{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    assert!(head.len() < 4096, "well under max_handshake_bytes");
    s.write_all(head.as_bytes()).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("an answer within 10 s");
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
    still_serving(srv.addr).await;
}

/// Later heads on a kept-alive HTTP/1.1 connection are hyper's to parse,
/// with its own limits: more than 100 header fields, or a head past its
/// buffer (about 408 KiB; here 1 MiB), get 431 (hyper may close without
/// one when the buffer fills mid-write), and the server goes on serving.
#[tokio::test]
async fn later_heads_are_bounded_by_hyper_limits() {
    // A long header read timeout: only the size limit can end the big head
    // within the 10 s this test waits.
    let srv =
        start(duplex::Config::default().with_handshake_timeout(Duration::from_secs(60))).await;
    let mut s = kept_alive(srv.addr).await;
    let mut head = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        head.push_str(&format!("X-F{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (out, _) = until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    let (mut r, w) = kept_alive(srv.addr).await.into_split();
    let writer = megabyte_head(w, b"GET /health HTTP/1.1\r\nX-Big: ");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out))
        .await
        .expect("closed within 10 s")
        .ok();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431 "),
        "{text}"
    );
    drop(writer);
    still_serving(srv.addr).await;
}

/// Reads one HTTP response: the head, then as many body bytes as its
/// Content-Length says (or to the end of the stream without one).
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).await.unwrap();
        }
        None => {
            s.read_to_end(&mut body).await.unwrap();
        }
    }
    head + &String::from_utf8_lossy(&body)
}

#[tokio::test]
async fn plain_http_and_unknown_paths() {
    let srv = start(duplex::Config::default()).await;
    for (req, status) in [
        ("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        ("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
        (
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            "426",
        ),
        ("garbage\r\n\r\n", "400"),
    ] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        // Plain HTTP is served by hyper with keep-alive: read one response
        // (head and Content-Length body), not to the end of the stream.
        let text = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
            .await
            .unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?} -> {text}"
        );
        if status == "426" {
            // hyper writes header names in lower case.
            assert!(
                text.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13\r\n"),
                "{text}"
            );
        }
    }
    still_serving(srv.addr).await;
}

#[tokio::test]
async fn large_messages_echo_over_loopback() {
    let _turn = HEAVY.lock().await;
    let srv = start(duplex::Config::default()).await;
    let mut ws = duplex::connect(&format!("ws://{}/echo", srv.addr))
        .await
        .unwrap();
    assert_eq!(ws.extensions(), "permessage-deflate");
    let big: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    ws.send(Message::text("after the big one")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(big));
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("after the big one")
    );
    ws.close(duplex::CloseCode::NORMAL, "done").await.unwrap();
    assert!(ws.was_clean());
    assert_eq!(ws.close_code(), Some(duplex::CloseCode::NORMAL));
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
    let _turn = HEAVY.lock().await;
    let cfg = duplex::Config::default().with_write_timeout(Duration::from_millis(300));
    let srv = start(cfg).await;
    let s = raw_upgrade(srv.addr, None).await;
    let (mut r, mut w) = s.into_split();
    // Send echo work but never read: the server's writes stall, then it gives up.
    let writer = tokio::spawn(async move {
        let msg = frame(true, false, 2, true, &vec![7u8; 1 << 20]);
        for _ in 0..64 {
            if w.write_all(&msg).await.is_err() {
                break;
            }
        }
        w
    });
    // The server gives the connection up: its place comes back (waited
    // for, within a bound far above the 300 ms write timeout).
    let gave_up = tokio::time::timeout(Duration::from_secs(20), async {
        while srv.connections.open() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        gave_up.is_ok(),
        "the stalled connection still holds its place"
    );
    // Now drain: the stream must end (EOF or reset) instead of echoing forever.
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match r.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "server kept the stalled connection open");
    writer.abort();
    still_serving(srv.addr).await;
}

/// A server whose per-address limits count loopback too.
async fn start_per_ip(per_ip: duplex_server::per_ip::PerIpLimits) -> Running {
    serve(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_ip,
        ..Default::default()
    })
    .await
}

/// The status line and body of the answer to an upgrade request.
async fn answer(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_connections() {
    let srv = start_per_ip(duplex_server::per_ip::PerIpLimits {
        max_connections: 2,
        connections_per_second: 0,
        connection_burst: 1,
        exempt_loopback: false,
    })
    .await;
    let url = format!("ws://{}/echo", srv.addr);
    let a = duplex::connect(&url).await.unwrap();
    let _b = duplex::connect(&url).await.unwrap();
    let third = answer(srv.addr).await;
    assert!(
        third.starts_with("HTTP/1.1 503")
            && third.contains("too many connections from your address"),
        "{third}"
    );
    // One closes: its place comes back, and the address may connect again.
    drop(a);
    tokio::time::timeout(Duration::from_secs(10), async {
        while srv.connections.open() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the closed connection's place came back");
    let mut c = duplex::connect(&url).await.unwrap();
    c.send(Message::text("still served")).await.unwrap();
    assert_eq!(
        c.recv().await.unwrap().unwrap(),
        Message::text("still served")
    );
}

#[tokio::test]
async fn one_address_cannot_open_connections_faster_than_its_rate() {
    let srv = start_per_ip(duplex_server::per_ip::PerIpLimits {
        max_connections: 0,
        connections_per_second: 1,
        connection_burst: 2,
        exempt_loopback: false,
    })
    .await;
    let url = format!("ws://{}/echo", srv.addr);
    let _a = duplex::connect(&url).await.unwrap();
    let _b = duplex::connect(&url).await.unwrap();
    let third = answer(srv.addr).await;
    assert!(
        third.starts_with("HTTP/1.1 429") && third.contains("too many new connections"),
        "{third}"
    );
}

/// What the server writes before it closes `s`, as text; fails if it has
/// not closed within `within`.
async fn answer_then_close(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection that never sends a byte waits in the kernel while the
/// listener defers accepting it (1 s by default, Linux), then is handed
/// over and meets the handshake timeout like any slow head: it is answered
/// 408 and closed, not kept.
#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_after_the_deferral_and_the_handshake_timeout() {
    let cfg = duplex::Config::default().with_handshake_timeout(Duration::from_millis(300));
    let srv = start(cfg).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let started = std::time::Instant::now();
    let text = answer_then_close(&mut s, Duration::from_secs(15)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let least = if cfg!(target_os = "linux") {
        // The deferral: the kernel's first SYN-ACK retransmission, 1 s.
        Duration::from_millis(1250)
    } else {
        Duration::from_millis(250)
    };
    assert!(started.elapsed() >= least, "{:?}", started.elapsed());
    still_serving(srv.addr).await;
}

#[tokio::test]
async fn a_handshake_head_that_never_ends_gets_408_within_the_handshake_timeout() {
    let cfg = duplex::Config::default().with_handshake_timeout(Duration::from_millis(300));
    let srv = start(cfg).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // A slowloris: half a request head, then nothing.
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let text = answer_then_close(&mut s, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    still_serving(srv.addr).await;
}
