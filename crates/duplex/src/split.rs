//! Halves of a [`WebSocket`] for two tasks: one sends, one receives.
//!
//! The halves are views of ONE [`WebSocket`], as `tokio-tungstenite`'s are
//! of one stream and `h2`'s of one connection: both hold it behind a
//! `std::sync::Mutex` and call its poll methods, so the halves behave
//! exactly as the whole socket does — the same closing handshake (a server
//! closes TCP first after a clean close), the same timers, idle buffers
//! released the same way, one close code and one end-of-connection report.
//! The lock is held only for the duration of one synchronous poll, never
//! across an `.await`.
//!
//! # Waking
//!
//! A `WebSocket` registers one waker with its stream (per direction) and
//! its timer: the one of whoever polled it last. Both halves therefore
//! poll it with the same *shared* waker, which wakes whichever half tasks
//! are waiting (each half stores its task's waker before it polls). Any
//! readiness the stream or the timer reports reaches both halves, however
//! their polls interleaved.
//!
//! What one half does can also change what the other waits for without
//! any event from the stream: the receiver's read path flushes queued
//! frames (so a sender waiting for room must look again), the sender's
//! flush writes the frames a receiver waited to see written before reading
//! (so it must go on to read), a sender's `close` starts the closing
//! handshake (so a receiver waiting for input must arm the close
//! deadline), a blocked write takes over the timer a receiver's keepalive
//! deadline was using. Every call through a half compares the socket's
//! progress before and after and wakes the other half when it changed in
//! a way that half may be waiting on (`Progress::wakes_sender`,
//! `Progress::wakes_receiver` in `ws.rs`). A sender's flush that empties
//! the queue while the receiver waits for input releases the idle buffers
//! itself, as the receiver's wait would have, without waking it.
//!
//! # Using them
//!
//! The receiving half answers pings and completes the closing handshake,
//! so keep polling it (as with any WebSocket). A [`WsSender::close`] sends
//! the close frame; the [`WsReceiver`] then returns `None` (or the error)
//! once the handshake is done. [`WsSender::reunite`] puts the halves back
//! together.
//!
//! As with the whole socket, reading waits while queued frames cannot be
//! written (a peer that stops reading stops our reading too, until
//! `write_timeout` fails the connection): the receiver does not read past
//! a blocked sender.
//!
//! With `futures::SinkExt` in scope, `send`, `feed`, `flush` and `close`
//! called on a `&mut WsSender` are `SinkExt`'s (its methods take `&mut`,
//! these `&self`); call `WsSender::close(&tx, code, reason)` by path for
//! this one's.

use crate::error::{Error, Result};
use crate::ws::{ReadyState, WebSocket};
use duplex_proto::{CloseCode, CloseFrame, Message, PreparedMessage};
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite};

/// The sending half of a split [`WebSocket`]. Its methods take `&self`: it
/// may be shared between tasks, whose messages are queued whole, in the
/// order their calls ran.
pub struct WsSender<S> {
    shared: Arc<Shared<S>>,
}

/// The receiving half of a split [`WebSocket`].
pub struct WsReceiver<S> {
    shared: Arc<Shared<S>>,
}

/// The one socket both halves drive.
struct Shared<S> {
    ws: Mutex<WebSocket<S>>,
    wakers: Arc<Wakers>,
    /// Wakes every waiting half: the waker the socket is polled with.
    both: Waker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Sender,
    Receiver,
}

/// The tasks waiting on each half. The sender may be shared by several
/// tasks, hence a list; a receiver is polled by one task at a time.
#[derive(Default)]
struct Wakers {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    sender: Vec<Waker>,
    receiver: Option<Waker>,
}

impl Wakers {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Wakers are only stored and taken under the lock: a panic cannot
        // leave them half-updated.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `w` as a waker of `half` (before that half polls).
    fn register(&self, half: Half, w: &Waker) {
        let mut slots = self.slots();
        match half {
            Half::Sender => {
                if !slots.sender.iter().any(|s| s.will_wake(w)) {
                    slots.sender.push(w.clone());
                }
            }
            Half::Receiver => match &mut slots.receiver {
                Some(s) if s.will_wake(w) => {}
                slot => *slot = Some(w.clone()),
            },
        }
    }

    /// Drops `w` from `half`'s wakers: its task is no longer waiting.
    fn forget(&self, half: Half, w: &Waker) {
        let mut slots = self.slots();
        match half {
            Half::Sender => slots.sender.retain(|s| !s.will_wake(w)),
            Half::Receiver => {
                if slots.receiver.as_ref().is_some_and(|s| s.will_wake(w)) {
                    slots.receiver = None;
                }
            }
        }
    }

    /// Wakes the tasks waiting on `half` (outside the lock).
    fn wake_half(&self, half: Half) {
        let (sender, receiver) = {
            let mut slots = self.slots();
            match half {
                Half::Sender => (std::mem::take(&mut slots.sender), None),
                Half::Receiver => (Vec::new(), slots.receiver.take()),
            }
        };
        sender.into_iter().chain(receiver).for_each(Waker::wake);
    }
}

/// The shared waker: readiness of the stream or the timer wakes both halves.
impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let (sender, receiver) = {
            let mut slots = self.slots();
            (std::mem::take(&mut slots.sender), slots.receiver.take())
        };
        sender.into_iter().chain(receiver).for_each(Waker::wake);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, WebSocket<S>> {
        // A panic inside a poll leaves the socket as a failed poll would;
        // the other half goes on and sees the errors that follow.
        self.ws.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the socket for `half`, then wakes the other half if
    /// `f` changed something it may be waiting on.
    fn with<T>(&self, half: Half, f: impl FnOnce(&mut WebSocket<S>) -> T) -> T {
        let (out, before, after) = {
            let mut ws = self.lock();
            let before = ws.progress();
            let out = f(&mut ws);
            (out, before, ws.progress())
        };
        match half {
            Half::Sender if after.wakes_receiver(&before) => self.wakers.wake_half(Half::Receiver),
            Half::Receiver if after.wakes_sender(&before) => self.wakers.wake_half(Half::Sender),
            _ => {}
        }
        out
    }

    /// Polls the socket for `half` with the shared waker, `cx`'s waker
    /// stored first so that no wake-up between the two is lost.
    fn poll<T>(
        &self,
        half: Half,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WebSocket<S>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.wakers.register(half, cx.waker());
        let out = self.with(half, |ws| f(ws, &mut Context::from_waker(&self.both)));
        if out.is_ready() {
            self.wakers.forget(half, cx.waker());
        }
        out
    }
}

pub(crate) fn split<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocket<S>,
) -> (WsSender<S>, WsReceiver<S>) {
    let wakers = Arc::new(Wakers::default());
    let shared = Arc::new(Shared {
        ws: Mutex::new(ws),
        both: Waker::from(wakers.clone()),
        wakers,
    });
    (
        WsSender {
            shared: shared.clone(),
        },
        WsReceiver { shared },
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsSender<S> {
    /// Sends a message and waits until it has been handed to the transport
    /// ([`WebSocket::send`]).
    pub async fn send(&self, msg: Message) -> Result<()> {
        self.start_send(msg)?;
        self.flush().await
    }

    /// Queues a message; waits only when the queue is over
    /// `write_buffer_size` (backpressure), as [`WebSocket::feed`].
    pub async fn feed(&self, msg: Message) -> Result<()> {
        self.start_send(msg)?;
        poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Sends a message framed beforehand ([`WebSocket::send_prepared`]).
    pub async fn send_prepared(&self, msg: &PreparedMessage) -> Result<()> {
        poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send_prepared(msg)?;
        self.flush().await
    }

    /// Sends a ping.
    pub async fn ping(&self, payload: &[u8]) -> Result<()> {
        self.shared
            .with(Half::Sender, |ws| ws.queue_ping(payload))?;
        self.flush().await
    }

    /// Sends a close frame (unless closing has started) and waits until it
    /// is written. The [`WsReceiver`] completes the handshake: it returns
    /// `None` once the peer answered and the transport is closed, or
    /// [`Error::CloseTimeout`] if the peer did not answer in
    /// `close_timeout`.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<()> {
        self.shared.with(Half::Sender, |ws| {
            ws.start_closing(Some(CloseFrame::new(code, reason)))
        })?;
        self.flush().await
    }

    /// Writes everything queued (by either half).
    pub async fn flush(&self) -> Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Ready when a message may be queued without going over
    /// `write_buffer_size`, flushing first if the queue is full
    /// ([`WebSocket::poll_ready`]).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.poll(Half::Sender, cx, WebSocket::poll_ready)
    }

    /// Queues a message without waiting ([`WebSocket::start_send`]).
    pub fn start_send(&self, msg: Message) -> Result<()> {
        self.shared.with(Half::Sender, |ws| ws.start_send(msg))
    }

    /// Queues a prepared message without waiting
    /// ([`WebSocket::start_send_prepared`]).
    pub fn start_send_prepared(&self, msg: &PreparedMessage) -> Result<()> {
        self.shared
            .with(Half::Sender, |ws| ws.start_send_prepared(msg))
    }

    /// The poll form of [`flush`](Self::flush) ([`WebSocket::poll_flush`]).
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.poll(Half::Sender, cx, WebSocket::poll_flush)
    }

    /// Bytes queued and not yet handed to the transport.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffered_amount()
    }

    /// The browser's `readyState`.
    pub fn ready_state(&self) -> ReadyState {
        self.shared.lock().ready_state()
    }

    /// Whether `receiver` is the other half of this socket.
    pub fn is_pair_of(&self, receiver: &WsReceiver<S>) -> bool {
        Arc::ptr_eq(&self.shared, &receiver.shared)
    }

    /// Puts the two halves of one socket back together. Fails (handing
    /// both back) if `receiver` is the half of another socket.
    pub fn reunite(self, receiver: WsReceiver<S>) -> Result<WebSocket<S>, ReuniteError<S>> {
        if !self.is_pair_of(&receiver) {
            return Err(ReuniteError(self, receiver));
        }
        drop(receiver);
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared.ws.into_inner().unwrap_or_else(|p| p.into_inner())),
            // Only the two halves hold the socket, and both are here.
            Err(_) => unreachable!("a split socket has exactly two halves"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReceiver<S> {
    /// The next data message; `None` after a clean close, `Some(Err)` once
    /// if the connection failed, dropped or its close timed out
    /// ([`WebSocket::recv`]).
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The poll form of [`recv`](Self::recv) ([`WebSocket::poll_recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.shared.poll(Half::Receiver, cx, WebSocket::poll_recv)
    }

    /// The browser's `CloseEvent.code` ([`WebSocket::close_code`]): 1005
    /// without a code, 1006 without a close frame.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.shared.lock().close_code()
    }

    /// The browser's `CloseEvent.reason` ([`WebSocket::close_reason`]).
    pub fn close_reason(&self) -> Option<String> {
        self.shared.lock().close_reason().map(str::to_string)
    }

    /// Whether both close frames were exchanged ([`WebSocket::was_clean`]).
    pub fn was_clean(&self) -> bool {
        self.shared.lock().was_clean()
    }

    /// The browser's `readyState`.
    pub fn ready_state(&self) -> ReadyState {
        self.shared.lock().ready_state()
    }
}

/// Data messages until the connection ends (as [`WsReceiver::recv`]).
impl<S: AsyncRead + AsyncWrite + Unpin> futures_core::Stream for WsReceiver<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

/// Messages queued with backpressure (`poll_ready` waits while the queue is
/// over `write_buffer_size`). `poll_close` sends a close frame with 1000
/// (unless closing has started) and flushes it; the [`WsReceiver`]
/// completes the handshake.
impl<S: AsyncRead + AsyncWrite + Unpin> futures_sink::Sink<Message> for WsSender<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WsSender::poll_ready(&self, cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<()> {
        WsSender::start_send(&self, msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WsSender::poll_flush(&self, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.with(Half::Sender, |ws| {
            ws.start_closing(Some(CloseFrame::new(CloseCode::NORMAL, "")))
        })?;
        WsSender::poll_flush(&self, cx)
    }
}

impl<S> fmt::Debug for WsSender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsSender").finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for WsReceiver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsReceiver").finish_non_exhaustive()
    }
}

/// [`WsSender::reunite`] was given halves of two different sockets; both
/// are handed back.
pub struct ReuniteError<S>(pub WsSender<S>, pub WsReceiver<S>);

impl<S> fmt::Debug for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReuniteError(..)")
    }
}

impl<S> fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of two different WebSockets")
    }
}

impl<S> std::error::Error for ReuniteError<S> {}
