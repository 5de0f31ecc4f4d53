//! Handshake policy: which pages may open a socket (`Origin`), and which
//! subprotocol the server picks.
//!
//! # Cross-site WebSocket hijacking
//!
//! A browser sends cookies and HTTP authentication with a WebSocket upgrade
//! to *any* site, whichever page opened it, and the same-origin policy does
//! not apply to WebSockets. A page on `evil.example` can therefore open a
//! socket to `chat.example` as the logged-in user unless the server checks
//! the `Origin` header, which browsers always send and pages cannot forge.
//! [`OriginPolicy`] is that check. Its default accepts a request whose
//! `Origin` names the same host and port as its `Host` header (the page was
//! served by this server), and a request with no `Origin` at all (not a
//! browser: such a client can send whatever it likes anyway). Everything
//! else is refused with 403 unless listed with [`OriginPolicy::allow`].
//!
//! The `Host`/`Origin` comparison does not protect against DNS rebinding
//! (an attacker's name that resolves to the server's address makes both
//! headers agree); servers reachable under names they do not control should
//! list their allowed origins explicitly.

use super::server::UpgradeRequest;

/// Which `Origin` values may open a WebSocket.
///
/// ```
/// use duplex_proto::handshake::policy::OriginPolicy;
/// let p = OriginPolicy::default().allow("https://app.example");
/// assert!(p.check(Some("https://app.example"), "api.example").is_ok());
/// assert!(p.check(Some("https://api.example"), "api.example").is_ok()); // same host
/// assert!(p.check(Some("https://evil.example"), "api.example").is_err());
/// assert!(p.check(None, "api.example").is_ok()); // not a browser
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<Origin>,
}

impl OriginPolicy {
    /// The default: same host as `Host`, or no `Origin` header.
    pub fn same_host() -> Self {
        Self::default()
    }

    /// Accepts every origin (a public API with no ambient credentials).
    pub fn any() -> Self {
        OriginPolicy {
            any: true,
            allowed: Vec::new(),
        }
    }

    /// Also accepts `origin` (`scheme://host[:port]`, as a browser sends it;
    /// `*` accepts every origin). Matching ignores ASCII case and a default
    /// port written out. An entry that is not an origin matches nothing.
    pub fn allow(mut self, origin: &str) -> Self {
        let origin = origin.trim();
        if origin == "*" {
            self.any = true;
        } else if let Some(o) = Origin::parse(origin) {
            self.allowed.push(o);
        }
        self
    }

    /// Whether `origin` is syntactically something [`allow`](Self::allow)
    /// can match (`*` or `scheme://host[:port]`), for validating flags.
    pub fn is_valid_entry(origin: &str) -> bool {
        origin.trim() == "*" || Origin::parse(origin.trim()).is_some()
    }

    /// Checks a request's `Origin` (if any) against its `Host`. `Err` holds
    /// the reason to send with a 403.
    pub fn check(&self, origin: Option<&str>, host: &str) -> Result<(), String> {
        let Some(origin) = origin else {
            return Ok(());
        };
        if self.any {
            return Ok(());
        }
        let Some(o) = Origin::parse(origin.trim()) else {
            return Err(format!("origin {origin:?} is not allowed"));
        };
        if self.allowed.contains(&o) || o.same_host_as(host) {
            return Ok(());
        }
        Err(format!(
            "origin {origin:?} is not allowed to open a WebSocket on {host:?}"
        ))
    }

    /// [`check`](Self::check) applied to an upgrade request.
    pub fn check_request(&self, req: &UpgradeRequest) -> Result<(), String> {
        self.check(req.origin.as_deref(), &req.host)
    }
}

/// A parsed serialized origin: scheme, host and port, lower-cased, with the
/// scheme's default port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (no path, no user info). `null`, the
    /// origin of sandboxed and `file:` pages, is not an origin here.
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            Some(p) => p,
            None => default_port(&scheme)?,
        };
        Some(Origin { scheme, host, port })
    }

    /// Whether `host_header` (`host[:port]`) names this origin's host and
    /// port; a `Host` without a port means this scheme's default port.
    fn same_host_as(&self, host_header: &str) -> bool {
        match split_host_port(host_header.trim()) {
            Some((h, p)) => {
                h == self.host
                    && p.unwrap_or_else(|| default_port(&self.scheme).unwrap_or(0)) == self.port
            }
            None => false,
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` / `[v6][:port]` into a lower-cased host and port.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", h.to_ascii_lowercase()), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (s.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// The subprotocol a server picks: the first one in the client's order of
/// preference that the server supports (tokens compare case-sensitively, as
/// RFC 6455 §4.1 defines them). `None` when they share none; the server then
/// answers without `Sec-WebSocket-Protocol`, and a browser that offered any
/// fails the connection (close code 1006).
pub fn select_protocol<'a>(offered: &'a [String], supported: &[String]) -> Option<&'a str> {
    offered
        .iter()
        .find(|p| supported.iter().any(|s| s == *p))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_accepts_same_host_and_no_origin() {
        let p = OriginPolicy::default();
        assert!(p.check(None, "example.com").is_ok());
        assert!(p.check(Some("http://example.com"), "example.com").is_ok());
        assert!(p
            .check(Some("http://example.com:80"), "example.com")
            .is_ok());
        assert!(p
            .check(Some("http://example.com"), "example.com:80")
            .is_ok());
        assert!(p.check(Some("https://example.com"), "example.com").is_ok());
        assert!(p
            .check(Some("https://Example.COM"), "example.com:443")
            .is_ok());
        assert!(p
            .check(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")
            .is_ok());
        assert!(p.check(Some("http://[::1]:8080"), "[::1]:8080").is_ok());
    }

    #[test]
    fn default_refuses_a_mismatch() {
        let p = OriginPolicy::default();
        for (origin, host) in [
            ("http://evil.example", "example.com"),
            ("http://localhost:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1:8081", "127.0.0.1:8080"),
            ("https://example.com", "example.com:80"),
            ("http://example.com.evil.example", "example.com"),
            ("null", "example.com"),
            ("file://", "example.com"),
            ("example.com", "example.com"),
            ("http://example.com/path", "example.com"),
            ("http://user@example.com", "example.com"),
        ] {
            let err = p.check(Some(origin), host).unwrap_err();
            assert!(err.contains("not allowed"), "{origin} vs {host}: {err}");
        }
    }

    #[test]
    fn allowlist_adds_origins() {
        let p = OriginPolicy::default()
            .allow("http://localhost:8080")
            .allow("https://app.example/");
        assert!(p
            .check(Some("http://localhost:8080"), "127.0.0.1:8080")
            .is_ok());
        assert!(p
            .check(Some("HTTP://LOCALHOST:8080"), "127.0.0.1:8080")
            .is_ok());
        assert!(p
            .check(Some("https://app.example:443"), "api.example")
            .is_ok());
        assert!(p.check(Some("http://app.example"), "api.example").is_err());
        assert!(p
            .check(Some("http://localhost:8081"), "127.0.0.1:8080")
            .is_err());
        // An unparsable entry matches nothing rather than everything.
        let q = OriginPolicy::default().allow("localhost");
        assert!(q.check(Some("http://localhost"), "127.0.0.1").is_err());
        assert!(!OriginPolicy::is_valid_entry("localhost"));
        assert!(OriginPolicy::is_valid_entry("*"));
        assert!(OriginPolicy::is_valid_entry("http://localhost:3000"));
    }

    #[test]
    fn star_accepts_everything() {
        let p = OriginPolicy::default().allow("*");
        assert_eq!(p, OriginPolicy::any());
        assert!(p.check(Some("null"), "example.com").is_ok());
        assert!(p.check(Some("http://evil.example"), "example.com").is_ok());
    }

    #[test]
    fn protocol_follows_client_preference() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let supported = s(&["b", "a"]);
        assert_eq!(select_protocol(&s(&["a", "b"]), &supported), Some("a"));
        assert_eq!(select_protocol(&s(&["x", "b"]), &supported), Some("b"));
        assert_eq!(select_protocol(&s(&["x", "y"]), &supported), None);
        assert_eq!(select_protocol(&s(&["A"]), &supported), None);
        assert_eq!(select_protocol(&[], &supported), None);
    }
}
