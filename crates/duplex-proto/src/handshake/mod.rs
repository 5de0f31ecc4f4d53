//! The opening handshake (RFC 6455 §4), both roles, as pure functions over
//! bytes: parse a head once enough bytes have arrived, validate it, and
//! produce the bytes of the answer.
//!
//! States, server side: *reading request* → (`parse_request` returns a
//! [`Request`]) → *validated* ([`UpgradeRequest`]) → *response written*
//! ([`server::accept`] / [`server::reject`]) → open ([`Connection`](crate::Connection)).
//! Client side: *request written* ([`client::ClientHandshake::new`]) →
//! *reading response* → open, or an error.
//!
//! Limits: the head may not exceed `max_handshake_bytes`, nor carry more than
//! `max_headers` fields; both are checked on partial input, so a peer that
//! sends an endless header is stopped at the limit.

pub mod client;
pub mod policy;
pub mod server;

use crate::error::Error;
use base64::Engine;
use sha1::{Digest, Sha1};

pub use server::{Request, UpgradeRequest};

/// The GUID RFC 6455 §1.3 appends to the key.
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Header fields of a parsed head, in order, names as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    /// The first value of `name` (case-insensitive), if it is UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All values of `name`, joined with ", " (RFC 9110 §5.3 list semantics).
    pub fn get_joined(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (_, v) in self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)) {
            let v = String::from_utf8_lossy(v);
            match &mut out {
                Some(s) => {
                    s.push_str(", ");
                    s.push_str(&v);
                }
                None => out = Some(v.into_owned()),
            }
        }
        out
    }

    /// Whether the comma-separated list in `name` contains `token`
    /// (case-insensitive), across all fields of that name.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            })
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Headers {
    Headers(
        raw.iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
    )
}

fn map_httparse(e: httparse::Error, max_headers: usize) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders { limit: max_headers },
        httparse::Error::HeaderName => Error::MalformedHttp("invalid header name"),
        httparse::Error::HeaderValue => Error::MalformedHttp("invalid header value"),
        httparse::Error::NewLine => Error::MalformedHttp("invalid line ending"),
        httparse::Error::Status => Error::MalformedHttp("invalid status"),
        httparse::Error::Token => Error::MalformedHttp("invalid token"),
        httparse::Error::Version => Error::MalformedHttp("invalid HTTP version"),
    }
}

/// Splits a comma-separated header value into trimmed, non-empty items.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_key_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
