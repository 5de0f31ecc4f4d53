//! Plain TCP echo: writes back every byte it reads. The physical-limit
//! reference: a WebSocket echo cannot move the same bytes for less.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(duplex_bench_peers::listen_addr()).await?;
    eprintln!("tcp-echo listening on {}", listener.local_addr()?);
    loop {
        let (mut tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if tcp.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}
