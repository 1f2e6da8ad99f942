//! The leader's view of each follower: how far its log matches, what to send
//! next, and how much is in flight (flow control).

use std::collections::VecDeque;

/// How the leader currently talks to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Unknown match: one append at a time until the follower accepts one.
    Probe,
    /// Known match: stream appends optimistically (pipelining), bounded by
    /// the in-flight window.
    Replicate,
    /// A snapshot is on its way; nothing else is sent until it lands.
    Snapshot,
}

/// Bounded window of append messages sent but not yet acknowledged, by
/// count and by bytes.
#[derive(Debug, Clone)]
pub struct Inflights {
    /// (last index of the message, bytes of its entries), oldest first.
    queue: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Inflights {
        Inflights {
            queue: VecDeque::with_capacity(max_count.min(256)),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn add(&mut self, last_index: u64, bytes: u64) {
        debug_assert!(
            self.queue.back().is_none_or(|&(i, _)| i < last_index),
            "inflights must grow"
        );
        self.queue.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries are all at or below `to`.
    pub fn free_le(&mut self, to: u64) {
        while let Some(&(i, b)) = self.queue.front() {
            if i > to {
                break;
            }
            self.bytes -= b;
            self.queue.pop_front();
        }
    }

    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.queue.pop_front() {
            self.bytes -= b;
        }
    }

    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_count || (self.max_bytes > 0 && self.bytes >= self.max_bytes)
    }

    pub fn count(&self) -> usize {
        self.queue.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    pub state: ProgressState,
    /// Index of the snapshot in flight, in `Snapshot` state.
    pub pending_snapshot: u64,
    /// Heard from within the current election timeout (check-quorum).
    pub recent_active: bool,
    /// In `Probe` state: an append is out, wait for its answer or a heartbeat.
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next: u64, max_inflight: usize, max_inflight_bytes: u64) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(max_inflight, max_inflight_bytes),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
    }

    /// The follower acknowledged up to `n`; returns whether `matched` moved.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next = self.next.max(n + 1);
        updated
    }

    /// Bookkeeping after sending an append whose last entry is `last` and
    /// whose entries weigh `bytes` (0 entries: `last` is the previous index).
    pub fn sent_entries(&mut self, count: usize, last: u64, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// The follower rejected an append at `rejected`; `match_hint` is where
    /// our logs may agree. Returns false if the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        // Probe: only the answer to the latest probe counts.
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_limit_by_count_and_bytes() {
        let mut f = Inflights::new(3, 100);
        f.add(1, 10);
        f.add(2, 10);
        assert!(!f.full());
        f.add(3, 10);
        assert!(f.full(), "count limit");
        f.free_le(2);
        assert_eq!(f.count(), 1);
        assert!(!f.full());
        f.add(4, 95);
        assert!(f.full(), "byte limit");
        f.free_first_one();
        assert_eq!(f.bytes(), 95);
    }

    #[test]
    fn probe_decrements_only_on_latest_rejection() {
        let mut p = Progress::new(10, 4, 0);
        p.probe_sent = true;
        assert!(!p.maybe_decr_to(5, 4), "stale rejection");
        assert!(p.maybe_decr_to(9, 3));
        assert_eq!(p.next, 4);
        assert!(!p.probe_sent);
    }

    #[test]
    fn replicate_falls_back_to_match() {
        let mut p = Progress::new(1, 4, 0);
        p.maybe_update(5);
        p.become_replicate();
        p.sent_entries(3, 8, 30);
        assert_eq!(p.next, 9);
        assert!(!p.maybe_decr_to(5, 0), "already matched");
        assert!(p.maybe_decr_to(7, 0));
        assert_eq!(p.next, 6);
    }

    #[test]
    fn snapshot_state_resumes_after_snapshot() {
        let mut p = Progress::new(1, 4, 0);
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next, 21);
    }
}
