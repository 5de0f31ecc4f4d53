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
            if let Some((resp, n)) = hs.parse_response(&buf)? {
                let _ = buf.split_to(n);
                return Ok::<_, Error>((resp, buf));
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
