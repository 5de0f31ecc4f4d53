//! UTF-8: an immutable UTF-8 byte string and an incremental validator.
//!
//! Text messages arrive in pieces (partial reads, fragments, inflated
//! chunks). [`Utf8Validator`] checks each piece as it arrives, so invalid
//! input is rejected as soon as the first bad byte is seen ("fail fast",
//! RFC 6455 §8.1), and a code point split across pieces is carried over in
//! at most three bytes of state. Validation itself is `simdutf8`.

use crate::error::Error;
use bytes::Bytes;
use std::fmt;

/// Bytes that are known to be valid UTF-8. Cloning is cheap (reference counted).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes after validating them.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Error> {
        simdutf8::basic::from_utf8(&bytes).map_err(|_| Error::InvalidUtf8)?;
        Ok(Utf8Bytes(bytes))
    }

    /// Wraps bytes the caller has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// A `'static` string, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The constructor validated the bytes; a failure here would be a bug,
        // and is reported as an empty string rather than a panic.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::ops::Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// Validates UTF-8 fed in arbitrary pieces, failing at the first piece that
/// cannot be the prefix of valid UTF-8.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of a code point that straddles the previous piece's end.
    pending: [u8; 4],
    pending_len: u8,
}

fn sequence_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Checks `bytes`; `Ok(n)` means all is valid except an incomplete (but so
/// far valid) code point in the last `n` bytes.
fn check(bytes: &[u8]) -> Result<usize, Error> {
    // Below this size the SIMD validator's setup costs more than std's
    // scalar loop (criterion, 20-byte JSON: 13.7 -> 12.1 ns).
    const SHORT: usize = 64;
    let (valid_up_to, error_len) = if bytes.len() < SHORT {
        match std::str::from_utf8(bytes) {
            Ok(_) => return Ok(0),
            Err(e) => (e.valid_up_to(), e.error_len()),
        }
    } else {
        match simdutf8::compat::from_utf8(bytes) {
            Ok(_) => return Ok(0),
            Err(e) => (e.valid_up_to(), e.error_len()),
        }
    };
    match error_len {
        None => Ok(bytes.len() - valid_up_to),
        Some(_) => Err(Error::InvalidUtf8),
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece. Errors as soon as the input cannot be valid.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Error> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let need = sequence_len(self.pending[0]);
            let take = (need - have).min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            input = &input[take..];
            if check(&self.pending[..now])? != 0 {
                // still incomplete, and input is exhausted
                self.pending_len = now as u8;
                return Ok(());
            }
            self.pending_len = 0;
        }
        let tail = check(input)?;
        if tail > 0 {
            let start = input.len() - tail;
            self.pending[..tail].copy_from_slice(&input[start..]);
            self.pending_len = tail as u8;
        }
        Ok(())
    }

    /// Ends the message: an incomplete trailing code point is an error.
    pub fn finish(&mut self) -> Result<(), Error> {
        let incomplete = self.pending_len != 0;
        self.pending_len = 0;
        if incomplete {
            Err(Error::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_valid(data: &[u8], cuts: &[usize]) -> Result<(), Error> {
        let mut v = Utf8Validator::new();
        let mut prev = 0;
        for &c in cuts {
            let c = c.min(data.len()).max(prev);
            v.feed(&data[prev..c])?;
            prev = c;
        }
        v.feed(&data[prev..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_on_impossible_prefix() {
        let mut v = Utf8Validator::new();
        // 0xF4 0x90 would encode above U+10FFFF: invalid before the sequence ends.
        v.feed(&[0xf4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(Error::InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xc0"), Err(Error::InvalidUtf8));
    }

    #[test]
    fn incomplete_at_end_is_an_error() {
        let mut v = Utf8Validator::new();
        v.feed("κ".as_bytes().get(..1).unwrap()).unwrap();
        assert_eq!(v.finish(), Err(Error::InvalidUtf8));
    }

    #[test]
    fn code_point_split_byte_by_byte() {
        let s = "a€𝄞z".as_bytes();
        let cuts: Vec<usize> = (0..=s.len()).collect();
        split_valid(s, &cuts).unwrap();
    }

    /// Feeds `data` in pieces ending at `cuts` and returns the index of the
    /// piece (0-based; `cuts.len() + 1` for `finish`) that reported an error.
    fn failing_piece(data: &[u8], cuts: &[usize]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        let mut prev = 0;
        for (i, &c) in cuts.iter().chain(std::iter::once(&data.len())).enumerate() {
            let c = c.clamp(prev, data.len());
            if v.feed(&data[prev..c]).is_err() {
                return Some(i);
            }
            prev = c;
        }
        v.finish().is_err().then_some(cuts.len() + 1)
    }

    /// Checks the validator against std for `data` cut at `cuts` (sorted):
    /// the same verdict, and no error before the first invalid byte nor
    /// after the piece holding the byte that proves it.
    fn check_against_std(data: &[u8], cuts: &[usize]) {
        let got = failing_piece(data, cuts);
        match std::str::from_utf8(data) {
            Ok(_) => assert_eq!(got, None, "valid input refused, cuts {cuts:?}"),
            Err(e) => {
                let piece_of = |i: usize| cuts.iter().filter(|&&c| c <= i).count();
                let got = got.unwrap_or_else(|| {
                    panic!("invalid at {} accepted, cuts {cuts:?}", e.valid_up_to())
                });
                // Pieces wholly before the first invalid byte are a valid prefix.
                let earliest = piece_of(e.valid_up_to());
                let latest = match e.error_len() {
                    // The sequence is invalid by its own bytes, or by the
                    // byte after them.
                    Some(n) => piece_of((e.valid_up_to() + n).min(data.len() - 1)),
                    // Truncated at the end: only `finish` can tell.
                    None => cuts.len() + 1,
                };
                assert!(
                    (earliest..=latest).contains(&got),
                    "error in piece {got}, expected {earliest}..={latest}: \
                     invalid at {} (len {:?}) of {}, cuts {cuts:?}",
                    e.valid_up_to(),
                    e.error_len(),
                    data.len()
                );
            }
        }
    }

    /// Byte sequences that are never valid UTF-8, each of a different kind.
    const INVALID: &[&[u8]] = &[
        b"\x80",             // lone continuation byte
        b"\xbf\x80",         // two of them
        b"\xc0\xaf",         // overlong '/'
        b"\xc1\xbf",         // overlong
        b"\xe0\x80\xaf",     // overlong 3-byte
        b"\xed\xa0\x80",     // UTF-16 surrogate
        b"\xf0\x82\x82\xac", // overlong 4-byte
        b"\xf4\x90\x80\x80", // above U+10FFFF
        b"\xf5\x80\x80\x80", // never a lead byte
        b"\xff",             // never in UTF-8
        b"\xe2\x82",         // truncated 3-byte, followed by more text
        b"\xf0\x9f\x98",     // truncated 4-byte, followed by more text
        b"\xc3",             // truncated 2-byte, followed by more text
    ];

    /// Valid text of `len` bytes mixing 1- to 4-byte code points, so that
    /// pieces start and end inside code points.
    fn text(len: usize) -> Vec<u8> {
        let mut s = String::new();
        let alphabet = ['a', 'é', '€', '𝄞', ' ', 'ж', '中', '😀', 'z'];
        let mut i = 0;
        while s.len() < len {
            s.push(alphabet[i % alphabet.len()]);
            i += 1;
        }
        let mut b = s.into_bytes();
        // Cut back to a code point boundary at or below `len`.
        while std::str::from_utf8(&b[..len.min(b.len())]).is_err() {
            b.pop();
        }
        b.truncate(len);
        b
    }

    /// Cut sets: whole, the start and end of the invalid sequence, and
    /// pieces of 63, 64 and 65 bytes (std below 64 bytes, simdutf8 from
    /// 64: a piece on either side of the switch).
    fn cut_sets(len: usize, at: usize, bad: usize) -> Vec<Vec<usize>> {
        let mut sets = vec![
            vec![],
            vec![at],
            vec![at + 1],
            vec![at, at + bad],
            vec![at.saturating_sub(64), at + 1],
            vec![at.saturating_sub(63), at + bad + 64],
        ];
        for step in [63, 64, 65] {
            sets.push((step..len).step_by(step).collect());
        }
        sets
    }

    /// Every invalid sequence at every position of a 3 KiB text, in every
    /// cut set: std and the validator agree, and the validator fails in
    /// the right piece.
    #[test]
    fn invalid_sequences_at_every_position_agree_with_std() {
        let base = text(3 << 10);
        for at in 0..=base.len() {
            for bad in INVALID {
                let mut data = base[..at].to_vec();
                data.extend_from_slice(bad);
                data.extend_from_slice(&base[at..]);
                for cuts in cut_sets(data.len(), at, bad.len()) {
                    check_against_std(&data, &cuts);
                }
            }
        }
    }

    /// Valid texts of every length around the 64-byte switch and of a few
    /// KiB, fed whole, byte by byte near the end, and in 63/64/65-byte
    /// pieces.
    #[test]
    fn valid_text_of_any_length_passes_any_cut() {
        for len in (0..200).chain([1000, 4095, 4096, 4097]) {
            let data = text(len);
            for cuts in cut_sets(data.len(), data.len() / 2, 1) {
                check_against_std(&data, &cuts);
            }
            let tail: Vec<usize> = (data.len().saturating_sub(70)..data.len()).collect();
            check_against_std(&data, &tail);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_split(data in proptest::collection::vec(any::<u8>(), 0..64),
                                          cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort();
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(split_valid(&data, &cuts).is_ok(), expected);
        }

        /// Texts up to 4 KiB with an invalid sequence (or a random byte)
        /// at any position, cut anywhere: pieces long and short enough to
        /// take both validators.
        #[test]
        fn long_inputs_agree_with_std_for_any_split(
            len in 0usize..4096,
            at in any::<proptest::sample::Index>(),
            bad in proptest::option::of(0..INVALID.len()),
            random in any::<u8>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let base = text(len);
            let at = at.index(base.len() + 1);
            let mut data = base[..at].to_vec();
            match bad {
                Some(i) => data.extend_from_slice(INVALID[i]),
                None => data.push(random),
            }
            data.extend_from_slice(&base[at..]);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.sort();
            check_against_std(&data, &cuts);
        }

        #[test]
        fn valid_strings_pass_any_split(s in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..160, 0..6)) {
            let mut cuts = cuts;
            cuts.sort();
            prop_assert!(split_valid(s.as_bytes(), &cuts).is_ok());
        }
    }
}
