//! A connection's outbound queue of hub events, bounded in bytes.
//!
//! The hub pushes shared [`Delivery`]s (reference counts, never copies); the
//! connection's task drains them into its socket. A push past the byte
//! bound empties the queue, marks the mailbox overflowed and wakes the
//! connection, which then disconnects its client ("slow", 3008 on the
//! Centrifugo front): a client that does not read never grows server
//! memory past its mailbox, and never slows the publisher or the others.
//!
//! **Direct writes.** A connection over plain TCP may also lend the hub its
//! socket ([`set_direct`](Mailbox::set_direct)). While it is idle — nothing
//! queued here, nothing of its own to write — it grants the hub the right
//! to write ([`grant`](Mailbox::grant)); the hub then writes a burst of
//! publications straight into the socket in one system call
//! ([`hand_over`](Mailbox::hand_over)), with no queueing, no wake-up
//! and no task switch for that subscriber. The connection takes the grant
//! back, under this mailbox's lock, each time it is polled
//! ([`poll_signals`](Mailbox::poll_signals)), so it never writes while the
//! hub does; any push into the queue takes it back too, so events stay in
//! order. A write the socket takes only in part leaves the rest of its
//! frame as the mailbox's *tail*, which the connection queues before
//! anything else, and the burst's later events in the queue.

use super::{Delivery, FrontKind};
use crate::shared_tcp::DirectSocket;
use atomic_waker::AtomicWaker;
use duplex_proto::MemoryBudget;
use duplex_proto::SharedFraming;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A connection's mailbox.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    waker: AtomicWaker,
}

#[derive(Debug)]
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
    /// The hub may write into `direct`'s socket now.
    granted: bool,
    /// The connection's socket, if it lent it, and how it frames events.
    direct: Option<Arc<DirectSocket>>,
    front: FrontKind,
    /// The bound, in bytes (at most 4 GiB: a `u32` keeps every idle
    /// connection's mailbox in a smaller allocation).
    limit: u32,
    /// A frame the hub wrote only in part: the delivery and the bytes of
    /// its frame that went out.
    tail: Option<(Arc<Delivery>, usize)>,
}

impl State {
    /// Queues `d` (the push's bookkeeping, under the lock). The caller
    /// wakes the connection when this returns `Ok(true)` (the queue was
    /// empty) or an overflow.
    fn push(&mut self, d: Arc<Delivery>) -> Result<bool, PushError> {
        if self.closed || self.overflowed {
            return Err(PushError::Closed);
        }
        // Whatever the hub writes next must come after this.
        self.granted = false;
        let cost = d.cost();
        let limit = match d.is_charged() {
            true => self.limit as usize,
            false => (self.limit as usize).min(MemoryBudget::UNCHARGED),
        };
        if self.bytes + cost > limit {
            self.overflowed = true;
            self.queue = VecDeque::new();
            self.bytes = 0;
            return Err(PushError::Overflow);
        }
        self.bytes += cost;
        if self.queue.capacity() == 0 {
            let room = usize::from(self.last_take).max(1);
            self.queue.reserve_exact(room);
        }
        self.queue.push_back(d);
        Ok(self.queue.len() == 1)
    }
}

/// What became of a burst handed to a mailbox ([`Mailbox::hand_over`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handed {
    /// Events the hub wrote into the socket (whole, or begun: the tail's).
    pub written: usize,
    /// Events queued.
    pub queued: usize,
    /// The mailbox passed its bound with this burst: the client is
    /// disconnected.
    pub overflowed: bool,
    /// A direct write that the socket took only in part (or not at all):
    /// the rest went to the queue.
    pub handed_back: bool,
}

/// Events taken from a mailbox, oldest first.
pub type Events = VecDeque<Arc<Delivery>>;

/// What [`Mailbox::poll_signals`] found.
#[derive(Debug)]
pub struct Signals {
    /// The bound was passed: disconnect the client.
    pub overflowed: bool,
    /// The connection's alarm rang since the last look (cleared by it).
    pub rung: bool,
    /// The rest of a frame the hub wrote in part: the delivery and how many
    /// bytes of its frame went out. Queue the rest before anything else
    /// (`WebSocket::start_send_prepared_rest`).
    pub tail: Option<(Arc<Delivery>, usize)>,
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
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                overflowed: false,
                closed: false,
                rung: false,
                last_take: 0,
                granted: false,
                direct: None,
                front: FrontKind::Centrifuge,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                tail: None,
            }),
            waker: AtomicWaker::new(),
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
        let r = s.push(d);
        drop(s);
        match r {
            Ok(first) => {
                if first {
                    self.waker.wake();
                }
                Ok(())
            }
            Err(e) => {
                if e == PushError::Overflow {
                    self.waker.wake();
                }
                Err(e)
            }
        }
    }

    /// Lends the hub the connection's socket for direct writes of events
    /// framed as `front` frames them (see the module's notes). Writes start
    /// with the first [`grant`](Self::grant). Nothing is lent for a socket
    /// whose WebSocket frames every message for itself.
    pub fn set_direct(&self, socket: Arc<DirectSocket>, front: FrontKind) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.closed && socket.framing().is_some() {
            s.direct = Some(socket);
            s.front = front;
        }
    }

    /// The connection is idle (it has written everything it had, and
    /// waits): the hub may write into its socket until the connection is
    /// polled again or anything is pushed. Refused (`false`) while events
    /// are queued or a frame's tail is pending, and without a socket.
    pub fn grant(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ok = s.direct.is_some()
            && s.queue.is_empty()
            && s.tail.is_none()
            && !s.overflowed
            && !s.closed;
        s.granted = ok;
        ok
    }

    /// Hands over a burst of one channel's events. If the connection
    /// granted direct writes, `may_write` (the burst is of publications
    /// only, which every subscriber frames alike) and `frames` gives the
    /// burst's bytes for the connection's front and framing — the frames
    /// concatenated, the i-th ending at `ends[i]` —, they are written
    /// straight into its socket. Otherwise, or if the socket takes none of
    /// them, the events are queued as by [`push`](Self::push). A write
    /// taken in part leaves the rest of its frame as the tail, queues the
    /// events after it and ends the grant.
    pub fn hand_over<'b>(
        &self,
        events: &[Arc<Delivery>],
        may_write: bool,
        frames: impl FnOnce(FrontKind, SharedFraming) -> Option<(&'b [u8], &'b [usize])>,
    ) -> Handed {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let framing = match &s.direct {
            Some(d) if may_write && s.granted => d.framing(),
            _ => None,
        };
        let Some((bytes, ends)) = framing.and_then(|f| frames(s.front, f)) else {
            return self.queue_locked(s, events);
        };
        let socket = s.direct.as_ref().expect("checked above").tcp();
        // Straight to the kernel, not through tokio's readiness cache
        // (`try_write` reads it first: one more cold cache line per
        // socket). A stale cache is harmless: the connection finds out on
        // its next write, as it would after any other writer.
        let sent = socket2::SockRef::from(socket).send_with_flags(bytes, libc::MSG_NOSIGNAL);
        let written = match sent {
            Ok(n) if n == bytes.len() => {
                return Handed {
                    written: events.len(),
                    ..Handed::default()
                }
            }
            Ok(n) => n,
            // Would block, or the socket failed: the connection writes
            // (and finds the error) itself.
            Err(_) => 0,
        };
        s.granted = false;
        // The first event not written whole, and where its frame starts.
        let i = ends.partition_point(|&end| end <= written);
        let start = if i == 0 { 0 } else { ends[i - 1] };
        let rest = match written > start {
            true => {
                s.tail = Some((events[i].clone(), written - start));
                i + 1
            }
            false => i,
        };
        let woken_by_tail = s.tail.is_some();
        let mut handed = self.queue_locked(s, &events[rest..]);
        if woken_by_tail {
            self.waker.wake();
        }
        handed.written = rest;
        handed.handed_back = true;
        handed
    }

    /// Queues `events` as [`push`](Self::push) does, in order.
    pub fn queue(&self, events: &[Arc<Delivery>]) -> Handed {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.queue_locked(s, events)
    }

    /// Queues `events` under the held lock, waking the connection if the
    /// queue was empty or it overflowed.
    fn queue_locked(
        &self,
        mut s: std::sync::MutexGuard<'_, State>,
        events: &[Arc<Delivery>],
    ) -> Handed {
        let mut h = Handed::default();
        let mut wake = false;
        for d in events {
            match s.push(d.clone()) {
                Ok(first) => {
                    h.queued += 1;
                    wake |= first;
                }
                Err(PushError::Overflow) => {
                    (wake, h.overflowed) = (true, true);
                    break;
                }
                Err(PushError::Closed) => break,
            }
        }
        drop(s);
        if wake {
            self.waker.wake();
        }
        h
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
    ///
    /// It also ends the connection's grant of direct writes: the
    /// connection is busy from here until it grants again, and writes
    /// first the tail of a frame the hub wrote in part, if there is one.
    pub fn poll_signals(&self, cx: &mut Context<'_>) -> Signals {
        self.waker.register(cx.waker());
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.granted = false;
        Signals {
            overflowed: s.overflowed,
            rung: std::mem::take(&mut s.rung),
            tail: s.tail.take(),
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
        s.granted = false;
        s.direct = None;
        s.tail = None;
    }

    /// Bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Event, FrontKind, Publication};
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

    /// A direct write the socket takes only in part: the rest of the frame
    /// is the tail, the later events are queued, the grant ends, and the
    /// bytes written then the tail's rest then the queued frames are
    /// exactly the burst.
    #[tokio::test]
    async fn a_direct_write_taken_in_part_leaves_the_rest_in_order() {
        use duplex_proto::{Message, PreparedMessage};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let (client, accepted) = tokio::join!(sock.connect(l.local_addr().unwrap()), l.accept());
        let mut client = client.unwrap();
        let shared =
            crate::shared_tcp::SharedTcp::new(accepted.unwrap().0, Some(SharedFraming::Plain));
        let server = shared.socket().clone();
        // No send-buffer autotuning: the burst cannot all fit.
        socket2::SockRef::from(server.tcp())
            .set_send_buffer_size(8192)
            .unwrap();
        let m = Mailbox::new(1 << 20);
        assert!(!m.grant(), "no socket lent yet");
        m.set_direct(server.clone(), FrontKind::Centrifuge);
        let events: Vec<_> = (0..60).map(|_| delivery(10_000)).collect();
        let frame = |d: &Arc<Delivery>| {
            d.encoded(FrontKind::Centrifuge, |e| match e {
                Event::Publication { publication, .. } => {
                    PreparedMessage::new(Message::binary(publication.data.clone()))
                }
                _ => unreachable!(),
            })
            .frame()
            .clone()
        };
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        for d in &events {
            bytes.extend_from_slice(&frame(d));
            ends.push(bytes.len());
        }
        assert!(m.grant());
        let h = m.hand_over(&events, true, |front, framing| {
            assert_eq!(front, FrontKind::Centrifuge);
            assert_eq!(framing, SharedFraming::Plain);
            Some((&bytes[..], &ends[..]))
        });
        let (by_hub, queued) = (h.written, h.queued);
        assert!(by_hub >= 1 && by_hub < events.len(), "{by_hub} written");
        assert_eq!(by_hub + queued, events.len());
        assert!(h.handed_back && !h.overflowed);
        assert!(!m.grant(), "busy until the connection has written the rest");
        let h = m.hand_over(&events[..1], true, |_, _| {
            panic!("no direct write while busy")
        });
        assert_eq!(h.queued, 1);

        let mut cx = Context::from_waker(std::task::Waker::noop());
        let signals = m.poll_signals(&mut cx);
        let mut rest = Vec::new();
        if let Some((d, written)) = &signals.tail {
            assert!(Arc::ptr_eq(d, &events[by_hub - 1]), "the last begun");
            rest.extend_from_slice(&frame(d)[*written..]);
        }
        let Some(Next::Events(q)) = m.take(1000) else {
            panic!("the rest is queued")
        };
        assert_eq!(
            q.len(),
            queued + 1,
            "the burst's rest and the event offered since"
        );
        for d in q.iter().take(queued) {
            rest.extend_from_slice(&frame(d));
        }
        let head = bytes.len() - rest.len();
        assert_eq!(&bytes[head..], &rest[..], "nothing lost or repeated");

        // The connection writes the rest while the peer reads it all.
        let writer = tokio::spawn(async move {
            let mut off = 0;
            while off < rest.len() {
                server.tcp().writable().await.unwrap();
                match server.tcp().try_write(&rest[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut got = vec![0u8; bytes.len()];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut got)
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(got == bytes, "the peer read exactly the burst");
    }

    #[test]
    fn a_push_ends_the_grant_and_a_closed_mailbox_lends_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (_c, a) = tokio::join!(
                tokio::net::TcpStream::connect(l.local_addr().unwrap()),
                l.accept()
            );
            let m = Mailbox::new(1 << 20);
            let compressing = crate::shared_tcp::SharedTcp::new(a.unwrap().0, None);
            m.set_direct(compressing.socket().clone(), FrontKind::Centrifuge);
            assert!(!m.grant(), "a socket whose frames nobody else may write");
            let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (_c2, a2) = tokio::join!(
                tokio::net::TcpStream::connect(l2.local_addr().unwrap()),
                l2.accept()
            );
            let plain =
                crate::shared_tcp::SharedTcp::new(a2.unwrap().0, Some(SharedFraming::Plain));
            m.set_direct(plain.socket().clone(), FrontKind::Centrifuge);
            assert!(m.grant());
            m.push(delivery(1)).unwrap();
            let late = [delivery(2)];
            let h = m.hand_over(&late, true, |_, _| panic!("the push ended the grant"));
            assert_eq!(h.queued, 1, "queued behind the push");
            assert!(!m.grant(), "events wait in the queue");
            assert!(matches!(m.take(10), Some(Next::Events(e)) if e.len() == 2));
            assert!(m.grant());
            let h = m.hand_over(&[delivery(1)], false, |_, _| {
                panic!("a burst with other events than publications is queued")
            });
            assert_eq!(h.queued, 1);
            assert!(matches!(m.take(10), Some(Next::Events(e)) if e.len() == 1));
            assert!(m.grant());
            let (bytes, ends) = (b"xx", [2]);
            let h = m.hand_over(&late, true, |_, _| Some((&bytes[..], &ends[..])));
            assert_eq!((h.written, h.queued), (1, 0), "written while granted");
            m.close();
            assert!(!m.grant(), "closed: nothing lent");
        });
    }

    /// Every subscribed connection holds one mailbox: with its reference
    /// counts it must stay in a 128-byte allocation (it was 112 before
    /// direct writes; 160 would cost every idle connection 48 bytes).
    #[test]
    fn a_mailbox_fits_its_allocation() {
        let size = std::mem::size_of::<Mailbox>() + 16;
        assert!(size <= 128, "an Arc<Mailbox> is {size} bytes");
    }
}
