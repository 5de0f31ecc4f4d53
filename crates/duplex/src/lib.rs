//! `duplex`: WebSocket client and server for tokio.
//!
//! The protocol lives in [`duplex_proto`] (sans-IO); this crate drives it
//! over any `AsyncRead + AsyncWrite` stream: it reads into one growing
//! buffer, writes queued frames with vectored writes, answers pings, runs
//! the closing handshake with a timeout and keepalive pings if configured.
//!
//! ```no_run
//! # async fn demo() -> Result<(), duplex::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (tcp, _) = listener.accept().await?;
//! let mut ws = duplex::accept(tcp).await?;
//! while let Some(msg) = ws.recv().await {
//!     ws.send(msg?).await?;
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod proxy;
mod readbuf;
pub mod server;
pub mod split;
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;
pub mod url;
pub mod ws;

pub use client::{client_handshake, connect, connect_with, ClientOptions, ClientStream};
pub use duplex_proto::{
    self as proto, CloseCode, CloseFrame, Config, DeflateConfig, MemoryBudget, Message,
    PreparedMessage, Utf8Bytes,
};
pub use error::{Error, PemItem, ProxyError, Result, TlsError, UrlError};
pub use proxy::Proxy;
pub use server::{accept, accept_with, Decision, Handshake, Policy};
pub use split::{ReuniteError, WsReceiver, WsSender};
pub use tls::{MaybeTlsStream, Verify};
pub use ws::{CoalesceFin, ReadyState, WebSocket};
