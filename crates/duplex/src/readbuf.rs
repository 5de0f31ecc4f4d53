//! The read side's buffer: grows with what arrives, costs nothing while the
//! connection waits.
//!
//! A connection with no partial frame pending holds no buffer at all: it
//! waits for data by reading into a per-thread scratch buffer (borrowed only
//! during the synchronous `poll_read`, never across an `.await`), then
//! copies exactly what arrived into a buffer of its own, so the frames in it
//! can be handed out as zero-copy slices. A busy connection whose next
//! bytes are already waiting keeps reading straight into its buffer, and
//! one whose last frame was a few KiB to 68 KiB, woken for input, reads
//! straight into a buffer of that frame's length and a little room
//! ([`ReadState`]): the thread's last such buffer again once the message
//! read into it is dropped (an echo written out), so that a thread
//! receiving such messages on many connections reads them all into the
//! same memory. An idle
//! connection therefore costs no read buffer, however large its last burst
//! was. While a frame is incomplete, reads go straight into the
//! connection's buffer, which grows with the bytes that have arrived (never
//! with a length the peer declared).

use bytes::{Bytes, BytesMut};
use duplex_proto::{Connection, MemoryBudget};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Size of the per-thread scratch buffer: the most one read takes while the
/// connection holds no buffer.
const SCRATCH: usize = 64 << 10;
/// Smallest reservation while a frame is incomplete.
const READ_MIN: usize = 8 << 10;
/// First growth step for a partial frame, and the least room the first read
/// of a frame gets: a 64 KiB message (65,550 bytes with its header) whose
/// first 16 KiB came through the scratch arrives in two reads, not three.
const READ_KEEP: usize = 128 << 10;
/// A partial frame grows the buffer by at most this many times what has
/// arrived (and never past what the frame still needs): a 16 MiB message
/// takes 3 reallocations (each a copy) instead of 8 with doubling, while a
/// peer that declares a huge frame and sends little still gets a buffer
/// proportional to what it sent.
const GROWTH: usize = 4;

/// Room left past the end of a frame being read: the read that completes
/// the frame then takes less than the buffer could, which tells the runtime
/// the socket is drained (no read that finds nothing follows), and a next
/// frame's header that already arrived comes in the same read. Frames of
/// [`LARGE_MIN`] or more get none (see [`slack`]).
const READ_SLACK: usize = 4 << 10;
/// Frames at least this large may take a warm buffer.
const LARGE_MIN: usize = 1 << 20;
/// The largest buffer kept warm; larger ones are freed.
const LARGE_KEEP: usize = 32 << 20;
/// Frames longer than this, up to [`HINT_MAX`], are remembered
/// ([`ReadState`]'s hint): the next wake-up for input reads straight into
/// a buffer of the same size, instead of copying out of the scratch.
const HINT_MIN: usize = READ_MIN / 2;
/// The longest frame remembered (a 64 KiB message is 65,550 bytes with its
/// header): the hint is its length past [`HINT_MIN`] in 16 bits. Longer
/// frames come in several reads, whose first copy out of the scratch is
/// small beside them, and a buffer allocated on a hint stays small when
/// the hint is wrong.
const HINT_MAX: usize = HINT_MIN + u16::MAX as usize;
/// What the process keeps warm in all: room for four connections receiving
/// 16 MiB messages at once (each buffer a little over 16 MiB: the frame's
/// header and the allocator's rounding) to reuse one buffer each.
const WARM_TOTAL: usize = 80 << 20;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
    /// A hinted read's buffer, given back whole once nothing shares it
    /// ([`keep_hot`]), for the next hinted read on this thread.
    static HOT: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// Page size assumed by [`DATA_OFFSET`].
const PAGE: usize = 4 << 10;
/// Where in a page a hinted read's data starts. The kernel copies a
/// payload written from the buffer into the socket's page fragments, and
/// on AMD Zen its `rep movsb` runs about 16 times slower when the
/// destination is 1 to 15 bytes past the source modulo 4 KiB (and about
/// 1.5 times slower up to 63). The fragments' offsets are mostly small
/// (a page is filled from 0, a message's header goes first), as was a
/// payload 14 bytes into a buffer that starts on a page: a reused buffer
/// there would hit that case message after message. Half a page away, it
/// takes a fragment offset near 2 KiB.
const DATA_OFFSET: usize = PAGE / 2;

/// Gives `buf`'s storage to this thread's hot slot if nothing else shares
/// it and it is the size of a hinted read: the next hinted read on this
/// thread, on any connection, takes the same memory, likely still in the
/// cache, instead of allocating. `buf` is left empty.
fn keep_hot(buf: &mut BytesMut) {
    if let Some(whole) = reclaim_whole(std::mem::take(buf)) {
        if whole.capacity() <= HOT_MAX {
            HOT.with(|h| h.set(Some(whole)));
        }
    }
}

/// The largest storage [`keep_hot`] keeps: a hinted read's for the longest
/// frame remembered.
const HOT_MAX: usize = 2 * (HINT_MAX + READ_SLACK) + PAGE;

/// A buffer with room for at least `want` bytes whose data starts at
/// [`DATA_OFFSET`] in a page: this thread's hot one if its storage holds
/// `want` bytes and a page and at most twice `want` and a page, else a new
/// one. The bytes before the start (under a page) stay unused.
fn take_hot(want: usize) -> BytesMut {
    let mut b = HOT.with(|h| match h.take() {
        Some(b) if (want + PAGE..=2 * want + PAGE).contains(&b.capacity()) => b,
        other => {
            h.set(other);
            BytesMut::with_capacity(want + PAGE)
        }
    });
    let pad = DATA_OFFSET.wrapping_sub(b.as_ptr() as usize) & (PAGE - 1);
    // The bytes before the start are split off and dropped: nothing is
    // written to them, and the storage is still taken back whole.
    b.split_off(pad)
}

/// The buffers of recent large frames (each [`LARGE_MIN`]..=[`LARGE_KEEP`],
/// [`WARM_TOTAL`] in all), given back by the connections that received
/// them when they wait for input again (or by the write side, once the
/// message that still shared one is written: [`recycle`]), and lent to the
/// next connections that receive frames they can hold. Memory already
/// faulted in and grown: a run of large messages costs no reallocation
/// copies and no page faults — on every connection receiving them, not only
/// one — while an idle connection still holds no buffer. One pool for the process: a lock per
/// frame of at least 1 MiB costs nothing beside the frame, and the bound
/// does not grow with the number of runtime threads.
static WARM: Mutex<WarmPool> = Mutex::new(WarmPool::new(WARM_TOTAL));

/// Warm buffers, bounded in total capacity.
struct WarmPool {
    bufs: Vec<BytesMut>,
    total: usize,
    limit: usize,
}

impl WarmPool {
    const fn new(limit: usize) -> Self {
        WarmPool {
            bufs: Vec::new(),
            total: 0,
            limit,
        }
    }

    /// Keeps `b` (unshared, empty, within the size bounds), making room by
    /// dropping smaller buffers; drops `b` if only larger ones are kept.
    fn keep(&mut self, b: BytesMut) {
        let cap = b.capacity();
        while self.total + cap > self.limit {
            let smallest = self
                .bufs
                .iter()
                .enumerate()
                .min_by_key(|(_, x)| x.capacity())
                .map(|(i, x)| (i, x.capacity()));
            match smallest {
                Some((i, c)) if c < cap => {
                    self.bufs.swap_remove(i);
                    self.total -= c;
                }
                _ => return,
            }
        }
        self.total += cap;
        self.bufs.push(b);
    }

    /// The smallest kept buffer with room for `need` bytes.
    fn take(&mut self, need: u64) -> Option<BytesMut> {
        let i = self
            .bufs
            .iter()
            .enumerate()
            .filter(|(_, x)| x.capacity() as u64 >= need)
            .min_by_key(|(_, x)| x.capacity())
            .map(|(i, _)| i)?;
        let b = self.bufs.swap_remove(i);
        self.total -= b.capacity();
        Some(b)
    }
}

fn warm_pool() -> std::sync::MutexGuard<'static, WarmPool> {
    // The pool holds plain buffers: a panic elsewhere leaves it consistent.
    WARM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Before a wait: if `buf` held a large frame and no message shares its
/// storage any more, the whole storage goes to the warm pool; `buf` is left
/// empty either way.
fn keep_warm(buf: &mut BytesMut) {
    if let Some(whole) = reclaim_whole(std::mem::take(buf)) {
        if (LARGE_MIN..=LARGE_KEEP).contains(&whole.capacity()) {
            warm_pool().keep(whole);
        }
    }
}

/// All of `buf`'s storage, emptied, if nothing else shares it. `buf` is
/// often the tail left after frames were split off the front: its own
/// capacity is only what is past them, so the storage is taken back whole
/// (a tail lent as a buffer would be too small for the frame it held).
fn reclaim_whole(buf: BytesMut) -> Option<BytesMut> {
    let mut whole = buf.freeze().try_into_mut().ok()?;
    whole.clear();
    // Asks for more than the tail holds: succeeds by moving the start back
    // to the beginning of the storage (nothing to copy); fails only if the
    // buffer starts there already, which is then whole.
    let _ = whole.try_reclaim(whole.capacity() + 1);
    Some(whole)
}

/// Makes room for `want` more bytes in `buf`. A large buffer grows to
/// exactly that (by a new allocation and one copy, as a reallocation
/// would), not to the double a `Vec` grows to, so a 16 MiB frame's buffer
/// is 16 MiB, not 32 (the warm pool then holds twice as many).
fn grow(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() >= want {
        return;
    }
    if buf.len() < LARGE_MIN || want >= buf.capacity() {
        buf.reserve(want);
        return;
    }
    let mut exact = BytesMut::with_capacity(buf.len() + want);
    exact.extend_from_slice(buf);
    *buf = exact;
}

/// Marks `n` bytes of `conn`'s outbound queue written. A large payload
/// written whole goes to [`recycle`] instead of being dropped.
pub(crate) fn consume_written(conn: &mut Connection, mut n: usize) {
    while n >= LARGE_MIN {
        let first = conn.outbound().len();
        if first == 0 || first > n {
            break;
        }
        if first >= LARGE_MIN {
            if let Some(b) = conn.take_outbound_chunk() {
                n -= b.len();
                recycle(b);
                continue;
            }
        }
        conn.consume_outbound(first);
        n -= first;
    }
    if n > 0 {
        conn.consume_outbound(n);
    }
}

/// A large payload the write side is done with: if nothing else shares its
/// storage, the storage goes to the warm pool. An echo of a large message
/// gives its read buffer back this way: the buffer was still being written
/// out when its connection began to wait for the next frame, too early for
/// [`keep_warm`], and would otherwise be freed (its pages with it) just
/// before the next large frame needs one.
fn recycle(b: Bytes) {
    if b.len() < LARGE_MIN {
        return;
    }
    if let Ok(mut m) = b.try_into_mut() {
        m.clear();
        keep_warm(&mut m);
    }
}

/// A warm buffer with room for `need` bytes. Only memory that exists
/// already: a declared length picks one, never allocates it.
fn take_warm(need: u64) -> Option<BytesMut> {
    if need < LARGE_MIN as u64 {
        return None;
    }
    warm_pool().take(need)
}

/// Reads once from `stream` into `buf`; `pending_frame` is how many bytes
/// the frame being received still needs (a growth hint, already bounded by
/// the frame size limit). Returns the bytes read (0 at EOF).
#[cfg(test)]
pub(crate) async fn read_into<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    pending_frame: usize,
) -> io::Result<usize> {
    let config = duplex_proto::Config::default();
    let mut conn = Connection::new(duplex_proto::Role::Server, config, None);
    let mut st = ReadState::default();
    st.set(LARGE, true);
    std::future::poll_fn(|cx| poll_read_into(stream, buf, &mut st, &mut conn, pending_frame, cx))
        .await
}

/// Refused by the memory budget: `conn` has failed with
/// [`duplex_proto::Error::MemoryBudget`] and queued its close frame.
pub(crate) fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, "memory budget spent")
}

/// What a connection's reads keep between them, beside the buffer. Three
/// bytes, packed: every idle connection's task holds one, and its size
/// class has no room for more (`an_idle_connection_task_fits_its_memory_budget`).
#[derive(Debug, Default, Clone, Copy)]
#[repr(C, packed)]
pub(crate) struct ReadState {
    /// The length past [`HINT_MIN`] of the frame the last read into an
    /// empty buffer started, if it was longer than [`HINT_MIN`] and at
    /// most [`HINT_MAX`]; else 0.
    hint: u16,
    /// [`LARGE`], [`WAITED`], [`MORE_INPUT`].
    flags: u8,
}

/// The buffer may share storage of [`LARGE_MIN`] or more (set after a read
/// into such storage, cleared when the buffer is given up): only such
/// storage is worth taking back for the warm pool, and finding out costs
/// more than a small message's whole receive path.
const LARGE: u8 = 1;
/// The last read found nothing: the next one follows a wake-up for input
/// (or a timer), and data has most likely arrived.
const WAITED: u8 = 2;
/// The buffer may hold complete frames: the last parse stopped at a
/// message and handed it out (kept for the `WebSocket`).
const MORE_INPUT: u8 = 4;
/// The buffer's storage came from a hinted read: worth giving back to the
/// thread's hot slot when the buffer is given up ([`keep_hot`]).
const HINTED: u8 = 8;

/// Reads once from `stream` into `buf` (see `read_into`): holds nothing between polls, so a
/// waiting connection's state is its buffer (empty when idle) and `st`.
///
/// After a wait for input with an empty buffer, when the frames that last
/// arrived were [`HINT_MIN`]..=[`HINT_MAX`] bytes, another such frame has
/// most likely arrived: it is read straight into a buffer of that size
/// and [`READ_SLACK`] (reserved from the memory budget first, and only if
/// the budget has room), which saves copying it out of the scratch, and
/// takes a frame of the same size whole in one read that tells the runtime
/// the socket is drained. A wrong guess costs an allocation, freed again
/// if nothing had arrived.
///
/// With a memory budget (`conn`'s config) the read goes through
/// [`poll_read_budgeted`].
pub(crate) fn poll_read_into<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    st: &mut ReadState,
    conn: &mut Connection,
    pending_frame: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let read = if conn.config().memory_budget.is_some() {
        poll_read_budgeted(stream, buf, st, conn, pending_frame, cx)
    } else {
        poll_read_plain(stream, buf, st, conn, pending_frame, cx)
    };
    if let Poll::Ready(Ok(_)) = read {
        // Storage enters `buf` only just before a read into it, so the
        // room from its start is then the whole storage.
        if buf.capacity() >= LARGE_MIN {
            st.set(LARGE, true);
        }
    }
    st.set(WAITED, read.is_pending());
    read
}

impl ReadState {
    #[inline]
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    #[inline]
    fn set(&mut self, flag: u8, on: bool) {
        self.flags = if on {
            self.flags | flag
        } else {
            self.flags & !flag
        };
    }

    /// Whether the buffer may hold complete frames still to hand out.
    #[inline]
    pub(crate) fn more_input(&self) -> bool {
        self.has(MORE_INPUT)
    }

    #[inline]
    pub(crate) fn set_more_input(&mut self, on: bool) {
        self.set(MORE_INPUT, on);
    }

    /// The frame length the hint stands for (0 for none).
    #[inline]
    fn hint(&self) -> usize {
        match self.hint {
            0 => 0,
            h => HINT_MIN + h as usize,
        }
    }

    /// Whether to read straight into a buffer of the hint's size: after a
    /// wait, with an empty buffer, before a read that starts a frame.
    #[inline]
    fn expects(&self, pending_frame: usize) -> bool {
        // The hint first: 0 on connections of small messages.
        self.hint != 0 && self.has(WAITED) && pending_frame == 0
    }

    /// Remembers the frame (its header's [`frame_len`]) that a read into
    /// an empty buffer started, if it is worth reading straight next time.
    #[inline]
    fn started(&mut self, frame: Option<u64>, pending_frame: usize) {
        if pending_frame == 0 {
            self.hint = match frame {
                Some(f) if f > HINT_MIN as u64 && f <= HINT_MAX as u64 => {
                    (f - HINT_MIN as u64) as u16
                }
                _ => 0,
            };
        }
    }

    /// Forgets whether the buffer shares large storage (it is given up):
    /// says whether it might have.
    #[inline]
    fn take_large(&mut self) -> bool {
        let large = self.has(LARGE);
        self.set(LARGE, false);
        large
    }
}

/// One read straight into `buf`, empty, which still has room for at
/// least [`READ_MIN`]` / 2` bytes (a busy connection's last read left it):
/// `None` if nothing had arrived, so that the caller waits through the
/// scratch instead.
#[inline]
fn poll_read_leftover<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    st: &mut ReadState,
    pending_frame: usize,
    cx: &mut Context<'_>,
) -> Option<Poll<io::Result<usize>>> {
    match poll_read_buf(stream, buf, cx) {
        Poll::Ready(r) => {
            st.started(frame_len(buf), pending_frame);
            Some(Poll::Ready(r))
        }
        Poll::Pending => None,
    }
}

/// The read after a wait that [`ReadState::expects`] a frame of the
/// hint's size for: straight into a buffer of that size and
/// [`READ_SLACK`], reserved from the memory budget first if `conn` has
/// one. The slack makes the read that brings the frame whole take less
/// than it asked for, which tells the runtime the socket is drained: the
/// next read waits for readiness instead of being made at once and finding
/// nothing (a system call per message, when every frame takes its buffer
/// exactly). The buffer is the thread's hot one when nothing shares it
/// any more ([`take_hot`]): on a thread echoing messages of this size, one
/// buffer, still in the cache, serves every connection in turn, as a
/// per-thread receive buffer would, with no allocation per message.
/// `None` if the budget has no room
/// (the caller reads as without a hint: a guess never fails the
/// connection). If nothing had arrived, the buffer is given up (back to
/// the hot slot) and the wait starts here. Out of line: connections of
/// small messages never get here, and their path stays as short as it was.
#[inline(never)]
fn poll_read_hinted<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    st: &mut ReadState,
    conn: &mut Connection,
    cx: &mut Context<'_>,
) -> Option<Poll<io::Result<usize>>> {
    let want = st.hint() + READ_SLACK;
    let budget = conn.config().memory_budget.is_some();
    give_up(buf, st);
    let mut fresh = take_hot(want);
    if budget && !conn.try_reserve_read(fresh.capacity()) {
        keep_hot(&mut fresh);
        return None;
    }
    *buf = fresh;
    st.set(HINTED, true);
    match poll_read_buf(stream, buf, cx) {
        Poll::Ready(r) => {
            st.started(frame_len(buf), 0);
            Some(Poll::Ready(r))
        }
        Poll::Pending => {
            give_up(buf, st);
            if budget {
                conn.release_read(0);
            }
            Some(Poll::Pending)
        }
    }
}

/// Gives `buf` up before a wait: empty, sharing nothing; large storage
/// goes to the warm pool ([`keep_warm`]), a hinted read's to the
/// thread's hot slot ([`keep_hot`]).
#[inline]
fn give_up(buf: &mut BytesMut, st: &mut ReadState) {
    // One test on the path of small messages, whose buffers are neither.
    if st.has(LARGE | HINTED) {
        give_back(buf, st);
    }
    *buf = BytesMut::new();
}

/// [`give_up`] for storage that may be worth keeping: a large frame's
/// goes to the warm pool, a hinted read's to the thread's hot slot.
#[inline(never)]
fn give_back(buf: &mut BytesMut, st: &mut ReadState) {
    let hinted = st.has(HINTED);
    st.set(HINTED, false);
    if st.take_large() {
        keep_warm(buf);
    } else if hinted {
        keep_hot(buf);
    }
}

fn poll_read_plain<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    st: &mut ReadState,
    conn: &mut Connection,
    pending_frame: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        if st.expects(pending_frame) {
            if let Some(read) = poll_read_hinted(stream, buf, st, conn, cx) {
                return read;
            }
        }
        if buf.capacity() >= READ_MIN / 2 {
            // Data may be waiting already (a busy connection): read it into
            // the buffer in hand, which avoids the copy from the scratch.
            if let Some(read) = poll_read_leftover(stream, buf, st, pending_frame, cx) {
                return read;
            }
        }
        // Nothing waiting: give the memory back and wait through the scratch.
        // Unconditionally: an empty buffer may still share (and keep alive)
        // the storage of the frames split off it. A large one is kept warm.
        give_up(buf, st);
        return SCRATCH_BUF.with(|s| {
            let mut s = s.borrow_mut();
            let mut rb = ReadBuf::new(&mut s[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    let frame = frame_len(got);
                    st.started(frame, pending_frame);
                    match frame.filter(|&f| f > got.len() as u64).and_then(take_warm) {
                        Some(w) => *buf = w,
                        None => *buf = BytesMut::with_capacity(first_allocation(got.len(), frame)),
                    }
                    buf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
    }
    if needs_room(buf, pending_frame) {
        let need = (buf.len() as u64).saturating_add(pending_frame as u64);
        if let Some(mut w) = take_warm(need) {
            w.extend_from_slice(buf);
            *buf = w;
            return poll_read_buf(stream, buf, cx);
        }
        grow(buf, growth(buf.len(), pending_frame));
    }
    poll_read_buf(stream, buf, cx)
}

/// [`poll_read_into`] for a connection with a memory budget: its read
/// buffer is charged to the budget for its whole capacity, before it is
/// allocated (or taken warm from the thread), so that what the budget
/// counts is what the buffer can hold, never less. Buffers grow as without
/// a budget (bounded by what arrived and by what the frame still needs).
///
/// A read that starts a message brings at most
/// [`MemoryBudget::UNCHARGED`] bytes: a connection of small messages
/// (complete frames, whose buffer is exactly what arrived) never draws on
/// the budget, and is never refused, however spent it is.
fn poll_read_budgeted<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    st: &mut ReadState,
    conn: &mut Connection,
    pending_frame: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    const FREE: usize = MemoryBudget::UNCHARGED;
    if buf.is_empty() {
        if st.expects(pending_frame) {
            if let Some(read) = poll_read_hinted(stream, buf, st, conn, cx) {
                return read;
            }
        }
        if (READ_MIN / 2..=FREE).contains(&buf.capacity()) {
            if let Some(read) = poll_read_leftover(stream, buf, st, pending_frame, cx) {
                return read;
            }
        }
        give_up(buf, st);
        conn.release_read(0);
        return SCRATCH_BUF.with(|s| {
            let mut s = s.borrow_mut();
            let mut rb = ReadBuf::new(&mut s[..FREE]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    let frame = frame_len(got);
                    st.started(frame, pending_frame);
                    let mut warm = frame.filter(|&f| f > got.len() as u64).and_then(take_warm);
                    let cap = warm
                        .as_ref()
                        .map_or_else(|| first_allocation(got.len(), frame), BytesMut::capacity);
                    // Free of charge for complete small frames; reserved
                    // before it is allocated otherwise.
                    if conn.reserve_read(cap, 0).is_err() {
                        if let Some(w) = &mut warm {
                            keep_warm(w);
                        }
                        return Poll::Ready(Err(refused()));
                    }
                    *buf = warm.unwrap_or_else(|| BytesMut::with_capacity(cap));
                    buf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
    }
    if needs_room(buf, pending_frame) {
        let len = buf.len();
        let need = (len as u64).saturating_add(pending_frame as u64);
        let want = growth(len, pending_frame);
        let mut warm = take_warm(need);
        // The old buffer and the new one while the first is copied (which
        // `reserve` may avoid, growing in place): at most twice the old
        // capacity, or what is wanted, whichever is more.
        let new = warm.as_ref().map_or_else(
            || (len + want).max(buf.capacity().saturating_mul(2)),
            BytesMut::capacity,
        );
        if conn.reserve_read(buf.capacity() + new, 0).is_err() {
            if let Some(w) = &mut warm {
                keep_warm(w);
            }
            return Poll::Ready(Err(refused()));
        }
        match warm {
            Some(mut w) => {
                w.extend_from_slice(buf);
                *buf = w;
            }
            None => grow(buf, want),
        }
    }
    // The whole buffer, the bytes about to be read into it included.
    if conn.reserve_read(buf.capacity(), 0).is_err() {
        return Poll::Ready(Err(refused()));
    }
    poll_read_buf(stream, buf, cx)
}

/// The buffer to allocate for the `got` bytes a wait through the scratch
/// brought, which start a frame of `frame` bytes (its header's
/// [`frame_len`]): exactly `got` unless they do not hold that frame whole,
/// which gets room for the rest of it up to [`GROWTH`] times what arrived
/// — so the rest of a large frame is read in place instead of costing a
/// reallocation (a copy of everything so far), and the allocation still
/// follows what arrived, not what the peer declared.
fn first_allocation(got: usize, frame: Option<u64>) -> usize {
    match frame {
        Some(frame) if frame > got as u64 => {
            let bound = got.saturating_mul(GROWTH).max(READ_KEEP);
            if frame <= bound as u64 {
                frame as usize + slack(frame as usize)
            } else {
                bound
            }
        }
        Some(_) => got,
        // A partial or bad header: the connection reads or rejects it.
        None => got,
    }
}

/// How much more room a buffer holding `len` bytes of a frame that still
/// needs `pending_frame` takes: up to [`GROWTH`] times what arrived (at
/// least [`READ_KEEP`]), or the rest of the frame and [`READ_SLACK`] when
/// that is less.
fn growth(len: usize, pending_frame: usize) -> usize {
    let bound = len.saturating_mul(GROWTH).max(READ_KEEP);
    let want = if pending_frame < bound {
        pending_frame + slack(len.saturating_add(pending_frame))
    } else {
        bound
    };
    want.max(READ_MIN)
}

/// The room to leave past a frame of `frame` bytes: [`READ_SLACK`], or none
/// for a large frame. Reads into the room past a large frame would start
/// the next frame in the tail of a buffer the message just received may
/// still share (an echo still writing it out), so the next frame could not
/// take that buffer back, nor a warm one: it would grow a new one by
/// reallocations, each a copy and fresh pages. An empty read after a large
/// frame costs nothing beside it.
fn slack(frame: usize) -> usize {
    if frame < LARGE_MIN {
        READ_SLACK
    } else {
        0
    }
}

/// The length, header included, that the frame starting `b` declares.
fn frame_len(b: &[u8]) -> Option<u64> {
    match duplex_proto::frame::FrameHeader::parse(b) {
        Ok(Some((h, n))) => Some((n as u64).saturating_add(h.payload_len)),
        _ => None,
    }
}

/// One read into `buf`'s spare capacity. tokio's `read_buf` future holds
/// only its two references, so polling a fresh one is free.
fn poll_read_buf<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let read = stream.read_buf(buf);
    tokio::pin!(read);
    read.poll(cx)
}

/// Whether `buf` needs more room before the next read: it has less than
/// [`READ_MIN`]` / 2` left, unless what is left holds the rest of the
/// frame being read (`pending_frame` bytes): a buffer of exactly its
/// frame's size (a warm one for a large frame, whose last read leaves a
/// few bytes to come) takes the rest in place instead of being copied into
/// a larger one.
#[inline]
fn needs_room(buf: &BytesMut, pending_frame: usize) -> bool {
    let room = buf.capacity() - buf.len();
    room < READ_MIN / 2 && (pending_frame == 0 || room < pending_frame)
}

/// Reads and discards until EOF or an error (the linger after our FIN),
/// through the per-thread scratch buffer so that waiting costs nothing:
/// ready at EOF or on an error.
pub(crate) fn poll_drain<R: AsyncRead + Unpin>(stream: &mut R, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        let n = SCRATCH_BUF.with(|s| {
            let mut s = s.borrow_mut();
            let mut rb = ReadBuf::new(&mut s[..]);
            Pin::new(&mut *stream)
                .poll_read(cx, &mut rb)
                .map(|r| r.map(|()| rb.filled().len()))
        });
        match n {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(n)) if n > 0 => continue,
            Poll::Ready(_) => return Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_large_frame_buffer_is_kept_warm_once_unshared() {
        // The pool is the process's: other tests may lend and take buffers
        // meanwhile, so what is taken is found by its address.
        fn taken_back(start: *const u8, need: usize) -> Option<BytesMut> {
            let mut taken = Vec::new();
            while let Some(w) = take_warm(need as u64) {
                assert!(w.is_empty() && w.capacity() >= need);
                taken.push(w);
            }
            taken.into_iter().find(|w| w.as_ptr() == start)
        }
        // Unshared: the connection's buffer is the tail past the frame split
        // off its front; the storage is kept whole, not the tail.
        let mut buf = BytesMut::with_capacity(4 << 20);
        buf.resize(2 << 20, 7);
        let start = buf.as_ptr();
        drop(buf.split_to(2 << 20));
        keep_warm(&mut buf);
        assert_eq!(buf.capacity(), 0, "the connection gave the storage up");
        assert!(take_warm(64 << 10).is_none(), "small frames do not take it");
        let w = taken_back(start, 3 << 20).expect("the same memory, whole");
        assert!(w.capacity() >= 4 << 20);

        // Still shared with a message being written: the connection gives
        // its share up, and the write side hands the storage over once the
        // message is written.
        let mut buf = w;
        buf.resize(2 << 20, 7);
        let message = buf.split_to(2 << 20).freeze();
        keep_warm(&mut buf);
        assert_eq!(buf.capacity(), 0);
        assert!(taken_back(start, 1 << 20).is_none(), "not while shared");
        let mut conn = Connection::new(
            duplex_proto::Role::Server,
            duplex_proto::Config::default(),
            None,
        );
        conn.send(duplex_proto::Message::binary(message)).unwrap();
        let queued = conn.outbound_len();
        // A partial write keeps it queued; the rest hands it over.
        consume_written(&mut conn, 1 << 20);
        assert!(taken_back(start, 1 << 20).is_none(), "not while queued");
        consume_written(&mut conn, queued - (1 << 20));
        assert_eq!(conn.outbound_len(), 0);
        assert!(taken_back(start, 3 << 20).is_some(), "the same memory");

        // A small buffer is never kept.
        let mut small = BytesMut::with_capacity(4096);
        let start = small.as_ptr();
        keep_warm(&mut small);
        assert!(taken_back(start, LARGE_MIN).is_none());
    }

    #[test]
    fn a_large_buffer_grows_to_exactly_what_is_wanted() {
        let mut buf = BytesMut::with_capacity(2 << 20);
        buf.resize(2 << 20, 1);
        grow(&mut buf, 1 << 20);
        assert_eq!(buf.capacity(), 3 << 20, "not the double a Vec takes");
        assert!(buf.iter().all(|&b| b == 1) && buf.len() == 2 << 20);
        grow(&mut buf, 1 << 20);
        assert_eq!(buf.capacity(), 3 << 20, "room already there");
    }

    #[test]
    fn the_warm_pool_lends_the_smallest_fit_and_stays_within_its_bound() {
        let mut pool = WarmPool::new(10 << 20);
        let buf = |mib: usize| BytesMut::with_capacity(mib << 20);
        pool.keep(buf(2));
        pool.keep(buf(4));
        pool.keep(buf(3));
        assert_eq!(pool.total, 9 << 20);
        // The smallest that holds the frame, lent to one connection.
        let b = pool.take(3 << 20).unwrap();
        assert!(b.capacity() >= 3 << 20 && b.capacity() < 4 << 20);
        assert!(pool.take(5 << 20).is_none());
        pool.keep(b);
        // Room is made by dropping smaller buffers for a larger one...
        pool.keep(buf(5));
        assert!(pool.total <= 10 << 20, "{}", pool.total);
        assert!(pool.take(5 << 20).is_some());
        // ...never larger ones for a smaller one.
        let mut pool = WarmPool::new(8 << 20);
        pool.keep(buf(8));
        pool.keep(buf(1));
        assert_eq!(pool.bufs.len(), 1);
        assert_eq!(pool.total, pool.bufs[0].capacity());
        // Several connections each get a buffer of their own.
        let mut pool = WarmPool::new(64 << 20);
        for _ in 0..4 {
            pool.keep(buf(16));
        }
        let lent: Vec<_> = (0..4).map(|_| pool.take(16 << 20).unwrap()).collect();
        assert_eq!(lent.len(), 4);
        assert_eq!(pool.total, 0);
    }

    #[test]
    fn a_partial_frame_from_the_scratch_gets_room_bounded_by_what_arrived() {
        let header = |len: u64| {
            let mut h = vec![0x82, 0xff];
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&[1, 2, 3, 4]);
            h
        };
        // 60,000 of a 65,550-byte frame: room for the whole frame and a
        // little more, so that the read that completes it is not full.
        let mut got = header(65_536);
        got.resize(60_000, 0);
        assert_eq!(
            first_allocation(got.len(), frame_len(&got)),
            65_550 + READ_SLACK
        );
        // 1,000 bytes of it: the same, within the least first step.
        got.truncate(1_000);
        assert_eq!(
            first_allocation(got.len(), frame_len(&got)),
            65_550 + READ_SLACK
        );
        // 1,000 bytes of a 1 MiB frame: the least first step.
        let mut big = header(1 << 20);
        big.resize(1_000, 0);
        assert_eq!(first_allocation(big.len(), frame_len(&big)), READ_KEEP);
        // 60,000 of it: at most 4x what arrived.
        big.resize(60_000, 0);
        assert_eq!(first_allocation(big.len(), frame_len(&big)), 240_000);
        // A declared 2^62 bytes changes nothing beyond that bound.
        let mut huge = header(1 << 62);
        huge.resize(100, 0);
        assert_eq!(first_allocation(huge.len(), frame_len(&huge)), READ_KEEP);
        // Whole small frames, partial and bad headers: what arrived.
        let two = [0x81, 0x80, 1, 2, 3, 4, 0x81, 0x80, 1, 2, 3, 4];
        assert_eq!(first_allocation(two.len(), frame_len(&two)), two.len());
        assert_eq!(first_allocation(1, frame_len(&[0x82])), 1);
        assert_eq!(first_allocation(6, frame_len(&[0x83, 0x80, 0, 0, 0, 0])), 6);
        // Growing for the rest of a frame: the rest and the slack when that
        // is within the bound, else the bound.
        assert_eq!(growth(100_000, 20_000), 20_000 + READ_SLACK);
        assert_eq!(growth(100_000, 10 << 20), 400_000);
        assert_eq!(growth(1_000, 10), READ_MIN);
        assert_eq!(growth(1_000, 1 << 30), READ_KEEP);
    }

    #[tokio::test]
    async fn idle_reads_hold_no_buffer_and_partial_frames_grow_it() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        // Data already waiting: read straight into the buffer in hand.
        let mut buf = BytesMut::with_capacity(1 << 16);
        a.write_all(b"hello").await.unwrap();
        assert_eq!(read_into(&mut b, &mut buf, 0).await.unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        assert!(buf.capacity() >= 1 << 16);
        // Nothing waiting: the buffer is given back before the wait, and
        // exactly what arrives is allocated.
        buf.clear();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            a.write_all(b"later").await.unwrap();
            a
        });
        assert_eq!(read_into(&mut b, &mut buf, 0).await.unwrap(), 5);
        assert_eq!(&buf[..], b"later");
        assert!(buf.capacity() < 1024, "{}", buf.capacity());
        let mut a = writer.await.unwrap();
        // A partial frame: reads go into the buffer, which grows.
        a.write_all(&[7u8; 100_000]).await.unwrap();
        let mut total = 5;
        while total < 100_005 {
            total += read_into(&mut b, &mut buf, 1 << 20).await.unwrap();
        }
        assert_eq!(buf.len(), 100_005);
        assert!(buf[5..].iter().all(|&x| x == 7));
        // Growth is bounded by what the frame still needs.
        assert!(buf.capacity() < 1 << 20, "{}", buf.capacity());
        drop(a);
        buf.clear();
        assert_eq!(read_into(&mut b, &mut buf, 0).await.unwrap(), 0);
    }

    /// A client frame of `payload` bytes (header and masking key included;
    /// the payload is not masked: only the header matters here).
    fn client_frame(payload: usize) -> Vec<u8> {
        let header = duplex_proto::frame::FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: duplex_proto::frame::OpCode::Binary,
            mask: Some([1, 2, 3, 4]),
            payload_len: payload as u64,
        };
        let mut f = BytesMut::new();
        header.encode(&mut f);
        f.resize(f.len() + payload, 7);
        f.to_vec()
    }

    fn poll_once(
        stream: &mut tokio::io::DuplexStream,
        buf: &mut BytesMut,
        st: &mut ReadState,
        conn: &mut Connection,
    ) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        poll_read_into(stream, buf, st, conn, 0, &mut cx)
    }

    /// The configurations a read-path test runs under: no memory budget,
    /// then `budget`.
    fn without_and_with(budget: &Arc<MemoryBudget>) -> [duplex_proto::Config; 2] {
        [
            duplex_proto::Config::default(),
            duplex_proto::Config::default().with_memory_budget(budget.clone()),
        ]
    }

    /// A buffer of exactly its frame's size (a warm one, or one a busy
    /// connection's last read left) whose first read brought all of the
    /// frame but a few bytes takes the rest in place: no larger buffer, no
    /// copy of what arrived. With and without a memory budget.
    #[tokio::test]
    async fn a_buffer_the_size_of_its_frame_takes_the_rest_of_it_in_place() {
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        for config in without_and_with(&budget) {
            let mut conn = Connection::new(duplex_proto::Role::Server, config, None);
            let (mut a, mut b) = tokio::io::duplex(1 << 20);
            let mut st = ReadState::default();
            let big = client_frame(65536);
            // The frame's first bytes are in, then all but its last 100:
            // less room left than a read otherwise gets, but exactly what
            // the frame still needs.
            let mut buf = BytesMut::with_capacity(big.len());
            buf.extend_from_slice(&big[..1000]);
            let cut = big.len() - 100;
            a.write_all(&big[1000..cut]).await.unwrap();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let r = poll_read_into(
                &mut b,
                &mut buf,
                &mut st,
                &mut conn,
                big.len() - 1000,
                &mut cx,
            );
            assert!(matches!(r, Poll::Ready(Ok(n)) if n == cut - 1000), "{r:?}");
            let start = buf.as_ptr();
            a.write_all(&big[cut..]).await.unwrap();
            let r = poll_read_into(&mut b, &mut buf, &mut st, &mut conn, 100, &mut cx);
            assert!(matches!(r, Poll::Ready(Ok(100))), "{r:?}");
            assert_eq!((buf.len(), buf.capacity()), (big.len(), big.len()));
            assert_eq!(buf.as_ptr(), start, "the rest was read in place");
            assert_eq!(&buf[..], &big[..]);
            assert!(conn.error().is_none());
            drop(buf);
            conn.release_read(0);
        }
        assert_eq!(budget.used(), 0, "every reservation is given back");
    }

    /// Hinted reads on one thread take the same memory in turn, whichever
    /// connection reads: once the message read into it is dropped, the
    /// buffer goes back to the thread's hot slot and the next hinted read
    /// takes it. Never while a message still shares it: that message's
    /// bytes stay as they were, and the next read gets other memory. With
    /// and without a memory budget.
    #[tokio::test]
    async fn hinted_reads_on_a_thread_share_one_buffer_once_its_message_is_dropped() {
        struct Peer {
            conn: Connection,
            a: tokio::io::DuplexStream,
            b: tokio::io::DuplexStream,
            buf: BytesMut,
            st: ReadState,
        }
        impl Peer {
            /// Waits for input: nothing has arrived.
            fn wait(&mut self) {
                assert!(
                    poll_once(&mut self.b, &mut self.buf, &mut self.st, &mut self.conn)
                        .is_pending()
                );
                assert_eq!(self.buf.capacity(), 0, "a wait holds no buffer");
            }
            /// `frame` arrives while the connection waits, and is read
            /// whole in one read.
            async fn read(&mut self, frame: &[u8]) {
                self.a.write_all(frame).await.unwrap();
                let r = poll_once(&mut self.b, &mut self.buf, &mut self.st, &mut self.conn);
                assert!(matches!(r, Poll::Ready(Ok(n)) if n == frame.len()), "{r:?}");
                assert_eq!(self.buf.as_ptr() as usize % PAGE, DATA_OFFSET);
            }
            /// The connection hands the frame out as a message.
            fn message(&mut self) -> Bytes {
                let m = self.buf.split().freeze();
                self.conn.release_read(0);
                m
            }
        }
        /// Whether the thread's hot slot holds the storage `data` is in.
        fn hot_holds(data: *const u8) -> bool {
            HOT.with(|h| {
                let b = h.take();
                let held = b.as_ref().is_some_and(|b| {
                    let start = b.as_ptr() as usize;
                    (start..start + b.capacity()).contains(&(data as usize))
                });
                h.set(b);
                held
            })
        }
        let big = client_frame(65536);
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        for config in without_and_with(&budget) {
            let mut peers: Vec<Peer> = (0..2)
                .map(|_| {
                    let (a, b) = tokio::io::duplex(1 << 20);
                    let mut st = ReadState::default();
                    st.started(Some(big.len() as u64), 0);
                    Peer {
                        conn: Connection::new(duplex_proto::Role::Server, config.clone(), None),
                        a,
                        b,
                        buf: BytesMut::new(),
                        st,
                    }
                })
                .collect();
            peers.iter_mut().for_each(Peer::wait);
            // Echoed at once: each message is dropped, and its connection
            // waits again, before the next read.
            peers[0].read(&big).await;
            let first = peers[0].buf.as_ptr();
            drop(peers[0].message());
            peers[0].wait();
            assert!(hot_holds(first), "given back to the thread");
            for i in [1, 0, 1] {
                peers[i].read(&big).await;
                assert_eq!(peers[i].buf.as_ptr(), first, "the same memory");
                assert_eq!(&peers[i].buf[..], &big[..]);
                drop(peers[i].message());
                peers[i].wait();
            }
            // A message kept (a history, a slow write): the next read on
            // this thread goes elsewhere, and the kept bytes do not change.
            peers[0].read(&big).await;
            let kept = peers[0].message();
            assert_eq!(kept.as_ptr(), first);
            peers[0].wait();
            assert!(!hot_holds(first), "not while a message shares it");
            let mut other = big.clone();
            other[20..].fill(9);
            peers[1].read(&other).await;
            assert_ne!(peers[1].buf.as_ptr(), first, "other memory");
            assert_eq!(&peers[1].buf[..], &other[..]);
            drop(peers[1].message());
            peers[1].wait();
            assert_eq!(&kept[..], &big[..], "the kept message is intact");
            drop(kept);
            for p in &mut peers {
                assert!(p.conn.error().is_none());
                p.conn.release_read(0);
            }
        }
        assert_eq!(budget.used(), 0, "every reservation is given back");
    }

    /// After a frame of 4 KiB..=68 KiB, the read that follows a wait goes
    /// straight into a buffer of that frame's size (no copy out of the
    /// scratch) and some room, which takes the next frame of that size
    /// whole in one read and leaves room to spare; a small
    /// frame ends it. With a memory budget, the buffer is reserved first,
    /// and a budget with no room means the scratch, never a failure.
    #[tokio::test]
    async fn a_read_after_a_wait_goes_straight_into_a_buffer_the_size_of_the_last_frame() {
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        for config in without_and_with(&budget) {
            let mut conn = Connection::new(duplex_proto::Role::Server, config, None);
            let (mut a, mut b) = tokio::io::duplex(1 << 20);
            let (mut buf, mut st) = (BytesMut::new(), ReadState::default());
            let big = client_frame(65536);
            // The first frame comes through the scratch, as many reads as it takes.
            a.write_all(&big).await.unwrap();
            while buf.len() < big.len() {
                // What the frame still needs, as the connection says it:
                // nothing before its first bytes arrived.
                let pending = if buf.is_empty() {
                    0
                } else {
                    big.len() - buf.len()
                };
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match poll_read_into(&mut b, &mut buf, &mut st, &mut conn, pending, &mut cx) {
                    Poll::Ready(r) => assert!(r.unwrap() > 0),
                    Poll::Pending => panic!("the frame was written whole"),
                }
            }
            assert_eq!(st.hint(), big.len());
            for _ in 0..3 {
                // The message takes the buffer; nothing waits: the wait.
                buf = BytesMut::new();
                conn.release_read(0);
                assert!(poll_once(&mut b, &mut buf, &mut st, &mut conn).is_pending());
                assert_eq!(buf.capacity(), 0, "a wait holds no buffer");
                a.write_all(&big).await.unwrap();
                let n = match poll_once(&mut b, &mut buf, &mut st, &mut conn) {
                    Poll::Ready(r) => r.unwrap(),
                    Poll::Pending => panic!("the frame is waiting"),
                };
                // Room to spare: the runtime learns the socket is drained.
                assert_eq!((n, buf.len()), (big.len(), big.len()));
                assert!(buf.capacity() >= big.len() + READ_SLACK);
                assert!(buf.capacity() < big.len() + READ_SLACK + PAGE);
                assert_eq!(buf.as_ptr() as usize % PAGE, DATA_OFFSET);
            }
            // A small frame after the wait: read into the hinted buffer, and
            // the hint is gone.
            buf = BytesMut::new();
            conn.release_read(0);
            assert!(poll_once(&mut b, &mut buf, &mut st, &mut conn).is_pending());
            let small = client_frame(20);
            a.write_all(&small).await.unwrap();
            assert!(matches!(poll_once(&mut b, &mut buf, &mut st, &mut conn),
                Poll::Ready(Ok(n)) if n == small.len()));
            assert_eq!(st.hint(), 0);
            buf = BytesMut::new();
            conn.release_read(0);
            assert!(poll_once(&mut b, &mut buf, &mut st, &mut conn).is_pending());
            a.write_all(&small).await.unwrap();
            assert!(poll_once(&mut b, &mut buf, &mut st, &mut conn).is_ready());
            assert_eq!(
                buf.capacity(),
                small.len(),
                "exactly what arrived, from the scratch"
            );
            assert!(conn.error().is_none());
        }
        assert_eq!(
            budget.used(),
            0,
            "the hinted buffers' reservations are all given back"
        );

        // A spent budget: the hinted buffer is not allocated, the small frame
        // comes through the scratch, and the connection carries on.
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let config = duplex_proto::Config::default().with_memory_budget(budget.clone());
        let mut conn = Connection::new(duplex_proto::Role::Server, config, None);
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut buf = BytesMut::new();
        let mut st = ReadState::default();
        st.started(Some(65550), 0);
        st.set(WAITED, true);
        assert_eq!(st.hint(), 65550);
        assert!(budget.try_reserve(1 << 20));
        a.write_all(&client_frame(20)).await.unwrap();
        let r = poll_once(&mut b, &mut buf, &mut st, &mut conn);
        assert!(matches!(r, Poll::Ready(Ok(26))), "{r:?}");
        assert_eq!(buf.capacity(), 26);
        assert!(conn.error().is_none());
    }
}
