//! The streaming checker of echoed frames: each header parsed, each
//! payload compared in place with what was sent.

use super::frame::{MASK, OP_CLOSE};

/// What every echoed frame must look like.
pub(super) struct Expect {
    pub(super) opcode: u8,
    /// `Some(MASK)` when the peer sends our own masked frames back.
    pub(super) masked: bool,
    /// The payload exactly as it arrives on the wire.
    pub(super) payload: Vec<u8>,
}

/// A streaming checker of echoed frames: parses each header, then compares
/// the payload with the expected bytes as it arrives, holding no more than
/// a partial header.
pub(super) struct Checker {
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame already compared; `None` while a
    /// header is awaited.
    pos: Option<usize>,
}

/// A header's length if `b` holds all of it: `Ok(None)` means more bytes.
fn header(b: &[u8], e: &Expect) -> Result<Option<usize>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    let mut n = 2;
    let len = match b1 & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            n = 4;
            u16::from_be_bytes([b[2], b[3]]) as u64
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            n = 10;
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            u64::from_be_bytes(l)
        }
        l => l as u64,
    };
    let masked = b1 & 0x80 != 0;
    if masked {
        if b.len() < n + 4 {
            return Ok(None);
        }
        if b[n..n + 4] != MASK {
            return Err("echoed frame has another masking key".into());
        }
        n += 4;
    }
    if b0 & 0x0f == OP_CLOSE {
        return Err("server sent a close frame".into());
    }
    if b0 != 0x80 | e.opcode {
        return Err(format!("unexpected frame header byte {b0:#04x}"));
    }
    if masked != e.masked {
        return Err(format!("echoed frame masked: {masked}"));
    }
    if len != e.payload.len() as u64 {
        return Err(format!(
            "echoed frame of {len} bytes, sent {}",
            e.payload.len()
        ));
    }
    Ok(Some(n))
}

impl Checker {
    pub(super) fn new() -> Self {
        Checker {
            head: [0; 14],
            have: 0,
            pos: None,
        }
    }

    /// Checks `data`; returns how many echoes it completed.
    pub(super) fn feed(&mut self, mut data: &[u8], e: &Expect) -> Result<usize, String> {
        let mut done = 0;
        loop {
            match self.pos {
                None => {
                    if data.is_empty() {
                        return Ok(done);
                    }
                    if self.have == 0 {
                        match header(data, e)? {
                            Some(n) => data = &data[n..],
                            None => {
                                self.head[..data.len()].copy_from_slice(data);
                                self.have = data.len();
                                return Ok(done);
                            }
                        }
                    } else {
                        let take = (14 - self.have).min(data.len());
                        self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
                        match header(&self.head[..self.have + take], e)? {
                            Some(n) => {
                                data = &data[n - self.have..];
                                self.have = 0;
                            }
                            None => {
                                self.have += take;
                                return Ok(done);
                            }
                        }
                    }
                    self.pos = Some(0);
                }
                Some(pos) => {
                    let take = (e.payload.len() - pos).min(data.len());
                    if data[..take] != e.payload[pos..pos + take] {
                        return Err("echoed payload differs from what was sent".into());
                    }
                    data = &data[take..];
                    if pos + take == e.payload.len() {
                        done += 1;
                        self.pos = None;
                    } else {
                        self.pos = Some(pos + take);
                        return Ok(done);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{payload, put_frame, OP_BINARY, OP_TEXT};
    use super::*;

    fn expect(opcode: u8, masked: bool, payload: &[u8]) -> Expect {
        Expect {
            opcode,
            masked,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn checker_accepts_echoes_split_anywhere() {
        for size in [0usize, 5, 125, 126, 300, 70_000] {
            let data = payload(size, false);
            let mut wire = Vec::new();
            for _ in 0..3 {
                put_frame(&mut wire, OP_BINARY, &data, false);
            }
            let e = expect(OP_BINARY, false, &data);
            for cut in [1usize, 2, 3, 7, 13, 1000] {
                let mut c = Checker::new();
                let done: usize = wire.chunks(cut).map(|ch| c.feed(ch, &e).unwrap()).sum();
                assert_eq!(done, 3, "size {size} cut {cut}");
            }
        }
    }

    #[test]
    fn checker_accepts_own_masked_frames_in_raw_mode() {
        let data = payload(1000, true);
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_TEXT, &data, true);
        let masked_payload = wire[wire.len() - 1000..].to_vec();
        let mut c = Checker::new();
        assert_eq!(
            c.feed(&wire, &expect(OP_TEXT, true, &masked_payload)),
            Ok(1)
        );
        // The same frame is wrong where an unmasked echo is expected.
        let mut c = Checker::new();
        assert!(c.feed(&wire, &expect(OP_TEXT, false, &data)).is_err());
    }

    #[test]
    fn checker_rejects_a_changed_byte_a_wrong_opcode_or_length() {
        let data = payload(200, false);
        let e = expect(OP_BINARY, false, &data);
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_BINARY, &data, false);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert!(Checker::new().feed(&wire, &e).is_err());
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_TEXT, &data, false);
        assert!(Checker::new().feed(&wire, &e).is_err());
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_BINARY, &data[..199], false);
        assert!(Checker::new().feed(&wire, &e).is_err());
        let mut wire = Vec::new();
        put_frame(&mut wire, OP_CLOSE, &[3, 232], false);
        assert!(Checker::new().feed(&wire, &e).is_err());
    }
}
