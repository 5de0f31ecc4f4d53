//! Where to connect (a `ws://` URL resolved) and the opening handshake:
//! the upgrade request, and the check of the `101` response.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect, and the request line's pieces.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) host: String,
    pub(super) path: String,
}

pub(super) async fn resolve(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.rsplit(':').next().is_some_and(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && authority.contains(':')
    }) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    Ok(Target {
        addr,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

/// The RFC 6455 §1.3 sample key and its accept value: any fixed key will do
/// for a load generator, and a fixed one costs nothing per connection.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub(super) fn upgrade_request(t: &Target, deflate: bool) -> Vec<u8> {
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n",
        t.path, t.host
    );
    if deflate {
        r.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// An open WebSocket connection: the socket, bytes that followed the
/// response head, and whether permessage-deflate was agreed.
pub(super) struct Opened {
    pub(super) tcp: TcpStream,
    pub(super) leftover: Vec<u8>,
    pub(super) deflate: bool,
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Connects and performs the opening handshake. The response must be a
/// `101` carrying the right `Sec-WebSocket-Accept`.
pub(super) async fn open(t: &Target, request: &[u8]) -> Result<Opened, String> {
    let mut tcp = TcpStream::connect(t.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(request)
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let mut buf = vec![0u8; 1024];
    let mut have = 0;
    loop {
        if have == buf.len() {
            if buf.len() >= 16 << 10 {
                return Err("response head over 16 KiB".into());
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = tcp
            .read(&mut buf[have..])
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if n == 0 {
            return Err("server closed during the handshake".into());
        }
        have += n;
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end + 4];
            if !(head.starts_with(b"HTTP/1.1 101 ") || head.starts_with(b"HTTP/1.1 101\r")) {
                let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(format!(
                    "handshake refused: {}",
                    String::from_utf8_lossy(line)
                ));
            }
            if !contains_ignore_case(head, ACCEPT.as_bytes()) {
                return Err("response lacks the right Sec-WebSocket-Accept".into());
            }
            let deflate = contains_ignore_case(head, b"permessage-deflate");
            return Ok(Opened {
                tcp,
                leftover: buf[end + 4..have].to_vec(),
                deflate,
            });
        }
    }
}
