//! An idle connection holds no buffers, however busy it was (DESIGN §3):
//! counted on the heap, for a whole `WebSocket` and for split halves.
//!
//! Every allocation of this test binary is counted, so its tests run one
//! at a time and measure what the connections hold once they wait, per
//! connection, after bursts that grow each buffer a connection has: a
//! 256 KiB message read (the read buffer), one echoed (queued by
//! reference), a batch of small frames (coalesced in the outbound buffer),
//! and, with halves, a batch sent while the receiving half already waits.

#[macro_use]
mod support;

use duplex::{ClientOptions, Message, Proxy};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Duration;
use support::{client_frame, raw_client, Mode, Ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The tests of this binary, one at a time: the count is process-wide.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Connections measured together.
const CONNECTIONS: usize = 32;
/// The large message of the burst.
const BURST: usize = 256 << 10;
/// The small frames of the burst: 63 of 2 KiB, 126 KiB coalesced (64
/// fill the outbound buffer exactly: see the exact-fit tests).
const SMALL: usize = 2 << 10;
const SMALL_COUNT: usize = 63;
/// What an idle connection may hold (the server end and the raw client's
/// socket; both ends for the client test). A buffer kept from the burst
/// is 128 KiB or more: the bound catches it 16 times over.
const PER_CONNECTION: isize = 8 << 10;

both!(
    idle_server_ends_hold_no_buffers_after_a_burst,
    idle_client_ends_hold_no_buffers_after_a_burst,
    idle_server_ends_hold_no_buffers_after_an_exact_fit_batch,
    idle_client_ends_hold_no_buffers_after_one_large_message,
);

/// Heap bytes in use (reallocations are counted in both totals already).
fn heap() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

/// Runs `open` once to warm up what is made once (the thread's read
/// scratch, the runtime's timer and I/O structures), then `CONNECTIONS`
/// times, and checks what each connection holds once all wait.
async fn measure<F, Fut>(mode: Mode, open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    open().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = heap();
    for _ in 0..CONNECTIONS {
        open().await;
    }
    // Let every end reach its wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_connection = (heap() - before) / CONNECTIONS as isize;
    println!("{mode:?}: {per_connection} bytes per idle connection");
    assert!(
        per_connection < PER_CONNECTION,
        "{mode:?}: {per_connection} bytes per idle connection"
    );
}

/// The server end under test: echoes the large message, then on "burst"
/// sends `small` small frames (from the sending half while the receiving
/// half waits, when split), then waits for input for good.
async fn serve(tcp: TcpStream, mode: Mode, small_count: usize) {
    let ws = duplex::accept(tcp).await.unwrap();
    let small = || Message::binary(vec![7u8; SMALL]);
    match Ws::new(ws, mode) {
        Ws::Whole(mut ws) => {
            let m = ws.recv().await.unwrap().unwrap();
            ws.send(m).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("burst"));
            for _ in 0..small_count {
                ws.feed(small()).await.unwrap();
            }
            ws.flush().await.unwrap();
            while ws.recv().await.is_some() {}
        }
        Ws::Halves(tx, mut rx) => {
            let m = rx.recv().await.unwrap().unwrap();
            tx.send(m).await.unwrap();
            assert_eq!(rx.recv().await.unwrap().unwrap(), Message::text("burst"));
            let (waiting_tx, waiting) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut first = Some(waiting_tx);
                let recv = std::future::poll_fn(|cx| {
                    let r = rx.poll_recv(cx);
                    if let (true, Some(w)) = (r.is_pending(), first.take()) {
                        let _ = w.send(());
                    }
                    r
                });
                if recv.await.is_some() {
                    while rx.recv().await.is_some() {}
                }
            });
            waiting.await.unwrap();
            for _ in 0..small_count {
                tx.feed(small()).await.unwrap();
            }
            tx.flush().await.unwrap();
            std::future::pending::<()>().await
        }
    }
}

async fn idle_server_ends_hold_no_buffers_after_a_burst(mode: Mode) {
    server_ends(mode, SMALL_COUNT).await
}

async fn idle_server_ends_hold_no_buffers_after_an_exact_fit_batch(mode: Mode) {
    server_ends(mode, 64).await
}

/// A listener serving each connection with `serve` in its own task;
/// returns its ws:// URL.
async fn listen<F, Fut>(serve: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::spawn(serve(tcp));
        }
    });
    url
}

/// Server ends (the raw clients' sockets measured with them).
async fn server_ends(mode: Mode, small_count: usize) {
    let _serial = SERIAL.lock().await;
    let url = listen(move |tcp| serve(tcp, mode, small_count)).await;
    measure(mode, || async {
        let mut tcp = raw_client(&url).await;
        let big = vec![b'x'; BURST];
        tcp.write_all(&client_frame(0x1, &big)).await.unwrap();
        // The echo: a 10-byte header (64-bit length), the payload.
        let mut echo = vec![0u8; 10 + BURST];
        tcp.read_exact(&mut echo).await.unwrap();
        assert!(echo[10..] == big[..]);
        tcp.write_all(&client_frame(0x1, b"burst")).await.unwrap();
        let mut frames = vec![0u8; small_count * (4 + SMALL)];
        tcp.read_exact(&mut frames).await.unwrap();
        // Keep the connection open, reading nothing more.
        tokio::spawn(async move {
            let _keep = tcp;
            std::future::pending::<()>().await
        });
    })
    .await;
}

async fn idle_client_ends_hold_no_buffers_after_a_burst(mode: Mode) {
    client_ends(mode, SMALL_COUNT).await
}

async fn idle_client_ends_hold_no_buffers_after_one_large_message(mode: Mode) {
    client_ends(mode, 0).await
}

/// Duplex clients under test (the server ends measured with them): each
/// sends the large message and gets it back, then `small_count` binary
/// frames the server only reads.
async fn client_ends(mode: Mode, small_count: usize) {
    let _serial = SERIAL.lock().await;
    let url = listen(|tcp| async move {
        let mut ws = duplex::accept(tcp).await.unwrap();
        while let Some(Ok(m)) = ws.recv().await {
            if matches!(m, Message::Text(_)) && ws.send(m).await.is_err() {
                break;
            }
        }
    })
    .await;
    measure(mode, || async {
        let opts = ClientOptions {
            // No compression: its state is what a connection chose to keep.
            config: duplex::Config::default().with_deflate(None),
            proxy: Proxy::None,
            ..Default::default()
        };
        let ws = duplex::connect_with(&url, opts).await.unwrap();
        let text = Message::text("x".repeat(BURST));
        let mut ws = Ws::new(ws, mode);
        ws.send(text.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), text);
        for _ in 0..small_count {
            ws.feed(Message::binary(vec![7u8; SMALL])).await.unwrap();
        }
        ws.flush().await.unwrap();
        tokio::spawn(async move { while ws.recv().await.is_some() {} });
    })
    .await;
}
