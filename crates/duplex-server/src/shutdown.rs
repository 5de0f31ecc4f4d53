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
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_at_their_stage_and_late_ones_return_at_once() {
        let s = Arc::new(Shutdown::new());
        let closing = tokio::spawn({
            let s = s.clone();
            async move { s.reached(Stage::Closing).await }
        });
        let now = tokio::spawn({
            let s = s.clone();
            async move { s.reached(Stage::Now).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished() && !now.is_finished());
        s.advance(Stage::Closing);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!now.is_finished(), "Now is not reached by Closing");
        s.advance(Stage::Now);
        tokio::time::timeout(Duration::from_secs(5), now)
            .await
            .unwrap()
            .unwrap();
        // Never back; a late waiter returns at once.
        s.advance(Stage::Closing);
        assert_eq!(s.stage(), Stage::Now);
        tokio::time::timeout(Duration::from_secs(5), s.reached(Stage::Closing))
            .await
            .unwrap();
    }
}
