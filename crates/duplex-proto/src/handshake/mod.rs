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
    String::from_utf8_lossy(&accept_key_bytes(key)).into_owned()
}

/// [`accept_key`] without an allocation: the 28 base64 characters.
fn accept_key_bytes(key: &[u8]) -> [u8; 28] {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID.as_bytes());
    let mut out = [0u8; 28];
    // 20 bytes are 28 base64 characters: the slice is exactly large enough.
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(h.finalize(), &mut out)
        .unwrap_or(0);
    debug_assert_eq!(n, 28);
    out
}

/// Header fields of a parsed head, in order, names as sent. Every name and
/// value lives in one buffer, so a head of any number of fields costs two
/// allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Each field's name, then its value, back to back.
    buf: Vec<u8>,
    /// Per field: where its name ends and where its value ends in `buf`
    /// (each name starts where the previous value ended).
    ends: Vec<(usize, usize)>,
}

impl Headers {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `fields` fields of `bytes` bytes of names and values.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Headers {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.buf.extend_from_slice(name.as_bytes());
        let name_end = self.buf.len();
        self.buf.extend_from_slice(value);
        self.ends.push((name_end, self.buf.len()));
    }

    /// Field `i`'s name and value, as bytes.
    fn field(&self, i: usize) -> (&[u8], &[u8]) {
        let start = if i == 0 { 0 } else { self.ends[i - 1].1 };
        let (name_end, end) = self.ends[i];
        (&self.buf[start..name_end], &self.buf[name_end..end])
    }

    /// The fields, in order: name (as pushed, so UTF-8) and value.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        (0..self.ends.len()).map(|i| {
            let (k, v) = self.field(i);
            // Names were pushed as `&str`: this cannot fail.
            (std::str::from_utf8(k).unwrap_or_default(), v)
        })
    }

    /// The values of every field named `name` (case-insensitive).
    fn values<'n>(&self, name: &'n str) -> Values<'_, 'n> {
        Values {
            headers: self,
            name: name.as_bytes(),
            next: 0,
        }
    }

    /// The first value of `name` (case-insensitive), if it is UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values of `name`, joined with ", " (RFC 9110 §5.3 list semantics).
    pub fn get_joined(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for v in self.values(name) {
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
    /// (case-insensitive, around optional whitespace), across all fields
    /// of that name.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if there are no fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// The values of the fields of one name ([`Headers::values`]).
struct Values<'a, 'n> {
    headers: &'a Headers,
    name: &'n [u8],
    next: usize,
}

impl<'a> Iterator for Values<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.next < self.headers.ends.len() {
            let (k, v) = self.headers.field(self.next);
            self.next += 1;
            if k.eq_ignore_ascii_case(self.name) {
                return Some(v);
            }
        }
        None
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.push(k, v);
        }
        h
    }
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Headers {
    let bytes = raw.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut h = Headers::with_capacity(raw.len(), bytes);
    for f in raw {
        h.push(f.name, f.value);
    }
    h
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
