//! tokio-tungstenite echo on any path, as in its own echo-server example:
//! the stream of incoming messages is forwarded into the sink, which flushes
//! only when no further message is ready, so pipelined replies share writes.
//! No compression (tungstenite has none).

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(duplex_bench_peers::listen_addr()).await?;
    eprintln!("tungstenite-echo listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            // Same limits as Duplex's defaults: 64 MiB messages and frames.
            let config = WebSocketConfig::default()
                .max_message_size(Some(64 << 20))
                .max_frame_size(Some(64 << 20));
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            let (write, read) = ws.split();
            let _ = read
                .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
                .forward(write)
                .await;
        });
    }
}
