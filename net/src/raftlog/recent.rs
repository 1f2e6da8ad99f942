//! The log's most recent entries, kept in memory.
//!
//! The WAL writes with O_DIRECT, so nothing it wrote is in the page cache:
//! every entry Raft reads back from it (to apply it once committed, to send
//! it to a follower) is a disk read on the executor. Almost every such read
//! is of an entry appended a moment ago, so [`RecentEntries`] keeps the
//! entries persisted last, up to a byte budget, and answers those reads
//! from memory (etcd keeps its whole retained log in memory for the same
//! reason).
//!
//! The rule that keeps it right: it never holds an entry the WAL does not
//! hold at the same index. Before entries are written it forgets every
//! entry they may replace, and it learns them only once they are durable.

use std::collections::VecDeque;

use basalt_raft::Entry;

/// How many payload bytes (plus Raft's per-entry overhead) are kept.
pub(super) const RECENT_BYTES: u64 = 8 << 20;

/// A contiguous run of the log's last entries.
pub(super) struct RecentEntries {
    entries: VecDeque<Entry>,
    bytes: u64,
    budget: u64,
}

impl RecentEntries {
    pub(super) fn new(budget: u64) -> RecentEntries {
        RecentEntries {
            entries: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Forgets every entry at or above `index` (about to be replaced).
    pub(super) fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            let e = self.entries.pop_back().expect("checked");
            self.bytes -= e.size();
        }
    }

    /// Forgets every entry below `index` (compacted away).
    pub(super) fn release_below(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= e.size();
        }
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Learns entries just made durable (consecutive indexes, replacing
    /// any held at or above the first), dropping the oldest beyond the
    /// budget.
    pub(super) fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else {
            return;
        };
        self.truncate_from(first.index);
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            // Not contiguous with what is held (cannot happen after a
            // truncation unless entries were skipped): start over.
            self.clear();
        }
        for e in new {
            self.bytes += e.size();
            self.entries.push_back(e.clone());
        }
        while self.bytes > self.budget && self.entries.len() > 1 {
            let e = self.entries.pop_front().expect("more than one");
            self.bytes -= e.size();
        }
    }

    /// Entries `lo..hi` if every one of them is held, else `None`; cut
    /// to the longest prefix within `max_bytes` (at least one entry), as
    /// `Storage::entries` answers.
    pub(super) fn get(&self, lo: u64, hi: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.index;
        if lo < first || hi == 0 || hi - 1 > last || lo >= hi {
            return None;
        }
        let from = (lo - first) as usize;
        let to = (hi - first) as usize;
        let mut total = 0u64;
        let mut out = Vec::new();
        for e in self.entries.range(from..to) {
            total = total.saturating_add(e.size());
            if total > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_raft::ENTRY_OVERHEAD_BYTES;

    fn ent(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; len],
            ..Entry::default()
        }
    }

    fn indexes(v: &[Entry]) -> Vec<(u64, u64)> {
        v.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn answers_only_runs_it_holds_whole() {
        let mut r = RecentEntries::new(1 << 20);
        assert!(r.get(1, 2, u64::MAX).is_none());
        r.append(&[ent(5, 1, 10), ent(6, 1, 10), ent(7, 1, 10)]);
        assert_eq!(
            indexes(&r.get(5, 8, u64::MAX).unwrap()),
            [(5, 1), (6, 1), (7, 1)]
        );
        assert_eq!(indexes(&r.get(6, 7, u64::MAX).unwrap()), [(6, 1)]);
        assert!(r.get(4, 6, u64::MAX).is_none(), "4 is not held");
        assert!(r.get(6, 9, u64::MAX).is_none(), "8 is not held");
        assert!(r.get(6, 6, u64::MAX).is_none());
        let per = 10 + ENTRY_OVERHEAD_BYTES;
        assert_eq!(indexes(&r.get(5, 8, 2 * per).unwrap()), [(5, 1), (6, 1)]);
        assert_eq!(indexes(&r.get(5, 8, 0).unwrap()), [(5, 1)], "at least one");
    }

    #[test]
    fn a_conflicting_append_replaces_the_suffix() {
        let mut r = RecentEntries::new(1 << 20);
        r.append(&[ent(1, 1, 1), ent(2, 1, 1), ent(3, 1, 1), ent(4, 1, 1)]);
        r.append(&[ent(3, 2, 1)]);
        assert_eq!(
            indexes(&r.get(1, 4, u64::MAX).unwrap()),
            [(1, 1), (2, 1), (3, 2)]
        );
        assert!(
            r.get(4, 5, u64::MAX).is_none(),
            "the replaced entry 4 is gone"
        );
        r.truncate_from(2);
        assert_eq!(indexes(&r.get(1, 2, u64::MAX).unwrap()), [(1, 1)]);
        assert!(r.get(2, 3, u64::MAX).is_none());
    }

    #[test]
    fn a_gap_starts_over() {
        let mut r = RecentEntries::new(1 << 20);
        r.append(&[ent(1, 1, 1), ent(2, 1, 1)]);
        r.append(&[ent(9, 1, 1)]);
        assert!(r.get(1, 2, u64::MAX).is_none());
        assert_eq!(indexes(&r.get(9, 10, u64::MAX).unwrap()), [(9, 1)]);
    }

    #[test]
    fn the_budget_drops_the_oldest_and_release_drops_below() {
        let per = 100 + ENTRY_OVERHEAD_BYTES;
        let mut r = RecentEntries::new(3 * per);
        r.append(&(1..=5).map(|i| ent(i, 1, 100)).collect::<Vec<_>>());
        assert!(r.get(2, 3, u64::MAX).is_none());
        assert_eq!(
            indexes(&r.get(3, 6, u64::MAX).unwrap()),
            [(3, 1), (4, 1), (5, 1)]
        );
        assert_eq!(r.bytes, 3 * per);
        r.release_below(5);
        assert!(r.get(4, 5, u64::MAX).is_none());
        assert_eq!(indexes(&r.get(5, 6, u64::MAX).unwrap()), [(5, 1)]);
        assert_eq!(r.bytes, per);
        // One entry above the budget is still held (the last one).
        let mut r = RecentEntries::new(10);
        r.append(&[ent(1, 1, 100)]);
        assert!(r.get(1, 2, u64::MAX).is_some());
    }
}
