//! Split halves share one driver: what one half does wakes the other when
//! it changes what that half waits for, and stream or timer readiness
//! reaches both, whichever polled last.
//!
//! The halves are polled by hand with counting wakers over an in-memory
//! stream that, like tokio's own streams, keeps one waker per direction
//! (the last one registered) and whose readiness can change without
//! waking anyone, to stand for a wake-up the other half consumed.

use bytes::BytesMut;
use duplex::proto::{Connection, Role};
use duplex::{CloseCode, Config, Error, Message, WebSocket, WsReceiver, WsSender};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An in-memory stream: reads what the test pushes, writes while open.
#[derive(Debug, Clone, Default)]
struct Mock(Arc<Mutex<Pipe>>);

#[derive(Debug, Default)]
struct Pipe {
    inbound: Vec<u8>,
    read_waker: Option<Waker>,
    writable: bool,
    written: usize,
    write_waker: Option<Waker>,
}

impl Mock {
    fn writable(writable: bool) -> Self {
        let m = Mock::default();
        m.0.lock().unwrap().writable = writable;
        m
    }

    /// Lets writes through; wakes the registered writer only if `wake`.
    fn open_writes(&self, wake: bool) {
        let w = {
            let mut p = self.0.lock().unwrap();
            p.writable = true;
            p.write_waker.take()
        };
        if let (true, Some(w)) = (wake, w) {
            w.wake();
        }
    }

    fn written(&self) -> usize {
        self.0.lock().unwrap().written
    }
}

impl AsyncRead for Mock {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut p = self.0.lock().unwrap();
        if p.inbound.is_empty() {
            p.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = p.inbound.len().min(buf.remaining());
        buf.put_slice(&p.inbound[..n]);
        p.inbound.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut p = self.0.lock().unwrap();
        if !p.writable {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        p.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A waker that counts its wake-ups: one per half, standing for its task.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Task {
    count: Arc<Count>,
    waker: Waker,
}

impl Task {
    fn new() -> Self {
        let count = Arc::new(Count::default());
        Task {
            waker: Waker::from(count.clone()),
            count,
        }
    }

    fn cx(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    fn woken(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }
}

/// Server halves over `mock` (server: no masking, so the bytes written are
/// the frames' sizes).
fn halves(mock: &Mock, config: Config) -> (WsSender<Mock>, WsReceiver<Mock>) {
    let conn = Connection::new(Role::Server, config, None);
    WebSocket::from_parts(mock.clone(), conn, BytesMut::new(), None, None, None).split()
}

fn small_queue() -> Config {
    Config::default().with_write_buffer_size(1024)
}

#[tokio::test]
async fn a_sender_waiting_for_room_is_woken_when_the_receiver_drains_the_queue() {
    let mock = Mock::writable(false);
    let (tx, mut rx) = halves(&mock, small_queue());
    let (sender, receiver) = (Task::new(), Task::new());
    tx.start_send(Message::binary(vec![1u8; 4096])).unwrap();
    assert!(tx.poll_ready(&mut sender.cx()).is_pending(), "queue full");
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending());
    // The socket becomes writable and the receiver runs first (its wake-up
    // came from elsewhere): its read path writes the sender's queue out.
    mock.open_writes(false);
    let before = sender.woken();
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending(), "no input");
    assert_eq!(mock.written(), 4096 + 4);
    assert!(
        sender.woken() > before,
        "the sender must look again: its queue drained"
    );
    assert!(matches!(
        tx.poll_ready(&mut sender.cx()),
        Poll::Ready(Ok(()))
    ));
}

#[tokio::test]
async fn readiness_reaches_both_halves_whichever_polled_last() {
    let mock = Mock::writable(false);
    let (tx, mut rx) = halves(&mock, small_queue());
    let (sender, receiver) = (Task::new(), Task::new());
    tx.start_send(Message::binary(vec![1u8; 4096])).unwrap();
    // Both wait on the one write waker the stream keeps: the receiver
    // polled last, yet the sender must hear of the writability too.
    assert!(tx.poll_ready(&mut sender.cx()).is_pending());
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending());
    mock.open_writes(true);
    assert!(sender.woken() >= 1, "sender woken");
    assert!(receiver.woken() >= 1, "receiver woken");
    // And the other way round.
    let mock = Mock::writable(false);
    let (tx, mut rx) = halves(&mock, small_queue());
    let (sender, receiver) = (Task::new(), Task::new());
    tx.start_send(Message::binary(vec![1u8; 4096])).unwrap();
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending());
    assert!(tx.poll_ready(&mut sender.cx()).is_pending());
    mock.open_writes(true);
    assert!(sender.woken() >= 1 && receiver.woken() >= 1);
}

#[tokio::test]
async fn a_receiver_waiting_for_input_is_woken_when_the_sender_starts_closing() {
    let mock = Mock::writable(true);
    let config = Config::default().with_close_timeout(Duration::from_millis(50));
    let (tx, mut rx) = halves(&mock, config);
    let (sender, receiver) = (Task::new(), Task::new());
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending(), "idle");
    // The close frame is written at once: no stream event for the receiver,
    // which must wake to arm the close deadline.
    let close = pin!(tx.close(CloseCode::NORMAL, "bye"));
    assert!(matches!(close.poll(&mut sender.cx()), Poll::Ready(Ok(()))));
    assert!(receiver.woken() >= 1, "the receiver must arm its deadline");
    // Driven for real now: the peer never answers, the deadline ends it.
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the close deadline fired");
    assert!(matches!(end, Some(Err(Error::CloseTimeout))), "{end:?}");
    assert!(rx.recv().await.is_none());
    assert_eq!(rx.close_code(), Some(CloseCode::ABNORMAL));
}

#[tokio::test]
async fn a_receiver_whose_keepalive_timer_a_write_took_is_woken() {
    let mock = Mock::writable(false);
    let config = small_queue().with_ping_interval(Some(Duration::from_secs(60)));
    let (tx, mut rx) = halves(&mock, config);
    let (sender, receiver) = (Task::new(), Task::new());
    // The receiver waits for input with its keepalive deadline on the timer.
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending());
    let before = receiver.woken();
    // A blocked write arms the same timer for `write_timeout`.
    tx.start_send(Message::binary(vec![1u8; 4096])).unwrap();
    assert!(tx.poll_flush(&mut sender.cx()).is_pending());
    assert!(receiver.woken() > before, "its deadline is no longer armed");
}

#[tokio::test]
async fn both_halves_make_progress_through_a_tiny_single_waker_pipe() {
    // tokio's in-memory pipe keeps one waker per direction, like a
    // TcpStream: 64 bytes of buffer makes every write and read wait.
    let (client_io, server_io) = tokio::io::duplex(64);
    let config = Config::default().with_write_buffer_size(256);
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        let conn = Connection::new(Role::Server, server_config, None);
        let mut ws = WebSocket::from_parts(server_io, conn, BytesMut::new(), None, None, None);
        let mut got = 0usize;
        while let Some(m) = ws.recv().await {
            got += m.unwrap().len();
            if got == 200 * 1000 {
                ws.send(Message::text("all here")).await.unwrap();
            }
        }
        got
    });
    let conn = Connection::new(Role::Client, config, None);
    let ws = WebSocket::from_parts(client_io, conn, BytesMut::new(), None, None, None);
    let (tx, mut rx) = ws.split();
    let sending = tokio::spawn(async move {
        for i in 0..200u32 {
            tx.feed(Message::binary(vec![i as u8; 1000])).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    // The receiver polls all along: its read path writes the sender's
    // queue too, and both wait on the pipe's one write waker.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no lost wake-up")
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::text("all here"));
    let tx = sending.await.unwrap();
    tx.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(rx.recv().await.is_none());
    assert!(rx.was_clean());
    assert_eq!(server.await.unwrap(), 200 * 1000);
}

#[tokio::test]
async fn halves_reunite_into_the_socket_they_came_from() {
    let (a, b) = (Mock::writable(true), Mock::writable(true));
    let (tx_a, rx_a) = halves(&a, Config::default());
    let (tx_b, rx_b) = halves(&b, Config::default());
    assert!(tx_a.is_pair_of(&rx_a) && !tx_a.is_pair_of(&rx_b));
    let duplex::ReuniteError(tx_a, rx_b) = tx_a.reunite(rx_b).unwrap_err();
    let mut ws = tx_a.reunite(rx_a).unwrap();
    ws.send(Message::text("whole again")).await.unwrap();
    assert_eq!(a.written(), 2 + 11);
    let _ = (tx_b.reunite(rx_b).unwrap(), b);
}

#[tokio::test]
async fn a_receiver_waiting_to_write_is_woken_when_the_sender_writes_the_queue() {
    let mock = Mock::writable(false);
    let (tx, mut rx) = halves(&mock, small_queue());
    let (sender, receiver) = (Task::new(), Task::new());
    tx.start_send(Message::binary(vec![1u8; 4096])).unwrap();
    // The receiver reads only once the queue is written.
    assert!(rx.poll_recv(&mut receiver.cx()).is_pending());
    mock.open_writes(false);
    let before = receiver.woken();
    assert!(matches!(
        tx.poll_flush(&mut sender.cx()),
        Poll::Ready(Ok(()))
    ));
    assert!(receiver.woken() > before, "the receiver must go on to read");
}

/// The halves go to other tasks (and the sender may be shared).
#[test]
fn halves_are_send_and_the_sender_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<WsSender<tokio::net::TcpStream>>();
    sync::<WsSender<tokio::net::TcpStream>>();
    send::<WsReceiver<tokio::net::TcpStream>>();
}
