//! How the buffer of a message being assembled (fragments, inflated output)
//! grows: never past the message limit, and without a trail of outgrown
//! copies.
//!
//! Doubling a `Vec` from a few KiB to 64 MiB reallocates about fourteen
//! times; each step copies what is there into a new block, and the blocks
//! left behind often stay resident (the allocator keeps freed pages for
//! reuse). A message near a 64 MiB limit then cost about twice the limit in
//! RSS, and asking for one byte past a full buffer to detect an overflow
//! copied the whole message once more. Here:
//!
//! - below [`DIRECT_ABOVE`] (1 MiB) the buffer doubles as usual, so small
//!   messages cost what they always did;
//! - past it, the buffer takes one block of the whole remaining limit. Its
//!   pages are only made resident as bytes are written (both jemalloc and
//!   glibc map blocks this large fresh), so memory follows the bytes that
//!   arrived, there are no further copies, and the outgrown blocks are at
//!   most 1 MiB in all;
//! - the capacity never exceeds the limit (callers detect an overflow
//!   without growing past it);
//! - a completed message gives its unused tail back in place
//!   ([`into_bytes`]) rather than being copied.
//!
//! So a message being assembled costs at most its size plus about
//! [`DIRECT_ABOVE`] of outgrown buffers (plus the allocator's rounding),
//! never more than the limit plus that margin: `docs/defaults.md`.

use bytes::Bytes;

/// Past this capacity, a growing message buffer reserves the rest of its
/// limit at once instead of doubling.
pub(crate) const DIRECT_ABOVE: usize = 1 << 20;

/// Makes room in `buf` for at least `additional` more bytes (at least one),
/// never giving it a capacity above `limit` (nor below what it holds).
/// Costs at most one reallocation, a copy of `buf`.
pub(crate) fn reserve_within(buf: &mut Vec<u8>, additional: usize, limit: usize) {
    let len = buf.len();
    let cap_limit = limit.max(len);
    let needed = len.saturating_add(additional.max(1)).min(cap_limit);
    if needed <= buf.capacity() {
        return;
    }
    if needed > DIRECT_ABOVE && buf.try_reserve_exact(cap_limit - len).is_ok() {
        return;
    }
    // Doubling (and the fallback when the whole limit cannot be reserved).
    let target = needed.max(len.saturating_mul(2)).max(4096).min(cap_limit);
    buf.reserve_exact(target - len);
}

/// A completed message's bytes, without a copy: a buffer with more than
/// [`DIRECT_ABOVE`] unused first gives the tail back (a large block
/// shrinks in place).
pub(crate) fn into_bytes(mut buf: Vec<u8>) -> Bytes {
    if buf.capacity() - buf.len() > DIRECT_ABOVE {
        buf.shrink_to_fit();
    }
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_below_the_threshold_then_takes_the_limit_and_never_passes_it() {
        let limit = 8 << 20;
        let mut v = Vec::new();
        let mut caps = Vec::new();
        while v.len() < limit {
            if v.len() == v.capacity() {
                reserve_within(&mut v, 1, limit);
                caps.push(v.capacity());
            }
            let n = (v.capacity() - v.len()).min(256 << 10);
            v.resize(v.len() + n, 0);
        }
        assert!(caps.iter().all(|&c| c <= limit), "{caps:?}");
        // 4 KiB, 8 KiB, … 1 MiB, then the whole limit: nine allocations.
        assert_eq!(caps.first(), Some(&4096));
        assert_eq!(caps.last(), Some(&limit));
        assert_eq!(caps.len(), 10, "{caps:?}");
        // Full at the limit: no more room is made.
        reserve_within(&mut v, 1, limit);
        assert_eq!(v.capacity(), limit);
    }

    #[test]
    fn small_limits_cap_the_doubling() {
        let mut v = vec![0u8; 3000];
        reserve_within(&mut v, 1, 5000);
        assert_eq!(v.capacity(), 5000);
        let mut v = Vec::new();
        reserve_within(&mut v, 10, 100);
        assert_eq!(v.capacity(), 100);
    }

    #[test]
    fn a_large_first_piece_reserves_the_limit() {
        let mut v = Vec::new();
        reserve_within(&mut v, 3 << 20, 8 << 20);
        assert_eq!(v.capacity(), 8 << 20);
    }

    #[test]
    fn completed_messages_keep_their_storage() {
        let mut v = Vec::with_capacity(8 << 20);
        v.resize(2 << 20, 7);
        let p = v.as_ptr();
        let b = into_bytes(v);
        assert_eq!(b.len(), 2 << 20);
        // Shrunk in place (glibc's realloc of a block this large does not
        // move it, nor does jemalloc's).
        assert_eq!(b.as_ptr(), p);
        let mut v = Vec::with_capacity(100);
        v.push(1);
        let p = v.as_ptr();
        assert_eq!(into_bytes(v).as_ptr(), p);
    }
}
