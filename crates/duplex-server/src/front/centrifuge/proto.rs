//! The Protobuf wire format of the Centrifugo client protocol v2
//! (subprotocol `centrifuge-protobuf`): the messages of the protocol's
//! `client.proto`, written by hand for `prost` (only the fields this server
//! reads or writes; unknown fields are skipped, as Protobuf wants).
//!
//! A binary frame holds one or more `Command`s, each prefixed by its length
//! as a varint; the replies to one frame leave together in one binary frame,
//! each `Reply` prefixed the same way. An empty reply is the server's ping;
//! an empty command without an id, the client's pong. Payloads (`data`,
//! `conn_info`, `chan_info`) are bytes, passed through as they are.
//!
//! [`decode`] is a pure function of the frame: malformed input (a length
//! prefix past the end of the frame, a truncated or invalid message,
//! invalid UTF-8 in a string) is an error, never a panic, and nothing is
//! allocated beyond what the frame's own bytes declare.

use super::reply::{ConnectResult, Reply, SubscribeResult};
use super::wire::{self, Command, ProtoError};
use crate::hub::{ClientInfo, Event, Publication};
use bytes::{Buf, Bytes};
use prost::Message as _;
use std::collections::{BTreeMap, HashMap};

/// A frame that is not a sequence of length-delimited commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The commands of a frame, decoded one at a time (a malformed one ends
/// the sequence with an error).
#[derive(Debug)]
pub struct Commands {
    rest: Bytes,
}

impl Commands {
    /// The commands in `frame`. Payloads are slices of it (no copy).
    pub fn new(frame: Bytes) -> Commands {
        Commands { rest: frame }
    }
}

impl Iterator for Commands {
    type Item = Result<Command, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let one = match prost::decode_length_delimiter(&mut self.rest) {
            Ok(len) if len <= self.rest.len() => {
                let one = self.rest.split_to(len);
                pb::Command::decode(one)
                    .map(Command::from)
                    .map_err(|_| Malformed)
            }
            _ => Err(Malformed),
        };
        if one.is_err() {
            self.rest.clear();
        }
        Some(one)
    }
}

/// Every command of a frame, or [`Malformed`].
pub fn decode(frame: &[u8]) -> Result<Vec<Command>, Malformed> {
    Commands::new(Bytes::copy_from_slice(frame)).collect()
}

/// Appends `m` with its length prefix.
fn delimited(out: &mut Vec<u8>, m: &pb::Reply) {
    // Encoding into a Vec cannot run out of room.
    let _ = m.encode_length_delimited(out);
}

/// Appends the reply to command `id`.
pub fn reply(out: &mut Vec<u8>, id: u32, r: &Reply) {
    let mut m = pb::Reply {
        id,
        ..Default::default()
    };
    match r {
        Reply::Connect(c) => m.connect = Some(connect_result(c)),
        Reply::Refresh(c) => {
            m.refresh = Some(pb::RefreshResult {
                client: c.client.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                expires: c.expires_in.is_some(),
                ttl: ttl(c.expires_in),
            })
        }
        Reply::Subscribe(s) => m.subscribe = Some(subscribe_result(s)),
        Reply::Unsubscribe => m.unsubscribe = Some(pb::Empty {}),
        Reply::Publish => m.publish = Some(pb::Empty {}),
        Reply::Presence(members) => {
            m.presence = Some(pb::PresenceResult {
                presence: members
                    .iter()
                    .map(|i| (i.client.to_string(), client_info(i)))
                    .collect(),
            })
        }
        Reply::PresenceStats { clients, users } => {
            m.presence_stats = Some(pb::PresenceStatsResult {
                num_clients: u32::try_from(*clients).unwrap_or(u32::MAX),
                num_users: u32::try_from(*users).unwrap_or(u32::MAX),
            })
        }
        Reply::History(h) => {
            m.history = Some(pb::HistoryResult {
                publications: h.publications.iter().map(|p| publication(p)).collect(),
                epoch: h.position.epoch.to_string(),
                offset: h.position.offset,
            })
        }
        Reply::SubRefresh { expires_in } => {
            m.sub_refresh = Some(pb::SubRefreshResult {
                expires: expires_in.is_some(),
                ttl: ttl(*expires_in),
            })
        }
    }
    delimited(out, &m);
}

/// Appends an error reply to command `id`.
pub fn error(out: &mut Vec<u8>, id: u32, e: ProtoError) {
    let m = pb::Reply {
        id,
        error: Some(pb::Error {
            code: e.code,
            message: e.message.to_string(),
            temporary: e.temporary,
        }),
        ..Default::default()
    };
    delimited(out, &m);
}

/// Appends an `unsubscribe` push for `channel`.
pub fn unsubscribe_push(out: &mut Vec<u8>, channel: &str, code: u16, reason: &str) {
    let m = pb::Reply {
        push: Some(pb::Push {
            channel: channel.to_string(),
            unsubscribe: Some(pb::Unsubscribe {
                code: code.into(),
                reason: reason.to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    delimited(out, &m);
}

/// A hub event as a length-delimited push (publication, join, leave).
pub fn push(e: &Event) -> Vec<u8> {
    let mut p = pb::Push::default();
    match e {
        Event::Publication {
            channel,
            publication: pub_,
        } => {
            p.channel = channel.to_string();
            p.publication = Some(publication(pub_));
        }
        Event::Join { channel, info } => {
            p.channel = channel.to_string();
            p.join = Some(pb::JoinLeave {
                info: Some(client_info(info)),
            });
        }
        Event::Leave { channel, info } => {
            p.channel = channel.to_string();
            p.leave = Some(pb::JoinLeave {
                info: Some(client_info(info)),
            });
        }
        // Per-connection events, handled before encoding.
        Event::Unsubscribe { channel, .. } => p.channel = channel.to_string(),
        Event::Disconnect { .. } => {}
    }
    let mut out = Vec::new();
    delimited(
        &mut out,
        &pb::Reply {
            push: Some(p),
            ..Default::default()
        },
    );
    out
}

fn ttl(expires_in: Option<u64>) -> u32 {
    expires_in.map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX))
}

fn client_info(i: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: i.user.to_string(),
        client: i.client.to_string(),
        conn_info: i
            .conn_info
            .as_deref()
            .map_or_else(Bytes::new, Bytes::copy_from_slice),
        chan_info: i
            .chan_info
            .as_deref()
            .map_or_else(Bytes::new, Bytes::copy_from_slice),
    }
}

fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        data: p.data.clone(),
        info: p.info.as_deref().map(client_info),
        offset: p.offset,
    }
}

fn subscribe_result(r: &SubscribeResult) -> pb::SubscribeResult {
    let s = &r.subscribed;
    let mut m = pb::SubscribeResult {
        expires: r.expires_in.is_some(),
        ttl: ttl(r.expires_in),
        publications: s.publications.iter().map(|p| publication(p)).collect(),
        was_recovering: s.was_recovering,
        recovered: s.was_recovering && s.recovered,
        ..Default::default()
    };
    if let Some(pos) = &s.position {
        m.recoverable = r.recoverable;
        m.positioned = true;
        m.offset = pos.offset;
        m.epoch = pos.epoch.to_string();
    }
    m
}

fn connect_result(c: &ConnectResult) -> pb::ConnectResult {
    pb::ConnectResult {
        client: c.client.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        expires: c.expires_in.is_some(),
        ttl: ttl(c.expires_in),
        subs: c
            .subs
            .iter()
            .map(|(ch, s)| (ch.to_string(), subscribe_result(s)))
            .collect::<BTreeMap<_, _>>(),
        ping: c.ping.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX)),
        pong: c.ping.is_some(),
    }
}

impl From<pb::Command> for Command {
    fn from(c: pb::Command) -> Command {
        let channel = |r: pb::ChannelRequest| wire::ChannelRequest { channel: r.channel };
        Command {
            id: c.id,
            connect: c.connect.map(|r| wire::ConnectRequest {
                token: r.token,
                subs: r
                    .subs
                    .into_iter()
                    .map(|(ch, s)| {
                        let s = wire::SubRecovery {
                            recover: s.recover,
                            offset: s.offset,
                            epoch: s.epoch,
                        };
                        (ch, s)
                    })
                    .collect::<HashMap<_, _>>(),
                name: r.name,
                version: r.version,
            }),
            subscribe: c.subscribe.map(|r| wire::SubscribeRequest {
                channel: r.channel,
                token: r.token,
                join_leave: r.join_leave,
                recover: r.recover,
                offset: r.offset,
                epoch: r.epoch,
            }),
            unsubscribe: c.unsubscribe.map(channel),
            // Protobuf cannot tell empty bytes from absent ones: an empty
            // payload is no payload (107), as in Centrifugo.
            publish: c.publish.map(|r| wire::PublishRequest {
                channel: r.channel,
                data: Some(r.data).filter(|d| d.has_remaining()),
            }),
            presence: c.presence.map(channel),
            presence_stats: c.presence_stats.map(channel),
            history: c.history.map(|r| wire::HistoryRequest {
                channel: r.channel,
                limit: r.limit.into(),
                since: r.since.map(|s| wire::Since {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
                reverse: r.reverse,
            }),
            refresh: c.refresh.map(|r| wire::RefreshRequest { token: r.token }),
            sub_refresh: c.sub_refresh.map(|r| wire::SubRefreshRequest {
                channel: r.channel,
                token: r.token,
            }),
            rpc: c.rpc.map(|_| serde::de::IgnoredAny),
            send: c.send.map(|_| serde::de::IgnoredAny),
            ping: c.ping.map(|_| serde::de::IgnoredAny),
        }
    }
}

/// The messages of `client.proto`, as far as this server uses them (field
/// numbers as there).
#[allow(missing_docs)]
pub(crate) mod pb {
    use bytes::Bytes;
    use std::collections::{BTreeMap, HashMap};

    /// A message whose fields are all skipped (requests without a handler
    /// here, and empty results).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Command {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "4")]
        pub connect: Option<ConnectRequest>,
        #[prost(message, optional, tag = "5")]
        pub subscribe: Option<SubscribeRequest>,
        #[prost(message, optional, tag = "6")]
        pub unsubscribe: Option<ChannelRequest>,
        #[prost(message, optional, tag = "7")]
        pub publish: Option<PublishRequest>,
        #[prost(message, optional, tag = "8")]
        pub presence: Option<ChannelRequest>,
        #[prost(message, optional, tag = "9")]
        pub presence_stats: Option<ChannelRequest>,
        #[prost(message, optional, tag = "10")]
        pub history: Option<HistoryRequest>,
        #[prost(message, optional, tag = "11")]
        pub ping: Option<Empty>,
        #[prost(message, optional, tag = "12")]
        pub send: Option<Empty>,
        #[prost(message, optional, tag = "13")]
        pub rpc: Option<Empty>,
        #[prost(message, optional, tag = "14")]
        pub refresh: Option<RefreshRequest>,
        #[prost(message, optional, tag = "15")]
        pub sub_refresh: Option<SubRefreshRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectRequest {
        #[prost(string, tag = "1")]
        pub token: String,
        #[prost(map = "string, message", tag = "3")]
        pub subs: HashMap<String, SubRecovery>,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub version: String,
    }

    /// The fields of a `SubscribeRequest` a connect's `subs` use.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubRecovery {
        #[prost(bool, tag = "3")]
        pub recover: bool,
        #[prost(string, tag = "6")]
        pub epoch: String,
        #[prost(uint64, tag = "7")]
        pub offset: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(string, tag = "2")]
        pub token: String,
        #[prost(bool, tag = "3")]
        pub recover: bool,
        #[prost(string, tag = "6")]
        pub epoch: String,
        #[prost(uint64, tag = "7")]
        pub offset: u64,
        #[prost(bool, tag = "11")]
        pub join_leave: bool,
    }

    /// `UnsubscribeRequest`, `PresenceRequest`, `PresenceStatsRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChannelRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PublishRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(bytes = "bytes", tag = "2")]
        pub data: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamPosition {
        #[prost(uint64, tag = "1")]
        pub offset: u64,
        #[prost(string, tag = "2")]
        pub epoch: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistoryRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(int32, tag = "7")]
        pub limit: i32,
        #[prost(message, optional, tag = "8")]
        pub since: Option<StreamPosition>,
        #[prost(bool, tag = "9")]
        pub reverse: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RefreshRequest {
        #[prost(string, tag = "1")]
        pub token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubRefreshRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(string, tag = "2")]
        pub token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reply {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<Error>,
        #[prost(message, optional, tag = "4")]
        pub push: Option<Push>,
        #[prost(message, optional, tag = "5")]
        pub connect: Option<ConnectResult>,
        #[prost(message, optional, tag = "6")]
        pub subscribe: Option<SubscribeResult>,
        #[prost(message, optional, tag = "7")]
        pub unsubscribe: Option<Empty>,
        #[prost(message, optional, tag = "8")]
        pub publish: Option<Empty>,
        #[prost(message, optional, tag = "9")]
        pub presence: Option<PresenceResult>,
        #[prost(message, optional, tag = "10")]
        pub presence_stats: Option<PresenceStatsResult>,
        #[prost(message, optional, tag = "11")]
        pub history: Option<HistoryResult>,
        #[prost(message, optional, tag = "14")]
        pub refresh: Option<RefreshResult>,
        #[prost(message, optional, tag = "15")]
        pub sub_refresh: Option<SubRefreshResult>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Error {
        #[prost(uint32, tag = "1")]
        pub code: u32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(bool, tag = "3")]
        pub temporary: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Push {
        #[prost(string, tag = "2")]
        pub channel: String,
        #[prost(message, optional, tag = "4")]
        pub publication: Option<Publication>,
        #[prost(message, optional, tag = "5")]
        pub join: Option<JoinLeave>,
        #[prost(message, optional, tag = "6")]
        pub leave: Option<JoinLeave>,
        #[prost(message, optional, tag = "7")]
        pub unsubscribe: Option<Unsubscribe>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClientInfo {
        #[prost(string, tag = "1")]
        pub user: String,
        #[prost(string, tag = "2")]
        pub client: String,
        #[prost(bytes = "bytes", tag = "3")]
        pub conn_info: Bytes,
        #[prost(bytes = "bytes", tag = "4")]
        pub chan_info: Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Publication {
        #[prost(bytes = "bytes", tag = "4")]
        pub data: Bytes,
        #[prost(message, optional, tag = "5")]
        pub info: Option<ClientInfo>,
        #[prost(uint64, tag = "6")]
        pub offset: u64,
    }

    /// `Join` and `Leave`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JoinLeave {
        #[prost(message, optional, tag = "1")]
        pub info: Option<ClientInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Unsubscribe {
        #[prost(uint32, tag = "2")]
        pub code: u32,
        #[prost(string, tag = "3")]
        pub reason: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectResult {
        #[prost(string, tag = "1")]
        pub client: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(bool, tag = "3")]
        pub expires: bool,
        #[prost(uint32, tag = "4")]
        pub ttl: u32,
        #[prost(btree_map = "string, message", tag = "6")]
        pub subs: BTreeMap<String, SubscribeResult>,
        #[prost(uint32, tag = "7")]
        pub ping: u32,
        #[prost(bool, tag = "8")]
        pub pong: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RefreshResult {
        #[prost(string, tag = "1")]
        pub client: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(bool, tag = "3")]
        pub expires: bool,
        #[prost(uint32, tag = "4")]
        pub ttl: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeResult {
        #[prost(bool, tag = "1")]
        pub expires: bool,
        #[prost(uint32, tag = "2")]
        pub ttl: u32,
        #[prost(bool, tag = "3")]
        pub recoverable: bool,
        #[prost(string, tag = "6")]
        pub epoch: String,
        #[prost(message, repeated, tag = "7")]
        pub publications: Vec<Publication>,
        #[prost(bool, tag = "8")]
        pub recovered: bool,
        #[prost(uint64, tag = "9")]
        pub offset: u64,
        #[prost(bool, tag = "10")]
        pub positioned: bool,
        #[prost(bool, tag = "12")]
        pub was_recovering: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PresenceResult {
        #[prost(btree_map = "string, message", tag = "1")]
        pub presence: BTreeMap<String, ClientInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PresenceStatsResult {
        #[prost(uint32, tag = "1")]
        pub num_clients: u32,
        #[prost(uint32, tag = "2")]
        pub num_users: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistoryResult {
        #[prost(message, repeated, tag = "1")]
        pub publications: Vec<Publication>,
        #[prost(string, tag = "2")]
        pub epoch: String,
        #[prost(uint64, tag = "3")]
        pub offset: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubRefreshResult {
        #[prost(bool, tag = "1")]
        pub expires: bool,
        #[prost(uint32, tag = "2")]
        pub ttl: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{StreamPosition, Subscribed};
    use std::sync::Arc;

    fn frame(commands: &[pb::Command]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in commands {
            c.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    fn replies(mut b: &[u8]) -> Vec<pb::Reply> {
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(pb::Reply::decode_length_delimited(&mut b).unwrap());
        }
        out
    }

    #[test]
    fn commands_decode_to_the_shared_requests() {
        let mut subs = HashMap::new();
        subs.insert(
            "chat".to_string(),
            pb::SubRecovery {
                recover: true,
                epoch: "E".into(),
                offset: 9,
            },
        );
        let f = frame(&[
            pb::Command {
                id: 1,
                connect: Some(pb::ConnectRequest {
                    token: "T".into(),
                    subs,
                    name: "js".into(),
                    version: "5".into(),
                }),
                ..Default::default()
            },
            pb::Command {
                id: 2,
                subscribe: Some(pb::SubscribeRequest {
                    channel: "game".into(),
                    recover: true,
                    epoch: "ab".into(),
                    offset: 5,
                    join_leave: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::Command {
                id: 3,
                publish: Some(pb::PublishRequest {
                    channel: "game".into(),
                    data: Bytes::from_static(&[0, 255, 1, 2]),
                }),
                ..Default::default()
            },
            pb::Command {
                id: 4,
                history: Some(pb::HistoryRequest {
                    channel: "game".into(),
                    limit: -1,
                    since: Some(pb::StreamPosition {
                        offset: 3,
                        epoch: "ab".into(),
                    }),
                    reverse: true,
                }),
                ..Default::default()
            },
            pb::Command::default(),
            pb::Command {
                id: 6,
                rpc: Some(pb::Empty {}),
                ..Default::default()
            },
        ]);
        let c = decode(&f).unwrap();
        assert_eq!(c.len(), 6);
        let connect = c[0].connect.as_ref().unwrap();
        assert_eq!((c[0].id, connect.token.as_str()), (1, "T"));
        let r = &connect.subs["chat"];
        assert_eq!((r.recover, r.offset, r.epoch.as_str()), (true, 9, "E"));
        let s = c[1].subscribe.as_ref().unwrap();
        assert_eq!(
            (
                s.channel.as_str(),
                s.recover,
                s.offset,
                s.epoch.as_str(),
                s.join_leave
            ),
            ("game", true, 5, "ab", true)
        );
        assert_eq!(c[2].method(), "publish");
        let data = c[2].publish.as_ref().unwrap().data.as_ref().unwrap();
        assert_eq!(&data[..], &[0, 255, 1, 2]);
        let h = c[3].history.as_ref().unwrap();
        assert_eq!((h.limit, h.reverse), (-1, true));
        assert_eq!(h.since.as_ref().unwrap().offset, 3);
        assert_eq!(c[4].method(), "pong");
        assert_eq!(c[5].method(), "rpc");
    }

    #[test]
    fn an_empty_publication_is_no_payload() {
        let f = frame(&[pb::Command {
            id: 1,
            publish: Some(pb::PublishRequest {
                channel: "c".into(),
                data: Bytes::new(),
            }),
            ..Default::default()
        }]);
        let c = decode(&f).unwrap();
        assert!(c[0].publish.as_ref().unwrap().data.is_none());
    }

    #[test]
    fn malformed_frames_are_errors() {
        let good = frame(&[pb::Command {
            id: 1,
            presence: Some(pb::ChannelRequest {
                channel: "c".into(),
            }),
            ..Default::default()
        }]);
        // A length prefix larger than the frame.
        let mut long = good.clone();
        long[0] += 1;
        assert_eq!(decode(&long).unwrap_err(), Malformed);
        // A prefix claiming far more than any frame (no allocation of it).
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).unwrap_err(),
            Malformed
        );
        // A truncated or overlong varint.
        assert_eq!(decode(&[0x80]).unwrap_err(), Malformed);
        assert_eq!(decode(&[0xff; 11]).unwrap_err(), Malformed);
        // A good command followed by a truncated one.
        let mut two = good.clone();
        two.extend_from_slice(&good[..good.len() - 1]);
        assert_eq!(decode(&two).unwrap_err(), Malformed);
        // Invalid UTF-8 in a string field: presence { channel: ff }.
        assert_eq!(decode(&[5, 0x42, 3, 0x0a, 1, 0xff]).unwrap_err(), Malformed);
        // A wire type that does not exist (7).
        assert_eq!(decode(&[1, 0x0f]).unwrap_err(), Malformed);
        // Fine: nothing, and an empty command (a pong).
        assert!(decode(&[]).unwrap().is_empty());
        assert_eq!(decode(&[0]).unwrap()[0].method(), "pong");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // xorshift: reproducible noise, and mutations of a good frame.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = frame(&[pb::Command {
            id: 7,
            subscribe: Some(pb::SubscribeRequest {
                channel: "game".into(),
                token: "t".into(),
                epoch: "e".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        for i in 0..20_000 {
            let input: Vec<u8> = if i % 2 == 0 {
                let n = (next() % 64) as usize;
                (0..n).map(|_| next() as u8).collect()
            } else {
                let mut g = good.clone();
                let at = (next() as usize) % g.len();
                g[at] = next() as u8;
                g
            };
            let _ = decode(&input);
        }
    }

    #[test]
    fn replies_encode_what_the_json_says() {
        let c1 = crate::hub::ClientId::random();
        let info = Arc::new(ClientInfo {
            client: c1,
            user: "u1".into(),
            conn_info: Some(Arc::from(&b"{\"n\":1}"[..])),
            chan_info: None,
        });
        let p = Arc::new(Publication {
            offset: 4,
            data: Bytes::from_static(&[1, 2, 3]),
            info: Some(info.clone()),
            time_ms: 0,
        });
        let mut out = Vec::new();
        reply(
            &mut out,
            1,
            &Reply::Subscribe(SubscribeResult {
                subscribed: Subscribed {
                    position: Some(StreamPosition {
                        offset: 4,
                        epoch: "E".into(),
                    }),
                    publications: vec![p.clone()],
                    was_recovering: true,
                    recovered: true,
                    name: None,
                },
                recoverable: true,
                expires_in: Some(60),
            }),
        );
        reply(&mut out, 2, &Reply::Presence(vec![info.clone()]));
        error(&mut out, 3, wire::TOO_MANY_REQUESTS);
        reply(&mut out, 4, &Reply::Publish);
        out.push(0); // a ping
        let r = replies(&out);
        assert_eq!(r.len(), 5);
        let s = r[0].subscribe.as_ref().unwrap();
        assert_eq!(
            (r[0].id, s.expires, s.ttl, s.recoverable),
            (1, true, 60, true)
        );
        assert_eq!((s.offset, s.epoch.as_str(), s.positioned), (4, "E", true));
        assert_eq!((s.was_recovering, s.recovered), (true, true));
        assert_eq!(&s.publications[0].data[..], &[1, 2, 3]);
        let pinfo = s.publications[0].info.as_ref().unwrap();
        assert_eq!(
            (pinfo.client.as_str(), &pinfo.conn_info[..]),
            (&*c1.text(), &b"{\"n\":1}"[..])
        );
        let presence = &r[1].presence.as_ref().unwrap().presence;
        assert_eq!(presence[&c1.to_string()].user, "u1");
        let e = r[2].error.as_ref().unwrap();
        assert_eq!((e.code, e.temporary), (111, true));
        assert!(r[3].publish.is_some());
        assert_eq!(r[4], pb::Reply::default());

        let pushed = push(&Event::Publication {
            channel: "game".into(),
            publication: p,
        });
        let r = replies(&pushed);
        let push = r[0].push.as_ref().unwrap();
        assert_eq!((r[0].id, push.channel.as_str()), (0, "game"));
        let pub_ = push.publication.as_ref().unwrap();
        assert_eq!((&pub_.data[..], pub_.offset), (&[1u8, 2, 3][..], 4));

        let mut out = Vec::new();
        unsubscribe_push(&mut out, "game", 2500, "insufficient state");
        let u = replies(&out)[0].push.clone().unwrap().unsubscribe.unwrap();
        assert_eq!((u.code, u.reason.as_str()), (2500, "insufficient state"));
    }
}
