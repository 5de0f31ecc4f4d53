//! Fuzz-target bodies, shared by the cargo-fuzz targets in `fuzz/` and by the
//! ordinary tests that replay their seed corpora (`tests/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes and asserts the property DESIGN.md §6
//! names for fuzzing: *every input is accepted or rejected with a documented
//! error — never a panic, never unbounded allocation.* A failed assertion
//! (a panic) is a bug in the protocol core, not in the input.
//!
//! | function | exercises |
//! | --- | --- |
//! | [`frame_header`](crate::fuzzing::frame_header) | `FrameHeader::parse` and its round trip through `FrameHeader::encode` |
//! | [`connection_rechunked`](crate::fuzzing::connection_rechunked) | `Connection::receive` fed in data-chosen chunk sizes, against a single-chunk run |
//! | [`handshake`](crate::fuzzing::handshake) | server request parsing and validation, client response parsing, `Sec-WebSocket-Extensions` parsing |
//! | [`inflate`](crate::fuzzing::inflate) | the permessage-deflate `Inflater` with a 1 MiB output cap |
//!
//! Every function is deterministic: the same bytes take the same path, so a
//! crashing input found by the fuzzer replays as a plain test.

use crate::close::CloseCode;
use crate::config::{Config, DeflateConfig};
use crate::connection::{Connection, Role, State};
use crate::deflate::{self, DeflateParams, Inflater, Side};
use crate::error::Error;
use crate::frame::{FrameHeader, MAX_HEADER_LEN};
use crate::handshake::accept_key;
use crate::handshake::client::{ClientHandshake, ClientRequest};
use crate::handshake::server::{self, UpgradeRequest};
use crate::message::{Event, Message};
use bytes::BytesMut;
use std::io::IoSlice;

// ------------------------------------------------------------------- frames

/// Parses `data` as a frame header.
///
/// Asserts: an error is one of the structural errors [`FrameHeader::parse`]
/// documents, each closing with 1002; "need more bytes" is only answered
/// while fewer than [`MAX_HEADER_LEN`] bytes are given; a parsed header says
/// it took `2..=MAX_HEADER_LEN` bytes, no more than were given, obeys the
/// control-frame rules, and every shorter prefix of those bytes asks for more;
/// re-encoding the header (shortest length encoding) parses back to an equal
/// header, no longer than the original.
pub fn frame_header(data: &[u8]) {
    match FrameHeader::parse(data) {
        Ok(None) => assert!(
            data.len() < MAX_HEADER_LEN,
            "incomplete with {} bytes",
            data.len()
        ),
        Ok(Some((h, n))) => {
            assert!((2..=MAX_HEADER_LEN).contains(&n), "header length {n}");
            assert!(n <= data.len(), "header took {n} of {} bytes", data.len());
            assert!(
                h.payload_len >> 63 == 0,
                "length {} has the top bit set",
                h.payload_len
            );
            if h.opcode.is_control() {
                assert!(
                    h.fin && h.payload_len <= 125,
                    "bad control header accepted: {h:?}"
                );
            }
            for i in 0..n {
                assert_eq!(
                    FrameHeader::parse(&data[..i]),
                    Ok(None),
                    "prefix of {i} bytes"
                );
            }
            let mut out = BytesMut::new();
            h.encode(&mut out);
            assert_eq!(out.len(), h.encoded_len());
            assert!(
                out.len() <= n,
                "re-encoding grew from {n} to {} bytes",
                out.len()
            );
            let (back, m) = FrameHeader::parse(&out)
                .expect("re-encoded header parses")
                .expect("re-encoded header is complete");
            assert_eq!(back, h);
            assert_eq!(m, out.len());
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::ReservedOpcode(_)
                        | Error::InvalidLength
                        | Error::FragmentedControlFrame
                        | Error::ControlFrameTooLong(_)
                ),
                "undocumented header error {e:?}"
            );
            assert_eq!(e.close_code(), Some(CloseCode::PROTOCOL_ERROR), "{e:?}");
        }
    }
}

// --------------------------------------------------------------- connection

/// How many leading bytes of a [`connection_rechunked`] input are parameters.
pub const CONNECTION_PARAM_BYTES: usize = 4;

/// Message and frame limit used by [`connection_rechunked`] (flag `0x20`
/// selects [`SMALL_LIMIT`] instead), so that memory stays bounded.
pub const LIMIT: usize = 64 << 10;

/// The smaller limit [`connection_rechunked`] uses when flag `0x20` is set,
/// so that small inputs reach the size checks.
pub const SMALL_LIMIT: usize = 1 << 10;

/// The fragment limit [`connection_rechunked`] uses when flag `0x10` is set.
pub const SMALL_MAX_FRAGMENTS: usize = 8;

/// The parameters [`connection_rechunked`] reads from its first
/// [`CONNECTION_PARAM_BYTES`] bytes.
#[derive(Debug, Clone)]
pub struct ConnectionParams {
    /// Byte 0, bit `0x01`: the role of the connection under test (clear:
    /// server, so the stream must be masked; set: client).
    pub role: Role,
    /// Byte 0, bit `0x02`: permessage-deflate agreed; bits `0x04` / `0x08`
    /// set `client_no_context_takeover` / `server_no_context_takeover`.
    pub deflate: Option<DeflateParams>,
    /// Limits; byte 0 bits `0x10` (few fragments) and `0x20` (small sizes).
    pub config: Config,
    /// Byte 1: the largest chunk, `byte + 1` (1–255), or 64 KiB for `0xff`.
    pub max_chunk: usize,
    /// Bytes 2–3: seed of the chunk-size sequence.
    pub seed: u16,
}

impl ConnectionParams {
    /// Reads the parameters from the start of `data`; returns them and the
    /// rest, the byte stream. Missing bytes count as zero.
    pub fn split(data: &[u8]) -> (ConnectionParams, &[u8]) {
        let mut p = [0u8; CONNECTION_PARAM_BYTES];
        let n = data.len().min(CONNECTION_PARAM_BYTES);
        p[..n].copy_from_slice(&data[..n]);
        let flags = p[0];
        let role = if flags & 0x01 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        let deflate = (flags & 0x02 != 0).then(|| DeflateParams {
            client_no_context_takeover: flags & 0x04 != 0,
            server_no_context_takeover: flags & 0x08 != 0,
            ..DeflateParams::default()
        });
        let limit = if flags & 0x20 != 0 {
            SMALL_LIMIT
        } else {
            LIMIT
        };
        let mut config = Config::default()
            .with_max_message_size(limit)
            .with_deflate(deflate.map(|_| DeflateConfig::default()));
        if flags & 0x10 != 0 {
            config = config.with_max_fragments(SMALL_MAX_FRAGMENTS);
        }
        let max_chunk = if p[1] == 0xff {
            64 << 10
        } else {
            p[1] as usize + 1
        };
        let seed = u16::from_le_bytes([p[2], p[3]]);
        (
            ConnectionParams {
                role,
                deflate,
                config,
                max_chunk,
                seed,
            },
            &data[n..],
        )
    }

    /// The chunk sizes, 1..=`max_chunk`, from a small deterministic PRNG.
    fn chunk_sizes(&self) -> impl Iterator<Item = usize> {
        let max = self.max_chunk;
        // xorshift32; the seed is never zero.
        let mut x = 0x9e37_79b9u32 ^ u32::from(self.seed);
        std::iter::repeat_with(move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            1 + (x as usize % max)
        })
    }
}

/// Everything observable after feeding a stream to a connection.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<Error>,
    state: State,
    sent_close_code: Option<CloseCode>,
    /// Bytes queued to send (for a client only their length: masks are random).
    outbound: Result<Vec<u8>, usize>,
}

/// Feeds `stream` to a fresh connection in chunks of the given sizes, polling
/// events after each chunk, and checks the per-step invariants.
fn drive(p: &ConnectionParams, stream: &[u8], mut sizes: impl Iterator<Item = usize>) -> Outcome {
    let cfg = &p.config;
    let mut conn = Connection::new(p.role, cfg.clone(), p.deflate);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let was_failed = conn.error().is_some();
        match conn.receive(&mut buf) {
            Ok(()) => {}
            Err(e) => {
                assert!(!was_failed, "a second error after the first: {e:?}");
                assert!(
                    e.close_code().is_some(),
                    "receive error without a close code: {e:?}"
                );
                assert_ne!(conn.state(), State::Open, "still open after {e:?}");
                assert_eq!(conn.error(), Some(&e));
            }
        }
        // Only an incomplete header or an incomplete frame payload stays
        // behind, and a payload never beyond the frame limit.
        let kept = cfg.max_frame_size.max(125) + MAX_HEADER_LEN;
        assert!(
            buf.len() <= kept,
            "{} bytes left in the read buffer",
            buf.len()
        );
        assert!(conn.pending_frame_bytes() <= cfg.max_frame_size.max(125));
        while let Some(ev) = conn.poll_event() {
            check_event(&ev, cfg);
            events.push(ev);
        }
    }
    // Drained: a deferred error has now failed the connection.
    if let Some(e) = conn.error() {
        let code = e.close_code();
        assert!(
            code.is_some(),
            "connection failed without a close code: {e:?}"
        );
        assert_ne!(conn.state(), State::Open, "still open after {e:?}");
        assert!(
            conn.received_close().is_none(),
            "failed after the peer's close: {e:?}"
        );
        assert_eq!(
            conn.sent_close().map(|f| f.code),
            code,
            "close frame does not carry the code"
        );
    }
    if conn.received_close().is_some() {
        assert_ne!(conn.state(), State::Open, "open after the peer's close");
        assert!(
            matches!(events.last(), Some(Event::Close(_))),
            "close is not the last event"
        );
    }
    if conn.state() == State::Open {
        assert!(conn.error().is_none() && conn.sent_close().is_none());
    }
    // The close frame that failing queued ends the output. Its reason is the
    // error's text, which for `InflateFailed` is zlib's message: leave it out
    // of the comparison (see `connection_rechunked`).
    let failure_close = match (conn.error(), conn.sent_close()) {
        (Some(_), Some(f)) => {
            let header = if p.role == Role::Client { 6 } else { 2 };
            header + 2 + f.reason.len()
        }
        _ => 0,
    };
    assert!(failure_close <= conn.outbound_len());
    let outbound = match p.role {
        Role::Server => {
            let mut slices = vec![IoSlice::new(&[]); 1024];
            let k = conn.outbound_slices(&mut slices);
            let mut bytes: Vec<u8> = slices[..k].iter().flat_map(|s| s.iter().copied()).collect();
            if k < slices.len() {
                assert_eq!(bytes.len(), conn.outbound_len());
                let at = bytes.len() - failure_close;
                if failure_close > 0 {
                    assert_eq!(
                        bytes[at], 0x88,
                        "failure did not end the output with a close frame"
                    );
                }
                bytes.truncate(at);
            }
            Ok(bytes)
        }
        Role::Client => Err(conn.outbound_len() - failure_close),
    };
    let error = conn.error().cloned().map(|e| match e {
        Error::InflateFailed(_) => Error::InflateFailed(String::new()),
        e => e,
    });
    Outcome {
        events,
        error,
        state: conn.state(),
        sent_close_code: conn.sent_close().map(|f| f.code),
        outbound,
    }
}

fn check_event(ev: &Event, cfg: &Config) {
    match ev {
        Event::Message(m) => {
            assert!(
                m.len() <= cfg.max_message_size,
                "message of {} bytes",
                m.len()
            );
            if let Message::Text(t) = m {
                assert!(
                    std::str::from_utf8(t.as_bytes()).is_ok(),
                    "text message is not UTF-8"
                );
            }
        }
        Event::Ping(p) | Event::Pong(p) => {
            assert!(p.len() <= 125, "control payload of {}", p.len())
        }
        Event::Close(Some(f)) => {
            assert!(
                f.code.is_valid_on_wire(),
                "close code {} accepted",
                f.code.0
            );
            assert!(
                f.reason.len() <= 123,
                "close reason of {} bytes",
                f.reason.len()
            );
            assert!(std::str::from_utf8(f.reason.as_bytes()).is_ok());
        }
        Event::Close(None) => {}
    }
}

/// Feeds the stream in `data` to a [`Connection`] in chunks of varying size,
/// then again in one chunk, and compares.
///
/// The first [`CONNECTION_PARAM_BYTES`] bytes choose the role, whether
/// permessage-deflate was agreed (and its context-takeover parameters), the
/// limits and the chunk sizes (see [`ConnectionParams`]); the rest is the
/// stream. Limits are at most [`LIMIT`] so memory stays bounded.
///
/// Asserts: an error `receive` returns has a close code, leaves the
/// connection not `Open` and is the connection's [`Connection::error`]; a
/// failed connection queued a close frame with that code; at most a partial
/// frame is left in the read buffer; messages respect `max_message_size`,
/// text is UTF-8, control payloads and close frames are well formed; and the
/// chunked run and the single-chunk run give the same events, the same error,
/// the same final state and the same queued output (events that preceded
/// an error in the same input are delivered in both, see
/// [`Connection::receive`]). `InflateFailed` errors are compared without
/// their text (and so without the close frame's reason): zlib-rs reports
/// some corrupt inputs as "invalid distance too far back" when inflated in
/// small pieces but as "repeated call with bad state" when its fast path
/// sees them whole (corpus seed `connection/inflate-error-text-depends-on-chunking.bin`).
///
/// Output past `max_message_size` is reported even when the inflate call
/// that produced it then found the stream corrupt, as smaller pieces would
/// have shown the output first (corpus seed
/// `connection/deflate-output-past-limit-then-corrupt-in-one-call.bin`).
///
/// Invalid UTF-8 in inflated text is reported before a size or inflate
/// error found in the same input, so the outcome does not depend on the
/// chunking (corpus seeds `connection/deflate-bad-utf8-1007-or-1009-by-chunking.bin`
/// and `connection/server-deflate-bad-utf8-bomb.bin`).
pub fn connection_rechunked(data: &[u8]) {
    let (params, stream) = ConnectionParams::split(data);
    let chunked = drive(&params, stream, params.chunk_sizes());
    let whole = drive(&params, stream, std::iter::empty());
    assert_eq!(
        chunked, whole,
        "re-chunking changed the outcome ({params:?})"
    );
}

// ---------------------------------------------------------------- handshake

/// In a [`handshake`] input, this marker is replaced by the
/// `Sec-WebSocket-Accept` value matching the client's random key before the
/// input is parsed as a response, so that seeds can get past the accept check.
pub const ACCEPT_MARKER: &[u8] = b"@ACCEPT@";

/// The subprotocols the client in [`handshake`] offers.
pub const CLIENT_PROTOCOLS: [&str; 2] = ["chat", "superchat"];

fn check_handshake_error(e: &Error) {
    assert!(e.is_handshake(), "not a handshake error: {e:?}");
    assert!(
        (400..=499).contains(&e.http_status()),
        "status {} for {e:?}",
        e.http_status()
    );
    // The refusal is a complete HTTP response with that status.
    let bytes = server::reject_error(e);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => assert_eq!(resp.code, Some(e.http_status())),
        other => panic!("refusal for {e:?} does not parse: {other:?}"),
    }
}

/// Parses `data` as the server side's request, as the client side's
/// response, and (lossily decoded) as a `Sec-WebSocket-Extensions` value.
///
/// Asserts: server-side errors are handshake errors answered with a 4xx, and
/// their refusal parses as HTTP; a complete head is no longer than the input
/// and the limits; an accepted upgrade gets a well-formed `101` carrying the
/// right accept key, and a permessage-deflate agreement our own client
/// accepts; client-side errors are handshake errors, and a valid response
/// picks an offered subprotocol ([`ACCEPT_MARKER`] stands for the accept
/// key); extension offers have token names and their permessage-deflate
/// parameters survive formatting and re-parsing.
pub fn handshake(data: &[u8]) {
    let cfg = Config::default();

    // Server side.
    match server::parse_request(data, &cfg) {
        Ok(None) => assert!(data.len() < cfg.max_handshake_bytes),
        Ok(Some((req, n))) => {
            assert!(
                n <= data.len() && n <= cfg.max_handshake_bytes,
                "head of {n} bytes"
            );
            assert!(req.headers.len() <= cfg.max_headers);
            match UpgradeRequest::validate(req) {
                Ok(up) => check_accepted(&up, &cfg),
                Err(e) => check_handshake_error(&e),
            }
        }
        Err(e) => check_handshake_error(&e),
    }

    // Client side.
    let req = ClientRequest {
        host: "example.com".into(),
        target: "/chat".into(),
        protocols: CLIENT_PROTOCOLS.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    let (hs, _request) = ClientHandshake::new(&req, &cfg);
    let response = replace_all(
        data,
        ACCEPT_MARKER,
        accept_key(hs.key().as_bytes()).as_bytes(),
    );
    match hs.parse_response(&response) {
        Ok(None) => assert!(response.len() < cfg.max_handshake_bytes),
        Ok(Some((resp, n))) => {
            assert!(
                n <= response.len() && n <= cfg.max_handshake_bytes,
                "head of {n} bytes"
            );
            if let Some(p) = &resp.protocol {
                assert!(
                    CLIENT_PROTOCOLS.contains(&p.as_str()),
                    "unoffered subprotocol {p:?}"
                );
            }
            if let Some(d) = resp.deflate {
                // The agreed parameters are what a connection is built with.
                let _ = Connection::new(Role::Client, cfg.clone(), Some(d));
            }
        }
        Err(e) => assert!(e.is_handshake(), "not a handshake error: {e:?}"),
    }

    // Extension header parsing.
    let text = String::from_utf8_lossy(data);
    match deflate::parse_extensions(&text) {
        Ok(offers) => {
            for o in &offers {
                assert!(!o.name.is_empty(), "empty extension name");
                if o.name != deflate::EXTENSION_NAME {
                    continue;
                }
                if let Ok(p) = DeflateParams::from_params(&o.params) {
                    let again =
                        deflate::parse_extensions(&p.to_header()).expect("own header parses");
                    assert_eq!(again.len(), 1);
                    assert_eq!(DeflateParams::from_params(&again[0].params), Ok(p));
                }
            }
            check_negotiation(&offers);
        }
        Err(e) => assert!(matches!(e, Error::BadExtension(_)), "{e:?}"),
    }
}

/// An accepted upgrade: the 101 response is well formed and what it agreed
/// is acceptable to our own client.
fn check_accepted(up: &UpgradeRequest, cfg: &Config) {
    assert!(!up.host.is_empty());
    let protocol = up.protocols.first().map(String::as_str);
    let acc = server::accept(up, cfg, protocol, &[]);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&acc.response) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, acc.response.len()),
        other => panic!("101 response does not parse: {other:?}"),
    }
    assert_eq!(resp.code, Some(101));
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
    assert_eq!(
        accept.map(|h| h.value),
        Some(accept_key(up.key.as_bytes()).as_bytes())
    );
    if let Some(d) = acc.deflate {
        let _ = Connection::new(Role::Server, cfg.clone(), Some(d));
    }
    check_negotiation(&up.extensions);
}

/// What the server agrees to for any offer, the client that offered the
/// most accepts.
fn check_negotiation(offers: &[deflate::ExtensionOffer]) {
    let dcfg = DeflateConfig::default();
    if let Some(agreed) = deflate::negotiate_server(offers, &dcfg) {
        let offered = deflate::client_offer(&dcfg);
        assert_eq!(
            deflate::accept_response(&agreed.to_header(), &offered),
            Ok(Some(agreed)),
            "server's answer {:?} refused by the client",
            agreed.to_header()
        );
    }
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

// ------------------------------------------------------------------ inflate

/// The output cap [`inflate`] inflates with.
pub const INFLATE_LIMIT: usize = 1 << 20;

fn inflate_with(pieces: &[&[u8]]) -> (Result<(), Error>, Vec<u8>) {
    let mut inf = Inflater::new(Side::Server, &DeflateParams::default());
    let mut out = Vec::new();
    let mut r = Ok(());
    for piece in pieces {
        r = inf.inflate(piece, &mut out, INFLATE_LIMIT);
        assert!(
            out.capacity() <= INFLATE_LIMIT,
            "capacity {} during inflate",
            out.capacity()
        );
        if r.is_err() {
            break;
        }
    }
    if r.is_ok() {
        r = inf.finish_message(&mut out, INFLATE_LIMIT);
    }
    // The cap is enforced while inflating: `out` never grew past it.
    assert!(
        out.capacity() <= INFLATE_LIMIT,
        "capacity {}",
        out.capacity()
    );
    match &r {
        Ok(()) => assert!(out.len() <= INFLATE_LIMIT, "{} bytes inflated", out.len()),
        Err(Error::MessageTooLarge { limit }) => assert_eq!(*limit, INFLATE_LIMIT),
        Err(Error::InflateFailed(_)) => {}
        Err(e) => panic!("undocumented inflate error {e:?}"),
    }
    (r, out)
}

/// Inflates `data` as one permessage-deflate message (with the `00 00 ff ff`
/// tail added by `finish_message`) under a cap of [`INFLATE_LIMIT`] bytes,
/// then again split in two at a data-chosen point.
///
/// Asserts: success stays within the cap; failure is `MessageTooLarge` or
/// `InflateFailed`; the output buffer's capacity never exceeds the cap,
/// whatever the input (a deflate bomb is stopped while inflating);
/// and splitting the input changes neither the output nor the kind of error.
pub fn inflate(data: &[u8]) {
    let (whole, out) = inflate_with(&[data]);
    let at = data.first().map_or(0, |&b| b as usize * data.len() / 256);
    let (split, out2) = inflate_with(&[&data[..at], &data[at..]]);
    match (&whole, &split) {
        (Ok(()), Ok(())) => assert!(out == out2, "split input inflated differently"),
        (Err(a), Err(b)) => {
            assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "{a:?} vs {b:?}"
            )
        }
        _ => panic!("split at {at} changed the result: {whole:?} vs {split:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_inputs_pass() {
        for data in [&b""[..], b"\x00", b"\x81\x05Hello", b"\xff\xff\xff\xff\xff"] {
            frame_header(data);
            connection_rechunked(data);
            handshake(data);
            inflate(data);
        }
    }

    #[test]
    fn chunk_sizes_stay_in_range() {
        let (p, rest) = ConnectionParams::split(&[0x03, 6, 1, 2, 9]);
        assert_eq!(rest, &[9]);
        assert_eq!((p.role, p.max_chunk), (Role::Client, 7));
        assert!(p.deflate.is_some());
        assert!(p.chunk_sizes().take(1000).all(|n| (1..=7).contains(&n)));
    }

    #[test]
    fn replace_all_replaces_every_marker() {
        assert_eq!(
            replace_all(b"a@ACCEPT@b@ACCEPT@", ACCEPT_MARKER, b"X"),
            b"aXbX"
        );
    }
}
