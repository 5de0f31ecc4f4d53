//! Channel names and the options of the namespace each belongs to.
//!
//! A channel `chat:room1` belongs to namespace `chat`; a channel without a
//! `:` belongs to the default namespace. Each namespace has its own
//! [`ChannelOptions`]; a channel in a namespace the configuration does not
//! name is unknown (error 102 on the Centrifugo front).

use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeRule {
    /// Any connected client, anonymous ones included.
    Anonymous,
    /// Clients that connected with a token naming a user.
    #[default]
    Authenticated,
    /// Only with a subscription token for the channel (or a connection
    /// token that lists the channel).
    Token,
}

/// Who may publish into a namespace's channels from a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishRule {
    /// Clients subscribed to the channel.
    #[default]
    Subscribers,
    /// Nobody: only the server API publishes.
    Nobody,
}

/// The options of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Publications kept per channel (0: no history). Default 0.
    pub history_size: usize,
    /// Payload bytes kept per channel. Default 1 MiB.
    pub history_bytes: usize,
    /// How long a publication stays in history (zero: until evicted by
    /// size). Default 0.
    pub history_ttl: Duration,
    /// Track who is subscribed. Default off.
    pub presence: bool,
    /// Announce joins and leaves, to the subscribers that ask for them
    /// (`join_leave: true` in their subscribe). Default off.
    pub join_leave: bool,
    /// Announce them to every subscriber, asked or not. Default off.
    pub force_push_join_leave: bool,
    /// Who may subscribe. Default: authenticated users.
    pub subscribe: SubscribeRule,
    /// Who may publish from a connection. Default: subscribers.
    pub publish: PublishRule,
    /// Let resubscribing clients recover missed publications from history.
    /// Default off.
    pub recovery: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            history_size: 0,
            history_bytes: 1 << 20,
            history_ttl: Duration::ZERO,
            presence: false,
            join_leave: false,
            force_push_join_leave: false,
            subscribe: SubscribeRule::Authenticated,
            publish: PublishRule::Subscribers,
            recovery: false,
        }
    }
}

impl ChannelOptions {
    /// The options of the default namespace in development mode (no
    /// configuration file, loopback only): everything on and open.
    pub fn development() -> Self {
        ChannelOptions {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence: true,
            join_leave: true,
            subscribe: SubscribeRule::Anonymous,
            publish: PublishRule::Subscribers,
            recovery: true,
            ..Default::default()
        }
    }

    /// Whether publications are kept (and so carry positions).
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }
}

/// Every namespace the server knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Channels without a `:`; `None`: such channels are unknown.
    pub default: Option<ChannelOptions>,
    /// Named namespaces.
    pub named: HashMap<String, ChannelOptions>,
}

/// Why a channel name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// Empty, too long, or with a character outside printable ASCII.
    BadName,
    /// Its namespace is not configured.
    Unknown,
}

impl Namespaces {
    /// The options for `channel`, after checking its name (at most
    /// `max_len` bytes of printable ASCII, no spaces).
    pub fn resolve(&self, channel: &str, max_len: usize) -> Result<&ChannelOptions, ChannelError> {
        if channel.is_empty()
            || channel.len() > max_len
            || !channel.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ChannelError::BadName);
        }
        match channel.split_once(':') {
            Some((ns, _)) => self.named.get(ns).ok_or(ChannelError::Unknown),
            None => self.default.as_ref().ok_or(ChannelError::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_their_namespace() {
        let mut ns = Namespaces {
            default: Some(ChannelOptions::default()),
            named: HashMap::new(),
        };
        let chat = ChannelOptions {
            presence: true,
            ..Default::default()
        };
        ns.named.insert("chat".into(), chat.clone());
        assert_eq!(ns.resolve("news", 255), Ok(&ChannelOptions::default()));
        assert_eq!(ns.resolve("chat:room:1", 255), Ok(&chat));
        assert_eq!(ns.resolve("game:1", 255), Err(ChannelError::Unknown));
        assert_eq!(ns.resolve("", 255), Err(ChannelError::BadName));
        assert_eq!(ns.resolve("a b", 255), Err(ChannelError::BadName));
        assert_eq!(ns.resolve("é", 255), Err(ChannelError::BadName));
        assert_eq!(
            ns.resolve(&"x".repeat(256), 255),
            Err(ChannelError::BadName)
        );
        ns.default = None;
        assert_eq!(ns.resolve("news", 255), Err(ChannelError::Unknown));
    }
}
