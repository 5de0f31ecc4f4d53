//! The tokio layer over real loopback sockets. The tests of a connection's
//! life (messages, closing, timeouts) run twice, against a whole
//! `WebSocket` and against its split halves (`both!`).

#[macro_use]
mod support;

use duplex::{ClientOptions, CloseCode, Decision, Error, Message, ReadyState};
use std::time::Duration;
use support::{client_frame, raw_client, Mode, Ws};
use tokio::net::TcpListener;

both!(
    echo_with_browser_style_state,
    dropped_transport_is_an_abnormal_closure,
    keepalive_ping_is_answered_automatically,
    write_timeout_fails_a_peer_that_stops_reading,
    keepalive_fails_a_peer_that_never_answers_pings,
    close_gives_up_on_a_peer_that_never_answers,
    frames_sent_with_the_handshake_response_are_seen_at_once,
    stream_and_sink_carry_messages_and_close,
    server_closes_the_tcp_connection_first_after_a_clean_close,
);

/// Serves one connection with `serve`, returns the ws:// URL.
async fn one_shot<F, Fut>(serve: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/chat", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        serve(tcp).await;
    });
    (url, h)
}

async fn echo_with_browser_style_state(mode: Mode) {
    let (url, server) = one_shot(move |tcp| async move {
        let mut ws = Ws::new(duplex::accept(tcp).await.unwrap(), mode);
        while let Some(m) = ws.recv().await {
            ws.send(m.unwrap()).await.unwrap();
        }
        assert_eq!(ws.close_code(), Some(CloseCode(4000)));
        assert_eq!(ws.close_reason().as_deref(), Some("app done"));
        assert!(ws.was_clean());
        assert_eq!(ws.ready_state(), ReadyState::Closed);
    })
    .await;
    let ws = duplex::connect(&url).await.unwrap();
    assert_eq!(ws.url(), Some(url.as_str()));
    assert_eq!(ws.extensions(), "permessage-deflate");
    let mut ws = Ws::new(ws, mode);
    assert_eq!(ws.ready_state(), ReadyState::Open);
    for i in 0..100 {
        ws.feed(Message::text(format!("message {i}")))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..100 {
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text(format!("message {i}"))
        );
    }
    ws.close(CloseCode(4000), "app done").await.unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    assert_eq!(ws.close_code(), Some(CloseCode(4000)));
    assert!(ws.was_clean());
    server.await.unwrap();
}

#[tokio::test]
async fn accept_with_sees_the_request_and_picks_a_subprotocol() {
    let (url, server) = one_shot(|tcp| async move {
        let ws = duplex::accept_with(tcp, duplex::Config::default(), |req| {
            assert_eq!(req.path(), "/chat");
            assert_eq!(req.origin.as_deref(), Some("http://app.example"));
            assert_eq!(req.request.headers.get("x-token"), Some("t0k"));
            let pick = req.protocols.iter().find(|p| *p == "v2.chat").cloned();
            Decision::Accept {
                protocol: pick,
                headers: vec![],
            }
        })
        .await
        .unwrap();
        assert_eq!(ws.protocol(), Some("v2.chat"));
    })
    .await;
    let opts = ClientOptions {
        protocols: vec!["v3.chat".into(), "v2.chat".into()],
        origin: Some("http://app.example".into()),
        headers: vec![("X-Token".into(), "t0k".into())],
        ..Default::default()
    };
    let ws = duplex::connect_with(&url, opts).await.unwrap();
    assert_eq!(ws.protocol(), Some("v2.chat"));
    server.await.unwrap();
}

#[tokio::test]
async fn refusal_reaches_the_client_as_its_status() {
    let (url, server) = one_shot(|tcp| async move {
        let r = duplex::accept_with(tcp, duplex::Config::default(), |_| {
            Decision::reject(403, "origin not allowed")
        })
        .await;
        assert!(matches!(r, Err(Error::Refused { status: 403, .. })));
    })
    .await;
    let err = duplex::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::Refused { status: 403, .. }), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn split_halves_work_from_two_tasks() {
    let (url, server) = one_shot(|tcp| async move {
        let mut ws = duplex::accept(tcp).await.unwrap();
        while let Some(m) = ws.recv().await {
            ws.feed(m.unwrap()).await.unwrap();
        }
    })
    .await;
    let ws = duplex::connect(&url).await.unwrap();
    let (tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..500u32 {
            tx.send(Message::binary(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
        tx.close(CloseCode::NORMAL, "").await.unwrap();
    });
    let mut n = 0u32;
    while let Some(m) = rx.recv().await {
        assert_eq!(m.unwrap(), Message::binary(n.to_be_bytes().to_vec()));
        n += 1;
    }
    assert_eq!(n, 500);
    assert!(rx.was_clean());
    assert_eq!(rx.close_code(), Some(CloseCode::NORMAL));
    sender.await.unwrap();
    server.await.unwrap();
}

async fn dropped_transport_is_an_abnormal_closure(mode: Mode) {
    let (url, server) = one_shot(|tcp| async move {
        let ws = duplex::accept(tcp).await.unwrap();
        drop(ws);
    })
    .await;
    let mut ws = Ws::new(duplex::connect(&url).await.unwrap(), mode);
    server.await.unwrap();
    assert!(matches!(ws.recv().await, Some(Err(Error::AbnormalClosure))));
    assert!(ws.recv().await.is_none());
    assert_eq!(ws.close_code(), Some(CloseCode::ABNORMAL));
    assert!(!ws.was_clean());
}

async fn keepalive_ping_is_answered_automatically(mode: Mode) {
    let (url, server) = one_shot(move |tcp| async move {
        let mut ws = Ws::new(duplex::accept(tcp).await.unwrap(), mode);
        // The server only reads; pongs to the client's pings go out by themselves.
        while ws.recv().await.is_some() {}
        assert!(ws.was_clean());
    })
    .await;
    let cfg = duplex::Config::default().with_ping_interval(Some(Duration::from_millis(50)));
    let ws = duplex::connect_with(
        &url,
        ClientOptions {
            config: cfg,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut ws = Ws::new(ws, mode);
    // Idle for several ping intervals: no pong timeout, still open.
    let r = tokio::time::timeout(Duration::from_millis(400), ws.recv()).await;
    assert!(r.is_err(), "no message expected");
    assert_eq!(ws.ready_state(), ReadyState::Open);
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.was_clean());
    server.await.unwrap();
}

#[tokio::test]
async fn unreachable_port_is_a_connect_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let err = duplex::connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err}");
}

/// A server that completes the opening handshake by hand, then hands the
/// raw socket to `then` (which misbehaves in its own way).
async fn raw_peer<F, Fut>(then: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    raw_peer_with_first_bytes(&[], then).await
}

/// Like [`raw_peer`], sending `first` right behind the 101 response.
async fn raw_peer_with_first_bytes<F, Fut>(
    first: &[u8],
    then: F,
) -> (String, tokio::task::JoinHandle<()>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let first = first.to_vec();
    let h = tokio::spawn(async move {
        let (mut tcp, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim();
        let accept = duplex::proto::handshake::accept_key(key.as_bytes());
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let mut out = resp.into_bytes();
        out.extend_from_slice(&first);
        tcp.write_all(&out).await.unwrap();
        then(tcp).await;
    });
    (url, h)
}

/// Reads and discards until EOF, answering nothing.
async fn swallow(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 16];
    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn client_with(config: duplex::Config) -> ClientOptions {
    ClientOptions {
        config,
        ..Default::default()
    }
}

async fn write_timeout_fails_a_peer_that_stops_reading(mode: Mode) {
    let (url, server) = raw_peer(|tcp| async move {
        // Holds the socket open without reading a byte.
        std::future::pending::<()>().await;
        drop(tcp);
    })
    .await;
    let cfg = duplex::Config::default().with_write_timeout(Duration::from_millis(300));
    let ws = duplex::connect_with(&url, client_with(cfg)).await.unwrap();
    let mut ws = Ws::new(ws, mode);
    let big = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let started = std::time::Instant::now();
    let err = loop {
        // The kernel's buffers take a few MiB; then writes stall.
        if let Err(e) = ws.send(Message::Binary(big.clone())).await {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never timed out"
        );
    };
    assert!(matches!(err, Error::WriteTimeout), "{err}");
    // The end of the connection is reported once, as the same error.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("the failed connection ends");
    assert!(matches!(end, Some(Err(Error::WriteTimeout))), "{end:?}");
    assert!(ws.recv().await.is_none());
    assert_eq!(ws.close_code(), Some(CloseCode::ABNORMAL));
    server.abort();
}

async fn keepalive_fails_a_peer_that_never_answers_pings(mode: Mode) {
    let (url, server) = raw_peer(swallow).await;
    let cfg = duplex::Config::default()
        .with_ping_interval(Some(Duration::from_millis(50)))
        .with_pong_timeout(Duration::from_millis(150));
    let ws = duplex::connect_with(&url, client_with(cfg)).await.unwrap();
    let mut ws = Ws::new(ws, mode);
    let r = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("keepalive gave up in time");
    let err = r.expect("an error, not a clean end").unwrap_err();
    assert!(
        matches!(err, Error::Protocol(duplex::proto::Error::KeepaliveTimeout)),
        "{err:?}"
    );
    assert!(ws.recv().await.is_none());
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    assert!(!ws.was_clean());
    server.await.unwrap();
}

async fn close_gives_up_on_a_peer_that_never_answers(mode: Mode) {
    let (url, server) = raw_peer(|tcp| async move {
        // Reads our close but neither answers it nor closes its side.
        use tokio::io::AsyncReadExt;
        let mut tcp = tcp;
        let mut buf = [0u8; 64];
        let _ = tcp.read(&mut buf).await;
        std::future::pending::<()>().await;
    })
    .await;
    let cfg = duplex::Config::default().with_close_timeout(Duration::from_millis(200));
    let ws = duplex::connect_with(&url, client_with(cfg)).await.unwrap();
    let mut ws = Ws::new(ws, mode);
    let started = std::time::Instant::now();
    // A close that timed out says so.
    let err = ws.close(CloseCode::NORMAL, "bye").await.unwrap_err();
    assert!(matches!(err, Error::CloseTimeout), "{err:?}");
    assert!(ws.recv().await.is_none(), "reported once");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    assert_eq!(ws.close_code(), Some(CloseCode::ABNORMAL));
    assert!(!ws.was_clean());
    server.abort();
}

async fn frames_sent_with_the_handshake_response_are_seen_at_once(mode: Mode) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Response and a first text frame in one write; then wait for the echo.
    let (url, server) =
        raw_peer_with_first_bytes(&[0x81, 0x02, b'h', b'i'], |mut tcp| async move {
            let mut echo = [0u8; 8];
            tcp.read_exact(&mut echo).await.unwrap();
            assert_eq!(echo[0], 0x81);
            assert_eq!(echo[1], 0x82, "masked, 2 bytes");
            let mask = [echo[2], echo[3], echo[4], echo[5]];
            assert_eq!([echo[6] ^ mask[0], echo[7] ^ mask[1]], *b"hi");
            let _ = tcp.shutdown().await;
        })
        .await;
    let mut ws = Ws::new(duplex::connect(&url).await.unwrap(), mode);
    let m = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("first frame seen")
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("hi"));
    ws.send(m).await.unwrap();
    server.await.unwrap();
}

async fn stream_and_sink_carry_messages_and_close(mode: Mode) {
    let (url, server) = one_shot(move |tcp| async move {
        let mut ws = Ws::new(duplex::accept(tcp).await.unwrap(), mode);
        // Echo through the Stream and Sink impls: fed messages leave when
        // the stream waits for input.
        while let Some(m) = ws.next().await {
            ws.sink_feed(m.unwrap()).await.unwrap();
        }
        assert_eq!(ws.close_code(), Some(CloseCode::NORMAL));
        assert!(ws.was_clean());
    })
    .await;
    let mut ws = Ws::new(duplex::connect(&url).await.unwrap(), mode);
    for i in 0..50 {
        ws.sink_feed(Message::binary(vec![i as u8; i]))
            .await
            .unwrap();
    }
    ws.sink_flush().await.unwrap();
    for i in 0..50 {
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m, Message::binary(vec![i as u8; i]));
    }
    // The whole socket's close runs the handshake; the sender's sends the
    // close frame and the receiver's stream ends with the handshake.
    ws.sink_close().await.unwrap();
    assert!(ws.next().await.is_none());
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    assert!(ws.was_clean());
    server.await.unwrap();
}

async fn server_closes_the_tcp_connection_first_after_a_clean_close(mode: Mode) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (url, server) = one_shot(move |tcp| async move {
        let mut ws = Ws::new(duplex::accept(tcp).await.unwrap(), mode);
        assert!(ws.recv().await.is_none());
        assert!(ws.was_clean());
        let _ = done_tx.send(());
    })
    .await;
    let mut tcp = raw_client(&url).await;
    // Close, with a ping behind it that the server must read away (closing
    // with unread input would reset the connection and could destroy the
    // close frame in our buffer).
    let mut out = client_frame(0x8, &1000u16.to_be_bytes());
    out.extend_from_slice(&client_frame(0x9, b"late"));
    tcp.write_all(&out).await.unwrap();
    // The server is done without waiting for our FIN, which never comes.
    tokio::time::timeout(Duration::from_secs(2), done_rx)
        .await
        .expect("the server finished while the client kept its side open")
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut reply))
        .await
        .expect("EOF from the server")
        .expect("a FIN, not a reset");
    assert_eq!(reply, [0x88, 0x02, 0x03, 0xe8], "close 1000 echoed");
    server.await.unwrap();
}
