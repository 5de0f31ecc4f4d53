//! A memory budget shared by many connections.
//!
//! Each connection is bounded on its own (`max_message_size`,
//! `write_buffer_size`), but a server with thousands of connections is not
//! bounded by that: 2,000 peers each sending most of a 48 MiB frame and
//! then pausing hold 64 GiB between them. A [`MemoryBudget`] shared by
//! every connection of a server (through [`Config::memory_budget`]) bounds
//! the total of what they hold in flight:
//!
//! - the bytes of a frame or message being received (the driver's read
//!   buffer, the reassembled fragments and the inflated output);
//! - the bytes of messages the application queued to send and the socket
//!   has not taken yet (frames shared with other connections, like a
//!   [`PreparedMessage`](crate::PreparedMessage) broadcast, are not
//!   counted per receiver).
//!
//! Bytes are reserved **before** they are read, inflated or queued, and
//! given back when the message is delivered to the application, written to
//! the socket or dropped. A connection whose reservation is refused fails
//! with [`Error::MemoryBudget`](crate::Error::MemoryBudget): close 1009 if
//! it was in the middle of receiving a message, 1013 (try again later)
//! otherwise. Connections that stay within their share never are refused.
//!
//! The first [`MemoryBudget::UNCHARGED`] bytes a connection holds are not
//! counted, so that ordinary traffic of small messages never touches the
//! shared counter; the memory outside the budget is therefore at most that
//! much per connection (twice, in and out), which the connection limit
//! bounds. `docs/defaults.md` has the figures.
//!
//! [`Config::memory_budget`]: crate::Config::memory_budget

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A server-wide memory budget, shared by its connections (see the module
/// documentation).
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refusals: AtomicU64,
}

impl MemoryBudget {
    /// What a connection may hold, in each direction, before it draws on
    /// the budget: one socket read's worth of small messages.
    pub const UNCHARGED: usize = 16 << 10;

    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// How many reservations were refused.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Reserves `n` bytes if that keeps the total within the limit.
    pub fn try_reserve(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = match cur.checked_add(n) {
                Some(next) if next <= self.limit => next,
                _ => {
                    self.refusals.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Gives back `n` bytes reserved earlier.
    pub fn release(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        debug_assert!(before >= n, "released {n} of {before} reserved bytes");
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .field("refusals", &self.refusals())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reservations_stay_within_the_limit_and_come_back() {
        let b = MemoryBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(b.try_reserve(40));
        assert!(!b.try_reserve(1), "full");
        assert_eq!((b.used(), b.refusals()), (100, 1));
        b.release(40);
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        b.release(100);
        assert_eq!((b.used(), b.peak(), b.refusals()), (0, 100, 2));
        assert!(!b.try_reserve(usize::MAX), "no overflow past the limit");
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let b = Arc::new(MemoryBudget::new(1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut held = 0;
                    for i in 0..20_000 {
                        if i % 3 == 2 && held > 0 {
                            b.release(held);
                            held = 0;
                        } else if b.try_reserve(7) {
                            held += 7;
                        }
                        assert!(b.used() <= 1000);
                    }
                    b.release(held);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0);
        assert!(b.peak() <= 1000);
    }
}
