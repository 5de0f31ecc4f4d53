//! The echo service: every text and binary message goes back unchanged.

use crate::shutdown::{Shutdown, Stage};
use duplex::{CloseCode, WebSocket};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite};

/// What happened on one echo connection, for the connection's log line.
#[derive(Debug, Default, Clone)]
pub struct EchoStats {
    /// Messages echoed.
    pub messages: u64,
    /// Payload bytes echoed.
    pub bytes: u64,
    /// Why the connection ended, if not a clean close.
    pub error: Option<String>,
}

enum Ended {
    /// The connection closed (cleanly or not: `WebSocket` says which).
    Closed,
    /// Receiving failed; the connection is closing.
    RecvFailed(duplex::Error),
    /// Sending failed; the connection is gone.
    SendFailed(duplex::Error),
    Shutdown,
}

/// The echo loop's own state.
#[derive(Default)]
struct Echo {
    stats: Counts,
    /// The waker the shutdown waiter holds (see [`run`]).
    registered: Option<Waker>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    messages: u64,
    bytes: u64,
}

impl Echo {
    /// Echoes whatever is ready; `Pending` while waiting for the peer.
    fn poll<S>(&mut self, ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            // Over `write_buffer_size`, the echoes are written before more
            // input is read (backpressure); under it, a comparison.
            if let Err(e) = ready!(ws.poll_ready(cx)) {
                return Poll::Ready(Ended::SendFailed(e));
            }
            match ready!(ws.poll_recv(cx)) {
                Some(Ok(m)) => {
                    self.stats.messages += 1;
                    self.stats.bytes += m.len() as u64;
                    if let Err(e) = ws.start_send(m) {
                        return Poll::Ready(Ended::SendFailed(e));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Ended::RecvFailed(e)),
                None => return Poll::Ready(Ended::Closed),
            }
        }
    }
}

/// Echoes until the peer closes, the connection fails, or `shutdown`
/// reaches [`Stage::Closing`] (then closes with 1001, abandoned at
/// [`Stage::Now`]). Replies are queued and leave together whenever the
/// connection waits for input, so pipelined messages share writes.
///
/// The loop is one poll function over the `WebSocket`'s poll methods, so
/// a waiting connection holds only the socket, the shutdown waiter, the
/// waker it holds and two counters: every idle connection carries this
/// state.
pub async fn run<S>(ws: &mut WebSocket<S>, shutdown: &Shutdown) -> EchoStats
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut echo = Echo::default();
    let ended = {
        let mut woken = pin!(shutdown.waiter());
        woken.as_mut().enable();
        if shutdown.stage() >= Stage::Closing {
            Ended::Shutdown
        } else {
            // Polling the waiter takes its `Notify`'s lock, one lock for
            // all of the server's connections: it is polled only to hand
            // it a waker it does not hold yet. Otherwise the stage (an
            // atomic, set before `advance` wakes the waiters) says whether
            // it fired. Only `advance` wakes it, and it starts at Closing.
            poll_fn(|cx| match echo.poll(ws, cx) {
                Poll::Ready(e) => Poll::Ready(e),
                Poll::Pending
                    if echo
                        .registered
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker())) =>
                {
                    if shutdown.stage() >= Stage::Closing {
                        Poll::Ready(Ended::Shutdown)
                    } else {
                        Poll::Pending
                    }
                }
                Poll::Pending => {
                    echo.registered = Some(cx.waker().clone());
                    woken.as_mut().poll(cx).map(|()| Ended::Shutdown)
                }
            })
            .await
        }
    };
    // Boxed: the closing states are the largest of this function's, and
    // every idle connection would carry them.
    Box::pin(finish(ws, shutdown, ended, echo.stats)).await
}

async fn finish<S>(
    ws: &mut WebSocket<S>,
    shutdown: &Shutdown,
    ended: Ended,
    counts: Counts,
) -> EchoStats
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stats = EchoStats {
        messages: counts.messages,
        bytes: counts.bytes,
        error: None,
    };
    match ended {
        Ended::Closed => {}
        Ended::SendFailed(e) => stats.error = Some(e.to_string()),
        Ended::RecvFailed(e) => {
            stats.error = Some(e.to_string());
            // Let the close frame go out and the transport close.
            while ws.recv().await.is_some() {}
        }
        Ended::Shutdown => {
            let close = ws.close(CloseCode::GOING_AWAY, "server shutting down");
            tokio::select! {
                _ = close => {}
                _ = shutdown.reached(Stage::Now) => {}
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::tests::{poll, woken, Count};
    use bytes::BytesMut;
    use duplex_proto::{Config, Connection, Role};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    /// While its waker stays the same the loop reads the shutdown stage
    /// instead of polling its waiter; polled with another waker, it hands
    /// the waiter that one, which the shutdown then wakes, and the
    /// connection ends with 1001.
    #[tokio::test]
    async fn shutdown_wakes_the_waker_of_the_latest_poll() {
        let (mut client, server) = tokio::io::duplex(4096);
        let conn = Connection::new(Role::Server, Config::default().with_deflate(None), None);
        let mut ws = WebSocket::from_parts(server, conn, BytesMut::new(), None, None, None);
        let shutdown = Shutdown::new();
        let mut echo = pin!(run(&mut ws, &shutdown));
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        assert!(poll(echo.as_mut(), &a).is_pending());
        assert!(poll(echo.as_mut(), &a).is_pending());
        assert!(poll(echo.as_mut(), &b).is_pending());
        shutdown.advance(Stage::Closing);
        assert_eq!(woken(&b), 1, "the latest waker is woken");
        assert_eq!(woken(&a), 0, "the earlier one is not");
        // Closing: the close frame goes out, then the loop waits for the
        // peer's answer until the stage is Now.
        assert!(poll(echo.as_mut(), &b).is_pending());
        let mut frame = [0u8; 4];
        client.read_exact(&mut frame).await.unwrap();
        let reason = "server shutting down";
        assert_eq!(frame[..2], [0x88, 2 + reason.len() as u8]);
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1001);
        shutdown.advance(Stage::Now);
        match poll(echo.as_mut(), &b) {
            Poll::Ready(stats) => assert_eq!(stats.messages, 0),
            Poll::Pending => panic!("the loop ends once the stage is Now"),
        }
    }
}
