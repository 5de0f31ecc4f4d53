//! The `duplex` binary, run as a user would.

use duplex::{CloseCode, Message};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader as BufReaderAsync};
use tokio::net::TcpListener;

mod common;
use common::{serve_with, BIN};

/// Starts `duplex serve` on a free port; returns the child and its address.
fn serve() -> (std::process::Child, String) {
    serve_with(&[], "http")
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
        matches!(err, duplex::Error::Refused { status: 404, .. }),
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

/// Sends a raw HTTP request and returns the whole response. Plain HTTP is
/// served with keep-alive, so the request asks the server to close after
/// answering (`Connection: close`) unless it names a connection option.
async fn http_raw(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = if request.contains("\r\nConnection:") {
        request.to_string()
    } else {
        request.replacen("\r\n", "\r\nConnection: close\r\n", 1)
    };
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn serve_page_origin_policy_and_subprotocols() {
    let (mut child, addr) = serve_with(
        &[
            "--subprotocol",
            "chat.v1",
            "--subprotocol",
            "chat.v2",
            "--allow-origin",
            "http://app.example",
        ],
        "http",
    );
    let page = http_raw(&addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    // hyper writes header names in lower case.
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html; charset=utf-8"));
    assert!(lower.contains("content-security-policy: "));
    assert!(page.contains("<!DOCTYPE html>") && page.contains("/echo"));
    let post = http_raw(
        &addr,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let plain_get = http_raw(&addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain_get.starts_with("HTTP/1.1 426 "), "{plain_get}");

    let url = format!("ws://{addr}/echo");
    let opts = |origin: Option<&str>, protocols: &[&str]| duplex::ClientOptions {
        origin: origin.map(str::to_string),
        protocols: protocols.iter().map(|p| p.to_string()).collect(),
        proxy: duplex::Proxy::None,
        ..Default::default()
    };
    // A foreign page is refused, with the reason in the body.
    let err = duplex::connect_with(&url, opts(Some("http://evil.example"), &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, duplex::Error::Refused { status: 403, .. }),
        "{err}"
    );
    let raw = http_raw(
        &addr,
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: http://evil.example\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 403 Forbidden"), "{raw}");
    assert!(raw.contains("not allowed"), "{raw}");
    // The listed origin, the server's own origin, and no origin are accepted.
    let own = format!("http://{addr}");
    for origin in [Some("http://app.example"), Some(own.as_str()), None] {
        let mut ws = duplex::connect_with(&url, opts(origin, &["x", "chat.v2", "chat.v1"]))
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat.v2"), "{origin:?}");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
    // No common subprotocol: accepted without one (a browser then fails).
    let mut ws = duplex::connect_with(&url, opts(None, &["x"]))
        .await
        .unwrap();
    assert_eq!(ws.protocol(), None);
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_rejects_a_malformed_allow_origin() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-origin",
            "localhost",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-origin"));
}

/// Starts `duplex connect` with `args`, writes `input` to its stdin and
/// returns the child with its stdin still open.
async fn spawn_connect(
    args: &[&str],
    input: &[u8],
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    (child, stdin)
}

/// Runs `duplex connect` with `args`, feeding `input` on stdin then EOF.
async fn connect_cli(args: &[&str], input: &str) -> std::process::Output {
    let (child, stdin) = spawn_connect(args, input.as_bytes()).await;
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn serve_over_tls_and_connect_with_ca_insecure_or_neither() {
    // `--tls-dir` creates the directory; the guard removes it after.
    let guard = tempfile::Builder::new()
        .prefix("duplex-cli-tls-")
        .tempdir()
        .unwrap();
    let dir = guard.path().join("tls");
    let dir_s = dir.to_str().unwrap();
    let (mut child, addr) = serve_with(&["--tls-self-signed", "--tls-dir", dir_s], "https");
    let port = addr.rsplit(':').next().unwrap();
    let cert = dir.join("cert.pem");
    let cert_s = cert.to_str().unwrap();
    let url = format!("wss://localhost:{port}/echo");
    let input = "hello\nwörld 🌍\n\n你好\n";
    let out = connect_cli(&["--ca", cert_s, &url], input).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extensions: permessage-deflate"), "{err}");

    // Untrusted without --ca: exit 1 and a reason naming the certificate.
    let out = connect_cli(&[&url], "x\n").await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    let url_ip = format!("wss://127.0.0.1:{port}/echo");
    let out = connect_cli(&["--insecure", "--no-deflate", &url_ip], "plain\n").await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "plain\n");

    // The page is served over https on the same port.
    let page = tokio::process::Command::new(BIN)
        .args(["connect", "--insecure", &format!("wss://127.0.0.1:{port}/")])
        .output()
        .await
        .unwrap();
    // A page is not a socket: the upgrade is refused (the page answers 200).
    assert_eq!(page.status.code(), Some(1));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn connect_sends_headers_prints_binary_and_reports_the_peer_code() {
    for raw in [false, true] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/room", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut ws = duplex::accept_with(tcp, duplex::Config::default(), |req| {
                assert_eq!(req.request.headers.get("x-token"), Some("abc: def"));
                assert_eq!(req.origin.as_deref(), Some("http://app.example"));
                assert_eq!(req.protocols, ["p1", "p2"]);
                duplex::Decision::Accept {
                    protocol: Some("p2".into()),
                    headers: vec![],
                }
            })
            .await
            .unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("hi"));
            ws.send(Message::binary(vec![0u8, 1, 2, 255]))
                .await
                .unwrap();
            ws.send(Message::text("ok")).await.unwrap();
            ws.close(CloseCode(4001), "room closed").await.unwrap();
        });
        let mut args = vec![
            "-H",
            "X-Token: abc: def",
            "--origin",
            "http://app.example",
            "--subprotocol",
            "p1",
            "--subprotocol",
            "p2",
        ];
        if raw {
            args.push("--binary");
        }
        args.push(&url);
        // Stdin stays open: the server is the one that closes.
        let (child, stdin) = spawn_connect(&args, b"hi\n").await;
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        drop(stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("4001") && err.contains("room closed"), "{err}");
        assert!(err.contains("subprotocol: p2"), "{err}");
        let expected: &[u8] = if raw {
            b"\x00\x01\x02\xffok\n"
        } else {
            b"AAEC/w==\nok\n"
        };
        assert_eq!(out.stdout, expected);
        server.await.unwrap();
    }
}

/// A server for one connection that echoes each message after `delay`;
/// the task ends with the peer's close code and whether the close was clean.
async fn echo_once(
    delay: Duration,
) -> (String, tokio::task::JoinHandle<(Option<CloseCode>, bool)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        while let Some(m) = ws.recv().await {
            tokio::time::sleep(delay).await;
            ws.send(m.unwrap()).await.unwrap();
        }
        (ws.close_code(), ws.was_clean())
    });
    (url, server)
}

#[tokio::test]
async fn connect_collects_answers_before_closing_at_eof() {
    // A server that answers slowly: every answer must still be printed.
    let (url, server) = echo_once(Duration::from_millis(100)).await;
    let out = connect_cli(&[&url], "1\n2\n3\n").await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1\n2\n3\n");
    assert_eq!(server.await.unwrap().0, Some(CloseCode::NORMAL));
}

#[tokio::test]
async fn connect_closes_with_1000_on_ctrl_c() {
    let (url, server) = echo_once(Duration::ZERO).await;
    let (mut child, stdin) = spawn_connect(&[&url], b"before interrupt\n").await;
    // Wait until the answer is on stdout, so the signal handler is installed.
    let mut stdout = BufReaderAsync::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "before interrupt\n");
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(0));
    assert_eq!(server.await.unwrap(), (Some(CloseCode::NORMAL), true));
}

/// Sends `cmds` (one frame of Centrifugo JSON commands) and returns the
/// reply frame's lines.
async fn centrifuge_call(
    ws: &mut duplex::WebSocket<duplex::ClientStream>,
    cmds: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    let text: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    ws.send(Message::text(text.join("\n"))).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    m.as_bytes()
        .split(|b| *b == b'\n')
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// SIGTERM shuts the server down like SIGINT: Centrifugo clients are told
/// "shutdown" (3001, reconnect), the process exits 0.
#[tokio::test]
async fn serve_shuts_down_on_sigterm() {
    let (mut child, addr) = serve();
    let mut ws = duplex::connect(&format!("ws://{addr}/connection/websocket"))
        .await
        .unwrap();
    let r = centrifuge_call(&mut ws, &[serde_json::json!({"id": 1, "connect": {}})]).await;
    assert!(r[0]["connect"]["client"].is_string(), "{r:?}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    while let Some(Ok(_)) = ws.recv().await {}
    assert_eq!(ws.close_code(), Some(CloseCode(3001)));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A token from `duplex token` is accepted by a server configured with the
/// same secret (it carries the audience and issuer the file requires); the
/// namespace rules of the file apply, and a file with a mistake is refused
/// at start with the key named.
#[tokio::test]
async fn token_and_config_file() {
    let guard = tempfile::Builder::new()
        .prefix("duplex-cli-config-")
        .tempdir()
        .unwrap();
    let dir = guard.path();
    let file = dir.join("duplex.toml");
    std::fs::write(
        &file,
        "[auth]\ntoken_hmac_secret = \"s3cret\"\ntoken_audience = \"app\"\ntoken_issuer = \"backend\"\n\
         [namespaces.room]\npresence = true\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let (mut child, addr) = serve_with(&["--config", file_arg], "http");
    let out = Command::new(BIN)
        .args([
            "token",
            "--config",
            file_arg,
            "--user",
            "alice",
            "--info",
            "{\"name\":\"A\"}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let url = format!("ws://{addr}/connection/websocket");
    let mut ws = duplex::connect(&url).await.unwrap();
    let r = centrifuge_call(
        &mut ws,
        &[
            serde_json::json!({"id": 1, "connect": {"token": token}}),
            serde_json::json!({"id": 2, "subscribe": {"channel": "room:1"}}),
            serde_json::json!({"id": 3, "presence": {"channel": "room:1"}}),
            serde_json::json!({"id": 4, "subscribe": {"channel": "elsewhere"}}),
        ],
    )
    .await;
    assert!(r[0]["connect"]["client"].is_string(), "{r:?}");
    assert!(r[1]["subscribe"].is_object(), "{r:?}");
    let members = r[2]["presence"]["presence"].as_object().unwrap();
    let me = members.values().next().unwrap();
    assert_eq!(
        (me["user"].as_str(), me["conn_info"]["name"].as_str()),
        (Some("alice"), Some("A"))
    );
    // No default namespace in this file: unknown channel.
    assert_eq!(r[3]["error"]["code"], 102);
    // Without a token: anonymous connections are not allowed by this file.
    let mut anon = duplex::connect(&url).await.unwrap();
    let r = centrifuge_call(&mut anon, &[serde_json::json!({"id": 1, "connect": {}})]).await;
    assert_eq!(r[0]["error"]["code"], 101);
    child.kill().unwrap();
    child.wait().unwrap();
    // A mistake in the file: exit 2 with the key named.
    std::fs::write(&file, "[hub]\nping_intervl = \"5s\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config", file_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ping_intervl"), "{err}");
}
