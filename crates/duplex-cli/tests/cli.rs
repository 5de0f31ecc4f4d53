//! The `duplex` binary, run as a user would.

use duplex::{CloseCode, Message};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// Starts `duplex serve` on a free port; returns the child and its address.
fn serve() -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test]
async fn serve_echoes_on_echo_and_404s_elsewhere() {
    let (mut child, addr) = serve();
    let mut ws = duplex::connect(&format!("ws://{addr}/echo")).await.unwrap();
    ws.send(Message::text("ping me back")).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("ping me back")
    );
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.was_clean());
    let err = duplex::connect(&format!("ws://{addr}/other"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, duplex::Error::Refused { status: 404 }),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn connect_echo_exits_0_after_a_clean_close() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        for m in [
            Message::text("one"),
            Message::binary(vec![0u8; 70_000]),
            Message::text(""),
        ] {
            ws.send(m.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), m);
        }
        ws.close(CloseCode::NORMAL, "bye").await.unwrap();
        assert!(ws.was_clean());
    });
    let status = tokio::process::Command::new(BIN)
        .args(["connect", "--echo", &url])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    server.await.unwrap();
}

#[tokio::test]
async fn connect_fails_with_a_message_and_exit_1_when_nothing_listens() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let out = tokio::process::Command::new(BIN)
        .args(["connect", "--echo", &format!("ws://{addr}/")])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duplex connect:"), "{err}");
}

#[tokio::test]
async fn connect_exits_2_when_the_server_breaks_the_protocol() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let ws = duplex::accept(tcp).await.unwrap();
        // Drop without a closing handshake.
        drop(ws);
    });
    let out = tokio::process::Command::new(BIN)
        .args(["connect", "--echo", &url])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.await.unwrap();
}
