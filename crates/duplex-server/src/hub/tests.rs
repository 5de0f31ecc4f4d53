//! The hub on a virtual clock, over the local broker.

use super::*;
use crate::broker::local::LocalBroker;
use mailbox::Next;
use namespace::{ChannelOptions, Namespaces};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

struct Fixture {
    hub: Arc<Hub>,
    broker: Arc<LocalBroker>,
    clock: Arc<ManualClock>,
}

fn fixture(opts: ChannelOptions) -> Fixture {
    let clock = Arc::new(ManualClock::default());
    clock.advance(1_000_000);
    let broker = Arc::new(LocalBroker::new(clock.clone()));
    let config = HubConfig {
        namespaces: Namespaces {
            default: Some(opts),
            named: Default::default(),
        },
        max_history_per_call: 10,
        ..Default::default()
    };
    let hub = Hub::new(config, broker.clone(), clock.clone(), Arc::default());
    Fixture { hub, broker, clock }
}

fn history_opts() -> ChannelOptions {
    ChannelOptions {
        history_size: 5,
        history_ttl: Duration::from_secs(60),
        recovery: true,
        presence: true,
        join_leave: true,
        ..Default::default()
    }
}

fn client(name: &str, user: &str) -> (Arc<ClientInfo>, Arc<Mailbox>) {
    (
        Arc::new(ClientInfo {
            client: name.into(),
            user: user.into(),
            conn_info: None,
            chan_info: None,
        }),
        Arc::new(Mailbox::new(1 << 20)),
    )
}

/// Everything queued in `m`, as (kind, offset or 0, payload).
fn drain(m: &Mailbox) -> Vec<(String, u64, String)> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    while let Poll::Ready(next) = m.poll_next(&mut cx, 100) {
        let Next::Events(events) = next else {
            out.push(("overflow".into(), 0, String::new()));
            break;
        };
        for d in events {
            out.push(match &d.event {
                Event::Publication { publication, .. } => (
                    "pub".into(),
                    publication.offset,
                    String::from_utf8_lossy(&publication.data).into(),
                ),
                Event::Join { info, .. } => ("join".into(), 0, info.client.test_name()),
                Event::Leave { info, .. } => ("leave".into(), 0, info.client.test_name()),
                Event::Unsubscribe { channel, .. } => ("unsub".into(), 0, channel.to_string()),
                Event::Disconnect { reason, .. } => ("disconnect".into(), 0, reason.to_string()),
            });
        }
    }
    out
}

fn pubs(events: &[(String, u64, String)]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.0 == "pub")
        .map(|e| e.1)
        .collect()
}

async fn publish_n(hub: &Hub, channel: &str, n: usize) -> StreamPosition {
    let mut last = None;
    for i in 0..n {
        last = hub
            .publish(channel, Bytes::from(format!("{i}")), None)
            .await
            .unwrap();
    }
    last.unwrap()
}

#[tokio::test]
async fn publications_reach_every_subscriber_in_order() {
    let f = fixture(history_opts());
    let (a, ma) = client("a", "u1");
    let (b, mb) = client("b", "u2");
    f.hub.subscribe(&a, &ma, "news", None).await.unwrap();
    f.hub.subscribe(&b, &mb, "news", None).await.unwrap();
    publish_n(&f.hub, "news", 5).await;
    assert_eq!(pubs(&drain(&ma)), [1, 2, 3, 4, 5]);
    assert_eq!(pubs(&drain(&mb)), [1, 2, 3, 4, 5]);
    assert_eq!(
        f.hub.metrics().deliveries.get(),
        10 + 1 /* b's join to a */ + 2 /* joins seen by themselves */
    );
}

#[tokio::test]
async fn a_broadcast_is_one_shared_delivery() {
    let f = fixture(ChannelOptions::default());
    let mut boxes = Vec::new();
    for i in 0..100 {
        let (c, m) = client(&format!("c{i}"), "u");
        f.hub.subscribe(&c, &m, "room", None).await.unwrap();
        boxes.push(m);
    }
    f.hub
        .publish("room", Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut first: Option<Arc<Delivery>> = None;
    for m in &boxes {
        let Poll::Ready(Next::Events(ev)) = m.poll_next(&mut cx, 10) else {
            panic!("a delivery expected")
        };
        assert_eq!(ev.len(), 1);
        match &first {
            None => first = Some(ev[0].clone()),
            Some(f) => assert!(
                Arc::ptr_eq(f, &ev[0]),
                "every mailbox holds the same delivery"
            ),
        }
    }
}

#[tokio::test]
async fn recovery_gives_exactly_the_missed_publications() {
    let f = fixture(history_opts());
    let (a, ma) = client("a", "u");
    let s = f.hub.subscribe(&a, &ma, "ch", None).await.unwrap();
    let start = s.position.unwrap();
    assert_eq!(start.offset, 0);
    publish_n(&f.hub, "ch", 2).await;
    let seen = StreamPosition {
        offset: 2,
        epoch: start.epoch.clone(),
    };
    f.hub.unsubscribe(&a, "ch").await;
    publish_n(&f.hub, "ch", 3).await;
    drain(&ma);
    let r = f.hub.subscribe(&a, &ma, "ch", Some(seen)).await.unwrap();
    assert!(r.was_recovering && r.recovered);
    let got: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
    assert_eq!(got, [3, 4, 5]);
    assert_eq!(r.position.unwrap().offset, 5);
}

#[tokio::test]
async fn recovery_at_the_edge_of_history_and_one_past_it() {
    let f = fixture(history_opts()); // history_size 5
    let (a, ma) = client("a", "u");
    let epoch = f
        .hub
        .subscribe(&a, &ma, "ch", None)
        .await
        .unwrap()
        .position
        .unwrap()
        .epoch;
    f.hub.unsubscribe(&a, "ch").await;
    publish_n(&f.hub, "ch", 7).await; // offsets 1..=7, 3..=7 held
                                      // At the edge: the client saw 2; 3..=7 are all held.
    let edge = StreamPosition {
        offset: 2,
        epoch: epoch.clone(),
    };
    let r = f.hub.subscribe(&a, &ma, "ch", Some(edge)).await.unwrap();
    assert!(r.recovered);
    assert_eq!(r.publications.len(), 5);
    f.hub.unsubscribe(&a, "ch").await;
    // One past it: the client saw 1; 2 is gone, so nothing and recovered false.
    let past = StreamPosition {
        offset: 1,
        epoch: epoch.clone(),
    };
    let r = f.hub.subscribe(&a, &ma, "ch", Some(past)).await.unwrap();
    assert!(r.was_recovering && !r.recovered);
    assert!(r.publications.is_empty(), "never a partial replay");
    f.hub.unsubscribe(&a, "ch").await;
    // Up to date: recovered with nothing.
    let top = StreamPosition {
        offset: 7,
        epoch: epoch.clone(),
    };
    let r = f.hub.subscribe(&a, &ma, "ch", Some(top)).await.unwrap();
    assert!(r.recovered && r.publications.is_empty());
}

#[tokio::test]
async fn another_epoch_or_a_future_offset_does_not_recover() {
    let f = fixture(history_opts());
    let (a, ma) = client("a", "u");
    publish_n(&f.hub, "ch", 2).await;
    let wrong = StreamPosition {
        offset: 1,
        epoch: "other".into(),
    };
    let r = f.hub.subscribe(&a, &ma, "ch", Some(wrong)).await.unwrap();
    assert!(!r.recovered && r.publications.is_empty());
    f.hub.unsubscribe(&a, "ch").await;
    let epoch = r.position.unwrap().epoch;
    let future = StreamPosition { offset: 9, epoch };
    let r = f.hub.subscribe(&a, &ma, "ch", Some(future)).await.unwrap();
    assert!(!r.recovered);
}

#[tokio::test]
async fn more_missed_than_one_call_returns_does_not_recover() {
    let mut o = history_opts();
    o.history_size = 100;
    let f = fixture(o); // max_history_per_call 10
    let (a, ma) = client("a", "u");
    let epoch = f
        .hub
        .subscribe(&a, &ma, "ch", None)
        .await
        .unwrap()
        .position
        .unwrap()
        .epoch;
    f.hub.unsubscribe(&a, "ch").await;
    publish_n(&f.hub, "ch", 11).await;
    let r = f
        .hub
        .subscribe(&a, &ma, "ch", Some(StreamPosition { offset: 0, epoch }))
        .await
        .unwrap();
    assert!(!r.recovered && r.publications.is_empty());
}

#[tokio::test]
async fn history_ttl_runs_on_the_virtual_clock() {
    let f = fixture(history_opts()); // ttl 60 s
    let epoch = publish_n(&f.hub, "ch", 2).await.epoch;
    f.clock.advance(59_999);
    assert_eq!(
        f.hub
            .history("ch", None, 10, false)
            .await
            .unwrap()
            .publications
            .len(),
        2
    );
    f.clock.advance(1);
    let h = f.hub.history("ch", None, 10, false).await.unwrap();
    assert!(h.publications.is_empty());
    assert_eq!(
        h.position,
        StreamPosition {
            offset: 2,
            epoch: epoch.clone()
        }
    );
    // A client that saw 1 cannot recover 2 any more.
    let (a, ma) = client("a", "u");
    let r = f
        .hub
        .subscribe(&a, &ma, "ch", Some(StreamPosition { offset: 1, epoch }))
        .await
        .unwrap();
    assert!(!r.recovered);
}

#[tokio::test]
async fn an_idle_empty_stream_is_dropped_and_gets_a_new_epoch() {
    let f = fixture(history_opts());
    let first = publish_n(&f.hub, "ch", 1).await;
    f.clock.advance(60_000);
    f.hub.history("ch", None, 10, false).await.unwrap(); // expires the publication
    f.clock.advance(crate::broker::local::STREAM_IDLE_MS);
    assert_eq!(f.broker.sweep(), 1);
    let second = publish_n(&f.hub, "ch", 1).await;
    assert_ne!(first.epoch, second.epoch);
    assert_eq!(second.offset, 1);
}

#[tokio::test]
async fn presence_join_and_leave() {
    let f = fixture(history_opts());
    let (a, ma) = client("a", "alice");
    let (b, mb) = client("b", "bob");
    let (b2, mb2) = client("b2", "bob");
    f.hub.subscribe(&a, &ma, "ch", None).await.unwrap();
    f.hub.subscribe(&b, &mb, "ch", None).await.unwrap();
    f.hub.subscribe(&b2, &mb2, "ch", None).await.unwrap();
    assert_eq!(f.hub.presence_stats("ch").await.unwrap(), (3, 2));
    assert_eq!(f.hub.presence("ch").await.unwrap().len(), 3);
    f.hub.unsubscribe(&b, "ch").await;
    let seen = drain(&ma);
    let kinds: Vec<(&str, &str)> = seen.iter().map(|e| (e.0.as_str(), e.2.as_str())).collect();
    assert_eq!(
        kinds,
        [("join", "a"), ("join", "b"), ("join", "b2"), ("leave", "b")]
    );
    assert_eq!(f.hub.presence_stats("ch").await.unwrap(), (2, 2));
    // Entries that are not refreshed expire (the TTL is 30 s).
    f.clock.advance(20_000);
    f.hub.refresh_presence(&a, "ch").await.unwrap();
    f.clock.advance(20_000);
    assert_eq!(f.hub.presence_stats("ch").await.unwrap(), (1, 1));
    // The node's heartbeat refreshes every local subscriber.
    f.clock.advance(20_000);
    assert_eq!(f.hub.refresh_all_presence().await.unwrap(), 2);
    f.clock.advance(20_000);
    assert_eq!(f.hub.presence_stats("ch").await.unwrap(), (2, 2));
    f.broker.sweep();
    let mut left: Vec<_> = f
        .hub
        .presence("ch")
        .await
        .unwrap()
        .iter()
        .map(|i| i.client.test_name())
        .collect();
    left.sort();
    assert_eq!(left, ["a", "b2"]);
}

#[tokio::test]
async fn a_full_mailbox_overflows_without_disturbing_others() {
    let f = fixture(ChannelOptions::default());
    let (slow, _) = client("slow", "u");
    let slow_box = Arc::new(Mailbox::new(2_000));
    let (fast, fast_box) = client("fast", "u");
    f.hub.subscribe(&slow, &slow_box, "ch", None).await.unwrap();
    f.hub.subscribe(&fast, &fast_box, "ch", None).await.unwrap();
    for i in 0..100 {
        f.hub
            .publish("ch", Bytes::from(vec![b'x'; 100 + i]), None)
            .await
            .unwrap();
    }
    assert_eq!(
        drain(&slow_box),
        [("overflow".to_string(), 0, String::new())]
    );
    assert_eq!(drain(&fast_box).len(), 100);
}

/// Deliveries are counted once in the server's memory budget; once it is
/// spent, clients that fell behind by more than their uncharged share are
/// cut off, clients that keep up are still served, and every byte comes
/// back when the deliveries are gone.
#[tokio::test]
async fn deliveries_are_bounded_by_the_memory_budget() {
    let f = fixture(ChannelOptions::default());
    let budget = Arc::new(MemoryBudget::new(256 << 10));
    f.hub.set_memory_budget(budget.clone());
    let mut slow = Vec::new();
    for i in 0..4 {
        let (info, mailbox) = client(&format!("slow{i}"), "u");
        let channel = format!("own{i}");
        f.hub
            .subscribe(&info, &mailbox, &channel, None)
            .await
            .unwrap();
        slow.push((channel, mailbox));
    }
    let (fast, fast_box) = client("fast", "u");
    f.hub
        .subscribe(&fast, &fast_box, "live", None)
        .await
        .unwrap();
    // 4 KiB publications to every slow client's own channel (each mailbox
    // allows 1 MiB: 4 MiB wanted of a 256 KiB budget), and one to the
    // live channel between rounds, which its client reads at once.
    let mut live = 0;
    for round in 0..256 {
        for (channel, _) in &slow {
            f.hub
                .publish(channel, Bytes::from(vec![b'x'; 4096]), None)
                .await
                .unwrap();
        }
        f.hub
            .publish("live", Bytes::from(format!("{round}")), None)
            .await
            .unwrap();
        let got = drain(&fast_box);
        assert_eq!(got.len(), 1, "round {round}: the live client is served");
        live += got.len();
        assert!(budget.used() <= budget.limit());
    }
    assert_eq!(live, 256);
    assert!(budget.refusals() > 0, "the budget was spent");
    assert!(budget.peak() <= 256 << 10);
    for (channel, mailbox) in &slow {
        let got = drain(mailbox);
        assert_eq!(
            got.last().map(|g| g.0.as_str()),
            Some("overflow"),
            "{channel}: cut off once it held more than its share"
        );
    }
    assert_eq!(budget.used(), 0, "everything given back");
}

/// History is counted in the memory budget: a publication it has no room
/// for is refused before it is stored or delivered (no offset used, no
/// subscriber sees it), and removing history gives the room back.
#[tokio::test]
async fn history_is_bounded_by_the_memory_budget() {
    let f = fixture(ChannelOptions {
        history_size: 1000,
        join_leave: false,
        ..history_opts()
    });
    let budget = Arc::new(MemoryBudget::new(16 << 10));
    f.broker.set_memory_budget(budget.clone());
    let (a, ma) = client("a", "u");
    f.hub.subscribe(&a, &ma, "ch", None).await.unwrap();
    let one = history::Stream::cost_of(&Publication::new(Bytes::from(vec![0u8; 1000]), None));
    let fit = (16 << 10) / one;
    for _ in 0..fit {
        f.hub
            .publish("ch", Bytes::from(vec![b'x'; 1000]), None)
            .await
            .unwrap();
    }
    let refused = f
        .hub
        .publish("ch", Bytes::from(vec![b'y'; 1000]), None)
        .await;
    assert!(
        matches!(refused, Err(HubError::Broker(BrokerError::Unavailable(_)))),
        "{refused:?}"
    );
    assert!(budget.used() <= budget.limit());
    let got = drain(&ma);
    assert_eq!(got.len(), fit, "the refused one was not delivered");
    assert_eq!(
        got.last().map(|g| g.1),
        Some(fit as u64),
        "nor given an offset"
    );
    f.hub.remove_history("ch").await.unwrap();
    assert_eq!(budget.used(), 0, "history removed, its room back");
    let pos = f
        .hub
        .publish("ch", Bytes::from(vec![b'z'; 1000]), None)
        .await
        .unwrap();
    assert_eq!(pos.map(|p| p.offset), Some(fit as u64 + 1));
}

#[tokio::test]
async fn limits_and_unknown_channels() {
    let f = fixture(ChannelOptions::default());
    let (a, ma) = client("a", "u");
    assert_eq!(
        f.hub.subscribe(&a, &ma, "x:y", None).await.unwrap_err(),
        HubError::UnknownChannel
    );
    assert_eq!(
        f.hub
            .subscribe(&a, &ma, "bad name", None)
            .await
            .unwrap_err(),
        HubError::BadChannel
    );
    f.hub.subscribe(&a, &ma, "ok", None).await.unwrap();
    assert_eq!(
        f.hub.subscribe(&a, &ma, "ok", None).await.unwrap_err(),
        HubError::AlreadySubscribed
    );
    let big = Bytes::from(vec![b'x'; 64 * 1024 + 1]);
    assert_eq!(
        f.hub.publish("ok", big, None).await.unwrap_err(),
        HubError::TooLarge
    );
    assert_eq!(
        f.hub.history("ok", None, 1, false).await.unwrap_err(),
        HubError::NotAvailable
    );
    assert_eq!(
        f.hub.presence("ok").await.unwrap_err(),
        HubError::NotAvailable
    );
}

#[tokio::test]
async fn channels_and_users() {
    let f = fixture(ChannelOptions::default());
    let (a, ma) = client("a", "alice");
    let (b, mb) = client("b", "bob");
    f.hub.register(a.clone(), ma.clone());
    f.hub.register(b.clone(), mb.clone());
    f.hub.subscribe(&a, &ma, "room1", None).await.unwrap();
    f.hub.subscribe(&b, &mb, "room1", None).await.unwrap();
    f.hub.subscribe(&b, &mb, "lobby", None).await.unwrap();
    let all = f.hub.channels(None).await.unwrap();
    assert_eq!(all, [("lobby".into(), 1), ("room1".into(), 2)]);
    assert_eq!(f.hub.channels(Some("room*")).await.unwrap().len(), 1);
    assert_eq!(f.hub.channels(Some("*o*")).await.unwrap().len(), 2);
    let ev = Event::Disconnect {
        code: 3000,
        reason: "bye".into(),
    };
    assert_eq!(f.hub.tell_user("bob", None, ev), 1);
    assert_eq!(drain(&mb).last().unwrap().0, "disconnect");
    assert!(drain(&ma).iter().all(|e| e.0 != "disconnect"));
    f.hub.unregister(&b);
    let ev = Event::Disconnect {
        code: 3000,
        reason: "bye".into(),
    };
    assert_eq!(f.hub.tell_user("bob", None, ev), 0);
}

#[test]
fn globs() {
    assert!(glob("*", "anything"));
    assert!(glob("chat:*", "chat:1"));
    assert!(!glob("chat:*", "news"));
    assert!(glob("a*b*c", "aXXbYYc"));
    assert!(!glob("a*b*c", "aXXbYY"));
    assert!(glob("exact", "exact"));
}

#[test]
fn client_ids_look_like_uuids_and_read_back() {
    let id = ClientId::random();
    let text = id.to_string();
    assert_eq!(text.len(), 36);
    assert_eq!(text.as_bytes()[14], b'4', "version 4");
    assert!(
        matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
        "{text}"
    );
    for (i, c) in text.bytes().enumerate() {
        match i {
            8 | 13 | 18 | 23 => assert_eq!(c, b'-', "{text}"),
            _ => assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{text}"),
        }
    }
    assert_eq!(ClientId::parse(&text), Some(id));
    assert_eq!(ClientId::parse(&text.to_uppercase()), Some(id));
    assert_ne!(ClientId::random(), id);
    let fixed = "0123abcd-4567-89ef-0123-456789abcdef";
    assert_eq!(ClientId::parse(fixed).unwrap().to_string(), fixed);
    for bad in [
        "",
        "c1",
        &text[..35],
        &format!("{text}0"),
        "0123abcd-4567-89ef-0123+456789abcdef",
        "0123abcd-4567-89ef-0123-456789abcdeg",
        "0123abcd04567-89ef-0123-456789abcdef",
        "0123abc-d4567-89ef-0123-456789abcdef",
        "0123abcd-4567-89ef-0123-456789abcdé",
    ] {
        assert_eq!(ClientId::parse(bad), None, "{bad}");
    }
}

/// Drains `m` until `n` events came out, waiting for the writer's pushes
/// (up to 10 s).
async fn drain_n(m: &Mailbox, n: usize) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            out.extend(drain(m));
            if out.len() >= n {
                return;
            }
            std::future::poll_fn(|cx| {
                // Registers for the next push, then looks.
                let overflowed = m.poll_signals(cx).overflowed;
                match overflowed || m.queued_bytes() > 0 {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                }
            })
            .await;
        }
    })
    .await
    .expect("the events within 10 s");
    out
}

/// With the writer running, a channel's events gather and go out in
/// bursts, in order, to every subscriber; those without a socket to lend
/// get them queued.
#[tokio::test]
async fn the_writer_hands_out_bursts_in_order() {
    let f = fixture(history_opts());
    f.hub.start_writer();
    let (a, ma) = client("a", "u1");
    f.hub.subscribe(&a, &ma, "news", None).await.unwrap();
    let mut got = drain_n(&ma, 1).await;
    assert_eq!(got[0].0, "join", "its own join, through the writer");
    publish_n(&f.hub, "news", 5).await;
    assert!(
        drain(&ma).is_empty(),
        "nothing yet: the burst waits for the writer's turn"
    );
    got = drain_n(&ma, 5).await;
    assert_eq!(pubs(&got), [1, 2, 3, 4, 5]);
    assert_eq!(f.hub.metrics().deliveries.get(), 6);
}

/// Events that gather faster than the writer hands them out are bounded:
/// past `PENDING_BYTES_MAX` the subscribers are told to recover (2500)
/// instead, and what they missed is in history.
#[tokio::test]
async fn a_pending_burst_past_its_bound_tells_subscribers_to_recover() {
    let mut opts = history_opts();
    opts.history_size = 1000;
    let f = fixture(opts);
    f.hub.start_writer();
    let (a, _) = client("a", "u1");
    let ma = Arc::new(Mailbox::new(64 << 20));
    f.hub.subscribe(&a, &ma, "news", None).await.unwrap();
    drain_n(&ma, 1).await;
    // 300 publications of 60 kB, published without yielding: the writer
    // has no turn, so they all gather (18 MB past a 16 MiB bound).
    let big = Bytes::from(vec![b'x'; 60_000]);
    for _ in 0..300 {
        f.hub.publish("news", big.clone(), None).await.unwrap();
    }
    let got = drain_n(&ma, 1).await;
    let n = got.iter().filter(|e| e.0 == "pub").count();
    assert!((250..300).contains(&n), "{n} publications before the bound");
    assert_eq!(got.len(), n + 1);
    assert_eq!(got[n].0, "unsub", "then told to recover");
    assert_eq!(pubs(&got), (1..=n as u64).collect::<Vec<_>>());
}

#[test]
fn a_channels_subscribers_are_found_by_id_and_kept_in_subscribe_order() {
    let mut subs = Subscribers::default();
    for name in ["a", "b", "c", "d"] {
        let (info, mailbox) = client(name, "");
        assert!(subs.insert(Subscriber { mailbox, info }));
    }
    let (again, mailbox) = client("b", "someone else");
    assert!(!subs.insert(Subscriber {
        mailbox,
        info: again
    }));
    let id = |name: &str| ClientId::from(name);
    assert!(subs.contains(&id("c")) && !subs.contains(&id("e")));
    assert_eq!(subs.get(&id("b")).map(|s| &*s.info.user), Some(""));
    assert!(subs.swap_remove(&id("b")));
    assert!(!subs.swap_remove(&id("b")));
    let order: Vec<ClientId> = subs.iter().map(|s| s.info.client).collect();
    assert_eq!(order, [id("a"), id("d"), id("c")]);
}

/// Every connection holds its info in one `Arc`: 16 bytes of counts and
/// these at most 64, an 80-byte allocation. A field that grows it costs
/// every connection 16 bytes or more (see bench/notes.md).
#[test]
fn client_info_fits_its_allocation() {
    assert_eq!(std::mem::size_of::<ClientId>(), 16);
    assert!(
        std::mem::size_of::<ClientInfo>() <= 64,
        "{}",
        std::mem::size_of::<ClientInfo>()
    );
}
