//! When the sequencer defragments on its own.
//!
//! Free space in the store files comes from two sources that look alike in
//! [`Store::wants_defragment`]'s share of free pages but need opposite
//! answers:
//! - **churn**: under a steady write load every checkpoint rewrites pages
//!   copy-on-write, and the pages it frees become reusable only a few
//!   checkpoints later, so up to half the file is free at any time. The next
//!   checkpoints reuse it; a copy would pack the file, stall writes for its
//!   switch, and the churn would open the same gap again within seconds
//!   (measured: five runs in ten seconds per member under `put` with 100
//!   clients, each 100–700 ms of copying on a 2-core machine).
//! - **a large delete** followed by a compaction of the history: the freed
//!   pages stay free because nothing writes into them, and only a copy gives
//!   the space back.
//!
//! So a run waits for the store to be quiet (fewer than
//! [`QUIET_ENTRIES_PER_SECOND`] applied for [`QUIET_CHECKS`] checks in a
//! row), when the free space that is left is the lasting kind; a store that
//! is never quiet still gets one run every [`BUSY_INTERVAL`]. After a run,
//! the next also waits until as much space is free again as the run left
//! in use, so copying stays proportional to the garbage written.
//!
//! [`Store::wants_defragment`]: basalt_engine::mvcc::Store::wants_defragment

use std::time::{Duration, Instant};

/// Applied entries per second below which the store counts as quiet.
pub const QUIET_ENTRIES_PER_SECOND: u64 = 1_000;
/// Consecutive quiet checks before a run: the first quiet check may still
/// see pages the last writes freed and the next checkpoints will reuse.
pub const QUIET_CHECKS: u32 = 2;
/// A store that is never quiet is still defragmented this often when it
/// wants to be.
pub const BUSY_INTERVAL: Duration = Duration::from_secs(300);

/// What the sequencer knows at one check (every checkpoint interval).
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub now: Instant,
    /// The store's applied index.
    pub applied: u64,
    /// The store's file size and the part of it in use.
    pub size: u64,
    pub in_use: u64,
    /// [`basalt_engine::mvcc::Store::wants_defragment`].
    pub wanted: bool,
}

/// The decision's memory between checks.
#[derive(Debug)]
pub struct AutoDefrag {
    /// When the previous run ended (or the sequencer started) and the size
    /// it left (0 before any run).
    last_run: (Instant, u64),
    previous: Option<(Instant, u64)>,
    quiet_checks: u32,
}

impl AutoDefrag {
    pub fn new(now: Instant) -> Self {
        AutoDefrag {
            last_run: (now, 0),
            previous: None,
            quiet_checks: 0,
        }
    }

    /// Whether to defragment now.
    pub fn due(&mut self, c: Check) -> bool {
        let quiet = self.previous.is_some_and(|(at, applied)| {
            let secs = c.now.saturating_duration_since(at).as_secs_f64();
            let entries = c.applied.saturating_sub(applied) as f64;
            secs > 0.0 && entries < QUIET_ENTRIES_PER_SECOND as f64 * secs
        });
        self.previous = Some((c.now, c.applied));
        self.quiet_checks = if quiet { self.quiet_checks + 1 } else { 0 };
        if !c.wanted {
            return false;
        }
        let (at, left) = self.last_run;
        let enough_garbage = c.size.saturating_sub(c.in_use) >= left;
        let settled = self.quiet_checks >= QUIET_CHECKS && enough_garbage;
        settled || c.now.saturating_duration_since(at) >= BUSY_INTERVAL
    }

    /// A run ended at `now`, leaving files of `size` bytes.
    pub fn ran(&mut self, now: Instant, size: u64) {
        self.last_run = (now, size);
        self.quiet_checks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn check(now: Instant, applied: u64, size: u64, in_use: u64) -> Check {
        Check {
            now,
            applied,
            size,
            in_use,
            wanted: (size - in_use) * 3 >= size,
        }
    }

    /// The put-100 pattern: half the file free at every check while
    /// 12,000 entries a second apply. Fails if churn alone starts runs.
    #[test]
    fn churn_waits_for_the_busy_interval() {
        let t0 = Instant::now();
        let mut a = AutoDefrag::new(t0);
        let mut applied = 0;
        for s in 1..300 {
            applied += 12_000;
            let c = check(t0 + SEC * s, applied, 100 << 20, 50 << 20);
            assert!(!a.due(c), "ran at {s} s under load");
        }
        applied += 12_000;
        assert!(a.due(check(t0 + SEC * 300, applied, 100 << 20, 50 << 20)));
        a.ran(t0 + SEC * 301, 55 << 20);
        for s in 302..600 {
            applied += 12_000;
            assert!(!a.due(check(t0 + SEC * s, applied, 100 << 20, 50 << 20)));
        }
    }

    /// A large delete, then nothing: the second quiet check runs. Fails if
    /// quiet is misjudged or the wait is longer.
    #[test]
    fn a_quiet_store_with_lasting_free_space_runs_after_two_checks() {
        let t0 = Instant::now();
        let mut a = AutoDefrag::new(t0);
        assert!(
            !a.due(check(t0, 50_000, 100 << 20, 10 << 20)),
            "no rate yet"
        );
        assert!(!a.due(check(t0 + SEC, 50_100, 100 << 20, 10 << 20)));
        assert!(a.due(check(t0 + SEC * 2, 50_100, 100 << 20, 10 << 20)));
        a.ran(t0 + SEC * 3, 12 << 20);
        // Packed: nothing wanted. Then slow writes free space again, but
        // less than the run left: not yet.
        assert!(!a.due(check(t0 + SEC * 4, 50_100, 12 << 20, 11 << 20)));
        assert!(!a.due(check(t0 + SEC * 5, 50_200, 30 << 20, 19 << 20)));
        assert!(!a.due(check(t0 + SEC * 6, 50_300, 30 << 20, 19 << 20)));
        assert!(a.due(check(t0 + SEC * 7, 50_400, 40 << 20, 20 << 20)));
    }

    /// Quiet must hold at consecutive checks: a burst in between starts the
    /// count again.
    #[test]
    fn a_burst_restarts_the_quiet_count() {
        let t0 = Instant::now();
        let mut a = AutoDefrag::new(t0);
        a.due(check(t0, 0, 100 << 20, 10 << 20));
        assert!(!a.due(check(t0 + SEC, 10, 100 << 20, 10 << 20)));
        assert!(!a.due(check(t0 + SEC * 2, 5_000, 100 << 20, 10 << 20)));
        assert!(!a.due(check(t0 + SEC * 3, 5_010, 100 << 20, 10 << 20)));
        assert!(a.due(check(t0 + SEC * 4, 5_020, 100 << 20, 10 << 20)));
    }

    /// The rate is per second, whatever the checkpoint interval: 100
    /// entries in 50 ms is 2,000 a second, not quiet.
    #[test]
    fn quiet_is_a_rate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(50);
        let mut a = AutoDefrag::new(t0);
        a.due(check(t0, 0, 100 << 20, 10 << 20));
        assert!(!a.due(check(t0 + ms, 100, 100 << 20, 10 << 20)));
        assert!(!a.due(check(t0 + ms * 2, 200, 100 << 20, 10 << 20)));
        assert!(!a.due(check(t0 + ms * 3, 210, 100 << 20, 10 << 20)));
        assert!(a.due(check(t0 + ms * 4, 220, 100 << 20, 10 << 20)));
    }
}
