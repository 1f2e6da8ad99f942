//! A Prometheus histogram with fixed buckets, for one executor: plain
//! `Cell`s, no atomics or locks, so observing costs a few adds.

use std::cell::Cell;
use std::fmt::Write;
use std::time::Duration;

/// etcd's disk latency buckets: 1 ms doubling 14 times (up to 8.192 s), for
/// `etcd_disk_wal_fsync_duration_seconds` and
/// `etcd_disk_backend_commit_duration_seconds`.
pub const DISK_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// etcd's peer round trip buckets: 0.1 ms doubling 15 times (up to
/// 3.2768 s), for `etcd_network_peer_round_trip_time_seconds`.
pub const PEER_RTT_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// etcd's defragmentation buckets: 0.1 s doubling 12 times (up to
/// 409.6 s), for `etcd_disk_backend_defrag_duration_seconds`.
pub const DEFRAG_BUCKETS: [f64; 13] = [
    0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8, 409.6,
];

/// etcd's lease TTL buckets: 1 s doubling 21 times (up to 2^21 s), for
/// `etcd_debugging_lease_ttl_total`.
pub const LEASE_TTL_BUCKETS: [f64; 22] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0, 32768.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0, 2097152.0,
];

/// Counts per bucket (not cumulative; rendering accumulates), the sum and
/// the count of observations.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One slot per bound plus the +Inf overflow.
    counts: Vec<Cell<u64>>,
    sum: Cell<f64>,
}

impl Histogram {
    /// `bounds` must be strictly increasing (checked).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must increase"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0.0),
        }
    }

    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    pub fn observe_value(&self, v: f64) {
        // Prometheus buckets are "le": a value equal to a bound is in it.
        let slot = self.bounds.partition_point(|&b| b < v);
        let c = &self.counts[slot];
        c.set(c.get() + 1);
        self.sum.set(self.sum.get() + v);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(Cell::get).sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum.get()
    }

    /// Appends the `_bucket`, `_sum` and `_count` series of `name`.
    pub fn render(&self, out: &mut String, name: &str) {
        self.render_labeled(out, name, "");
    }

    /// Appends the series of `name` with `labels` (`To="a1"`) before `le`.
    pub fn render_labeled(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.get();
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].get();
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum.get());
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new(&DISK_LATENCY_BUCKETS);
        h.observe_value(0.001); // on the first bound: in it
        h.observe_value(0.0015);
        h.observe(Duration::from_millis(3));
        h.observe_value(100.0); // past the last bound: only +Inf
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 100.0055).abs() < 1e-9);
        let mut s = String::new();
        h.render(&mut s, "x");
        assert!(s.contains("x_bucket{le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.002\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.004\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"8.192\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_count 4\n"), "{s}");
    }

    #[test]
    fn empty_histogram_renders_zeroes() {
        let h = Histogram::new(&DISK_LATENCY_BUCKETS);
        let mut s = String::new();
        h.render(&mut s, "y");
        assert_eq!(s.lines().count(), DISK_LATENCY_BUCKETS.len() + 3);
        assert!(s.contains("y_count 0\n"));
    }
}
