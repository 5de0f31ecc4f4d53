//! The WebSocket connection state machine, sans-IO.
//!
//! ```text
//!            send close                      peer's close arrives
//!   Open ─────────────────► CloseSent ──────────────────────────────┐
//!    │                                                               ▼
//!    │ peer's close arrives: echo queued            ┌──────────► Closed
//!    └───────────────────────► CloseReceived ───────┘ echo written
//!
//!   Any state ── protocol error ──► close frame with the RFC's code queued,
//!                                   input ignored, Closed once written.
//!   CloseSent ── close_timeout without the peer's close ──► Closed.
//! ```
//!
//! Bytes in: [`Connection::receive`] parses frames out of the caller's read
//! buffer, unmasks in place, validates, and queues [`Event`]s. An
//! unfragmented, uncompressed message is handed out as a slice of that buffer
//! (no copy). Bytes out: every send appends frames to an internal queue that
//! the caller drains with [`Connection::outbound_slices`] and
//! [`Connection::consume_outbound`]. Time comes in through
//! [`Connection::handle_timeout`]; [`Connection::poll_timeout`] says when to
//! call it next.

use crate::budget::MemoryBudget;
use crate::close::{CloseCode, CloseFrame};
use crate::config::Config;
use crate::deflate::{DeflateParams, Deflater, Inflater, Side};
use crate::error::Error;
use crate::frame::{FrameHeader, OpCode};
use crate::growth;
use crate::mask::apply_mask;
use crate::message::{Event, Message};
use crate::outbound::Outbound;
use crate::prepared::PreparedMessage;
use crate::utf8::{Utf8Bytes, Utf8Validator};
use bytes::{Buf, Bytes, BytesMut};
use rand::RngCore;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

/// The event queue's first allocation: a read usually brings several
/// messages when it brings more than one (pipelining), and growing from 4
/// would reallocate on the way.
const EVENTS_START: usize = 16;

/// A whole-message frame that fills its buffer exactly takes the buffer as
/// its payload (no shared handle to allocate) when it is smaller than this;
/// larger ones are split off, so that the tail left in the buffer still
/// refers to the storage and a driver can take it back for the next large
/// frame once the message is dropped (`duplex` keeps buffers of 1 MiB and
/// more warm this way).
const TAKE_WHOLE_MAX: usize = 1 << 20;

/// What [`Connection::receive_frames`] does with a complete data message.
#[derive(Clone, Copy)]
enum Deliver {
    /// Queue it as an event and go on.
    Queue,
    /// Return it, leaving the frames after it in the buffer.
    Return,
}

/// Which end of the connection this is. Clients mask what they send and
/// expect unmasked frames; servers the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that accepted it.
    Server,
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and await the peer's.
    CloseSent,
    /// The peer's close arrived; our answer is queued but not yet written.
    CloseReceived,
    /// Nothing more will be sent or received; close the transport.
    Closed,
}

/// The frame whose payload is being received.
#[derive(Debug)]
struct InFrame {
    header: FrameHeader,
    /// Payload bytes already unmasked (and, for streamed frames, consumed).
    done: usize,
}

/// The message being received.
#[derive(Debug)]
struct InMessage {
    text: bool,
    compressed: bool,
    /// Assembled payload (fragmented or compressed messages).
    buf: Vec<u8>,
    /// Frames so far (saturating; `max_fragments` stops it long before).
    fragments: u32,
}

/// permessage-deflate's state, boxed: a connection without compression
/// pays 8 bytes for it.
#[derive(Debug)]
struct Codec {
    deflater: Deflater,
    inflater: Inflater,
    min_compress_size: usize,
}

/// One WebSocket connection after the opening handshake.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared: a server passes one `Arc` to all its connections.
    config: Arc<Config>,
    state: State,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    utf8: Utf8Validator,
    events: VecDeque<Event>,
    out: Outbound,
    /// Present when permessage-deflate was negotiated.
    codec: Option<Box<Codec>>,
    /// Errors, close frames and timers: absent (8 bytes) until the
    /// connection starts closing, fails or runs keepalive, since every
    /// open, idle connection would otherwise carry ~220 bytes of `None`s.
    cold: Option<Box<Cold>>,
    /// The peer's close arrived after messages not yet polled: its echo is
    /// queued once they are, so that answers to them still go out first.
    deferred_close_reply: bool,
    activity: bool,
}

/// The rarely used part of a [`Connection`], boxed.
#[derive(Debug, Default)]
struct Cold {
    error: Option<Error>,
    /// An error found after complete messages in the same input: those are
    /// delivered (and may be answered) first, then the connection fails.
    deferred_error: Option<Error>,
    sent_close: Option<CloseFrame>,
    received_close: Option<Option<CloseFrame>>,
    close_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    /// Bytes reserved from the memory budget for input (the frame or
    /// message being received) and for output (messages queued to send).
    charged_in: usize,
    charged_out: usize,
    /// Bytes of the outbound queue this connection's own sends put there
    /// (at most; shared frames and control frames are not counted), once
    /// they passed the uncharged allowance.
    out_owned: usize,
}

/// What an absent [`Cold`] reads as.
static NO_COLD: Cold = Cold {
    error: None,
    deferred_error: None,
    sent_close: None,
    received_close: None,
    close_deadline: None,
    next_ping: None,
    pong_deadline: None,
    charged_in: 0,
    charged_out: 0,
    out_owned: 0,
};

/// The most bytes a frame header takes (2 + 8 length + 4 mask).
const FRAME_HEADER_MAX: usize = 14;

/// How much inflated output a connection with a memory budget reserves at
/// a time (or as much as it holds already, if more: doubling).
const INFLATE_STEP: usize = 256 << 10;

/// Which way a connection holds the bytes it charges to a budget.
#[derive(Debug, Clone, Copy)]
enum Way {
    In,
    Out,
}

/// Sets what a connection (its `cold` part) has reserved from `config`'s
/// budget for `way` to the cost of holding `held` bytes, above the
/// uncharged allowance. Growing may be refused (`false`, nothing changed);
/// with `grow: false` it only ever gives back.
#[inline]
fn charge(
    config: &Config,
    cold: &mut Option<Box<Cold>>,
    way: Way,
    held: usize,
    grow: bool,
) -> bool {
    // Within the allowance with nothing charged (every connection of small
    // messages, on every read): nothing to change.
    if held <= MemoryBudget::UNCHARGED && cold.is_none() {
        return true;
    }
    charge_changed(config, cold, way, held, grow)
}

fn charge_changed(
    config: &Config,
    cold: &mut Option<Box<Cold>>,
    way: Way,
    held: usize,
    grow: bool,
) -> bool {
    let Some(budget) = config.memory_budget.as_deref() else {
        return true;
    };
    let want = held.saturating_sub(MemoryBudget::UNCHARGED);
    let have = cold.as_deref().map_or(0, |c| match way {
        Way::In => c.charged_in,
        Way::Out => c.charged_out,
    });
    if want == have || (want > have && !grow) {
        return true;
    }
    if want > have {
        if !budget.try_reserve(want - have) {
            return false;
        }
    } else {
        budget.release(have - want);
    }
    let c = cold.get_or_insert_with(Box::default);
    match way {
        Way::In => c.charged_in = want,
        Way::Out => c.charged_out = want,
    }
    if c.is_unused() {
        // All given back: an idle connection does not keep the box for
        // the rest of its life because it once received a large message.
        *cold = None;
    }
    true
}

impl Cold {
    /// Nothing in it but defaults: the connection may drop it.
    fn is_unused(&self) -> bool {
        self.error.is_none()
            && self.deferred_error.is_none()
            && self.sent_close.is_none()
            && self.received_close.is_none()
            && self.close_deadline.is_none()
            && self.next_ping.is_none()
            && self.pong_deadline.is_none()
            && self.charged_in == 0
            && self.charged_out == 0
            && self.out_owned == 0
    }
}

/// How far inflated output holding `len` bytes may grow, while the driver
/// holds `pending` bytes of input: without a budget, to the limit; with
/// one, to what is free of charge, then by steps reserved first.
fn admit_inflated(
    config: &Config,
    cold: &mut Option<Box<Cold>>,
    pending: usize,
    len: usize,
    limit: usize,
) -> Result<usize, Error> {
    if config.memory_budget.is_none() {
        return Ok(limit);
    }
    // Within what the connection holds free of charge first: a small
    // compressed message never draws on the budget.
    let free = MemoryBudget::UNCHARGED.saturating_sub(pending);
    let room = if len < free {
        free
    } else {
        len.saturating_add(len.max(INFLATE_STEP))
    }
    .min(limit);
    if charge(config, cold, Way::In, pending.saturating_add(room), true) {
        Ok(room)
    } else {
        Err(Error::MemoryBudget { receiving: true })
    }
}

impl Drop for Connection {
    /// Whatever is still reserved goes back to the budget.
    fn drop(&mut self) {
        if let (Some(b), Some(c)) = (self.config.memory_budget.as_deref(), self.cold.as_deref()) {
            let n = c.charged_in + c.charged_out;
            if n > 0 {
                b.release(n);
            }
        }
    }
}

impl Connection {
    /// A connection in the `Open` state. `deflate` is what the opening
    /// handshake agreed (`None`: no compression).
    ///
    /// `config` may be a `Config` or an `Arc<Config>` shared by many
    /// connections (which saves its ~150 bytes per connection).
    pub fn new(role: Role, config: impl Into<Arc<Config>>, deflate: Option<DeflateParams>) -> Self {
        let config = config.into();
        let side = match role {
            Role::Client => Side::Client,
            Role::Server => Side::Server,
        };
        let dcfg = config.deflate.clone().unwrap_or_default();
        let codec = deflate.as_ref().map(|p| {
            Box::new(Codec {
                deflater: Deflater::new(side, p, &dcfg),
                inflater: Inflater::new(side, p),
                min_compress_size: dcfg.min_compress_size,
            })
        });
        Connection {
            role,
            state: State::Open,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            events: VecDeque::new(),
            out: Outbound::default(),
            codec,
            cold: None,
            deferred_close_reply: false,
            activity: false,
            config,
        }
    }

    fn cold(&self) -> &Cold {
        self.cold.as_deref().unwrap_or(&NO_COLD)
    }

    fn cold_mut(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The closing-handshake state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once nothing more will be sent or received.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether permessage-deflate is in use.
    pub fn is_compressed(&self) -> bool {
        self.codec.is_some()
    }

    /// The error that failed the connection, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.cold().error.as_ref()
    }

    /// The close frame we sent, if any.
    pub fn sent_close(&self) -> Option<&CloseFrame> {
        self.cold().sent_close.as_ref()
    }

    /// The peer's close frame: `None` if none arrived, `Some(None)` if it
    /// carried no status code.
    pub fn received_close(&self) -> Option<Option<&CloseFrame>> {
        self.cold().received_close.as_ref().map(|c| c.as_ref())
    }

    /// True when both close frames were exchanged and no error occurred.
    pub fn was_clean(&self) -> bool {
        self.cold().error.is_none()
            && self.cold().sent_close.is_some()
            && self.cold().received_close.is_some()
    }

    /// How many payload bytes the frame being received still needs; a reader
    /// may use it to size its next read (grow gradually: it is what the peer
    /// *declared*).
    pub fn pending_frame_bytes(&self) -> usize {
        self.frame
            .as_ref()
            .map_or(0, |f| f.header.payload_len as usize - f.done)
    }

    fn input_closed(&self) -> bool {
        if self.cold.is_none() {
            return self.state == State::Closed;
        }
        self.cold().received_close.is_some()
            || self.cold().error.is_some()
            || self.cold().deferred_error.is_some()
            || self.state == State::Closed
    }

    // ------------------------------------------------------------------ input

    /// Consumes complete frames (and, where it can, partial payloads) from the
    /// front of `buf`, leaving any incomplete remainder. Produces events.
    /// On a protocol error the connection is failed — a close frame with the
    /// code RFC 6455 names is queued — and the error is returned; later input
    /// is discarded.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        self.receive_in(buf, Deliver::Queue).map(|_| ())
    }

    /// Like [`receive`](Self::receive), but stops at the first complete
    /// data message and returns it instead of queueing it: the frames
    /// after it stay in `buf` for the next call. Control frames before it
    /// are handled as `receive` handles them (their events are queued).
    /// A driver that hands out one message at a time this way needs no
    /// event queue for data messages, which saves its allocation on every
    /// read of a connection that waits between messages.
    ///
    /// Events already queued come first: while any is queued this queues
    /// what it reads, as `receive` does, and returns `None`. `Ok(None)`
    /// otherwise means that `buf` holds no complete message (the partial
    /// frame at its end is kept, as `receive` keeps it).
    pub fn receive_message(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        let how = if self.events.is_empty() {
            Deliver::Return
        } else {
            Deliver::Queue
        };
        self.receive_in(buf, how)
    }

    fn receive_in(&mut self, buf: &mut BytesMut, how: Deliver) -> Result<Option<Message>, Error> {
        let r = self.receive_inner(buf, how);
        // What was consumed (delivered, or discarded) goes back to the
        // budget; the buffer that is left stays reserved.
        self.release_read(buf.capacity());
        r
    }

    fn receive_inner(
        &mut self,
        buf: &mut BytesMut,
        how: Deliver,
    ) -> Result<Option<Message>, Error> {
        if !buf.is_empty() {
            self.activity = true;
        }
        if self.input_closed() {
            buf.clear();
            return Ok(None);
        }
        match self.receive_frames(buf, how) {
            Ok(m) => Ok(m),
            Err(e) if !self.events.is_empty() => {
                // Messages that arrived intact before the bad frame are
                // delivered first; the failure follows once they are polled.
                buf.clear();
                self.cold_mut().deferred_error = Some(e);
                Ok(None)
            }
            Err(e) => {
                buf.clear();
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Copies `data` in and processes it; for callers without a `BytesMut`.
    pub fn receive_slice(&mut self, data: &[u8], scratch: &mut BytesMut) -> Result<(), Error> {
        scratch.extend_from_slice(data);
        self.receive(scratch)
    }

    /// Consumes frames from `buf` until it holds no complete one, or (with
    /// [`Deliver::Return`]) until a data message is complete.
    fn receive_frames(
        &mut self,
        buf: &mut BytesMut,
        how: Deliver,
    ) -> Result<Option<Message>, Error> {
        loop {
            if self.input_closed() {
                buf.clear();
                return Ok(None);
            }
            let mut frame = match self.frame.take() {
                Some(f) => f,
                None => {
                    let Some((header, n)) = FrameHeader::parse(buf)? else {
                        return Ok(None);
                    };
                    self.check_header(&header)?;
                    buf.advance(n);
                    InFrame { header, done: 0 }
                }
            };
            let len = frame.header.payload_len as usize;
            let key = frame.header.mask;

            if frame.header.opcode.is_control() {
                if buf.len() < len {
                    self.frame = Some(frame);
                    return Ok(None);
                }
                let mut payload = buf.split_to(len);
                if let Some(k) = key {
                    apply_mask(&mut payload, k, 0);
                }
                self.on_control(frame.header.opcode, payload.freeze())?;
                continue;
            }

            // A data frame with no message in progress is a whole message
            // (final and uncompressed): `check_header` starts a message
            // for any other.
            if self.message.is_none() {
                let text = frame.header.opcode == OpCode::Text;
                let end = buf.len().min(len);
                if end > frame.done {
                    let new = &mut buf[frame.done..end];
                    if let Some(k) = key {
                        apply_mask(new, k, frame.done);
                    }
                    if text {
                        self.utf8.feed(new)?;
                    }
                    frame.done = end;
                }
                if frame.done < len {
                    self.frame = Some(frame);
                    return Ok(None);
                }
                let payload = if len == buf.len() && len == buf.capacity() && len < TAKE_WHOLE_MAX {
                    // The frame fills its buffer: the buffer becomes the
                    // payload, with no shared handle to allocate.
                    std::mem::take(buf).freeze()
                } else {
                    buf.split_to(len).freeze()
                };
                let m = self.message_of(text, payload)?;
                if let Some(m) = self.hand_out(m, how) {
                    return Ok(Some(m));
                }
                continue;
            }

            // Streamed payload: fragmented or compressed.
            let n = buf.len().min(len - frame.done);
            if n > 0 {
                let pending = buf.len();
                let chunk = &mut buf[..n];
                if let Some(k) = key {
                    apply_mask(chunk, k, frame.done);
                }
                let limit = self.config.max_message_size;
                let msg = self.message.as_mut().expect("message in progress");
                let before = msg.buf.len();
                let inflated = if msg.compressed {
                    let codec = self.codec.as_mut().ok_or(Error::ReservedBitsSet)?;
                    let (config, cold) = (&*self.config, &mut self.cold);
                    codec
                        .inflater
                        .inflate_admitting(chunk, &mut msg.buf, limit, &mut |len| {
                            admit_inflated(config, cold, pending, len, limit)
                        })
                } else {
                    // The headers kept the total within the limit.
                    growth::reserve_within(&mut msg.buf, chunk.len(), limit);
                    msg.buf.extend_from_slice(chunk);
                    Ok(())
                };
                // Whatever was produced is validated first, so the error does
                // not depend on how the input was chunked.
                if msg.text {
                    self.utf8.feed(&msg.buf[before..])?;
                }
                inflated?;
                buf.advance(n);
                frame.done += n;
            }
            if frame.done < len {
                self.frame = Some(frame);
                return Ok(None);
            }
            if frame.header.fin {
                let mut msg = self.message.take().expect("message in progress");
                if msg.compressed {
                    let before = msg.buf.len();
                    let limit = self.config.max_message_size;
                    let codec = self.codec.as_mut().ok_or(Error::ReservedBitsSet)?;
                    let (config, cold, pending) = (&*self.config, &mut self.cold, buf.len());
                    let inflated =
                        codec
                            .inflater
                            .finish_message_admitting(&mut msg.buf, limit, &mut |len| {
                                admit_inflated(config, cold, pending, len, limit)
                            });
                    if msg.text {
                        self.utf8.feed(&msg.buf[before..])?;
                    }
                    inflated?;
                }
                let m = self.message_of(msg.text, growth::into_bytes(msg.buf))?;
                if let Some(m) = self.hand_out(m, how) {
                    return Ok(Some(m));
                }
            }
        }
    }

    /// A complete message; text has been validated piece by piece and
    /// must not end inside a code point.
    fn message_of(&mut self, text: bool, payload: Bytes) -> Result<Message, Error> {
        Ok(if text {
            self.utf8.finish()?;
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        })
    }

    /// `m` back to the caller ([`Deliver::Return`]), or queued as an event.
    fn hand_out(&mut self, m: Message, how: Deliver) -> Option<Message> {
        if let Deliver::Return = how {
            return Some(m);
        }
        if self.events.capacity() == 0 {
            // After a release: room for a read's worth of messages at once.
            self.events.reserve(EVENTS_START);
        }
        self.events.push_back(Event::Message(m));
        None
    }

    /// Role, reserved-bit, sequencing and size rules for a new frame header;
    /// starts the message a data frame begins, unless the frame is the
    /// whole message (final, uncompressed): that needs no [`InMessage`].
    fn check_header(&mut self, h: &FrameHeader) -> Result<(), Error> {
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(Error::UnmaskedFrame),
            (Role::Client, true) => return Err(Error::MaskedFrame),
            _ => {}
        }
        if h.rsv2 || h.rsv3 {
            return Err(Error::ReservedBitsSet);
        }
        if h.opcode.is_control() {
            if h.rsv1 {
                return Err(Error::ReservedBitsSet);
            }
            return Ok(());
        }
        let limit = self.config.max_frame_size;
        if h.payload_len > limit as u64 {
            return Err(Error::FrameTooLarge {
                declared: h.payload_len,
                limit,
            });
        }
        let max_msg = self.config.max_message_size;
        match h.opcode {
            OpCode::Continuation => {
                let max_frags = self.config.max_fragments;
                let msg = self.message.as_mut().ok_or(Error::UnexpectedContinuation)?;
                if h.rsv1 {
                    return Err(Error::ReservedBitsSet);
                }
                msg.fragments = msg.fragments.saturating_add(1);
                if msg.fragments as usize > max_frags {
                    return Err(Error::TooManyFragments { limit: max_frags });
                }
                if !msg.compressed && msg.buf.len() as u64 + h.payload_len > max_msg as u64 {
                    return Err(Error::MessageTooLarge { limit: max_msg });
                }
            }
            _ => {
                if self.message.is_some() {
                    return Err(Error::ExpectedContinuation);
                }
                if h.rsv1 && self.codec.is_none() {
                    return Err(Error::ReservedBitsSet);
                }
                if !h.rsv1 && h.payload_len > max_msg as u64 {
                    return Err(Error::MessageTooLarge { limit: max_msg });
                }
                self.utf8 = Utf8Validator::new();
                if h.fin && !h.rsv1 {
                    return Ok(());
                }
                self.message = Some(InMessage {
                    text: h.opcode == OpCode::Text,
                    compressed: h.rsv1,
                    buf: Vec::new(),
                    fragments: 1,
                });
            }
        }
        Ok(())
    }

    fn on_control(&mut self, op: OpCode, payload: Bytes) -> Result<(), Error> {
        match op {
            OpCode::Ping => {
                if self.state == State::Open {
                    self.write_frame(OpCode::Pong, false, &payload);
                }
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => {
                if let Some(c) = self.cold.as_mut() {
                    c.pong_deadline = None;
                }
                self.events.push_back(Event::Pong(payload));
            }
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)?;
                self.cold_mut().received_close = Some(frame.clone());
                match self.state {
                    State::Open if !self.events.is_empty() => self.deferred_close_reply = true,
                    State::Open => self.reply_to_close(),
                    State::CloseSent => self.finish_closing(),
                    _ => {}
                }
                self.events.push_back(Event::Close(frame));
            }
            _ => unreachable!("not a control opcode"),
        }
        Ok(())
    }

    /// Echoes the peer's status code (RFC 6455 §5.5.1) and concludes.
    fn reply_to_close(&mut self) {
        if self.state != State::Open {
            return;
        }
        let code = self.received_close().flatten().map(|f| f.code);
        let echo = code.map(|c| CloseFrame::new(c, ""));
        self.queue_close(echo.as_ref());
        self.cold_mut().sent_close =
            Some(echo.unwrap_or(CloseFrame::new(CloseCode::NO_STATUS, "")));
        self.finish_closing();
    }

    /// Both sides are done: Closed once our queued bytes are written.
    fn finish_closing(&mut self) {
        if let Some(c) = self.cold.as_mut() {
            c.close_deadline = None;
        }
        self.state = if self.out.len() == 0 {
            State::Closed
        } else {
            State::CloseReceived
        };
    }

    /// Fails the connection (RFC 6455 §7.1.7): queue a close frame with the
    /// error's code if we have not sent one, then stop.
    fn fail(&mut self, e: Error) {
        if self.state == State::Open {
            if let Some(code) = e.close_code() {
                let mut reason = e.to_string();
                while reason.len() > 123 {
                    reason.pop();
                }
                let f = CloseFrame::new(code, reason);
                self.queue_close(Some(&f));
                self.cold_mut().sent_close = Some(f);
            }
        }
        self.cold_mut().error = Some(e);
        self.message = None;
        self.frame = None;
        self.finish_closing();
    }

    /// The next event, if any.
    /// After the last event of an input that ended in a protocol error, the
    /// next call fails the connection (queues the close frame). Likewise the
    /// echo of a peer's close that followed messages is queued once those
    /// messages have been polled (and possibly answered): poll until `None`.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front();
        if ev.is_none() && (self.cold.is_some() || self.deferred_close_reply) {
            self.events_drained();
        }
        ev
    }

    /// What waits for the event queue to be drained: a deferred protocol
    /// error, the echo of a peer's close.
    fn events_drained(&mut self) {
        if let Some(e) = self.cold.as_mut().and_then(|c| c.deferred_error.take()) {
            self.fail(e);
        }
        if std::mem::take(&mut self.deferred_close_reply) {
            self.reply_to_close();
        }
    }

    // ----------------------------------------------------------------- output

    /// Queues a data message (compressed if permessage-deflate is on).
    pub fn send(&mut self, msg: Message) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        let (op, payload) = match msg {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        self.reserve_send(payload.len())?;
        if let Some(c) = self
            .codec
            .as_mut()
            .filter(|c| payload.len() >= c.min_compress_size)
        {
            let compressed = c.deflater.compress(&payload)?;
            self.write_frame_bytes(op, true, Bytes::from(compressed));
        } else {
            self.write_frame_bytes(op, false, payload);
        }
        Ok(())
    }

    /// Queues a message framed beforehand ([`PreparedMessage`]), shared
    /// with every other connection it goes to: a server queues the prepared
    /// frame's bytes by reference. Compressed once for all receivers when
    /// permessage-deflate runs without server context takeover at the
    /// prepared message's first receiver's window and level; a receiver
    /// with other parameters (or with context takeover, or a client, which
    /// must mask) frames the message itself, as [`send`](Self::send) does.
    pub fn send_prepared(&mut self, msg: &PreparedMessage) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        if self.role == Role::Client {
            let m = if msg.is_text() {
                Message::Text(Utf8Bytes::try_from_bytes(msg.payload().clone())?)
            } else {
                Message::Binary(msg.payload().clone())
            };
            return self.send(m);
        }
        let frame = match self
            .codec
            .as_ref()
            .filter(|c| msg.payload().len() >= c.min_compress_size)
        {
            None => msg.frame().clone(),
            Some(c) => match c.deflater.shared_params() {
                Some((level, bits)) => match msg.compressed(level, bits) {
                    Some(r) => r?,
                    None => return self.send_prepared_alone(msg),
                },
                None => return self.send_prepared_alone(msg),
            },
        };
        self.out.push_frame(frame);
        Ok(())
    }

    /// How this connection frames a [`PreparedMessage`] when it queues the
    /// shared bytes ([`PreparedMessage::frame_for`]): `None` for a client
    /// (it masks), and with permessage-deflate and server context takeover
    /// (each message is compressed with this connection's history).
    pub fn shared_framing(&self) -> Option<crate::SharedFraming> {
        if self.role == Role::Client {
            return None;
        }
        match &self.codec {
            None => Some(crate::SharedFraming::Plain),
            Some(c) => {
                let (level, window_bits) = c.deflater.shared_params()?;
                Some(crate::SharedFraming::Deflate {
                    level,
                    window_bits,
                    min_size: u32::try_from(c.min_compress_size).unwrap_or(u32::MAX),
                })
            }
        }
    }

    /// Queues the rest of a prepared message's shared frame (the bytes
    /// [`PreparedMessage::frame_for`] gives for this connection's
    /// [`shared_framing`](Self::shared_framing)) whose first `written`
    /// bytes already went out on this connection's transport by another
    /// path: a server that writes a broadcast straight into an idle
    /// connection's socket hands a partial write back this way, and the
    /// frame is completed before anything queued after it. The caller
    /// guarantees nothing else reached the transport since those bytes;
    /// `frame` is those shared bytes.
    pub fn send_prepared_rest(&mut self, frame: &Bytes, written: usize) {
        debug_assert_eq!(self.role, Role::Server, "a client masks its frames");
        if written < frame.len() {
            self.out.push_frame(frame.slice(written..));
        }
    }

    fn send_prepared_alone(&mut self, msg: &PreparedMessage) -> Result<(), Error> {
        let op = if msg.is_text() {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        self.reserve_send(msg.payload().len())?;
        let c = self.codec.as_mut().expect("checked by the caller");
        let compressed = c.deflater.compress(msg.payload())?;
        self.write_frame_bytes(op, true, Bytes::from(compressed));
        Ok(())
    }

    /// Queues a message as several frames of at most `frame_size` payload
    /// bytes each (uncompressed). Mostly for tests and for streaming peers.
    pub fn send_fragmented(&mut self, msg: Message, frame_size: usize) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        let frame_size = frame_size.max(1);
        let (op, payload) = match msg {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let frames = payload.len() / frame_size + 1;
        self.reserve_send(
            payload
                .len()
                .saturating_add(frames.saturating_mul(FRAME_HEADER_MAX)),
        )?;
        let mut off = 0;
        loop {
            let end = (off + frame_size).min(payload.len());
            let fin = end == payload.len();
            let opcode = if off == 0 { op } else { OpCode::Continuation };
            self.write_raw(fin, opcode, false, payload.slice(off..end));
            off = end;
            if fin {
                return Ok(());
            }
        }
    }

    /// Queues a ping (payload at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (payload at most 125 bytes).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.control(OpCode::Pong, payload)
    }

    fn control(&mut self, op: OpCode, payload: &[u8]) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        if payload.len() > 125 {
            return Err(Error::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(op, false, payload);
        Ok(())
    }

    /// Starts the closing handshake with `frame` (`None`: no status code).
    /// Idempotent once closing has started.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.state != State::Open {
            return Ok(());
        }
        if let Some(f) = &frame {
            if !f.code.is_valid_on_wire() || f.reason.len() > 123 {
                return Err(Error::InvalidCloseToSend);
            }
        }
        self.queue_close(frame.as_ref());
        self.cold_mut().sent_close =
            Some(frame.unwrap_or(CloseFrame::new(CloseCode::NO_STATUS, "")));
        self.state = State::CloseSent;
        Ok(())
    }

    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        let mut payload = BytesMut::new();
        if let Some(f) = frame {
            // Validated by the callers; an invalid frame becomes an empty close.
            if f.encode(&mut payload).is_err() {
                payload.clear();
            }
        }
        self.write_frame(OpCode::Close, false, &payload);
    }

    fn write_frame(&mut self, op: OpCode, rsv1: bool, payload: &[u8]) {
        self.write_raw_slice(true, op, rsv1, payload);
    }

    fn write_frame_bytes(&mut self, op: OpCode, rsv1: bool, payload: Bytes) {
        self.write_raw(true, op, rsv1, payload);
    }

    fn mask_key(&self) -> Option<[u8; 4]> {
        match self.role {
            Role::Server => None,
            Role::Client => {
                let mut k = [0u8; 4];
                rand::rng().fill_bytes(&mut k);
                Some(k)
            }
        }
    }

    fn header(&self, fin: bool, opcode: OpCode, rsv1: bool, len: usize) -> FrameHeader {
        FrameHeader {
            fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: self.mask_key(),
            payload_len: len as u64,
        }
    }

    fn write_raw(&mut self, fin: bool, opcode: OpCode, rsv1: bool, payload: Bytes) {
        if self.role == Role::Client {
            return self.write_raw_slice(fin, opcode, rsv1, &payload);
        }
        let h = self.header(fin, opcode, rsv1, payload.len());
        h.encode(self.out.tail());
        self.out.added(h.encoded_len());
        self.out.push_bytes(payload);
    }

    fn write_raw_slice(&mut self, fin: bool, opcode: OpCode, rsv1: bool, payload: &[u8]) {
        let h = self.header(fin, opcode, rsv1, payload.len());
        let tail = self.out.tail();
        h.encode(tail);
        let start = tail.len();
        tail.extend_from_slice(payload);
        if let Some(k) = h.mask {
            apply_mask(&mut tail[start..], k, 0);
        }
        self.out.added(h.encoded_len() + payload.len());
    }

    /// Makes room in the outbound buffer for `count` frames of about
    /// `frame_len` bytes each about to be queued (a batch of
    /// [`PreparedMessage`]s), in one allocation rather than by doubling as
    /// they arrive. A hint: frames of 256 bytes and more are queued by
    /// reference and need no room, and at most 64 KiB is set aside.
    pub fn reserve_outbound(&mut self, frame_len: usize, count: usize) {
        self.out.reserve_frames(frame_len, count);
    }

    /// Bytes queued and not yet written (the browser's `bufferedAmount`).
    pub fn outbound_len(&self) -> usize {
        self.out.len()
    }

    /// Fills `dst` with the queued bytes, in order, for a vectored write;
    /// returns how many slices were filled.
    pub fn outbound_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// The first contiguous run of queued bytes (for a plain write).
    pub fn outbound(&self) -> &[u8] {
        self.out.first()
    }

    /// Marks `n` queued bytes as written.
    pub fn consume_outbound(&mut self, n: usize) {
        self.out.consume(n);
        self.sent_owned();
        if self.state == State::CloseReceived && self.out.len() == 0 {
            self.state = State::Closed;
        }
    }

    /// Gives back the memory of the outbound buffer and the event queue if
    /// both are empty. A driver calls it when it is about to wait for input
    /// with nothing left to write, so that an idle connection holds no
    /// buffers however busy it was; the next message allocates them again.
    pub fn release_idle_buffers(&mut self) {
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        self.out.release_if_empty();
    }

    /// Removes and returns the first run of queued bytes (no copy), for
    /// writers that hand buffers to another task. Counts as written.
    pub fn take_outbound_chunk(&mut self) -> Option<Bytes> {
        let b = self.out.pop_chunk();
        self.sent_owned();
        if self.state == State::CloseReceived && self.out.len() == 0 {
            self.state = State::Closed;
        }
        b
    }

    // ---------------------------------------------------------- memory budget

    /// Before a driver reads up to `incoming` more bytes into a buffer that
    /// holds `held` bytes of input [`receive`](Self::receive) has not
    /// consumed: reserves them from the [`MemoryBudget`] of
    /// [`Config::memory_budget`] (the first
    /// [`MemoryBudget::UNCHARGED`] bytes are free). When the budget is
    /// spent, the connection fails — close 1009 queued if a message was
    /// being received, 1013 otherwise — and the error is returned: the
    /// driver must not read, and writes the close out. Always `Ok` without
    /// a budget. [`receive`](Self::receive) gives back what it consumes;
    /// a read that brings less than reserved calls
    /// [`release_read`](Self::release_read).
    pub fn reserve_read(&mut self, held: usize, incoming: usize) -> Result<(), Error> {
        let want = self.held_input(held.saturating_add(incoming));
        if charge(&self.config, &mut self.cold, Way::In, want, true) {
            return Ok(());
        }
        let receiving = held > 0 || self.message.is_some() || self.frame.is_some();
        let e = Error::MemoryBudget { receiving };
        self.fail(e.clone());
        Err(e)
    }

    /// Like [`reserve_read`](Self::reserve_read) with nothing incoming,
    /// for a buffer the driver may do without (one sized on a guess):
    /// reserves room for `held` bytes and says whether it could. When the
    /// budget is spent it returns `false` and the connection carries on.
    pub fn try_reserve_read(&mut self, held: usize) -> bool {
        let want = self.held_input(held);
        charge(&self.config, &mut self.cold, Way::In, want, true)
    }

    /// The driver's buffer holds `held` bytes of input not yet consumed:
    /// gives back whatever was reserved beyond them (a read that brought
    /// less than [`reserve_read`](Self::reserve_read) reserved, or nothing).
    pub fn release_read(&mut self, held: usize) {
        let want = self.held_input(held);
        charge(&self.config, &mut self.cold, Way::In, want, false);
    }

    /// Bytes this connection has reserved from its memory budget now.
    pub fn budget_charge(&self) -> usize {
        self.cold().charged_in + self.cold().charged_out
    }

    /// Input held: the driver's unconsumed bytes and the message being
    /// reassembled or inflated.
    fn held_input(&self, driver: usize) -> usize {
        driver.saturating_add(self.message.as_ref().map_or(0, |m| m.buf.len()))
    }

    /// Reserves the budget for a send that queues `payload` bytes (plus a
    /// frame header); when it is spent, fails the connection with 1013.
    fn reserve_send(&mut self, payload: usize) -> Result<(), Error> {
        if self.config.memory_budget.is_none() {
            return Ok(());
        }
        let tracked = self.cold().out_owned;
        // Until a connection's own queued bytes pass the allowance they are
        // not tracked; then everything queued counts as its own.
        let before = if tracked > 0 { tracked } else { self.out.len() };
        let owned = before.saturating_add(payload.saturating_add(FRAME_HEADER_MAX));
        if tracked == 0 && owned <= MemoryBudget::UNCHARGED {
            return Ok(());
        }
        if !charge(&self.config, &mut self.cold, Way::Out, owned, true) {
            let e = Error::MemoryBudget { receiving: false };
            self.fail(e.clone());
            return Err(e);
        }
        self.cold_mut().out_owned = owned;
        Ok(())
    }

    /// After queued bytes were written: the connection's own queued bytes
    /// are at most what is still queued; the rest goes back to the budget.
    fn sent_owned(&mut self) {
        let left = self.out.len();
        let Some(c) = self.cold.as_deref_mut() else {
            return;
        };
        if c.out_owned > left {
            c.out_owned = left;
            if !charge(&self.config, &mut self.cold, Way::Out, left, false) {
                return;
            }
            if self.cold.as_deref().is_some_and(Cold::is_unused) {
                self.cold = None;
            }
        }
    }

    // ----------------------------------------------------------------- timers

    /// Advances the connection's clock: arms timers that started since the
    /// last call, fires those that expired (close timeout, keepalive ping,
    /// pong timeout). Call it after every other call, then ask
    /// [`poll_timeout`](Self::poll_timeout) when to call it again.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::CloseSent => match self.cold().close_deadline {
                None => self.cold_mut().close_deadline = Some(now + self.config.close_timeout),
                Some(d) if now >= d => {
                    self.cold_mut().close_deadline = None;
                    self.state = State::Closed;
                }
                _ => {}
            },
            State::Open => {
                let Some(interval) = self.config.ping_interval else {
                    return;
                };
                if std::mem::take(&mut self.activity) {
                    self.cold_mut().pong_deadline = None;
                    self.cold_mut().next_ping = Some(now + interval);
                }
                if let Some(d) = self.cold().pong_deadline {
                    if now >= d {
                        self.cold_mut().pong_deadline = None;
                        self.cold_mut().error = Some(Error::KeepaliveTimeout);
                        self.state = State::Closed;
                        return;
                    }
                }
                match self.cold().next_ping {
                    None => self.cold_mut().next_ping = Some(now + interval),
                    Some(t) if now >= t => {
                        self.write_frame(OpCode::Ping, false, b"keepalive");
                        self.cold_mut().next_ping = Some(now + interval);
                        if self.cold().pong_deadline.is_none() {
                            self.cold_mut().pong_deadline = Some(now + self.config.pong_timeout);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Whether [`handle_timeout`](Self::handle_timeout) has anything to
    /// arm or check: a driver may skip reading the clock while this is
    /// false (closing started and keepalive both arm timers on their first
    /// call).
    pub fn wants_clock(&self) -> bool {
        match self.state {
            State::CloseSent => true,
            State::Open => self.config.ping_interval.is_some(),
            _ => false,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::CloseSent => self.cold().close_deadline,
            State::Open => match (self.cold().next_ping, self.cold().pong_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;

    /// A connection that received (and sent) a message large enough to be
    /// charged to the budget holds nothing for it once it is delivered and
    /// written: not even the box the charge was kept in.
    #[test]
    fn a_large_message_leaves_no_box_behind_once_delivered_and_sent() {
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let config = Config::default().with_memory_budget(budget.clone());
        let mut server = Connection::new(Role::Server, config, None);
        let mut client = Connection::new(Role::Client, Config::default(), None);
        client.send(Message::binary(vec![5u8; 100 << 10])).unwrap();
        let wire = client.outbound().to_vec();
        let mut buf = BytesMut::new();
        for piece in wire.chunks(16 << 10) {
            server.reserve_read(buf.len(), piece.len()).unwrap();
            buf.extend_from_slice(piece);
            server.receive(&mut buf).unwrap();
        }
        assert!(budget.peak() > 0, "it was charged");
        let Some(Event::Message(m)) = server.poll_event() else {
            panic!("the message");
        };
        // What a driver does before it waits for input: its buffer goes.
        drop(buf);
        server.release_read(0);
        assert_eq!(budget.used(), 0);
        assert!(server.cold.is_none(), "the charge's box is dropped");
        server.send(m).unwrap();
        assert!(budget.used() > 0, "the echo is charged while queued");
        let n = server.outbound_len();
        server.consume_outbound(n);
        assert_eq!(budget.used(), 0);
        assert!(server.cold.is_none(), "and dropped again once written");
    }
}
