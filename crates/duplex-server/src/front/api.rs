//! The server HTTP API: `POST /api/<method>` with a JSON body, as the
//! Centrifugo server API takes it, so its server SDKs (PyPI `cent`, ...)
//! work unchanged. The HTTP layer checks the key; this module turns a
//! method and a body into an answer.
//!
//! Answers: 200 with `{"result": {...}}` or `{"error": {"code", "message"}}`
//! (the client protocol's codes); 400 for a body that is not JSON of the
//! method's shape; 404 for an unknown method; 503 when the broker cannot be
//! reached (the call failed fast: retry it).

use crate::front::centrifuge::calls::{self, hub_error};
use crate::front::centrifuge::wire;
use crate::hub::{Hub, StreamPosition};
use crate::metrics::MethodLabel;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt::Write;

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

#[derive(Deserialize)]
struct ChannelData<'a> {
    channel: String,
    #[serde(borrow, default, deserialize_with = "wire::present")]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Broadcast<'a> {
    channels: Vec<String>,
    #[serde(borrow, default, deserialize_with = "wire::present")]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Channel {
    channel: String,
}

#[derive(Deserialize, Default)]
struct Channels {
    #[serde(default)]
    pattern: Option<String>,
}

#[derive(Deserialize)]
struct DisconnectCode {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct DisconnectUser {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    disconnect: Option<DisconnectCode>,
    /// Client ids to keep connected.
    #[serde(default)]
    whitelist: Vec<String>,
}

#[derive(Deserialize)]
struct UnsubscribeUser {
    user: String,
    channel: String,
    #[serde(default)]
    client: Option<String>,
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    commands: Vec<std::collections::HashMap<String, &'a RawValue>>,
}

/// The methods, for the metrics' labels.
const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "disconnect",
    "unsubscribe",
    "info",
    "batch",
];

/// What one method call gives: a result object, or an error reply.
type Outcome = Result<String, wire::ProtoError>;

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ()> {
    serde_json::from_slice(body).map_err(|_| ())
}

/// Answers `POST /api/<method>` with `body`.
pub async fn call(hub: &Hub, method: &str, body: &[u8]) -> Answer {
    let Some(&name) = METHODS.iter().find(|m| **m == method) else {
        return Answer {
            status: 404,
            body: r#"{"error":{"code":104,"message":"method not found"}}"#.into(),
        };
    };
    hub.metrics()
        .api_calls
        .get_or_create(&MethodLabel { method: name })
        .inc();
    if name == "batch" {
        return batch(hub, body).await;
    }
    match one(hub, name, body).await {
        Err(()) => Answer {
            status: 400,
            body: r#"{"error":{"code":107,"message":"bad request"}}"#.into(),
        },
        Ok(outcome) => Answer {
            // A broker that cannot be reached: 503, so that load balancers
            // and retrying clients see it as the temporary failure it is.
            status: if outcome == Err(wire::UNAVAILABLE) {
                503
            } else {
                200
            },
            body: envelope(outcome),
        },
    }
}

fn envelope(o: Outcome) -> String {
    match o {
        Ok(result) => format!("{{\"result\":{result}}}"),
        Err(e) => format!(
            "{{\"error\":{{\"code\":{},\"message\":\"{}\"}}}}",
            e.code, e.message
        ),
    }
}

/// `{"commands":[{"publish":{...}}, ...]}` → `{"replies":[{"publish":{...}}, ...]}`.
async fn batch(hub: &Hub, body: &[u8]) -> Answer {
    let Ok(b) = parse::<Batch>(body) else {
        return Answer {
            status: 400,
            body: r#"{"error":{"code":107,"message":"bad request"}}"#.into(),
        };
    };
    let mut out = String::from("{\"replies\":[");
    for (i, cmd) in b.commands.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Some((method, args)) = cmd.iter().next() else {
            out.push_str(r#"{"error":{"code":107,"message":"bad request"}}"#);
            continue;
        };
        let known = METHODS.iter().find(|m| **m == method && **m != "batch");
        let outcome = match known {
            None => Err(wire::METHOD_NOT_FOUND),
            Some(name) => one(hub, name, args.get().as_bytes())
                .await
                .unwrap_or(Err(wire::BAD_REQUEST)),
        };
        match outcome {
            Ok(r) => {
                out.push('{');
                wire::string(&mut out, method);
                let _ = write!(out, ":{r}}}");
            }
            Err(e) => out.push_str(&envelope(Err(e))),
        }
    }
    out.push_str("]}");
    Answer {
        status: 200,
        body: out,
    }
}

async fn one(hub: &Hub, method: &str, body: &[u8]) -> Result<Outcome, ()> {
    Ok(match method {
        "publish" => {
            let r: ChannelData = parse(body)?;
            match r.data {
                None => Err(wire::BAD_REQUEST),
                Some(d) => publish(hub, &r.channel, d).await,
            }
        }
        "broadcast" => {
            let r: Broadcast = parse(body)?;
            match r.data {
                None => Err(wire::BAD_REQUEST),
                Some(_) if r.channels.is_empty() => Err(wire::BAD_REQUEST),
                Some(d) => {
                    let mut out = String::from("{\"responses\":[");
                    for (i, ch) in r.channels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&envelope(publish(hub, ch, d).await));
                    }
                    out.push_str("]}");
                    Ok(out)
                }
            }
        }
        "presence" => calls::presence(hub, &parse::<Channel>(body)?.channel)
            .await
            .map(|r| wire::body_string(&r)),
        "presence_stats" => calls::presence_stats(hub, &parse::<Channel>(body)?.channel)
            .await
            .map(|r| wire::body_string(&r)),
        "history" => calls::history(hub, &parse(body)?)
            .await
            .map(|r| wire::body_string(&r)),
        "history_remove" => {
            let r: Channel = parse(body)?;
            hub.remove_history(&r.channel)
                .await
                .map(|()| "{}".to_string())
                .map_err(|e| hub_error(&e))
        }
        "channels" => {
            let r: Channels = if body.iter().all(u8::is_ascii_whitespace) {
                Channels::default()
            } else {
                parse(body)?
            };
            let mut out = String::from("{\"channels\":{");
            let pattern = r.pattern.as_deref().filter(|p| !p.is_empty());
            let channels = match hub.channels(pattern).await {
                Ok(c) => c,
                Err(e) => return Ok(Err(hub_error(&e))),
            };
            for (i, (name, n)) in channels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                wire::string(&mut out, name);
                let _ = write!(out, ":{{\"num_clients\":{n}}}");
            }
            out.push_str("}}");
            Ok(out)
        }
        "disconnect" => {
            let r: DisconnectUser = parse(body)?;
            // Without a code: 3503 "force disconnect" (no reconnect).
            let (code, reason) = match r.disconnect {
                Some(d) if (3000..=4999).contains(&d.code) => (d.code, d.reason),
                Some(d) if d.code != 0 => return Ok(Err(wire::BAD_REQUEST)),
                _ => (3503, "force disconnect".to_string()),
            };
            hub.disconnect_user(&r.user, r.client.as_deref(), &r.whitelist, code, &reason)
                .await
                .map(|()| "{}".to_string())
                .map_err(|e| hub_error(&e))
        }
        "unsubscribe" => {
            let r: UnsubscribeUser = parse(body)?;
            hub.unsubscribe_user(&r.user, r.client.as_deref(), &r.channel)
                .await
                .map(|()| "{}".to_string())
                .map_err(|e| hub_error(&e))
        }
        "info" => {
            // Every live node (with Redis, each answers within 2 s).
            match hub.nodes().await {
                Ok(nodes) => Ok(format!(
                    "{{\"nodes\":{}}}",
                    serde_json::to_string(&nodes).unwrap_or_else(|_| "[]".into())
                )),
                Err(e) => Err(hub_error(&e)),
            }
        }
        _ => Err(wire::METHOD_NOT_FOUND),
    })
}

async fn publish(hub: &Hub, channel: &str, data: &RawValue) -> Outcome {
    if channel.is_empty() {
        return Err(wire::BAD_REQUEST);
    }
    match hub
        .publish(channel, Bytes::copy_from_slice(data.get().as_bytes()), None)
        .await
    {
        Ok(Some(StreamPosition { offset, epoch })) => {
            let mut out = format!("{{\"offset\":{offset},\"epoch\":");
            wire::string(&mut out, &epoch);
            out.push('}');
            Ok(out)
        }
        Ok(None) => Ok("{}".to_string()),
        Err(e) => Err(hub_error(&e)),
    }
}
