//! RFC 6455 / RFC 7692 behaviour of `Connection`, driven in memory.

use bytes::{Bytes, BytesMut};
use duplex_proto::frame::{FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::pair::Pair;
use duplex_proto::{CloseCode, CloseFrame, Config, Connection, Error, Event, Message, Role, State};
use proptest::prelude::*;
use std::time::Duration;

/// Encodes a raw frame, masked when `mask` is given.
fn raw(fin: bool, rsv: u8, op: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    duplex_proto::frame::encode_raw(
        (fin as u8) << 7 | (rsv & 7) << 4 | (op & 0xf),
        mask,
        payload,
    )
}

const K: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

fn server() -> Connection {
    Connection::new(Role::Server, Config::default(), None)
}

/// Feeds bytes to `conn` and returns the error, if any.
fn feed(conn: &mut Connection, bytes: &[u8]) -> Result<(), Error> {
    let mut b = BytesMut::from(bytes);
    conn.receive(&mut b)
}

/// The close code `conn` has queued as its last frame, if it queued a close.
fn queued_close_code(conn: &Connection) -> Option<u16> {
    queued_frames(conn)
        .into_iter()
        .filter(|(h, _)| h.opcode == OpCode::Close)
        .map(|(_, p)| {
            if p.len() >= 2 {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                1005
            }
        })
        .next_back()
}

fn assert_fails_with(bytes: &[u8], code: u16) {
    let mut s = server();
    let err = feed(&mut s, bytes).expect_err("must fail");
    assert_eq!(err.close_code(), Some(CloseCode(code)), "{err}");
    assert_eq!(queued_close_code(&s), Some(code));
    assert_ne!(s.state(), State::Open);
    // Later input is ignored, nothing panics.
    feed(&mut s, &raw(true, 0, 1, K, b"after")).unwrap();
    assert_eq!(s.poll_event(), None);
}

#[test]
fn echo_text_and_binary_both_ways() {
    for deflate in [true, false] {
        let cfg = if deflate {
            Config::default()
        } else {
            Config::default().with_deflate(None)
        };
        let mut p = Pair::new(cfg.clone(), cfg);
        assert_eq!(p.client.is_compressed(), deflate);
        p.client.send(Message::text("héllo 🌍")).unwrap();
        p.client
            .send(Message::binary(vec![0u8, 1, 2, 255]))
            .unwrap();
        p.client.send(Message::text("")).unwrap();
        p.transfer();
        let ev = p.server_events();
        assert_eq!(
            ev,
            vec![
                Event::Message(Message::text("héllo 🌍")),
                Event::Message(Message::binary(vec![0u8, 1, 2, 255])),
                Event::Message(Message::text("")),
            ]
        );
        p.server.send(Message::binary(vec![7u8; 100_000])).unwrap();
        p.transfer_chunked(1000);
        assert_eq!(
            p.client_events(),
            vec![Event::Message(Message::binary(vec![7u8; 100_000]))]
        );
    }
}

#[test]
fn unfragmented_message_is_a_slice_of_the_read_buffer() {
    let mut s = server();
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(&raw(true, 0, 2, K, &[5u8; 1000]));
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.capacity();
    s.receive(&mut buf).unwrap();
    let Some(Event::Message(Message::Binary(b))) = s.poll_event() else {
        panic!()
    };
    assert!(range.contains(&(b.as_ptr() as usize)), "payload was copied");
    assert_eq!(&b[..], &[5u8; 1000][..]);
}

#[test]
fn server_closes_1002_on_unmasked_client_frame() {
    assert_fails_with(&raw(true, 0, 1, None, b"hi"), 1002);
}

#[test]
fn client_closes_1002_on_masked_server_frame() {
    let mut c = Connection::new(Role::Client, Config::default(), None);
    let err = feed(&mut c, &raw(true, 0, 1, K, b"hi")).unwrap_err();
    assert_eq!(err, Error::MaskedFrame);
    assert_eq!(queued_close_code(&c), Some(1002));
}

#[test]
fn reserved_bits_and_opcodes_close_1002() {
    for rsv in 1..8 {
        assert_fails_with(&raw(true, rsv, 1, K, b"x"), 1002);
    }
    for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        assert_fails_with(&raw(true, 0, op, K, b""), 1002);
    }
}

#[test]
fn control_frame_rules_close_1002() {
    assert_fails_with(&raw(true, 0, 9, K, &[0u8; 126]), 1002);
    assert_fails_with(&raw(false, 0, 9, K, b"x"), 1002);
    assert_fails_with(&raw(true, 4, 9, K, b"x"), 1002);
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.client.ping(b"abc").unwrap();
    p.transfer();
    assert_eq!(
        p.server_events(),
        vec![Event::Ping(Bytes::from_static(b"abc"))]
    );
    assert_eq!(
        p.client_events(),
        vec![Event::Pong(Bytes::from_static(b"abc"))]
    );
    assert!(p.client.ping(&[0u8; 126]).is_err());
}

#[test]
fn control_frames_interleave_with_fragments() {
    let mut s = server();
    let mut bytes = raw(false, 0, 1, K, b"Hel");
    bytes.extend(raw(true, 0, 9, K, b"p"));
    bytes.extend(raw(false, 0, 0, K, b"lo, "));
    bytes.extend(raw(true, 0, 10, K, b"q"));
    bytes.extend(raw(true, 0, 0, K, b"world"));
    feed(&mut s, &bytes).unwrap();
    let ev: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        ev,
        vec![
            Event::Ping(Bytes::from_static(b"p")),
            Event::Pong(Bytes::from_static(b"q")),
            Event::Message(Message::text("Hello, world")),
        ]
    );
}

#[test]
fn messages_before_a_bad_frame_are_delivered_and_answerable_first() {
    let mut s = server();
    let mut b = raw(true, 0, 1, K, b"Hello");
    b.extend(raw(true, 2, 1, K, b"bad rsv"));
    feed(&mut s, &b).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Message(Message::text("Hello"))));
    s.send(Message::text("Hello")).unwrap();
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.error(), Some(&Error::ReservedBitsSet));
    assert_eq!(queued_close_code(&s), Some(1002));
}

#[test]
fn messages_before_the_peers_close_can_still_be_answered() {
    let mut s = server();
    let mut b = raw(true, 0, 1, K, b"last words");
    b.extend(raw(true, 0, 8, K, &[0x03, 0xe8]));
    feed(&mut s, &b).unwrap();
    assert_eq!(
        s.poll_event(),
        Some(Event::Message(Message::text("last words")))
    );
    s.send(Message::text("last words")).unwrap();
    assert!(matches!(s.poll_event(), Some(Event::Close(Some(_)))));
    assert_eq!(s.state(), State::Open, "echo waits until events are polled");
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.state(), State::CloseReceived);
    assert_eq!(queued_close_code(&s), Some(1000));
    assert!(s.send(Message::text("too late")).is_err());
}

#[test]
fn continuation_sequencing_errors_close_1002() {
    assert_fails_with(&raw(true, 0, 0, K, b"x"), 1002);
    let mut b = raw(false, 0, 1, K, b"a");
    b.extend(raw(true, 0, 1, K, b"b"));
    assert_fails_with(&b, 1002);
}

#[test]
fn invalid_utf8_closes_1007_and_fails_fast() {
    assert_fails_with(
        &raw(
            true,
            0,
            1,
            K,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        ),
        1007,
    );
    // The first fragment is already invalid: fail before the message ends.
    let mut s = server();
    let err = feed(&mut s, &raw(false, 0, 1, K, b"ok\xf4\x90")).unwrap_err();
    assert_eq!(err, Error::InvalidUtf8);
    // Also inside a single frame whose rest has not arrived.
    let mut s = server();
    let frame = raw(
        true,
        0,
        1,
        K,
        &[b"ab\xc0".as_slice(), &[b'x'; 1000]].concat(),
    );
    let err = feed(&mut s, &frame[..20]).unwrap_err();
    assert_eq!(err, Error::InvalidUtf8);
    // A code point split across fragments is fine.
    let mut s = server();
    let mut b = raw(false, 0, 1, K, &"€".as_bytes()[..1]);
    b.extend(raw(true, 0, 0, K, &"€".as_bytes()[1..]));
    feed(&mut s, &b).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Message(Message::text("€"))));
}

#[test]
fn huge_declared_length_closes_1009_without_allocating() {
    let mut s = server();
    let mut b = vec![0x82, 0xff];
    b.extend_from_slice(&(1u64 << 62).to_be_bytes());
    b.extend_from_slice(&[1, 2, 3, 4]);
    let err = feed(&mut s, &b).unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { declared, .. } if declared == 1 << 62));
    assert_eq!(queued_close_code(&s), Some(1009));
}

#[test]
fn fragment_flood_closes_at_the_fragment_limit() {
    let cfg = Config::default().with_max_fragments(100);
    let mut s = Connection::new(Role::Server, cfg, None);
    let mut b = raw(false, 0, 2, K, b"x");
    for _ in 0..99 {
        b.extend(raw(false, 0, 0, K, b"x"));
    }
    feed(&mut s, &b).unwrap();
    let err = feed(&mut s, &raw(false, 0, 0, K, b"x")).unwrap_err();
    assert_eq!(err, Error::TooManyFragments { limit: 100 });
    assert_eq!(queued_close_code(&s), Some(1008));
}

#[test]
fn reassembled_message_limit_closes_1009() {
    let mut s = Connection::new(
        Role::Server,
        Config::default().with_max_message_size(1000),
        None,
    );
    feed(&mut s, &raw(false, 0, 2, K, &[0; 600])).unwrap();
    let err = feed(&mut s, &raw(true, 0, 0, K, &[0; 600])).unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { limit: 1000 });
    assert_eq!(queued_close_code(&s), Some(1009));
}

#[test]
fn compression_bomb_closes_1009_while_inflating() {
    let mut strong = duplex_proto::DeflateConfig::default();
    strong.level = 9;
    let client = Config::default().with_deflate(Some(strong));
    let mut p = Pair::new(client, Config::default().with_max_message_size(1 << 20));
    p.client.send(Message::binary(vec![0u8; 32 << 20])).unwrap();
    let wire = p.client.outbound_len();
    assert!(wire < 100_000, "compressed to {wire}");
    p.transfer();
    assert!(
        matches!(p.errors.1.as_slice(), [Error::MessageTooLarge { limit }] if *limit == 1 << 20)
    );
    assert_eq!(
        p.client.received_close().flatten().map(|f| f.code),
        Some(CloseCode::MESSAGE_TOO_BIG)
    );
}

#[test]
fn rsv1_without_deflate_closes_1002() {
    assert_fails_with(&raw(true, 4, 1, K, b"x"), 1002);
}

#[test]
fn clean_close_initiated_by_client() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.client
        .close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
        .unwrap();
    assert_eq!(p.client.state(), State::CloseSent);
    assert_eq!(p.client.send(Message::text("late")), Err(Error::Closed));
    p.transfer();
    assert_eq!(p.server.state(), State::Closed);
    assert_eq!(p.client.state(), State::Closed);
    assert!(p.client.was_clean() && p.server.was_clean());
    let ev = p.server_events();
    assert_eq!(
        ev,
        vec![Event::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "bye"
        )))]
    );
    // The server echoed the code.
    assert_eq!(
        p.client.received_close().flatten().map(|f| f.code),
        Some(CloseCode::NORMAL)
    );
}

#[test]
fn close_without_code_never_puts_1005_on_the_wire() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.server.close(None).unwrap();
    p.transfer();
    assert_eq!(p.client_events(), vec![Event::Close(None)]);
    assert_eq!(p.server.received_close(), Some(None));
    assert!(p
        .client
        .close(Some(CloseFrame::new(CloseCode::NO_STATUS, "")))
        .is_ok()); // already closing
    let mut c = Connection::new(Role::Client, Config::default(), None);
    assert_eq!(
        c.close(Some(CloseFrame::new(CloseCode::ABNORMAL, ""))),
        Err(Error::InvalidCloseToSend)
    );
}

#[test]
fn bad_close_payloads() {
    assert_fails_with(&raw(true, 0, 8, K, &[0x03]), 1002);
    assert_fails_with(&raw(true, 0, 8, K, &[0x03, 0xed]), 1002); // 1005
    assert_fails_with(&raw(true, 0, 8, K, &[0x03, 0xe7]), 1002); // 999
    assert_fails_with(&raw(true, 0, 8, K, &[0x03, 0xe8, 0xff, 0xfe]), 1007);
}

#[test]
fn close_timeout_ends_a_closing_handshake_the_peer_ignores() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.client
        .close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
        .unwrap();
    p.client.handle_timeout(p.now);
    let deadline = p.client.poll_timeout().expect("close timer armed");
    assert_eq!(deadline - p.now, Duration::from_secs(5));
    p.advance(Duration::from_secs(4));
    assert_eq!(p.client.state(), State::CloseSent);
    p.advance(Duration::from_secs(1));
    assert_eq!(p.client.state(), State::Closed);
    assert!(!p.client.was_clean());
}

#[test]
fn keepalive_pings_and_times_out() {
    let cfg = Config::default().with_ping_interval(Some(Duration::from_secs(10)));
    let mut p = Pair::new(cfg.clone(), Config::default());
    p.advance(Duration::ZERO);
    p.advance(Duration::from_secs(10));
    p.transfer();
    // The server answered the ping; the client is still open.
    assert!(matches!(p.client_events().as_slice(), [Event::Pong(_)]));
    assert_eq!(p.client.state(), State::Open);
    // Now the peer goes silent: ping goes unanswered.
    p.advance(Duration::from_secs(10));
    assert!(p.client.outbound_len() > 0, "ping queued");
    p.advance(Duration::from_secs(20));
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(p.client.error(), Some(&Error::KeepaliveTimeout));
}

fn msg_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        "\\PC{0,300}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_messages_survive_any_chunking(msgs in proptest::collection::vec(msg_strategy(), 1..8),
                                         chunk in 1usize..300, deflate in any::<bool>(),
                                         frag in 0usize..50) {
        let cfg = if deflate { Config::default() } else { Config::default().with_deflate(None) };
        let mut p = Pair::new(cfg.clone(), cfg);
        for m in &msgs {
            if frag > 0 {
                p.client.send_fragmented(m.clone(), frag).unwrap();
            } else {
                p.client.send(m.clone()).unwrap();
            }
            p.server.send(m.clone()).unwrap();
        }
        p.transfer_chunked(chunk);
        let expect: Vec<Event> = msgs.iter().cloned().map(Event::Message).collect();
        prop_assert_eq!(p.server_events(), expect.clone());
        prop_assert_eq!(p.client_events(), expect);
        prop_assert!(p.errors.0.is_empty() && p.errors.1.is_empty());
    }
}

/// Takes everything `conn` has queued, as one buffer.
fn take_wire(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.outbound_len() > 0 {
        let mut slices = [std::io::IoSlice::new(&[]); 64];
        let n = conn.outbound_slices(&mut slices);
        let before = out.len();
        for s in &slices[..n] {
            out.extend_from_slice(s);
        }
        conn.consume_outbound(out.len() - before);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// `receive_message`, called until it has nothing more, hands out the
    /// messages `receive` queues, in the same order, and leaves the same
    /// replies (pongs) queued, however the input is chunked: the frames
    /// after a message stay in the buffer for the next call.
    #[test]
    fn one_message_at_a_time_is_what_receive_queues(
        msgs in proptest::collection::vec(msg_strategy(), 1..8),
        pings in proptest::collection::vec(any::<bool>(), 8),
        chunk in 1usize..300, deflate in any::<bool>(), frag in 0usize..50,
    ) {
        let cfg = if deflate { Config::default() } else { Config::default().with_deflate(None) };
        let mut queued = Pair::new(cfg.clone(), cfg.clone());
        let mut one = Pair::new(cfg.clone(), cfg);
        for (i, m) in msgs.iter().enumerate() {
            if pings[i] {
                queued.client.ping(&[i as u8]).unwrap();
            }
            if frag > 0 {
                queued.client.send_fragmented(m.clone(), frag).unwrap();
            } else {
                queued.client.send(m.clone()).unwrap();
            }
        }
        let wire = take_wire(&mut queued.client);
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        for piece in wire.chunks(chunk) {
            a.extend_from_slice(piece);
            queued.server.receive(&mut a).unwrap();
            while let Some(ev) = queued.server.poll_event() {
                got_a.push(ev);
            }
            b.extend_from_slice(piece);
            loop {
                while let Some(ev) = one.server.poll_event() {
                    got_b.push(ev);
                }
                match one.server.receive_message(&mut b).unwrap() {
                    Some(m) => got_b.push(Event::Message(m)),
                    None => break,
                }
            }
            prop_assert_eq!(a.len(), b.len(), "the same partial frame is left");
        }
        while let Some(ev) = one.server.poll_event() {
            got_b.push(ev);
        }
        let messages = |evs: &[Event]| -> Vec<Event> {
            evs.iter().filter(|e| matches!(e, Event::Message(_))).cloned().collect()
        };
        let others = |evs: &[Event]| -> Vec<Event> {
            evs.iter().filter(|e| !matches!(e, Event::Message(_))).cloned().collect()
        };
        let expect: Vec<Event> = msgs.iter().cloned().map(Event::Message).collect();
        prop_assert_eq!(messages(&got_a), expect.clone());
        prop_assert_eq!(messages(&got_b), expect);
        prop_assert_eq!(others(&got_a), others(&got_b));
        prop_assert_eq!(take_wire(&mut queued.server), take_wire(&mut one.server));
    }
}

/// Handed out one at a time, the messages before a bad frame still come
/// first; the call that reaches the bad frame fails the connection.
#[test]
fn one_message_at_a_time_stops_at_a_bad_frame_after_the_good_ones() {
    let mut s = server();
    let mut b = raw(true, 0, 1, K, b"Hello");
    b.extend(raw(true, 2, 1, K, b"bad rsv"));
    let mut buf = BytesMut::from(&b[..]);
    let m = s.receive_message(&mut buf).unwrap();
    assert_eq!(m, Some(Message::text("Hello")));
    assert_eq!(s.state(), State::Open, "the bad frame is not read yet");
    assert_eq!(
        s.receive_message(&mut buf),
        Err(Error::ReservedBitsSet),
        "the next call reads it"
    );
    assert_eq!(queued_close_code(&s), Some(1002));
    assert_eq!(s.receive_message(&mut buf), Ok(None));
}

/// While events are queued, `receive_message` queues what it reads behind
/// them instead of handing a later message out first.
#[test]
fn one_message_at_a_time_waits_behind_queued_events() {
    let mut s = server();
    feed(&mut s, &raw(true, 0, 1, K, b"first")).unwrap();
    let mut buf = BytesMut::from(&raw(true, 0, 1, K, b"second")[..]);
    assert_eq!(s.receive_message(&mut buf), Ok(None));
    assert!(buf.is_empty());
    assert_eq!(s.poll_event(), Some(Event::Message(Message::text("first"))));
    assert_eq!(
        s.poll_event(),
        Some(Event::Message(Message::text("second")))
    );
}

/// A small frame that fills its buffer exactly takes the buffer as its
/// payload: the payload is the storage's only handle (nothing shared to
/// allocate). From 1 MiB up the frame is split off instead, and the
/// buffer left behind still refers to the storage (a driver takes it back
/// once the message is dropped).
#[test]
fn a_frame_that_fills_its_buffer_takes_it_unless_large() {
    for (len, whole) in [(20usize, true), (100_000, true), (1 << 20, false)] {
        let frame = raw(true, 0, 2, K, &vec![3u8; len]);
        let mut buf = BytesMut::with_capacity(frame.len());
        buf.extend_from_slice(&frame);
        assert_eq!(buf.capacity(), buf.len());
        let start = buf.as_ptr() as usize;
        let mut s = server();
        let Some(Message::Binary(b)) = s.receive_message(&mut buf).unwrap() else {
            panic!("a binary message");
        };
        assert_eq!(b.len(), len);
        assert_eq!(b.as_ptr() as usize, start + frame.len() - len, "not copied");
        assert_eq!(b.is_unique(), whole, "{len} bytes");
        drop(b);
        assert!(buf.is_empty());
        if !whole {
            let rest = buf.freeze();
            assert!(rest.is_unique(), "the buffer is all that holds the storage");
            let mut all = rest.try_into_mut().unwrap();
            assert!(
                all.try_reclaim(frame.len()),
                "and it can take it back whole"
            );
            assert_eq!(all.as_ptr() as usize, start);
        }
    }
}

/// Parses every frame `conn` has queued: (header, unmasked payload).
fn queued_frames(conn: &Connection) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut slices = [std::io::IoSlice::new(&[]); 64];
    let n = conn.outbound_slices(&mut slices);
    for s in &slices[..n] {
        out.extend_from_slice(s);
    }
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let (h, n) = FrameHeader::parse(&out[pos..]).unwrap().unwrap();
        let mut payload = out[pos + n..pos + n + h.payload_len as usize].to_vec();
        if let Some(k) = h.mask {
            apply_mask(&mut payload, k, 0);
        }
        pos += n + h.payload_len as usize;
        frames.push((h, payload));
    }
    frames
}

#[test]
fn client_masks_every_frame_with_a_fresh_key_and_server_never_masks() {
    let cfg = Config::default().with_deflate(None);
    let mut p = Pair::new(cfg.clone(), cfg);
    for _ in 0..4 {
        p.client.send(Message::text("same payload")).unwrap();
        p.server.send(Message::text("same payload")).unwrap();
    }
    p.client.ping(b"p").unwrap();
    p.client.close(None).unwrap();
    let client_frames = queued_frames(&p.client);
    assert_eq!(client_frames.len(), 6);
    assert!(
        client_frames.iter().all(|(h, _)| h.mask.is_some()),
        "RFC 6455 §5.3: client MUST mask"
    );
    let keys: std::collections::HashSet<_> = client_frames.iter().map(|(h, _)| h.mask).collect();
    assert!(keys.len() > 1, "a new masking key per frame");
    assert!(
        queued_frames(&p.server)
            .iter()
            .all(|(h, _)| h.mask.is_none()),
        "server MUST NOT mask"
    );
    assert!(client_frames
        .iter()
        .take(4)
        .all(|(_, p)| p == b"same payload"));
}

#[test]
fn nothing_but_the_close_is_sent_after_closing() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.server
        .close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "bye")))
        .unwrap();
    assert_eq!(p.server.send(Message::text("x")), Err(Error::Closed));
    assert_eq!(p.server.ping(b"x"), Err(Error::Closed));
    let frames = queued_frames(&p.server);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.opcode, OpCode::Close);
    // A ping arriving while we wait for the peer's close gets no pong.
    let mut s = server();
    s.close(None).unwrap();
    feed(&mut s, &raw(true, 0, 9, K, b"late ping")).unwrap();
    assert!(queued_frames(&s)
        .iter()
        .all(|(h, _)| h.opcode == OpCode::Close));
}

#[test]
fn data_after_the_peers_close_is_not_processed() {
    let mut s = server();
    let mut b = raw(true, 0, 8, K, &[0x03, 0xe8]);
    b.extend(raw(true, 0, 1, K, b"after close"));
    feed(&mut s, &b).unwrap();
    assert!(matches!(s.poll_event(), Some(Event::Close(_))));
    assert_eq!(s.poll_event(), None);
}

#[test]
fn compressed_frames_set_rsv1_only_on_the_first_frame_and_control_frames_never() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.server
        .send(Message::text("compress me ".repeat(20)))
        .unwrap();
    p.server.ping(b"p").unwrap();
    let frames = queued_frames(&p.server);
    assert!(frames[0].0.rsv1, "data frame compressed");
    assert!(!frames[1].0.rsv1, "control frames are never compressed");
    // A continuation frame with RSV1 is a protocol error.
    let mut s = Connection::new(Role::Server, Config::default(), Some(Default::default()));
    let mut b = raw(false, 0, 1, K, b"a");
    b.extend(raw(true, 4, 0, K, b"b"));
    assert_eq!(feed(&mut s, &b), Err(Error::ReservedBitsSet));
}

#[test]
fn releasing_idle_buffers_keeps_whatever_is_queued() {
    let mut s = server();
    feed(&mut s, &raw(true, 0, 1, K, b"one")).unwrap();
    feed(&mut s, &raw(true, 0, 9, K, b"ping")).unwrap();
    s.send(Message::text("reply")).unwrap();
    let queued = s.outbound_len();
    s.release_idle_buffers();
    // Events not yet polled and bytes not yet written survive.
    assert_eq!(s.outbound_len(), queued);
    assert_eq!(s.poll_event(), Some(Event::Message(Message::text("one"))));
    assert!(matches!(s.poll_event(), Some(Event::Ping(_))));
    let frames = queued_frames(&s);
    assert!(frames
        .iter()
        .any(|(h, p)| h.opcode == OpCode::Pong && p == b"ping"));
    assert!(frames
        .iter()
        .any(|(h, p)| h.opcode == OpCode::Text && p == b"reply"));
    s.consume_outbound(s.outbound_len());
    s.release_idle_buffers();
    // Drained and released, the connection still sends.
    s.send(Message::text("later")).unwrap();
    assert_eq!(queued_frames(&s)[0].1, b"later");
}

/// A prepared message goes to many servers' clients: framed once, and with
/// permessage-deflate without context takeover compressed once — every
/// connection queues the same compressed frame — and each client reads it
/// back intact. A client with context takeover (or another window) gets
/// one compressed for it alone, also intact.
#[test]
fn a_prepared_message_is_framed_and_compressed_once_for_many_connections() {
    use duplex_proto::{DeflateConfig, PreparedMessage};
    let no_takeover =
        Config::default().with_deflate(Some(DeflateConfig::without_context_takeover()));
    let text = "{\"channel\":\"room\",\"data\":{\"text\":\"hello everyone\"}}".repeat(20);
    let prepared = PreparedMessage::new(Message::text(text.clone()));
    let mut pairs: Vec<Pair> = (0..5)
        .map(|_| Pair::new(no_takeover.clone(), no_takeover.clone()))
        .collect();
    for p in &mut pairs {
        assert!(p.server.is_compressed());
        p.server.send_prepared(&prepared).unwrap();
    }
    // The same compressed frame in every connection's queue.
    let first = pairs[0].server.outbound().to_vec();
    assert!(
        first.len() < text.len() / 4,
        "compressed: {} bytes",
        first.len()
    );
    assert_eq!(first[0] & 0x40, 0x40, "RSV1 set");
    for p in &pairs[1..] {
        assert_eq!(p.server.outbound(), &first[..]);
    }
    for p in &mut pairs {
        p.transfer();
        assert_eq!(
            p.client.poll_event(),
            Some(Event::Message(Message::text(text.clone())))
        );
    }
    // Without compression: the plain frame, shared too.
    let mut plain = Pair::new(Config::default().with_deflate(None), Config::default());
    plain.server.send_prepared(&prepared).unwrap();
    assert_eq!(plain.server.outbound(), &prepared.frame()[..]);
    plain.transfer();
    assert_eq!(
        plain.client.poll_event(),
        Some(Event::Message(Message::text(text.clone())))
    );
    // With context takeover: compressed for this connection, still intact,
    // twice in a row (the second uses the history of the first).
    let mut takeover = Pair::new(Config::default(), Config::default());
    for _ in 0..2 {
        takeover.server.send_prepared(&prepared).unwrap();
    }
    takeover.transfer();
    for _ in 0..2 {
        assert_eq!(
            takeover.client.poll_event(),
            Some(Event::Message(Message::text(text.clone())))
        );
    }
    // A client must mask: it frames the message itself.
    let mut p = Pair::new(
        Config::default().with_deflate(None),
        Config::default().with_deflate(None),
    );
    p.client.send_prepared(&prepared).unwrap();
    p.transfer();
    assert_eq!(
        p.server.poll_event(),
        Some(Event::Message(Message::text(text)))
    );
}

/// A prepared frame that another writer began on the transport is finished
/// by `send_prepared_rest`: the server queues exactly the rest, and the
/// client reads the whole message, then what was queued after it.
#[test]
fn the_rest_of_a_prepared_frame_completes_what_another_writer_began() {
    use duplex_proto::PreparedMessage;
    let prepared = PreparedMessage::new(Message::text("x".repeat(300)));
    let frame = prepared.frame().clone();
    let mut p = Pair::new(Config::default().with_deflate(None), Config::default());
    // Another writer put the first 7 bytes on the wire.
    let mut wire = BytesMut::from(&frame[..7]);
    assert_eq!(
        p.server.shared_framing(),
        Some(duplex_proto::SharedFraming::Plain)
    );
    p.server.send_prepared_rest(&frame, 7);
    assert_eq!(p.server.outbound_len(), frame.len() - 7);
    p.server.send(Message::text("after")).unwrap();
    let n = p.server.outbound_len();
    let mut slices = [std::io::IoSlice::new(&[]); 8];
    let k = p.server.outbound_slices(&mut slices);
    for s in &slices[..k] {
        wire.extend_from_slice(s);
    }
    p.server.consume_outbound(n);
    p.client.receive(&mut wire).unwrap();
    assert_eq!(
        p.client.poll_event(),
        Some(Event::Message(Message::text("x".repeat(300))))
    );
    assert_eq!(
        p.client.poll_event(),
        Some(Event::Message(Message::text("after")))
    );
    // Nothing left of a frame written whole.
    p.server.send_prepared_rest(&frame, frame.len());
    assert_eq!(p.server.outbound_len(), 0);
}
