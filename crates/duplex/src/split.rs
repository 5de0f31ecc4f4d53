//! Halves of a [`WebSocket`](crate::WebSocket) for two tasks: one sends,
//! one receives.
//!
//! Both halves share the protocol state behind a `std::sync::Mutex` that is
//! never held across an `.await`, and the write half of the stream behind a
//! `tokio::sync::Mutex`: whoever holds it drains the outbound queue in order,
//! chunk by chunk, without copying. The receiving half answers pings and
//! echoes the peer's close through that same path, so it must be polled for
//! the connection to make progress (as with any WebSocket).

use crate::error::{Error, Result};
use bytes::BytesMut;
use duplex_proto::{CloseCode, CloseFrame, Connection, Event, Message};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

struct Shared<S> {
    conn: Mutex<Connection>,
    writer: tokio::sync::Mutex<WriteHalf<S>>,
}

impl<S: AsyncRead + AsyncWrite> Shared<S> {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters more than the panic itself; keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn flush(&self) -> Result<()> {
        let mut w = self.writer.lock().await;
        let limit = self.conn().config().write_timeout;
        loop {
            let chunk = self.conn().take_outbound_chunk();
            let Some(mut b) = chunk else { break };
            while !b.is_empty() {
                let n = tokio::time::timeout(limit, w.write(&b))
                    .await
                    .map_err(|_| Error::WriteTimeout)??;
                if n == 0 {
                    return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
                }
                bytes::Buf::advance(&mut b, n);
            }
        }
        w.flush().await?;
        Ok(())
    }
}

/// The sending half.
pub struct WsSender<S> {
    shared: Arc<Shared<S>>,
}

/// The receiving half.
pub struct WsReceiver<S> {
    shared: Arc<Shared<S>>,
    reader: ReadHalf<S>,
    rbuf: BytesMut,
    finished: bool,
    shut_down: bool,
    reported: bool,
}

pub(crate) fn split<S: AsyncRead + AsyncWrite>(
    stream: S,
    conn: Connection,
    rbuf: BytesMut,
) -> (WsSender<S>, WsReceiver<S>) {
    let (reader, writer) = tokio::io::split(stream);
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        writer: tokio::sync::Mutex::new(writer),
    });
    (
        WsSender {
            shared: shared.clone(),
        },
        WsReceiver {
            shared,
            reader,
            rbuf,
            finished: false,
            shut_down: false,
            reported: false,
        },
    )
}

impl<S: AsyncRead + AsyncWrite> WsSender<S> {
    /// Sends a message and waits until it has been written.
    pub async fn send(&self, msg: Message) -> Result<()> {
        self.shared.conn().send(msg)?;
        self.shared.flush().await
    }

    /// Sends a ping.
    pub async fn ping(&self, payload: &[u8]) -> Result<()> {
        self.shared.conn().ping(payload)?;
        self.shared.flush().await
    }

    /// Sends a close frame; the receiving half completes the handshake.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<()> {
        self.shared
            .conn()
            .close(Some(CloseFrame::new(code, reason)))?;
        self.shared.flush().await
    }

    /// Bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.shared.conn().outbound_len()
    }
}

impl<S: AsyncRead + AsyncWrite> WsReceiver<S> {
    /// The next data message; `None` after a clean close, `Some(Err)` once
    /// if the connection failed or dropped.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        loop {
            let (msg, pending_out, closed, deadline) = {
                let mut c = self.shared.conn();
                let mut msg = None;
                while let Some(ev) = c.poll_event() {
                    if let Event::Message(m) = ev {
                        msg = Some(m);
                        break;
                    }
                }
                if msg.is_none() && c.wants_clock() {
                    c.handle_timeout(Instant::now().into_std());
                }
                (msg, c.outbound_len() > 0, c.is_closed(), c.poll_timeout())
            };
            if let Some(m) = msg {
                return Some(Ok(m));
            }
            if pending_out {
                if let Err(e) = self.shared.flush().await {
                    self.finished = true;
                    return self.report(e);
                }
                continue;
            }
            if closed || self.finished {
                self.finish().await;
                let err = self.shared.conn().error().cloned();
                return match err {
                    Some(e) => self.report(e.into()),
                    None if !self.shared.conn().is_closed() => self.report(Error::AbnormalClosure),
                    None => None,
                };
            }
            let pending = self.shared.conn().pending_frame_bytes();
            let read = crate::readbuf::read_into(&mut self.reader, &mut self.rbuf, pending);
            let res = match deadline {
                Some(d) => match tokio::time::timeout_at(Instant::from_std(d), read).await {
                    Ok(r) => r,
                    Err(_) => continue,
                },
                None => read.await,
            };
            match res {
                Ok(0) => {
                    self.finished = true;
                    let c = self.shared.conn();
                    if c.received_close().is_none() && c.error().is_none() {
                        drop(c);
                        return self.report(Error::AbnormalClosure);
                    }
                }
                Ok(_) => {
                    let _ = self.shared.conn().receive(&mut self.rbuf);
                }
                Err(e) => {
                    self.finished = true;
                    return self.report(Error::Io(e));
                }
            }
        }
    }

    fn report(&mut self, e: Error) -> Option<Result<Message>> {
        if std::mem::replace(&mut self.reported, true) {
            None
        } else {
            Some(Err(e))
        }
    }

    async fn finish(&mut self) {
        self.finished = true;
        if std::mem::replace(&mut self.shut_down, true) {
            return;
        }
        let _ = self.shared.flush().await;
        let _ = self.shared.writer.lock().await.shutdown().await;
        let linger = self.shared.conn().config().close_timeout;
        let _ = tokio::time::timeout(linger, crate::readbuf::drain(&mut self.reader)).await;
        self.rbuf = BytesMut::new();
    }

    /// The peer's close code, as the browser reports it (1005 without a
    /// code, 1006 without a close frame).
    pub fn close_code(&self) -> Option<CloseCode> {
        let c = self.shared.conn();
        match c.received_close() {
            Some(Some(f)) => Some(f.code),
            Some(None) => Some(CloseCode::NO_STATUS),
            None if self.finished || c.is_closed() => Some(CloseCode::ABNORMAL),
            None => None,
        }
    }

    /// Whether both close frames were exchanged.
    pub fn was_clean(&self) -> bool {
        self.shared.conn().was_clean()
    }
}
