//! The Raft log as seen by the state machine: the persisted part (behind
//! [`Storage`]) followed by an unstable tail not yet handed out for persisting,
//! plus the commit and apply cursors.
//!
//! Invariants: `applied <= committed <= last_index()`; the unstable tail
//! starts right after the storage's last entry or after an unstable snapshot.

use crate::error::{Error, Result};
use crate::message::{Entry, Snapshot};
use crate::storage::{limit_size, Storage};

/// Entries and possibly a snapshot that Raft has accepted but the
/// application has not yet persisted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unstable {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// Index of `entries[0]`.
    pub offset: u64,
}

impl Unstable {
    fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.metadata.index + 1)
    }

    fn maybe_last_index(&self) -> Option<u64> {
        if !self.entries.is_empty() {
            return Some(self.offset + self.entries.len() as u64 - 1);
        }
        self.snapshot.as_ref().map(|s| s.metadata.index)
    }

    fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let s = self.snapshot.as_ref()?;
            return (s.metadata.index == index).then_some(s.metadata.term);
        }
        let last = self.maybe_last_index()?;
        if index > last {
            return None;
        }
        Some(self.entries[(index - self.offset) as usize].term)
    }

    /// The application persisted entries up to (`index`, `term`).
    fn stable_to(&mut self, index: u64, term: u64) {
        let Some(t) = self.maybe_term(index) else {
            return;
        };
        // A newer append may have replaced that entry meanwhile; then the
        // persisted one is stale and the tail stays unstable.
        if t == term && index >= self.offset {
            let n = (index + 1 - self.offset) as usize;
            self.entries.drain(..n);
            self.offset = index + 1;
        }
    }

    fn stable_snapshot_to(&mut self, index: u64) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.metadata.index == index)
        {
            self.snapshot = None;
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.metadata.index + 1;
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    fn truncate_and_append(&mut self, ents: &[Entry]) {
        let after = ents[0].index;
        let end = self.offset + self.entries.len() as u64;
        if after == end {
            // Plain append.
        } else if after <= self.offset {
            // Replaces the whole unstable tail (and possibly more of storage).
            self.offset = after;
            self.entries.clear();
        } else {
            self.entries.truncate((after - self.offset) as usize);
        }
        self.entries.extend_from_slice(ents);
    }
}

pub(crate) struct RaftLog<S: Storage> {
    pub storage: S,
    pub unstable: Unstable,
    pub committed: u64,
    /// Highest index handed to the application in `committed_entries` and
    /// acknowledged by `advance`.
    pub applied: u64,
    /// Cap on the bytes of committed entries handed out in one `Ready`.
    pub max_apply_bytes: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S, max_apply_bytes: u64) -> Result<RaftLog<S>> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        Ok(RaftLog {
            storage,
            unstable: Unstable {
                snapshot: None,
                entries: Vec::new(),
                offset: last + 1,
            },
            committed: first - 1,
            applied: first - 1,
            max_apply_bytes,
        })
    }

    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.storage.first_index().expect("storage first_index"),
        }
    }

    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.storage.last_index().expect("storage last_index"),
        }
    }

    pub fn term(&self, index: u64) -> Result<u64> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(Error::Compacted {
                index,
                first_index: dummy + 1,
            });
        }
        let last = self.last_index();
        if index > last {
            return Err(Error::Unavailable {
                index,
                last_index: last,
            });
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        self.storage.term(index)
    }

    /// Term at `index`, or 0 when it is outside the log (used where a missing
    /// entry simply means "no match").
    pub fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    /// Term of the last entry. A storage that cannot read it back gives 0
    /// here rather than a panic; such a storage must report its failure to
    /// the application, which then must not act on the node's output (see
    /// `Storage`).
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `term`) is at least as
    /// up-to-date as ours (§5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        let our_term = self.last_term();
        term > our_term || (term == our_term && last_index >= self.last_index())
    }

    /// Follower side of an append: if our log holds (`index`, `log_term`),
    /// merge `ents` after it and advance commit; returns the last index
    /// the leader's message proves we share.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "raft: entry {conflict} conflicts with committed entry (committed {})",
                self.committed
            );
            let from = (conflict - index - 1) as usize;
            self.append(&ents[from..]);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    pub fn append(&mut self, ents: &[Entry]) -> u64 {
        if ents.is_empty() {
            return self.last_index();
        }
        assert!(
            ents[0].index > self.committed,
            "raft: append at {} would overwrite committed {}",
            ents[0].index,
            self.committed
        );
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    /// Index of the first entry in `ents` that is not already in our log
    /// with the same term, or 0 if all are present.
    fn find_conflict(&self, ents: &[Entry]) -> u64 {
        ents.iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map_or(0, |e| e.index)
    }

    /// Fast backtracking: the largest index `<= index` whose term is
    /// `<= term`. Entries above it cannot match a log whose entry at
    /// `index` has `term`, so one probe skips the whole range.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                _ => return i,
            }
        }
    }

    pub fn commit_to(&mut self, to: u64) {
        if to > self.committed {
            assert!(
                to <= self.last_index(),
                "raft: commit {to} beyond last index {}",
                self.last_index()
            );
            self.committed = to;
        }
    }

    /// Leader side: commit `max_index` if a quorum holds it and it is from
    /// our own term (entries of older terms commit only indirectly, §5.4.2).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term_or_zero(max_index) == term {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    pub fn applied_to(&mut self, index: u64) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "raft: applied {index} outside [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    pub fn stable_to(&mut self, index: u64, term: u64) {
        self.unstable.stable_to(index, term);
    }

    pub fn stable_snapshot_to(&mut self, index: u64) {
        self.unstable.stable_snapshot_to(index);
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        self.committed = snapshot.metadata.index;
        self.unstable.restore(snapshot);
    }

    /// Entries in `lo..hi` limited to `max_bytes` (at least one entry).
    pub fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let first = self.first_index();
        if lo < first {
            return Err(Error::Compacted {
                index: lo,
                first_index: first,
            });
        }
        let last = self.last_index();
        if hi > last + 1 {
            return Err(Error::Unavailable {
                index: hi - 1,
                last_index: last,
            });
        }
        let mut out = Vec::new();
        let uoff = self.unstable.offset;
        if lo < uoff {
            out = self.storage.entries(lo, hi.min(uoff), max_bytes)?;
            // Storage stopped early because of the size limit.
            if (out.len() as u64) < hi.min(uoff) - lo {
                return Ok(out);
            }
        }
        if hi > uoff {
            let from = lo.max(uoff);
            let u = &self.unstable.entries[(from - uoff) as usize..(hi - uoff) as usize];
            out.extend_from_slice(u);
        }
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    pub fn entries_from(&self, lo: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let last = self.last_index();
        if lo > last {
            return Ok(Vec::new());
        }
        self.slice(lo, last + 1, max_bytes)
    }

    pub fn has_next_committed_entries(&self) -> bool {
        self.committed > self.applied.max(self.first_index() - 1)
    }

    pub fn next_committed_entries(&self) -> Vec<Entry> {
        let lo = (self.applied + 1).max(self.first_index());
        if self.committed + 1 > lo {
            // A storage read failure hands nothing out (see `last_term`).
            return self
                .slice(lo, self.committed + 1, self.max_apply_bytes)
                .unwrap_or_default();
        }
        Vec::new()
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        if let Some(s) = &self.unstable.snapshot {
            return Ok(s.clone());
        }
        self.storage.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn log_with(terms: &[u64]) -> RaftLog<MemStorage> {
        let mut l = RaftLog::new(MemStorage::new(), u64::MAX).unwrap();
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| ent(i as u64 + 1, t))
            .collect();
        l.append(&ents);
        l
    }

    #[test]
    fn maybe_append_truncates_conflicting_tail() {
        let mut l = log_with(&[1, 1, 2, 2]);
        assert_eq!(l.maybe_append(2, 1, 3, &[ent(3, 3), ent(4, 3)]), Some(4));
        assert_eq!(l.term(3).unwrap(), 3);
        assert_eq!(l.committed, 3);
        assert_eq!(l.maybe_append(4, 2, 4, &[]), None);
    }

    #[test]
    fn maybe_append_ignores_stale_duplicates() {
        let mut l = log_with(&[1, 1, 2]);
        assert_eq!(l.maybe_append(0, 0, 0, &[ent(1, 1)]), Some(1));
        assert_eq!(
            l.last_index(),
            3,
            "a duplicate prefix must not truncate the tail"
        );
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let l = log_with(&[1, 1, 4, 4, 4, 5, 5]);
        assert_eq!(l.find_conflict_by_term(7, 4), 5);
        assert_eq!(l.find_conflict_by_term(7, 3), 2);
        assert_eq!(l.find_conflict_by_term(7, 0), 0);
        assert_eq!(l.find_conflict_by_term(100, 5), 7);
    }

    #[test]
    fn only_current_term_commits_by_count() {
        let mut l = log_with(&[1, 2]);
        assert!(!l.maybe_commit(2, 3));
        assert!(l.maybe_commit(2, 2));
        assert_eq!(l.committed, 2);
    }

    #[test]
    fn slice_spans_storage_and_unstable() {
        let mut s = MemStorage::new();
        s.append(&[ent(1, 1), ent(2, 1)]).unwrap();
        let mut l = RaftLog::new(s, u64::MAX).unwrap();
        l.append(&[ent(3, 2), ent(4, 2)]);
        let got: Vec<u64> = l
            .slice(1, 5, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        l.stable_to(3, 2);
        assert_eq!(l.unstable.offset, 4);
        l.stable_to(4, 1);
        assert_eq!(l.unstable.offset, 4, "a stale ack must not drop the tail");
    }
}
