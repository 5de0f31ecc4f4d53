//! Messages framed once and sent to many connections.
//!
//! A server frame is not masked, so the bytes of a frame do not depend on
//! the connection that sends it: a broadcast can be framed once and every
//! receiver queues the same `Bytes` (a reference count, no copy). With
//! permessage-deflate and no server context takeover, each message is
//! compressed on its own, so the compressed frame is the same for every
//! receiver that agreed on the same window and level: it is made once, on
//! first use, and shared too.

use crate::deflate::{DeflateParams, Deflater, Side};
use crate::frame::{FrameHeader, OpCode};
use crate::{DeflateConfig, Error, Message};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, OnceLock};

/// How a server connection frames a [`PreparedMessage`] when it queues the
/// shared bytes rather than framing the message for itself
/// ([`Connection::shared_framing`](crate::Connection::shared_framing)):
/// connections with equal values send identical bytes for the same
/// message ([`PreparedMessage::frame_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFraming {
    /// The uncompressed frame.
    Plain,
    /// permessage-deflate without server context takeover: the frame
    /// compressed at `level` with `window_bits`, for payloads of
    /// `min_size` bytes and more (shorter ones plain).
    Deflate {
        /// zlib level.
        level: u32,
        /// The compressor's window.
        window_bits: u8,
        /// Shorter payloads are sent uncompressed.
        min_size: u32,
    },
}

/// A data message framed for sending by a server, shared by cloning.
///
/// Cost: one allocation for the frame (header and payload together); the
/// compressed frame, if any receiver needs it, one more, made once.
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opcode: OpCode,
    payload: Bytes,
    /// Header and payload, uncompressed (RSV1 clear).
    plain: Bytes,
    /// The frame compressed without context takeover: (level, window bits,
    /// frame bytes), made by the first receiver that asks.
    compressed: OnceLock<(u32, u8, Result<Bytes, Error>)>,
}

impl PreparedMessage {
    /// Frames `msg` once (unmasked, uncompressed; compression is added on
    /// first use by a connection that negotiated it).
    pub fn new(msg: Message) -> Self {
        let (opcode, payload) = match msg {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let plain = frame(opcode, false, &payload);
        PreparedMessage {
            inner: Arc::new(Inner {
                opcode,
                payload,
                plain,
                compressed: OnceLock::new(),
            }),
        }
    }

    /// The payload (uncompressed).
    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }

    /// Whether it is a text message.
    pub fn is_text(&self) -> bool {
        self.inner.opcode == OpCode::Text
    }

    /// The uncompressed frame's bytes (header and payload).
    pub fn frame(&self) -> &Bytes {
        &self.inner.plain
    }

    /// The frame compressed with `level` and `window_bits`, no context
    /// takeover; `None` if it was first made for another level or window
    /// (the caller then compresses on its own).
    pub(crate) fn compressed(&self, level: u32, window_bits: u8) -> Option<Result<Bytes, Error>> {
        let (l, w, r) = self.inner.compressed.get_or_init(|| {
            let params = DeflateParams {
                server_no_context_takeover: true,
                server_max_window_bits: Some(window_bits),
                ..DeflateParams::default()
            };
            let cfg = DeflateConfig {
                level,
                max_window_bits: window_bits,
                no_context_takeover: true,
                ..DeflateConfig::default()
            };
            let r = Deflater::new(Side::Server, &params, &cfg)
                .compress(&self.inner.payload)
                .map(|c| frame(self.inner.opcode, true, &c));
            (level, window_bits, r)
        });
        (*l == level && *w == window_bits).then(|| r.clone())
    }

    /// The bytes a server connection with `framing` queues for this message
    /// ([`Connection::send_prepared`](crate::Connection::send_prepared)):
    /// the plain frame, or the compressed one made once for every receiver.
    /// `None` if the message was compressed first for another level or
    /// window (such a connection compresses it on its own).
    pub fn frame_for(&self, framing: SharedFraming) -> Option<Result<Bytes, Error>> {
        match framing {
            SharedFraming::Plain => Some(Ok(self.inner.plain.clone())),
            SharedFraming::Deflate { min_size, .. }
                if self.inner.payload.len() < min_size as usize =>
            {
                Some(Ok(self.inner.plain.clone()))
            }
            SharedFraming::Deflate {
                level, window_bits, ..
            } => self.compressed(level, window_bits),
        }
    }

    /// How many connections hold this message (for tests of sharing).
    pub fn share_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

fn frame(opcode: OpCode, rsv1: bool, payload: &[u8]) -> Bytes {
    let h = FrameHeader {
        fin: true,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut b = BytesMut::with_capacity(h.encoded_len() + payload.len());
    h.encode(&mut b);
    b.extend_from_slice(payload);
    b.freeze()
}
