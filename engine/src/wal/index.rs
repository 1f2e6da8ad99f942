//! The log index: where on disk each retained entry lies, and its term.
//!
//! This is what lets the WAL answer Raft's reads (`entries`, `term`)
//! without holding entry data in memory: 16 bytes per entry for its
//! location plus one pair per run of entries with the same term (terms
//! change rarely), whatever the payload sizes.
//!
//! Recovery builds it from the records it scans and the writer updates it
//! after each durable batch, both through `apply`, so the index always
//! describes exactly the records on disk, in the order they were written.

use std::collections::VecDeque;

use super::record::RecordRef;

/// Where one entry record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Segment id.
    pub segment: u64,
    /// Byte offset of the record in the segment file (segments are below
    /// 4 GiB, checked by `WalOptions::validate`).
    pub offset: u32,
    /// Length of the whole record (header included).
    pub len: u32,
}

/// Locations and terms of the entries `[first, next())`.
/// Terms are stored as given (Raft never lowers them, the WAL does not
/// rely on it).
#[derive(Debug)]
pub(crate) struct LogIndex {
    first: u64,
    locs: VecDeque<Loc>,
    /// `(first index of the run, term)`, ascending by index; the first run starts at
    /// `first` and the runs cover exactly the indexed entries.
    terms: VecDeque<(u64, u64)>,
}

/// A record the index cannot follow: the log on disk is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexError(pub String);

impl LogIndex {
    /// An empty index whose first entry will be `first`.
    pub fn new(first: u64) -> Self {
        LogIndex {
            first,
            locs: VecDeque::new(),
            terms: VecDeque::new(),
        }
    }

    /// First indexed entry (== `next()` when empty).
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Index after the last indexed entry.
    pub fn next(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    /// Follows one record read from (or written to) `segment` at `offset`.
    /// Hard states and segment preambles do not concern the index.
    pub fn apply(
        &mut self,
        record: &RecordRef<'_>,
        segment: u64,
        offset: u64,
        len: usize,
    ) -> Result<(), IndexError> {
        match record {
            RecordRef::Entry(e) => {
                let loc = Loc {
                    segment,
                    offset: u32::try_from(offset)
                        .map_err(|_| IndexError(format!("entry offset {offset} beyond 4 GiB")))?,
                    len: u32::try_from(len)
                        .map_err(|_| IndexError(format!("entry length {len} beyond 4 GiB")))?,
                };
                self.push(e.index, e.term, loc)
            }
            RecordRef::Truncate { from } => {
                self.truncate(*from);
                Ok(())
            }
            RecordRef::Release { below } => {
                self.release(*below);
                Ok(())
            }
            RecordRef::HardState(_) | RecordRef::LogBounds { .. } => Ok(()),
        }
    }

    /// Moves the start of an empty index (a preamble names where the log
    /// begins before any entry is seen).
    pub fn reset(&mut self, first: u64) {
        self.locs.clear();
        self.terms.clear();
        self.first = first;
    }

    fn push(&mut self, index: u64, term: u64, loc: Loc) -> Result<(), IndexError> {
        if index != self.next() {
            return Err(IndexError(format!(
                "entry {index} where {} was expected",
                self.next()
            )));
        }
        if self.terms.back().is_none_or(|&(_, t)| t != term) {
            self.terms.push_back((index, term));
        }
        self.locs.push_back(loc);
        Ok(())
    }

    /// Drops entries `>= from`. Below `first` (recovery: the entries
    /// before the first retained segment's are gone) the index empties and
    /// restarts at `from`, where the next entry goes; whether the log still
    /// has every entry it needs is checked against the bounds after the scan.
    fn truncate(&mut self, from: u64) {
        if from <= self.first {
            self.reset(from);
            return;
        }
        if from >= self.next() {
            return;
        }
        self.locs.truncate((from - self.first) as usize);
        while self.terms.back().is_some_and(|&(start, _)| start >= from) {
            self.terms.pop_back();
        }
    }

    /// Drops entries `< below`; past the end, the index empties and starts
    /// at `below`.
    fn release(&mut self, below: u64) {
        if below <= self.first {
            return;
        }
        if below >= self.next() {
            self.reset(below);
            return;
        }
        self.locs.drain(..(below - self.first) as usize);
        self.first = below;
        while self.terms.len() > 1 && self.terms[1].0 <= below {
            self.terms.pop_front();
        }
        if let Some(run) = self.terms.front_mut() {
            run.0 = below;
        }
        // Release the memory of a log that was long and became short.
        if self.locs.capacity() > 4 * self.locs.len().max(1024) {
            self.locs.shrink_to_fit();
        }
    }

    /// Where entry `index` lies, if indexed.
    pub fn loc(&self, index: u64) -> Option<Loc> {
        let i = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(i).ok()?).copied()
    }

    /// Term of entry `index`, if indexed.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index < self.first || index >= self.next() {
            return None;
        }
        let run = self.terms.partition_point(|&(start, _)| start <= index);
        // `run >= 1` because the first run starts at `first <= index`.
        self.terms.get(run.checked_sub(1)?).map(|&(_, t)| t)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::EntryKind;
    use super::super::record::EntryRef;
    use super::*;

    fn entry(idx: &mut LogIndex, index: u64, term: u64) -> Result<(), IndexError> {
        let r = RecordRef::Entry(EntryRef {
            term,
            index,
            kind: EntryKind::Normal,
            data: &[],
        });
        idx.apply(&r, 1, index * 100, 33)
    }

    #[test]
    fn terms_follow_truncate_and_release() {
        let mut idx = LogIndex::new(1);
        for (i, t) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            entry(&mut idx, i, t).unwrap();
        }
        assert_eq!(idx.term(3), Some(2));
        assert_eq!(idx.term(5), Some(3));
        assert_eq!(idx.term(6), None);
        idx.apply(&RecordRef::Truncate { from: 4 }, 1, 0, 0)
            .unwrap();
        assert_eq!(idx.next(), 4);
        assert_eq!(idx.term(4), None);
        entry(&mut idx, 4, 5).unwrap();
        assert_eq!(idx.term(4), Some(5));
        idx.apply(&RecordRef::Release { below: 3 }, 1, 0, 0)
            .unwrap();
        assert_eq!(idx.first(), 3);
        assert_eq!(idx.term(2), None);
        assert_eq!(idx.term(3), Some(2));
        assert_eq!(idx.loc(3).unwrap().offset, 300);
        idx.apply(&RecordRef::Release { below: 9 }, 1, 0, 0)
            .unwrap();
        assert_eq!((idx.first(), idx.next(), idx.len()), (9, 9, 0));
        entry(&mut idx, 9, 6).unwrap();
        assert_eq!(idx.term(9), Some(6));
    }

    #[test]
    fn gaps_are_refused_and_any_term_order_is_kept() {
        let mut idx = LogIndex::new(1);
        entry(&mut idx, 1, 3).unwrap();
        assert!(entry(&mut idx, 3, 3).is_err());
        assert_eq!(idx.next(), 2);
        // Raft never lowers a term, but the WAL stores what it is given.
        entry(&mut idx, 2, 2).unwrap();
        entry(&mut idx, 3, 2).unwrap();
        assert_eq!(
            [idx.term(1), idx.term(2), idx.term(3)],
            [Some(3), Some(2), Some(2)]
        );
    }
}
