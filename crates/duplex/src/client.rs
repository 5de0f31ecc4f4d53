//! Client side: connect to a `ws://` or `wss://` URL (directly or through
//! an HTTP `CONNECT` proxy), or run the client handshake over any stream.

use crate::error::{Error, Result};
use crate::url::WsUrl;
use crate::ws::WebSocket;
use bytes::BytesMut;
use duplex_proto::handshake::client::{ClientHandshake, ClientRequest};
use duplex_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{self, Proxy};
use crate::tls::{self, rustls, MaybeTlsStream, Verify};
use std::sync::Arc;

/// Options for [`connect_with`].
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Limits, compression offer and timeouts.
    pub config: Config,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// `Origin` header to send.
    pub origin: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// How `wss://` servers are verified (ignored when `tls_config` is set).
    pub verify: Verify,
    /// A complete rustls configuration for `wss://`, overriding `verify`.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// HTTP `CONNECT` proxy: from the environment by default.
    pub proxy: Proxy,
}

/// The stream under a connected client: TCP, possibly with TLS.
pub type ClientStream = MaybeTlsStream<TcpStream>;

/// Connects to `url` with default options (permessage-deflate offered,
/// proxy from the environment, the bundled root store for `wss://`).
pub async fn connect(url: &str) -> Result<WebSocket<ClientStream>> {
    connect_with(url, ClientOptions::default()).await
}

/// Connects to `url`: TCP (through a `CONNECT` proxy if one applies), TLS
/// for `wss://` (SNI for host names), then the opening handshake — all
/// within `handshake_timeout`.
pub async fn connect_with(url: &str, opts: ClientOptions) -> Result<WebSocket<ClientStream>> {
    let u = WsUrl::parse(url)?;
    let tls = if u.secure {
        Some(match &opts.tls_config {
            Some(c) => c.clone(),
            None => tls::client_config(&opts.verify)?,
        })
    } else {
        None
    };
    let proxy = opts.proxy.resolve(&u.host, u.secure)?;
    let timeout = opts.config.handshake_timeout;
    let stream = tokio::time::timeout(timeout, async {
        let tcp = match &proxy {
            Some(p) => proxy::connect_via(p, &u.host, u.port).await?,
            None => {
                let tcp = TcpStream::connect((u.host.as_str(), u.port)).await?;
                tcp.set_nodelay(true)?;
                tcp
            }
        };
        match tls {
            Some(config) => Ok::<_, Error>(MaybeTlsStream::Tls(Box::new(
                tls::connect_tls(tcp, &u.host, config).await?,
            ))),
            None => Ok(MaybeTlsStream::Plain(tcp)),
        }
    })
    .await
    .map_err(|_| Error::HandshakeTimeout)??;
    client_handshake(stream, url, opts).await
}

/// Runs the client opening handshake over an established stream.
pub async fn client_handshake<S>(
    mut stream: S,
    url: &str,
    opts: ClientOptions,
) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let u = WsUrl::parse(url)?;
    let req = ClientRequest {
        host: u.host_header(),
        target: u.target.clone(),
        protocols: opts.protocols.clone(),
        origin: opts.origin.clone(),
        headers: opts.headers.clone(),
    };
    let config = opts.config;
    let (hs, request) = ClientHandshake::new(&req, &config);
    let timeout = config.handshake_timeout;
    let (resp, leftover) = tokio::time::timeout(timeout, async {
        stream.write_all(&request).await?;
        stream.flush().await?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            match hs.parse_response(&buf) {
                Ok(Some((resp, n))) => {
                    let _ = buf.split_to(n);
                    return Ok::<_, Error>((resp, buf));
                }
                Ok(None) => {}
                Err(duplex_proto::Error::HandshakeStatus(status)) => {
                    let reason = refusal_reason(&mut stream, &mut buf).await;
                    return Err(Error::Refused { status, reason });
                }
                Err(e) => return Err(e.into()),
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(1024);
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    })
    .await
    .map_err(|_| Error::HandshakeTimeout)??;
    let extensions = resp.deflate.map(|d| d.to_header());
    let conn = Connection::new(Role::Client, config, resp.deflate);
    Ok(WebSocket::from_parts(
        stream,
        conn,
        leftover,
        resp.protocol,
        extensions,
        Some(url.to_string()),
    ))
}

/// Most bytes of a refusal's body read for its reason.
const MAX_REASON_BODY: usize = 1024;

/// The first line of a refused handshake's body (servers, Duplex among
/// them, put the reason there), read for at most a second and 1 KiB;
/// control characters removed, at most 200 characters.
async fn refusal_reason<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = resp.parse(buf) else {
        return String::new();
    };
    let declared = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let want = head + declared.unwrap_or(MAX_REASON_BODY).min(MAX_REASON_BODY);
    let read_more = async {
        while buf.len() < want {
            buf.reserve(want - buf.len());
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read_more).await;
    let body = &buf[head..buf.len().min(want)];
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}
