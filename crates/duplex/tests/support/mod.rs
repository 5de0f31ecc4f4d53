//! One test, two shapes of socket: a whole [`WebSocket`] or its split
//! halves driven from one task. Tests written against [`Ws`] run against
//! both through [`both!`], so the halves cannot drift from the whole
//! socket unnoticed.

#![allow(dead_code)] // Each test binary uses its own part.

use duplex::{CloseCode, Message, ReadyState, Result, WebSocket, WsReceiver, WsSender};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};

/// Which shape a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The `WebSocket` itself.
    Whole,
    /// `split()` into a `WsSender` and a `WsReceiver`.
    Halves,
}

/// A socket in either shape, with the operations tests need.
#[allow(clippy::large_enum_variant)] // One per test connection.
pub enum Ws<S> {
    /// A whole socket.
    Whole(WebSocket<S>),
    /// Its halves.
    Halves(WsSender<S>, WsReceiver<S>),
}

/// The halves' inherent methods are called by path: on a `&mut WsSender`,
/// `SinkExt`'s `send`/`feed`/`flush`/`close` would be found first.
impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    /// `ws` in the shape `mode` asks for.
    pub fn new(ws: WebSocket<S>, mode: Mode) -> Self {
        match mode {
            Mode::Whole => Ws::Whole(ws),
            Mode::Halves => {
                let (tx, rx) = ws.split();
                Ws::Halves(tx, rx)
            }
        }
    }

    pub async fn send(&mut self, m: Message) -> Result<()> {
        match self {
            Ws::Whole(ws) => ws.send(m).await,
            Ws::Halves(tx, _) => WsSender::send(tx, m).await,
        }
    }

    pub async fn feed(&mut self, m: Message) -> Result<()> {
        match self {
            Ws::Whole(ws) => ws.feed(m).await,
            Ws::Halves(tx, _) => WsSender::feed(tx, m).await,
        }
    }

    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Ws::Whole(ws) => ws.flush().await,
            Ws::Halves(tx, _) => WsSender::flush(tx).await,
        }
    }

    pub async fn recv(&mut self) -> Option<Result<Message>> {
        match self {
            Ws::Whole(ws) => ws.recv().await,
            Ws::Halves(_, rx) => rx.recv().await,
        }
    }

    /// The whole closing handshake: `WebSocket::close`, or the sender's
    /// close frame and the receiver read to its end.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        match self {
            Ws::Whole(ws) => ws.close(code, reason).await,
            Ws::Halves(tx, rx) => {
                // Inherent, not `SinkExt::close`, which takes `&mut`.
                WsSender::close(tx, code, reason).await?;
                drain(rx).await
            }
        }
    }

    /// `SinkExt::feed` on the socket or the sender.
    pub async fn sink_feed(&mut self, m: Message) -> Result<()> {
        match self {
            Ws::Whole(ws) => SinkExt::feed(ws, m).await,
            Ws::Halves(tx, _) => SinkExt::feed(tx, m).await,
        }
    }

    /// `SinkExt::flush` on the socket or the sender.
    pub async fn sink_flush(&mut self) -> Result<()> {
        match self {
            Ws::Whole(ws) => SinkExt::flush(ws).await,
            Ws::Halves(tx, _) => SinkExt::flush(tx).await,
        }
    }

    /// `SinkExt::close` on the socket or the sender.
    pub async fn sink_close(&mut self) -> Result<()> {
        match self {
            Ws::Whole(ws) => SinkExt::close(ws).await,
            Ws::Halves(tx, _) => SinkExt::close(tx).await,
        }
    }

    /// `StreamExt::next` on the socket or the receiver.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        match self {
            Ws::Whole(ws) => ws.next().await,
            Ws::Halves(_, rx) => rx.next().await,
        }
    }

    pub fn ready_state(&self) -> ReadyState {
        match self {
            Ws::Whole(ws) => ws.ready_state(),
            Ws::Halves(tx, rx) => {
                let state = rx.ready_state();
                assert_eq!(tx.ready_state(), state, "the halves agree");
                state
            }
        }
    }

    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Ws::Whole(ws) => ws.close_code(),
            Ws::Halves(_, rx) => rx.close_code(),
        }
    }

    pub fn close_reason(&self) -> Option<String> {
        match self {
            Ws::Whole(ws) => ws.close_reason().map(str::to_string),
            Ws::Halves(_, rx) => rx.close_reason(),
        }
    }

    pub fn was_clean(&self) -> bool {
        match self {
            Ws::Whole(ws) => ws.was_clean(),
            Ws::Halves(_, rx) => rx.was_clean(),
        }
    }
}

/// Reads `rx` to its end, discarding data: `Ok` for a clean end.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(rx: &mut WsReceiver<S>) -> Result<()> {
    loop {
        match rx.recv().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// A client that opens the socket by hand and then speaks raw frames.
pub async fn raw_client(url: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tcp
}

/// A masked client frame (mask key 0: the payload goes as is).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 1 << 16 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// For each `async fn name(mode: Mode)`, a module `name` with the tests
/// `whole` and `halves` (`#[macro_use] mod support;` first). Attributes
/// before a name (`#[ignore = "…"]`) go on both tests.
macro_rules! both {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            $(#[$attr])*
            async fn whole() {
                super::$name(crate::support::Mode::Whole).await
            }

            #[tokio::test]
            $(#[$attr])*
            async fn halves() {
                super::$name(crate::support::Mode::Halves).await
            }
        }
    )*};
}
