//! The server-wide memory budget as the connections of one server share it:
//! bytes are reserved before they are read, inflated or queued, given back
//! when delivered, written or dropped, and a connection that asks for more
//! than is left fails with 1009 (receiving) or 1013 (otherwise) while the
//! others keep what they have.

use bytes::BytesMut;
use duplex_proto::frame::{FrameHeader, OpCode};
use duplex_proto::pair::Pair;
use duplex_proto::{
    CloseCode, Config, Connection, DeflateConfig, Error, Event, MemoryBudget, Message, Role,
};
use std::sync::Arc;

const FREE: usize = MemoryBudget::UNCHARGED;

fn budgeted(limit: usize) -> (Arc<MemoryBudget>, Config) {
    let b = Arc::new(MemoryBudget::new(limit));
    (b.clone(), Config::default().with_memory_budget(b))
}

/// A client's frames for `msg` (masked, as a server receives them).
fn wire(msg: Message) -> Vec<u8> {
    let mut c = Connection::new(Role::Client, Config::default(), None);
    c.send(msg).unwrap();
    c.outbound().to_vec()
}

/// What a driver does with `bytes` arriving in reads of `step`: reserve,
/// read, receive, and, with nothing left in its buffer, let the buffer go
/// before it waits for more. Stops at the first refusal and returns it.
fn drive(
    conn: &mut Connection,
    buf: &mut BytesMut,
    bytes: &[u8],
    step: usize,
) -> Result<(), Error> {
    for piece in bytes.chunks(step) {
        conn.reserve_read(buf.len(), piece.len())?;
        buf.extend_from_slice(piece);
        conn.receive(buf)?;
        if buf.is_empty() {
            *buf = BytesMut::new();
            conn.release_read(0);
        }
    }
    Ok(())
}

/// The close code a connection queued, read back by a client.
fn close_code(server: &Connection) -> Option<u16> {
    let out = server.outbound();
    let mut at = 0;
    while let Ok(Some((h, n))) = FrameHeader::parse(&out[at..]) {
        let p = &out[at + n..at + n + h.payload_len as usize];
        if h.opcode == OpCode::Close {
            return Some(u16::from_be_bytes([p[0], p[1]]));
        }
        at += n + h.payload_len as usize;
    }
    None
}

#[test]
fn a_message_being_received_is_charged_and_given_back_once_delivered() {
    let (budget, config) = budgeted(1 << 20);
    let mut s = Connection::new(Role::Server, config, None);
    let bytes = wire(Message::binary(vec![7u8; 600 << 10]));
    let mut buf = BytesMut::new();
    let (head, tail) = bytes.split_at(400 << 10);
    drive(&mut s, &mut buf, head, 64 << 10).unwrap();
    // The partial frame is held, less the uncharged allowance.
    assert_eq!(budget.used(), buf.len() - FREE);
    assert_eq!(s.budget_charge(), budget.used());
    drive(&mut s, &mut buf, tail, 64 << 10).unwrap();
    match s.poll_event() {
        Some(Event::Message(m)) => assert_eq!(m.as_bytes().len(), 600 << 10),
        other => panic!("{other:?}"),
    }
    assert_eq!(budget.used(), 0, "delivered: given back");
    assert!(budget.peak() >= (600 << 10) - FREE);
}

#[test]
fn fragments_are_charged_while_reassembled() {
    let (budget, config) = budgeted(1 << 20);
    let mut s = Connection::new(Role::Server, config, None);
    let mut c = Connection::new(Role::Client, Config::default(), None);
    c.send_fragmented(Message::binary(vec![1u8; 300 << 10]), 32 << 10)
        .unwrap();
    let bytes = c.outbound().to_vec();
    let mut buf = BytesMut::new();
    drive(&mut s, &mut buf, &bytes[..200 << 10], 50 << 10).unwrap();
    // Whole fragments moved to the reassembly buffer stay counted.
    let used = budget.used();
    assert!(((190 << 10) - FREE..=200 << 10).contains(&used), "{used}");
    drive(&mut s, &mut buf, &bytes[200 << 10..], 50 << 10).unwrap();
    assert!(matches!(s.poll_event(), Some(Event::Message(_))));
    assert_eq!(budget.used(), 0);
}

#[test]
fn past_the_budget_the_asking_connection_closes_1009_and_the_others_keep_theirs() {
    let (budget, config) = budgeted(1 << 20);
    let config = Arc::new(config);
    let mut a = Connection::new(Role::Server, config.clone(), None);
    let mut b = Connection::new(Role::Server, config.clone(), None);
    let msg = wire(Message::binary(vec![3u8; 700 << 10]));
    let (mut abuf, mut bbuf) = (BytesMut::new(), BytesMut::new());
    drive(&mut a, &mut abuf, &msg[..600 << 10], 64 << 10).unwrap();
    let a_holds = budget.used();
    let err = drive(&mut b, &mut bbuf, &msg[..600 << 10], 64 << 10).unwrap_err();
    assert_eq!(err, Error::MemoryBudget { receiving: true });
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
    assert_eq!(close_code(&b), Some(1009));
    assert!(budget.refusals() >= 1);
    assert!(budget.used() <= 1 << 20);
    // The refused connection gives back what it held when it goes away;
    // the one within the budget finishes its message undisturbed.
    drop(b);
    assert_eq!(budget.used(), a_holds);
    drive(&mut a, &mut abuf, &msg[600 << 10..], 64 << 10).unwrap();
    assert!(matches!(a.poll_event(), Some(Event::Message(m)) if m.as_bytes().len() == 700 << 10));
    assert_eq!(budget.used(), 0);
    drop(a);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_new_message_when_the_budget_is_spent_closes_1013() {
    let (budget, config) = budgeted(256 << 10);
    let config = Arc::new(config);
    let mut a = Connection::new(Role::Server, config.clone(), None);
    let mut b = Connection::new(Role::Server, config, None);
    let mut abuf = BytesMut::new();
    let big = wire(Message::binary(vec![0u8; 1 << 20]));
    // A holds all but a few KiB of the budget in a partial message.
    drive(
        &mut a,
        &mut abuf,
        &big[..(256 << 10) + FREE - 4096],
        32 << 10,
    )
    .unwrap();
    assert!(
        budget.used() >= (256 << 10) - 4096 - 14,
        "{}",
        budget.used()
    );
    // B, with nothing in progress, asks for a read's worth: 1013.
    let err = b.reserve_read(0, 64 << 10).unwrap_err();
    assert_eq!(err, Error::MemoryBudget { receiving: false });
    assert_eq!(close_code(&b), Some(1013));
    // Small reads within the allowance are never refused.
    let mut c = Connection::new(Role::Server, Config::default(), None);
    c.reserve_read(0, FREE).unwrap();
}

#[test]
fn inflated_output_is_reserved_before_it_is_written() {
    // 4 MiB of zeros compress to a few KiB: the budget, not the message
    // limit, stops it.
    let mut p = Pair::new(
        Config::default().with_deflate(Some(DeflateConfig::default())),
        budgeted(1 << 20).1,
    );
    p.client.send(Message::binary(vec![0u8; 4 << 20])).unwrap();
    assert!(p.client.outbound_len() < 64 << 10);
    p.transfer();
    assert_eq!(
        p.errors.1.as_slice(),
        [Error::MemoryBudget { receiving: true }]
    );
    assert_eq!(
        p.client.received_close().flatten().map(|f| f.code),
        Some(CloseCode::MESSAGE_TOO_BIG)
    );

    // Within the budget it inflates, and all of it comes back.
    let (budget, config) = budgeted(16 << 20);
    let mut p = Pair::new(
        Config::default().with_deflate(Some(DeflateConfig::default())),
        config,
    );
    p.client.send(Message::binary(vec![0u8; 4 << 20])).unwrap();
    p.transfer();
    assert!(p.errors.1.is_empty(), "{:?}", p.errors.1);
    assert!(
        matches!(p.server.poll_event(), Some(Event::Message(m)) if m.as_bytes().len() == 4 << 20)
    );
    assert_eq!(budget.used(), 0);
    assert!(budget.peak() >= (4 << 20) - FREE && budget.peak() <= 16 << 20);
}

#[test]
fn queued_sends_are_charged_until_written() {
    let (budget, config) = budgeted(1 << 20);
    let mut s = Connection::new(Role::Server, config, None);
    s.send(Message::binary(vec![1u8; 600 << 10])).unwrap();
    let used = budget.used();
    assert!(((600 << 10) - FREE..=600 << 10).contains(&used), "{used}");
    // Written in two steps: the charge follows what is still queued.
    s.consume_outbound(300 << 10);
    assert!(budget.used() < used - (250 << 10));
    let rest = s.outbound_len();
    s.consume_outbound(rest);
    assert_eq!(budget.used(), 0);
    // Small sends never touch the budget.
    s.send(Message::text("hi")).unwrap();
    assert_eq!(budget.used(), 0);
    let n = s.outbound_len();
    s.consume_outbound(n);
    // A send the budget cannot cover fails the connection with 1013.
    let err = s.send(Message::binary(vec![1u8; 2 << 20])).unwrap_err();
    assert_eq!(err, Error::MemoryBudget { receiving: false });
    assert_eq!(close_code(&s), Some(1013));
    assert_eq!(budget.used(), 0, "nothing was queued for it");
}

#[test]
fn without_a_budget_nothing_is_counted_or_refused() {
    let mut s = Connection::new(Role::Server, Config::default(), None);
    let bytes = wire(Message::binary(vec![7u8; 3 << 20]));
    let mut buf = BytesMut::new();
    drive(&mut s, &mut buf, &bytes, 1 << 20).unwrap();
    assert!(matches!(s.poll_event(), Some(Event::Message(_))));
    assert_eq!(s.budget_charge(), 0);
}
