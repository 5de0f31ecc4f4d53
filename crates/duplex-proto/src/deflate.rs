//! permessage-deflate (RFC 7692): negotiation and the per-message codec.
//!
//! Negotiation parses `Sec-WebSocket-Extensions` (several offers, quoted
//! values, all four parameters) and settles on [`DeflateParams`]. The codec
//! compresses a message with a sync flush and strips the trailing
//! `00 00 ff ff`; it inflates piece by piece, enforcing the message size
//! limit on the *inflated* bytes while inflating, so a small compressed
//! message cannot make us allocate more than the limit.
//!
//! Window bits: zlib cannot deflate with an 8-bit window and maps 8 to 9; its
//! encoder never emits a distance beyond `window - 262` (250 for 9 bits), so
//! its output still decodes with a 256-byte window. Inflation always uses a
//! window at least as large as the peer's, which decodes anything it sends.
//!
//! Without context takeover a codec keeps no zlib state between messages:
//! it borrows a reset one from a small per-thread pool for the message and
//! gives it back after (see [`pool`]). An idle connection then costs no
//! zlib memory at all (with takeover it keeps about 340 KB: the compressor's
//! window and hash tables and the inflater's 32 KiB window), and a message
//! costs a reset instead of building and freeing a state.

use crate::config::DeflateConfig;
use crate::error::Error;
use crate::growth;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// One extension in a `Sec-WebSocket-Extensions` header: a name and its
/// parameters (values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// Extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order; `None` for a parameter without a value.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// Splits on `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Result<Vec<&str>, Error> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        return Err(Error::BadExtension("unterminated quoted string".into()));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn unquote(v: &str) -> Result<String, Error> {
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| Error::BadExtension(format!("bad quoted value {v:?}")))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.extend(chars.next());
            } else {
                out.push(c);
            }
        }
        if !is_token(&out) {
            return Err(Error::BadExtension(format!(
                "quoted value {v:?} is not a token"
            )));
        }
        Ok(out)
    } else if is_token(v) {
        Ok(v.to_string())
    } else {
        Err(Error::BadExtension(format!("bad value {v:?}")))
    }
}

/// Parses the value(s) of `Sec-WebSocket-Extensions` (several header lines
/// may be joined with commas). Empty list elements are skipped.
pub fn parse_extensions(value: &str) -> Result<Vec<ExtensionOffer>, Error> {
    let mut out = Vec::new();
    for ext in split_unquoted(value, ',')? {
        let ext = ext.trim();
        if ext.is_empty() {
            continue;
        }
        let mut parts = split_unquoted(ext, ';')?.into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !is_token(name) {
            return Err(Error::BadExtension(format!("bad extension name {name:?}")));
        }
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                None => (p, None),
            };
            if !is_token(k) {
                return Err(Error::BadExtension(format!("bad parameter name {k:?}")));
            }
            params.push((k.to_ascii_lowercase(), v));
        }
        out.push(ExtensionOffer {
            name: name.to_ascii_lowercase(),
            params,
        });
    }
    Ok(out)
}

/// The parameters of one permessage-deflate offer or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Largest window the server compresses with.
    pub server_max_window_bits: Option<u8>,
    /// In an offer: `Some(None)` means "present without a value" (the client
    /// accepts a limit). In a response: the client's largest window.
    pub client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(v: &Option<String>, name: &str) -> Result<u8, Error> {
    let v = v
        .as_deref()
        .ok_or_else(|| Error::BadExtension(format!("{name} needs a value")))?;
    if v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadExtension(format!("{name}={v}")));
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Ok(n),
        _ => Err(Error::BadExtension(format!("{name}={v} not in 8..=15"))),
    }
}

impl DeflateParams {
    /// Validates the parameters of one `permessage-deflate` element: known
    /// names only, each at most once, window bits 8–15.
    pub fn from_params(params: &[(String, Option<String>)]) -> Result<Self, Error> {
        let mut p = DeflateParams::default();
        let mut seen = [false; 4];
        for (k, v) in params {
            let idx = match k.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                other => return Err(Error::BadExtension(format!("unknown parameter {other}"))),
            };
            if std::mem::replace(&mut seen[idx], true) {
                return Err(Error::BadExtension(format!("duplicate parameter {k}")));
            }
            match idx {
                0 | 1 if v.is_some() => {
                    return Err(Error::BadExtension(format!("{k} takes no value")))
                }
                0 => p.server_no_context_takeover = true,
                1 => p.client_no_context_takeover = true,
                2 => p.server_max_window_bits = Some(window_bits(v, k)?),
                _ => {
                    p.client_max_window_bits = Some(if v.is_some() {
                        Some(window_bits(v, k)?)
                    } else {
                        None
                    })
                }
            }
        }
        Ok(p)
    }

    /// Formats as a header element, e.g. `permessage-deflate; server_no_context_takeover`.
    pub fn to_header(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(n) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={n}"));
        }
        match self.client_max_window_bits {
            Some(Some(n)) => s.push_str(&format!("; client_max_window_bits={n}")),
            Some(None) => s.push_str("; client_max_window_bits"),
            None => {}
        }
        s
    }
}

/// Which side of the connection a codec serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client side.
    Client,
    /// The server side.
    Server,
}

/// Server side: picks the first acceptable permessage-deflate offer and
/// returns the agreed parameters (also the response to send). Invalid offers
/// are declined, not fatal; `None` means compression is off.
pub fn negotiate_server(offers: &[ExtensionOffer], cfg: &DeflateConfig) -> Option<DeflateParams> {
    for offer in offers.iter().filter(|o| o.name == EXTENSION_NAME) {
        let Ok(o) = DeflateParams::from_params(&offer.params) else {
            continue;
        };
        let our_bits = cfg.max_window_bits.clamp(8, 15);
        return Some(DeflateParams {
            server_no_context_takeover: o.server_no_context_takeover || cfg.no_context_takeover,
            client_no_context_takeover: o.client_no_context_takeover
                || cfg.request_peer_no_context_takeover,
            server_max_window_bits: match o.server_max_window_bits {
                Some(n) => Some(n.min(our_bits)),
                None if our_bits < 15 => Some(our_bits),
                None => None,
            },
            client_max_window_bits: match o.client_max_window_bits {
                Some(Some(n)) => Some(Some(n)),
                _ => None,
            },
        });
    }
    None
}

/// Client side: the offer to send.
pub fn client_offer(cfg: &DeflateConfig) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: cfg.request_peer_no_context_takeover,
        client_no_context_takeover: cfg.no_context_takeover,
        server_max_window_bits: None,
        client_max_window_bits: Some(None),
    }
}

/// Client side: validates the server's response against what we offered.
pub fn accept_response(
    value: &str,
    offered: &DeflateParams,
) -> Result<Option<DeflateParams>, Error> {
    let exts = parse_extensions(value)?;
    match exts.as_slice() {
        [] => Ok(None),
        [one] if one.name == EXTENSION_NAME => {
            let p = DeflateParams::from_params(&one.params)?;
            match p.client_max_window_bits {
                Some(None) => {
                    return Err(Error::BadExtension(
                        "client_max_window_bits needs a value".into(),
                    ))
                }
                Some(Some(_)) if offered.client_max_window_bits.is_none() => {
                    return Err(Error::UnofferedExtension("client_max_window_bits".into()))
                }
                _ => {}
            }
            if offered.server_no_context_takeover && !p.server_no_context_takeover {
                return Err(Error::BadExtension(
                    "server_no_context_takeover was requested".into(),
                ));
            }
            if let (Some(asked), Some(got)) =
                (offered.server_max_window_bits, p.server_max_window_bits)
            {
                if got > asked {
                    return Err(Error::BadExtension(
                        "server_max_window_bits above the offer".into(),
                    ));
                }
            }
            Ok(Some(p))
        }
        [one] => Err(Error::UnofferedExtension(one.name.clone())),
        _ => Err(Error::UnofferedExtension("more than one extension".into())),
    }
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
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
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
                growth::reserve_within(out, 1, limit);
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
            let status = d
                .decompress(input, &mut scratch, FlushDecompress::None)
                .map_err(|e| Error::InflateFailed(e.to_string()))?;
            let used = (d.total_in() - bi) as usize;
            if d.total_out() > bo {
                return Err(Error::MessageTooLarge { limit });
            }
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
        if !self.stream_ended {
            self.inflate(&TAIL, out, limit)?;
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

/// Reset zlib states kept per thread for codecs without context takeover.
///
/// A state is taken for one message and given back reset, so what comes out
/// never depends on which connection used it before. The pool is bounded:
/// beyond [`pool::KEEP`] states per kind, returned ones are freed. States
/// are only borrowed within one thread; a connection that moves threads
/// between messages simply takes from the other thread's pool.
pub mod pool {
    use flate2::{Compress, Decompress};
    use std::cell::RefCell;

    /// How many idle states of each kind a thread keeps.
    pub const KEEP: usize = 4;

    #[derive(Default)]
    struct Pool {
        /// (level, window bits, state).
        compress: Vec<(u32, u8, Compress)>,
        decompress: Vec<Decompress>,
    }

    thread_local! {
        static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    }

    /// `f` on this thread's pool; `None` while the thread is being torn
    /// down (the caller then builds or frees a state itself).
    fn with<R>(f: impl FnOnce(&mut Pool) -> R) -> Option<R> {
        POOL.try_with(|p| p.try_borrow_mut().ok().map(|mut p| f(&mut p)))
            .ok()
            .flatten()
    }

    pub(crate) fn take_compress(level: u32, bits: u8) -> Option<Compress> {
        with(|p| {
            let i = p
                .compress
                .iter()
                .position(|(l, b, _)| (*l, *b) == (level, bits))?;
            Some(p.compress.swap_remove(i).2)
        })
        .flatten()
    }

    pub(crate) fn give_compress(level: u32, bits: u8, c: Compress) {
        with(|p| {
            if p.compress.len() < KEEP {
                p.compress.push((level, bits, c));
            }
        });
    }

    pub(crate) fn take_decompress() -> Option<Decompress> {
        with(|p| p.decompress.pop()).flatten()
    }

    pub(crate) fn give_decompress(d: Decompress) {
        with(|p| {
            if p.decompress.len() < KEEP {
                p.decompress.push(d);
            }
        });
    }

    /// Idle states this thread holds: (compressors, inflaters).
    pub fn idle_states() -> (usize, usize) {
        with(|p| (p.compress.len(), p.decompress.len())).unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &str) -> Vec<ExtensionOffer> {
        parse_extensions(s).unwrap()
    }

    #[test]
    fn parses_several_offers_and_quotes() {
        let o = offer(
            "permessage-deflate; client_max_window_bits=\"10\"; server_no_context_takeover, \
             permessage-deflate, x-foo",
        );
        assert_eq!(o.len(), 3);
        assert_eq!(
            o[0].params[0],
            ("client_max_window_bits".into(), Some("10".into()))
        );
        assert_eq!(o[1].params, vec![]);
        assert_eq!(o[2].name, "x-foo");
        assert!(parse_extensions("permessage-deflate; a=\"x").is_err());
        assert!(parse_extensions("bad name").is_err());
    }

    #[test]
    fn server_declines_bad_offer_and_takes_the_next() {
        let cfg = DeflateConfig::default();
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=08x",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert_eq!(negotiate_server(&offer(bad), &cfg), None, "{bad}");
        }
        let p = negotiate_server(
            &offer("permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits"),
            &cfg,
        )
        .unwrap();
        assert_eq!(p, DeflateParams::default());
        assert_eq!(p.to_header(), "permessage-deflate");
    }

    #[test]
    fn server_honours_all_four_parameters() {
        let cfg = DeflateConfig::default();
        let p = negotiate_server(
            &offer(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=12",
            ),
            &cfg,
        )
        .unwrap();
        assert_eq!(
            p.to_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn client_validates_response() {
        let offered = client_offer(&DeflateConfig::default());
        assert_eq!(accept_response("", &offered), Ok(None));
        assert!(accept_response("permessage-deflate", &offered)
            .unwrap()
            .is_some());
        assert!(accept_response("x-unknown", &offered).is_err());
        assert!(accept_response("permessage-deflate, permessage-deflate", &offered).is_err());
        assert!(accept_response("permessage-deflate; client_max_window_bits", &offered).is_err());
        assert!(accept_response("permessage-deflate; foo", &offered).is_err());
        let p = accept_response("permessage-deflate; client_max_window_bits=9", &offered).unwrap();
        assert_eq!(p.unwrap().client_max_window_bits, Some(Some(9)));
    }

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
