//! What the tasks of one run share: its phase, counts, errors and
//! latencies; progress lines on stderr.

use super::histogram::Histogram;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Warmup,
    Measure,
    Done,
}

/// State shared by the tasks of one run (all on one thread).
pub(super) struct Shared {
    pub(super) phase: Cell<Phase>,
    /// Completed operations in the measured window.
    pub(super) measured: Cell<u64>,
    /// Completed operations since the start, for progress lines.
    pub(super) total: Cell<u64>,
    pub(super) errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    pub(super) hist: RefCell<Histogram>,
}

impl Shared {
    pub(super) fn new() -> Rc<Self> {
        Rc::new(Shared {
            phase: Cell::new(Phase::Warmup),
            measured: Cell::new(0),
            total: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            hist: RefCell::new(Histogram::new()),
        })
    }

    pub(super) fn error(&self, e: String) {
        // Failures after the window closed (sockets dropped at exit) do
        // not count.
        if self.phase.get() == Phase::Done {
            return;
        }
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(e);
        }
    }

    pub(super) fn first_error(&self) -> String {
        self.first_error.borrow().clone().unwrap_or_default()
    }
}

/// Prints one progress line per second on stderr until `until`.
pub(super) async fn progress(what: &str, sh: &Shared, until: Instant) {
    let mut last = sh.total.get();
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
        let t = sh.total.get();
        let phase = match sh.phase.get() {
            Phase::Warmup => "warm-up",
            _ => "measuring",
        };
        eprintln!(
            "{what}: {} /s ({phase}), {} errors",
            t - last,
            sh.errors.get()
        );
        last = t;
    }
}

pub(super) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
