//! The server's shutdown signal, as cheap as possible per waiting
//! connection.
//!
//! Every open connection waits for it beside its socket, so its waiter is
//! part of what an idle connection costs: here one intrusive `Notify`
//! waiter (no allocation, no channel version) and a shared stage.

use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// How far a server's shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Serving.
    Running = 0,
    /// Close every connection with 1001 and wait for the peers' answers.
    Closing = 1,
    /// The grace period is over: drop connections at once.
    Now = 2,
}

/// A shutdown signal shared by a server's connections.
#[derive(Debug, Default)]
pub struct Shutdown {
    stage: AtomicU8,
    notify: Notify,
}

impl Shutdown {
    /// A signal at [`Stage::Running`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Acquire) {
            0 => Stage::Running,
            1 => Stage::Closing,
            _ => Stage::Now,
        }
    }

    /// Moves to `stage` (never back) and wakes every waiter.
    pub fn advance(&self, stage: Stage) {
        self.stage.fetch_max(stage as u8, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// A waiter woken by the next [`advance`](Self::advance): `enable` it,
    /// then check [`stage`](Self::stage), then wait.
    pub(crate) fn waiter(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Completes once the stage is `stage` or later.
    pub async fn reached(&self, stage: Stage) {
        loop {
            let mut woken = pin!(self.notify.notified());
            // Registered before the check, so an `advance` between the
            // check and the wait is not missed.
            woken.as_mut().enable();
            if self.stage() >= stage {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    pub(crate) struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `f` once with `waker`'s count: no runtime, no timing.
    pub(crate) fn poll<F: Future>(f: Pin<&mut F>, waker: &Arc<Count>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(&Waker::from(waker.clone())))
    }

    pub(crate) fn woken(w: &Arc<Count>) -> usize {
        w.0.load(Ordering::SeqCst)
    }

    #[test]
    fn waiters_wake_at_their_stage_and_late_ones_return_at_once() {
        let s = Shutdown::new();
        let (wc, wn) = (Arc::default(), Arc::default());
        let mut closing = pin!(s.reached(Stage::Closing));
        let mut now = pin!(s.reached(Stage::Now));
        // Both wait, registered with the signal.
        assert!(poll(closing.as_mut(), &wc).is_pending());
        assert!(poll(now.as_mut(), &wn).is_pending());
        assert_eq!((woken(&wc), woken(&wn)), (0, 0));

        s.advance(Stage::Closing);
        assert_eq!(woken(&wc), 1, "the Closing waiter is woken");
        assert!(poll(closing.as_mut(), &wc).is_ready());
        // Woken too, but Closing is not Now: it waits again.
        assert!(
            poll(now.as_mut(), &wn).is_pending(),
            "Now is not reached by Closing"
        );

        let before = woken(&wn);
        s.advance(Stage::Now);
        assert_eq!(woken(&wn), before + 1, "the Now waiter is woken");
        assert!(poll(now.as_mut(), &wn).is_ready());

        // Never back; a late waiter returns at once.
        s.advance(Stage::Closing);
        assert_eq!(s.stage(), Stage::Now);
        let late = pin!(s.reached(Stage::Closing));
        assert!(poll(late, &Arc::default()).is_ready());
    }
}
