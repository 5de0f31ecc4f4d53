//! A page and a WebSocket from one axum router.
//!
//! ```text
//! cargo run -p duplex --example axum --features axum -- 127.0.0.1:3000
//! ```
//! then open http://127.0.0.1:3000/ — the page connects to `/ws`, which
//! echoes every message in upper case. The default policy refuses pages
//! from other origins (403).

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use duplex::upgrade::WebSocketUpgrade;
use duplex::{Message, Policy};

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>duplex + axum</title></head>
<body>
<h1>duplex + axum</h1>
<form id="f"><input id="text" value="hello" autocomplete="off"> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = (s) => { document.getElementById('log').textContent += s + '\n'; };
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws', ['shout']);
ws.onopen = () => log('open, protocol ' + ws.protocol + ', extensions ' + ws.extensions);
ws.onmessage = (e) => log('< ' + e.data);
ws.onclose = (e) => log('close ' + e.code + ' clean=' + e.wasClean);
document.getElementById('f').onsubmit = (e) => {
  e.preventDefault();
  const t = document.getElementById('text').value;
  ws.send(t);
  log('> ' + t);
};
</script>
</body></html>
"#;

/// Echoes text in upper case, binary unchanged.
async fn shout(ws: WebSocketUpgrade) -> axum::response::Response {
    let policy = Policy {
        protocols: vec!["shout".into()],
        ..Default::default()
    };
    ws.policy(policy).on_upgrade(|mut ws| async move {
        while let Some(Ok(msg)) = ws.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::text(t.as_str().to_uppercase()),
                other => other,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    })
}

/// The router: the page at `/`, the socket at `/ws`.
pub fn app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(shout))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}
