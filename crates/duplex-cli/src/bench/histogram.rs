//! The latency histogram and its quantiles.

use std::time::Duration;

/// Latency histogram in nanoseconds: exact below 128 ns, then 64 buckets per
/// power of two (under 1.6 % error), mergeable and fixed in size.
pub(super) struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    pub(super) fn new() -> Self {
        Histogram {
            counts: vec![0; 128 + 57 * 64],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize;
        let top = (v >> (e - 6)) as usize;
        128 + (e - 7) * 64 + (top - 64)
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let e = (i - 128) / 64 + 7;
        let top = ((i - 128) % 64 + 64) as u64;
        let low = top << (e - 6);
        low + (1u64 << (e - 6)) / 2
    }

    pub(super) fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    /// The `q` quantile in microseconds (0 when empty).
    pub(super) fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i) as f64 / 1000.0;
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.quantile_us(q);
            assert!((got - want).abs() / want < 0.02, "q {q}: {got} vs {want}");
        }
        for v in [0u64, 1, 127, 128, 129, 1 << 20, u64::MAX / 2] {
            let i = Histogram::index(v);
            assert!(i < h.counts.len());
            let mid = Histogram::value(i);
            assert!(
                mid.abs_diff(v) as f64 <= v as f64 / 64.0 + 1.0,
                "{v} -> {mid}"
            );
        }
    }
}
