//! How far apart the machine's two CPUs are right now: the round trip of
//! one cache line between two threads, each spinning on its own CPU.
//!
//! On a virtual machine the host may run the two virtual CPUs on cores
//! that share a cache or on cores that do not, and move them while the
//! machine runs. On the machine BENCHMARKS.md is measured on, the round
//! trip is about 155 ns for stretches of seconds to minutes and about
//! 350 ns for others, and an echo of 64 KiB messages — every byte crossing
//! from the generator's CPU to the server's and back — costs every server
//! about twice as much CPU in the second state. `bench/run.py` runs this
//! before and after each measurement, so that servers are compared only
//! between measurements made in the same state.
//!
//! usage: taskset -c 0,1 core-distance [MILLISECONDS=200]
//! prints one JSON line: {"round_trip_ns": median over 20 slices, "min_ns", "max_ns"}

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let line = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (l2, d2) = (line.clone(), done.clone());
    // The other side: answers every odd value with the next even one.
    let echo = std::thread::spawn(move || {
        let mut want = 1u64;
        while !d2.load(Ordering::Relaxed) {
            if l2.load(Ordering::Acquire) == want {
                l2.store(want + 1, Ordering::Release);
                want += 2;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let slice = Duration::from_millis(ms.max(20) / 20);
    let mut v = 0u64;
    let mut slices = Vec::with_capacity(20);
    for _ in 0..20 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < slice {
            for _ in 0..100 {
                line.store(v + 1, Ordering::Release);
                while line.load(Ordering::Acquire) != v + 2 {
                    std::hint::spin_loop();
                }
                v += 2;
            }
            n += 100;
        }
        slices.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    done.store(true, Ordering::Relaxed);
    let _ = echo.join();
    slices.sort_by(f64::total_cmp);
    println!(
        "{{\"round_trip_ns\":{:.0},\"min_ns\":{:.0},\"max_ns\":{:.0}}}",
        slices[slices.len() / 2],
        slices[0],
        slices[slices.len() - 1]
    );
}
