//! The pages embedded in the binary: the echo tester at `/` and the demos
//! (`/live`).
//!
//! One self-contained HTML file (inline script and style, no external
//! resources): it connects to `/echo` on its own origin (`ws://` or `wss://`
//! following the page's scheme), sends text, binary and files as Blobs, and
//! shows every event, `readyState`, `protocol` and the negotiated
//! `extensions`.

/// The page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// The live-updates demo: an EventSource following channels (`/live`).
pub const LIVE_HTML: &str = include_str!("../web/live.html");

/// Response headers for the page: no caching across upgrades of the binary,
/// no MIME sniffing, and a content security policy that allows the inline
/// script and sockets but nothing loaded from elsewhere.
pub fn page_headers() -> Vec<(String, String)> {
    [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
        ("Referrer-Policy", "no-referrer"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
