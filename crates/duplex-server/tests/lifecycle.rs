//! Connection limit and graceful shutdown of a real server on loopback.

use duplex::{CloseCode, Message};
use duplex_server::server::Connections;
use duplex_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server on a free loopback port, shut down when `stop` is sent
/// or dropped.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    connections: Connections,
}

async fn start(config: ServerConfig) -> Running {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let connections = server.connections();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop,
        task,
        connections,
    }
}

#[tokio::test]
async fn shutdown_closes_open_connections_with_1001() {
    let Running {
        addr,
        stop,
        task: running,
        ..
    } = start(ServerConfig::default()).await;
    let mut ws = duplex::connect(&format!("ws://{addr}/echo")).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("hello"));
    stop.send(()).unwrap();
    assert!(ws.recv().await.is_none(), "server should close");
    assert_eq!(ws.close_code(), Some(CloseCode::GOING_AWAY));
    assert!(ws.was_clean());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let srv = start(ServerConfig {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let url = format!("ws://{}/echo", srv.addr);
    let mut a = duplex::connect(&url).await.unwrap();
    let mut b = duplex::connect(&url).await.unwrap();
    let err = duplex::connect(&url).await.unwrap_err();
    assert!(
        matches!(err, duplex::Error::Refused { status: 503, .. }),
        "{err}"
    );
    assert_eq!(srv.connections.open(), 2);
    // A slot frees up when a connection ends: the server says when.
    a.close(CloseCode::NORMAL, "").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), srv.connections.below_limit())
        .await
        .expect("the closed connection's slot comes back");
    assert_eq!(srv.connections.open(), 1);
    let mut c = duplex::connect(&url)
        .await
        .expect("admitted in the freed slot");
    c.send(Message::text("in")).await.unwrap();
    assert_eq!(c.recv().await.unwrap().unwrap(), Message::text("in"));
    b.close(CloseCode::NORMAL, "").await.unwrap();
    c.close(CloseCode::NORMAL, "").await.unwrap();
}

/// Refusals are answered at most 64 at a time: while 64 connections over
/// the limit hold theirs (they send one byte and never the rest of a
/// request head), the next one is closed unanswered; once one of them goes
/// away, a refusal is answered 503 again.
#[tokio::test]
async fn at_most_64_refusals_are_answered_at_once() {
    let srv = start(ServerConfig {
        max_connections: 1,
        ..Default::default()
    })
    .await;
    let url = format!("ws://{}/echo", srv.addr);
    let mut a = duplex::connect(&url).await.unwrap();
    let mut silent = Vec::new();
    for _ in 0..64 {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        // A byte, so that the listener's deferred accept hands it over
        // (a connection that sends nothing waits in the kernel until the
        // `defer_accept` period ends, holding nothing of the server's).
        s.write_all(b"G").await.unwrap();
        silent.push(s);
    }
    // Accepted after the 64 (the listen queue is first in, first out).
    let answer = |mut s: tokio::net::TcpStream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = s
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .expect("closed or answered within 5 s");
        String::from_utf8_lossy(&got).into_owned()
    };
    let extra = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(answer(extra).await, "", "closed unanswered");
    // One of the 64 goes away: its refusal ends, and the next is answered.
    drop(silent.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let text = answer(s).await;
        if text.starts_with("HTTP/1.1 503 ") {
            break;
        }
        assert!(text.is_empty(), "{text}");
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal's slot never came back"
        );
    }
    drop(silent);
    a.close(CloseCode::NORMAL, "").await.unwrap();
}

/// The server's default permessage-deflate keeps no compression history
/// (so an idle connection holds no zlib state): it says so in its response,
/// clients comply, and interleaved clients' compressed messages, each
/// inflated and compressed with a state borrowed from the thread's pool,
/// come back intact.
#[tokio::test]
async fn default_deflate_runs_without_context_takeover() {
    let srv = start(ServerConfig::default()).await;
    let url = format!("ws://{}/echo", srv.addr);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let ws = duplex::connect(&url).await.unwrap();
        let ext = ws.extensions().to_string();
        assert!(ext.starts_with("permessage-deflate"), "{ext}");
        assert!(ext.contains("server_no_context_takeover"), "{ext}");
        assert!(ext.contains("client_no_context_takeover"), "{ext}");
        clients.push(ws);
    }
    // Repetitive messages: with a shared history each would be a few
    // back-references into the one before, which a reset inflater could
    // not decode.
    for round in 0..20 {
        for (i, ws) in clients.iter_mut().enumerate() {
            let text = format!("{{\"player\":{i},\"round\":{round},\"move\":\"e2e4\"}}").repeat(8);
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text(text));
        }
    }
    for mut ws in clients {
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        assert!(ws.was_clean());
    }
}
