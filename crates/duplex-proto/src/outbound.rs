//! The outbound byte queue: frames waiting to be written.
//!
//! Small frames are appended to one contiguous buffer so that many of them
//! leave in a single write; large payloads that need no masking are queued
//! as their own `Bytes` chunk without copying. Writers drain it with
//! vectored I/O (`slices`) and report progress with `consume`.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Payloads at least this long are queued by reference instead of copied.
const ZERO_COPY_MIN: usize = 4096;
/// The first allocation of a released (or never used) buffer: room for a
/// batch of small frames at once, so a burst after a wait does not grow the
/// buffer step by step (each step a reallocation).
const TAIL_START: usize = 1024;
/// Frames shorter than this are copied into the buffer by `push_frame`;
/// longer ones are queued by reference.
const FRAME_COPY_MAX: usize = 256;
/// The most [`Outbound::reserve`] sets aside ahead of the frames.
pub(crate) const RESERVE_MAX: usize = 64 << 10;

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Outbound {
    /// The buffer to append small data to. Callers must call `added` after.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        if self.tail.capacity() == 0 {
            // Allocated outright (`reserve` on an empty buffer takes a
            // longer path to the same allocation).
            self.tail = BytesMut::with_capacity(TAIL_START);
        }
        &mut self.tail
    }

    /// Makes room for `additional` more bytes of small frames in one
    /// allocation (a batch about to be queued), instead of growing by
    /// doubling as they come. At most [`RESERVE_MAX`] bytes.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let additional = additional.min(RESERVE_MAX);
        if self.tail.capacity() - self.tail.len() < additional {
            self.tail.reserve(additional.max(TAIL_START));
        }
    }

    pub(crate) fn added(&mut self, n: usize) {
        self.len += n;
    }

    /// Queues a payload, by reference if it is large.
    pub(crate) fn push_bytes(&mut self, b: Bytes) {
        self.len += b.len();
        if b.len() < ZERO_COPY_MIN {
            self.tail().extend_from_slice(&b);
        } else {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(b);
        }
    }

    /// Makes room for `count` frames of `frame_len` bytes about to be
    /// queued with [`push_frame`](Self::push_frame), if they will be
    /// copied.
    pub(crate) fn reserve_frames(&mut self, frame_len: usize, count: usize) {
        if frame_len < FRAME_COPY_MAX {
            self.reserve(frame_len.saturating_mul(count));
        }
    }

    /// Queues a whole frame, by reference if it is not tiny.
    pub(crate) fn push_frame(&mut self, b: Bytes) {
        if b.len() < FRAME_COPY_MAX {
            self.len += b.len();
            self.tail().extend_from_slice(&b);
            return;
        }
        self.len += b.len();
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.chunks.push_back(b);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for c in self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]))
        {
            if n == dst.len() {
                break;
            }
            if !c.is_empty() {
                dst[n] = IoSlice::new(c);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn first(&self) -> &[u8] {
        match self.chunks.front() {
            Some(c) => c,
            None => &self.tail,
        }
    }

    /// Removes and returns the first run of queued bytes, without copying.
    pub(crate) fn pop_chunk(&mut self) -> Option<Bytes> {
        let b = match self.chunks.pop_front() {
            Some(c) => c,
            None if !self.tail.is_empty() => self.tail.split().freeze(),
            None => return None,
        };
        self.len -= b.len();
        Some(b)
    }

    /// Frees the buffers if nothing is queued.
    pub(crate) fn release_if_empty(&mut self) {
        if self.len == 0 {
            // Unconditionally: a buffer drained by `advance` to its end
            // reports no capacity yet still holds its whole allocation
            // (a batch of frames that filled it exactly, or a client's
            // masked copy of a large payload).
            self.tail = BytesMut::new();
            if self.chunks.capacity() > 0 {
                self.chunks = VecDeque::new();
            }
        }
    }

    pub(crate) fn consume(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= n => {
                    n -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    c.advance(n);
                    return;
                }
                None if n == self.tail.len() => {
                    // All written: the buffer is reused from its start.
                    self.tail.clear();
                    break;
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
        if self.len == 0 && self.tail.capacity() > 64 << 10 {
            // A burst grew the buffer; give the memory back once drained.
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_released_only_when_drained() {
        let mut q = Outbound::default();
        q.push_bytes(Bytes::from_static(b"small frame"));
        q.push_bytes(Bytes::from(vec![7u8; ZERO_COPY_MIN]));
        q.release_if_empty();
        assert_eq!(q.len(), 11 + ZERO_COPY_MIN, "queued bytes are kept");
        assert_eq!(q.pop_chunk().as_deref(), Some(&b"small frame"[..]));
        q.consume(ZERO_COPY_MIN);
        assert!(q.tail.capacity() > 0 || q.chunks.capacity() > 0);
        q.release_if_empty();
        assert_eq!((q.tail.capacity(), q.chunks.capacity()), (0, 0));
        // And the queue works as before afterwards.
        q.push_bytes(Bytes::from_static(b"again"));
        assert_eq!(q.first(), b"again");
    }

    #[test]
    fn a_reserved_batch_is_queued_without_growing_and_the_hint_is_capped() {
        let mut q = Outbound::default();
        q.reserve_frames(300, 40);
        assert_eq!(
            q.tail.capacity(),
            0,
            "frames queued by reference need no room"
        );
        q.reserve_frames(146, 40);
        let cap = q.tail.capacity();
        assert!(cap >= 40 * 146);
        let frame = Bytes::from(vec![1u8; 146]);
        for _ in 0..40 {
            q.push_frame(frame.clone());
        }
        assert_eq!(q.tail.capacity(), cap, "no reallocation for the batch");
        assert_eq!(q.len(), 40 * 146);
        let mut q = Outbound::default();
        q.reserve(usize::MAX);
        assert!(q.tail.capacity() <= RESERVE_MAX + TAIL_START);
    }
}
