//! Latency summaries: percentiles of a bounded set of samples.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one measured operation, in microseconds (the unit the
/// numbers live in on modern disks and networks).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub samples: usize,
    pub min_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarises `samples`, sorting them in place. `None` when empty:
    /// no sample is no measurement, never a zero latency.
    pub fn from_samples(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let micros = |d: Duration| d.as_nanos() as f64 / 1e3;
        let total: Duration = samples.iter().sum();
        Some(Self {
            samples: samples.len(),
            min_us: micros(samples[0]),
            p50_us: micros(nearest_rank(samples, 500)),
            p99_us: micros(nearest_rank(samples, 990)),
            p999_us: micros(nearest_rank(samples, 999)),
            max_us: micros(samples[samples.len() - 1]),
            mean_us: micros(total) / samples.len() as f64,
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty samples: the
/// smallest sample with at least `permille`/1000 of all samples at or
/// below it. Integer arithmetic, so 99.9 % of 1000 is exactly rank 999.
/// With few samples a high percentile is honestly the maximum.
fn nearest_rank(sorted: &[Duration], permille: usize) -> Duration {
    let rank = (permille * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Formats microseconds for people: `850 µs`, `1.25 ms`, `2.0 s`.
pub fn human_us(micros: f64) -> String {
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else {
        format!("{:.1} s", micros / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let summary = LatencySummary::from_samples(&mut samples).unwrap();
        assert_eq!(summary.samples, 1000);
        assert_eq!(summary.min_us, 1.0);
        assert_eq!(summary.p50_us, 500.0);
        assert_eq!(summary.p99_us, 990.0);
        assert_eq!(summary.p999_us, 999.0);
        assert_eq!(summary.max_us, 1000.0);
        assert!((summary.mean_us - 500.5).abs() < 1e-6);
    }

    #[test]
    fn few_samples_report_the_maximum_as_tail() {
        let mut samples = vec![Duration::from_millis(3), Duration::from_millis(1)];
        let summary = LatencySummary::from_samples(&mut samples).unwrap();
        assert_eq!(summary.p99_us, 3000.0);
        assert!(LatencySummary::from_samples(&mut []).is_none());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_us(850.0), "850 µs");
        assert_eq!(human_us(1250.0), "1.25 ms");
        assert_eq!(human_us(2_000_000.0), "2.0 s");
    }
}
