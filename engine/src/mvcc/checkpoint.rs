//! Checkpoints: making applied entries durable in the trees, with the
//! expensive part (page encoding, writes, fsync) off the caller's thread.
//!
//! [`Store::start_checkpoint`] freezes the pending writes and hands them,
//! with the tree writers, to a [`CheckpointTask`] (`Send + 'static`). The
//! task runs anywhere; meanwhile the store keeps applying and answering
//! reads from scratch → pending → frozen → the tree view pinned before the
//! task. [`Store::finish_checkpoint`] gives the trees back and, if the
//! commit succeeded, moves reads to the new commit and advances
//! `applied_index()`. [`Store::checkpoint`] does all three inline.
//!
//! ```
//! use basalt_engine::mvcc::{Op, PutRequest, RangeRequest, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
//! let put = |k: &str| Op::Put(PutRequest { key: k.into(), value: b"v".to_vec(), ..Default::default() });
//! store.apply(1, &put("a")).unwrap();
//! let task = store.start_checkpoint().unwrap().expect("a write is pending");
//! let worker = std::thread::spawn(move || task.run());
//! store.apply(2, &put("b")).unwrap(); // applies and reads go on meanwhile
//! assert_eq!(store.range(&RangeRequest { key: b"a".to_vec(), ..Default::default() }).unwrap().count, 1);
//! store.finish_checkpoint(worker.join().unwrap()).unwrap();
//! assert_eq!(store.applied_index(), 1); // entry 2 waits for the next one
//! ```
//!
//! Rules: one task at a time (starting another, or defragmenting, fails
//! with [`MvccError::CheckpointInFlight`]). A task must be run and its
//! [`CheckpointDone`] given back: a task dropped unfinished keeps the trees,
//! so the store can no longer checkpoint until reopened (nothing applied is
//! lost: the WAL still has it). A failed commit is reported by
//! `finish_checkpoint`; the frozen writes become pending again and the next
//! checkpoint retries them — unless the failure came after some shard tree
//! committed and before the index tree did: then checkpoints that would
//! write that shard again fail with [`MvccError::CheckpointTorn`] until
//! the store is reopened (which rolls the shard back to match the index;
//! the WAL replays the rest).

use crate::btree::Tree;

use super::backend::{commit_shard, Backend, BackendView};
use super::error::MvccError;
use super::layers::{staging_writes, LivePresence, Staging};
use super::store::Store;

/// The commit half of a checkpoint: owns the tree writers and the frozen
/// writes. Run it on any thread, then pass the result to
/// [`Store::finish_checkpoint`].
pub struct CheckpointTask {
    backend: Backend,
    writes: Staging,
    user_meta: u64,
    fail_index_commit: bool,
    /// What the previous checkpoint left, freed here, off the store's thread.
    retired: Option<Retired>,
}

/// What a finished checkpoint leaves behind: held only to be dropped by
/// the next task, on its thread.
pub(super) struct Retired {
    _view: BackendView,
    _overlay: Staging,
    _presence: LivePresence,
}

/// A finished [`CheckpointTask`]: the trees, and whether the commit worked.
pub struct CheckpointDone {
    backend: Backend,
    user_meta: u64,
    result: Result<(), MvccError>,
}

/// One shard tree's part of a split checkpoint ([`CheckpointTask::split`]):
/// commits the frozen writes routed to that shard. `Send`; the server runs
/// it on the executor that owns the shard.
pub struct ShardCommit {
    shard: usize,
    shards: usize,
    tree: Tree,
    writes: Staging,
    index_meta: u64,
    user_meta: u64,
}

/// A run [`ShardCommit`]: its tree, and whether the commit worked.
pub struct ShardCommitted {
    shard: usize,
    tree: Tree,
    result: Result<(), MvccError>,
}

/// The rest of a split checkpoint: the index tree's commit, made once every
/// shard's commit is back ([`IndexCommit::finish`]).
pub struct IndexCommit {
    backend: Backend,
    shards: usize,
    writes: Staging,
    user_meta: u64,
    fail_index_commit: bool,
    retired: Option<Retired>,
}

impl CheckpointTask {
    /// Commits the frozen writes to every tree that has some, the index
    /// tree last, recording the applied index: the parts of
    /// [`CheckpointTask::split`], one after another on this thread. Never
    /// fails itself: the outcome travels in the [`CheckpointDone`] (with the
    /// trees, so the store stays usable either way).
    pub fn run(self) -> CheckpointDone {
        let (shards, index) = self.split();
        // The parts come back whole and in shard order.
        index.complete(shards.into_iter().map(ShardCommit::run).collect())
    }

    /// Splits the checkpoint into one commit per shard tree, which may run
    /// at the same time on different threads, and the index tree's commit,
    /// which must come after all of them (`finish`).
    pub fn split(mut self) -> (Vec<ShardCommit>, IndexCommit) {
        let trees = self.backend.take_shards();
        let shards = trees.len();
        let index_meta = self.backend.user_meta();
        let parts = trees
            .into_iter()
            .enumerate()
            .map(|(shard, tree)| ShardCommit {
                shard,
                shards,
                tree,
                writes: self.writes.clone(),
                index_meta,
                user_meta: self.user_meta,
            })
            .collect();
        let index = IndexCommit {
            backend: self.backend,
            shards,
            writes: self.writes,
            user_meta: self.user_meta,
            fail_index_commit: self.fail_index_commit,
            retired: self.retired.take(),
        };
        (parts, index)
    }

    /// The log index this checkpoint records.
    pub fn index(&self) -> u64 {
        self.user_meta
    }

    /// Number of tree writes frozen into this checkpoint.
    pub fn writes(&self) -> usize {
        self.writes.len()
    }

    /// Test hook: commit the shard trees, then fail instead of committing
    /// the index tree (a crash or I/O error between the two).
    #[doc(hidden)]
    pub fn fail_before_index_commit(&mut self) {
        self.fail_index_commit = true;
    }
}

impl ShardCommit {
    /// Which shard tree this commits.
    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn run(mut self) -> ShardCommitted {
        let result = commit_shard(
            &mut self.tree,
            self.shard,
            self.shards,
            staging_writes(&self.writes),
            self.index_meta,
            self.user_meta,
        );
        ShardCommitted {
            shard: self.shard,
            tree: self.tree,
            result,
        }
    }
}

impl IndexCommit {
    /// Takes back every shard's commit and, if they all worked, commits the
    /// index tree. Fails only when `shards` is not every part of the split
    /// (then the trees are lost to the store, as with a task never
    /// finished: it cannot checkpoint again until reopened).
    pub fn finish(self, mut shards: Vec<ShardCommitted>) -> Result<CheckpointDone, MvccError> {
        shards.sort_by_key(|c| c.shard);
        if shards.len() != self.shards || shards.iter().enumerate().any(|(i, c)| c.shard != i) {
            return Err(MvccError::InvalidRequest(format!(
                "a checkpoint split into {} shard commits got {} back",
                self.shards,
                shards.len()
            )));
        }
        Ok(self.complete(shards))
    }

    /// [`IndexCommit::finish`] given every part, in shard order.
    fn complete(mut self, shards: Vec<ShardCommitted>) -> CheckpointDone {
        drop(self.retired.take());
        let mut result = Ok(());
        let mut trees = Vec::with_capacity(shards.len());
        for c in shards {
            if result.is_ok() {
                result = c.result;
            }
            trees.push(c.tree);
        }
        self.backend.restore_shards(trees);
        if result.is_ok() {
            result = if self.fail_index_commit {
                Err(MvccError::Io {
                    path: "<index tree>".into(),
                    source: std::io::Error::other("injected fault before the index commit"),
                })
            } else {
                self.backend
                    .commit_index(staging_writes(&self.writes), self.shards, self.user_meta)
            };
        }
        CheckpointDone {
            backend: self.backend,
            user_meta: self.user_meta,
            result,
        }
    }
}

impl CheckpointDone {
    /// Whether the commit succeeded (`finish_checkpoint` reports the error).
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The commit's error, if it failed.
    pub fn error(&self) -> Option<&MvccError> {
        self.result.as_ref().err()
    }
}

impl Store {
    /// Freezes what is pending into a task that commits it; `None` when
    /// nothing changed since the last checkpoint. Cheap: moves the pending
    /// map and the tree writers, copies nothing.
    pub fn start_checkpoint(&mut self) -> Result<Option<CheckpointTask>, MvccError> {
        if self.frozen_index.is_some() {
            return Err(MvccError::CheckpointInFlight);
        }
        if self.pending.is_empty() && self.durable == self.last_applied {
            return Ok(None);
        }
        let backend = self.backend.take().ok_or(MvccError::CheckpointInFlight)?;
        debug_assert!(self.frozen.is_empty() && self.frozen_presence.is_empty());
        self.frozen = std::mem::take(&mut self.pending);
        self.frozen_bytes = std::mem::take(&mut self.pending_bytes);
        self.frozen_presence = std::mem::take(&mut self.presence);
        self.frozen_index = Some(self.last_applied);
        Ok(Some(CheckpointTask {
            backend,
            writes: self.frozen.clone(),
            user_meta: self.last_applied,
            fail_index_commit: false,
            retired: self.retired.take(),
        }))
    }

    /// Takes the trees back from a finished task. On success reads move to
    /// the new commit and `applied_index()` advances; on failure the frozen
    /// writes become pending again and the task's error is returned.
    pub fn finish_checkpoint(&mut self, done: CheckpointDone) -> Result<(), MvccError> {
        if self.backend.is_some() || self.frozen_index != Some(done.user_meta) {
            return Err(MvccError::InvalidRequest(format!(
                "finish_checkpoint given the result of a checkpoint at index {} this store did not start",
                done.user_meta
            )));
        }
        self.frozen_index = None;
        self.backend = Some(done.backend);
        let frozen = std::mem::take(&mut self.frozen);
        let frozen_presence = std::mem::take(&mut self.frozen_presence);
        let frozen_bytes = std::mem::take(&mut self.frozen_bytes);
        if let Err(e) = done.result {
            self.pending_bytes += frozen_bytes;
            // Nothing moves: reads keep the old view, under which the frozen
            // writes are still unwritten. Newer pending writes win; their
            // presence is rebased from "after frozen" to the view.
            let mut writes = frozen;
            writes.extend(std::mem::take(&mut self.pending));
            self.pending = writes;
            let mut presence = frozen_presence;
            for (k, (after_frozen, now)) in std::mem::take(&mut self.presence) {
                let in_view = presence.get(&k).map_or(after_frozen, |&(v, _)| v);
                presence.insert(k, (in_view, now));
            }
            self.presence = presence;
            return Err(e);
        }
        // The view now includes `frozen`: the pending presence, kept
        // relative to it, is already right. O(1) here: the old maps, and the
        // old view (possibly the last user of a memory map, whose munmap
        // is slow), are freed by the next task.
        let old_view = self.view.clone();
        self.refresh_view();
        self.retired = Some(Retired {
            _view: old_view,
            _overlay: frozen,
            _presence: frozen_presence,
        });
        self.durable = done.user_meta;
        Ok(())
    }

    /// Makes everything applied durable: [`Store::start_checkpoint`], the
    /// task run inline, [`Store::finish_checkpoint`]. A no-op when nothing
    /// changed since the last one.
    pub fn checkpoint(&mut self) -> Result<(), MvccError> {
        match self.start_checkpoint()? {
            None => Ok(()),
            Some(task) => {
                let done = task.run();
                self.finish_checkpoint(done)
            }
        }
    }
}
