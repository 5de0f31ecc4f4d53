//! `ws://` and `wss://` URLs.

use crate::error::UrlError;

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// True for `wss://`.
    pub secure: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, at least `/`.
    pub target: String,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path][?query]` (also `wss://`, and `http(s)://`
    /// as aliases). Fragments are not allowed (RFC 6455 §3).
    pub fn parse(url: &str) -> Result<WsUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::MissingScheme)?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_string())),
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or(UrlError::UnclosedIpv6)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| UrlError::BadPort)?,
                None if after.is_empty() => default_port,
                None => return Err(UrlError::JunkAfterIpv6),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| UrlError::BadPort)?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        Ok(WsUrl {
            secure,
            host,
            port,
            target,
        })
    }

    /// The `Host` header value: the port only when not the default.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.secure { 443 } else { 80 } {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let u = WsUrl::parse("ws://example.com/chat?x=1").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port, u.target.as_str()),
            (false, "example.com", 80, "/chat?x=1")
        );
        assert_eq!(u.host_header(), "example.com");
        let u = WsUrl::parse("wss://127.0.0.1:9001").unwrap();
        assert_eq!((u.secure, u.port, u.target.as_str()), (true, 9001, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:9001");
        let u = WsUrl::parse("ws://[::1]:8080/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header(), "[::1]:8080");
        let u = WsUrl::parse("ws://h?q").unwrap();
        assert_eq!(u.target, "/?q");
    }

    #[test]
    fn refuses_bad_urls() {
        for (u, why) in [
            ("example.com", UrlError::MissingScheme),
            ("ftp://x", UrlError::UnsupportedScheme("ftp".into())),
            ("ws://", UrlError::MissingHost),
            ("ws://x:notaport", UrlError::BadPort),
            ("ws://x:65536", UrlError::BadPort),
            ("ws://x/#frag", UrlError::Fragment),
            ("ws://u@x", UrlError::UserInfo),
            ("ws://[::1", UrlError::UnclosedIpv6),
            ("ws://[::1]x", UrlError::JunkAfterIpv6),
        ] {
            assert_eq!(WsUrl::parse(u), Err(why), "{u}");
        }
    }
}
