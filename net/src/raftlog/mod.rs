//! Raft's log on the engine's WAL: [`WalStorage`] answers
//! [`basalt_raft::Storage`] from a [`Wal`] (the WAL *is* the Raft log; there
//! is no second copy) and persists what a `Ready` hands over.
//!
//! ```no_run
//! use std::rc::Rc;
//! use basalt_engine::wal::{Wal, WalOptions};
//! use basalt_net::raftlog::WalStorage;
//! use basalt_raft::{Config, RawNode};
//!
//! glommio::LocalExecutorBuilder::default().make().unwrap().run(async {
//!     let opts = WalOptions { materialize_recovered: false, ..WalOptions::default() };
//!     let (wal, _) = Wal::open("/var/lib/basalt/wal".as_ref(), opts).await.unwrap();
//!     // A founding member of a one-node cluster; a restart uses `WalStorage::new`.
//!     let storage = WalStorage::bootstrap(Rc::new(wal), &[1]).await.unwrap();
//!     let mut node = RawNode::new(Config::new(1), storage).unwrap();
//!     node.campaign();
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // Durable before any message goes out.
//!         node.storage().persist(rd.entries, rd.hard_state).await.unwrap();
//!         // ... send rd.messages, apply rd.committed_entries ...
//!         node.advance().unwrap();
//!     }
//! });
//! ```
//!
//! # What Raft sees
//! - `first_index() = snapshot.index + 1`, `term(snapshot.index) =
//!   snapshot.term`: the snapshot is the state the store has applied and
//!   checkpointed. The WAL may retain entries at or below it (they are
//!   reported as compacted); it must hold every entry above it.
//! - `last_index()` is the WAL's last *readable* (durable) entry, so every
//!   index Raft may ask about can be read back; Raft never asks about
//!   entries it has not seen persisted (`persist` resolves before
//!   `advance`).
//! - `snapshot()` is the snapshot's metadata with **empty data**: the state
//!   is the store's checkpoint at `metadata.index`, too large for a Raft
//!   message. The peer transport must stream that checkpoint alongside a
//!   `Snapshot` message (etcd does the same with its backend file); until
//!   it does, it must not deliver the message and must call
//!   `RawNode::report_snapshot(to, false)`.
//!
//! # Durability rules kept here
//! - `persist` writes a `Ready`'s entries (replacing a conflicting suffix)
//!   and hard state in one WAL batch: one write and one fdatasync, both or
//!   neither on disk (split, safely, only when they exceed a segment).
//! - `compact(index)` keeps entry `index` itself in the WAL, so the term of
//!   the snapshot point can still be read after a restart
//!   ([`WalStorage::from_checkpoint`]).

mod convert;
mod recent;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use basalt_engine::wal::{self, Wal};
use basalt_raft::{ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMetadata, Storage};

use crate::error::Error;
use convert::{
    entry_from_wal, entry_to_wal, error_to_raft, hard_state_from_wal, hard_state_to_wal,
};
use recent::{RecentEntries, RECENT_BYTES};

/// [`basalt_raft::Storage`] over the WAL. Every method takes `&self`, so
/// the application can persist through `RawNode::storage()` while the node
/// is borrowed elsewhere; clone the `Rc<Wal>` to share it.
pub struct WalStorage {
    wal: Rc<Wal>,
    /// The last hard state persisted (or recovered): what a restarted
    /// `RawNode` starts from.
    hard_state: Cell<HardState>,
    /// What the log is compacted up to; see the module documentation.
    snapshot: RefCell<SnapshotMetadata>,
    /// The first read that failed (I/O, damage): the member must stop.
    failure: RefCell<Option<String>>,
    /// The entries persisted last, so reading them back needs no disk read.
    recent: RefCell<RecentEntries>,
}

fn wal_error(what: &str, e: wal::WalError) -> Error {
    Error::Wal(format!("{what}: {e}"))
}

impl WalStorage {
    /// Raft storage over an open WAL, with the hard state it recovered
    /// (`Recovered::hard_state`) and the snapshot the store's checkpoint
    /// stands for. Fails if the WAL lacks entries just above the snapshot
    /// or disagrees with its term.
    pub fn new(
        wal: Rc<Wal>,
        hard_state: wal::HardState,
        snapshot: SnapshotMetadata,
    ) -> Result<WalStorage, Error> {
        let first = wal.first_index();
        if first > snapshot.index + 1 {
            return Err(Error::Wal(format!(
                "the wal starts at index {first}, after the snapshot at {}: entries {}..{first} \
                 are missing",
                snapshot.index,
                snapshot.index + 1
            )));
        }
        if snapshot.index >= first && snapshot.index <= wal.last_readable_index() {
            let term = wal
                .term(snapshot.index)
                .map_err(|e| wal_error("reading the snapshot's term", e))?;
            if term != snapshot.term {
                return Err(Error::Wal(format!(
                    "the snapshot at index {} has term {}, the wal's entry has term {term}",
                    snapshot.index, snapshot.term
                )));
            }
        }
        Ok(WalStorage {
            wal,
            hard_state: Cell::new(hard_state_from_wal(hard_state)),
            snapshot: RefCell::new(snapshot),
            failure: RefCell::new(None),
            recent: RefCell::new(RecentEntries::new(RECENT_BYTES)),
        })
    }

    /// Like [`WalStorage::new`] when the checkpoint knows only its index:
    /// the term is read from the WAL, which must still hold that entry (as
    /// [`WalStorage::compact`] leaves it). Index 0 is the empty snapshot of
    /// a member that has never applied anything.
    pub fn from_checkpoint(
        wal: Rc<Wal>,
        hard_state: wal::HardState,
        index: u64,
        conf_state: ConfState,
    ) -> Result<WalStorage, Error> {
        let term = if index == 0 {
            0
        } else {
            wal.term(index).map_err(|e| {
                wal_error(
                    "the wal no longer holds the checkpoint's entry, so its term is unknown",
                    e,
                )
            })?
        };
        let snapshot = SnapshotMetadata {
            index,
            term,
            conf_state,
        };
        WalStorage::new(wal, hard_state, snapshot)
    }

    /// Storage for a founding member of a new cluster of `voters`, on an
    /// empty WAL: the same bootstrap snapshot as
    /// `MemStorage::new_with_voters` (index and term
    /// [`basalt_raft::BOOTSTRAP_INDEX`]/[`basalt_raft::BOOTSTRAP_TERM`]
    /// carrying the membership), made durable in the WAL as its start and
    /// hard state, so a restart finds the same log.
    pub async fn bootstrap(wal: Rc<Wal>, voters: &[NodeId]) -> Result<WalStorage, Error> {
        if wal.last_index() != 0 || wal.first_index() != 1 {
            return Err(Error::Wal(format!(
                "bootstrap needs an empty wal; it holds [{}, {}]",
                wal.first_index(),
                wal.last_index()
            )));
        }
        let index = basalt_raft::BOOTSTRAP_INDEX;
        let hs = wal::HardState {
            term: basalt_raft::BOOTSTRAP_TERM,
            vote: 0,
            commit: index,
        };
        wal.save_hard_state(hs)
            .await
            .map_err(|e| wal_error("saving the bootstrap hard state", e))?;
        wal.release_below(index + 1)
            .await
            .map_err(|e| wal_error("moving the log start past the bootstrap snapshot", e))?;
        let snapshot = SnapshotMetadata {
            index,
            term: basalt_raft::BOOTSTRAP_TERM,
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..ConfState::default()
            },
        };
        WalStorage::new(wal, hs, snapshot)
    }

    /// The WAL underneath (shared with the rest of the sequencer).
    pub fn wal(&self) -> &Rc<Wal> {
        &self.wal
    }

    /// The first read of the log that failed for a reason Raft cannot
    /// handle (an I/O error or damage, naming the segment file): nothing
    /// the node produced since may be acted on.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Maps a WAL read error for Raft, remembering real failures.
    fn read_error(&self, e: wal::WalError, index: u64) -> basalt_raft::Error {
        if !matches!(
            e,
            wal::WalError::Released { .. } | wal::WalError::Unavailable { .. }
        ) {
            self.failure
                .borrow_mut()
                .get_or_insert_with(|| format!("reading entry {index} from the wal: {e}"));
        }
        error_to_raft(e, index)
    }

    /// The last hard state persisted.
    pub fn hard_state(&self) -> HardState {
        self.hard_state.get()
    }

    /// What the log is compacted up to.
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.snapshot.borrow().clone()
    }

    /// Persists a `Ready`'s entries and hard state, dropping any retained
    /// suffix the entries replace; resolves when durable (then call
    /// `advance`). Entries at or below the snapshot are refused.
    ///
    /// One WAL batch (one write, one fdatasync, all or nothing) holds the
    /// truncation, the entries and the hard state, unless the entries do
    /// not fit in one segment (`Wal::max_append_bytes`): they are then
    /// split, the truncation going with the first part and the hard state
    /// with the last. A crash in between leaves the old log's prefix plus a
    /// prefix of the new entries and the old hard state: a log this member
    /// could have had, so Raft's safety does not depend on the split.
    pub async fn persist(
        &self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Result<(), Error> {
        if let Some(first) = entries.first() {
            let snap = self.snapshot.borrow().index;
            if first.index <= snap {
                return Err(Error::Wal(format!(
                    "entry {} is at or below the snapshot at {snap}",
                    first.index
                )));
            }
        }
        // Whatever these entries replace is forgotten before the WAL
        // changes, and they are learned once durable.
        if let Some(first) = entries.first() {
            self.recent.borrow_mut().truncate_from(first.index);
        }
        let durable = entries.clone();
        let limit = self.wal.max_append_bytes();
        let mut rest: Vec<wal::Entry> = entries.into_iter().map(entry_to_wal).collect();
        loop {
            // The longest prefix that fits (at least one entry: a single
            // entry above the limit is refused by the WAL).
            let mut total = 0u64;
            let fit = rest
                .iter()
                .position(|e| {
                    total += Wal::entry_bytes(e.data.len());
                    total > limit
                })
                .unwrap_or(rest.len())
                .max(1)
                .min(rest.len());
            let tail = rest.split_off(fit);
            let hs = if tail.is_empty() {
                hard_state.map(hard_state_to_wal)
            } else {
                None
            };
            self.wal
                .append_replacing(&rest, hs)
                .await
                .map_err(|e| wal_error("persisting a ready", e))?;
            if tail.is_empty() {
                break;
            }
            rest = tail;
        }
        self.recent.borrow_mut().append(&durable);
        if let Some(hs) = hard_state {
            self.hard_state.set(hs);
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader (after the store has
    /// installed its data): the log restarts after it. The hard state is
    /// made durable first (its commit raised to the snapshot), then the
    /// WAL is emptied up to the snapshot, so a crash in between leaves a
    /// log a restart accepts.
    pub async fn apply_snapshot(&self, metadata: SnapshotMetadata) -> Result<(), Error> {
        let current = self.snapshot.borrow().index;
        if metadata.index <= current {
            return Err(Error::Wal(format!(
                "snapshot at index {} is not newer than the current one at {current}",
                metadata.index
            )));
        }
        let mut hs = self.hard_state.get();
        hs.commit = hs.commit.max(metadata.index);
        hs.term = hs.term.max(metadata.term);
        self.wal
            .save_hard_state(hard_state_to_wal(hs))
            .await
            .map_err(|e| wal_error("saving the hard state of a snapshot", e))?;
        self.hard_state.set(hs);
        self.recent.borrow_mut().clear();
        self.wal
            .release_below(metadata.index + 1)
            .await
            .map_err(|e| wal_error("releasing the log below a snapshot", e))?;
        *self.snapshot.borrow_mut() = metadata;
        Ok(())
    }

    /// Compacts the log up to `index` (applied and checkpointed by the
    /// store, whose membership then is `conf_state`): Raft no longer reads
    /// entries up to it, and the WAL drops those below it (keeping entry
    /// `index`, whose term a restart needs).
    pub async fn compact(&self, index: u64, conf_state: ConfState) -> Result<(), Error> {
        let current = self.snapshot.borrow().index;
        if index <= current {
            return Err(Error::Wal(format!(
                "compaction to {index} is not past the current snapshot at {current}"
            )));
        }
        let committed = self.hard_state.get().commit;
        if index > committed {
            return Err(Error::Wal(format!(
                "compaction to {index} is past the commit index {committed}"
            )));
        }
        let term = self
            .wal
            .term(index)
            .map_err(|e| wal_error("reading the term of the compaction point", e))?;
        *self.snapshot.borrow_mut() = SnapshotMetadata {
            index,
            term,
            conf_state,
        };
        self.recent.borrow_mut().release_below(index + 1);
        self.wal
            .release_below(index)
            .await
            .map_err(|e| wal_error("releasing the compacted log", e))
    }

    fn last(&self, snap: &SnapshotMetadata) -> u64 {
        self.wal.last_readable_index().max(snap.index)
    }
}

/// Keeps the longest prefix whose Raft size stays within `max_bytes`, never
/// fewer than one entry (Raft's own rule for `Storage::entries`).
fn limit_size(entries: &mut Vec<Entry>, max_bytes: u64) {
    let mut total = 0u64;
    let keep = entries
        .iter()
        .position(|e| {
            total = total.saturating_add(e.size());
            total > max_bytes
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
}

impl Storage for WalStorage {
    fn initial_state(&self) -> basalt_raft::Result<(HardState, ConfState)> {
        Ok((
            self.hard_state.get(),
            self.snapshot.borrow().conf_state.clone(),
        ))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> basalt_raft::Result<Vec<Entry>> {
        let snap = self.snapshot.borrow();
        if lo <= snap.index {
            return Err(basalt_raft::Error::Compacted {
                index: lo,
                first_index: snap.index + 1,
            });
        }
        let last = self.last(&snap);
        if hi > last + 1 {
            return Err(basalt_raft::Error::Unavailable {
                index: hi - 1,
                last_index: last,
            });
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        if let Some(out) = self.recent.borrow().get(lo, hi, max_bytes) {
            return Ok(out);
        }
        // The WAL's budget counts payload bytes, Raft's adds a fixed cost
        // per entry: the WAL's answer holds Raft's, which is cut from it.
        let read = self
            .wal
            .entries(lo, hi, max_bytes)
            .map_err(|e| self.read_error(e, lo))?;
        let mut out: Vec<Entry> = read.into_iter().map(entry_from_wal).collect();
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    fn term(&self, index: u64) -> basalt_raft::Result<u64> {
        let snap = self.snapshot.borrow();
        if index == snap.index {
            return Ok(snap.term);
        }
        if index < snap.index {
            return Err(basalt_raft::Error::Compacted {
                index,
                first_index: snap.index + 1,
            });
        }
        let last = self.last(&snap);
        if index > last {
            return Err(basalt_raft::Error::Unavailable {
                index,
                last_index: last,
            });
        }
        self.wal.term(index).map_err(|e| self.read_error(e, index))
    }

    fn first_index(&self) -> basalt_raft::Result<u64> {
        Ok(self.snapshot.borrow().index + 1)
    }

    fn last_index(&self) -> basalt_raft::Result<u64> {
        Ok(self.last(&self.snapshot.borrow()))
    }

    fn snapshot(&self) -> basalt_raft::Result<Snapshot> {
        Ok(Snapshot {
            metadata: self.snapshot.borrow().clone(),
            data: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, len: usize) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![0; len],
            ..Entry::default()
        }
    }

    #[test]
    fn limit_size_keeps_a_prefix_and_at_least_one() {
        let overhead = basalt_raft::ENTRY_OVERHEAD_BYTES;
        let mut v = vec![ent(1, 10), ent(2, 10), ent(3, 10)];
        limit_size(&mut v, 0);
        assert_eq!(v.len(), 1);
        let mut v = vec![ent(1, 10), ent(2, 10), ent(3, 10)];
        limit_size(&mut v, 2 * (10 + overhead));
        assert_eq!(v.len(), 2);
        let mut v = vec![ent(1, 10), ent(2, 10), ent(3, 10)];
        limit_size(&mut v, u64::MAX);
        assert_eq!(v.len(), 3);
        let mut v: Vec<Entry> = Vec::new();
        limit_size(&mut v, 0);
        assert!(v.is_empty());
    }
}
