//! Server side of the opening handshake.

use super::{collect_headers, map_httparse, split_list, Headers};
use crate::config::Config;
use crate::deflate::{self, DeflateParams, ExtensionOffer};
use crate::error::{Error, HeaderError};
use base64::Engine;
use std::mem::MaybeUninit;

/// A parsed HTTP/1.x request head (not yet known to be a WebSocket upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/echo?x=1`.
    pub target: String,
    /// HTTP minor version (1 for HTTP/1.1).
    pub minor_version: u8,
    /// Header fields.
    pub headers: Headers,
}

impl Request {
    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Whether the request asks for a WebSocket upgrade at all (has
    /// `Upgrade: websocket`); such requests are validated further by
    /// [`UpgradeRequest::validate`].
    pub fn is_upgrade(&self) -> bool {
        self.headers.has_token("upgrade", "websocket")
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete,
/// read more. The size and header-count limits apply to incomplete input too.
pub fn parse_request(buf: &[u8], cfg: &Config) -> Result<Option<(Request, usize)>, Error> {
    // Up to this many fields are parsed into an array on the stack (the
    // default limit is 64); beyond it, into a vector.
    const ON_STACK: usize = 64;
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); ON_STACK];
    let mut heap = Vec::new();
    let raw = if cfg.max_headers <= ON_STACK {
        &mut stack[..cfg.max_headers]
    } else {
        heap.resize(cfg.max_headers, MaybeUninit::uninit());
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let scan = &buf[..buf.len().min(cfg.max_handshake_bytes)];
    match req.parse_with_uninit_headers(scan, raw) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            Request {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                minor_version: req.version.unwrap_or(0),
                headers: collect_headers(req.headers),
            },
            n,
        ))),
        Ok(httparse::Status::Partial) if buf.len() >= cfg.max_handshake_bytes => {
            Err(Error::HandshakeTooLarge {
                limit: cfg.max_handshake_bytes,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_httparse(e, cfg.max_headers)),
    }
}

/// A request that passed every check of RFC 6455 §4.2.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The whole request.
    pub request: Request,
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// `Host`.
    pub host: String,
    /// `Origin`, if sent (browsers always send it).
    pub origin: Option<String>,
    /// Offered subprotocols, in the client's order of preference.
    pub protocols: Vec<String>,
    /// Offered extensions (a malformed header counts as no offer).
    pub extensions: Vec<ExtensionOffer>,
}

impl UpgradeRequest {
    /// Checks method, version, `Host`, `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Version` and `Sec-WebSocket-Key`.
    pub fn validate(request: Request) -> Result<UpgradeRequest, Error> {
        if request.method != "GET" {
            return Err(Error::MethodNotGet);
        }
        if request.minor_version < 1 {
            return Err(Error::HttpVersion);
        }
        let h = &request.headers;
        let host = h
            .get("host")
            .filter(|v| !v.trim().is_empty())
            .ok_or(Error::BadHeader(HeaderError::MissingHost))?;
        if !h.has_token("upgrade", "websocket") {
            return Err(Error::BadHeader(HeaderError::UpgradeNotWebSocket));
        }
        if !h.has_token("connection", "upgrade") {
            return Err(Error::BadHeader(HeaderError::ConnectionNotUpgrade));
        }
        if h.get("sec-websocket-version").map(str::trim) != Some("13") {
            return Err(Error::UnsupportedVersion);
        }
        let key = h
            .get("sec-websocket-key")
            .map(str::trim)
            .ok_or(Error::BadKey)?;
        // 16 bytes in base64 (padding required): exactly 24 characters.
        let mut decoded = [0u8; 18];
        if key.len() != 24
            || base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded) != Ok(16)
        {
            return Err(Error::BadKey);
        }
        let protocols = h
            .get_joined("sec-websocket-protocol")
            .map(|v| split_list(&v).map(str::to_string).collect())
            .unwrap_or_default();
        let extensions = h
            .get_joined("sec-websocket-extensions")
            .and_then(|v| deflate::parse_extensions(&v).ok())
            .unwrap_or_default();
        Ok(UpgradeRequest {
            key: key.to_string(),
            host: host.trim().to_string(),
            origin: h.get("origin").map(|o| o.trim().to_string()),
            protocols,
            extensions,
            request,
        })
    }

    /// Checks an RFC 8441 extended CONNECT (a WebSocket over an HTTP/2
    /// stream): method `CONNECT` (the caller checks `:protocol` =
    /// `websocket`, which HTTP/2 carries as a pseudo-header), `Host` (from
    /// `:authority`) and `Sec-WebSocket-Version`. There is no
    /// `Sec-WebSocket-Key` (`key` is empty), nor `Upgrade`/`Connection`.
    pub fn validate_extended_connect(request: Request) -> Result<UpgradeRequest, Error> {
        if request.method != "CONNECT" {
            return Err(Error::MethodNotGet);
        }
        let h = &request.headers;
        let host = h
            .get("host")
            .filter(|v| !v.trim().is_empty())
            .ok_or(Error::BadHeader(HeaderError::MissingHost))?;
        if h.get("sec-websocket-version").map(str::trim) != Some("13") {
            return Err(Error::UnsupportedVersion);
        }
        let protocols = h
            .get_joined("sec-websocket-protocol")
            .map(|v| split_list(&v).map(str::to_string).collect())
            .unwrap_or_default();
        let extensions = h
            .get_joined("sec-websocket-extensions")
            .and_then(|v| deflate::parse_extensions(&v).ok())
            .unwrap_or_default();
        Ok(UpgradeRequest {
            key: String::new(),
            host: host.trim().to_string(),
            origin: h.get("origin").map(|o| o.trim().to_string()),
            protocols,
            extensions,
            request,
        })
    }

    /// The request path (before `?`).
    pub fn path(&self) -> &str {
        self.request.path()
    }
}

/// The outcome of accepting an upgrade: the 101 response and what was agreed.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Bytes of the `101 Switching Protocols` response.
    pub response: Vec<u8>,
    /// The chosen subprotocol.
    pub protocol: Option<String>,
    /// Agreed permessage-deflate parameters, if compression is on.
    pub deflate: Option<DeflateParams>,
    /// `Sec-WebSocket-Accept`.
    accept: [u8; 28],
    /// `Sec-WebSocket-Extensions`, if compression is on.
    extensions: Option<String>,
    /// The caller's extra headers that are safe to send.
    extra: Vec<(String, String)>,
}

impl Accepted {
    /// The response's header fields, in order (for servers such as hyper
    /// that write the response themselves).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let fixed = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            (
                "Sec-WebSocket-Accept",
                std::str::from_utf8(&self.accept).unwrap_or_default(),
            ),
        ];
        let protocol = self
            .protocol
            .as_deref()
            .map(|p| ("Sec-WebSocket-Protocol", p));
        let extensions = self
            .extensions
            .as_deref()
            .map(|e| ("Sec-WebSocket-Extensions", e));
        fixed
            .into_iter()
            .chain(protocol)
            .chain(extensions)
            .chain(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// Accepts `req`: negotiates permessage-deflate under `cfg`, echoes
/// `protocol` (which must be one the client offered; others are dropped) and
/// adds `extra_headers`.
pub fn accept(
    req: &UpgradeRequest,
    cfg: &Config,
    protocol: Option<&str>,
    extra_headers: &[(String, String)],
) -> Accepted {
    let deflate = cfg
        .deflate
        .as_ref()
        .and_then(|d| deflate::negotiate_server(&req.extensions, d));
    let protocol = protocol
        .filter(|p| req.protocols.iter().any(|o| o == p))
        .map(str::to_string);
    let mut acc = Accepted {
        response: Vec::new(),
        extensions: deflate.as_ref().map(|d| d.to_header()),
        protocol,
        deflate,
        accept: super::accept_key_bytes(req.key.as_bytes()),
        extra: extra_headers
            .iter()
            .filter(|(k, v)| is_safe_header(k, v))
            .cloned()
            .collect(),
    };
    // 256 bytes hold the status line and the three fixed fields with room
    // for a subprotocol and an extension offer; more only grows it.
    let mut r = Vec::with_capacity(256);
    r.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (k, v) in acc.headers() {
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    acc.response = r;
    acc
}

fn is_safe_header(k: &str, v: &str) -> bool {
    !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !v.bytes().any(|b| b == b'\r' || b == b'\n')
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete refusal: `status`, a one-line plain-text `reason` as the body,
/// `Connection: close`, and for 426 the `Sec-WebSocket-Version: 13` and
/// `Upgrade: websocket` headers RFC 6455 §4.4 asks for.
pub fn reject(status: u16, reason: &str, extra_headers: &[(String, String)]) -> Vec<u8> {
    let body: String = reason
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect::<String>()
        + "\n";
    let mut headers = Vec::with_capacity(extra_headers.len() + 3);
    if status == 426 {
        headers.push(("Sec-WebSocket-Version".to_string(), "13".to_string()));
        headers.push(("Upgrade".to_string(), "websocket".to_string()));
    }
    if status == 405 {
        headers.push(("Allow".to_string(), "GET".to_string()));
    }
    headers.extend(extra_headers.iter().cloned());
    headers.push((
        "Content-Type".to_string(),
        "text/plain; charset=utf-8".to_string(),
    ));
    response(status, &headers, body.as_bytes())
}

/// A complete plain HTTP/1.1 response with `Content-Length` and
/// `Connection: close`, for servers that answer ordinary requests on the
/// same port. Header fields with CR, LF or an invalid name are left out.
pub fn response(status: u16, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (k, v) in headers {
        if is_safe_header(k, v) {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    r.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = r.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The refusal for a handshake error: its status and its message.
pub fn reject_error(err: &Error) -> Vec<u8> {
    reject(err.http_status(), &err.to_string(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn validate(s: &str) -> Result<UpgradeRequest, Error> {
        let (req, n) = parse_request(s.as_bytes(), &Config::default())?.expect("complete");
        assert_eq!(n, s.len());
        UpgradeRequest::validate(req)
    }

    #[test]
    fn rfc_example_request() {
        let u = validate(GOOD).unwrap();
        assert_eq!(u.path(), "/chat");
        assert_eq!(u.protocols, vec!["chat", "superchat"]);
        assert_eq!(u.origin.as_deref(), Some("http://example.com"));
        let a = accept(&u, &Config::default(), Some("chat"), &[]);
        let text = String::from_utf8(a.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(!text.contains("Sec-WebSocket-Extensions"));
    }

    /// The response's bytes and `headers()` (what hyper writes) say the
    /// same, in the same order, extra headers last and unsafe ones left out.
    #[test]
    fn response_bytes_and_header_list_agree() {
        let u = validate(&GOOD.replace(
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Version",
        ))
        .unwrap();
        let extra = [
            ("X-Served-By".to_string(), "duplex".to_string()),
            ("X-Bad".to_string(), "a\r\nInjected: 1".to_string()),
        ];
        let a = accept(&u, &Config::default(), Some("superchat"), &extra);
        let names: Vec<&str> = a.headers().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "Upgrade",
                "Connection",
                "Sec-WebSocket-Accept",
                "Sec-WebSocket-Protocol",
                "Sec-WebSocket-Extensions",
                "X-Served-By"
            ]
        );
        let mut text = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        for (k, v) in a.headers() {
            text += &format!("{k}: {v}\r\n");
        }
        text += "\r\n";
        assert_eq!(String::from_utf8(a.response.clone()).unwrap(), text);
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Extensions: permessage-deflate"));
        assert!(!text.contains("Injected"));
    }

    /// `Upgrade` and `Connection` are token lists: any field of the name,
    /// any case, any item, optional whitespace around it; a token that is
    /// only part of an item does not count.
    #[test]
    fn upgrade_tokens_are_list_items() {
        let ok = [
            GOOD.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade"),
            GOOD.replace("Connection: Upgrade", "Connection: keep-alive,\tupgrade "),
            GOOD.replace(
                "Connection: Upgrade",
                "Connection: keep-alive\r\nconnection: UPGRADE",
            ),
            GOOD.replace("Upgrade: websocket", "Upgrade: h2c, WebSocket"),
        ];
        for req in ok {
            validate(&req).unwrap_or_else(|e| panic!("{e} for {req:?}"));
        }
        let bad = [
            GOOD.replace("Connection: Upgrade", "Connection: Upgraded"),
            GOOD.replace("Connection: Upgrade", "Connection: keep-alive upgrade"),
            GOOD.replace("Upgrade: websocket", "Upgrade: websockets"),
        ];
        for req in bad {
            assert!(validate(&req).is_err(), "{req:?}");
        }
    }

    /// A head with more fields than fit on the stack is parsed into a
    /// vector when the limit allows it, and refused over the limit.
    #[test]
    fn heads_with_many_fields() {
        let many: String = (0..100).map(|i| format!("X-F{i}: {i}\r\n")).collect();
        let req = GOOD.replace("Origin:", &format!("{many}Origin:"));
        let cfg = Config::default().with_max_headers(200);
        let (r, n) = parse_request(req.as_bytes(), &cfg).unwrap().unwrap();
        assert_eq!(n, req.len());
        assert_eq!(r.headers.len(), 107);
        assert_eq!(r.headers.get("x-f99"), Some("99"));
        assert_eq!(
            r.headers.iter().nth(1),
            Some(("Upgrade", &b"websocket"[..]))
        );
        assert_eq!(
            parse_request(req.as_bytes(), &Config::default()).unwrap_err(),
            Error::TooManyHeaders { limit: 64 }
        );
    }

    #[test]
    fn extended_connect_of_http2() {
        // As an HTTP/2 server presents RFC 8441's example: no key, no
        // Upgrade or Connection; Host from :authority.
        let h2 = "CONNECT /chat HTTP/1.1\r\nHost: server.example.com\r\n\
            Sec-WebSocket-Protocol: chat, superchat\r\n\
            Sec-WebSocket-Extensions: permessage-deflate\r\n\
            Sec-WebSocket-Version: 13\r\nOrigin: http://www.example.com\r\n\r\n";
        let (req, _) = parse_request(h2.as_bytes(), &Config::default())
            .unwrap()
            .unwrap();
        let u = UpgradeRequest::validate_extended_connect(req.clone()).unwrap();
        assert_eq!((u.path(), u.key.as_str()), ("/chat", ""));
        assert_eq!(u.protocols, ["chat", "superchat"]);
        assert_eq!(u.extensions.len(), 1);
        // The HTTP/1.1 validation refuses it (CONNECT, no key), and the
        // extended one refuses a GET or a missing version.
        assert!(UpgradeRequest::validate(req.clone()).is_err());
        let get = Request {
            method: "GET".into(),
            ..req.clone()
        };
        assert_eq!(
            UpgradeRequest::validate_extended_connect(get).unwrap_err(),
            Error::MethodNotGet
        );
        let old = h2.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
        let (req, _) = parse_request(old.as_bytes(), &Config::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            UpgradeRequest::validate_extended_connect(req).unwrap_err(),
            Error::UnsupportedVersion
        );
    }

    #[test]
    fn unoffered_protocol_is_not_echoed() {
        let u = validate(GOOD).unwrap();
        let a = accept(&u, &Config::default(), Some("other"), &[]);
        assert_eq!(a.protocol, None);
    }

    #[test]
    fn tokens_are_case_insensitive_lists() {
        let s = GOOD
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn each_missing_requirement_is_refused_with_its_variant_and_status() {
        use HeaderError::*;
        let cases: Vec<(String, Error, u16)> = vec![
            (GOOD.replace("GET", "POST"), Error::MethodNotGet, 405),
            (
                GOOD.replace("HTTP/1.1", "HTTP/1.0"),
                Error::HttpVersion,
                400,
            ),
            (
                GOOD.replace("Host: server.example.com\r\n", ""),
                Error::BadHeader(MissingHost),
                400,
            ),
            (
                GOOD.replace("Host: server.example.com", "Host:  "),
                Error::BadHeader(MissingHost),
                400,
            ),
            (
                GOOD.replace("Upgrade: websocket\r\n", ""),
                Error::BadHeader(UpgradeNotWebSocket),
                426,
            ),
            (
                GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
                Error::BadHeader(UpgradeNotWebSocket),
                426,
            ),
            (
                GOOD.replace("Connection: Upgrade\r\n", "Connection: keep-alive\r\n"),
                Error::BadHeader(ConnectionNotUpgrade),
                400,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                Error::UnsupportedVersion,
                426,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
                Error::UnsupportedVersion,
                426,
            ),
        ];
        // Keys that are not 16 bytes in canonical base64: 10 bytes, not
        // base64, 24 characters but not canonical, 17 bytes, 20 bytes.
        let bad_keys = [
            "dGhlIHNhbXBsZQ==",
            "not base64!",
            "dGhlIHNhbXBsZSBub25jZQ=A",
            "dGhlIHNhbXBsZSBub25jZTE=",
            "dGhlIHNhbXBsZSBub25jZTEyMzQ=",
        ]
        .map(|k| {
            let req = GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", k);
            (req, Error::BadKey, 400)
        });
        for (req, expected, status) in cases.into_iter().chain(bad_keys) {
            let err = validate(&req).unwrap_err();
            assert_eq!(err, expected, "{req:?}");
            assert_eq!(err.http_status(), status, "{err} for {req:?}");
            assert!(err.is_handshake() && err.close_code().is_none(), "{err}");
        }
    }

    #[test]
    fn version_refusal_says_which_version() {
        let r = String::from_utf8(reject_error(&Error::UnsupportedVersion)).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 "));
        assert!(r.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(r.ends_with("Sec-WebSocket-Version must be 13\n"));
    }

    #[test]
    fn head_size_and_header_count_limits() {
        let cfg = Config::default();
        let huge = format!(
            "GET / HTTP/1.1\r\nX: {}",
            "a".repeat(cfg.max_handshake_bytes)
        );
        assert_eq!(
            parse_request(huge.as_bytes(), &cfg),
            Err(Error::HandshakeTooLarge {
                limit: cfg.max_handshake_bytes
            })
        );
        let many: String = (0..cfg.max_headers + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_request(req.as_bytes(), &cfg),
            Err(Error::TooManyHeaders {
                limit: cfg.max_headers
            })
        );
        // An incomplete head below the limit asks for more.
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &cfg),
            Ok(None)
        );
    }

    #[test]
    fn deflate_is_negotiated_when_offered() {
        let s = GOOD.replace(
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nSec-WebSocket-Version",
        );
        let u = validate(&s).unwrap();
        let a = accept(&u, &Config::default(), None, &[]);
        assert!(a.deflate.is_some());
        assert!(String::from_utf8(a.response)
            .unwrap()
            .contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
        let a = accept(&u, &Config::default().with_deflate(None), None, &[]);
        assert!(a.deflate.is_none());
    }
}
