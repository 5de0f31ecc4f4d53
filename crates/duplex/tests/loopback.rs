//! The tokio layer over real loopback sockets.

use duplex::{ClientOptions, CloseCode, Decision, Error, Message, ReadyState};
use std::time::Duration;
use tokio::net::TcpListener;

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

#[tokio::test]
async fn echo_with_browser_style_state() {
    let (url, server) = one_shot(|tcp| async move {
        let mut ws = duplex::accept(tcp).await.unwrap();
        while let Some(m) = ws.recv().await {
            ws.send(m.unwrap()).await.unwrap();
        }
        assert_eq!(ws.close_code(), Some(CloseCode(4000)));
        assert_eq!(ws.close_reason(), Some("app done"));
        assert!(ws.was_clean());
    })
    .await;
    let mut ws = duplex::connect(&url).await.unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Open);
    assert_eq!(ws.url(), Some(url.as_str()));
    assert_eq!(ws.extensions(), "permessage-deflate");
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

#[tokio::test]
async fn dropped_transport_is_an_abnormal_closure() {
    let (url, server) = one_shot(|tcp| async move {
        let ws = duplex::accept(tcp).await.unwrap();
        drop(ws);
    })
    .await;
    let mut ws = duplex::connect(&url).await.unwrap();
    server.await.unwrap();
    assert!(matches!(ws.recv().await, Some(Err(Error::AbnormalClosure))));
    assert!(ws.recv().await.is_none());
    assert_eq!(ws.close_code(), Some(CloseCode::ABNORMAL));
    assert!(!ws.was_clean());
}

#[tokio::test]
async fn keepalive_ping_is_answered_automatically() {
    let (url, server) = one_shot(|tcp| async move {
        let mut ws = duplex::accept(tcp).await.unwrap();
        // The server only reads; pongs to the client's pings go out by themselves.
        while ws.recv().await.is_some() {}
    })
    .await;
    let cfg = duplex::Config::default().with_ping_interval(Some(Duration::from_millis(50)));
    let mut ws = duplex::connect_with(
        &url,
        ClientOptions {
            config: cfg,
            ..Default::default()
        },
    )
    .await
    .unwrap();
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

#[tokio::test]
async fn frames_sent_with_the_handshake_response_are_seen_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let server = tokio::spawn(async move {
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
        // Response and a first text frame in one write; then wait for the echo.
        let mut out = resp.into_bytes();
        out.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        tcp.write_all(&out).await.unwrap();
        let mut echo = [0u8; 8];
        tcp.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo[0], 0x81);
        assert_eq!(echo[1], 0x82, "masked, 2 bytes");
        let mask = [echo[2], echo[3], echo[4], echo[5]];
        assert_eq!([echo[6] ^ mask[0], echo[7] ^ mask[1]], *b"hi");
    });
    let mut ws = duplex::connect(&url).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("first frame seen")
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("hi"));
    ws.send(m).await.unwrap();
    server.await.unwrap();
}
