//! A plain TCP socket shared by reference count, so that the hub can write
//! a broadcast straight into an idle subscriber's socket
//! ([`crate::hub::Mailbox`]'s direct writes) while the connection's task
//! reads from it and writes its own replies.
//!
//! Who writes when is decided by the mailbox: the hub writes only while
//! the connection has granted it (nothing queued, nothing half-written),
//! under the mailbox's lock, and the connection takes the grant back
//! under that lock before it writes anything. The socket stays open until
//! the last holder lets go, so a write never reaches a reused descriptor.

use duplex_proto::SharedFraming;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A `TcpStream` behind an `Arc`, readable and writable as a stream.
#[derive(Debug, Clone)]
pub struct SharedTcp(Arc<DirectSocket>);

/// The shared socket, and the bytes its WebSocket sends for a shared
/// (prepared) message.
#[derive(Debug)]
pub struct DirectSocket {
    tcp: TcpStream,
    framing: Option<SharedFraming>,
}

impl DirectSocket {
    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// How the connection frames a shared message
    /// ([`Connection::shared_framing`](duplex_proto::Connection::shared_framing)):
    /// `None` if it frames each for itself, and then nobody else may write
    /// its frames.
    pub fn framing(&self) -> Option<SharedFraming> {
        self.framing
    }
}

impl SharedTcp {
    /// Shares `tcp`, whose WebSocket frames shared messages as `framing`
    /// says.
    pub fn new(tcp: TcpStream, framing: Option<SharedFraming>) -> Self {
        SharedTcp(Arc::new(DirectSocket { tcp, framing }))
    }

    /// The socket, for another writer.
    pub fn socket(&self) -> &Arc<DirectSocket> {
        &self.0
    }
}

impl SharedTcp {
    /// Waits until the socket is writable and makes `write` (a `try_`
    /// write), again after a readiness that proved stale.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.tcp.poll_write_ready(cx))?;
            match write(&self.0.tcp) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.tcp.poll_read_ready(cx))?;
            match self.0.tcp.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl duplex::CoalesceFin for SharedTcp {
    fn try_write_then_fin(&self, buf: &[u8]) -> io::Result<usize> {
        duplex::CoalesceFin::try_write_then_fin(&self.0.tcp, buf)
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = socket2::SockRef::from(&self.0.tcp).shutdown(std::net::Shutdown::Write);
        match r {
            // Already shut down or reset: nothing left to do.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_writes_and_shuts_down_through_the_share() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = l.accept().await.unwrap();
        let mut s = SharedTcp::new(tcp, None);
        let other = s.socket().clone();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        s.write_all(b"one ").await.unwrap();
        assert_eq!(
            other.tcp().try_write(b"two").unwrap(),
            3,
            "the other writer"
        );
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"one two");
    }
}
