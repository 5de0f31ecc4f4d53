//! One timer task for the deadlines of many connections (pings, pong and
//! connect timeouts, token expiries) instead of a tokio `Sleep` and a
//! shutdown waiter inside every connection's task.
//!
//! An idle Centrifugo connection used to carry 176 bytes of timer and
//! waiter for deadlines that come once every 25 s; here it holds one weak
//! pointer in a shared map, and its alarm rings through the mailbox it
//! already has ([`Mailbox::ring`]).
//!
//! Deadlines are rounded up to the next multiple of [`RESOLUTION_MS`]: an
//! alarm never rings early, at most that much late. An alarm may also ring
//! when nothing is due (an earlier deadline that moved, [`Alarms::ring_all`]
//! at shutdown): the connection checks its own deadlines and sets the next.

use crate::hub::Mailbox;
use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Granularity of deadlines, in milliseconds.
pub const RESOLUTION_MS: u64 = 20;

/// The alarms of one front's connections.
#[derive(Debug)]
pub struct Alarms {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Mailboxes by the slot their alarm rings in.
    slots: Mutex<BTreeMap<u64, Vec<Weak<Mailbox>>>>,
    /// Wakes the timer task: a slot earlier than the first, or closing.
    changed: Notify,
    started: AtomicBool,
    closed: AtomicBool,
    epoch: Instant,
}

/// Where an alarm was set, to move or cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot(NonZeroU64);

impl Default for Alarms {
    fn default() -> Self {
        Self::new()
    }
}

impl Alarms {
    /// No alarms; the timer task starts with the first one set.
    pub fn new() -> Self {
        Alarms {
            inner: Arc::new(Inner {
                slots: Mutex::new(BTreeMap::new()),
                changed: Notify::new(),
                started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                epoch: Instant::now(),
            }),
        }
    }

    /// The slot `at` rings in (rounded up: never early).
    pub fn slot(&self, at: Instant) -> Slot {
        let ms = at.saturating_duration_since(self.inner.epoch).as_millis();
        let n = u64::try_from(ms)
            .unwrap_or(u64::MAX)
            .div_ceil(RESOLUTION_MS);
        // Slot 0 is the epoch itself, never in the future: ring it in 1.
        Slot(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// Rings `mailbox` at `slot` (from [`slot`](Self::slot)). Must be
    /// called inside a tokio runtime.
    pub fn set(&self, slot: Slot, mailbox: &Arc<Mailbox>) {
        let earliest = {
            let mut slots = self.inner.lock();
            let earliest = match slots.first_key_value() {
                None => true,
                Some((first, _)) => *first > slot.0.get(),
            };
            slots
                .entry(slot.0.get())
                .or_default()
                .push(Arc::downgrade(mailbox));
            earliest
        };
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(self.inner.clone()));
        } else if earliest {
            self.inner.changed.notify_one();
        }
    }

    /// Forgets `mailbox`'s alarm at `slot` (its connection ended).
    pub fn cancel(&self, slot: Slot, mailbox: &Arc<Mailbox>) {
        let mut slots = self.inner.lock();
        if let Some(v) = slots.get_mut(&slot.0.get()) {
            v.retain(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(mailbox)));
            if v.is_empty() {
                slots.remove(&slot.0.get());
            }
        }
    }

    /// Rings every alarm set now (the server is shutting down: each
    /// connection then sees the stage and says goodbye).
    pub fn ring_all(&self) {
        let all = std::mem::take(&mut *self.inner.lock());
        ring(all.into_values().flatten());
    }

    /// Alarms set and not yet rung (stale ones of ended connections
    /// included until their slot passes).
    pub fn pending(&self) -> usize {
        self.inner.lock().values().map(Vec::len).sum()
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.changed.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Vec<Weak<Mailbox>>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn instant(&self, slot: u64) -> Instant {
        self.epoch + Duration::from_millis(slot.saturating_mul(RESOLUTION_MS))
    }

    /// The slots that are due at `now`, taken out of the map.
    fn take_due(&self, now: Instant) -> Vec<Weak<Mailbox>> {
        let due = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            / RESOLUTION_MS;
        let mut slots = self.lock();
        let later = slots.split_off(&due.saturating_add(1));
        let due = std::mem::replace(&mut *slots, later);
        due.into_values().flatten().collect()
    }
}

fn ring(mailboxes: impl Iterator<Item = Weak<Mailbox>>) {
    for m in mailboxes.filter_map(|w| w.upgrade()) {
        m.ring();
    }
}

/// The timer task: rings each slot when it is due, until the alarms are
/// dropped.
async fn run(inner: Arc<Inner>) {
    loop {
        let mut changed = pin!(inner.changed.notified());
        changed.as_mut().enable();
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        ring(inner.take_due(Instant::now()).into_iter());
        let next = inner.lock().first_key_value().map(|(k, _)| *k);
        match next {
            Some(slot) => {
                tokio::select! {
                    () = tokio::time::sleep_until(inner.instant(slot)) => {}
                    () = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(m: &Mailbox) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        m.poll_signals(&mut cx).rung
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_rings_at_its_slot_never_before() {
        let alarms = Alarms::new();
        let m = Arc::new(Mailbox::new(1024));
        let at = Instant::now() + Duration::from_millis(1_005);
        alarms.set(alarms.slot(at), &m);
        tokio::time::sleep_until(at - Duration::from_millis(1)).await;
        assert!(!rung(&m), "not before its deadline");
        tokio::time::sleep_until(at + Duration::from_millis(RESOLUTION_MS)).await;
        assert!(rung(&m), "within one resolution step after it");
        assert!(!rung(&m), "once");
        assert_eq!(alarms.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_alarm_wakes_the_timer_task() {
        let alarms = Alarms::new();
        let (late, early) = (Arc::new(Mailbox::new(1)), Arc::new(Mailbox::new(1)));
        let now = Instant::now();
        alarms.set(alarms.slot(now + Duration::from_secs(60)), &late);
        // Let the task start and sleep towards the 60 s slot.
        tokio::task::yield_now().await;
        alarms.set(alarms.slot(now + Duration::from_secs(1)), &early);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(rung(&early));
        assert!(!rung(&late));
        assert_eq!(alarms.pending(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_and_dropped_alarms_do_not_ring_and_ring_all_rings_the_rest() {
        let alarms = Alarms::new();
        let (a, b, c) = (
            Arc::new(Mailbox::new(1)),
            Arc::new(Mailbox::new(1)),
            Arc::new(Mailbox::new(1)),
        );
        let slot = alarms.slot(Instant::now() + Duration::from_secs(5));
        for m in [&a, &b, &c] {
            alarms.set(slot, m);
        }
        alarms.cancel(slot, &a);
        drop(b);
        assert_eq!(alarms.pending(), 2, "the dropped one stays until its slot");
        alarms.ring_all();
        assert!(!rung(&a));
        assert!(rung(&c));
        assert_eq!(alarms.pending(), 0);
    }
}
