//! The hub behind a real server on loopback: the Centrifugo front's
//! broadcast path, slow clients, bad input and its codes, rate limits,
//! shutdown, and the HTTP side (API keys, hyper keep-alive, an upgrade
//! through hyper). The official SDKs are exercised in tests/interop; here a
//! plain WebSocket client speaks the JSON protocol to look at exact frames.

use duplex::{CloseCode, Message, WebSocket};
use duplex_server::hub::namespace::{ChannelOptions, SubscribeRule};
use duplex_server::{Server, ServerConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    app: Arc<duplex_server::app::App>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn config() -> ServerConfig {
    let mut c = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    c.hub.namespaces.default = Some(ChannelOptions {
        subscribe: SubscribeRule::Anonymous,
        ..Default::default()
    });
    c.hub.namespaces.named.insert(
        "h".into(),
        ChannelOptions {
            history_size: 100,
            history_ttl: Duration::from_secs(60),
            recovery: true,
            subscribe: SubscribeRule::Anonymous,
            ..Default::default()
        },
    );
    c.auth.allow_anonymous = true;
    c.auth.hmac_secret = Some("secret".into());
    c.auth.api_key = Some("key".into());
    c
}

async fn start(config: ServerConfig) -> Running {
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let app = server.app().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        app,
        stop: Some(stop),
        task,
    }
}

type Ws = WebSocket<duplex::ClientStream>;

async fn client(addr: SocketAddr) -> Ws {
    duplex::connect(&format!("ws://{addr}/connection/websocket"))
        .await
        .unwrap()
}

/// Sends commands (one frame) and returns the next frame's JSON lines.
async fn call(ws: &mut Ws, cmds: &[Value]) -> Vec<Value> {
    let text: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    ws.send(Message::text(text.join("\n"))).await.unwrap();
    next(ws).await
}

async fn next(ws: &mut Ws) -> Vec<Value> {
    let m = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .expect("a frame within 10 s")
        .expect("the connection is open")
        .expect("no error");
    let Message::Text(t) = m else {
        panic!("text expected")
    };
    t.as_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn connected(addr: SocketAddr, channel: &str) -> Ws {
    subscribed(client(addr).await, channel).await
}

async fn subscribed(mut ws: Ws, channel: &str) -> Ws {
    let r = call(
        &mut ws,
        &[
            json!({"id": 1, "connect": {}}),
            json!({"id": 2, "subscribe": {"channel": channel}}),
        ],
    )
    .await;
    assert!(r[0]["connect"]["client"].is_string(), "{r:?}");
    assert!(r[1]["subscribe"].is_object(), "{r:?}");
    ws
}

/// Clients the Centrifugo front has disconnected as slow so far.
fn slow_disconnects(hub: &duplex_server::hub::Hub) -> u64 {
    hub.metrics()
        .slow_disconnects
        .get_or_create(&duplex_server::metrics::FrontLabel {
            front: "centrifuge",
        })
        .get()
}

/// Reads until the connection closes; returns the close code.
async fn closed_with(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.recv()).await {
            Err(_) => panic!("no close within 20 s"),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return ws.close_code().map(|c| c.0),
        }
    }
}

#[tokio::test]
async fn a_broadcast_is_encoded_once_for_every_subscriber() {
    let srv = start(config()).await;
    let mut subs = Vec::new();
    for _ in 0..40 {
        subs.push(connected(srv.addr, "h:room").await);
    }
    let hub = srv.app.hub.clone();
    for i in 0..10 {
        hub.publish("h:room", format!("{{\"n\":{i}}}").into(), None)
            .await
            .unwrap();
    }
    for ws in &mut subs {
        for i in 0..10 {
            let v = &next(ws).await[0];
            assert_eq!(v["push"]["channel"], "h:room");
            assert_eq!(v["push"]["pub"]["data"]["n"], i);
            assert_eq!(v["push"]["pub"]["offset"], i + 1);
        }
    }
    let m = hub.metrics();
    let encodings: u64 = m
        .encodings
        .get_or_create(&duplex_server::metrics::FrontLabel {
            front: "centrifuge",
        })
        .get();
    assert_eq!(
        encodings, 10,
        "one encoding per publication, not per receiver"
    );
    assert_eq!(m.deliveries.get(), 400);
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_slow_and_others_keep_up() {
    let mut c = config();
    c.centrifuge.mailbox_bytes = 64 * 1024;
    let srv = start(c).await;
    // Without permessage-deflate, so what the server writes is what the
    // socket buffers hold.
    let plain = duplex::ClientOptions {
        config: duplex::Config::default().with_deflate(None),
        ..Default::default()
    };
    let url = format!("ws://{}/connection/websocket", srv.addr);
    let mut stuck = subscribed(
        duplex::connect_with(&url, plain.clone()).await.unwrap(),
        "flood",
    )
    .await;
    let mut reader = subscribed(duplex::connect_with(&url, plain).await.unwrap(), "flood").await;
    let hub = srv.app.hub.clone();
    let slow = || slow_disconnects(&hub);
    // Incompressible (the connection may use permessage-deflate): 16 KiB
    // of pseudo-random letters per publication.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut payload = move || {
        let text: String = (0..16 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (b'a' + (seed % 26) as u8) as char
            })
            .collect();
        format!("\"{text}\"")
    };
    let mut sent = 0u64;
    // Publish until the stuck client's mailbox overflows (bounded: the
    // socket buffers on loopback hold tens of MiB at most: tcp_rmem's
    // maximum, 32 MiB here, plus tcp_wmem's).
    while slow() == 0 {
        assert!(sent < 8000, "no slow disconnect after {sent} publications");
        hub.publish("flood", payload().into(), None).await.unwrap();
        sent += 1;
        // The reader keeps up.
        let v = &next(&mut reader).await[0];
        assert!(v["push"]["pub"]["data"].is_string());
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(closed_with(&mut stuck).await, Some(3008));
    assert_eq!(stuck.close_reason(), Some("slow"));
    // The reader is still served.
    hub.publish("flood", "\"after\"".into(), None)
        .await
        .unwrap();
    assert_eq!(next(&mut reader).await[0]["push"]["pub"]["data"], "after");
}

/// Mailboxes draw on the server's memory budget: clients that never read,
/// each on its own channel, together ask for far more than the budget
/// (8 × 64 MiB mailboxes, a 4 MiB budget); once it is spent, each is
/// disconnected "slow" as soon as it holds more than its uncharged share,
/// while a client that reads is served throughout, and the budget is given
/// back.
#[tokio::test]
async fn mailboxes_share_the_memory_budget() {
    let mut c = config();
    c.centrifuge.mailbox_bytes = 64 << 20;
    c.memory_budget = Some(4 << 20);
    let srv = start(c).await;
    let plain = duplex::ClientOptions {
        config: duplex::Config::default().with_deflate(None),
        ..Default::default()
    };
    let url = format!("ws://{}/connection/websocket", srv.addr);
    let mut stuck = Vec::new();
    for i in 0..8 {
        let ws = duplex::connect_with(&url, plain.clone()).await.unwrap();
        stuck.push(subscribed(ws, &format!("own{i}")).await);
    }
    let mut reader = subscribed(duplex::connect_with(&url, plain).await.unwrap(), "live").await;
    let hub = srv.app.hub.clone();
    let budget = srv.app.memory_budget.clone().unwrap();
    let slow = || slow_disconnects(&hub);
    let payload = format!("\"{}\"", "x".repeat(16 * 1024));
    let mut round = 0u64;
    // The socket buffers of a client that does not read take about 8 MiB
    // here (about 500 rounds) before its mailbox starts to fill; the
    // budget is spent some 16 rounds later. Without the budget, the
    // mailboxes' own bound would take 4,096 more: 2,000 rounds tell them
    // apart.
    while slow() < 8 {
        assert!(round < 2000, "{} of 8 cut off after {round} rounds", slow());
        for i in 0..8 {
            // A publication to a channel whose only subscriber was cut off
            // goes nowhere.
            hub.publish(&format!("own{i}"), payload.clone().into(), None)
                .await
                .unwrap();
        }
        hub.publish("live", format!("{round}").into(), None)
            .await
            .unwrap();
        let v = &next(&mut reader).await[0];
        assert_eq!(v["push"]["pub"]["data"], round, "the reader is served");
        round += 1;
        if round % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(budget.refusals() > 0, "the budget was spent");
    for ws in &mut stuck {
        assert_eq!(closed_with(ws).await, Some(3008));
    }
    // The reader is still served, and the stuck clients' deliveries are
    // given back (what is left is the reader's and in-flight buffers).
    hub.publish("live", "\"after\"".into(), None).await.unwrap();
    assert_eq!(next(&mut reader).await[0]["push"]["pub"]["data"], "after");
    assert!(
        budget.used() < 1 << 20,
        "{} bytes still counted",
        budget.used()
    );
}

/// Connections that come and go, closing cleanly, dropping their socket,
/// or never saying `connect`, leave nothing behind: no client or channel
/// in the hub, no alarm, nothing counted in the memory budget.
#[tokio::test]
async fn churn_leaves_nothing_behind() {
    let mut c = config();
    c.memory_budget = Some(64 << 20);
    let srv = start(c).await;
    let hub = srv.app.hub.clone();
    let budget = srv.app.memory_budget.clone().unwrap();
    for round in 0..5 {
        let mut conns = Vec::new();
        for i in 0..40 {
            conns.push(connected(srv.addr, &format!("churn{}", i % 4)).await);
        }
        let silent = client(srv.addr).await;
        assert_eq!(hub.clients().len(), 40, "round {round}");
        // One alarm each (the silent socket's may not be set yet: its
        // upgrade is answered before its loop starts).
        let alarms = srv.app.centrifuge.pending_alarms();
        assert!((40..=41).contains(&alarms), "{alarms} alarms");
        hub.publish("churn0", "\"x\"".into(), None).await.unwrap();
        for (i, mut ws) in conns.into_iter().enumerate() {
            if i % 2 == 0 {
                ws.close(CloseCode::NORMAL, "").await.unwrap();
            } else {
                drop(ws);
            }
        }
        drop(silent);
    }
    let app = srv.app.clone();
    let empty = move || {
        app.hub.clients().is_empty()
            && app.hub.local_channels().is_empty()
            && app.centrifuge.pending_alarms() == 0
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind after 10 s: {} clients, {} channels, {} alarms",
            hub.clients().len(),
            hub.local_channels().len(),
            srv.app.centrifuge.pending_alarms()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(budget.used(), 0, "nothing counted in the budget");
}

#[tokio::test]
async fn bad_input_gets_the_protocol_codes() {
    let srv = start(config()).await;
    // Not JSON.
    let mut ws = client(srv.addr).await;
    ws.send(Message::text("{nope")).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // A command before connect.
    let mut ws = client(srv.addr).await;
    ws.send(Message::text(
        json!({"id": 1, "subscribe": {"channel": "a"}}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // Binary frames on a JSON connection (Protobuf needs the subprotocol).
    let mut ws = client(srv.addr).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // A bad token: 3500, no reconnect advised.
    let mut ws = client(srv.addr).await;
    ws.send(Message::text(
        json!({"id": 1, "connect": {"token": "a.b.c"}}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3500));
    // Too many commands in one frame.
    let mut ws = connected(srv.addr, "a").await;
    let many: Vec<String> = (0..101)
        .map(|i| json!({"id": 10 + i, "presence_stats": {"channel": "a"}}).to_string())
        .collect();
    ws.send(Message::text(many.join("\n"))).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // Error replies keep the connection.
    let mut ws = connected(srv.addr, "a").await;
    let r = call(
        &mut ws,
        &[
            json!({"id": 3, "subscribe": {"channel": "nope:x"}}),
            json!({"id": 4, "subscribe": {"channel": "bad name"}}),
            json!({"id": 5, "subscribe": {"channel": "a"}}),
            json!({"id": 6, "history": {"channel": "a"}}),
            json!({"id": 7, "publish": {"channel": "b", "data": {}}}),
            json!({"id": 8, "rpc": {"method": "x"}}),
            json!({"id": 9, "publish": {"channel": "a"}}),
        ],
    )
    .await;
    let codes: Vec<i64> = r
        .iter()
        .map(|v| v["error"]["code"].as_i64().unwrap())
        .collect();
    // 108: "a" keeps no history; 103: not subscribed to "b".
    assert_eq!(codes, [102, 107, 105, 108, 103, 104, 107]);
    let r = call(
        &mut ws,
        &[json!({"id": 10, "publish": {"channel": "a", "data": {"ok": 1}}})],
    )
    .await;
    assert_eq!(r[0]["publish"], json!({}));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn commands_are_rate_limited_per_connection() {
    let mut c = config();
    c.centrifuge.command_burst = 5;
    c.centrifuge.commands_per_second = 1;
    let srv = start(c).await;
    let mut ws = connected(srv.addr, "a").await; // the subscribe took one token
    let cmds: Vec<Value> = (0..8)
        .map(|i| json!({"id": 10 + i, "presence_stats": {"channel": "a"}}))
        .collect();
    let r = call(&mut ws, &cmds).await;
    let limited = r.iter().filter(|v| v["error"]["code"] == 111).count();
    assert!((3..=4).contains(&limited), "{r:?}");
    assert_eq!(
        r.iter().filter(|v| v["error"]["temporary"] == true).count(),
        limited
    );
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect() {
    let mut srv = start(config()).await;
    let mut ws = connected(srv.addr, "a").await;
    srv.stop.take().unwrap().send(()).unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3001));
    assert_eq!(ws.close_reason(), Some("shutdown"));
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_api_wants_its_key() {
    let srv = start(config()).await;
    let body = r#"{"channel":"a","data":{"x":1}}"#;
    let (s, _) = http(srv.addr, "POST", "/api/publish", &[], body).await;
    assert_eq!(s, 401);
    let (s, _) = http(
        srv.addr,
        "POST",
        "/api/publish",
        &["X-API-Key: wrong"],
        body,
    )
    .await;
    assert_eq!(s, 401);
    let (s, b) = http(srv.addr, "POST", "/api/publish", &["X-API-Key: key"], body).await;
    assert_eq!((s, b.as_str()), (200, r#"{"result":{}}"#));
    let (s, _) = http(
        srv.addr,
        "POST",
        "/api/publish",
        &["Authorization: apikey key"],
        body,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = http(
        srv.addr,
        "POST",
        "/api/publish",
        &["X-API-Key: key"],
        "{not json",
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = http(srv.addr, "POST", "/api/nothing", &["X-API-Key: key"], "{}").await;
    assert_eq!(s, 404);
    let (s, _) = http(srv.addr, "GET", "/api/publish", &["X-API-Key: key"], "").await;
    assert_eq!(s, 405);
    let big = format!(r#"{{"channel":"a","data":"{}"}}"#, "x".repeat(2 << 20));
    let (s, _) = http(srv.addr, "POST", "/api/publish", &["X-API-Key: key"], &big).await;
    assert_eq!(s, 413);
    let mut echo = duplex::connect(&format!("ws://{}/echo", srv.addr))
        .await
        .unwrap();
    echo.send(Message::text("counted")).await.unwrap();
    echo.recv().await.unwrap().unwrap();
    let (s, b) = http(srv.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(s, 200);
    assert!(b.contains("duplex_connections{front=\"echo\"} 1"), "{b}");
    assert!(
        b.contains("duplex_connections_accepted_total{front=\"echo\"} 1"),
        "{b}"
    );
    assert!(
        b.contains("duplex_api_calls_total{method=\"publish\"} 3"),
        "{b}"
    );
    assert!(
        b.contains("duplex_refused_total{reason=\"api key\"} 2"),
        "{b}"
    );
    // Closed, the connection is no longer counted open (once the server
    // has ended it: the gauge goes down when its task ends).
    echo.close(CloseCode::NORMAL, "").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, b) = http(srv.addr, "GET", "/metrics", &[], "").await;
        if b.contains("duplex_connections{front=\"echo\"} 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still counted open: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A kept-alive HTTP connection served by hyper, then a WebSocket upgrade
/// on the same connection: the upgrade goes through hyper and is served
/// like one on the fast path.
#[tokio::test]
async fn an_upgrade_after_a_kept_alive_request_goes_through_hyper() {
    let srv = start(config()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("ok\n"), "{head}");
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let conn = duplex::proto::Connection::new(
        duplex::proto::Role::Client,
        duplex::Config::default(),
        None,
    );
    let mut ws = WebSocket::from_parts(s, conn, Default::default(), None, None, None);
    ws.send(Message::text("through hyper")).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("through hyper")
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn recovery_over_the_wire() {
    let srv = start(config()).await;
    let mut ws = connected(srv.addr, "h:r").await;
    let hub = srv.app.hub.clone();
    hub.publish("h:r", "1".into(), None).await.unwrap();
    let first = &next(&mut ws).await[0];
    assert_eq!(first["push"]["pub"]["offset"], 1);
    let epoch = hub
        .history("h:r", None, 0, false)
        .await
        .unwrap()
        .position
        .epoch;
    drop(ws);
    for i in 2..=4 {
        hub.publish("h:r", i.to_string().into(), None)
            .await
            .unwrap();
    }
    let mut ws = client(srv.addr).await;
    let r = call(
        &mut ws,
        &[
            json!({"id": 1, "connect": {}}),
            json!({"id": 2, "subscribe": {"channel": "h:r", "recover": true, "offset": 1, "epoch": &*epoch, "flag": 1}}),
        ],
    )
    .await;
    let s = &r[1]["subscribe"];
    assert_eq!(s["recovered"], true);
    assert_eq!(s["was_recovering"], true);
    assert_eq!(s["recoverable"], true);
    let got: Vec<i64> = s["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [2, 3, 4]);
    // Another epoch: nothing, and recovered false.
    let r = call(
        &mut ws,
        &[
            json!({"id": 3, "unsubscribe": {"channel": "h:r"}}),
            json!({"id": 4, "subscribe": {"channel": "h:r", "recover": true, "offset": 1, "epoch": "other"}}),
        ],
    )
    .await;
    assert_eq!(r[1]["subscribe"]["recovered"], false);
    assert!(r[1]["subscribe"].get("publications").is_none());
}

#[tokio::test]
async fn a_frame_over_the_front_limit_closes_1009() {
    let mut c = config();
    c.centrifuge.max_message_size = 4096;
    let srv = start(c).await;
    let mut ws = connected(srv.addr, "a").await;
    let big = json!({"id": 5, "publish": {"channel": "a", "data": "x".repeat(5000)}});
    ws.send(Message::text(big.to_string())).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(1009));
    // The echo service keeps its own (larger) limit.
    let mut echo = duplex::connect(&format!("ws://{}/echo", srv.addr))
        .await
        .unwrap();
    let text = "y".repeat(100_000);
    echo.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(echo.recv().await.unwrap().unwrap(), Message::text(text));
}

/// Joins and leaves reach the subscribers that asked for them
/// (`join_leave: true`), as Centrifugo does, unless the namespace forces
/// them on everyone.
#[tokio::test]
async fn joins_and_leaves_go_to_those_who_ask() {
    let mut c = config();
    for (name, force) in [("jl", false), ("forced", true)] {
        c.hub.namespaces.named.insert(
            name.into(),
            ChannelOptions {
                join_leave: true,
                force_push_join_leave: force,
                subscribe: SubscribeRule::Anonymous,
                ..Default::default()
            },
        );
    }
    let srv = start(c).await;
    for (channel, quiet_hears) in [("jl:1", false), ("forced:1", true)] {
        let mut asks = client(srv.addr).await;
        call(
            &mut asks,
            &[
                json!({"id": 1, "connect": {}}),
                json!({"id": 2, "subscribe": {"channel": channel, "join_leave": true}}),
            ],
        )
        .await;
        let own_join = &next(&mut asks).await[0];
        assert!(own_join["push"]["join"].is_object(), "{own_join}");
        let mut quiet = connected(srv.addr, channel).await;
        let join = &next(&mut asks).await[0];
        assert_eq!(join["push"]["channel"], channel);
        assert!(join["push"]["join"]["info"]["client"].is_string(), "{join}");
        // A publication is the next thing `quiet` sees, unless joins are
        // forced on it (then its own join comes first).
        srv.app
            .hub
            .publish(channel, "1".into(), None)
            .await
            .unwrap();
        let first = &next(&mut quiet).await[0];
        assert_eq!(first["push"]["join"].is_object(), quiet_hears, "{first}");
        drop(quiet);
        let leave = loop {
            let v = next(&mut asks).await.remove(0);
            if v["push"]["leave"].is_object() {
                break v;
            }
        };
        assert_eq!(leave["push"]["channel"], channel);
    }
}

#[tokio::test]
async fn a_socket_that_never_connects_is_closed_stale_and_one_that_never_answers_pings_no_pong() {
    let mut c = config();
    c.centrifuge.connect_timeout = Duration::from_millis(300);
    c.centrifuge.ping_interval = Duration::from_millis(300);
    c.centrifuge.pong_timeout = Duration::from_millis(300);
    let srv = start(c).await;
    // Open, but no `connect` command: 3502 "stale".
    let mut idle = client(srv.addr).await;
    assert_eq!(closed_with(&mut idle).await, Some(3502));
    // Connected, but the server's pings (`{}`) get no answer: 3012.
    let mut mute = connected(srv.addr, "room").await;
    assert_eq!(closed_with(&mut mute).await, Some(3012));
    // One that answers stays.
    let mut polite = connected(srv.addr, "room").await;
    for _ in 0..3 {
        let ping = next(&mut polite).await;
        assert_eq!(ping, [json!({})]);
        polite.send(Message::text("{}")).await.unwrap();
    }
    assert!(polite.close_code().is_none());
}

/// Idle subscribers get each burst written by the hub straight into their
/// sockets, those with permessage-deflate (no context takeover: the
/// server's default) compressed once for all of them, in the same channel. One subscriber has a 4 KiB receive
/// buffer and reads nothing until the publisher is done, so its socket
/// fills in the middle of a burst: the rest of that frame and the burst's
/// later publications go through its mailbox. Every subscriber must still
/// get every publication whole and in order.
#[tokio::test]
async fn bursts_written_into_idle_sockets_arrive_whole_and_in_order() {
    let mut c = config();
    // Room for what the slow client's socket cannot take.
    c.centrifuge.mailbox_bytes = 32 << 20;
    let srv = start(c).await;
    let hub = srv.app.hub.clone();
    let url = format!("ws://{}/connection/websocket", srv.addr);
    let plain = || duplex::ClientOptions {
        config: duplex::Config::default().with_deflate(None),
        ..Default::default()
    };
    let mut readers = Vec::new();
    for i in 0..8 {
        let ws = match i % 2 {
            0 => duplex::connect_with(&url, plain()).await.unwrap(),
            _ => client(srv.addr).await,
        };
        let ws = subscribed(ws, "room").await;
        assert_eq!(
            ws.extensions().is_empty(),
            i % 2 == 0,
            "{}",
            ws.extensions()
        );
        readers.push(ws);
    }
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(srv.addr).await.unwrap();
    let slow = duplex::client_handshake(duplex::MaybeTlsStream::Plain(tcp), &url, plain())
        .await
        .unwrap();
    let mut slow = subscribed(slow, "room").await;

    // 200 publications of 60 kB: 12 MB, past what the slow socket's
    // buffers take (the kernel's send buffer grows to 4 MiB at most).
    let body = "x".repeat(60_000);
    let publisher = {
        let hub = hub.clone();
        let body = body.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                let data = format!("{{\"n\":{n},\"b\":\"{body}\"}}");
                hub.publish("room", data.into(), None).await.unwrap();
                if n % 10 == 9 {
                    // Bursts of about ten.
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for ws in &mut readers {
        for n in 0..200 {
            let v = &next(ws).await[0];
            assert_eq!(v["push"]["pub"]["data"]["n"], n);
        }
    }
    publisher.await.unwrap();
    for n in 0..200 {
        let v = &next(&mut slow).await[0];
        assert_eq!(v["push"]["channel"], "room");
        assert_eq!(v["push"]["pub"]["data"]["n"], n, "in order");
        assert_eq!(v["push"]["pub"]["data"]["b"], body.as_str(), "whole");
    }
    let m = hub.metrics();
    assert!(m.direct_writes.get() > 0, "the hub wrote into idle sockets");
    assert!(
        m.direct_handbacks.get() > 0,
        "the slow socket filled during a direct write"
    );
    assert_eq!(m.deliveries.get(), 1800);
    assert_eq!(slow_disconnects(&hub), 0);
    // Still usable: a command gets its reply after all that.
    let r = call(
        &mut slow,
        &[json!({"id": 9, "presence_stats": {"channel": "room"}})],
    )
    .await;
    assert_eq!(r[0]["id"], 9, "{r:?}");
}

/// A subscribe racing a stream of publications: the reply's offset is where
/// the client stands, so the first publication after it is exactly the next
/// one — never one at or below it (delivered twice) and never a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_racing_publications_sees_each_one_once() {
    let srv = start(config()).await;
    let hub = srv.app.hub.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (hub, stop) = (hub.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hub.publish("h:race", "1".into(), None).await.unwrap();
                n += 1;
                if n % 4 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            n
        })
    };
    for round in 0..300 {
        let mut ws = client(srv.addr).await;
        let mut lines = call(
            &mut ws,
            &[
                json!({"id": 1, "connect": {}}),
                json!({"id": 2, "subscribe": {"channel": "h:race"}}),
            ],
        )
        .await
        .into_iter();
        let mut at = None;
        let first = loop {
            let Some(v) = lines.next() else {
                lines = next(&mut ws).await.into_iter();
                continue;
            };
            if v["id"] == 2 {
                at = Some(v["subscribe"]["offset"].as_u64().unwrap_or(0));
            } else if let Some(off) = v["push"]["pub"]["offset"].as_u64() {
                break off;
            }
        };
        let at = at.expect("the subscribe reply comes before any publication");
        assert_eq!(first, at + 1, "round {round}: subscribed at {at}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(publisher.await.unwrap() > 300);
}
