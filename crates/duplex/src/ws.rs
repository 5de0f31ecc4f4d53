//! `WebSocket<S>`: one connection over any async byte stream.

use crate::error::{Error, Result};
use bytes::BytesMut;
use duplex_proto::{CloseCode, CloseFrame, Connection, Event, Message, State};
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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

#[derive(Debug)]
struct Meta {
    protocol: Option<String>,
    extensions: Option<String>,
    url: Option<String>,
}

/// A WebSocket over the stream `S` (a `TcpStream`, a TLS stream, …), after
/// the opening handshake. Pings are answered and close frames echoed
/// automatically; [`recv`](Self::recv) returns data messages only.
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    rbuf: BytesMut,
    /// What the handshake agreed; boxed, and absent when there is nothing
    /// to say, since every idle connection carries it.
    meta: Option<Box<Meta>>,
    /// The one timer of this connection (write timeout, ping and close
    /// deadlines, the linger after our FIN), boxed and made on first use,
    /// so waiting futures do not each carry a `Sleep` inline.
    timer: Option<Pin<Box<Sleep>>>,
    transport_closed: bool,
    reported_error: bool,
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
            meta: if protocol.is_none() && extensions.is_none() && url.is_none() {
                None
            } else {
                Some(Box::new(Meta {
                    protocol,
                    extensions,
                    url,
                }))
            },
            timer: None,
            transport_closed: false,
            reported_error: false,
        }
    }

    /// The subprotocol the handshake agreed on.
    pub fn protocol(&self) -> Option<&str> {
        self.meta.as_ref()?.protocol.as_deref()
    }

    /// The negotiated `Sec-WebSocket-Extensions` value (e.g.
    /// `permessage-deflate`), as the browser's `extensions`.
    pub fn extensions(&self) -> &str {
        self.meta
            .as_ref()
            .and_then(|m| m.extensions.as_deref())
            .unwrap_or("")
    }

    /// The URL this client connected to (`None` on the server side).
    pub fn url(&self) -> Option<&str> {
        self.meta.as_ref()?.url.as_deref()
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
        self.conn.ping(payload)?;
        self.flush().await
    }

    /// Writes everything queued, coalescing frames into vectored writes.
    pub async fn flush(&mut self) -> Result<()> {
        let limit = self.conn.config().write_timeout;
        while self.conn.outbound_len() > 0 {
            let (stream, conn) = (&mut self.stream, &self.conn);
            let write = poll_fn(|cx| poll_write_outbound(stream, conn, cx));
            let n = match bounded(&mut self.timer, Limit::After(limit), write).await {
                Some(r) => r?,
                None => return Err(Error::WriteTimeout),
            };
            if n == 0 {
                return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.conn.consume_outbound(n);
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// The next data message. `None` once the connection has closed cleanly
    /// (see [`close_code`](Self::close_code)); `Some(Err(_))` once if it was
    /// failed or dropped, then `None`.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        loop {
            while let Some(ev) = self.conn.poll_event() {
                if let Event::Message(m) = ev {
                    return Some(Ok(m));
                }
            }
            if self.conn.outbound_len() > 0 {
                if let Err(e) = self.flush().await {
                    return self.abort(e).await;
                }
                continue;
            }
            if self.conn.is_closed() {
                self.finish().await;
                return self.take_error();
            }
            if self.transport_closed {
                return self.take_error();
            }
            // Timers only when some are armed (or keepalive must start):
            // reading the clock per read is measurable where it is a system
            // call (virtual machines without a vDSO clock).
            if self.conn.poll_timeout().is_some() || self.conn.config().ping_interval.is_some() {
                self.conn.handle_timeout(Instant::now().into_std());
                if self.conn.outbound_len() > 0 || self.conn.is_closed() {
                    continue;
                }
            }
            let deadline = self.conn.poll_timeout().map(Instant::from_std);
            let pending = self.conn.pending_frame_bytes();
            let read = crate::readbuf::read_into(&mut self.stream, &mut self.rbuf, pending);
            let res = match deadline {
                Some(d) => match bounded(&mut self.timer, Limit::At(d), read).await {
                    Some(r) => r,
                    None => continue,
                },
                None => read.await,
            };
            match res {
                Ok(0) => {
                    self.transport_closed = true;
                    if self.conn.received_close().is_none() && self.conn.error().is_none() {
                        return self.report(Error::AbnormalClosure);
                    }
                }
                Ok(_) => {
                    // A protocol error queues the close frame; it is reported
                    // after the close is written (next iterations).
                    let _ = self.conn.receive(&mut self.rbuf);
                }
                Err(e) => return self.abort(Error::Io(e)).await,
            }
        }
    }

    fn report(&mut self, e: Error) -> Option<Result<Message>> {
        if self.reported_error {
            None
        } else {
            self.reported_error = true;
            Some(Err(e))
        }
    }

    fn take_error(&mut self) -> Option<Result<Message>> {
        match self.conn.error().cloned() {
            Some(e) => self.report(e.into()),
            None if !self.conn.is_closed() => self.report(Error::AbnormalClosure),
            None => None,
        }
    }

    async fn abort(&mut self, e: Error) -> Option<Result<Message>> {
        self.transport_closed = true;
        let _ = self.stream.shutdown().await;
        self.report(e)
    }

    /// After the closing handshake: send FIN, then wait (bounded by
    /// `close_timeout`) for the peer's FIN so that nothing in flight is
    /// reset, and release the buffers.
    async fn finish(&mut self) {
        if self.transport_closed {
            return;
        }
        self.transport_closed = true;
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        let linger = self.conn.config().close_timeout;
        let drain = crate::readbuf::drain(&mut self.stream);
        let _ = bounded(&mut self.timer, Limit::After(linger), drain).await;
        self.rbuf = BytesMut::new();
    }

    /// Starts the closing handshake and waits until it completes (or
    /// `close_timeout` passes). Data messages that arrive meanwhile are
    /// discarded.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.conn.close(Some(CloseFrame::new(code, reason)))?;
        self.close_inner().await
    }

    /// Sends a close frame without waiting for the answer: keep calling
    /// [`recv`](Self::recv), which returns the messages the peer sent before
    /// it saw the close, then `None` once the closing handshake completes.
    pub async fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.conn.close(Some(CloseFrame::new(code, reason)))?;
        self.flush().await
    }

    /// Like [`close`](Self::close) without a status code.
    pub async fn close_without_code(&mut self) -> Result<()> {
        self.conn.close(None)?;
        self.close_inner().await
    }

    async fn close_inner(&mut self) -> Result<()> {
        let timeout: Duration = self.conn.config().close_timeout;
        let _ =
            tokio::time::timeout(timeout * 2, async { while self.recv().await.is_some() {} }).await;
        Ok(())
    }

    /// Splits into a sending and a receiving half, for use from two tasks.
    pub fn split(self) -> (crate::split::WsSender<S>, crate::split::WsReceiver<S>) {
        crate::split::split(self.stream, self.conn, self.rbuf)
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// One (vectored) write of the queued frames. The slice array lives only
/// during the poll, not in the state of a waiting future.
fn poll_write_outbound<S: AsyncWrite + Unpin>(
    stream: &mut S,
    conn: &Connection,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let count = conn.outbound_slices(&mut slices);
    let stream = Pin::new(stream);
    if count == 1 {
        stream.poll_write(cx, &slices[0])
    } else {
        stream.poll_write_vectored(cx, &slices[..count])
    }
}

/// When a [`Deadline`] expires.
#[derive(Clone, Copy)]
enum Limit {
    /// This long after the first poll that finds `fut` pending.
    After(Duration),
    /// At this instant.
    At(Instant),
}

pin_project_lite::pin_project! {
    /// `fut` bounded in time by the connection's one reusable timer: the
    /// clock is read and the timer armed only once `fut` is found pending,
    /// and no `Sleep` lives inside the waiting future.
    struct Deadline<'a, F> {
        #[pin]
        fut: F,
        timer: &'a mut Option<Pin<Box<Sleep>>>,
        limit: Limit,
        armed: bool,
    }
}

impl<F: Future> Future for Deadline<'_, F> {
    /// `None` if the time ran out first.
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        if !*this.armed {
            *this.armed = true;
            let deadline = match *this.limit {
                Limit::After(d) => Instant::now() + d,
                Limit::At(t) => t,
            };
            match this.timer.as_mut() {
                Some(s) => s.as_mut().reset(deadline),
                None => **this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match this.timer.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

fn bounded<F: Future>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Limit,
    fut: F,
) -> Deadline<'_, F> {
    Deadline {
        fut,
        timer,
        limit,
        armed: false,
    }
}
