//! Replays the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) through
//! the target bodies in `duplex_proto::fuzzing`, so every seed — and every
//! crash the fuzzer once found, added there as a seed — is an ordinary test.
//!
//! The generated seeds are built by the functions below; the test
//! `seed_corpus_is_up_to_date` checks that the committed files match them,
//! and rewrites them when run with `DUPLEX_REGENERATE_CORPUS=1`:
//!
//! ```text
//! DUPLEX_REGENERATE_CORPUS=1 cargo test -p duplex-proto --test fuzz_corpus seed_corpus
//! ```
//!
//! It only (re)writes the files it names, so crash inputs added by hand stay.

use duplex_proto::config::DeflateConfig;
use duplex_proto::deflate::{DeflateParams, Deflater, Side};
use duplex_proto::fuzzing;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs every file of the target's corpus through `f`, reporting all the
/// files that fail rather than only the first.
fn replay(target: &str, f: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{}: only {} seed files",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("readable seed");
        if catch_unwind(AssertUnwindSafe(|| f(&data))).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(failed.is_empty(), "{target}: seeds failing: {failed:?}");
}

#[test]
fn frame_header_corpus() {
    replay("frame_header", fuzzing::frame_header);
}

#[test]
fn connection_corpus() {
    replay("connection", fuzzing::connection_rechunked);
}

#[test]
fn handshake_corpus() {
    replay("handshake", fuzzing::handshake);
}

#[test]
fn inflate_corpus() {
    replay("inflate", fuzzing::inflate);
}

// ---------------------------------------------------------- seed generation

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `rsv` is the RSV1..3 bits as 0b100 = RSV1; masked with [`KEY`]
/// when `masked`.
fn frame(fin: bool, rsv: u8, op: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let first = (fin as u8) << 7 | (rsv & 7) << 4 | (op & 0xf);
    duplex_proto::frame::encode_raw(first, masked.then_some(KEY), payload)
}

/// The parameter bytes of a `connection` seed: flags, chunk byte, seed.
fn params(flags: u8, chunk: u8, seed: u16) -> Vec<u8> {
    let s = seed.to_le_bytes();
    vec![flags, chunk, s[0], s[1]]
}

fn compress(side: Side, params: &DeflateParams, level: u32, msgs: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut cfg = DeflateConfig::default();
    cfg.level = level;
    let mut d = Deflater::new(side, params, &cfg);
    msgs.iter()
        .map(|m| d.compress(m).expect("compresses"))
        .collect()
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

const ROLE_CLIENT: u8 = 0x01;
const DEFLATE: u8 = 0x02;
const CLIENT_NO_CONTEXT: u8 = 0x04;
const FEW_FRAGMENTS: u8 = 0x10;
const SMALL_LIMIT: u8 = 0x20;

fn frame_header_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text-unmasked", frame(true, 0, 1, false, b"Hello")),
        ("text-masked", frame(true, 0, 1, true, b"Hello")),
        (
            "binary-len16",
            frame(true, 0, 2, false, &[0xaa; 256])[..4].to_vec(),
        ),
        (
            "binary-len64-masked",
            vec![0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
        ),
        ("len64-top-bit", vec![0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        (
            "non-shortest-len16",
            vec![0x82, 0x7e, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o'],
        ),
        ("ping-masked", frame(true, 0, 9, true, b"ping")),
        (
            "close-1000",
            frame(true, 0, 8, false, &close_payload(1000, "bye")),
        ),
        ("control-too-long", vec![0x89, 0x7e, 0x00, 0x7e]),
        ("control-fragmented", vec![0x09, 0x00]),
        ("reserved-opcode", vec![0x83, 0x00]),
        ("continuation-rsv-all", vec![0x70, 0x81, 1, 2, 3, 4]),
        ("incomplete-len64", vec![0x82, 0x7f, 0, 0, 0]),
    ]
}

fn connection_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let server = DeflateParams::default();
    let no_ctx = DeflateParams {
        client_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let hello = "Hello, hello, hello, permessage-deflate! ".repeat(8);
    let takeover = compress(
        Side::Client,
        &server,
        1,
        &[hello.as_bytes(), hello.as_bytes()],
    );
    let reset = compress(
        Side::Client,
        &no_ctx,
        6,
        &[hello.as_bytes(), hello.as_bytes()],
    );
    let bomb = compress(Side::Client, &server, 9, &[&vec![0u8; 1 << 20]]).remove(0);
    let from_server = compress(Side::Server, &server, 1, &[hello.as_bytes()]).remove(0);
    let bad_text_bomb = {
        let mut m = vec![0xffu8; 16];
        m.extend(vec![b'a'; 1 << 20]);
        compress(Side::Client, &server, 9, &[&m]).remove(0)
    };
    let (first, second) = takeover[0].split_at(takeover[0].len() / 2);
    vec![
        (
            "server-text-binary-close",
            cat(&[
                params(0, 2, 1),
                frame(true, 0, 1, true, b"Hello"),
                frame(true, 0, 2, true, &[0, 1, 2, 3, 0xff]),
                frame(true, 0, 8, true, &close_payload(1000, "done")),
            ]),
        ),
        (
            "server-fragments-interleaved-controls",
            cat(&[
                params(0, 4, 7),
                frame(false, 0, 1, true, b"Hel"),
                frame(true, 0, 9, true, b"p"),
                frame(false, 0, 0, true, "lo, w\u{e9}".as_bytes()),
                frame(true, 0, 10, true, b"q"),
                frame(true, 0, 0, true, "orld \u{1f600}".as_bytes()),
                frame(true, 0, 8, true, &[]),
            ]),
        ),
        (
            "client-unmasked-frames",
            cat(&[
                params(ROLE_CLIENT, 0, 3),
                frame(true, 0, 2, false, &[7; 200]),
                frame(true, 0, 9, false, b""),
                frame(true, 0, 1, false, "\u{20ac} split".as_bytes()),
            ]),
        ),
        (
            "server-deflate-context-takeover",
            cat(&[
                params(DEFLATE, 10, 11),
                frame(true, 4, 1, true, &takeover[0]),
                frame(true, 4, 1, true, &takeover[1]),
                frame(true, 0, 1, true, b"plain"),
            ]),
        ),
        (
            "server-deflate-no-context-takeover",
            cat(&[
                params(DEFLATE | CLIENT_NO_CONTEXT, 0xff, 0),
                frame(true, 4, 1, true, &reset[0]),
                frame(true, 4, 1, true, &reset[1]),
            ]),
        ),
        (
            "server-deflate-fragmented",
            cat(&[
                params(DEFLATE, 5, 99),
                frame(false, 4, 2, true, first),
                frame(true, 0, 9, true, b"mid"),
                frame(true, 0, 0, true, second),
            ]),
        ),
        (
            "client-deflate",
            cat(&[
                params(ROLE_CLIENT | DEFLATE, 30, 5),
                frame(true, 4, 1, false, &from_server),
            ]),
        ),
        (
            "server-deflate-bomb",
            cat(&[params(DEFLATE, 0xff, 1), frame(true, 4, 2, true, &bomb)]),
        ),
        (
            "server-deflate-bad-utf8-bomb",
            cat(&[
                params(DEFLATE, 0, 3),
                frame(true, 4, 1, true, &bad_text_bomb),
            ]),
        ),
        (
            "server-invalid-utf8-after-good",
            cat(&[
                params(0, 1, 2),
                frame(true, 0, 1, true, b"ok"),
                frame(true, 0, 1, true, &[b'a', 0xc3, 0x28, b'b']),
            ]),
        ),
        (
            "server-unmasked-frame",
            cat(&[params(0, 3, 4), frame(true, 0, 1, false, b"nope")]),
        ),
        (
            "server-bad-close-code",
            cat(&[
                params(0, 1, 8),
                frame(true, 0, 8, true, &close_payload(1005, "no")),
            ]),
        ),
        (
            "server-huge-declared-length",
            cat(&[
                params(0, 7, 9),
                vec![0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0],
                KEY.to_vec(),
                vec![0; 32],
            ]),
        ),
        (
            "server-fragment-flood-small-limits",
            cat(&[
                params(FEW_FRAGMENTS | SMALL_LIMIT, 6, 12),
                frame(false, 0, 2, true, &[1; 100]),
                (0..12)
                    .flat_map(|_| frame(false, 0, 0, true, &[2; 100]))
                    .collect(),
                frame(true, 0, 0, true, b"end"),
            ]),
        ),
    ]
}

fn handshake_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let s = |s: &str| s.as_bytes().to_vec();
    vec![
        (
            "request-rfc6455",
            s("GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
               Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
               Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
               Sec-WebSocket-Version: 13\r\n\r\n"),
        ),
        (
            "request-deflate-all-params",
            s("GET /ws?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: WebSocket\r\n\
               Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\
               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; \
               server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; \
               client_max_window_bits=\"12\", permessage-deflate\r\n\r\n"),
        ),
        (
            "request-version-8",
            s("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"),
        ),
        ("request-post", s("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")),
        (
            "request-bad-key-partial",
            s("GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short"),
        ),
        (
            "response-101-valid",
            // The head, then the server's first frame.
            cat(&[s("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Accept: @ACCEPT@\r\nSec-WebSocket-Protocol: chat\r\n\
               Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10; \
               server_no_context_takeover\r\n\r\n"),
                frame(true, 0, 1, false, b"hi"),
            ]),
        ),
        (
            "response-101-unoffered",
            s("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
               Sec-WebSocket-Accept: @ACCEPT@\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n"),
        ),
        (
            "response-101-bad-accept",
            s("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
        ),
        ("response-426", s("HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n")),
        (
            "extensions-quoted",
            s("permessage-deflate; client_max_window_bits=\"1\\5\"; server_max_window_bits=8, x-foo; a=b"),
        ),
        (
            "request-too-many-headers",
            cat(&[s("GET / HTTP/1.1\r\n"), s(&"X-A: b\r\n".repeat(70)), s("\r\n")]),
        ),
        ("invalid-utf8-header", b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nUpgrade: websocket\r\n\r\n".to_vec()),
    ]
}

fn inflate_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use flate2::{Compress, Compression, FlushCompress};
    let p = DeflateParams::default();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(30);
    let final_block = {
        let mut c = Compress::new(Compression::new(6), false);
        let mut out = Vec::with_capacity(4096);
        c.compress_vec(b"final block, BFINAL set", &mut out, FlushCompress::Finish)
            .unwrap();
        out
    };
    let mut after_final = final_block.clone();
    after_final.extend_from_slice(&[0x00, 0x00, 0xff, 0xff, 0x01]);
    let mut bad_utf8 = vec![0xc3, 0x28, 0xff];
    bad_utf8.extend_from_slice(text.as_bytes());
    vec![
        (
            "text",
            compress(Side::Client, &p, 1, &[text.as_bytes()]).remove(0),
        ),
        (
            "text-level9",
            compress(Side::Client, &p, 9, &[text.as_bytes()]).remove(0),
        ),
        (
            "empty-message",
            compress(Side::Client, &p, 1, &[b""]).remove(0),
        ),
        (
            "invalid-utf8-payload",
            compress(Side::Client, &p, 6, &[&bad_utf8]).remove(0),
        ),
        (
            "bomb-4mib-zeros",
            compress(Side::Client, &p, 9, &[&vec![0u8; 4 << 20]]).remove(0),
        ),
        (
            "stored-block",
            vec![0x00, 0x05, 0x00, 0xfa, 0xff, b'h', b'e', b'l', b'l', b'o'],
        ),
        ("final-block", final_block),
        ("data-after-final-block", after_final),
        // Fixed Huffman block whose first code is a distance 1 back: nothing to copy yet.
        ("distance-too-far-back", vec![0x02, 0x02, 0x00]),
        ("garbage", vec![0xff; 32]),
    ]
}

#[test]
fn seed_corpus_is_up_to_date() {
    let regenerate = std::env::var_os("DUPLEX_REGENERATE_CORPUS").is_some();
    let mut stale = Vec::new();
    for (target, seeds) in [
        ("frame_header", frame_header_seeds()),
        ("connection", connection_seeds()),
        ("handshake", handshake_seeds()),
        ("inflate", inflate_seeds()),
    ] {
        let dir = corpus_dir(target);
        for (name, bytes) in seeds {
            let path = dir.join(format!("{name}.bin"));
            if regenerate {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "seed files differ from their generators (rerun with DUPLEX_REGENERATE_CORPUS=1): {stale:#?}"
    );
}
