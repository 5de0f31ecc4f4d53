//! A connection's outbound queue of hub events, bounded in bytes.
//!
//! The hub pushes shared [`Delivery`]s (reference counts, never copies); the
//! connection's task drains them into its socket. A push past the byte
//! bound empties the queue, marks the mailbox overflowed and wakes the
//! connection, which then disconnects its client ("slow", 3008 on the
//! Centrifugo front): a client that does not read never grows server
//! memory past its mailbox, and never slows the publisher or the others.

use super::Delivery;
use atomic_waker::AtomicWaker;
use duplex_proto::MemoryBudget;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A connection's mailbox.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    waker: AtomicWaker,
    limit: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<Delivery>>,
    bytes: usize,
    overflowed: bool,
    closed: bool,
    /// The connection's alarm rang ([`crate::alarms`]).
    rung: bool,
    /// How many events the connection took last time: the room a queue
    /// that starts again from nothing is given at once, instead of growing
    /// 4, 8, 16, ... for every burst.
    last_take: u16,
}

/// Events taken from a mailbox, oldest first.
pub type Events = VecDeque<Arc<Delivery>>;

/// What [`Mailbox::poll_signals`] found.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    /// The bound was passed: disconnect the client.
    pub overflowed: bool,
    /// The connection's alarm rang since the last look (cleared by it).
    pub rung: bool,
}

/// What the connection finds when it looks at its mailbox.
#[derive(Debug)]
pub enum Next {
    /// Events to send, oldest first.
    Events(Events),
    /// The bound was passed: disconnect the client.
    Overflowed,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The mailbox passed its bound by this push (the first refusal).
    Overflow,
    /// The mailbox is closed or overflowed already.
    Closed,
}

impl Mailbox {
    /// A mailbox holding at most `limit` bytes of queued events.
    pub fn new(limit: usize) -> Self {
        Mailbox {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            limit,
        }
    }

    /// Queues `d`, counting [`Delivery::cost`] bytes against the bound.
    ///
    /// A delivery the server's memory budget had no room for
    /// ([`Delivery::is_charged`]) is queued only within the first
    /// [`MemoryBudget::UNCHARGED`] bytes: a mailbox holding more then
    /// overflows, as when it passes its own bound, while the mailboxes of
    /// clients that keep up still take it.
    pub fn push(&self, d: Arc<Delivery>) -> Result<(), PushError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.closed || s.overflowed {
            return Err(PushError::Closed);
        }
        let cost = d.cost();
        let limit = match d.is_charged() {
            true => self.limit,
            false => self.limit.min(MemoryBudget::UNCHARGED),
        };
        if s.bytes + cost > limit {
            s.overflowed = true;
            s.queue = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.waker.wake();
            return Err(PushError::Overflow);
        }
        s.bytes += cost;
        if s.queue.capacity() == 0 {
            let room = usize::from(s.last_take).max(1);
            s.queue.reserve_exact(room);
        }
        s.queue.push_back(d);
        let first = s.queue.len() == 1;
        drop(s);
        if first {
            self.waker.wake();
        }
        Ok(())
    }

    /// Takes up to `max` queued events, or registers the task to be woken.
    pub fn poll_next(&self, cx: &mut Context<'_>, max: usize) -> Poll<Next> {
        if let Some(n) = self.take(max) {
            return Poll::Ready(n);
        }
        self.waker.register(cx.waker());
        match self.take(max) {
            Some(n) => Poll::Ready(n),
            None => Poll::Pending,
        }
    }

    /// Takes up to `max` queued events (or reports the overflow) without
    /// registering for a wake-up: for a task that registered in
    /// [`poll_signals`](Self::poll_signals) first, in the same poll.
    pub fn take(&self, max: usize) -> Option<Next> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.overflowed {
            return Some(Next::Overflowed);
        }
        let len = s.queue.len();
        if len == 0 {
            return None;
        }
        let out = if len <= max {
            // The whole queue, storage and all: no copy, and an idle
            // connection holds no queue storage.
            s.bytes = 0;
            std::mem::take(&mut s.queue)
        } else {
            let out: Events = s.queue.drain(..max).collect();
            s.bytes -= out.iter().map(|d| d.cost()).sum::<usize>();
            out
        };
        s.last_take = u16::try_from(out.len()).unwrap_or(u16::MAX);
        Some(Next::Events(out))
    }

    /// Registers the task to be woken by the next push that finds the
    /// queue empty, by an overflow or by its alarm, and says whether the
    /// bound was passed and whether the alarm rang (clearing it). A
    /// connection looks at this before anything else each time it is
    /// polled, so a client that does not read is disconnected as soon as
    /// its mailbox overflows, whatever its socket does.
    pub fn poll_signals(&self, cx: &mut Context<'_>) -> Signals {
        self.waker.register(cx.waker());
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Signals {
            overflowed: s.overflowed,
            rung: std::mem::take(&mut s.rung),
        }
    }

    /// Rings the connection's alarm: its task wakes and checks its
    /// deadlines.
    pub fn ring(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).rung = true;
        self.waker.wake();
    }

    /// Refuses further pushes and drops what is queued.
    pub fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.closed = true;
        s.queue = VecDeque::new();
        s.bytes = 0;
    }

    /// Bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Event, Publication};
    use bytes::Bytes;
    use std::task::Waker;

    fn delivery(n: usize) -> Arc<Delivery> {
        Delivery::new(Event::Publication {
            channel: "c".into(),
            publication: Arc::new(Publication::new(Bytes::from(vec![b'x'; n]), None)),
        })
    }

    #[test]
    fn overflow_empties_the_queue_and_is_reported() {
        let m = Mailbox::new(1000);
        let one = delivery(100).cost();
        let fit = 1000 / one;
        for _ in 0..fit {
            m.push(delivery(100)).unwrap();
        }
        assert_eq!(m.queued_bytes(), fit * one);
        assert_eq!(m.push(delivery(100)), Err(PushError::Overflow));
        assert_eq!(m.push(delivery(1)), Err(PushError::Closed));
        assert_eq!(m.queued_bytes(), 0, "nothing is held after the overflow");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            m.poll_next(&mut cx, 10),
            Poll::Ready(Next::Overflowed)
        ));
    }

    #[test]
    fn events_come_out_in_order_and_free_their_bytes() {
        let m = Mailbox::new(1 << 20);
        for n in 1..=5 {
            m.push(delivery(n)).unwrap();
        }
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Next::Events(first)) = m.poll_next(&mut cx, 3) else {
            panic!("events expected")
        };
        let Poll::Ready(Next::Events(rest)) = m.poll_next(&mut cx, 10) else {
            panic!("events expected")
        };
        let sizes: Vec<usize> = first
            .iter()
            .chain(&rest)
            .map(|d| match &d.event {
                Event::Publication { publication, .. } => publication.data.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [1, 2, 3, 4, 5]);
        assert_eq!(m.queued_bytes(), 0);
        assert!(m.poll_next(&mut cx, 10).is_pending());
    }

    fn capacity(m: &Mailbox) -> usize {
        m.state.lock().unwrap().queue.capacity()
    }

    #[test]
    fn a_drained_mailbox_holds_no_storage_and_the_next_burst_gets_room_at_once() {
        let m = Mailbox::new(1 << 20);
        for _ in 0..20 {
            m.push(delivery(10)).unwrap();
        }
        let Some(Next::Events(e)) = m.take(64) else {
            panic!("events expected")
        };
        assert_eq!(e.len(), 20);
        assert_eq!(capacity(&m), 0, "the storage left with the events");
        m.push(delivery(10)).unwrap();
        assert!(capacity(&m) >= 20, "room for a burst like the last one");
        let Some(Next::Events(e)) = m.take(64) else {
            panic!("events expected")
        };
        assert_eq!(e.len(), 1);
        m.push(delivery(10)).unwrap();
        assert_eq!(capacity(&m), 1, "and for one after a take of one");
    }
}
