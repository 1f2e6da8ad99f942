//! The durable log behind Raft: a trait the engine's WAL implements, and
//! [`MemStorage`], an in-memory implementation for tests and simulation.
//!
//! Raft only *reads* storage. The application writes to it while handling a
//! `Ready` (entries, hard state, snapshot) before calling `advance`.

use crate::error::{Error, Result};
use crate::message::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

/// Read access to the persisted log.
///
/// Indexes kept are `first_index()..=last_index()`; `term(first_index() - 1)`
/// must still answer (it is the term of the last compacted entry, i.e. of the
/// snapshot).
///
/// A read that fails for another reason (an I/O error, damage) is not
/// Raft's to handle: the node never panics on it, but what it then outputs
/// may rest on a wrong answer, so the storage must tell the application,
/// which must stop the member rather than persist, send or apply that
/// `Ready`.
pub trait Storage {
    /// Hard state and membership at startup.
    fn initial_state(&self) -> Result<(HardState, ConfState)>;
    /// Entries in `lo..hi`, at most `max_bytes` in total but always at least one.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>>;
    /// Term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: u64) -> Result<u64>;
    fn first_index(&self) -> Result<u64>;
    fn last_index(&self) -> Result<u64>;
    /// The newest snapshot, to send to a follower that is too far behind.
    fn snapshot(&self) -> Result<Snapshot>;
}

/// Keeps a prefix of `entries` whose total size stays within `max_bytes`,
/// never fewer than one entry so replication always makes progress.
pub(crate) fn limit_size(entries: &mut Vec<Entry>, max_bytes: u64) {
    if entries.len() <= 1 {
        return;
    }
    let mut total = entries[0].size();
    let mut keep = 1;
    while keep < entries.len() {
        total += entries[keep].size();
        if total > max_bytes {
            break;
        }
        keep += 1;
    }
    entries.truncate(keep);
}

/// Index and term of the bootstrap snapshot every founding member starts from.
pub const BOOTSTRAP_INDEX: u64 = 1;
pub const BOOTSTRAP_TERM: u64 = 1;

/// An in-memory [`Storage`]. `entries[0]` is a placeholder holding the
/// index and term of the snapshot, so `term(first_index - 1)` always answers.
#[derive(Debug, Clone)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage::new()
    }
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage {
            hard_state: HardState::default(),
            snapshot: Snapshot::default(),
            entries: vec![Entry::default()],
        }
    }

    /// A storage for a founding member of a new cluster of `voters`.
    ///
    /// The initial membership is recorded as a bootstrap snapshot at index
    /// 1, term 1, identical on every founding member. The log proper starts
    /// at index 2, so a member added later (starting from an empty
    /// `MemStorage::new()`) is always sent a snapshot first and learns the
    /// membership it is joining from it.
    pub fn new_with_voters(voters: &[u64]) -> MemStorage {
        let mut s = MemStorage::new();
        s.snapshot.metadata = SnapshotMetadata {
            index: BOOTSTRAP_INDEX,
            term: BOOTSTRAP_TERM,
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..ConfState::default()
            },
        };
        s.entries[0] = Entry {
            index: BOOTSTRAP_INDEX,
            term: BOOTSTRAP_TERM,
            ..Entry::default()
        };
        s.hard_state = HardState {
            term: BOOTSTRAP_TERM,
            vote: 0,
            commit: BOOTSTRAP_INDEX,
        };
        s
    }

    fn offset(&self) -> u64 {
        self.entries[0].index
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Every entry still kept (not compacted).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries[1..]
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let current = self.snapshot.metadata.index;
        if snapshot.metadata.index <= current {
            return Err(Error::SnapshotOutOfDate {
                offered: snapshot.metadata.index,
                current,
            });
        }
        self.entries = vec![Entry {
            term: snapshot.metadata.term,
            index: snapshot.metadata.index,
            ..Entry::default()
        }];
        if self.hard_state.commit < snapshot.metadata.index {
            self.hard_state.commit = snapshot.metadata.index;
        }
        if self.hard_state.term < snapshot.metadata.term {
            self.hard_state.term = snapshot.metadata.term;
        }
        self.snapshot = snapshot;
        Ok(())
    }

    /// Records a snapshot of the applied state at `index` (which must be in
    /// the log and not above the commit index) without dropping entries.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<&Snapshot> {
        if index <= self.snapshot.metadata.index {
            return Err(Error::SnapshotOutOfDate {
                offered: index,
                current: self.snapshot.metadata.index,
            });
        }
        let last = self.last_index_inner();
        if index > last {
            return Err(Error::Unavailable {
                index,
                last_index: last,
            });
        }
        let term = self.entries[(index - self.offset()) as usize].term;
        self.snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(&self.snapshot)
    }

    /// Drops entries up to and including `compact_index` (a snapshot must
    /// already cover them).
    pub fn compact(&mut self, compact_index: u64) -> Result<()> {
        let offset = self.offset();
        if compact_index <= offset {
            return Err(Error::Compacted {
                index: compact_index,
                first_index: offset + 1,
            });
        }
        let last = self.last_index_inner();
        if compact_index > last {
            return Err(Error::Unavailable {
                index: compact_index,
                last_index: last,
            });
        }
        let i = (compact_index - offset) as usize;
        let mut kept = Vec::with_capacity(self.entries.len() - i);
        kept.push(Entry {
            term: self.entries[i].term,
            index: self.entries[i].index,
            ..Entry::default()
        });
        kept.extend_from_slice(&self.entries[i + 1..]);
        self.entries = kept;
        Ok(())
    }

    /// Appends entries, overwriting any conflicting suffix already stored.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        let Some(first_new) = ents.first() else {
            return Ok(());
        };
        let first = self.offset() + 1;
        let last_new = first_new.index + ents.len() as u64 - 1;
        if last_new < first {
            // Entirely below the snapshot: nothing to keep.
            return Ok(());
        }
        // Skip the part already covered by the snapshot.
        let ents = if first > first_new.index {
            &ents[(first - first_new.index) as usize..]
        } else {
            ents
        };
        let at = ents[0].index - self.offset();
        let len = self.entries.len() as u64;
        if at > len {
            return Err(Error::Unavailable {
                index: ents[0].index,
                last_index: self.last_index_inner(),
            });
        }
        self.entries.truncate(at as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    fn last_index_inner(&self) -> u64 {
        self.offset() + self.entries.len() as u64 - 1
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState)> {
        Ok((self.hard_state, self.snapshot.metadata.conf_state.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let offset = self.offset();
        if lo <= offset {
            return Err(Error::Compacted {
                index: lo,
                first_index: offset + 1,
            });
        }
        let last = self.last_index_inner();
        if hi > last + 1 {
            return Err(Error::Unavailable {
                index: hi - 1,
                last_index: last,
            });
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut out = self.entries[(lo - offset) as usize..(hi - offset) as usize].to_vec();
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64> {
        let offset = self.offset();
        if index < offset {
            return Err(Error::Compacted {
                index,
                first_index: offset + 1,
            });
        }
        let last = self.last_index_inner();
        if index > last {
            return Err(Error::Unavailable {
                index,
                last_index: last,
            });
        }
        Ok(self.entries[(index - offset) as usize].term)
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.offset() + 1)
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn storage(entries: &[(u64, u64)]) -> MemStorage {
        let mut s = MemStorage::new();
        s.entries = entries.iter().map(|&(i, t)| ent(i, t)).collect();
        s
    }

    #[test]
    fn term_and_bounds() {
        let s = storage(&[(3, 3), (4, 4), (5, 5)]);
        assert_eq!(
            s.term(2),
            Err(Error::Compacted {
                index: 2,
                first_index: 4
            })
        );
        assert_eq!(s.term(3), Ok(3));
        assert_eq!(s.term(5), Ok(5));
        assert_eq!(
            s.term(6),
            Err(Error::Unavailable {
                index: 6,
                last_index: 5
            })
        );
        assert_eq!(s.first_index(), Ok(4));
        assert_eq!(s.last_index(), Ok(5));
    }

    #[test]
    fn entries_respect_size_but_return_one() {
        let s = storage(&[(3, 3), (4, 4), (5, 5), (6, 6)]);
        assert!(matches!(
            s.entries(3, 5, u64::MAX),
            Err(Error::Compacted { .. })
        ));
        assert_eq!(s.entries(4, 7, u64::MAX).unwrap().len(), 3);
        assert_eq!(s.entries(4, 7, 0).unwrap().len(), 1);
        assert_eq!(s.entries(4, 7, 2 * ENTRY_BYTES).unwrap().len(), 2);
        assert!(s.entries(4, 8, u64::MAX).is_err());
    }

    const ENTRY_BYTES: u64 = crate::message::ENTRY_OVERHEAD_BYTES;

    #[test]
    fn append_overwrites_conflicts_and_ignores_compacted() {
        let mut s = storage(&[(3, 3), (4, 4), (5, 5)]);
        s.append(&[ent(4, 6), ent(5, 6)]).unwrap();
        assert_eq!(s.all_entries(), &[ent(4, 6), ent(5, 6)]);
        s.append(&[ent(2, 3), ent(3, 3), ent(4, 6), ent(5, 6), ent(6, 6)])
            .unwrap();
        assert_eq!(s.last_index(), Ok(6));
        assert!(s.append(&[ent(8, 6)]).is_err());
    }

    #[test]
    fn compact_and_snapshot() {
        let mut s = storage(&[(3, 3), (4, 4), (5, 5)]);
        assert!(s.compact(3).is_err());
        s.create_snapshot(4, ConfState::default(), b"x".to_vec())
            .unwrap();
        s.compact(4).unwrap();
        assert_eq!(s.first_index(), Ok(5));
        assert_eq!(s.term(4), Ok(4));
        assert_eq!(s.snapshot().unwrap().metadata.index, 4);
        assert!(s.apply_snapshot(Snapshot::default()).is_err());
    }
}
