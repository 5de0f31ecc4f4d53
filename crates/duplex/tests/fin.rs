//! A server's reply to the peer's close frame and its FIN leave in one TCP
//! segment when the `WebSocket` is told it may (`coalesce_fin`), counted
//! by the client's kernel (`TCP_INFO`'s segments received).
#![cfg(target_os = "linux")]

// The raw client; not the `both!` cases.
#[allow(unused_macros)]
mod support;

use std::os::fd::AsRawFd;
use std::time::Duration;
use support::{client_frame, raw_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Closing handshakes counted per case.
const ROUNDS: u32 = 20;

/// Segments `tcp` has received so far.
fn segments_in(tcp: &TcpStream) -> u32 {
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is a
    // valid value; `getsockopt` writes at most `len` bytes into it and
    // `fd` is an open socket for the duration of the call (borrowed from
    // `tcp`).
    let (rc, info) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc, info)
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

/// Opens `ROUNDS` connections to a server that echoes until the closing
/// handshake, closes each from the client side, and returns how many
/// segments the client received from its close frame to the end of the
/// stream, in all.
async fn segments_for_close_reply_and_fin(coalesce: bool) -> u32 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        for _ in 0..ROUNDS {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            if coalesce {
                ws.coalesce_fin();
            }
            while let Some(m) = ws.recv().await {
                ws.send(m.unwrap()).await.unwrap();
            }
            assert!(ws.was_clean());
        }
    });
    let mut total = 0;
    for _ in 0..ROUNDS {
        let mut tcp = raw_client(&url).await;
        // A message first, so the close comes on a connection in use.
        tcp.write_all(&client_frame(0x1, b"hi")).await.unwrap();
        let mut echo = [0u8; 4];
        tcp.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"\x81\x02hi");
        let before = segments_in(&tcp);
        tcp.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
            .await
            .expect("the server closes")
            .unwrap();
        assert_eq!(rest, b"\x88\x02\x03\xe8", "the close reply, then the end");
        total += segments_in(&tcp) - before;
    }
    server.await.unwrap();
    total
}

#[tokio::test]
async fn a_server_sends_its_close_reply_and_fin_in_one_segment() {
    // One segment per closing handshake; a delayed acknowledgement of the
    // client's close frame, sent only if the server took longer than the
    // delayed-ACK timeout (≥ 40 ms) to answer, would add one.
    let coalesced = segments_for_close_reply_and_fin(true).await;
    assert!(
        coalesced <= ROUNDS + ROUNDS / 4,
        "{coalesced} segments for {ROUNDS} close replies and FINs"
    );
    // Without it the FIN is a segment of its own: the count above is the
    // kernel's, not an artefact of the measurement.
    let separate = segments_for_close_reply_and_fin(false).await;
    assert!(
        separate >= 2 * ROUNDS,
        "{separate} segments for {ROUNDS} close replies and FINs"
    );
}
