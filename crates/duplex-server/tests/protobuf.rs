//! The Centrifugo front's Protobuf encoding (subprotocol
//! `centrifuge-protobuf`) over loopback sockets, with message definitions of
//! its own (field numbers from the protocol's `client.proto`), so the
//! server's codec is checked against a second reading of the schema.

use duplex::{ClientOptions, Message, WebSocket};
use duplex_server::hub::namespace::{ChannelOptions, SubscribeRule};
use duplex_server::{Server, ServerConfig};
use prost::Message as _;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
struct Command {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(message, optional, tag = "4")]
    connect: Option<Empty>,
    #[prost(message, optional, tag = "5")]
    subscribe: Option<Subscribe>,
    #[prost(message, optional, tag = "7")]
    publish: Option<Publish>,
    #[prost(message, optional, tag = "8")]
    presence: Option<Channel>,
    #[prost(message, optional, tag = "10")]
    history: Option<History>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct Channel {
    #[prost(string, tag = "1")]
    channel: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Subscribe {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(bool, tag = "3")]
    recover: bool,
    #[prost(string, tag = "6")]
    epoch: String,
    #[prost(uint64, tag = "7")]
    offset: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Publish {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct History {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(int32, tag = "7")]
    limit: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(message, optional, tag = "2")]
    error: Option<Error>,
    #[prost(message, optional, tag = "4")]
    push: Option<Push>,
    #[prost(message, optional, tag = "5")]
    connect: Option<ConnectResult>,
    #[prost(message, optional, tag = "6")]
    subscribe: Option<SubscribeResult>,
    #[prost(message, optional, tag = "8")]
    publish: Option<Empty>,
    #[prost(message, optional, tag = "9")]
    presence: Option<PresenceResult>,
    #[prost(message, optional, tag = "11")]
    history: Option<HistoryResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Error {
    #[prost(uint32, tag = "1")]
    code: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Push {
    #[prost(string, tag = "2")]
    channel: String,
    #[prost(message, optional, tag = "4")]
    publication: Option<Publication>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Publication {
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    info: Option<ClientInfo>,
    #[prost(uint64, tag = "6")]
    offset: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClientInfo {
    #[prost(string, tag = "2")]
    client: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ConnectResult {
    #[prost(string, tag = "1")]
    client: String,
    #[prost(uint32, tag = "7")]
    ping: u32,
    #[prost(bool, tag = "8")]
    pong: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SubscribeResult {
    #[prost(bool, tag = "3")]
    recoverable: bool,
    #[prost(string, tag = "6")]
    epoch: String,
    #[prost(message, repeated, tag = "7")]
    publications: Vec<Publication>,
    #[prost(bool, tag = "8")]
    recovered: bool,
    #[prost(uint64, tag = "9")]
    offset: u64,
    #[prost(bool, tag = "12")]
    was_recovering: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PresenceResult {
    #[prost(map = "string, message", tag = "1")]
    presence: std::collections::HashMap<String, ClientInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HistoryResult {
    #[prost(message, repeated, tag = "1")]
    publications: Vec<Publication>,
    #[prost(string, tag = "2")]
    epoch: String,
    #[prost(uint64, tag = "3")]
    offset: u64,
}

struct Running {
    addr: SocketAddr,
    app: Arc<duplex_server::app::App>,
}

async fn start() -> Running {
    let mut c = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    c.hub.namespaces.default = Some(ChannelOptions {
        subscribe: SubscribeRule::Anonymous,
        history_size: 100,
        history_ttl: Duration::from_secs(60),
        recovery: true,
        presence: true,
        ..Default::default()
    });
    c.auth.allow_anonymous = true;
    let server = Server::bind(c).await.unwrap();
    let addr = server.local_addr().unwrap();
    let app = server.app().clone();
    tokio::spawn(server.run(std::future::pending::<()>()));
    Running { addr, app }
}

type Ws = WebSocket<duplex::ClientStream>;

async fn protobuf_client(addr: SocketAddr) -> Ws {
    let opts = ClientOptions {
        protocols: vec!["centrifuge-protobuf".into()],
        ..Default::default()
    };
    let ws = duplex::connect_with(&format!("ws://{addr}/connection/websocket"), opts)
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("centrifuge-protobuf"));
    ws
}

async fn json_client(addr: SocketAddr) -> Ws {
    duplex::connect(&format!("ws://{addr}/connection/websocket"))
        .await
        .unwrap()
}

async fn frame(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .expect("a frame within 10 s")
        .expect("the connection is open")
        .expect("no error")
}

/// Sends commands in one binary frame; returns the replies of the next.
async fn call(ws: &mut Ws, cmds: &[Command]) -> Vec<Reply> {
    let mut out = Vec::new();
    for c in cmds {
        c.encode_length_delimited(&mut out).unwrap();
    }
    ws.send(Message::binary(out)).await.unwrap();
    replies(ws).await
}

async fn replies(ws: &mut Ws) -> Vec<Reply> {
    let Message::Binary(b) = frame(ws).await else {
        panic!("a binary frame expected")
    };
    let mut b = &b[..];
    let mut out = Vec::new();
    while !b.is_empty() {
        out.push(Reply::decode_length_delimited(&mut b).unwrap());
    }
    out
}

async fn json_lines(ws: &mut Ws) -> Vec<Value> {
    let Message::Text(t) = frame(ws).await else {
        panic!("a text frame expected")
    };
    t.as_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn subscribe(id: u32, channel: &str) -> Command {
    Command {
        id,
        subscribe: Some(Subscribe {
            channel: channel.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn publish(id: u32, channel: &str, data: &[u8]) -> Command {
    Command {
        id,
        publish: Some(Publish {
            channel: channel.into(),
            data: data.to_vec(),
        }),
        ..Default::default()
    }
}

async fn closed_with(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
            Err(_) => panic!("no close within 10 s"),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return ws.close_code().map(|c| c.0),
        }
    }
}

#[tokio::test]
async fn binary_publications_reach_protobuf_and_json_clients() {
    let srv = start().await;
    let mut pb = protobuf_client(srv.addr).await;
    let r = call(
        &mut pb,
        &[
            Command {
                id: 1,
                connect: Some(Empty {}),
                ..Default::default()
            },
            subscribe(2, "game"),
        ],
    )
    .await;
    let me = r[0].connect.clone().unwrap();
    assert!(me.pong && me.ping > 0, "{me:?}");
    let s = r[1].subscribe.clone().unwrap();
    assert!(s.recoverable && !s.epoch.is_empty(), "{s:?}");
    let epoch = s.epoch;

    let mut js = json_client(srv.addr).await;
    let text = [
        json!({"id": 1, "connect": {}}),
        json!({"id": 2, "subscribe": {"channel": "game"}}),
    ]
    .map(|v| v.to_string())
    .join("\n");
    js.send(Message::text(text)).await.unwrap();
    json_lines(&mut js).await;

    // A binary publication: the same bytes to the Protobuf client, base64
    // beside a null `data` to the JSON one.
    let move_ = [7u8, 0, 0, 0, 0x10, 0x01, 0x20, 0x02, 1, 0, 0xff, 0xfe];
    let r = call(&mut pb, &[publish(3, "game", &move_)]).await;
    assert!(r[0].publish.is_some(), "{r:?}");
    let pushed = replies(&mut pb).await;
    let p = pushed[0].push.clone().unwrap();
    let p1 = p.publication.unwrap();
    assert_eq!(
        (p.channel.as_str(), &p1.data[..], p1.offset),
        ("game", &move_[..], 1)
    );
    assert_eq!(p1.info.unwrap().client, me.client);
    let v = &json_lines(&mut js).await[0]["push"]["pub"];
    assert!(v["data"].is_null(), "{v}");
    assert_eq!(v["b64data"], "BwAAABABIAIBAP/+");
    assert_eq!(v["offset"], 1);

    // JSON published by the JSON client: its text, as bytes, to Protobuf.
    js.send(Message::text(
        json!({"id": 3, "publish": {"channel": "game", "data": {"x": 1}}}).to_string(),
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(json_lines(&mut js).await);
    }
    assert!(got
        .iter()
        .any(|v| v["push"]["pub"]["data"] == json!({"x": 1})));
    let p2 = replies(&mut pb).await[0].push.clone().unwrap();
    assert_eq!(p2.publication.unwrap().data, br#"{"x":1}"#);

    // Each publication was encoded once per encoding.
    let encodings = srv
        .app
        .hub
        .metrics()
        .encodings
        .get_or_create(&duplex_server::metrics::FrontLabel {
            front: "centrifuge",
        })
        .get();
    assert_eq!(encodings, 4);

    // History and presence in Protobuf.
    let r = call(
        &mut pb,
        &[
            Command {
                id: 4,
                history: Some(History {
                    channel: "game".into(),
                    limit: -1,
                }),
                ..Default::default()
            },
            Command {
                id: 5,
                presence: Some(Channel {
                    channel: "game".into(),
                }),
                ..Default::default()
            },
        ],
    )
    .await;
    let h = r[0].history.clone().unwrap();
    assert_eq!((h.offset, h.epoch.as_str()), (2, epoch.as_str()));
    assert_eq!(h.publications[0].data, move_);
    assert_eq!(r[1].presence.clone().unwrap().presence.len(), 2);

    // Recovery on a new Protobuf connection.
    drop(pb);
    let mut pb = protobuf_client(srv.addr).await;
    let r = call(
        &mut pb,
        &[
            Command {
                id: 1,
                connect: Some(Empty {}),
                ..Default::default()
            },
            Command {
                id: 2,
                subscribe: Some(Subscribe {
                    channel: "game".into(),
                    recover: true,
                    epoch: epoch.clone(),
                    offset: 1,
                }),
                ..Default::default()
            },
        ],
    )
    .await;
    let s = r[1].subscribe.clone().unwrap();
    assert!(s.was_recovering && s.recovered, "{s:?}");
    assert_eq!(s.offset, 2);
    assert_eq!(s.publications.len(), 1);
    assert_eq!(s.publications[0].data, br#"{"x":1}"#);

    // An empty payload is no payload: 107.
    let r = call(&mut pb, &[publish(3, "game", &[])]).await;
    assert_eq!(r[0].error.clone().unwrap().code, 107);
}

#[tokio::test]
async fn malformed_protobuf_is_a_bad_request_disconnect() {
    let srv = start().await;
    // Not a message.
    let mut ws = protobuf_client(srv.addr).await;
    ws.send(Message::binary(vec![0x05, 0xff, 0xff]))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // A length prefix larger than the frame.
    let mut ws = protobuf_client(srv.addr).await;
    ws.send(Message::binary(vec![0x7f, 0x08, 0x01]))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // A prefix that claims exabytes.
    let mut ws = protobuf_client(srv.addr).await;
    ws.send(Message::binary(vec![0xff; 9])).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // Text on a Protobuf connection.
    let mut ws = protobuf_client(srv.addr).await;
    ws.send(Message::text(json!({"id": 1, "connect": {}}).to_string()))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // A good connect, then a truncated command after a good one.
    let mut ws = protobuf_client(srv.addr).await;
    call(
        &mut ws,
        &[Command {
            id: 1,
            connect: Some(Empty {}),
            ..Default::default()
        }],
    )
    .await;
    let mut bad = Vec::new();
    subscribe(2, "a").encode_length_delimited(&mut bad).unwrap();
    let mut second = Vec::new();
    subscribe(3, "b")
        .encode_length_delimited(&mut second)
        .unwrap();
    bad.extend_from_slice(&second[..second.len() - 2]);
    ws.send(Message::binary(bad)).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(3501));
    // The server goes on: a JSON client still connects.
    let mut js = json_client(srv.addr).await;
    js.send(Message::text(json!({"id": 1, "connect": {}}).to_string()))
        .await
        .unwrap();
    assert!(json_lines(&mut js).await[0]["connect"]["client"].is_string());
}
