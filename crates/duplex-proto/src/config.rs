//! Connection limits and options. Every field is documented with its default
//! and the reason for it in `docs/defaults.md`.

use crate::budget::MemoryBudget;
use std::sync::Arc;
use std::time::Duration;

/// Limits and behaviour of one [`Connection`](crate::Connection).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload a single frame may declare. A larger declaration closes
    /// the connection with 1009 at once, before any payload is buffered.
    /// Default: 64 MiB.
    pub max_frame_size: usize,
    /// Largest message, after reassembly and after inflation. Exceeding it
    /// closes with 1009 as soon as the excess is seen. Default: 64 MiB.
    pub max_message_size: usize,
    /// Most frames one fragmented message may use. Exceeding it closes with
    /// 1008. Default: 131 072.
    pub max_fragments: usize,
    /// Largest opening-handshake head (request or response line and headers).
    /// Default: 16 KiB.
    pub max_handshake_bytes: usize,
    /// Most header fields in the opening handshake. Default: 64.
    pub max_headers: usize,
    /// How long a peer may take to complete the opening handshake (enforced
    /// by the I/O driver). Default: 10 s.
    pub handshake_timeout: Duration,
    /// Queued outbound bytes past which a sender waits for the socket to
    /// drain (backpressure; enforced by the I/O driver). Default: 128 KiB.
    pub write_buffer_size: usize,
    /// Longest a single write may make no progress before the connection is
    /// dropped (a peer that stops reading; enforced by the I/O driver).
    /// Default: 30 s.
    pub write_timeout: Duration,
    /// How long to wait for the peer's close frame after sending ours.
    /// Default: 5 s.
    pub close_timeout: Duration,
    /// Send a ping after this long without receiving anything. `None`
    /// disables keepalive. Default: `None`.
    pub ping_interval: Option<Duration>,
    /// Fail the connection when a keepalive ping gets no pong in this time.
    /// Default: 20 s.
    pub pong_timeout: Duration,
    /// permessage-deflate offer (client) or acceptance policy (server);
    /// `None` disables compression. Default: enabled, see [`DeflateConfig`].
    pub deflate: Option<DeflateConfig>,
    /// A budget shared with other connections for what this one holds in
    /// flight (the message being received, messages queued to send): see
    /// [`MemoryBudget`]. Default: none (each connection is bounded by its
    /// own limits only); `duplex serve` sets one.
    pub memory_budget: Option<Arc<MemoryBudget>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 64 << 20,
            max_message_size: 64 << 20,
            max_fragments: 131_072,
            max_handshake_bytes: 16 << 10,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            write_buffer_size: 128 << 10,
            write_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            pong_timeout: Duration::from_secs(20),
            deflate: Some(DeflateConfig::default()),
            memory_budget: None,
        }
    }
}

impl Config {
    /// Sets `max_message_size`, and `max_frame_size` to the same value (a
    /// frame larger than the largest message could never be accepted).
    ///
    /// ```
    /// let c = duplex_proto::Config::default().with_max_message_size(1 << 20);
    /// assert_eq!((c.max_message_size, c.max_frame_size), (1 << 20, 1 << 20));
    /// ```
    pub fn with_max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self.max_frame_size = n;
        self
    }

    /// Shares `budget` with the other connections that use it
    /// ([`memory_budget`](Self::memory_budget)).
    ///
    /// ```
    /// use duplex_proto::{budget::MemoryBudget, Config};
    /// let budget = std::sync::Arc::new(MemoryBudget::new(1 << 30));
    /// let c = Config::default().with_memory_budget(budget.clone());
    /// assert!(c.memory_budget.is_some());
    /// ```
    pub fn with_memory_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.memory_budget = Some(budget);
        self
    }

    /// Sets `max_frame_size` alone.
    ///
    /// ```
    /// let c = duplex_proto::Config::default().with_max_frame_size(64 << 10);
    /// assert_eq!(c.max_frame_size, 64 << 10);
    /// assert_eq!(c.max_message_size, 64 << 20); // unchanged
    /// ```
    pub fn with_max_frame_size(mut self, n: usize) -> Self {
        self.max_frame_size = n;
        self
    }

    /// Sets `max_fragments`.
    ///
    /// ```
    /// let c = duplex_proto::Config::default().with_max_fragments(1024);
    /// assert_eq!(c.max_fragments, 1024);
    /// ```
    pub fn with_max_fragments(mut self, n: usize) -> Self {
        self.max_fragments = n;
        self
    }

    /// Sets `max_handshake_bytes`.
    ///
    /// ```
    /// let c = duplex_proto::Config::default().with_max_handshake_bytes(8 << 10);
    /// assert_eq!(c.max_handshake_bytes, 8 << 10);
    /// ```
    pub fn with_max_handshake_bytes(mut self, n: usize) -> Self {
        self.max_handshake_bytes = n;
        self
    }

    /// Sets `max_headers`.
    ///
    /// ```
    /// let c = duplex_proto::Config::default().with_max_headers(32);
    /// assert_eq!(c.max_headers, 32);
    /// ```
    pub fn with_max_headers(mut self, n: usize) -> Self {
        self.max_headers = n;
        self
    }

    /// Sets `handshake_timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = duplex_proto::Config::default().with_handshake_timeout(Duration::from_secs(3));
    /// assert_eq!(c.handshake_timeout, Duration::from_secs(3));
    /// ```
    pub fn with_handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Sets `write_buffer_size`.
    ///
    /// ```
    /// let c = duplex_proto::Config::default().with_write_buffer_size(1 << 20);
    /// assert_eq!(c.write_buffer_size, 1 << 20);
    /// ```
    pub fn with_write_buffer_size(mut self, n: usize) -> Self {
        self.write_buffer_size = n;
        self
    }

    /// Sets `write_timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = duplex_proto::Config::default().with_write_timeout(Duration::from_secs(5));
    /// assert_eq!(c.write_timeout, Duration::from_secs(5));
    /// ```
    pub fn with_write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d;
        self
    }

    /// Sets `close_timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = duplex_proto::Config::default().with_close_timeout(Duration::from_secs(1));
    /// assert_eq!(c.close_timeout, Duration::from_secs(1));
    /// ```
    pub fn with_close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// Sets the keepalive `ping_interval`; `None` turns keepalive off.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = duplex_proto::Config::default().with_ping_interval(Some(Duration::from_secs(30)));
    /// assert_eq!(c.ping_interval, Some(Duration::from_secs(30)));
    /// ```
    pub fn with_ping_interval(mut self, d: Option<Duration>) -> Self {
        self.ping_interval = d;
        self
    }

    /// Sets `pong_timeout`, how long to wait for the pong to a keepalive
    /// ping.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = duplex_proto::Config::default().with_pong_timeout(Duration::from_secs(10));
    /// assert_eq!(c.pong_timeout, Duration::from_secs(10));
    /// ```
    pub fn with_pong_timeout(mut self, d: Duration) -> Self {
        self.pong_timeout = d;
        self
    }

    /// Sets or (with `None`) disables permessage-deflate.
    ///
    /// ```
    /// use duplex_proto::{Config, DeflateConfig};
    /// let c = Config::default().with_deflate(None);
    /// assert!(c.deflate.is_none());
    /// let c = Config::default().with_deflate(Some(DeflateConfig::without_context_takeover()));
    /// assert!(c.deflate.unwrap().no_context_takeover);
    /// ```
    pub fn with_deflate(mut self, d: Option<DeflateConfig>) -> Self {
        self.deflate = d;
        self
    }
}

/// permessage-deflate (RFC 7692) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Compression level 0–9. Default: 1 (fast; most of the gain on text).
    pub level: u32,
    /// Largest LZ77 window (bits, 9–15) this endpoint compresses with.
    /// Default: 15.
    pub max_window_bits: u8,
    /// Reset our compressor after every message (less memory, a little worse
    /// ratio, and a message compressed once can go to many receivers).
    /// Default: false.
    pub no_context_takeover: bool,
    /// Ask the peer to reset its compressor after every message, which lets
    /// us drop the inflate window between messages. Default: false.
    pub request_peer_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed. Default: 0.
    pub min_compress_size: usize,
}

impl DeflateConfig {
    /// No context takeover either way: we reset our compressor after every
    /// message and ask the peer to reset its own (RFC 7692 lets a server
    /// ask this of any client). Neither side then keeps a compression
    /// history, so a connection holds no zlib state between messages — the
    /// states are borrowed from a per-thread pool for each message — where
    /// with takeover every connection that has exchanged a compressed
    /// message keeps about 340 KB. Repetitive small messages compress less
    /// well. What a server holding many connections wants; the default of
    /// `duplex_server`'s `ServerConfig`.
    pub fn without_context_takeover() -> Self {
        DeflateConfig {
            no_context_takeover: true,
            request_peer_no_context_takeover: true,
            ..DeflateConfig::default()
        }
    }
}

impl DeflateConfig {
    /// Sets the compression `level`, 0–9 (values above 9 are taken as 9
    /// when compressing).
    ///
    /// ```
    /// let d = duplex_proto::DeflateConfig::default().with_level(6);
    /// assert_eq!(d.level, 6);
    /// ```
    pub fn with_level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Sets `max_window_bits`, 9–15 (values outside are clamped).
    ///
    /// ```
    /// let d = duplex_proto::DeflateConfig::default().with_max_window_bits(10);
    /// assert_eq!(d.max_window_bits, 10);
    /// ```
    pub fn with_max_window_bits(mut self, bits: u8) -> Self {
        self.max_window_bits = bits;
        self
    }

    /// Sets `no_context_takeover` (our compressor resets after every message).
    ///
    /// ```
    /// let d = duplex_proto::DeflateConfig::default().with_no_context_takeover(true);
    /// assert!(d.no_context_takeover);
    /// ```
    pub fn with_no_context_takeover(mut self, on: bool) -> Self {
        self.no_context_takeover = on;
        self
    }

    /// Sets `request_peer_no_context_takeover` (ask the peer to reset its
    /// compressor after every message).
    ///
    /// ```
    /// let d = duplex_proto::DeflateConfig::default().with_request_peer_no_context_takeover(true);
    /// assert!(d.request_peer_no_context_takeover);
    /// ```
    pub fn with_request_peer_no_context_takeover(mut self, on: bool) -> Self {
        self.request_peer_no_context_takeover = on;
        self
    }

    /// Sets `min_compress_size`: shorter messages are sent uncompressed.
    ///
    /// ```
    /// let d = duplex_proto::DeflateConfig::default().with_min_compress_size(256);
    /// assert_eq!(d.min_compress_size, 256);
    /// ```
    pub fn with_min_compress_size(mut self, n: usize) -> Self {
        self.min_compress_size = n;
        self
    }
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            level: 1,
            max_window_bits: 15,
            no_context_takeover: false,
            request_peer_no_context_takeover: false,
            min_compress_size: 0,
        }
    }
}
