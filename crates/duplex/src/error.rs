//! The error type of the tokio layer.

use std::fmt;

/// Everything that can fail while opening or using a WebSocket.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The transport failed.
    Io(std::io::Error),
    /// The peer broke the protocol (the connection was failed with the
    /// close code [`duplex_proto::Error::close_code`] names), or the opening
    /// handshake was invalid.
    Protocol(duplex_proto::Error),
    /// The server refused the opening handshake with this HTTP status.
    Refused {
        /// HTTP status.
        status: u16,
        /// The first line of the response body (where servers put the
        /// reason), possibly empty.
        reason: String,
    },
    /// The transport closed without a closing handshake (the browser's 1006).
    AbnormalClosure,
    /// The opening handshake did not complete within `handshake_timeout`.
    HandshakeTimeout,
    /// A write made no progress within `write_timeout` (the peer stopped
    /// reading); the connection was dropped.
    WriteTimeout,
    /// The URL is not a usable `ws://` or `wss://` URL.
    Url(String),
    /// The connection is closed; nothing more can be sent.
    Closed,
    /// TLS could not be set up: a certificate or key that does not load, or
    /// a failed TLS handshake (an untrusted certificate, a name mismatch).
    Tls(String),
    /// The HTTP `CONNECT` proxy could not be used.
    Proxy(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Refused { status, reason } if reason.is_empty() => {
                write!(f, "server refused the upgrade with HTTP {status}")
            }
            Error::Refused { status, reason } => {
                write!(f, "server refused the upgrade with HTTP {status}: {reason}")
            }
            Error::AbnormalClosure => {
                write!(f, "connection closed without a closing handshake (1006)")
            }
            Error::HandshakeTimeout => write!(f, "opening handshake timed out"),
            Error::WriteTimeout => write!(
                f,
                "peer stopped reading: no write progress within write_timeout"
            ),
            Error::Url(u) => write!(f, "invalid URL: {u}"),
            Error::Closed => write!(f, "connection is closed"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::Proxy(e) => write!(f, "proxy: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<duplex_proto::Error> for Error {
    fn from(e: duplex_proto::Error) -> Self {
        match e {
            duplex_proto::Error::Closed => Error::Closed,
            duplex_proto::Error::HandshakeStatus(status) => Error::Refused {
                status,
                reason: String::new(),
            },
            e => Error::Protocol(e),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
