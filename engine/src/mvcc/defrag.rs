//! Online defragmentation: etcd's defrag without stopping writes.
//!
//! The store checkpoints, pins the tree, and a [`DefragJob`] copies the live
//! entries into a new file, on any thread, while the sequencer keeps applying
//! and checkpointing. Between checkpoints the sequencer calls
//! [`Store::defragment_catch_up`] (cheap: copies only the keys committed
//! since the last call) and, once the backlog is small,
//! [`Store::finish_defragment`] switches files; writes wait at most for that
//! last catch-up. [`Store::defragment`] does all of it in one blocking call.
//!
//! Tree commits reuse the pages copy-on-write frees, so files grow only with
//! live data; what they cannot give back by themselves is the space left
//! below the high-water mark after a large delete (and a compaction of the
//! history). [`Store::wants_defragment`] says when that share is large
//! enough for the driver (the sequencer) to defragment on its own: etcd
//! never shrinks without a stop-the-world defrag.
//!
//! Defragmentation and a checkpoint task do not overlap: beginning,
//! catching up or finishing while a task (`Store::start_checkpoint`) has the
//! trees fails with [`MvccError::CheckpointInFlight`]; finish the task
//! first. Starting checkpoint tasks between those calls is fine.
//!
//! ```
//! use basalt_engine::mvcc::{Op, PutRequest, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
//! let put = |k: &str| Op::Put(PutRequest { key: k.into(), value: vec![1; 100], ..Default::default() });
//! store.apply(1, &put("a")).unwrap();
//! let job = store.begin_defragment().unwrap();
//! let copy = std::thread::spawn(move || job.build()).join().unwrap().unwrap();
//! store.apply(2, &put("b")).unwrap(); // writes go on meanwhile
//! store.checkpoint().unwrap();
//! store.finish_defragment(copy).unwrap();
//! assert_eq!(store.current_revision(), 3);
//! ```

use crate::btree::{CompactedFile, CompactionJob};

use super::error::MvccError;
use super::store::Store;

/// The copy half of an online defragmentation; `Send`, run it anywhere.
/// One copy per tree file (shards, then the index); they run in sequence.
pub struct DefragJob(Vec<CompactionJob>);

/// Finished copies waiting to be caught up and switched to.
pub struct DefragCopy(Vec<CompactedFile>);

impl DefragJob {
    /// Writes the pinned state, densely packed, into the new files.
    pub fn build(self) -> Result<DefragCopy, MvccError> {
        let copies = self
            .0
            .into_iter()
            .map(CompactionJob::build)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DefragCopy(copies))
    }
}

/// Share of [`Store::db_size`] (in percent) not in use above which
/// [`Store::wants_defragment`] says yes: between runs the files stay within
/// 1.5x the live data. Small commits keep far less free (10-15% measured
/// under `etcdctl check perf`); what passes it is a commit that rewrites
/// most of a tree (a large delete: old and new pages coexist until the
/// commit is durable, 40-50% free after it) or a delete plus a compaction
/// of the history. The copy also packs leaves full, which random inserts
/// leave about 70% full. Commits that keep rewriting whole trees hold up to
/// 2/3 free (three versions until the oldest is reusable,
/// `btree/freelist.rs`), which no copy keeps away: the driver bounds how
/// often it acts.
pub const AUTO_DEFRAG_RECLAIMABLE_PERCENT: u64 = 33;
/// Reclaimable bytes below which defragmenting is not worth a copy.
pub const AUTO_DEFRAG_MIN_RECLAIMABLE_BYTES: u64 = 1 << 20;

impl Store {
    /// Whether enough of the files is not in use that an automatic
    /// defragmentation pays: at least [`AUTO_DEFRAG_RECLAIMABLE_PERCENT`] of
    /// [`Store::db_size`] and [`AUTO_DEFRAG_MIN_RECLAIMABLE_BYTES`]. As of the
    /// last checkpoint; the caller bounds how often it acts on it.
    pub fn wants_defragment(&self) -> bool {
        let (size, in_use) = (self.db_size(), self.db_size_in_use());
        let reclaimable = size.saturating_sub(in_use);
        reclaimable >= AUTO_DEFRAG_MIN_RECLAIMABLE_BYTES
            && reclaimable * 100 >= size * AUTO_DEFRAG_RECLAIMABLE_PERCENT
    }

    /// Checkpoints, then starts copying every tree. Starting another
    /// abandons this one.
    pub fn begin_defragment(&mut self) -> Result<DefragJob, MvccError> {
        self.checkpoint()?;
        Ok(DefragJob(self.backend_mut()?.begin_compaction()?))
    }

    /// Tree keys committed since the copy started (or its last catch-up);
    /// 0 while a checkpoint task has the trees.
    pub fn defragment_backlog(&self) -> usize {
        self.backend.as_ref().map_or(0, |b| b.compaction_backlog())
    }

    /// Copies what was committed since the last catch-up into the copy.
    pub fn defragment_catch_up(&mut self, copy: &mut DefragCopy) -> Result<usize, MvccError> {
        self.backend_mut()?.catch_up(&mut copy.0)
    }

    /// Checkpoints, catches the copies up a last time and switches to them.
    pub fn finish_defragment(&mut self, copy: DefragCopy) -> Result<(), MvccError> {
        self.checkpoint()?;
        let result = self.backend_mut()?.finish_compaction(copy.0);
        // Reads move to the new files (the old maps stay valid meanwhile).
        self.refresh_view();
        result
    }
}
