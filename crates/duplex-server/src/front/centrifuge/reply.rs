//! What the front sends, as typed values written in the connection's
//! encoding: JSON ([`super::wire`]) or Protobuf ([`super::proto`]). The
//! per-connection logic builds a [`Reply`] once; both encodings say the
//! same thing from it.

use super::wire::ProtoError;
use super::{proto, wire};
use crate::broker::HistoryResult;
use crate::hub::{ClientInfo, Event, FrontKind, Subscribed};
use duplex::{Message, PreparedMessage};
use std::sync::Arc;

/// The WebSocket subprotocol that selects the Protobuf encoding on
/// `/connection/websocket` (without it, the connection speaks JSON).
pub const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

/// A connection's encoding of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Commands and replies as JSON lines in text frames.
    Json,
    /// Commands and replies as varint-length-delimited Protobuf messages
    /// in binary frames.
    Protobuf,
}

impl Encoding {
    /// The encoding a socket negotiated by its subprotocol.
    pub fn of(subprotocol: Option<&str>) -> Encoding {
        match subprotocol {
            Some(PROTOBUF_SUBPROTOCOL) => Encoding::Protobuf,
            _ => Encoding::Json,
        }
    }

    /// Which of a delivery's cached encodings this is.
    pub fn front_kind(self) -> FrontKind {
        match self {
            Encoding::Json => FrontKind::Centrifuge,
            Encoding::Protobuf => FrontKind::CentrifugeProtobuf,
        }
    }
}

/// A subscription's result: in a subscribe reply, or for a server-side
/// subscription in the connect reply.
#[derive(Debug, Default)]
pub struct SubscribeResult {
    /// What the hub answered.
    pub subscribed: Subscribed,
    /// The namespace allows recovery.
    pub recoverable: bool,
    /// Seconds until the subscription token expires.
    pub expires_in: Option<u64>,
}

/// A connect or refresh result.
#[derive(Debug, Default)]
pub struct ConnectResult {
    /// The client id.
    pub client: crate::hub::ClientId,
    /// Seconds until the connection token expires.
    pub expires_in: Option<u64>,
    /// The server's ping interval in seconds (connect only; the client is
    /// asked to answer pings).
    pub ping: Option<u64>,
    /// Server-side subscriptions (connect only).
    pub subs: Vec<(Arc<str>, SubscribeResult)>,
}

/// The successful answer to a command.
#[derive(Debug)]
pub enum Reply {
    /// `connect`.
    Connect(ConnectResult),
    /// `refresh`.
    Refresh(ConnectResult),
    /// `subscribe`.
    Subscribe(SubscribeResult),
    /// `unsubscribe`.
    Unsubscribe,
    /// `publish`.
    Publish,
    /// `presence`: the channel's members.
    Presence(Vec<Arc<ClientInfo>>),
    /// `presence_stats`.
    PresenceStats {
        /// Clients in the channel.
        clients: usize,
        /// Distinct users among them.
        users: usize,
    },
    /// `history`.
    History(HistoryResult),
    /// `sub_refresh`.
    SubRefresh {
        /// Seconds until the new subscription token expires.
        expires_in: Option<u64>,
    },
}

impl Reply {
    /// The method it answers (its field in a JSON reply).
    pub fn method(&self) -> &'static str {
        match self {
            Reply::Connect(_) => "connect",
            Reply::Refresh(_) => "refresh",
            Reply::Subscribe(_) => "subscribe",
            Reply::Unsubscribe => "unsubscribe",
            Reply::Publish => "publish",
            Reply::Presence(_) => "presence",
            Reply::PresenceStats { .. } => "presence_stats",
            Reply::History(_) => "history",
            Reply::SubRefresh { .. } => "sub_refresh",
        }
    }
}

/// What one turn of a connection sends in one frame (the replies to a
/// frame of commands, a ping, a push of its own), in its encoding.
#[derive(Debug)]
pub enum Out {
    /// JSON lines.
    Json(String),
    /// Length-delimited Protobuf replies.
    Protobuf(Vec<u8>),
}

impl Out {
    /// Nothing yet, in `encoding`.
    pub fn new(encoding: Encoding) -> Out {
        match encoding {
            Encoding::Json => Out::Json(String::new()),
            Encoding::Protobuf => Out::Protobuf(Vec::new()),
        }
    }

    /// Adds the reply to command `id`.
    pub fn reply(&mut self, id: u32, r: &Reply) {
        match self {
            Out::Json(s) => wire::reply(s, id, r),
            Out::Protobuf(b) => proto::reply(b, id, r),
        }
    }

    /// Adds an error reply to command `id`.
    pub fn error(&mut self, id: u32, e: ProtoError) {
        match self {
            Out::Json(s) => wire::error(s, id, e),
            Out::Protobuf(b) => proto::error(b, id, e),
        }
    }

    /// Adds the server's ping (an empty reply).
    pub fn ping(&mut self) {
        match self {
            Out::Json(s) => {
                if !s.is_empty() {
                    s.push('\n');
                }
                s.push_str("{}");
            }
            Out::Protobuf(b) => b.push(0),
        }
    }

    /// Adds an `unsubscribe` push for `channel`.
    pub fn unsubscribe(&mut self, channel: &str, code: u16, reason: &str) {
        match self {
            Out::Json(s) => wire::unsubscribe_push(s, channel, code, reason),
            Out::Protobuf(b) => proto::unsubscribe_push(b, channel, code, reason),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        match self {
            Out::Json(s) => s.len(),
            Out::Protobuf(b) => b.len(),
        }
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame: text for JSON, binary for Protobuf.
    pub fn into_message(self) -> Message {
        match self {
            Out::Json(s) => Message::text(s),
            Out::Protobuf(b) => Message::binary(b),
        }
    }
}

/// A hub event as this front frames it in `encoding` (once per event and
/// encoding, for every receiver).
pub fn encode_event(e: &Event, encoding: Encoding) -> PreparedMessage {
    match encoding {
        Encoding::Json => {
            let mut out = String::new();
            wire::push(&mut out, e);
            PreparedMessage::new(Message::text(out))
        }
        Encoding::Protobuf => PreparedMessage::new(Message::binary(proto::push(e))),
    }
}
