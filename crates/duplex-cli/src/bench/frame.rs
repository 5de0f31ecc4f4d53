//! Frames as the generator writes and reads them: opcodes, the fixed
//! masking key, the frame writer, message payloads, and the header parser
//! of (unmasked) server frames.

pub(super) const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;
/// The first byte's bit that marks a compressed message (RFC 7692).
pub(super) const RSV1: u8 = 0x40;

/// The fixed masking key of every frame this generator sends.
pub(super) const MASK: [u8; 4] = [0x3c, 0xa5, 0x0f, 0x96];

/// Appends a final frame with the shortest length encoding, masked with
/// `MASK` when `masked` (the payload is masked here too).
pub(super) fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], masked: bool) {
    let m = if masked { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
    } else {
        out.extend_from_slice(payload);
    }
}

/// The payload of every message: printable ASCII for text, a pseudo-random
/// byte sequence for binary.
pub(super) fn payload(size: usize, text: bool) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..size)
        .map(|i| {
            if text {
                b' ' + (i % 95) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

/// A server frame's first byte, header length and payload length, if `b`
/// holds the whole header (server frames are unmasked).
pub(super) fn unmasked_header(b: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("server frame is masked".into());
    }
    let (n, len) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as u64),
        127 if b.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(l))
        }
        126 | 127 => return Ok(None),
        l => (2, l as u64),
    };
    if len > 1 << 20 {
        return Err(format!("echo frame of {len} bytes"));
    }
    Ok(Some((b[0], n, len as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_masking_example() {
        // RFC 6455 §5.7 gives "Hello" masked with 37 fa 21 3d; with our key
        // the check is against a plain XOR.
        let mut f = Vec::new();
        put_frame(&mut f, OP_TEXT, b"Hello", true);
        assert_eq!(&f[..2], &[0x81, 0x85]);
        assert_eq!(&f[2..6], &MASK);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i & 3])
            .collect();
        assert_eq!(unmasked, b"Hello");
    }
}
