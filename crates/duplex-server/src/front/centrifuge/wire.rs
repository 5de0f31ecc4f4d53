//! The JSON wire format of the Centrifugo client protocol v2: commands in,
//! replies and pushes out.
//!
//! A text frame holds one or more commands separated by `\n`; replies to
//! one frame leave together in one frame, separated the same way. Payloads
//! (`data`, `info`) are JSON embedded as they are, never re-encoded.
//!
//! The command structs are also what the Protobuf decoder
//! ([`super::proto`]) produces, so both encodings share one code path.

use super::reply::{ConnectResult, Reply, SubscribeResult};
use crate::hub::{ClientInfo, Publication, StreamPosition};
use base64::Engine as _;
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt::Write;

/// One command. Exactly one method field is set; none (and no id) is the
/// client's pong. When several are set, the first in the protocol's order
/// counts ([`Command::method`]).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct Command {
    pub id: u32,
    pub connect: Option<ConnectRequest>,
    pub subscribe: Option<SubscribeRequest>,
    pub unsubscribe: Option<ChannelRequest>,
    pub publish: Option<PublishRequest>,
    pub presence: Option<ChannelRequest>,
    pub presence_stats: Option<ChannelRequest>,
    pub history: Option<HistoryRequest>,
    pub refresh: Option<RefreshRequest>,
    pub sub_refresh: Option<SubRefreshRequest>,
    pub rpc: Option<IgnoredAny>,
    pub send: Option<IgnoredAny>,
    pub ping: Option<IgnoredAny>,
}

impl Command {
    /// The command's method: the first request set, `pong` for an empty
    /// command without an id, `unknown` otherwise.
    pub fn method(&self) -> &'static str {
        let methods = [
            (self.connect.is_some(), "connect"),
            (self.subscribe.is_some(), "subscribe"),
            (self.unsubscribe.is_some(), "unsubscribe"),
            (self.publish.is_some(), "publish"),
            (self.presence.is_some(), "presence"),
            (self.presence_stats.is_some(), "presence_stats"),
            (self.history.is_some(), "history"),
            (self.refresh.is_some(), "refresh"),
            (self.sub_refresh.is_some(), "sub_refresh"),
            (self.rpc.is_some(), "rpc"),
            (self.send.is_some(), "send"),
            (self.id == 0, "pong"),
        ];
        methods
            .iter()
            .find(|(set, _)| *set)
            .map_or("unknown", |(_, name)| name)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ConnectRequest {
    pub token: String,
    pub subs: HashMap<String, SubRecovery>,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub struct SubRecovery {
    pub recover: bool,
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct SubscribeRequest {
    pub channel: String,
    pub token: String,
    pub join_leave: bool,
    pub recover: bool,
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ChannelRequest {
    pub channel: String,
}

/// `data` is the payload as published: JSON text from a JSON client, any
/// bytes from a Protobuf client.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct PublishRequest {
    pub channel: String,
    #[serde(deserialize_with = "present_bytes")]
    pub data: Option<Bytes>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct HistoryRequest {
    pub channel: String,
    pub limit: i64,
    pub since: Option<Since>,
    pub reverse: bool,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RefreshRequest {
    pub token: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct SubRefreshRequest {
    pub channel: String,
    pub token: String,
}

/// Appends `s` as a JSON string.
pub fn string(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(j) => out.push_str(&j),
        Err(_) => out.push_str("\"\""),
    }
}

/// Appends raw JSON bytes (already valid JSON).
pub fn raw(out: &mut String, json: &[u8]) {
    out.push_str(std::str::from_utf8(json).unwrap_or("null"));
}

/// Whether a payload is JSON text (what JSON clients and the HTTP API
/// publish); a Protobuf client may publish any bytes.
pub fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(data).is_ok()
}

/// `"data":<the JSON payload>`, or for a payload that is not JSON (binary,
/// from a Protobuf client) `"data":null,"b64data":"<base64>"`: a JSON frame
/// stays JSON whatever was published.
pub fn data_field(out: &mut String, data: &[u8]) {
    out.push_str("\"data\":");
    match std::str::from_utf8(data) {
        Ok(text) if is_json(data) => out.push_str(text),
        _ => {
            out.push_str("null,\"b64data\":\"");
            base64::engine::general_purpose::STANDARD.encode_string(data, out);
            out.push('"');
        }
    }
}

/// `{"client":..,"user":..,"conn_info":..,"chan_info":..}`
pub fn client_info(out: &mut String, i: &ClientInfo) {
    out.push_str("{\"client\":");
    string(out, &i.client.text());
    out.push_str(",\"user\":");
    string(out, &i.user);
    if let Some(c) = &i.conn_info {
        out.push_str(",\"conn_info\":");
        raw(out, c);
    }
    if let Some(c) = &i.chan_info {
        out.push_str(",\"chan_info\":");
        raw(out, c);
    }
    out.push('}');
}

/// `{"data":..,"offset":N,"info":{..}}` (offset only when positive).
pub fn publication(out: &mut String, p: &Publication) {
    out.push('{');
    data_field(out, &p.data);
    if p.offset > 0 {
        let _ = write!(out, ",\"offset\":{}", p.offset);
    }
    if let Some(i) = &p.info {
        out.push_str(",\"info\":");
        client_info(out, i);
    }
    out.push('}');
}

/// `[pub, pub, ...]`
pub fn publications<'a>(
    out: &mut String,
    pubs: impl IntoIterator<Item = &'a std::sync::Arc<Publication>>,
) {
    out.push('[');
    for (i, p) in pubs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        publication(out, p);
    }
    out.push(']');
}

/// The body of a subscribe reply (or of a server-side subscription in the
/// connect reply): only what applies.
pub fn subscribe_result(out: &mut String, r: &SubscribeResult) {
    let s = &r.subscribed;
    out.push('{');
    let mut sep = "";
    if let Some(ttl) = r.expires_in {
        let _ = write!(out, "\"expires\":true,\"ttl\":{ttl}");
        sep = ",";
    }
    if let Some(StreamPosition { offset, epoch }) = &s.position {
        if r.recoverable {
            out.push_str(sep);
            out.push_str("\"recoverable\":true");
            sep = ",";
        }
        let _ = write!(
            out,
            "{sep}\"positioned\":true,\"offset\":{offset},\"epoch\":"
        );
        string(out, epoch);
        sep = ",";
    }
    if !s.publications.is_empty() {
        out.push_str(sep);
        out.push_str("\"publications\":");
        publications(out, &s.publications);
        sep = ",";
    }
    if s.was_recovering {
        let _ = write!(
            out,
            "{sep}\"was_recovering\":true,\"recovered\":{}",
            s.recovered
        );
    }
    out.push('}');
}

/// `{"client":..,"version":..[,"expires":true,"ttl":N][,"ping":N,"pong":true][,"subs":{..}]}`
fn connect_result(out: &mut String, r: &ConnectResult) {
    out.push_str("{\"client\":");
    string(out, &r.client.text());
    out.push_str(",\"version\":");
    string(out, env!("CARGO_PKG_VERSION"));
    if let Some(ttl) = r.expires_in {
        let _ = write!(out, ",\"expires\":true,\"ttl\":{ttl}");
    }
    if let Some(ping) = r.ping {
        let _ = write!(out, ",\"ping\":{ping},\"pong\":true");
    }
    if !r.subs.is_empty() {
        out.push_str(",\"subs\":{");
        for (i, (channel, s)) in r.subs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(out, channel);
            out.push(':');
            subscribe_result(out, s);
        }
        out.push('}');
    }
    out.push('}');
}

/// The body of a reply, as the JSON protocol (and the HTTP API, for
/// presence, presence stats and history) writes it.
pub fn body(out: &mut String, r: &Reply) {
    match r {
        Reply::Connect(c) | Reply::Refresh(c) => connect_result(out, c),
        Reply::Subscribe(s) => subscribe_result(out, s),
        Reply::Unsubscribe | Reply::Publish => out.push_str("{}"),
        Reply::Presence(members) => {
            out.push_str("{\"presence\":{");
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(out, &m.client.text());
                out.push(':');
                client_info(out, m);
            }
            out.push_str("}}");
        }
        Reply::PresenceStats { clients, users } => {
            let _ = write!(out, "{{\"num_clients\":{clients},\"num_users\":{users}}}");
        }
        Reply::History(h) => {
            out.push_str("{\"publications\":");
            publications(out, &h.publications);
            let _ = write!(out, ",\"offset\":{},\"epoch\":", h.position.offset);
            string(out, &h.position.epoch);
            out.push('}');
        }
        Reply::SubRefresh { expires_in } => match expires_in {
            Some(ttl) => {
                let _ = write!(out, "{{\"expires\":true,\"ttl\":{ttl}}}");
            }
            None => out.push_str("{}"),
        },
    }
}

/// A reply's body on its own (the HTTP API's answer).
pub fn body_string(r: &Reply) -> String {
    let mut out = String::new();
    body(&mut out, r);
    out
}

/// `{"id":N,"<method>":<body>}`
pub fn reply(out: &mut String, id: u32, r: &Reply) {
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = write!(out, "{{\"id\":{id},\"{}\":", r.method());
    body(out, r);
    out.push('}');
}

/// `{"id":N,"error":{"code":C,"message":"..","temporary":true}}`
pub fn error(out: &mut String, id: u32, e: ProtoError) {
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = write!(
        out,
        "{{\"id\":{id},\"error\":{{\"code\":{},\"message\":\"{}\"",
        e.code, e.message
    );
    if e.temporary {
        out.push_str(",\"temporary\":true");
    }
    out.push_str("}}");
}

/// `{"push":{"channel":..,"unsubscribe":{"code":N,"reason":".."}}}`
pub fn unsubscribe_push(out: &mut String, channel: &str, code: u16, reason: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("{\"push\":{\"channel\":");
    string(out, channel);
    let _ = write!(out, ",\"unsubscribe\":{{\"code\":{code},\"reason\":");
    string(out, reason);
    out.push_str("}}}");
}

/// A hub event as a push (publication, join, leave).
pub fn push(out: &mut String, e: &crate::hub::Event) {
    use crate::hub::Event;
    out.push_str("{\"push\":{\"channel\":");
    match e {
        Event::Publication {
            channel,
            publication: p,
        } => {
            string(out, channel);
            out.push_str(",\"pub\":");
            publication(out, p);
        }
        Event::Join { channel, info } | Event::Leave { channel, info } => {
            string(out, channel);
            out.push_str(match e {
                Event::Join { .. } => ",\"join\":{\"info\":",
                _ => ",\"leave\":{\"info\":",
            });
            client_info(out, info);
            out.push('}');
        }
        // Per-connection events, handled before encoding.
        Event::Unsubscribe { channel, .. } => string(out, channel),
        Event::Disconnect { .. } => out.push_str("\"\""),
    }
    out.push_str("}}");
}

/// A protocol error reply (the codes of the Centrifugo protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoError {
    pub code: u32,
    pub message: &'static str,
    pub temporary: bool,
}

const fn err(code: u32, message: &'static str) -> ProtoError {
    ProtoError {
        code,
        message,
        temporary: false,
    }
}

/// The broker cannot be reached: the call failed fast and may be retried
/// (the HTTP API answers it with 503).
pub const UNAVAILABLE: ProtoError = ProtoError {
    code: 100,
    message: "broker unavailable",
    temporary: true,
};
pub const UNAUTHORIZED: ProtoError = err(101, "unauthorized");
pub const UNKNOWN_CHANNEL: ProtoError = err(102, "unknown channel");
pub const PERMISSION_DENIED: ProtoError = err(103, "permission denied");
pub const METHOD_NOT_FOUND: ProtoError = err(104, "method not found");
pub const ALREADY_SUBSCRIBED: ProtoError = err(105, "already subscribed");
pub const LIMIT_EXCEEDED: ProtoError = err(106, "limit exceeded");
pub const BAD_REQUEST: ProtoError = err(107, "bad request");
pub const NOT_AVAILABLE: ProtoError = err(108, "not available");
pub const TOKEN_EXPIRED: ProtoError = err(109, "token expired");
pub const TOO_MANY_REQUESTS: ProtoError = ProtoError {
    code: 111,
    message: "too many requests",
    temporary: true,
};
pub const UNRECOVERABLE_POSITION: ProtoError = err(112, "unrecoverable position");

/// A disconnect: the WebSocket close code and reason the client sees.
/// 3000–3499 advise a reconnect; 3500–3999 do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: std::borrow::Cow<'static, str>,
}

impl Disconnect {
    const fn fixed(code: u16, reason: &'static str) -> Self {
        Disconnect {
            code,
            reason: std::borrow::Cow::Borrowed(reason),
        }
    }

    /// A disconnect with a caller's reason, cut to what a close frame holds
    /// (123 bytes, at a character boundary).
    pub fn custom(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Disconnect {
            code,
            reason: std::borrow::Cow::Owned(reason[..end].to_string()),
        }
    }
}

/// A payload field that may hold any JSON, `null` included (absent is
/// `None`, `null` is `Some("null")`).
pub fn present<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

/// A payload as bytes: any JSON, `null` included (absent is `None`).
fn present_bytes<'de, D>(d: D) -> Result<Option<Bytes>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue as Deserialize>::deserialize(d)
        .map(|v| Some(Bytes::copy_from_slice(v.get().as_bytes())))
}

pub const SHUTDOWN: Disconnect = Disconnect::fixed(3001, "shutdown");
pub const EXPIRED: Disconnect = Disconnect::fixed(3005, "connection expired");
pub const SUB_EXPIRED: Disconnect = Disconnect::fixed(3006, "subscription expired");
pub const SLOW: Disconnect = Disconnect::fixed(3008, "slow");
pub const NO_PONG: Disconnect = Disconnect::fixed(3012, "no pong");
pub const INVALID_TOKEN: Disconnect = Disconnect::fixed(3500, "invalid token");
pub const BAD_REQUEST_DISCONNECT: Disconnect = Disconnect::fixed(3501, "bad request");
pub const STALE: Disconnect = Disconnect::fixed(3502, "stale");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Subscribed;
    use std::sync::Arc;

    #[test]
    fn commands_parse_with_their_payloads() {
        let line = r#"{"subscribe":{"channel":"chat:1","recover":true,"offset":5,"epoch":"ab","flag":1},"id":2}"#;
        let c: Command = serde_json::from_str(line).unwrap();
        assert_eq!(c.id, 2);
        let s = c.subscribe.unwrap();
        assert_eq!(
            (s.channel.as_str(), s.recover, s.offset, s.epoch.as_str()),
            ("chat:1", true, 5, "ab")
        );
        let p: Command =
            serde_json::from_str(r#"{"publish":{"channel":"c","data":{"a":[1,2]}},"id":3}"#)
                .unwrap();
        assert_eq!(p.publish.unwrap().data.unwrap(), &br#"{"a":[1,2]}"#[..]);
        let null: Command =
            serde_json::from_str(r#"{"publish":{"channel":"c","data":null},"id":3}"#).unwrap();
        assert_eq!(null.publish.unwrap().data.unwrap(), &b"null"[..]);
        let absent: Command =
            serde_json::from_str(r#"{"publish":{"channel":"c"},"id":3}"#).unwrap();
        assert!(absent.publish.unwrap().data.is_none());
        let pong: Command = serde_json::from_str("{}").unwrap();
        assert_eq!(pong.id, 0);
        assert!(pong.connect.is_none() && pong.publish.is_none());
    }

    #[test]
    fn publications_embed_their_json() {
        let mut out = String::new();
        let p = Publication {
            offset: 7,
            data: Bytes::from_static(br#"{"text":"hi \"you\""}"#),
            info: Some(Arc::new(ClientInfo {
                client: "c1".into(),
                user: "u\"1".into(),
                conn_info: Some(Arc::from(&b"{\"n\":1}"[..])),
                chan_info: None,
            })),
            time_ms: 0,
        };
        publication(&mut out, &p);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["text"], "hi \"you\"");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["info"]["user"], "u\"1");
        assert_eq!(v["info"]["conn_info"]["n"], 1);
    }

    #[test]
    fn subscribe_results_say_only_what_applies() {
        let mut out = String::new();
        subscribe_result(&mut out, &SubscribeResult::default());
        assert_eq!(out, "{}");
        let s = Subscribed {
            position: Some(StreamPosition {
                offset: 3,
                epoch: "E".into(),
            }),
            publications: Vec::new(),
            was_recovering: true,
            recovered: false,
            name: None,
        };
        out.clear();
        let r = SubscribeResult {
            subscribed: s,
            recoverable: true,
            expires_in: Some(60),
        };
        subscribe_result(&mut out, &r);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["expires"], true);
        assert_eq!(v["ttl"], 60);
        assert_eq!(v["recoverable"], true);
        assert_eq!(v["offset"], 3);
        assert_eq!(v["epoch"], "E");
        assert_eq!(v["was_recovering"], true);
        assert_eq!(v["recovered"], false);
        assert!(v.get("publications").is_none());
    }

    #[test]
    fn replies_and_errors_are_newline_separated() {
        let mut out = String::new();
        reply(&mut out, 1, &Reply::Publish);
        error(&mut out, 2, TOO_MANY_REQUESTS);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], 1);
        assert_eq!(lines[1]["error"]["code"], 111);
        assert_eq!(lines[1]["error"]["temporary"], true);
    }

    #[test]
    fn binary_payloads_stay_valid_json() {
        let mut out = String::from("{");
        data_field(&mut out, &[0, 1, 2, 0xff]);
        out.push('}');
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["data"].is_null());
        assert_eq!(v["b64data"], "AAEC/w==");
        let mut out = String::from("{");
        data_field(&mut out, b"not json");
        out.push('}');
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["b64data"], "bm90IGpzb24=");
        let mut out = String::new();
        data_field(&mut out, br#"{"x":1}"#);
        assert_eq!(out, r#""data":{"x":1}"#);
    }
}
