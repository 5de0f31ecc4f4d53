//! Frame headers (RFC 6455 §5.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! Parsing looks at the header only: it never allocates and never trusts the
//! declared length for anything but comparison against limits.

use crate::error::Error;
use bytes::{BufMut, BytesMut};

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented message.
    Continuation,
    /// 0x1: text.
    Text,
    /// 0x2: binary.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode; reserved values are an error (close 1002).
    #[inline]
    pub fn from_u8(v: u8) -> Result<OpCode, Error> {
        Ok(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(Error::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    #[inline]
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1 (the "compressed" bit under permessage-deflate).
    pub rsv1: bool,
    /// RSV2 (no extension defines it here).
    pub rsv2: bool,
    /// RSV3 (no extension defines it here).
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The declared payload length.
    pub payload_len: u64,
}

/// The longest possible header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

impl FrameHeader {
    /// Parses a header from the start of `buf`. `Ok(None)` means more bytes are
    /// needed; `Ok(Some((header, n)))` means the header took `n` bytes.
    /// Structural errors (reserved opcode, 64-bit length with the top bit set,
    /// control frame rules) are reported here; role- and state-dependent rules
    /// are the connection's.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(l);
                if len >> 63 != 0 {
                    return Err(Error::InvalidLength);
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(Error::FragmentedControlFrame);
            }
            if payload_len > 125 {
                return Err(Error::ControlFrameTooLong(payload_len));
            }
        }
        let mask = if masked {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
            pos += 4;
            Some(m)
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header, using the shortest length encoding (§5.2 MUST).
    pub fn encode(&self, out: &mut BytesMut) {
        let b0 = (self.fin as u8) << 7
            | (self.rsv1 as u8) << 6
            | (self.rsv2 as u8) << 5
            | (self.rsv3 as u8) << 4
            | self.opcode.as_u8();
        put_header(out, b0, self.mask, self.payload_len);
    }
}

/// Appends a header: first byte, shortest length encoding, masking key.
fn put_header(out: &mut BytesMut, b0: u8, mask: Option<[u8; 4]>, len: u64) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(MAX_HEADER_LEN);
    out.put_u8(b0);
    match len {
        n @ 0..=125 => out.put_u8(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n);
        }
    }
    if let Some(m) = mask {
        out.put_slice(&m);
    }
}

/// Encodes a whole frame from an arbitrary first byte (FIN, the RSV bits and
/// any 4-bit opcode, reserved ones included) and payload, masked with `mask`
/// when given, using the shortest length encoding. For tests, fuzz seeds and
/// load generators that need frames a [`Connection`](crate::Connection)
/// would never produce. Costs one allocation of the frame's size. Only with
/// the `test-support` feature.
#[cfg(feature = "test-support")]
pub fn encode_raw(first_byte: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    put_header(&mut out, first_byte, mask, payload.len() as u64);
    let start = out.len();
    out.put_slice(payload);
    if let Some(k) = mask {
        crate::mask::apply_mask(&mut out[start..], k, 0);
    }
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(opcode: OpCode, fin: bool, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len: len,
        }
    }

    #[test]
    fn rfc_examples() {
        // §5.7: single-frame unmasked "Hello".
        let (h, n) = FrameHeader::parse(&[0x81, 0x05, b'H']).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.mask, n),
            (true, OpCode::Text, 5, None, 2)
        );
        // 256 bytes binary: 16-bit length.
        let (h, n) = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        // 64 KiB binary: 64-bit length.
        let (h, n) = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let mut out = BytesMut::new();
        header(OpCode::Binary, true, 1 << 20, Some([1, 2, 3, 4])).encode(&mut out);
        for i in 0..out.len() {
            assert_eq!(FrameHeader::parse(&out[..i]).unwrap(), None, "prefix {i}");
        }
    }

    #[test]
    fn reserved_opcodes_are_errors() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(Error::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn control_frame_rules() {
        // ping without FIN
        assert_eq!(
            FrameHeader::parse(&[0x09, 0]),
            Err(Error::FragmentedControlFrame)
        );
        // ping with 126-byte payload
        assert_eq!(
            FrameHeader::parse(&[0x89, 126, 0, 126]),
            Err(Error::ControlFrameTooLong(126))
        );
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::InvalidLength)
        );
        // 2^62 parses (the limit check is the connection's) without allocating.
        let (h, _) = FrameHeader::parse(&[0x82, 127, 0x40, 0, 0, 0, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, 1 << 62);
    }

    #[test]
    fn shortest_length_encoding() {
        for (len, expect) in [(0u64, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = BytesMut::new();
            header(OpCode::Binary, true, len, None).encode(&mut out);
            assert_eq!(out.len(), expect, "len {len}");
        }
    }

    fn any_opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong)
        ]
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(op in any_opcode(), fin in any::<bool>(), rsv in any::<[bool; 3]>(),
                                   len in prop_oneof![0u64..200, 0u64..70000, 0u64..(1u64 << 63)],
                                   mask in any::<Option<[u8; 4]>>()) {
            let (fin, len) = if op.is_control() { (true, len % 126) } else { (fin, len) };
            let h = FrameHeader { fin, rsv1: rsv[0], rsv2: rsv[1], rsv3: rsv[2], opcode: op, mask, payload_len: len };
            let mut out = BytesMut::new();
            h.encode(&mut out);
            prop_assert_eq!(out.len(), h.encoded_len());
            let (back, n) = FrameHeader::parse(&out).unwrap().unwrap();
            prop_assert_eq!(back, h);
            prop_assert_eq!(n, out.len());
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = FrameHeader::parse(&data);
        }
    }
}
