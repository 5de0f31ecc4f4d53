//! The echo service: every text and binary message goes back unchanged.

use crate::shutdown::{Shutdown, Stage};
use duplex::{CloseCode, WebSocket};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{ready, Context, Poll};
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
    /// Set when the queue went over `write_buffer_size`: the echoes are
    /// written before more input is read (backpressure).
    must_flush: bool,
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
            if self.must_flush {
                if let Err(e) = ready!(ws.poll_ready(cx)) {
                    return Poll::Ready(Ended::SendFailed(e));
                }
                self.must_flush = false;
            }
            match ready!(ws.poll_recv(cx)) {
                Some(Ok(m)) => {
                    self.stats.messages += 1;
                    self.stats.bytes += m.len() as u64;
                    if let Err(e) = ws.start_send(m) {
                        return Poll::Ready(Ended::SendFailed(e));
                    }
                    self.must_flush = ws.poll_ready(cx).is_pending();
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
/// a waiting connection holds only the socket, the shutdown waiter, two
/// counters and a flag: every idle connection carries this state.
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
            poll_fn(|cx| match echo.poll(ws, cx) {
                Poll::Ready(e) => Poll::Ready(e),
                // Only `advance` wakes the waiter, and it starts at Closing.
                Poll::Pending => woken.as_mut().poll(cx).map(|()| Ended::Shutdown),
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
