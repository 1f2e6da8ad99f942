//! The log's logical state and the rules that change it.
//!
//! The same rules run in three places that must agree: when an operation is
//! accepted (`Wal::append` & co.), when the writer starts a segment (the
//! preamble records this state), and when recovery replays the records.

use super::entry::HardState;

/// First retained index, next index to append, and the hard state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Lowest index still in the log (== `next` when the log is empty).
    pub first: u64,
    /// Index the next appended entry must have.
    pub next: u64,
    /// Latest saved hard state.
    pub hard_state: HardState,
}

impl Bounds {
    /// A brand-new log: the first entry will have index 1.
    pub fn fresh() -> Self {
        Bounds {
            first: 1,
            next: 1,
            hard_state: HardState::default(),
        }
    }

    /// Entries below `below` are no longer needed; releasing past the end
    /// (installing a snapshot) empties the log and moves its start.
    pub fn release(&mut self, below: u64) {
        if below > self.first {
            self.first = below;
            if below > self.next {
                self.next = below;
            }
        }
    }

    /// Drops entries `>= from`; callers check `first <= from < next`.
    pub fn truncate(&mut self, from: u64) {
        debug_assert!(self.first <= from && from < self.next);
        self.next = from;
    }
}
