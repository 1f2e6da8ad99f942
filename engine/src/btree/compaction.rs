//! Reclaiming the space of unreachable pages by rewriting the live tree into
//! a new file, online.
//!
//! 1. [`Tree::begin_compaction`] pins a snapshot and starts recording the keys
//!    every later commit touches.
//! 2. [`CompactionJob::build`] (any thread; it never touches the `Tree`)
//!    bulk-loads the snapshot, densely packed, into `<path>.compact`,
//!    streaming it to disk as it goes so it never leaves a burst of dirty
//!    pages in front of the writer's fdatasyncs.
//! 3. [`Tree::catch_up`] / [`Tree::catch_up_at_most`], called by the writer
//!    between its own commits, copy the current value of recorded keys into
//!    the new file: one durable commit there per call, sized by the writes
//!    since the last call (or by the bound).
//! 4. [`Tree::finish_compaction`] switches: a last catch-up if anything is
//!    left, a rename over the old file, and nothing else on the writer's
//!    path. The directory fsync runs on another thread and the next commit's
//!    sync waits for it; the old file is freed later, in small steps, off
//!    the writer's thread (freeing its 170 MiB of blocks at once took
//!    70–260 ms: the bulk of what the switch used to cost).
//!
//! A writer that keeps every wait within about one commit: after the copy,
//! alternate one commit and one `catch_up_at_most` of a few commits' keys
//! until [`Tree::compaction_backlog`] is 0, then call `finish_compaction`
//! right away; the switch then writes nothing (measured: ~0.2 ms).
//!
//! Crash safety: the old file is untouched until the rename, and every
//! catch-up is synced before it returns, so at the rename the new file holds
//! every commit so far: a crash on either side of it leaves a complete file
//! under the tree's name. Until the directory fsync completes a power loss
//! may bring the old name back, which is why no commit to the new file is
//! acknowledged before it. A leftover `.compact` file is discarded by the
//! next `begin_compaction`. Snapshots taken before the switch keep reading
//! the old file (unlinked, still mapped).

use std::ffi::OsString;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::commit::{build_root, write_leaves, NodeSink};
use super::error::BtreeError;
use super::meta::{Meta, FIRST_NODE_PAGE, FORMAT_VERSION};
use super::page::{leaf_entry_len, ChildRef, HEADER_LEN};
use super::pagefile::{io_err, PageFile};
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
    ///
    /// The copy streams to disk as it goes (at most 8 MiB
    /// bytes not yet written out), so it never leaves a burst of dirty pages
    /// for the kernel to flush ahead of the writer's own fdatasyncs. It also
    /// pre-writes a growth chunk past its end (as commits do), so the first
    /// catch-ups land in allocated blocks instead of growing the file.
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

/// Most bytes the copy leaves written to the page cache but not yet on the
/// disk: a bound, so a copy of any size never hands the kernel one burst to
/// flush in front of the writer's fdatasyncs. (On the 2-vCPU CI VM with a
/// cached 140 MiB tree, no window, 1 MiB and 8 MiB measured the same; see
/// docs/benchmarks/engine-btree.md.)
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Streams a bulk write to disk behind the writer: starts write-back of each
/// stretch as it is written and waits for what is more than
/// [`WRITEBACK_WINDOW`] behind.
struct WritebackPacer {
    /// Bytes handed to `start_writeback` so far (from offset `from`).
    started: u64,
    /// Bytes known to be written out.
    done: u64,
}

impl WritebackPacer {
    fn new(from: u64) -> WritebackPacer {
        WritebackPacer {
            started: from,
            done: from,
        }
    }

    /// Bytes up to `end` have been written to `file`.
    fn written(&mut self, file: &PageFile, end: u64) -> Result<(), BtreeError> {
        if end > self.started {
            file.start_writeback(self.started, end - self.started)?;
            self.started = end;
        }
        if self.started - self.done > WRITEBACK_WINDOW {
            let upto = self.started - WRITEBACK_WINDOW;
            file.wait_writeback(self.done, upto - self.done)?;
            self.done = upto;
        }
        Ok(())
    }
}

/// Bulk-loads `snap` into `out` as one commit (id `snap`'s + 1).
fn copy_live(snap: &Snapshot, out: &mut PageFile) -> Result<Meta, BtreeError> {
    let ps = snap.page_size;
    let txn = snap.meta.txn + 1;
    let cap = ps - HEADER_LEN;
    let mut sink = NodeSink::new(FIRST_NODE_PAGE, txn, ps);
    let first_byte = FIRST_NODE_PAGE * ps as u64;
    let mut pacer = WritebackPacer::new(first_byte);
    // Where the sink's drained nodes end in the file.
    let drained_end =
        |sink: &NodeSink| first_byte + sink.pages() * ps as u64 - sink.buffered().len() as u64;
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
            pacer.written(out, drained_end(&sink))?;
        }
        leaf.push((k.to_vec(), v.to_vec()));
        leaf_len += len;
    }
    level.append(&mut write_leaves(&leaf, &mut sink));
    let root = build_root(level, &mut sink);
    let pages = sink.pages();
    // With a growth chunk past the end, zeroed now, flushed by the build's
    // sync: the catch-ups (on the writer's path) then overwrite blocks that
    // are already allocated, as the commits of an opened tree do.
    out.ensure_len((FIRST_NODE_PAGE + pages) * ps as u64, true)?;
    sink.drain(out, true)?;
    Ok(Meta {
        version: FORMAT_VERSION,
        page_size: snap.meta.page_size,
        txn,
        root: root.as_ref().map_or(0, |r| r.page),
        key_count: root.as_ref().map_or(0, |r| r.count),
        page_count: FIRST_NODE_PAGE + pages,
        commit_start: FIRST_NODE_PAGE,
        live_pages: pages,
        user_meta: snap.meta.user_meta,
        commit_digest: sink.digest(),
        commit_nodes: sink.nodes(),
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
        // Commit ids keep increasing across the switch: every commit in the
        // new file gets an id above every commit of the old one so far.
        file.tree.raise_commit_id(self.meta.txn);
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
    /// this file, then the directory fsync on another thread (the next
    /// commit waits for it). If the catch-up or the rename fails, the tree
    /// keeps its old file and the compaction is abandoned.
    ///
    /// Called right after a catch-up that left no backlog (and no commit
    /// since), the switch writes nothing: it is a rename plus starting two
    /// threads, one to sync the directory and one to free the old file.
    pub fn finish_compaction(&mut self, mut file: CompactedFile) -> Result<(), BtreeError> {
        if !self.compaction_caught_up(&file) {
            let caught_up = self.catch_up(&mut file);
            if caught_up.is_err() {
                self.compaction = None;
            }
            caught_up?;
        }
        self.compaction = None;
        let path = self.file.path.to_path_buf();
        // The new file is complete and synced (every catch-up syncs), so from
        // here on either name the directory ends up with after a crash holds
        // every commit made so far.
        std::fs::rename(&*file.tree.file.path, &path)
            .map_err(io_err(&path, "rename compacted file"))?;
        let CompactedFile { tree, .. } = file;
        let mut new_file = tree.file;
        new_file.path = self.file.path.clone();
        let old = std::mem::replace(&mut self.file, new_file);
        self.meta = tree.meta;
        // Free pages and read pins are the new file's from here on; the old
        // file's snapshots pin the old file, which is never written again.
        self.freelist = tree.freelist;
        self.seq = tree.seq;
        self.pin = tree.pin;
        // Until the directory sync completes a power loss may bring the old
        // name back, which holds the same commit: only a later commit needs
        // it durable, and the file's next sync waits for it.
        self.file.took_over(old)
    }

    /// Whether `file` already holds this tree's last commit (no key left to
    /// copy, the same `user_meta`, a commit id past this file's), so that
    /// [`Tree::finish_compaction`] now would write nothing: a writer can
    /// switch right away instead of after its next commit.
    pub fn compaction_caught_up(&self, file: &CompactedFile) -> bool {
        matches!(&self.compaction, Some((id, keys)) if *id == file.id && keys.is_empty())
            && file.tree.meta.user_meta == self.meta.user_meta
            && file.tree.meta.txn > self.meta.txn
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::TreeOptions;

    #[test]
    fn first_commit_after_the_switch_waits_for_the_directory_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::open(&dir.path().join("t"), TreeOptions::default()).unwrap();
        let mut b = tree.write();
        b.insert(b"a", b"1").unwrap();
        b.commit(1).unwrap();
        tree.compact_file().unwrap();
        // The rename is not durable yet: nothing written to the new file may
        // be acknowledged before it is.
        assert!(tree.file.name_sync_pending());
        let mut b = tree.write();
        b.insert(b"b", b"2").unwrap();
        b.commit(2).unwrap();
        assert!(!tree.file.name_sync_pending());
    }
}
