//! The error type of the tokio layer.
//!
//! One `#[non_exhaustive]` enum, [`Error`], with structured variants: what
//! went wrong is a variant (and its fields), never only message text, and
//! every error that came from somewhere else (an I/O error, a rustls error,
//! a PEM parser's error) stays reachable through
//! [`source()`](std::error::Error::source). TLS, proxy and URL failures have
//! small enums of their own ([`TlsError`], [`ProxyError`], [`UrlError`]),
//! as rustls keeps its `CertificateError` beside its `Error`.

use duplex_proto::CloseCode;
use std::fmt;
use std::io;
use std::path::PathBuf;
use tokio_rustls::rustls;

/// Everything that can fail while opening or using a WebSocket.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
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
    /// We sent a close frame and the peer did not answer it within
    /// `close_timeout`: the connection was closed without a closing
    /// handshake (the close code is 1006, `was_clean()` is false).
    CloseTimeout,
    /// The URL is not a usable `ws://` or `wss://` URL.
    Url(UrlError),
    /// The connection is closed; nothing more can be sent.
    Closed,
    /// TLS could not be set up: a certificate or key that does not load, or
    /// a failed TLS handshake (an untrusted certificate, a name mismatch).
    Tls(TlsError),
    /// The HTTP `CONNECT` proxy could not be used.
    Proxy(ProxyError),
}

impl Error {
    /// The close code the connection was failed with, for protocol errors
    /// found in received frames (1002, 1007, 1008, 1009); `None` otherwise.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol(e) => e.close_code(),
            _ => None,
        }
    }

    /// The HTTP status of a refused opening handshake (the server's answer,
    /// or the proxy's to `CONNECT`); `None` for every other error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } | Error::Proxy(ProxyError::Refused { status, .. }) => {
                Some(*status)
            }
            _ => None,
        }
    }
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
            Error::CloseTimeout => write!(
                f,
                "peer did not answer our close frame within close_timeout (1006)"
            ),
            Error::Url(e) => write!(f, "invalid URL: {e}"),
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
            Error::Url(e) => Some(e),
            Error::Tls(e) => Some(e),
            Error::Proxy(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
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

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        Error::Url(e)
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Error::Tls(e)
    }
}

impl From<ProxyError> for Error {
    fn from(e: ProxyError) -> Self {
        Error::Proxy(e)
    }
}

/// What is wrong with a `ws://` / `wss://` URL, or with a proxy's
/// `http://` URL ([`ProxyError::Url`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// No `scheme://`.
    MissingScheme,
    /// A scheme other than `ws`/`wss` (`http`/`https` as aliases), or
    /// other than `http` for a proxy.
    UnsupportedScheme(String),
    /// A `#fragment`, which RFC 6455 §3 does not allow.
    Fragment,
    /// `user:password@` in a WebSocket URL (not supported).
    UserInfo,
    /// `[` without `]`.
    UnclosedIpv6,
    /// Something other than `:port` after an IPv6 literal.
    JunkAfterIpv6,
    /// A port that is not a number from 0 to 65535.
    BadPort,
    /// An empty host.
    MissingHost,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::MissingScheme => write!(f, "missing scheme"),
            UrlError::UnsupportedScheme(s) => write!(f, "unsupported scheme {s}://"),
            UrlError::Fragment => write!(f, "fragments are not allowed"),
            UrlError::UserInfo => write!(f, "user info is not supported"),
            UrlError::UnclosedIpv6 => write!(f, "unclosed IPv6 literal"),
            UrlError::JunkAfterIpv6 => write!(f, "junk after IPv6 literal"),
            UrlError::BadPort => write!(f, "bad port"),
            UrlError::MissingHost => write!(f, "missing host"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Which PEM item failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemItem {
    /// A certificate (chain).
    Certificate,
    /// A private key.
    Key,
}

impl fmt::Display for PemItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemItem::Certificate => "certificate",
            PemItem::Key => "key",
        })
    }
}

/// Why TLS could not be set up. Each variant keeps the error it came from
/// as its [`source`](std::error::Error::source).
#[non_exhaustive]
#[derive(Debug)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A PEM certificate or key could not be parsed.
    Pem {
        /// What was being parsed.
        item: PemItem,
        /// The file it came from, if it came from one.
        path: Option<PathBuf>,
        /// The parser's error.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate PEM held no `CERTIFICATE` block.
    NoCertificate {
        /// The file, if it came from one.
        path: Option<PathBuf>,
    },
    /// rustls refused the configuration (a key that does not fit the
    /// certificate, an unsupported key type, no usable protocol version).
    Config(rustls::Error),
    /// The trusted certificates could not be made into a verifier.
    Verifier(rustls::client::VerifierBuilderError),
    /// The host is not a valid DNS name or IP address for TLS.
    ServerName {
        /// The host of the URL.
        host: String,
        /// The parser's error.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed: an untrusted certificate, a name mismatch,
    /// a peer that does not speak TLS. The rustls error, when there is one,
    /// is inside the I/O error ([`TlsError::rustls_error`]).
    Handshake {
        /// The host of the URL.
        host: String,
        /// The error of the handshake.
        source: io::Error,
    },
}

impl TlsError {
    /// The rustls error behind this one, if any: for a failed handshake,
    /// e.g. `InvalidCertificate(UnknownIssuer)` for an untrusted
    /// certificate.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            TlsError::Config(e) => Some(e),
            TlsError::Handshake { source, .. } => source.get_ref()?.downcast_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |p: &Option<PathBuf>| match p {
            Some(p) => format!("{}: ", p.display()),
            None => String::new(),
        };
        match self {
            TlsError::ReadFile { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem { item, path, source } => write!(f, "{}{item}: {source}", at(path)),
            TlsError::NoCertificate { path } => {
                write!(f, "{}no CERTIFICATE block in the PEM", at(path))
            }
            TlsError::Config(e) => write!(f, "{e}"),
            TlsError::Verifier(e) => write!(f, "trusted certificates: {e}"),
            TlsError::ServerName { host, source } => {
                write!(f, "{host}: not a valid server name: {source}")
            }
            TlsError::Handshake { host, source } => {
                write!(f, "handshake with {host} failed: {source}")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::ReadFile { source, .. } | TlsError::Handshake { source, .. } => Some(source),
            TlsError::Pem { source, .. } => Some(source),
            TlsError::NoCertificate { .. } => None,
            TlsError::Config(e) => Some(e),
            TlsError::Verifier(e) => Some(e),
            TlsError::ServerName { source, .. } => Some(source),
        }
    }
}

/// Why the HTTP `CONNECT` proxy could not be used.
#[non_exhaustive]
#[derive(Debug)]
pub enum ProxyError {
    /// The proxy URL (given, or from the environment) is not usable.
    Url(UrlError),
    /// The proxy could not be reached.
    Connect {
        /// `host:port` of the proxy.
        proxy: String,
        /// Why.
        source: io::Error,
    },
    /// The proxy answered `CONNECT` with a status other than 2xx (407:
    /// authentication required).
    Refused {
        /// The HTTP status.
        status: u16,
        /// The status line's reason phrase.
        reason: String,
    },
    /// The proxy's answer is not an HTTP response.
    BadResponse(httparse::Error),
    /// The proxy's response head is larger than 16 KiB.
    ResponseTooLarge,
    /// The proxy sent bytes after its response, before the tunnel was used.
    UnexpectedData,
    /// The proxy closed the connection before answering `CONNECT`.
    ClosedEarly,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Url(e) => write!(f, "invalid proxy URL: {e}"),
            ProxyError::Connect { proxy, source } => {
                write!(f, "cannot reach proxy {proxy}: {source}")
            }
            ProxyError::Refused { status, reason } => {
                write!(f, "proxy refused CONNECT: HTTP {status} {reason}")
            }
            ProxyError::BadResponse(e) => write!(f, "bad proxy response: {e}"),
            ProxyError::ResponseTooLarge => write!(f, "proxy response head too large"),
            ProxyError::UnexpectedData => {
                write!(f, "proxy sent data before the tunnel was used")
            }
            ProxyError::ClosedEarly => write!(f, "proxy closed the connection during CONNECT"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Url(e) => Some(e),
            ProxyError::Connect { source, .. } => Some(source),
            ProxyError::BadResponse(e) => Some(e),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
