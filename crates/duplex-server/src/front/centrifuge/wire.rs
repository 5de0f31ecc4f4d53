//! The JSON wire format of the Centrifugo client protocol v2: commands in,
//! replies and pushes out.
//!
//! A text frame holds one or more commands separated by `\n`; replies to
//! one frame leave together in one frame, separated the same way. Payloads
//! (`data`, `info`) are JSON embedded as they are, never re-encoded.

use crate::hub::{ClientInfo, Publication, StreamPosition, Subscribed};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt::Write;

/// One command. Exactly one method field is set; none (and no id) is the
/// client's pong.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct Command<'a> {
    pub id: u32,
    #[serde(borrow)]
    pub connect: Option<ConnectRequest<'a>>,
    #[serde(borrow)]
    pub subscribe: Option<SubscribeRequest<'a>>,
    pub unsubscribe: Option<ChannelRequest>,
    #[serde(borrow)]
    pub publish: Option<PublishRequest<'a>>,
    pub presence: Option<ChannelRequest>,
    pub presence_stats: Option<ChannelRequest>,
    pub history: Option<HistoryRequest>,
    pub refresh: Option<RefreshRequest>,
    pub sub_refresh: Option<SubRefreshRequest>,
    #[serde(borrow)]
    pub rpc: Option<&'a RawValue>,
    #[serde(borrow)]
    pub send: Option<&'a RawValue>,
    #[serde(borrow)]
    pub ping: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ConnectRequest<'a> {
    pub token: String,
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
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
pub struct SubscribeRequest<'a> {
    pub channel: String,
    pub token: String,
    pub join_leave: bool,
    pub recover: bool,
    pub offset: u64,
    pub epoch: String,
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ChannelRequest {
    pub channel: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct PublishRequest<'a> {
    pub channel: String,
    #[serde(borrow, deserialize_with = "present")]
    pub data: Option<&'a RawValue>,
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

/// `{"client":..,"user":..,"conn_info":..,"chan_info":..}`
pub fn client_info(out: &mut String, i: &ClientInfo) {
    out.push_str("{\"client\":");
    string(out, &i.client);
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
    out.push_str("{\"data\":");
    raw(out, &p.data);
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
/// connect reply). `recoverable` when the namespace allows recovery;
/// `expires_in` when the subscription token expires.
pub fn subscribe_result(
    out: &mut String,
    s: &Subscribed,
    recoverable: bool,
    expires_in: Option<u64>,
) {
    out.push('{');
    let mut sep = "";
    if let Some(ttl) = expires_in {
        let _ = write!(out, "\"expires\":true,\"ttl\":{ttl}");
        sep = ",";
    }
    if let Some(StreamPosition { offset, epoch }) = &s.position {
        if recoverable {
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

/// `{"id":N,"<method>":<body>}`
pub fn reply(out: &mut String, id: u32, method: &str, body: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = write!(out, "{{\"id\":{id},\"{method}\":{body}}}");
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
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn commands_parse_with_borrowed_payloads() {
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
        assert_eq!(p.publish.unwrap().data.unwrap().get(), r#"{"a":[1,2]}"#);
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
                conn_info: Some(Bytes::from_static(b"{\"n\":1}")),
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
        subscribe_result(&mut out, &Subscribed::default(), false, None);
        assert_eq!(out, "{}");
        let s = Subscribed {
            position: Some(StreamPosition {
                offset: 3,
                epoch: "E".into(),
            }),
            publications: Vec::new(),
            was_recovering: true,
            recovered: false,
        };
        out.clear();
        subscribe_result(&mut out, &s, true, Some(60));
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
        reply(&mut out, 1, "publish", "{}");
        error(&mut out, 2, TOO_MANY_REQUESTS);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], 1);
        assert_eq!(lines[1]["error"]["code"], 111);
        assert_eq!(lines[1]["error"]["temporary"], true);
    }
}
