//! Close codes and close frames (RFC 6455 §5.5.1, §7.4).

use crate::error::Error;
use crate::utf8::Utf8Bytes;
use bytes::{BufMut, Bytes, BytesMut};

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: payload data inconsistent with the message type (bad UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway received an invalid upstream response.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether the code may appear in a close frame: the codes RFC 6455 and
    /// the IANA registry define for use on the wire (1000–1003, 1007–1014),
    /// and the ranges for libraries and applications (3000–4999).
    /// 1004, 1005, 1006 and 1015 never appear on the wire.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(c: u16) -> Self {
        CloseCode(c)
    }
}

/// The payload of a close frame: a code and a UTF-8 reason of at most 123 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, possibly empty.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with the given code and reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Parses a received close payload. An empty payload means "no status"
    /// (`Ok(None)`); one byte, an invalid code or a non-UTF-8 reason is an error.
    pub fn parse(payload: Bytes) -> Result<Option<CloseFrame>, Error> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(Error::InvalidClosePayload),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_valid_on_wire() {
                    return Err(Error::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from_bytes(payload.slice(2..))?;
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }

    /// Encodes the payload, checking that it is sendable.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), Error> {
        if !self.code.is_valid_on_wire() || self.reason.len() > 123 {
            return Err(Error::InvalidCloseToSend);
        }
        out.put_u16(self.code.0);
        out.extend_from_slice(self.reason.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_codes_are_not_valid_on_the_wire() {
        for c in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_valid_on_wire(), "{c}");
        }
        for c in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
        }
    }

    #[test]
    fn parse_rules() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[3])),
            Err(Error::InvalidClosePayload)
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xed])),
            Err(Error::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, 0xff])),
            Err(Error::InvalidUtf8)
        );
        let f = CloseFrame::parse(Bytes::from_static(b"\x03\xe8bye"))
            .unwrap()
            .unwrap();
        assert_eq!(f.code, CloseCode::NORMAL);
        assert_eq!(f.reason.as_str(), "bye");
    }

    #[test]
    fn encode_refuses_long_reason_and_reserved_codes() {
        let mut out = BytesMut::new();
        assert!(CloseFrame::new(CloseCode::NORMAL, "x".repeat(124))
            .encode(&mut out)
            .is_err());
        assert!(CloseFrame::new(CloseCode::ABNORMAL, "")
            .encode(&mut out)
            .is_err());
        assert!(CloseFrame::new(CloseCode::NORMAL, "x".repeat(123))
            .encode(&mut out)
            .is_ok());
        assert_eq!(out.len(), 125);
    }
}
