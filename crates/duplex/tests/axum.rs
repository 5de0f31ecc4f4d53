//! The axum extractor and the hyper upgrade, served by a real axum server
//! on loopback and used by the duplex client.

use axum::routing::get;
use axum::Router;
use duplex::upgrade::WebSocketUpgrade;
use duplex::{ClientOptions, CloseCode, Decision, Message, Policy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo(ws: WebSocketUpgrade) -> axum::response::Response {
    let policy = Policy {
        protocols: vec!["v1".into()],
        ..Default::default()
    };
    ws.policy(policy).on_upgrade(|mut ws| async move {
        while let Some(Ok(m)) = ws.recv().await {
            if ws.send(m).await.is_err() {
                break;
            }
        }
    })
}

async fn private(ws: WebSocketUpgrade) -> axum::response::Response {
    let allowed = ws.request().request.headers.get("x-token") == Some("secret");
    let decision = if allowed {
        Decision::accept()
    } else {
        Decision::reject(401, "token required")
    };
    ws.decide(decision, |mut ws| async move {
        let _ = ws.send(Message::text("welcome")).await;
        let _ = ws.close(CloseCode::NORMAL, "").await;
    })
}

async fn start() -> std::net::SocketAddr {
    let app = Router::new()
        .route("/", get(|| async { "a page" }))
        .route("/ws", get(echo))
        .route("/private", get(private));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn opts() -> ClientOptions {
    ClientOptions {
        proxy: Proxy::None,
        ..Default::default()
    }
}

#[tokio::test]
async fn page_and_socket_from_one_router() {
    let addr = start().await;
    let mut o = opts();
    o.protocols = vec!["v0".into(), "v1".into()];
    let mut ws = duplex::connect_with(&format!("ws://{addr}/ws"), o)
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("v1"));
    assert_eq!(ws.extensions(), "permessage-deflate");
    let big = vec![42u8; 3 << 20];
    ws.send(Message::text("héllo")).await.unwrap();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("héllo"));
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(big));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.was_clean());

    // The same router still serves plain HTTP.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("a page"),
        "{out}"
    );
}

#[tokio::test]
async fn refusals_keep_their_status() {
    let addr = start().await;
    // A foreign origin: the default policy refuses.
    let mut o = opts();
    o.origin = Some("http://evil.example".into());
    let err = duplex::connect_with(&format!("ws://{addr}/ws"), o)
        .await
        .unwrap_err();
    assert!(
        matches!(err, duplex::Error::Refused { status: 403, .. }),
        "{err}"
    );
    // A decision with a status.
    let err = duplex::connect_with(&format!("ws://{addr}/private"), opts())
        .await
        .unwrap_err();
    assert!(
        matches!(err, duplex::Error::Refused { status: 401, .. }),
        "{err}"
    );
    let mut o = opts();
    o.headers = vec![("X-Token".into(), "secret".into())];
    let mut ws = duplex::connect_with(&format!("ws://{addr}/private"), o)
        .await
        .unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("welcome"));
    // A plain GET to the socket route: 426 with the version header.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 426"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{out}"
    );
}
