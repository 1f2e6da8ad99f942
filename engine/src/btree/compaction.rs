//! Reclaiming the space of unreachable pages by rewriting the live tree into
//! a new file, online.
//!
//! 1. [`Tree::begin_compaction`] pins a snapshot and starts recording the keys
//!    every later commit touches.
//! 2. [`CompactionJob::build`] (any thread; it never touches the `Tree`)
//!    bulk-loads the snapshot, densely packed, into `<path>.compact`.
//! 3. [`Tree::catch_up`], called by the writer between its own commits as
//!    often as it likes, copies the current value of each recorded key into
//!    the new file: one commit there, sized by the writes since the last call.
//! 4. [`Tree::finish_compaction`] does a last catch-up, renames the new file
//!    over the old one, fsyncs the directory and switches to it. The writer
//!    waits only for that last catch-up, so calling `catch_up` until the
//!    backlog is small keeps every write's wait within one commit interval.
//!
//! Crash safety: the old file is untouched until the rename, and the new
//! file is synced before it; a leftover `.compact` file is discarded by the
//! next `begin_compaction`. Snapshots taken before the switch keep reading
//! the old file (unlinked, still mapped).

use std::ffi::OsString;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::commit::{build_root, write_leaves, NodeSink};
use super::error::BtreeError;
use super::meta::{Meta, FIRST_NODE_PAGE};
use super::page::{leaf_entry_len, ChildRef, HEADER_LEN};
use super::pagefile::{io_err, sync_parent_dir, PageFile};
use super::snapshot::Snapshot;
use super::Tree;

/// The copy half of a compaction: a snapshot and where to write it. `Send`,
/// so [`CompactionJob::build`] can run on another thread.
pub struct CompactionJob {
    id: u64,
    snap: Snapshot,
    target: PathBuf,
}

/// A compacted copy not yet switched to; hand it to [`Tree::catch_up`] and
/// [`Tree::finish_compaction`]. Dropping it abandons the compaction (its file
/// stays behind until the next one starts).
pub struct CompactedFile {
    id: u64,
    tree: Tree,
}

fn compaction_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".compact");
    PathBuf::from(name)
}

impl CompactionJob {
    /// Writes the snapshot's entries into a fresh file: full leaves, then the
    /// branch levels over them, then both meta slots, then fdatasync.
    pub fn build(self) -> Result<CompactedFile, BtreeError> {
        let ps = u64::from(self.snap.meta.page_size);
        let (mut out, _) = PageFile::open(&self.target, ps)?;
        let meta = copy_live(&self.snap, &mut out)?;
        // Both slots hold the copy, so whichever slot the next commit
        // overwrites, the other still opens.
        for slot in 0..2 {
            out.write_at(&meta.encode(), slot * ps)?;
        }
        out.sync()?;
        Ok(CompactedFile {
            id: self.id,
            tree: Tree::from_parts(out, meta),
        })
    }
}

/// Bulk-loads `snap` into `out` as one commit (id `snap`'s + 1).
fn copy_live(snap: &Snapshot, out: &mut PageFile) -> Result<Meta, BtreeError> {
    let ps = snap.page_size;
    let txn = snap.meta.txn + 1;
    let cap = ps - HEADER_LEN;
    let mut sink = NodeSink::new(FIRST_NODE_PAGE, txn, ps);
    let mut level: Vec<ChildRef> = Vec::new();
    let mut leaf: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut leaf_len = 0;
    let mut iter = snap.range(Bound::Unbounded, Bound::Unbounded);
    while let Some(entry) = iter.next_ref() {
        let (k, v) = entry?;
        let len = leaf_entry_len(k, v);
        if !leaf.is_empty() && leaf_len + len > cap {
            level.append(&mut write_leaves(&leaf, &mut sink));
            leaf.clear();
            leaf_len = 0;
            sink.drain(out, false)?;
        }
        leaf.push((k.to_vec(), v.to_vec()));
        leaf_len += len;
    }
    level.append(&mut write_leaves(&leaf, &mut sink));
    let root = build_root(level, &mut sink);
    let pages = sink.pages();
    out.ensure_len((FIRST_NODE_PAGE + pages) * ps as u64, false)?;
    sink.drain(out, true)?;
    Ok(Meta {
        page_size: snap.meta.page_size,
        txn,
        root: root.as_ref().map_or(0, |r| r.page),
        key_count: root.as_ref().map_or(0, |r| r.count),
        page_count: FIRST_NODE_PAGE + pages,
        commit_start: FIRST_NODE_PAGE,
        live_pages: pages,
        user_meta: snap.meta.user_meta,
        commit_digest: sink.digest(),
    })
}

/// Copies the current value (or absence) of each key into `to`, as one
/// durable commit carrying `from`'s `user_meta`.
fn copy_keys(from: &Snapshot, keys: &[Vec<u8>], to: &mut Tree) -> Result<(), BtreeError> {
    let mut batch = to.write();
    for k in keys {
        match from.get_ref(k)? {
            Some(v) => batch.insert(k, v)?,
            None => batch.remove(k)?,
        };
    }
    batch.commit(from.meta.user_meta)
}

impl Tree {
    /// Starts an online compaction of the last commit. Commits go on as
    /// usual; each records its keys until [`Tree::finish_compaction`].
    /// Starting another compaction abandons this one.
    pub fn begin_compaction(&mut self) -> Result<CompactionJob, BtreeError> {
        self.check_not_poisoned()?;
        let target = compaction_path(&self.file.path);
        if target.exists() {
            std::fs::remove_file(&target)
                .map_err(io_err(&target, "remove stale compaction file"))?;
        }
        let id = self.next_compaction_id;
        self.next_compaction_id += 1;
        self.compaction = Some((id, Default::default()));
        Ok(CompactionJob {
            id,
            snap: self.read(),
            target,
        })
    }

    /// Keys committed since the compaction's snapshot (or its last catch-up)
    /// that [`Tree::catch_up`] still has to copy.
    pub fn compaction_backlog(&self) -> usize {
        self.compaction.as_ref().map_or(0, |(_, keys)| keys.len())
    }

    /// Copies the current value (or absence) of every key committed since the
    /// last catch-up into `file`, as one durable commit there. Returns how
    /// many keys it copied.
    pub fn catch_up(&mut self, file: &mut CompactedFile) -> Result<usize, BtreeError> {
        self.catch_up_at_most(file, usize::MAX)
    }

    /// Like [`Tree::catch_up`], but copies at most `max_keys` of the recorded
    /// keys (in key order), leaving the rest in the backlog: a writer can
    /// bound the work it does between two of its own commits.
    pub fn catch_up_at_most(
        &mut self,
        file: &mut CompactedFile,
        max_keys: usize,
    ) -> Result<usize, BtreeError> {
        let keys: Vec<Vec<u8>> = match &mut self.compaction {
            Some((id, keys)) if *id == file.id => {
                if max_keys >= keys.len() {
                    std::mem::take(keys).into_iter().collect()
                } else {
                    std::iter::from_fn(|| keys.pop_first())
                        .take(max_keys)
                        .collect()
                }
            }
            _ => {
                return Err(BtreeError::CompactionAbandoned {
                    path: self.file.path.to_path_buf(),
                })
            }
        };
        let snap = self.read();
        let copied = copy_keys(&snap, &keys, &mut file.tree);
        if copied.is_err() {
            // Not copied: they stay owed, or a later switch would lose them.
            if let Some((_, backlog)) = &mut self.compaction {
                backlog.extend(keys.iter().cloned());
            }
        }
        copied.map(|()| keys.len())
    }

    /// Catches `file` up a last time and switches the tree to it: rename over
    /// this file, fsync the directory. If the catch-up or the rename fails,
    /// the tree keeps its old file and the compaction is abandoned.
    pub fn finish_compaction(&mut self, mut file: CompactedFile) -> Result<(), BtreeError> {
        // Commit ids keep increasing across the switch: the first commit in
        // the new file gets an id above every commit of the old one.
        file.tree.raise_commit_id(self.meta.txn);
        let caught_up = self.catch_up(&mut file);
        self.compaction = None;
        caught_up?;
        let path = self.file.path.to_path_buf();
        std::fs::rename(&*file.tree.file.path, &path)
            .map_err(io_err(&path, "rename compacted file"))?;
        // Renamed: both files hold the same commit, so switch now even if the
        // directory sync below fails (then the old name may come back after a
        // power loss, with the same contents).
        let CompactedFile { tree, .. } = file;
        let mut new_file = tree.file;
        new_file.path = self.file.path.clone();
        self.file = new_file;
        self.meta = tree.meta;
        sync_parent_dir(&path)
    }

    /// Compacts in place, blocking the writer for the whole copy: the same as
    /// [`Tree::begin_compaction`], [`CompactionJob::build`] and
    /// [`Tree::finish_compaction`] in a row.
    pub fn compact_file(&mut self) -> Result<(), BtreeError> {
        let job = self.begin_compaction()?;
        let result = job.build();
        match result {
            Ok(file) => self.finish_compaction(file),
            Err(e) => {
                self.compaction = None;
                Err(e)
            }
        }
    }

    /// Makes the next commit's id exceed `above`, keeping the id's parity so
    /// that commit still writes the meta slot not holding the last commit.
    fn raise_commit_id(&mut self, above: u64) {
        if self.meta.txn < above {
            self.meta.txn = above + (above % 2 != self.meta.txn % 2) as u64;
        }
    }
}
