//! Micro-benchmarks of the protocol core's hot paths:
//! `cargo bench -p duplex-proto` (add `-- mask` etc. to pick a group).
//!
//! - `mask`: XOR masking in place, against a plain memcpy of the same size
//!   (the floor for touching every byte once).
//! - `header`: parsing the three header sizes.
//! - `utf8`: the incremental validator against `std::str::from_utf8`.
//! - `deflate` / `inflate`: one typical JSON-like message, with and without
//!   context takeover.
//! - `connection`: a server `Connection` receiving a read's worth of small
//!   masked frames, handing out the messages and queueing the echoes.
//! - `handshake`: the server side of an opening handshake (parse the
//!   request head, validate it, build the 101), for the minimal request a
//!   load generator sends and for the one Chromium sends.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_proto::deflate::{DeflateParams, Deflater, Inflater, Side};
use duplex_proto::frame::FrameHeader;
use duplex_proto::mask::apply_mask;
use duplex_proto::utf8::Utf8Validator;
use duplex_proto::{Config, Connection, DeflateConfig, Event, Role};
use std::hint::black_box;

const SIZES: [usize; 4] = [20, 1 << 10, 64 << 10, 1 << 20];

fn mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for size in SIZES {
        let src = vec![0x5au8; size];
        let mut buf = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("apply_mask", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
        g.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| black_box(&mut buf).copy_from_slice(black_box(&src)))
        });
    }
    g.finish();
}

/// A masked frame header for a payload of `len` bytes.
fn masked_header(len: u64) -> Vec<u8> {
    let mut v = vec![0x82];
    match len {
        0..=125 => v.push(0x80 | len as u8),
        126..=0xffff => {
            v.push(0x80 | 126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            v.push(0x80 | 127);
            v.extend_from_slice(&len.to_be_bytes());
        }
    }
    v.extend_from_slice(&[1, 2, 3, 4]);
    v
}

fn header(c: &mut Criterion) {
    let mut g = c.benchmark_group("header");
    for len in [20u64, 1000, 1 << 20] {
        let h = masked_header(len);
        g.bench_with_input(BenchmarkId::new("parse", h.len()), &h, |b, h| {
            b.iter(|| FrameHeader::parse(black_box(h)))
        });
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii: String = "The quick brown fox jumps over the lazy dog. "
        .chars()
        .cycle()
        .take(64 << 10)
        .collect();
    let mixed: String = "Grüße, 日本語のテキスト, emoji 🎉, ascii text; "
        .chars()
        .cycle()
        .take(24 << 10)
        .collect();
    let small = "{\"op\":\"ping\",\"n\":1}";
    for (name, text) in [
        ("ascii_64k", ascii.as_str()),
        ("mixed", mixed.as_str()),
        ("json_20B", small),
    ] {
        let bytes = text.as_bytes();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("validator", name), bytes, |b, bytes| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(bytes))
            })
        });
        g.bench_with_input(BenchmarkId::new("std", name), bytes, |b, bytes| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
        });
    }
    g.finish();
}

/// A JSON-like chat message of about `n` bytes.
fn json_message(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user{}\",\"channel\":\"general\",\"text\":\"message number {i} about the weather\",\"ts\":{}}},",
            i % 17,
            1_700_000_000 + i * 13
        ));
        i += 1;
    }
    s.push(']');
    s.into_bytes()
}

fn deflate(c: &mut Criterion) {
    let cfg = DeflateConfig::default();
    let takeover = DeflateParams::default();
    let reset = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..Default::default()
    };
    let mut g = c.benchmark_group("deflate");
    for size in [200usize, 16 << 10] {
        let msg = json_message(size);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        for (name, params) in [("takeover", &takeover), ("no_takeover", &reset)] {
            let mut d = Deflater::new(Side::Server, params, &cfg);
            g.bench_with_input(BenchmarkId::new(name, size), &msg, |b, m| {
                b.iter(|| d.compress(black_box(m)).map(|v| v.len()))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("inflate");
    for size in [200usize, 16 << 10] {
        let msg = json_message(size);
        // Without context takeover every message compresses alike, so the
        // same payload can be inflated over and over.
        let compressed = Deflater::new(Side::Client, &reset, &cfg)
            .compress(&msg)
            .expect("compress");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        let mut inf = Inflater::new(Side::Server, &reset);
        let mut out = Vec::with_capacity(msg.len());
        g.bench_with_input(
            BenchmarkId::new("no_takeover", size),
            &compressed,
            |b, z| {
                b.iter(|| {
                    out.clear();
                    inf.inflate(black_box(z), &mut out, 1 << 20)
                        .expect("inflate");
                    inf.finish_message(&mut out, 1 << 20).expect("finish");
                    out.len()
                })
            },
        );
    }
    g.finish();
}

fn connection(c: &mut Criterion) {
    let mut g = c.benchmark_group("connection");
    for (size, count) in [(20usize, 64usize), (64 << 10, 1)] {
        let payload = vec![0x42u8; size];
        let mut wire = Vec::new();
        for _ in 0..count {
            wire.extend_from_slice(&masked_header(size as u64));
            let mut p = payload.clone();
            apply_mask(&mut p, [1, 2, 3, 4], 0);
            wire.extend_from_slice(&p);
        }
        g.throughput(Throughput::Elements(count as u64));
        let cfg = Config::default().with_deflate(None);
        let mut conn = Connection::new(Role::Server, cfg, None);
        let mut buf = BytesMut::with_capacity(wire.len());
        g.bench_with_input(
            BenchmarkId::new("receive_and_echo", format!("{count}x{size}B")),
            &wire,
            |b, wire| {
                b.iter(|| {
                    buf.extend_from_slice(wire);
                    conn.receive(&mut buf).expect("receive");
                    while let Some(ev) = conn.poll_event() {
                        if let Event::Message(m) = ev {
                            conn.send(m).expect("send");
                        }
                    }
                    let n = conn.outbound_len();
                    conn.consume_outbound(n);
                    n
                })
            },
        );
    }
    g.finish();
}

/// A request head as Chromium sends it (with the deflate offer).
const CHROMIUM_REQUEST: &str = "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\
    Connection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
    Chrome/120.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n\
    Origin: http://127.0.0.1:9001\r\nSec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// The minimal request a load generator sends.
const MINIMAL_REQUEST: &str = "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\
    Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn handshake(c: &mut Criterion) {
    use duplex_proto::handshake::server::{accept, parse_request, UpgradeRequest};
    let mut g = c.benchmark_group("handshake");
    let cfg = Config::default().with_deflate(None);
    for (name, req) in [("minimal", MINIMAL_REQUEST), ("chromium", CHROMIUM_REQUEST)] {
        g.bench_with_input(BenchmarkId::new("server", name), req, |b, req| {
            b.iter(|| {
                let (r, _) = parse_request(black_box(req.as_bytes()), &cfg)
                    .expect("valid")
                    .expect("complete");
                let up = UpgradeRequest::validate(r).expect("upgrade");
                accept(&up, &cfg, None, &[]).response.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, mask, header, utf8, deflate, connection, handshake);
criterion_main!(benches);
