//! The pages embedded in the binary: the echo tester at `/`, the demos
//! (`/live`, `/chat`, `/game`) and the browser client `/duplex.js`.
//!
//! One self-contained HTML file (inline script and style, no external
//! resources): it connects to `/echo` on its own origin (`ws://` or `wss://`
//! following the page's scheme), sends text, binary and files as Blobs, and
//! shows every event, `readyState`, `protocol` and the negotiated
//! `extensions`.

/// The page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// An embedded file served as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its path.
    pub path: &'static str,
    /// Its bytes.
    pub body: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";

/// The demos and the browser client.
pub const ASSETS: &[Asset] = &[
    // An EventSource following channels.
    Asset {
        path: "/live",
        body: include_str!("../web/live.html"),
        content_type: HTML,
    },
    // A chat: rooms, nicknames, presence, history, recovery.
    Asset {
        path: "/chat",
        body: include_str!("../web/chat.html"),
        content_type: HTML,
    },
    // A shared board: binary moves over the Protobuf encoding, round trips.
    Asset {
        path: "/game",
        body: include_str!("../web/game.html"),
        content_type: HTML,
    },
    // The small first-party client (docs/browser.md).
    Asset {
        path: "/duplex.js",
        body: include_str!("../web/duplex.js"),
        content_type: "text/javascript; charset=utf-8",
    },
];

/// The embedded file at `path`.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Response headers for the page: no caching across upgrades of the binary,
/// no MIME sniffing, and a content security policy that allows the inline
/// script, this server's own scripts (`/duplex.js`) and sockets, but
/// nothing loaded from elsewhere.
pub fn page_headers() -> Vec<(String, String)> {
    [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
        ("Referrer-Policy", "no-referrer"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
