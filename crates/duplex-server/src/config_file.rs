//! The TOML configuration file (`duplex serve --config duplex.toml`).
//! `docs/configuration.md` documents every key. Unknown keys are errors,
//! so a typo is reported instead of silently ignored. Durations are
//! strings such as `"25s"` or `"5m"`, or integer seconds.

use crate::config::ServerConfig;
use crate::error::Error;
use crate::hub::namespace::{ChannelOptions, PublishRule, SubscribeRule};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A duration as the file writes it.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum Dur {
    Secs(u64),
    Text(String),
}

/// A memory size as the file writes it: bytes, or text (`"2GiB"`, `"off"`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Dur {
    fn get(&self, key: &str) -> Result<Duration, Error> {
        match self {
            Dur::Secs(s) => Ok(Duration::from_secs(*s)),
            Dur::Text(t) => humantime::parse_duration(t).map_err(|source| Error::Duration {
                key: key.to_string(),
                value: t.clone(),
                source,
            }),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    max_connections: Option<usize>,
    memory_budget: Option<Size>,
    allow_origin: Option<Vec<String>>,
    node_name: Option<String>,
    shutdown_grace: Option<Dur>,
    defer_accept: Option<Dur>,
    http2: Option<bool>,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    hub: Hub,
    channels: Option<Namespace>,
    #[serde(default)]
    namespaces: HashMap<String, Namespace>,
    broker: Option<Broker>,
    sse: Option<Sse>,
    per_ip: Option<PerIp>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PerIp {
    max_connections: Option<usize>,
    connections_per_second: Option<u32>,
    connection_burst: Option<u32>,
    exempt_loopback: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Sse {
    max_streams: Option<usize>,
    max_channels: Option<usize>,
    heartbeat: Option<Dur>,
    retry: Option<Dur>,
    mailbox_bytes: Option<usize>,
    allow_credentials: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Broker {
    url: String,
    cluster: Option<bool>,
    prefix: Option<String>,
    connect_timeout: Option<Dur>,
    command_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Auth {
    token_hmac_secret: Option<String>,
    token_rsa_public_key: Option<String>,
    token_ecdsa_public_key: Option<String>,
    token_audience: Option<String>,
    token_issuer: Option<String>,
    token_leeway: Option<Dur>,
    max_token_size: Option<usize>,
    api_key: Option<String>,
    allow_anonymous: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Hub {
    mailbox_bytes: Option<usize>,
    ping_interval: Option<Dur>,
    pong_timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    expired_close_delay: Option<Dur>,
    max_commands_per_frame: Option<usize>,
    commands_per_second: Option<u32>,
    command_burst: Option<u32>,
    max_subscriptions: Option<usize>,
    max_channel_length: Option<usize>,
    max_publication_size: Option<usize>,
    max_history_per_call: Option<usize>,
    max_presence_members: Option<usize>,
    presence_ttl: Option<Dur>,
    api_max_body: Option<usize>,
    max_message_size: Option<usize>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Namespace {
    history_size: Option<usize>,
    history_bytes: Option<usize>,
    history_ttl: Option<Dur>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    force_push_join_leave: Option<bool>,
    subscribe: Option<SubscribeRule>,
    publish: Option<PublishRule>,
    recovery: Option<bool>,
}

impl Namespace {
    fn options(&self, name: &str) -> Result<ChannelOptions, Error> {
        let d = ChannelOptions::default();
        let o = ChannelOptions {
            history_size: self.history_size.unwrap_or(d.history_size),
            history_bytes: self.history_bytes.unwrap_or(d.history_bytes),
            history_ttl: match &self.history_ttl {
                Some(t) => t.get(&format!("{name}.history_ttl"))?,
                None => d.history_ttl,
            },
            presence: self.presence.unwrap_or(d.presence),
            join_leave: self.join_leave.unwrap_or(d.join_leave),
            force_push_join_leave: self
                .force_push_join_leave
                .unwrap_or(d.force_push_join_leave),
            subscribe: self.subscribe.unwrap_or(d.subscribe),
            publish: self.publish.unwrap_or(d.publish),
            recovery: self.recovery.unwrap_or(d.recovery),
        };
        if o.recovery && !o.has_history() {
            return Err(Error::Setting {
                key: name.to_string(),
                requirement: "recovery needs history (history_size > 0)",
            });
        }
        Ok(o)
    }
}

/// What a file sets beyond [`ServerConfig`]: the origins to allow (the CLI
/// merges them into its policy).
#[derive(Debug, Default)]
pub struct Extras {
    /// `allow_origin`.
    pub allow_origin: Vec<String>,
}

/// Applies the file's settings over `config`.
pub fn apply(config: &mut ServerConfig, text: &str) -> Result<Extras, Error> {
    let f: File = toml::from_str(text).map_err(Error::ConfigFile)?;
    if let Some(l) = f.listen {
        config.listen = l;
    }
    if let Some(n) = f.max_connections {
        config.max_connections = n;
    }
    match &f.memory_budget {
        None => {}
        Some(Size::Bytes(0)) => {
            return Err(Error::Setting {
                key: "memory_budget".into(),
                requirement: "more than 0 bytes (\"off\" for none)",
            })
        }
        Some(Size::Bytes(n)) => {
            config.memory_budget = Some(usize::try_from(*n).unwrap_or(usize::MAX))
        }
        Some(Size::Text(t)) => {
            config.memory_budget =
                crate::config::parse_memory_size(t).map_err(|_| Error::Setting {
                    key: "memory_budget".into(),
                    requirement: "a size such as \"512MiB\" or \"2GiB\", or \"off\"",
                })?;
        }
    }
    if let Some(n) = f.node_name {
        config.node_name = n;
    }
    if let Some(b) = f.http2 {
        config.http2 = b;
    }
    if let Some(d) = f.defer_accept {
        let d = d.get("defer_accept")?;
        config.defer_accept = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = f.shutdown_grace {
        config.shutdown_grace = d.get("shutdown_grace")?;
    }
    if let Some(p) = &f.per_ip {
        let c = &mut config.per_ip;
        if let Some(n) = p.max_connections {
            c.max_connections = n;
        }
        if let Some(n) = p.connections_per_second {
            c.connections_per_second = n;
        }
        if let Some(n) = p.connection_burst {
            c.connection_burst = n.max(1);
        }
        if let Some(b) = p.exempt_loopback {
            c.exempt_loopback = b;
        }
    }
    if let Some(s) = &f.sse {
        let c = &mut config.sse;
        if let Some(n) = s.max_streams {
            c.max_streams = n;
        }
        if let Some(n) = s.max_channels {
            c.max_channels = n.max(1);
        }
        if let Some(d) = &s.heartbeat {
            c.heartbeat = d.get("sse.heartbeat")?;
            if c.heartbeat < Duration::from_secs(1) {
                return Err(Error::Setting {
                    key: "sse.heartbeat".into(),
                    requirement: "at least 1s",
                });
            }
        }
        if let Some(d) = &s.retry {
            c.retry = d.get("sse.retry")?;
        }
        if let Some(n) = s.mailbox_bytes {
            c.mailbox_bytes = n;
        }
        if let Some(b) = s.allow_credentials {
            c.allow_credentials = b;
        }
    }
    if let Some(b) = &f.broker {
        let mut o = crate::broker::redis::RedisOptions {
            url: b.url.clone(),
            ..Default::default()
        };
        if let Some(p) = &b.prefix {
            o.prefix = p.clone();
        }
        if let Some(c) = b.cluster {
            o.cluster = c;
        }
        if let Some(d) = &b.connect_timeout {
            o.connect_timeout = d.get("broker.connect_timeout")?;
        }
        if let Some(d) = &b.command_timeout {
            o.command_timeout = d.get("broker.command_timeout")?;
        }
        let urls_ok = o
            .url
            .split(',')
            .all(|u| u.trim().starts_with("redis://") || u.trim().starts_with("rediss://"));
        if !urls_ok || (o.url.contains(',') && !o.cluster) {
            return Err(Error::Setting {
                key: "broker.url".into(),
                requirement: "a redis:// or rediss:// URL (several, comma-separated, only with cluster = true)",
            });
        }
        if o.prefix.is_empty() || o.prefix.contains(['{', '}']) {
            return Err(Error::Setting {
                key: "broker.prefix".into(),
                requirement: "not empty, without { or }",
            });
        }
        config.broker = Some(o);
    }
    let a = &mut config.auth;
    a.hmac_secret = f.auth.token_hmac_secret.or(a.hmac_secret.take());
    a.rsa_public_key = f.auth.token_rsa_public_key.or(a.rsa_public_key.take());
    a.ecdsa_public_key = f.auth.token_ecdsa_public_key.or(a.ecdsa_public_key.take());
    a.audience = f.auth.token_audience.or(a.audience.take());
    a.issuer = f.auth.token_issuer.or(a.issuer.take());
    a.api_key = f.auth.api_key.or(a.api_key.take());
    if let Some(b) = f.auth.allow_anonymous {
        a.allow_anonymous = b;
    }
    if let Some(d) = f.auth.token_leeway {
        a.leeway = d.get("auth.token_leeway")?;
    }
    if let Some(n) = f.auth.max_token_size {
        a.max_token_size = n;
    }
    let h = &f.hub;
    let c = &mut config.centrifuge;
    if let Some(n) = h.mailbox_bytes {
        c.mailbox_bytes = n;
    }
    if let Some(d) = &h.ping_interval {
        c.ping_interval = d.get("hub.ping_interval")?;
        if c.ping_interval < Duration::from_secs(1) {
            return Err(Error::Setting {
                key: "hub.ping_interval".into(),
                requirement: "at least 1s",
            });
        }
    }
    if let Some(d) = &h.pong_timeout {
        c.pong_timeout = d.get("hub.pong_timeout")?;
    }
    if let Some(d) = &h.connect_timeout {
        c.connect_timeout = d.get("hub.connect_timeout")?;
    }
    if let Some(d) = &h.expired_close_delay {
        c.expired_close_delay = d.get("hub.expired_close_delay")?;
    }
    if let Some(n) = h.max_commands_per_frame {
        c.max_commands_per_frame = n;
    }
    if let Some(n) = h.commands_per_second {
        c.commands_per_second = n;
    }
    if let Some(n) = h.command_burst {
        c.command_burst = n.max(1);
    }
    let hc = &mut config.hub;
    if let Some(n) = h.max_subscriptions {
        hc.max_subscriptions = n;
    }
    if let Some(n) = h.max_channel_length {
        hc.max_channel_length = n;
    }
    if let Some(n) = h.max_publication_size {
        hc.max_publication_size = n;
    }
    if let Some(n) = h.max_history_per_call {
        hc.max_history_per_call = n;
    }
    if let Some(n) = h.max_presence_members {
        hc.max_presence_members = n;
    }
    if let Some(d) = &h.presence_ttl {
        hc.presence_ttl = d.get("hub.presence_ttl")?;
    }
    if let Some(n) = h.max_message_size {
        c.max_message_size = n;
    }
    if let Some(n) = h.api_max_body {
        config.api_max_body = n;
    }
    if let Some(ns) = &f.channels {
        hc.namespaces.default = Some(ns.options("channels")?);
    }
    for (name, ns) in &f.namespaces {
        if name.is_empty() || name.contains(':') || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Setting {
                key: format!("namespaces.{name:?}"),
                requirement: "a namespace name is printable ASCII without ':'",
            });
        }
        hc.namespaces
            .named
            .insert(name.clone(), ns.options(&format!("namespaces.{name}"))?);
    }
    Ok(Extras {
        allow_origin: f.allow_origin.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_applies() {
        let mut c = ServerConfig::default();
        let e = apply(
            &mut c,
            r#"
            listen = "127.0.0.1:9000"
            allow_origin = ["https://app.example"]
            [auth]
            token_hmac_secret = "s"
            api_key = "k"
            allow_anonymous = true
            [hub]
            mailbox_bytes = 4096
            ping_interval = "5s"
            presence_ttl = 30
            [channels]
            presence = true
            subscribe = "anonymous"
            [namespaces.chat]
            history_size = 10
            history_ttl = "5m"
            recovery = true
            publish = "nobody"
            subscribe = "token"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(e.allow_origin, ["https://app.example"]);
        assert_eq!(c.auth.hmac_secret.as_deref(), Some("s"));
        assert!(c.auth.allow_anonymous);
        assert_eq!(c.centrifuge.mailbox_bytes, 4096);
        assert_eq!(c.centrifuge.ping_interval, Duration::from_secs(5));
        assert_eq!(c.hub.presence_ttl, Duration::from_secs(30));
        let d = c.hub.namespaces.default.as_ref().unwrap();
        assert!(d.presence && d.subscribe == SubscribeRule::Anonymous);
        let chat = &c.hub.namespaces.named["chat"];
        assert_eq!(chat.history_ttl, Duration::from_secs(300));
        assert_eq!(chat.publish, PublishRule::Nobody);
        assert!(chat.recovery);
    }

    #[test]
    fn defer_accept_takes_a_duration_and_zero_turns_it_off() {
        let mut c = ServerConfig::default();
        assert_eq!(c.defer_accept, Some(Duration::from_secs(1)));
        apply(&mut c, r#"defer_accept = "3s""#).unwrap();
        assert_eq!(c.defer_accept, Some(Duration::from_secs(3)));
        apply(&mut c, "defer_accept = 0").unwrap();
        assert_eq!(c.defer_accept, None);
        assert!(apply(&mut c, r#"defer_accept = "soon""#).is_err());
    }

    #[test]
    fn mistakes_are_reported() {
        let mut c = ServerConfig::default();
        let e = apply(&mut c, "lisen = \"x\"").unwrap_err();
        assert!(matches!(e, Error::ConfigFile(_)), "{e:?}");
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = apply(&mut c, "[hub]\nping_interval = \"soon\"").unwrap_err();
        assert!(
            matches!(&e, Error::Duration { key, value, .. } if key == "hub.ping_interval" && value == "soon"),
            "{e:?}"
        );
        let e = apply(&mut c, "[hub]\nping_interval = \"10ms\"").unwrap_err();
        assert!(
            matches!(&e, Error::Setting { key, .. } if key == "hub.ping_interval"),
            "{e:?}"
        );
        assert!(matches!(
            apply(&mut c, "[channels]\nsubscribe = \"everyone\""),
            Err(Error::ConfigFile(_))
        ));
        let e = apply(&mut c, "[channels]\nrecovery = true").unwrap_err();
        assert!(
            matches!(&e, Error::Setting { key, .. } if key == "channels"),
            "{e:?}"
        );
        assert!(e.to_string().contains("needs history"), "{e}");
        let e = apply(&mut c, "[namespaces.\"a:b\"]").unwrap_err();
        assert!(matches!(e, Error::Setting { .. }), "{e:?}");
    }

    #[test]
    fn the_memory_budget_is_a_size_or_off() {
        let mut c = ServerConfig::default();
        assert!(c.memory_budget.is_some_and(|n| n >= 64 << 20), "a default");
        apply(&mut c, "memory_budget = \"512MiB\"").unwrap();
        assert_eq!(c.memory_budget, Some(512 << 20));
        apply(&mut c, "memory_budget = 1048576").unwrap();
        assert_eq!(c.memory_budget, Some(1 << 20));
        apply(&mut c, "memory_budget = \"off\"").unwrap();
        assert_eq!(c.memory_budget, None);
        for bad in [
            "memory_budget = 0",
            "memory_budget = \"lots\"",
            "memory_budget = \"0B\"",
        ] {
            let e = apply(&mut c, bad).unwrap_err();
            assert!(
                matches!(&e, Error::Setting { key, .. } if key == "memory_budget"),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(crate::config::parse_memory_size("2 GiB"), Ok(Some(2 << 30)));
        assert!(crate::config::parse_memory_size("-1").is_err());
    }
}
