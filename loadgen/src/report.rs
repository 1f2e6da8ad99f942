//! Latency histograms per operation and the report built from them: the
//! table printed at the end and the JSON written with `--json`.
//!
//! Each task records into its own [`Recorder`] (no locks on the request
//! path); the recorders are merged when the tasks finish.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles drawn by `--plot`, as quantiles.
pub const PLOT_QUANTILES: [f64; 12] = [
    0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// Latencies (µs) and error count of one operation.
#[derive(Clone, Debug)]
pub struct OpStats {
    latency_us: Histogram<u64>,
    errors: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            // Three significant digits, resizing on demand: no latency is
            // ever rejected, however slow the server.
            latency_us: Histogram::new(3).expect("3 significant figures is in range"),
            errors: 0,
        }
    }
}

impl OpStats {
    /// Successful requests recorded.
    pub fn count(&self) -> u64 {
        self.latency_us.len()
    }

    /// Latency in milliseconds at quantile `q` (0.0..=1.0).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn summary(&self) -> OpSummary {
        OpSummary {
            count: self.count(),
            errors: self.errors,
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if self.latency_us.is_empty() {
                0.0
            } else {
                self.latency_us.max() as f64 / 1000.0
            },
        }
    }
}

/// Per-task recording of operations.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    ops: BTreeMap<String, OpStats>,
    bytes: u64,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn stats(&mut self, op: &str) -> &mut OpStats {
        if !self.ops.contains_key(op) {
            self.ops.insert(op.to_owned(), OpStats::default());
        }
        self.ops.get_mut(op).expect("inserted above")
    }

    /// Records one successful `op` that took `latency`.
    pub fn record(&mut self, op: &str, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let hist = &mut self.stats(op).latency_us;
        // `record` grows an auto-resizing histogram; `saturating_record`
        // would clamp to its current (tiny) range instead.
        if hist.record(us).is_err() {
            hist.saturating_record(us);
        }
    }

    /// Records one failed `op` (or a violation seen in its response).
    pub fn error(&mut self, op: &str) {
        self.stats(op).errors += 1;
    }

    /// Makes `op` appear in the report even if nothing was recorded for it,
    /// so a workload that should have done something shows a zero.
    pub fn declare(&mut self, op: &str) {
        self.stats(op);
    }

    /// Adds payload bytes received (reported as bytes/s).
    pub fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
    }

    /// Folds another recorder into this one.
    pub fn merge(&mut self, other: Recorder) {
        for (op, stats) in other.ops {
            let mine = self.stats(&op);
            // Both histograms auto-resize, so adding cannot fail on range.
            let _ = mine.latency_us.add(&stats.latency_us);
            mine.errors += stats.errors;
        }
        self.bytes += other.bytes;
    }

    /// The recorded operations by name.
    pub fn ops(&self) -> &BTreeMap<String, OpStats> {
        &self.ops
    }

    /// Builds the report of a phase that lasted `elapsed`.
    pub fn report(&self, profile: &str, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let count: u64 = self.ops.values().map(OpStats::count).sum();
        Report {
            profile: profile.to_owned(),
            duration_s: elapsed.as_secs_f64(),
            throughput_ops_s: count as f64 / secs,
            ops: self
                .ops
                .iter()
                .map(|(name, stats)| (name.clone(), stats.summary()))
                .collect(),
            bytes_per_s: (self.bytes > 0).then(|| self.bytes as f64 / secs),
        }
    }
}

/// One operation in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The report of one run: the schema of `--json`.
///
/// `bytes_per_s` is an addition to the issue's schema, present only for
/// workloads that measure payload bandwidth (list-storm, kubernetes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub profile: String,
    pub duration_s: f64,
    pub throughput_ops_s: f64,
    pub ops: BTreeMap<String, OpSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_s: Option<f64>,
}

impl Report {
    /// The human-readable table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = self.ops.keys().map(String::len).max().unwrap_or(2).max(9);
        let _ = writeln!(
            out,
            "{}: {:.2} s, {:.1} ops/s{}",
            self.profile,
            self.duration_s,
            self.throughput_ops_s,
            self.bytes_per_s
                .map(|b| format!(", {:.1} MB/s", b / 1e6))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "{:<width$} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (name, op) in &self.ops {
            let _ = writeln!(
                out,
                "{:<width$} {:>10} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name, op.count, op.errors, op.p50_ms, op.p90_ms, op.p99_ms, op.p999_ms, op.max_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = Recorder::new();
        for ms in 1..=100u64 {
            a.record("put", Duration::from_millis(ms));
        }
        let mut b = Recorder::new();
        b.error("put");
        b.record("range", Duration::from_micros(10));
        a.merge(b);
        let r = a.report("put", Duration::from_secs(2));
        let put = &r.ops["put"];
        assert_eq!(put.count, 100);
        assert_eq!(put.errors, 1);
        assert!((put.p50_ms - 50.0).abs() < 0.1, "{}", put.p50_ms);
        assert!((put.p99_ms - 99.0).abs() < 0.1, "{}", put.p99_ms);
        assert!((put.max_ms - 100.0).abs() < 0.1, "{}", put.max_ms);
        assert_eq!(r.ops["range"].count, 1);
        assert!((r.throughput_ops_s - 50.5).abs() < 1e-9);
        assert!(r.bytes_per_s.is_none());
    }

    #[test]
    fn json_has_the_issue_schema() {
        let mut a = Recorder::new();
        a.record("put", Duration::from_millis(2));
        let json = serde_json::to_value(a.report("put", Duration::from_secs(1))).unwrap();
        let top: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(top, ["duration_s", "ops", "profile", "throughput_ops_s"]);
        let op: Vec<_> = json["ops"]["put"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            op,
            ["count", "errors", "max_ms", "p50_ms", "p90_ms", "p999_ms", "p99_ms"]
        );
    }

    #[test]
    fn declared_ops_show_as_zero() {
        let mut a = Recorder::new();
        a.declare("watch-event");
        let r = a.report("watch", Duration::from_secs(1));
        assert_eq!(r.ops["watch-event"].count, 0);
        assert_eq!(r.ops["watch-event"].p99_ms, 0.0);
    }
}
