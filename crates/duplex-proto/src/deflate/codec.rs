//! The permessage-deflate codec: [`Deflater`] compresses a message with a
//! sync flush and strips the trailing `00 00 ff ff`; [`Inflater`] inflates
//! piece by piece within the message size limit. Without context takeover
//! both borrow their zlib state from the [`pool`](super::pool).

use super::negotiate::DeflateParams;
use super::pool;
use crate::config::DeflateConfig;
use crate::error::Error;
use crate::growth;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Which side of the connection a codec serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client side.
    Client,
    /// The server side.
    Server,
}

/// Compresses outgoing messages.
pub struct Deflater {
    inner: Option<Compress>,
    level: u32,
    window_bits: u8,
    reset_each_message: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("reset_each_message", &self.reset_each_message)
            .finish()
    }
}

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl Deflater {
    /// A compressor for `side` under the agreed parameters. The zlib state is
    /// allocated on first use and, without context takeover, freed after each
    /// message.
    pub fn new(side: Side, params: &DeflateParams, cfg: &DeflateConfig) -> Self {
        let (limit, reset) = match side {
            Side::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
            ),
            Side::Client => (
                params.client_max_window_bits.flatten(),
                params.client_no_context_takeover,
            ),
        };
        let bits = limit.unwrap_or(15).min(cfg.max_window_bits).clamp(9, 15);
        Deflater {
            inner: None,
            level: cfg.level.min(9),
            window_bits: bits,
            reset_each_message: reset || cfg.no_context_takeover,
        }
    }

    /// `(level, window bits)` when each message is compressed on its own
    /// (no context takeover), so its output can be shared with other
    /// connections compressing at the same level and window.
    pub fn shared_params(&self) -> Option<(u32, u8)> {
        self.reset_each_message
            .then_some((self.level, self.window_bits))
    }

    /// Compresses one whole message; the result is the frame payload (sync
    /// flushed, trailing `00 00 ff ff` removed).
    pub fn compress(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let (level, bits) = (self.level, self.window_bits);
        if self.reset_each_message {
            let mut c = pool::take_compress(level, bits).unwrap_or_else(|| {
                Compress::new_with_window_bits(Compression::new(level), false, bits)
            });
            let out = compress_message(&mut c, input);
            c.reset();
            pool::give_compress(level, bits, c);
            return out;
        }
        let c = self.inner.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        compress_message(c, input)
    }
}

fn compress_message(c: &mut Compress, input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let before = c.total_in();
        c.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
            .map_err(|e| Error::InflateFailed(format!("deflate: {e}")))?;
        consumed += (c.total_in() - before) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - 4);
    }
    if out.is_empty() {
        // zlib emits nothing for an empty input right after a sync flush;
        // RFC 7692 §7.2.3.6: an empty message is the single byte 0x00.
        out.push(0x00);
    }
    Ok(out)
}

/// Inflates incoming messages with a cap on the output.
pub struct Inflater {
    inner: Option<Decompress>,
    reset_each_message: bool,
    stream_ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("reset_each_message", &self.reset_each_message)
            .finish()
    }
}

impl Inflater {
    /// An inflater for messages the peer of `side` sends.
    pub fn new(side: Side, params: &DeflateParams) -> Self {
        let peer_resets = match side {
            Side::Server => params.client_no_context_takeover,
            Side::Client => params.server_no_context_takeover,
        };
        Inflater {
            inner: None,
            reset_each_message: peer_resets,
            stream_ended: false,
        }
    }

    /// Inflates a piece of a compressed message onto `out`, failing with
    /// [`Error::MessageTooLarge`] as soon as the output would exceed `limit`
    /// bytes.
    ///
    /// `out`'s capacity never exceeds `limit` (an overflow is detected by
    /// inflating into a few bytes on the stack), and it grows without a
    /// trail of copies (see `growth.rs`): inflating a message costs its
    /// inflated size plus at most about 1 MiB of outgrown buffers.
    pub fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Error> {
        self.inflate_admitting(input, out, limit, &mut |_| Ok(limit))
    }

    /// [`inflate`](Self::inflate), asking `admit` before each growth of
    /// `out`: given what `out` holds, it answers the capacity `out` may
    /// grow to (at most `limit`), or an error that ends inflation — how a
    /// connection reserves inflated bytes from a
    /// [`MemoryBudget`](crate::MemoryBudget) before it writes them.
    pub fn inflate_admitting(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        admit: &mut dyn FnMut(usize) -> Result<usize, Error>,
    ) -> Result<(), Error> {
        if self.stream_ended {
            if input.is_empty() {
                return Ok(());
            }
            return Err(Error::InflateFailed(
                "data after the final deflate block".into(),
            ));
        }
        let d = self.inner.get_or_insert_with(|| {
            pool::take_decompress().unwrap_or_else(|| Decompress::new_with_window_bits(false, 15))
        });
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    // Full at the limit: one more byte of output is too many.
                    return Self::probe_past_limit(d, input, limit, &mut self.stream_ended);
                }
                let room = admit(out.len())?.min(limit);
                growth::reserve_within(out, 1, room);
            }
            let (bi, bo) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|e| Error::InflateFailed(e.to_string()))?;
            let used = (d.total_in() - bi) as usize;
            let produced = d.total_out() - bo;
            input = &input[used..];
            if out.len() > limit {
                // Only when the caller handed in a buffer with more
                // capacity than the limit.
                return Err(Error::MessageTooLarge { limit });
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                if !input.is_empty() {
                    return Err(Error::InflateFailed(
                        "data after the final deflate block".into(),
                    ));
                }
                return Ok(());
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            if used == 0 && produced == 0 && out.len() < out.capacity() {
                return Err(Error::InflateFailed("inflate made no progress".into()));
            }
        }
    }

    /// Inflates the rest of `input` into a scratch buffer once `out` holds
    /// `limit` bytes: any output at all (including output zlib still holds
    /// back from when `out` filled up) exceeds the limit.
    fn probe_past_limit(
        d: &mut Decompress,
        mut input: &[u8],
        limit: usize,
        stream_ended: &mut bool,
    ) -> Result<(), Error> {
        let mut scratch = [0u8; 16];
        loop {
            let (bi, bo) = (d.total_in(), d.total_out());
            let result = d.decompress(input, &mut scratch, FlushDecompress::None);
            // Output past the limit came first, even when the same call then
            // found the input corrupt: fed in smaller pieces, the output would
            // have been seen before the corruption was reached.
            if d.total_out() > bo {
                return Err(Error::MessageTooLarge { limit });
            }
            let status = result.map_err(|e| Error::InflateFailed(e.to_string()))?;
            let used = (d.total_in() - bi) as usize;
            input = &input[used..];
            if status == Status::StreamEnd {
                *stream_ended = true;
                if !input.is_empty() {
                    return Err(Error::InflateFailed(
                        "data after the final deflate block".into(),
                    ));
                }
                return Ok(());
            }
            if input.is_empty() {
                // Everything taken, and nothing came out.
                return Ok(());
            }
            if used == 0 {
                return Err(Error::InflateFailed("inflate made no progress".into()));
            }
        }
    }

    /// Ends a message: feeds the `00 00 ff ff` tail RFC 7692 §7.2.2 removes.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), Error> {
        self.finish_message_admitting(out, limit, &mut |_| Ok(limit))
    }

    /// [`finish_message`](Self::finish_message), asking `admit` before
    /// each growth of `out` as [`inflate_admitting`](Self::inflate_admitting)
    /// does.
    pub fn finish_message_admitting(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        admit: &mut dyn FnMut(usize) -> Result<usize, Error>,
    ) -> Result<(), Error> {
        if !self.stream_ended {
            self.inflate_admitting(&TAIL, out, limit, admit)?;
        }
        if self.reset_each_message || self.stream_ended {
            if let Some(mut d) = self.inner.take() {
                d.reset(false);
                pool::give_decompress(d);
            }
            self.stream_ended = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(params: DeflateParams, msgs: &[&[u8]]) {
        let cfg = DeflateConfig::default();
        let mut d = Deflater::new(Side::Client, &params, &cfg);
        let mut i = Inflater::new(Side::Server, &params);
        for m in msgs {
            let c = d.compress(m).unwrap();
            let mut out = Vec::new();
            // feed in two pieces to exercise streaming
            let mid = c.len() / 2;
            i.inflate(&c[..mid], &mut out, 1 << 20).unwrap();
            i.inflate(&c[mid..], &mut out, 1 << 20).unwrap();
            i.finish_message(&mut out, 1 << 20).unwrap();
            assert_eq!(&out[..], *m);
        }
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        let text = b"Hello, hello, hello, WebSocket compression! ".repeat(50);
        let msgs: Vec<&[u8]> = vec![b"", &text, &text, b"x", &text];
        round_trip(DeflateParams::default(), &msgs);
        round_trip(
            DeflateParams {
                client_no_context_takeover: true,
                ..Default::default()
            },
            &msgs,
        );
        round_trip(
            DeflateParams {
                client_max_window_bits: Some(Some(8)),
                ..Default::default()
            },
            &msgs,
        );
    }

    #[test]
    fn empty_message_after_a_message_with_context_takeover() {
        // zlib produces no output for an empty sync flush right after another.
        round_trip(DeflateParams::default(), &[b"abc", b"", b"", b"def"]);
    }

    #[test]
    fn context_takeover_makes_repeats_smaller() {
        let cfg = DeflateConfig::default();
        let text = b"The quick brown fox jumps over the lazy dog, twice over. ".repeat(4);
        let mut keep = Deflater::new(Side::Server, &DeflateParams::default(), &cfg);
        let first = keep.compress(&text).unwrap().len();
        let second = keep.compress(&text).unwrap().len();
        assert!(second < first / 2, "{second} vs {first}");
        let p = DeflateParams {
            server_no_context_takeover: true,
            ..Default::default()
        };
        let mut reset = Deflater::new(Side::Server, &p, &cfg);
        assert_eq!(
            reset.compress(&text).unwrap(),
            reset.compress(&text).unwrap()
        );
    }

    #[test]
    fn inflation_is_capped_while_inflating() {
        let cfg = DeflateConfig::default();
        let mut d = Deflater::new(Side::Client, &DeflateParams::default(), &cfg);
        let bomb = d.compress(&vec![0u8; 10 << 20]).unwrap();
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let mut i = Inflater::new(Side::Server, &DeflateParams::default());
        let mut out = Vec::new();
        let err = i.inflate(&bomb, &mut out, 100_000).unwrap_err();
        assert_eq!(err, Error::MessageTooLarge { limit: 100_000 });
        assert!(out.capacity() <= 100_000, "capacity {}", out.capacity());
    }

    /// A message of exactly the limit inflates; one byte more is refused;
    /// the output never has a capacity past the limit — whether zlib fills
    /// the buffer in the middle of a match or not, in one piece or many,
    /// below and above the size where the buffer stops doubling.
    #[test]
    fn exactly_the_limit_passes_one_byte_more_fails_and_capacity_stays_within() {
        let cfg = DeflateConfig::default();
        for n in [1, 4096, 5000, 1 << 20, (1 << 20) + 1, 3 << 20] {
            // Runs (long matches) and text, so output stops mid-match too.
            let data: Vec<u8> = (0..n)
                .map(|i| {
                    if (i / 700) % 2 == 0 {
                        0
                    } else {
                        b"abcdefg"[i % 7]
                    }
                })
                .collect();
            let mut d = Deflater::new(Side::Client, &DeflateParams::default(), &cfg);
            let z = d.compress(&data).unwrap();
            for piece in [z.len(), 1000, 7] {
                let run = |limit: usize| {
                    let mut i = Inflater::new(Side::Server, &DeflateParams::default());
                    let mut out = Vec::new();
                    let mut r = Ok(());
                    for c in z.chunks(piece) {
                        r = i.inflate(c, &mut out, limit);
                        assert!(out.capacity() <= limit, "capacity {}", out.capacity());
                        if r.is_err() {
                            break;
                        }
                    }
                    if r.is_ok() {
                        r = i.finish_message(&mut out, limit);
                    }
                    assert!(out.capacity() <= limit, "capacity {}", out.capacity());
                    (r, out)
                };
                let (r, out) = run(n);
                assert_eq!(r, Ok(()), "{n} bytes in pieces of {piece}");
                assert!(out == data, "{n} bytes in pieces of {piece}");
                let (r, _) = run(n - 1);
                assert_eq!(r, Err(Error::MessageTooLarge { limit: n - 1 }), "{n}");
            }
        }
    }

    #[test]
    fn garbage_is_an_inflate_error() {
        let mut i = Inflater::new(Side::Server, &DeflateParams::default());
        let mut out = Vec::new();
        let r = i.inflate(&[0xff; 32], &mut out, 1000);
        assert!(matches!(r, Err(Error::InflateFailed(_))), "{r:?}");
    }
}

/// The pool as the codecs use it: here, since the tests look at the
/// codecs' private state.
#[cfg(test)]
mod pool_tests {
    use super::*;

    fn no_takeover() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Default::default()
        }
    }

    /// What a compressor built for this one message produces.
    fn fresh(input: &[u8], cfg: &DeflateConfig) -> Vec<u8> {
        let mut c =
            Compress::new_with_window_bits(Compression::new(cfg.level), false, cfg.max_window_bits);
        compress_message(&mut c, input).unwrap()
    }

    #[test]
    fn pooled_compressors_give_what_fresh_ones_give_and_hold_nothing_between_messages() {
        let cfg = DeflateConfig::default();
        let p = no_takeover();
        let mut a = Deflater::new(Side::Server, &p, &cfg);
        let mut b = Deflater::new(Side::Server, &p, &cfg);
        let long = b"{\"type\":\"move\",\"x\":12,\"y\":40} ".repeat(300);
        let msgs: [&[u8]; 5] = [b"first message", &long, b"", b"first message", &long];
        for m in msgs {
            // Interleaved: each borrows the state the other just gave back.
            assert_eq!(a.compress(m).unwrap(), fresh(m, &cfg));
            assert!(a.inner.is_none(), "no state kept between messages");
            assert_eq!(b.compress(m).unwrap(), fresh(m, &cfg));
        }
        let (compressors, _) = pool::idle_states();
        assert!((1..=pool::KEEP).contains(&compressors), "{compressors}");
        // Another level or window is never served a mismatched state.
        let small = DeflateConfig {
            max_window_bits: 9,
            level: 6,
            ..DeflateConfig::default()
        };
        let mut c = Deflater::new(Side::Server, &p, &small);
        assert_eq!(c.compress(&long).unwrap(), fresh(&long, &small));
    }

    #[test]
    fn pooled_inflaters_interleaved_mid_message_stay_apart() {
        let cfg = DeflateConfig::default();
        let p = no_takeover();
        let (m1, m2) = (
            b"alpha alpha alpha alpha beta ".repeat(200),
            b"gamma delta gamma delta ".repeat(300),
        );
        let mut d = Deflater::new(Side::Client, &p, &cfg);
        let (z1, z2) = (d.compress(&m1).unwrap(), d.compress(&m2).unwrap());
        for _ in 0..3 {
            let mut x = Inflater::new(Side::Server, &p);
            let mut y = Inflater::new(Side::Server, &p);
            let (mut ox, mut oy) = (Vec::new(), Vec::new());
            let limit = 1 << 20;
            // Both messages in flight at once, each fed in two pieces.
            let (hx, hy) = (z1.len() / 2, z2.len() / 2);
            x.inflate(&z1[..hx], &mut ox, limit).unwrap();
            y.inflate(&z2[..hy], &mut oy, limit).unwrap();
            x.inflate(&z1[hx..], &mut ox, limit).unwrap();
            x.finish_message(&mut ox, limit).unwrap();
            y.inflate(&z2[hy..], &mut oy, limit).unwrap();
            y.finish_message(&mut oy, limit).unwrap();
            assert_eq!(ox, m1);
            assert_eq!(oy, m2);
            assert!(x.inner.is_none() && y.inner.is_none());
        }
        let (_, inflaters) = pool::idle_states();
        assert!((1..=pool::KEEP).contains(&inflaters), "{inflaters}");
    }

    #[test]
    fn a_failed_message_does_not_poison_the_pool() {
        let p = no_takeover();
        let mut bad = Inflater::new(Side::Server, &p);
        let mut out = Vec::new();
        assert!(bad
            .inflate(&[0xff, 0xff, 0xff, 0xff], &mut out, 1 << 20)
            .is_err());
        drop(bad);
        // The next message on this thread inflates correctly.
        let mut d = Deflater::new(Side::Client, &p, &DeflateConfig::default());
        let z = d.compress(b"after the failure").unwrap();
        let mut good = Inflater::new(Side::Server, &p);
        good.inflate(&z, &mut out, 1 << 20).unwrap();
        good.finish_message(&mut out, 1 << 20).unwrap();
        assert_eq!(out, b"after the failure");
    }
}
