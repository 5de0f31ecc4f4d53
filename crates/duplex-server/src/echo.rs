//! The echo service: every text and binary message goes back unchanged.

use duplex::{CloseCode, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

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

enum Step {
    Msg(Option<duplex::Result<duplex::Message>>),
    Shutdown,
}

/// Echoes until the peer closes, the connection fails, or `shutdown` fires
/// (then closes with 1001). Replies are queued and leave together whenever
/// the connection waits for input, so pipelined messages share writes.
pub async fn run<S>(ws: &mut WebSocket<S>, mut shutdown: watch::Receiver<bool>) -> EchoStats
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stats = EchoStats::default();
    // One shutdown future for the whole connection: creating it per message
    // registered and dropped a watch waiter each time (a lock, measurable at
    // small messages). `biased` skips select's random branch choice.
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    loop {
        let step = tokio::select! {
            biased;
            m = ws.recv() => Step::Msg(m),
            _ = &mut stop => Step::Shutdown,
        };
        match step {
            Step::Msg(Some(Ok(m))) => {
                stats.messages += 1;
                stats.bytes += m.len() as u64;
                if let Err(e) = ws.feed(m).await {
                    stats.error = Some(e.to_string());
                    break;
                }
            }
            Step::Msg(Some(Err(e))) => {
                stats.error = Some(e.to_string());
                // Let the close frame go out and the transport close.
                while ws.recv().await.is_some() {}
                break;
            }
            Step::Msg(None) => break,
            Step::Shutdown => {
                // Boxed: the closing handshake's state is the largest of
                // this loop's, and every idle connection would carry it.
                let _ = Box::pin(ws.close(CloseCode::GOING_AWAY, "server shutting down")).await;
                break;
            }
        }
    }
    stats
}
