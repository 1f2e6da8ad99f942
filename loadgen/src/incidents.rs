//! Failed requests and violated guarantees seen during a run. Each one is
//! also counted as an error of its operation in the report; this log keeps
//! the first few messages so a person can see what went wrong.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How many messages of each kind are kept and printed.
pub const MAX_KEPT: usize = 20;

/// What kind of incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The server answered with an error or the request failed.
    Error,
    /// The server answered, but the answer breaks an etcd guarantee.
    Violation,
}

/// Shared log of incidents.
#[derive(Debug, Default)]
pub struct Incidents {
    errors: AtomicU64,
    violations: AtomicU64,
    kept: Mutex<Vec<String>>,
}

impl Incidents {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes an incident of `op`.
    pub fn note(&self, kind: Kind, op: &str, message: impl std::fmt::Display) {
        let counter = match kind {
            Kind::Error => &self.errors,
            Kind::Violation => &self.violations,
        };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if n < MAX_KEPT as u64 {
            let label = match kind {
                Kind::Error => "error",
                Kind::Violation => "violation",
            };
            let line = format!("{label}: {op}: {message}");
            if let Ok(mut kept) = self.kept.lock() {
                kept.push(line);
            }
        }
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Violations so far.
    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }

    /// The kept messages, oldest first.
    pub fn kept(&self) -> Vec<String> {
        self.kept.lock().map(|k| k.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_all_keeps_first() {
        let log = Incidents::new();
        for i in 0..(MAX_KEPT + 5) {
            log.note(Kind::Violation, "range", format!("#{i}"));
        }
        log.note(Kind::Error, "put", "boom");
        assert_eq!(log.violations(), MAX_KEPT as u64 + 5);
        assert_eq!(log.errors(), 1);
        let kept = log.kept();
        assert_eq!(kept.len(), MAX_KEPT + 1);
        assert_eq!(kept[0], "violation: range: #0");
        assert_eq!(kept[MAX_KEPT], "error: put: boom");
    }
}
