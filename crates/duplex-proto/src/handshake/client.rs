//! Client side of the opening handshake.

use super::{accept_key, collect_headers, map_httparse, Headers};
use crate::config::Config;
use crate::deflate::{self, DeflateParams};
use crate::error::{Error, HeaderError};
use base64::Engine;
use rand::RngCore;

/// What the client asks for.
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    /// `Host` header value (host, and `:port` when not the default).
    pub host: String,
    /// Request target, e.g. `/chat?room=1`.
    pub target: String,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// `Origin` to send, if any.
    pub origin: Option<String>,
    /// Extra header fields.
    pub headers: Vec<(String, String)>,
}

/// A client handshake in progress: the request has been produced; the
/// response is awaited.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    key: String,
    protocols: Vec<String>,
    deflate_offer: Option<DeflateParams>,
    max_bytes: usize,
    max_headers: usize,
}

/// A validated `101` response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Header fields of the response.
    pub headers: Headers,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// Agreed permessage-deflate parameters.
    pub deflate: Option<DeflateParams>,
}

impl ClientHandshake {
    /// Starts a handshake: returns the state and the request bytes to send.
    /// The key is 16 bytes from a CSPRNG.
    pub fn new(req: &ClientRequest, cfg: &Config) -> (ClientHandshake, Vec<u8>) {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let key = base64::engine::general_purpose::STANDARD.encode(raw);
        let deflate_offer = cfg.deflate.as_ref().map(deflate::client_offer);
        let target = if req.target.is_empty() {
            "/"
        } else {
            &req.target
        };
        let mut r = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            req.host
        );
        if !req.protocols.is_empty() {
            r.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                req.protocols.join(", ")
            ));
        }
        if let Some(d) = &deflate_offer {
            r.push_str(&format!("Sec-WebSocket-Extensions: {}\r\n", d.to_header()));
        }
        if let Some(o) = &req.origin {
            r.push_str(&format!("Origin: {o}\r\n"));
        }
        for (k, v) in &req.headers {
            if !v.contains(['\r', '\n']) && !k.contains([':', '\r', '\n', ' ']) {
                r.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        r.push_str("\r\n");
        (
            ClientHandshake {
                key,
                protocols: req.protocols.clone(),
                deflate_offer,
                max_bytes: cfg.max_handshake_bytes,
                max_headers: cfg.max_headers,
            },
            r.into_bytes(),
        )
    }

    /// The key that was sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Parses and validates the response head at the start of `buf`.
    /// `Ok(None)`: incomplete. On success also returns the head's length;
    /// bytes after it are the first WebSocket frames.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<(Response, usize)>, Error> {
        let mut raw = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut resp = httparse::Response::new(&mut raw);
        let scan = &buf[..buf.len().min(self.max_bytes)];
        let n = match resp.parse(scan) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= self.max_bytes => {
                return Err(Error::HandshakeTooLarge {
                    limit: self.max_bytes,
                })
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(map_httparse(e, self.max_headers)),
        };
        let status = resp.code.unwrap_or(0);
        if status != 101 {
            return Err(Error::HandshakeStatus(status));
        }
        let headers = collect_headers(resp.headers);
        if !headers.has_token("upgrade", "websocket") {
            return Err(Error::BadHeader(HeaderError::UpgradeNotWebSocket));
        }
        if !headers.has_token("connection", "upgrade") {
            return Err(Error::BadHeader(HeaderError::ConnectionNotUpgrade));
        }
        if headers.get("sec-websocket-accept").map(str::trim)
            != Some(&accept_key(self.key.as_bytes()))
        {
            return Err(Error::BadAccept);
        }
        let protocol = match headers.get_joined("sec-websocket-protocol") {
            None => None,
            Some(p) => {
                let p = p.trim().to_string();
                if !self.protocols.contains(&p) {
                    return Err(Error::UnofferedSubprotocol(p));
                }
                Some(p)
            }
        };
        let deflate = match (
            headers.get_joined("sec-websocket-extensions"),
            &self.deflate_offer,
        ) {
            (None, _) => None,
            (Some(v), Some(offer)) => deflate::accept_response(&v, offer)?,
            (Some(v), None) if v.trim().is_empty() => None,
            (Some(v), None) => return Err(Error::UnofferedExtension(v)),
        };
        Ok(Some((
            Response {
                headers,
                protocol,
                deflate,
            },
            n,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server::{accept, parse_request, UpgradeRequest};

    fn request() -> ClientRequest {
        ClientRequest {
            host: "example.com:8080".into(),
            target: "/chat".into(),
            protocols: vec!["chat".into()],
            origin: Some("http://example.com".into()),
            headers: vec![("X-Token".into(), "abc".into())],
        }
    }

    #[test]
    fn client_and_server_agree() {
        let cfg = Config::default();
        let (hs, bytes) = ClientHandshake::new(&request(), &cfg);
        let (req, _) = parse_request(&bytes, &cfg).unwrap().unwrap();
        assert_eq!(req.headers.get("x-token"), Some("abc"));
        let up = UpgradeRequest::validate(req).unwrap();
        assert_eq!(up.key, hs.key());
        let acc = accept(&up, &cfg, Some("chat"), &[]);
        let mut resp = acc.response.clone();
        resp.extend_from_slice(b"\x81\x00");
        let (r, n) = hs.parse_response(&resp).unwrap().unwrap();
        assert_eq!(n, acc.response.len());
        assert_eq!(r.protocol.as_deref(), Some("chat"));
        assert_eq!(r.deflate, acc.deflate);
        assert!(r.deflate.is_some());
    }

    #[test]
    fn keys_differ() {
        let cfg = Config::default();
        let (a, _) = ClientHandshake::new(&request(), &cfg);
        let (b, _) = ClientHandshake::new(&request(), &cfg);
        assert_ne!(a.key(), b.key());
    }

    fn response_with(hs: &ClientHandshake, extra: &str, accept_value: Option<&str>) -> String {
        let acc = accept_value
            .map(str::to_string)
            .unwrap_or_else(|| accept_key(hs.key().as_bytes()));
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {acc}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn bad_responses_are_refused() {
        let cfg = Config::default();
        let (hs, _) = ClientHandshake::new(&request(), &cfg);
        let check = |s: String| hs.parse_response(s.as_bytes());
        assert_eq!(
            check(response_with(&hs, "", Some("wrong="))).unwrap_err(),
            Error::BadAccept
        );
        assert!(matches!(
            check(response_with(
                &hs,
                "Sec-WebSocket-Protocol: other\r\n",
                None
            )),
            Err(Error::UnofferedSubprotocol(_))
        ));
        assert!(check(response_with(
            &hs,
            "Sec-WebSocket-Extensions: x-foo\r\n",
            None
        ))
        .is_err());
        assert_eq!(
            hs.parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                .unwrap_err(),
            Error::HandshakeStatus(403)
        );
        assert!(check(response_with(&hs, "", None)).unwrap().is_some());
        let (no_deflate, _) = ClientHandshake::new(&request(), &cfg.clone().with_deflate(None));
        let s = response_with(
            &no_deflate,
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            None,
        );
        assert!(matches!(
            no_deflate.parse_response(s.as_bytes()),
            Err(Error::UnofferedExtension(_))
        ));
    }
}
