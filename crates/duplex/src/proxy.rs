//! HTTP `CONNECT` proxies.
//!
//! A plain HTTP proxy forwards requests it understands and mangles the
//! rest: `Upgrade` and `Connection` are hop-by-hop headers, so a proxy that
//! is not WebSocket-aware drops them and the handshake fails. A `CONNECT`
//! tunnel avoids that: the proxy opens a TCP connection to the target and
//! then relays bytes blindly, so the upgrade (and TLS for `wss://`) runs end
//! to end. Browsers do the same for every WebSocket through a proxy.
//!
//! [`Proxy::FromEnv`] follows the usual variables: `https_proxy` /
//! `HTTPS_PROXY` for `wss://`, `http_proxy` / `HTTP_PROXY` for `ws://`, then
//! `all_proxy` / `ALL_PROXY`, with `no_proxy` / `NO_PROXY` listing hosts to
//! reach directly (`*`, exact names or IPs, and domain suffixes such as
//! `.example.com` or `example.com`).

use crate::error::{ProxyError, Result, UrlError};
use base64::Engine;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest proxy response head read.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// Whether and how a client goes through a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Proxy {
    /// From the environment variables (the default), as curl and browsers do.
    #[default]
    FromEnv,
    /// Always connect directly.
    None,
    /// Through this proxy: `http://[user:password@]host[:port]`.
    Url(String),
}

/// A proxy to tunnel through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget {
    /// Proxy host.
    pub host: String,
    /// Proxy port (default 80; 1080 for `socks5://` is not supported).
    pub port: u16,
    /// `user:password` for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
}

impl Proxy {
    /// The proxy to use for a connection to `host` (`secure` for `wss://`),
    /// or `None` to connect directly.
    pub fn resolve(&self, host: &str, secure: bool) -> Result<Option<ProxyTarget>> {
        self.resolve_with(host, secure, |k| std::env::var(k).ok())
    }

    /// [`resolve`](Self::resolve) with the environment supplied by `env`.
    pub fn resolve_with(
        &self,
        host: &str,
        secure: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ProxyTarget>> {
        match self {
            Proxy::None => Ok(None),
            Proxy::Url(u) => parse_proxy_url(u).map(Some),
            Proxy::FromEnv => {
                let get = |names: &[&str]| {
                    names
                        .iter()
                        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
                };
                let url = if secure {
                    get(&["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
                } else {
                    get(&["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"])
                };
                let Some(url) = url else { return Ok(None) };
                if let Some(no) = get(&["no_proxy", "NO_PROXY"]) {
                    if no_proxy_matches(&no, host) {
                        return Ok(None);
                    }
                }
                parse_proxy_url(&url).map(Some)
            }
        }
    }
}

/// Parses `http://[user:password@]host[:port][/]` (the scheme may be left
/// out, as in many environments).
fn parse_proxy_url(url: &str) -> Result<ProxyTarget> {
    let bad = |e: UrlError| ProxyError::Url(e);
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => rest,
            _ => return Err(bad(UrlError::UnsupportedScheme(scheme.to_string())).into()),
        },
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(percent_decode(c)), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| bad(UrlError::UnclosedIpv6))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad(UrlError::BadPort))?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| bad(UrlError::BadPort))?,
            ),
            None => (hostport.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(bad(UrlError::MissingHost).into());
    }
    Ok(ProxyTarget {
        host,
        port,
        credentials,
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `host` is exempt under a `no_proxy` list.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            // Entries may carry a port ("example.com:8080"); the port is ignored.
            let entry = entry.trim_start_matches('[');
            let entry = match entry.split_once(']') {
                Some((h, _)) => h,
                None if entry.matches(':').count() == 1 => entry.split(':').next().unwrap_or(""),
                None => entry,
            };
            let e = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase();
            !e.is_empty() && (host == e || host.ends_with(&format!(".{e}")))
        })
}

/// Connects to `proxy` and opens a tunnel to `host:port` with `CONNECT`.
/// A non-2xx answer is [`ProxyError::Refused`] with its status.
pub async fn connect_via(proxy: &ProxyTarget, host: &str, port: u16) -> Result<TcpStream> {
    let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| ProxyError::Connect {
            proxy: format!("{}:{}", proxy.host, proxy.port),
            source,
        })?;
    stream.set_nodelay(true)?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = &proxy.credentials {
        let enc = base64::engine::general_purpose::STANDARD.encode(c.as_bytes());
        req.push_str(&format!("Proxy-Authorization: Basic {enc}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if !(200..300).contains(&code) {
                    return Err(ProxyError::Refused {
                        status: code,
                        reason: resp.reason.unwrap_or("").to_string(),
                    }
                    .into());
                }
                if buf.len() > n {
                    return Err(ProxyError::UnexpectedData.into());
                }
                return Ok(stream);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ProxyError::BadResponse(e).into()),
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(ProxyError::ResponseTooLarge.into());
        }
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ProxyError::ClosedEarly.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_picks_the_variable_by_scheme() {
        let vars = [
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
        ];
        let p = Proxy::FromEnv;
        let s = p
            .resolve_with("example.com", true, env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("secure-proxy", 3128));
        let s = p
            .resolve_with("example.com", false, env(&vars))
            .unwrap()
            .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("plain-proxy", 8080));
        assert_eq!(p.resolve_with("example.com", true, env(&[])).unwrap(), None);
        let all = [("ALL_PROXY", "http://all:1")];
        assert_eq!(
            p.resolve_with("x", false, env(&all)).unwrap().unwrap().host,
            "all"
        );
    }

    #[test]
    fn no_proxy_exempts_hosts() {
        let vars = [
            ("https_proxy", "http://p:3128"),
            (
                "no_proxy",
                "localhost, .internal.example,10.0.0.1,[::1],svc.example:8443",
            ),
        ];
        let p = Proxy::FromEnv;
        for direct in [
            "localhost",
            "a.internal.example",
            "internal.example",
            "10.0.0.1",
            "::1",
            "svc.example",
            "x.svc.example",
        ] {
            assert_eq!(
                p.resolve_with(direct, true, env(&vars)).unwrap(),
                None,
                "{direct}"
            );
        }
        for proxied in ["example.com", "notinternal.example", "10.0.0.10"] {
            assert!(
                p.resolve_with(proxied, true, env(&vars)).unwrap().is_some(),
                "{proxied}"
            );
        }
        let star = [("https_proxy", "http://p:3128"), ("NO_PROXY", "*")];
        assert_eq!(
            p.resolve_with("example.com", true, env(&star)).unwrap(),
            None
        );
    }

    #[test]
    fn proxy_urls() {
        let t = parse_proxy_url("http://user:p%40ss@proxy.example:8080/").unwrap();
        assert_eq!(t.host, "proxy.example");
        assert_eq!(t.port, 8080);
        assert_eq!(t.credentials.as_deref(), Some("user:p@ss"));
        let t = parse_proxy_url("http://[::1]:3128").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 3128));
        assert_eq!(parse_proxy_url("http://proxy").unwrap().port, 80);
        for (bad, why) in [
            (
                "socks5://p:1080",
                UrlError::UnsupportedScheme("socks5".into()),
            ),
            ("https://p:443", UrlError::UnsupportedScheme("https".into())),
            ("http://", UrlError::MissingHost),
            ("http://p:notaport", UrlError::BadPort),
            ("http://[::1:80", UrlError::UnclosedIpv6),
        ] {
            match parse_proxy_url(bad) {
                Err(Error::Proxy(ProxyError::Url(e))) => assert_eq!(e, why, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(Proxy::None.resolve("example.com", true).unwrap().is_none());
    }
}
