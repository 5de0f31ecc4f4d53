//! One channel's history stream: publications with positions, bounded by
//! count, bytes and age. Pure: time is passed in (milliseconds).

use super::{Publication, StreamPosition};
use std::collections::VecDeque;
use std::sync::Arc;

/// How a channel's history is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most publications kept (0: no history).
    pub size: usize,
    /// Most payload bytes kept.
    pub bytes: usize,
    /// A publication older than this is dropped (ms; 0: kept until evicted
    /// by size or bytes).
    pub ttl_ms: u64,
}

/// A channel's stream: the publications still held, the offset of the
/// latest one (`top`) and the epoch they belong to.
#[derive(Debug)]
pub struct Stream {
    epoch: Arc<str>,
    top: u64,
    items: VecDeque<Arc<Publication>>,
    bytes: usize,
    /// When the stream last changed (for dropping idle streams).
    pub touched_ms: u64,
    /// Bytes of the server's memory budget this stream holds (kept by its
    /// broker, which reserves before appending and gives back what
    /// [`held`](Self::held) no longer needs).
    pub charged: usize,
}

/// What one publication held in history costs beyond its payload: its
/// shared allocation and its place in the queue.
pub const ITEM_OVERHEAD: usize = 96;

impl Stream {
    /// An empty stream in a fresh epoch.
    pub fn new(epoch: Arc<str>, now_ms: u64) -> Self {
        Stream {
            epoch,
            top: 0,
            items: VecDeque::new(),
            bytes: 0,
            touched_ms: now_ms,
            charged: 0,
        }
    }

    /// The position of the latest publication (offset 0: none yet).
    pub fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }

    /// Publications held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the publications held count in a memory budget: payloads plus
    /// [`ITEM_OVERHEAD`] each.
    pub fn held(&self) -> usize {
        self.bytes + self.items.len() * ITEM_OVERHEAD
    }

    /// What appending `p` may add to [`held`](Self::held) at most.
    pub fn cost_of(p: &Publication) -> usize {
        p.data.len() + ITEM_OVERHEAD
    }

    /// Gives `p` the next offset, keeps it, and evicts what falls outside
    /// `limits`. Returns the publication as stored.
    pub fn append(
        &mut self,
        mut p: Publication,
        now_ms: u64,
        limits: &HistoryLimits,
    ) -> Arc<Publication> {
        self.top += 1;
        p.offset = self.top;
        p.time_ms = now_ms;
        let p = Arc::new(p);
        self.touched_ms = now_ms;
        if limits.size > 0 {
            self.bytes += p.data.len();
            self.items.push_back(p.clone());
        }
        while self.items.len() > limits.size
            || (self.bytes > limits.bytes && !self.items.is_empty())
        {
            self.pop_front();
        }
        self.expire(now_ms, limits.ttl_ms);
        p
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.items.pop_front() {
            self.bytes -= old.data.len();
        }
    }

    /// Drops publications older than `ttl_ms`.
    pub fn expire(&mut self, now_ms: u64, ttl_ms: u64) {
        if ttl_ms == 0 {
            return;
        }
        while self
            .items
            .front()
            .is_some_and(|p| now_ms.saturating_sub(p.time_ms) >= ttl_ms)
        {
            self.pop_front();
        }
    }

    /// Drops every publication; the offset goes on and the epoch stays
    /// (clients that missed the dropped ones are told they cannot recover).
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// Publications after offset `since` (all held when `None`), oldest
    /// first; with `reverse`, those before `since` (all when `None`),
    /// newest first. At most `limit`.
    pub fn read(&self, since: Option<u64>, limit: usize, reverse: bool) -> Vec<Arc<Publication>> {
        if reverse {
            return self
                .items
                .iter()
                .rev()
                .filter(|p| since.map_or(true, |s| p.offset < s))
                .take(limit)
                .cloned()
                .collect();
        }
        let start = match since {
            None => 0,
            // Offsets are consecutive within the held run.
            Some(a) => match self.items.front() {
                None => return Vec::new(),
                Some(first) if a < first.offset => 0,
                Some(first) => ((a - first.offset + 1) as usize).min(self.items.len()),
            },
        };
        self.items.range(start..).take(limit).cloned().collect()
    }

    /// The offset of the oldest publication held.
    pub fn first_offset(&self) -> Option<u64> {
        self.items.front().map(|p| p.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn p(s: &str) -> Publication {
        Publication::new(Bytes::copy_from_slice(s.as_bytes()), None)
    }
    const L: HistoryLimits = HistoryLimits {
        size: 3,
        bytes: 1000,
        ttl_ms: 10_000,
    };

    #[test]
    fn offsets_are_consecutive_and_size_bounds_the_stream() {
        let mut s = Stream::new("e1".into(), 0);
        for i in 1..=5 {
            assert_eq!(s.append(p("x"), i, &L).offset, i);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.first_offset(), Some(3));
        assert_eq!(s.position().offset, 5);
        let all: Vec<u64> = s.read(None, 100, false).iter().map(|p| p.offset).collect();
        assert_eq!(all, [3, 4, 5]);
        let rev: Vec<u64> = s.read(None, 2, true).iter().map(|p| p.offset).collect();
        assert_eq!(rev, [5, 4]);
        let since: Vec<u64> = s
            .read(Some(3), 100, false)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(since, [4, 5]);
        let before: Vec<u64> = s
            .read(Some(5), 100, true)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(before, [4, 3]);
        assert!(s.read(Some(5), 100, false).is_empty());
        // Older than the oldest held: everything held (the caller sees the gap).
        let gap: Vec<u64> = s
            .read(Some(1), 100, false)
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(gap, [3, 4, 5]);
    }

    #[test]
    fn bytes_bound_the_stream() {
        let lim = HistoryLimits {
            size: 100,
            bytes: 10,
            ttl_ms: 0,
        };
        let mut s = Stream::new("e".into(), 0);
        s.append(p("12345"), 0, &lim);
        s.append(p("12345"), 0, &lim);
        assert_eq!(s.len(), 2);
        s.append(p("1"), 0, &lim);
        assert_eq!(s.len(), 2);
        assert_eq!(s.bytes(), 6);
        // One publication larger than the whole budget is not held at all.
        s.append(p("this is longer than ten"), 0, &lim);
        assert_eq!(s.len(), 0);
        assert_eq!(s.position().offset, 4);
    }

    #[test]
    fn ttl_drops_old_publications_by_virtual_time() {
        let mut s = Stream::new("e".into(), 0);
        s.append(p("a"), 1_000, &L);
        s.append(p("b"), 5_000, &L);
        s.expire(10_999, L.ttl_ms);
        assert_eq!(s.len(), 2);
        s.expire(11_000, L.ttl_ms);
        assert_eq!(s.first_offset(), Some(2));
        s.expire(15_000, L.ttl_ms);
        assert!(s.is_empty());
        assert_eq!(
            s.position().offset,
            2,
            "the offset survives its publications"
        );
    }

    #[test]
    fn no_history_still_counts_offsets() {
        let lim = HistoryLimits {
            size: 0,
            bytes: 0,
            ttl_ms: 0,
        };
        let mut s = Stream::new("e".into(), 0);
        assert_eq!(s.append(p("a"), 0, &lim).offset, 1);
        assert!(s.is_empty());
    }
}
