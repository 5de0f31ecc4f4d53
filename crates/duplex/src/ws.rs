//! `WebSocket<S>`: one connection over any async byte stream.

use crate::error::{Error, Result};
use bytes::BytesMut;
use duplex_proto::{CloseCode, CloseFrame, Connection, Event, Message, Role, State};
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio::time::Sleep;

/// The browser's `readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// The opening handshake is in progress (never observed on a `WebSocket`
    /// value, which exists only after it).
    Connecting,
    /// Messages can be sent and received.
    Open,
    /// The closing handshake has started.
    Closing,
    /// The connection is closed.
    Closed,
}

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;

/// The rarely used part of a `WebSocket`, boxed and made on first need:
/// every idle connection carries its pointer only.
#[derive(Debug, Default)]
struct Extra {
    /// What the handshake agreed.
    protocol: Option<String>,
    extensions: Option<String>,
    url: Option<String>,
    /// The one timer of this connection (write timeout, ping and close
    /// deadlines, the linger after our FIN), made on first use.
    timer: Option<Pin<Box<Sleep>>>,
    /// The transport error being reported once the shutdown is done.
    aborted: Option<Error>,
}

/// A WebSocket over the stream `S` (a `TcpStream`, a TLS stream, …), after
/// the opening handshake. Pings are answered and close frames echoed
/// automatically; [`recv`](Self::recv) returns data messages only.
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    rbuf: BytesMut,
    /// Handshake results, the timer, a pending error: absent until needed.
    extra: Option<Box<Extra>>,
    timer_use: Timer,
    phase: Phase,
    transport_closed: bool,
    reported_error: bool,
    /// Where the last `poll_recv` waits (if it returned `Pending` and none
    /// ran since). Waiting for input, a flush that empties the queue
    /// meanwhile (from a [`WsSender`] while the [`WsReceiver`] waits)
    /// releases the idle buffers as that wait would have.
    ///
    /// [`WsSender`]: crate::WsSender
    /// [`WsReceiver`]: crate::WsReceiver
    recv_wait: RecvWait,
    /// What the reads into `rbuf` keep between them, and whether it may
    /// hold complete frames still to hand out: the last parse stopped at a
    /// message (`Connection::receive_message`) and handed it out (see
    /// `readbuf::ReadState`).
    rstate: crate::readbuf::ReadState,
    /// How a server sends its reply to the peer's close frame so that the
    /// FIN after it joins it ([`coalesce_fin`](Self::coalesce_fin)).
    last_write: Option<LastWrite<S>>,
}

/// [`CoalesceFin::try_write_then_fin`] for one stream type.
type LastWrite<S> = fn(&S, &[u8]) -> std::io::Result<usize>;

/// A stream that can carry its last bytes in the packet that ends it: on
/// TCP, bytes sent with `MSG_MORE` wait in the kernel for the FIN that
/// `shutdown` sends, and leave with it in one segment.
///
/// A server that answers the peer's close frame and then closes the
/// connection (RFC 6455 §7.1.1) sends one packet instead of two; the peer
/// receives one instead of two and acknowledges them once. See
/// [`WebSocket::coalesce_fin`].
pub trait CoalesceFin {
    /// Writes from `buf` without sending a partial packet, because the end
    /// of the stream follows at once: `WouldBlock` if nothing can be
    /// written now (the caller then writes the usual way).
    ///
    /// An implementation must not hold the bytes longer than the caller's
    /// next write or shutdown.
    fn try_write_then_fin(&self, buf: &[u8]) -> std::io::Result<usize>;
}

impl CoalesceFin for tokio::net::TcpStream {
    fn try_write_then_fin(&self, buf: &[u8]) -> std::io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            self.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(self)
                    .send_with_flags(buf, libc::MSG_NOSIGNAL | libc::MSG_MORE)
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.try_write(buf)
        }
    }
}

/// Where a pending `poll_recv` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvWait {
    /// Not waiting, or on the transport's shutdown.
    Other,
    /// For queued frames to be written before it reads.
    Flush,
    /// For input, with nothing queued.
    Input,
}

/// What the other half of a split socket may be waiting on: compared
/// before and after each call through one half (see `split.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes queued.
    pub(crate) outbound: usize,
    /// The closing handshake, the driver's phase, the transport.
    pub(crate) lifecycle: (State, Phase, bool),
    /// What the one timer is armed for.
    pub(crate) timer: Timer,
    /// Where a pending receive waits.
    pub(crate) recv_wait: RecvWait,
}

impl Progress {
    /// Whether a sender waiting for room or for a flush should look again:
    /// the queue shrank, or the connection moved on (it may have failed).
    pub(crate) fn wakes_sender(&self, before: &Progress) -> bool {
        self.outbound < before.outbound || self.lifecycle != before.lifecycle
    }

    /// Whether a pending receiver should look again: closing started (its
    /// close deadline must be armed), the connection moved on, the timer
    /// it was waiting on was taken for a write, or the frames it waited to
    /// see written before reading were written by the sender.
    pub(crate) fn wakes_receiver(&self, before: &Progress) -> bool {
        self.lifecycle != before.lifecycle
            || (before.timer == Timer::Read && self.timer != Timer::Read)
            || (before.recv_wait == RecvWait::Flush && self.outbound < before.outbound)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose opening handshake has completed. `leftover` are
    /// bytes read past the handshake (the first frames).
    pub fn from_parts(
        stream: S,
        conn: Connection,
        leftover: BytesMut,
        protocol: Option<String>,
        extensions: Option<String>,
        url: Option<String>,
    ) -> Self {
        let mut conn = conn;
        let mut leftover = leftover;
        // Frames that arrived with the handshake are processed now, not
        // after the next read (which may never come if the peer waits for us).
        // An error here is recorded in `conn` and reported by `recv`.
        if !leftover.is_empty() {
            let _ = conn.receive(&mut leftover);
        }
        WebSocket {
            stream,
            conn,
            rbuf: leftover,
            extra: if protocol.is_none() && extensions.is_none() && url.is_none() {
                None
            } else {
                Some(Box::new(Extra {
                    protocol,
                    extensions,
                    url,
                    ..Extra::default()
                }))
            },
            timer_use: Timer::None,
            phase: Phase::Open,
            transport_closed: false,
            reported_error: false,
            recv_wait: RecvWait::Other,
            rstate: crate::readbuf::ReadState::default(),
            last_write: None,
        }
    }

    /// Sends the reply to the peer's close frame and the FIN after it in
    /// one packet, when this side is the server and the closing handshake
    /// ends cleanly: one packet fewer per connection for both ends (the
    /// server's CPU per connection opened and closed fell by 7–8 %,
    /// bench/notes.md). Otherwise the reply is written as any frame.
    pub fn coalesce_fin(&mut self)
    where
        S: CoalesceFin,
    {
        self.last_write = Some(S::try_write_then_fin);
    }

    /// The state a split half compares before and after a call.
    pub(crate) fn progress(&self) -> Progress {
        Progress {
            outbound: self.conn.outbound_len(),
            lifecycle: (self.conn.state(), self.phase, self.transport_closed),
            timer: self.timer_use,
            recv_wait: self.recv_wait,
        }
    }

    /// The subprotocol the handshake agreed on.
    pub fn protocol(&self) -> Option<&str> {
        self.extra.as_ref()?.protocol.as_deref()
    }

    /// The negotiated `Sec-WebSocket-Extensions` value (e.g.
    /// `permessage-deflate`), as the browser's `extensions`.
    pub fn extensions(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|m| m.extensions.as_deref())
            .unwrap_or("")
    }

    /// The URL this client connected to (`None` on the server side).
    pub fn url(&self) -> Option<&str> {
        self.extra.as_ref()?.url.as_deref()
    }

    /// Makes room for `count` frames of about `frame_len` bytes about to
    /// be queued, e.g. a batch of [`start_send_prepared`](Self::start_send_prepared)
    /// calls, in one allocation
    /// ([`Connection::reserve_outbound`](duplex_proto::Connection::reserve_outbound)).
    pub fn reserve_outbound(&mut self, frame_len: usize, count: usize) {
        self.conn.reserve_outbound(frame_len, count);
    }

    /// Bytes queued and not yet handed to the transport.
    pub fn buffered_amount(&self) -> usize {
        self.conn.outbound_len()
    }

    /// The browser's `readyState`.
    pub fn ready_state(&self) -> ReadyState {
        match self.conn.state() {
            State::Open => ReadyState::Open,
            State::CloseSent | State::CloseReceived => ReadyState::Closing,
            State::Closed => ReadyState::Closed,
        }
    }

    /// The protocol state machine (read-only).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The peer's close frame: `None` if none arrived yet.
    pub fn close_frame(&self) -> Option<Option<&CloseFrame>> {
        self.conn.received_close()
    }

    /// The browser's `CloseEvent.code`: the peer's code, 1005 if its close
    /// frame had none, 1006 if the connection ended without one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self.conn.received_close() {
            Some(Some(f)) => Some(f.code),
            Some(None) => Some(CloseCode::NO_STATUS),
            None if self.transport_closed || self.conn.is_closed() => Some(CloseCode::ABNORMAL),
            None => None,
        }
    }

    /// The browser's `CloseEvent.reason`: the reason in the peer's close
    /// frame (empty if it had none), `None` before one arrived.
    pub fn close_reason(&self) -> Option<&str> {
        match self.conn.received_close()? {
            Some(f) => Some(f.reason.as_str()),
            None => Some(""),
        }
    }

    /// The browser's `CloseEvent.wasClean`.
    pub fn was_clean(&self) -> bool {
        self.conn.was_clean()
    }

    /// Sends a message and waits until it has been handed to the transport.
    pub async fn send(&mut self, msg: Message) -> Result<()> {
        self.conn.send(msg)?;
        self.flush().await
    }

    /// Queues a message; waits only when the queue is over
    /// `write_buffer_size` (backpressure). Queued messages leave together on
    /// the next [`flush`](Self::flush), [`send`](Self::send) or when
    /// [`recv`](Self::recv) waits for input.
    pub async fn feed(&mut self, msg: Message) -> Result<()> {
        self.conn.send(msg)?;
        if self.conn.outbound_len() >= self.conn.config().write_buffer_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends a ping.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<()> {
        self.queue_ping(payload)?;
        self.flush().await
    }

    /// Queues a ping (at most 125 bytes of payload).
    pub(crate) fn queue_ping(&mut self, payload: &[u8]) -> Result<()> {
        self.conn.ping(payload)?;
        Ok(())
    }

    /// Queues a close frame unless closing has started.
    pub(crate) fn start_closing(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        self.conn.close(frame)?;
        Ok(())
    }

    /// Writes everything queued, coalescing frames into vectored writes.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The poll form of [`flush`](Self::flush). A write that makes no
    /// progress for `write_timeout` fails with [`Error::WriteTimeout`].
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while self.conn.outbound_len() > 0 {
            match poll_write_outbound(&mut self.stream, &self.conn, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    crate::readbuf::consume_written(&mut self.conn, n);
                    self.disarm(Timer::Write);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => {
                    let limit = self.conn.config().write_timeout;
                    return match self.poll_timer(cx, Timer::Write, Limit::After(limit)) {
                        Poll::Ready(()) => Poll::Ready(Err(Error::WriteTimeout)),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        let flushed = ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(Error::Io);
        if self.recv_wait == RecvWait::Input {
            // The receiving side waits for input and nothing is queued now.
            self.conn.release_idle_buffers();
        }
        Poll::Ready(flushed)
    }

    /// Ready when a message may be queued without going over
    /// `write_buffer_size`, flushing first if the queue is full
    /// (backpressure; `Sink::poll_ready`).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.outbound_len() >= self.conn.config().write_buffer_size {
            ready!(self.poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a message without waiting (`Sink::start_send`): it leaves
    /// with the next flush, or when [`recv`](Self::recv) waits for input.
    /// Call [`poll_ready`](Self::poll_ready) first to respect
    /// `write_buffer_size`.
    pub fn start_send(&mut self, msg: Message) -> Result<()> {
        self.conn.send(msg)?;
        Ok(())
    }

    /// Queues a message framed beforehand and shared with other
    /// connections ([`PreparedMessage`](duplex_proto::PreparedMessage)):
    /// a broadcast is framed (and compressed, without context takeover)
    /// once, and each receiver queues the same bytes. Like
    /// [`start_send`](Self::start_send), call `poll_ready` first.
    pub fn start_send_prepared(&mut self, msg: &duplex_proto::PreparedMessage) -> Result<()> {
        self.conn.send_prepared(msg)?;
        Ok(())
    }

    /// Queues the rest of a prepared message's shared frame (`frame`, as
    /// [`PreparedMessage::frame_for`](duplex_proto::PreparedMessage::frame_for)
    /// gives it for this connection) whose first `written` bytes another
    /// path already wrote into this socket
    /// ([`Connection::send_prepared_rest`](duplex_proto::Connection::send_prepared_rest)):
    /// for a server that writes broadcasts straight into idle connections'
    /// sockets and hands a partial write back.
    pub fn start_send_prepared_rest(&mut self, frame: &bytes::Bytes, written: usize) {
        self.conn.send_prepared_rest(frame, written);
    }

    /// Sends a prepared message and flushes.
    pub async fn send_prepared(&mut self, msg: &duplex_proto::PreparedMessage) -> Result<()> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send_prepared(msg)?;
        self.flush().await
    }

    /// Closes with 1000 (unless closing has started) and polls until the
    /// closing handshake and the transport are done (`Sink::poll_close`).
    /// Data messages that arrive meanwhile are discarded. `Ok(())` only for
    /// a clean close; otherwise the error [`recv`](Self::recv) reports
    /// ([`Error::CloseTimeout`] for a peer that never answered).
    pub fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.start_closing(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        loop {
            match ready!(self.poll_recv(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }

    /// The next data message. `None` once the connection has closed cleanly
    /// (see [`close_code`](Self::close_code)); `Some(Err(_))` once if it was
    /// failed or dropped, or if the peer never answered our close frame
    /// ([`Error::CloseTimeout`]), then `None`.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The poll form of [`recv`](Self::recv). All its state lives in the
    /// `WebSocket`, so a task waiting on it holds nothing else.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.recv_wait = RecvWait::Other;
        loop {
            match self.phase {
                Phase::Open => {}
                Phase::Aborting => {
                    // Errors are moot: the connection has failed already.
                    let _ = ready!(Pin::new(&mut self.stream).poll_shutdown(cx));
                    self.phase = Phase::Done;
                    let e = self.extra_mut().aborted.take();
                    return Poll::Ready(self.report(e.unwrap_or(Error::AbnormalClosure)));
                }
                Phase::Finishing(_) => {
                    ready!(self.poll_finish(cx));
                    self.phase = Phase::Done;
                    return Poll::Ready(self.take_error());
                }
                Phase::Done => return Poll::Ready(self.take_error()),
            }
            while let Some(ev) = self.conn.poll_event() {
                if let Event::Message(m) = ev {
                    return Poll::Ready(Some(Ok(m)));
                }
            }
            if self.rstate.more_input() {
                // The rest of the last read, one message at a time: the
                // replies to all of it queue up before the next flush.
                if let Some(m) = self.parse() {
                    return Poll::Ready(Some(Ok(m)));
                }
                continue;
            }
            if self.conn.outbound_len() > 0 {
                if self.conn.state() == State::CloseReceived {
                    // The reply to the peer's close frame: once written,
                    // the loop goes on to the FIN in this same call.
                    self.write_before_fin();
                }
                match self.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => self.start_abort(e),
                    Poll::Pending => {
                        self.recv_wait = RecvWait::Flush;
                        return Poll::Pending;
                    }
                }
                continue;
            }
            if self.conn.is_closed() {
                if !self.transport_closed {
                    self.transport_closed = true;
                    self.phase = Phase::Finishing(Finish::Flush);
                    continue;
                }
                return Poll::Ready(self.take_error());
            }
            if self.transport_closed {
                return Poll::Ready(self.take_error());
            }
            // Timers only when some are armed (or keepalive must start):
            // reading the clock per read is measurable where it is a system
            // call (virtual machines without a vDSO clock).
            if self.conn.wants_clock() {
                self.conn.handle_timeout(Instant::now().into_std());
                if self.conn.outbound_len() > 0 || self.conn.is_closed() {
                    continue;
                }
            }
            let pending = self.conn.pending_frame_bytes();
            let read = crate::readbuf::poll_read_into(
                &mut self.stream,
                &mut self.rbuf,
                &mut self.rstate,
                &mut self.conn,
                pending,
                cx,
            );
            let res = match read {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    // Waiting with nothing queued either way: an idle
                    // connection keeps no buffers.
                    self.conn.release_idle_buffers();
                    match self.conn.poll_timeout() {
                        // A timer fired: the loop hands the time to `conn`.
                        Some(d) => {
                            match self.poll_timer(cx, Timer::Read, Limit::At(Instant::from_std(d)))
                            {
                                Poll::Ready(()) => {
                                    self.disarm(Timer::Read);
                                    continue;
                                }
                                Poll::Pending => {
                                    self.recv_wait = RecvWait::Input;
                                    return Poll::Pending;
                                }
                            }
                        }
                        None => {
                            self.recv_wait = RecvWait::Input;
                            return Poll::Pending;
                        }
                    }
                }
            };
            self.disarm(Timer::Read);
            match res {
                Ok(0) => {
                    self.transport_closed = true;
                    if self.conn.received_close().is_none() && self.conn.error().is_none() {
                        return Poll::Ready(self.report(Error::AbnormalClosure));
                    }
                }
                Ok(_) => {
                    if let Some(m) = self.parse() {
                        return Poll::Ready(Some(Ok(m)));
                    }
                }
                // Refused by the memory budget: the connection has failed
                // and queued its close frame, which the next iterations
                // write before finishing.
                Err(_)
                    if matches!(
                        self.conn.error(),
                        Some(duplex_proto::Error::MemoryBudget { .. })
                    ) =>
                {
                    // What it held is discarded, and given back now rather
                    // than when the closing handshake ends.
                    self.rbuf = BytesMut::new();
                    self.conn.release_read(0);
                }
                Err(e) => self.start_abort(Error::Io(e)),
            }
        }
    }

    /// The next message in `rbuf`, handed out without going through the
    /// event queue; control frames on the way are handled and their events
    /// queued. A protocol error queues the close frame; it is reported
    /// after the close is written (the next iterations of `poll_recv`).
    #[inline(always)]
    fn parse(&mut self) -> Option<Message> {
        let m = self.conn.receive_message(&mut self.rbuf).ok().flatten();
        self.rstate
            .set_more_input(m.is_some() && !self.rbuf.is_empty());
        m
    }

    fn report(&mut self, e: Error) -> Option<Result<Message>> {
        if self.reported_error {
            None
        } else {
            self.reported_error = true;
            Some(Err(e))
        }
    }

    /// The end of the connection, reported once: `None` for a clean
    /// close, else what went wrong.
    fn take_error(&mut self) -> Option<Result<Message>> {
        let conn = &self.conn;
        let e = match conn.error().cloned() {
            Some(e) => e.into(),
            None if !conn.is_closed() => Error::AbnormalClosure,
            // Closed with our close frame sent and none received, without
            // an error: the close deadline passed.
            None if conn.sent_close().is_some() && conn.received_close().is_none() => {
                Error::CloseTimeout
            }
            None => return None,
        };
        self.report(e)
    }

    /// The transport failed: shut it down, then report `e`.
    fn start_abort(&mut self, e: Error) {
        self.transport_closed = true;
        self.extra_mut().aborted = Some(e);
        self.phase = Phase::Aborting;
    }

    /// After the closing handshake: send FIN, then wait (bounded by
    /// `close_timeout`) for the peer's FIN so that nothing in flight is
    /// reset, and release the buffers.
    ///
    /// A server whose closing handshake completed cleanly does not wait:
    /// the peer has sent its close frame, so nothing more should arrive
    /// but its FIN, and RFC 6455 §7.1.1 wants the server to close the TCP
    /// connection first. It still reads away whatever is already queued,
    /// since closing a socket with unread input sends a reset, which can
    /// destroy our close frame in the peer's buffer. The wait for the FIN
    /// cost a wake-up and a read per connection (server CPU per handshake
    /// 42–47 → 39–40 µs). Clients wait for the server to close, as the
    /// RFC asks.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Phase::Finishing(step) = self.phase else {
                return Poll::Ready(());
            };
            let next = match step {
                Finish::Flush => {
                    // An error here only means the peer is gone already.
                    let _ = ready!(self.poll_flush(cx));
                    Finish::Shutdown
                }
                Finish::Shutdown => {
                    let _ = ready!(Pin::new(&mut self.stream).poll_shutdown(cx));
                    if self.conn.role() == Role::Server && self.conn.was_clean() {
                        // Pending here only means nothing more is queued.
                        let _ = crate::readbuf::poll_drain(&mut self.stream, cx);
                        self.rbuf = BytesMut::new();
                        return Poll::Ready(());
                    }
                    Finish::Drain
                }
                Finish::Drain => {
                    if crate::readbuf::poll_drain(&mut self.stream, cx).is_pending() {
                        let linger = self.conn.config().close_timeout;
                        ready!(self.poll_timer(cx, Timer::Linger, Limit::After(linger)));
                    }
                    self.disarm(Timer::Linger);
                    self.rbuf = BytesMut::new();
                    return Poll::Ready(());
                }
            };
            self.phase = Phase::Finishing(next);
        }
    }

    /// On a server, writes what is queued (the reply to the peer's close
    /// frame) so that the FIN, which the caller sends next, joins it
    /// ([`coalesce_fin`](Self::coalesce_fin)); whatever it cannot write
    /// now is left to the flush. Only where the shutdown follows in the
    /// same call: held bytes leave with the next write or the FIN.
    fn write_before_fin(&mut self) {
        let Some(write) = self.last_write else {
            return;
        };
        if self.conn.role() != Role::Server {
            return;
        }
        while self.conn.outbound_len() > 0 {
            match write(&self.stream, self.conn.outbound()) {
                Ok(n) if n > 0 => {
                    crate::readbuf::consume_written(&mut self.conn, n);
                    self.disarm(Timer::Write);
                }
                _ => return,
            }
        }
    }

    /// Polls the connection's one timer for `use_`, arming it first if it
    /// is armed for something else (or not at all) or for another instant.
    fn poll_timer(&mut self, cx: &mut Context<'_>, use_: Timer, limit: Limit) -> Poll<()> {
        let deadline = match (limit, self.timer_use == use_) {
            (Limit::After(_), true) => None,
            (Limit::After(d), false) => Some(Instant::now() + d),
            (Limit::At(t), same) => {
                let armed = self.timer().map(|s| s.deadline());
                (!same || armed != Some(t)).then_some(t)
            }
        };
        if let Some(d) = deadline {
            self.timer_use = use_;
            let timer = &mut self.extra_mut().timer;
            match timer.as_mut() {
                Some(s) => s.as_mut().reset(d),
                None => *timer = Some(Box::pin(tokio::time::sleep_until(d))),
            }
        }
        match self.extra.as_mut().and_then(|x| x.timer.as_mut()) {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    fn timer(&self) -> Option<&Pin<Box<Sleep>>> {
        self.extra.as_ref()?.timer.as_ref()
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn disarm(&mut self, use_: Timer) {
        if self.timer_use == use_ {
            self.timer_use = Timer::None;
        }
    }

    /// Starts the closing handshake and waits until it completes. Data
    /// messages that arrive meanwhile are discarded.
    ///
    /// `Ok(())` means the closing handshake completed cleanly. A peer that
    /// does not answer within `close_timeout` is
    /// [`Error::CloseTimeout`] (the connection is then closed anyway);
    /// one that drops the connection or breaks the protocol meanwhile is
    /// the error [`recv`](Self::recv) would report.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.start_closing(Some(CloseFrame::new(code, reason)))?;
        self.close_inner().await
    }

    /// Sends a close frame without waiting for the answer: keep calling
    /// [`recv`](Self::recv), which returns the messages the peer sent before
    /// it saw the close, then `None` once the closing handshake completes.
    pub async fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.start_closing(Some(CloseFrame::new(code, reason)))?;
        self.flush().await
    }

    /// Like [`close`](Self::close) without a status code.
    pub async fn close_without_code(&mut self) -> Result<()> {
        self.start_closing(None)?;
        self.close_inner().await
    }

    /// Runs the closing handshake to its end. The driver gives up on the
    /// peer's close frame after `close_timeout` and a client lingers at
    /// most as long for the server's FIN; three times that is a backstop
    /// for a transport that stalls otherwise (a write that blocks below
    /// `write_timeout`), reported as the timeout it is, once.
    async fn close_inner(&mut self) -> Result<()> {
        let timeout: Duration = self.conn.config().close_timeout;
        match tokio::time::timeout(timeout * 3, poll_fn(|cx| self.poll_close(cx))).await {
            Ok(done) => done,
            Err(_) => {
                self.reported_error = true;
                Err(Error::CloseTimeout)
            }
        }
    }

    /// Splits into a sending and a receiving half, for use from two tasks.
    /// Both are views of this one `WebSocket` (see [`crate::split`]).
    pub fn split(self) -> (crate::split::WsSender<S>, crate::split::WsReceiver<S>) {
        crate::split::split(self)
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The same connection over `f(stream)`: for wrapping the stream after
    /// the handshake (e.g. to share the socket), with nothing read or
    /// queued lost.
    pub fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> WebSocket<T> {
        let WebSocket {
            stream,
            conn,
            rbuf,
            extra,
            timer_use,
            phase,
            transport_closed,
            reported_error,
            recv_wait,
            rstate,
            last_write: _,
        } = self;
        WebSocket {
            stream: f(stream),
            conn,
            rbuf,
            extra,
            timer_use,
            phase,
            transport_closed,
            reported_error,
            recv_wait,
            rstate,
            // Set again for the new stream type if it can.
            last_write: None,
        }
    }
}

/// Data messages until the connection ends (as [`WebSocket::recv`]).
impl<S: AsyncRead + AsyncWrite + Unpin> futures_core::Stream for WebSocket<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

/// Messages queued with backpressure; `close` runs the closing handshake
/// with 1000.
impl<S: AsyncRead + AsyncWrite + Unpin> futures_sink::Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WebSocket::poll_ready(self.get_mut(), cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<()> {
        WebSocket::start_send(self.get_mut(), msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WebSocket::poll_flush(self.get_mut(), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WebSocket::poll_close(self.get_mut(), cx)
    }
}

/// One (vectored) write of the queued frames. The slice array lives only
/// during the poll, not in the state of a waiting future.
fn poll_write_outbound<S: AsyncWrite + Unpin>(
    stream: &mut S,
    conn: &Connection,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let first = conn.outbound();
    if first.len() == conn.outbound_len() {
        // One contiguous run (small frames): a plain write.
        return Pin::new(stream).poll_write(cx, first);
    }
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let count = conn.outbound_slices(&mut slices);
    let stream = Pin::new(stream);
    if count == 1 {
        stream.poll_write(cx, &slices[0])
    } else {
        stream.poll_write_vectored(cx, &slices[..count])
    }
}

/// When the connection's timer should fire.
#[derive(Clone, Copy)]
enum Limit {
    /// This long after it is first found needed.
    After(Duration),
    /// At this instant.
    At(Instant),
}

/// What the connection's one timer is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    None,
    /// No write progress since it was armed (`write_timeout`).
    Write,
    /// The protocol's next deadline (close or keepalive).
    Read,
    /// The wait for the peer's FIN after ours (`close_timeout`).
    Linger,
}

/// Where a connection stands, beyond what `Connection` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// The transport failed: shutting it down, then `Extra::aborted` is
    /// reported.
    Aborting,
    /// The closing handshake is complete: finishing the transport.
    Finishing(Finish),
    /// Nothing more will happen.
    Done,
}

/// The steps after the closing handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Flush,
    Shutdown,
    Drain,
}
