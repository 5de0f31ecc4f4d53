//! The one error type of the protocol core.
//!
//! Every variant is a value, never a panic. Protocol errors found while reading
//! map to the close code RFC 6455 §7.4.1 names for them ([`Error::close_code`]);
//! handshake errors map to the HTTP status a server answers with
//! ([`Error::http_status`]).

use crate::close::CloseCode;
use std::fmt;

/// Everything that can go wrong in the protocol core.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    // ---- framing (close 1002) ----
    /// RSV2/RSV3 set, or RSV1 set without a negotiated extension that defines it
    /// (or on a control or continuation frame).
    ReservedBitsSet,
    /// An opcode RFC 6455 reserves (0x3–0x7, 0xB–0xF).
    ReservedOpcode(u8),
    /// A client sent an unmasked frame (a server MUST close, §5.1).
    UnmaskedFrame,
    /// A server sent a masked frame (a client MUST close, §5.1).
    MaskedFrame,
    /// A control frame with a payload longer than 125 bytes (§5.5).
    ControlFrameTooLong(u64),
    /// A control frame without FIN (§5.5: control frames are never fragmented).
    FragmentedControlFrame,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A 64-bit length with its most significant bit set (§5.2).
    InvalidLength,
    /// A close frame payload of exactly one byte.
    InvalidClosePayload,
    /// A close code that must not appear on the wire.
    InvalidCloseCode(u16),

    // ---- limits (close 1009 / 1008) ----
    /// A frame declared a payload larger than `max_frame_size`.
    FrameTooLarge {
        /// The length the frame header declared.
        declared: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message grew beyond `max_message_size` (before or after inflation).
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The server-wide [`MemoryBudget`](crate::MemoryBudget) could not
    /// cover what this connection needed next: close 1009 when it was
    /// receiving a message, 1013 (try again later) otherwise.
    MemoryBudget {
        /// A message was being received.
        receiving: bool,
    },
    /// A fragmented message used more than `max_fragments` frames.
    TooManyFragments {
        /// The configured limit.
        limit: usize,
    },

    // ---- payload (close 1007) ----
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// The compressed payload could not be inflated.
    InflateFailed(String),

    // ---- connection state ----
    /// A send after the closing handshake started.
    Closed,
    /// The close reason is longer than 123 bytes or the code is not sendable.
    InvalidCloseToSend,
    /// A control frame payload longer than 125 bytes was asked to be sent.
    ControlPayloadTooLong(usize),
    /// The peer did not answer a ping within the pong timeout.
    KeepaliveTimeout,

    // ---- opening handshake ----
    /// The request or response head exceeded `max_handshake_bytes`.
    HandshakeTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// More header fields than `max_headers`.
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// The bytes are not an HTTP/1.x message head.
    MalformedHttp(&'static str),
    /// The request method is not GET.
    MethodNotGet,
    /// The request is not HTTP/1.1 or later.
    HttpVersion,
    /// A required header is missing or has the wrong value; which one, and
    /// what is wrong, is in the [`HeaderError`].
    BadHeader(HeaderError),
    /// `Sec-WebSocket-Version` is absent or not 13.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is not 16 bytes of base64.
    BadKey,
    /// The server answered with a status other than 101.
    HandshakeStatus(u16),
    /// `Sec-WebSocket-Accept` does not match the key.
    BadAccept,
    /// The server chose a subprotocol the client did not offer.
    UnofferedSubprotocol(String),
    /// The server chose an extension or parameter the client did not offer.
    UnofferedExtension(String),
    /// Extension parameters are malformed.
    BadExtension(String),
}

impl Error {
    /// The close code to send when this error fails an open connection, or
    /// `None` for errors that are not about received frames.
    pub fn close_code(&self) -> Option<CloseCode> {
        use Error::*;
        Some(match self {
            ReservedBitsSet
            | ReservedOpcode(_)
            | UnmaskedFrame
            | MaskedFrame
            | ControlFrameTooLong(_)
            | FragmentedControlFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | InvalidLength
            | InvalidClosePayload
            | InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
            FrameTooLarge { .. } | MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            TooManyFragments { .. } => CloseCode::POLICY_VIOLATION,
            MemoryBudget { receiving: true } => CloseCode::MESSAGE_TOO_BIG,
            MemoryBudget { receiving: false } => CloseCode::TRY_AGAIN_LATER,
            InvalidUtf8 | InflateFailed(_) => CloseCode::INVALID_PAYLOAD,
            _ => return None,
        })
    }

    /// The HTTP status a server answers a failed opening handshake with.
    /// `426` carries `Sec-WebSocket-Version: 13`; `431` means too large.
    pub fn http_status(&self) -> u16 {
        use Error::*;
        match self {
            HandshakeTooLarge { .. } | TooManyHeaders { .. } => 431,
            // A plain request to a WebSocket endpoint: say what is required.
            UnsupportedVersion | BadHeader(HeaderError::UpgradeNotWebSocket) => 426,
            MethodNotGet => 405,
            _ => 400,
        }
    }

    /// True for errors detected in the opening handshake.
    pub fn is_handshake(&self) -> bool {
        use Error::*;
        matches!(
            self,
            HandshakeTooLarge { .. }
                | TooManyHeaders { .. }
                | MalformedHttp(_)
                | MethodNotGet
                | HttpVersion
                | BadHeader(_)
                | UnsupportedVersion
                | BadKey
                | HandshakeStatus(_)
                | BadAccept
                | UnofferedSubprotocol(_)
                | UnofferedExtension(_)
                | BadExtension(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            ReservedBitsSet => write!(f, "reserved bits set without a negotiated extension"),
            ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            UnmaskedFrame => write!(f, "client frame is not masked"),
            MaskedFrame => write!(f, "server frame is masked"),
            ControlFrameTooLong(n) => write!(f, "control frame payload of {n} bytes (max 125)"),
            FragmentedControlFrame => write!(f, "fragmented control frame"),
            UnexpectedContinuation => write!(f, "continuation frame without a message in progress"),
            ExpectedContinuation => write!(f, "new data frame inside a fragmented message"),
            InvalidLength => write!(f, "64-bit payload length with the high bit set"),
            InvalidClosePayload => write!(f, "close frame with a 1-byte payload"),
            InvalidCloseCode(c) => write!(f, "close code {c} is not allowed on the wire"),
            FrameTooLarge { declared, limit } => {
                write!(
                    f,
                    "frame of {declared} bytes exceeds max_frame_size {limit}"
                )
            }
            MessageTooLarge { limit } => write!(f, "message exceeds max_message_size {limit}"),
            TooManyFragments { limit } => write!(f, "message exceeds max_fragments {limit}"),
            MemoryBudget { receiving: true } => {
                write!(f, "server memory budget spent while receiving a message")
            }
            MemoryBudget { receiving: false } => write!(f, "server memory budget spent"),
            InvalidUtf8 => write!(f, "invalid UTF-8 in a text message or close reason"),
            InflateFailed(e) => write!(f, "permessage-deflate: cannot inflate: {e}"),
            Closed => write!(f, "connection is closing or closed"),
            InvalidCloseToSend => write!(f, "close code not sendable or reason over 123 bytes"),
            ControlPayloadTooLong(n) => write!(f, "control payload of {n} bytes (max 125)"),
            KeepaliveTimeout => write!(f, "no pong within the keepalive timeout"),
            HandshakeTooLarge { limit } => write!(f, "handshake head exceeds {limit} bytes"),
            TooManyHeaders { limit } => write!(f, "more than {limit} header fields"),
            MalformedHttp(why) => write!(f, "malformed HTTP head: {why}"),
            MethodNotGet => write!(f, "method must be GET"),
            HttpVersion => write!(f, "HTTP/1.1 or later is required"),
            BadHeader(h) => write!(f, "missing or invalid header: {h}"),
            UnsupportedVersion => write!(f, "Sec-WebSocket-Version must be 13"),
            BadKey => write!(f, "Sec-WebSocket-Key must be 16 bytes of base64"),
            HandshakeStatus(s) => write!(f, "server answered HTTP {s}, expected 101"),
            BadAccept => write!(f, "Sec-WebSocket-Accept does not match the key"),
            UnofferedSubprotocol(p) => {
                write!(f, "server chose subprotocol {p:?} that was not offered")
            }
            UnofferedExtension(e) => write!(f, "server chose extension {e:?} that was not offered"),
            BadExtension(e) => write!(f, "invalid extension parameters: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Which required opening-handshake header is missing or wrong
/// ([`Error::BadHeader`]). The header's name is
/// [`HeaderError::header`]; `Display` says what was required.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderError {
    /// A request without a `Host` header, or with an empty one (RFC 6455
    /// §4.2.1 item 2). Answered 400.
    MissingHost,
    /// `Upgrade` is absent or does not list `websocket` (§4.2.1 item 3 in a
    /// request, §4.1 item 2 in a response). A request like this is usually
    /// plain HTTP sent to a WebSocket endpoint: answered 426 with
    /// `Sec-WebSocket-Version: 13`.
    UpgradeNotWebSocket,
    /// `Connection` is absent or does not list `Upgrade` (§4.2.1 item 4,
    /// §4.1 item 3). Answered 400.
    ConnectionNotUpgrade,
}

impl HeaderError {
    /// The header's name as RFC 6455 spells it (`"Host"`, `"Upgrade"`,
    /// `"Connection"`).
    pub fn header(&self) -> &'static str {
        match self {
            HeaderError::MissingHost => "Host",
            HeaderError::UpgradeNotWebSocket => "Upgrade",
            HeaderError::ConnectionNotUpgrade => "Connection",
        }
    }
}

impl fmt::Display for HeaderError {
    /// The header as it is required: `Host`, `Upgrade: websocket`,
    /// `Connection: Upgrade`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::MissingHost => f.write_str("Host"),
            HeaderError::UpgradeNotWebSocket => f.write_str("Upgrade: websocket"),
            HeaderError::ConnectionNotUpgrade => f.write_str("Connection: Upgrade"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status and message come from the variant: each header names itself
    /// and what was required, and only a missing `Upgrade: websocket` (plain
    /// HTTP at a WebSocket endpoint) is a 426.
    #[test]
    fn bad_headers_say_which_header_and_get_their_status() {
        for (h, name, status, text) in [
            (HeaderError::MissingHost, "Host", 400, "Host"),
            (
                HeaderError::UpgradeNotWebSocket,
                "Upgrade",
                426,
                "Upgrade: websocket",
            ),
            (
                HeaderError::ConnectionNotUpgrade,
                "Connection",
                400,
                "Connection: Upgrade",
            ),
        ] {
            let e = Error::BadHeader(h);
            assert_eq!(h.header(), name);
            assert_eq!(e.http_status(), status, "{e}");
            assert_eq!(e.to_string(), format!("missing or invalid header: {text}"));
            assert!(e.is_handshake());
            assert_eq!(e.close_code(), None);
        }
    }
}
