//! The durable ordered map under the store: one index tree plus the shard
//! trees (see `shard`), read and written as one map.
//!
//! This module is the only place that knows the B+tree's API and which file
//! holds which key, so the rest of the MVCC layer reads and writes plain
//! ordered bytes. A scan reads only the trees its bounds can touch (a
//! per-key version scan reads one shard) and merges them; the trees hold
//! disjoint keys, so the merge never has to pick between equal keys.

use std::iter::Peekable;
use std::ops::Bound;
use std::path::Path;

use crate::btree::{CompactedFile, CompactionJob, Snapshot, Tree, TreeOptions};

use super::error::MvccError;
use super::keyspace::{space_bounds, KeyBounds, LAYOUT_SHARDS, VERSION};
use super::layers::Write;
use super::shard::{
    parse_shard_file, route, shard_file, targets, ShardTargets, INDEX_FILE, MAX_SHARDS,
};

/// Ascending (key, value) pairs of a scan.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), MvccError>> + 'a>;

/// Tree writes in key order ([`super::layers::overlay_writes`],
/// [`super::layers::staging_writes`]).
pub trait Writes<'w>: IntoIterator<Item = Write<'w>> {}

impl<'w, T: IntoIterator<Item = Write<'w>>> Writes<'w> for T {}

/// The writers of every tree of one store.
pub struct Backend {
    index: Tree,
    /// Empty for a store written before sharding: versions in the index.
    shards: Vec<Tree>,
    /// The count the caller asked for (may differ from `shards.len()`,
    /// which is the count recorded when the store was created).
    requested_shards: usize,
}

/// A consistent read view of every tree, pinned at their last commits.
#[derive(Clone)]
pub struct BackendView {
    index: Snapshot,
    shards: Vec<Snapshot>,
}

fn as_slices(bounds: &KeyBounds) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        bounds.0.as_ref().map(|v| v.as_slice()),
        bounds.1.as_ref().map(|v| v.as_slice()),
    )
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MvccError + '_ {
    move |source| MvccError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Shard counts a new store accepts.
pub fn check_shard_count(shards: usize) -> Result<(), MvccError> {
    if (1..=MAX_SHARDS).contains(&shards) {
        Ok(())
    } else {
        Err(MvccError::InvalidRequest(format!(
            "shard count {shards} is not in 1..={MAX_SHARDS}"
        )))
    }
}

impl Backend {
    /// Opens (or creates, with `requested_shards` shard trees) the store in
    /// `dir`. An existing store keeps the count recorded at its creation.
    /// Every shard tree is opened at its newest commit not past the index
    /// tree's applied index, so all trees agree as of that index.
    pub fn open(
        dir: &Path,
        opts: TreeOptions,
        requested_shards: usize,
    ) -> Result<Backend, MvccError> {
        check_shard_count(requested_shards)?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut index = Tree::open(&dir.join(INDEX_FILE), opts)?;
        let recorded = index.read().get(LAYOUT_SHARDS)?;
        let (count, creating) = match recorded {
            Some(bytes) => (decode_shard_count(&bytes)?, false),
            // Committed before, without a layout record: the one-file layout.
            None if index.commit_id() > 0 => (0, false),
            None => (requested_shards, true),
        };
        let applied = index.user_meta();
        let mut shards = Vec::with_capacity(count);
        for i in 0..count {
            let path = dir.join(shard_file(i));
            // Shard files exist from before the layout is recorded, so one
            // missing later is damage, not a shard to start empty.
            if !creating && !path.exists() {
                return Err(MvccError::Corrupt(format!(
                    "{} is missing: the store records {count} shard trees",
                    path.display()
                )));
            }
            shards.push(Tree::open_at_most(&path, opts, applied)?);
        }
        if creating {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir))?;
            // The count is fixed from the first commit on. user_meta 0:
            // nothing applied yet.
            let mut batch = index.write();
            batch.insert(LAYOUT_SHARDS, &(count as u64).to_le_bytes())?;
            batch.commit(0)?;
        }
        Ok(Backend {
            index,
            shards,
            requested_shards,
        })
    }

    pub fn view(&self) -> BackendView {
        BackendView {
            index: self.index.read(),
            shards: self.shards.iter().map(Tree::read).collect(),
        }
    }

    /// Shard trees in use (0 = the one-file layout of older stores).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn requested_shards(&self) -> usize {
        self.requested_shards
    }

    /// Writes `writes` durably and records `user_meta` (the applied index)
    /// in every tree written and in the index tree. Shard trees commit
    /// first and the index tree last: a crash in between leaves shards at
    /// most one commit ahead of the index, which `open` rolls back.
    pub fn commit<'w>(
        &mut self,
        writes: impl Writes<'w> + Clone,
        user_meta: u64,
    ) -> Result<(), MvccError> {
        let shards = self.shards.len();
        let index_meta = self.index.user_meta();
        for (shard, tree) in self.shards.iter_mut().enumerate() {
            commit_shard(tree, shard, shards, writes.clone(), index_meta, user_meta)?;
        }
        self.commit_index(writes, shards, user_meta)
    }

    /// Moves the shard trees out, for commits on other threads
    /// ([`super::ShardCommit`]); [`Backend::restore_shards`] puts them back.
    pub(super) fn take_shards(&mut self) -> Vec<Tree> {
        std::mem::take(&mut self.shards)
    }

    pub(super) fn restore_shards(&mut self, shards: Vec<Tree>) {
        debug_assert!(self.shards.is_empty());
        self.shards = shards;
    }

    /// Commits the index tree's share of `writes` (what no shard of
    /// `shards` holds), after every shard tree committed its own.
    pub(super) fn commit_index<'w>(
        &mut self,
        writes: impl Writes<'w>,
        shards: usize,
        user_meta: u64,
    ) -> Result<(), MvccError> {
        let mine: Vec<TreeWrite<'_>> = writes
            .into_iter()
            .filter(|(k, _)| route(k, shards).is_none())
            .collect();
        commit_tree(&mut self.index, &mine, user_meta)
    }

    /// The index tree's `user_meta`: the applied index every tree matches.
    pub fn user_meta(&self) -> u64 {
        self.index.user_meta()
    }

    fn trees(&self) -> impl Iterator<Item = &Tree> {
        self.shards.iter().chain(std::iter::once(&self.index))
    }

    fn trees_mut(&mut self) -> impl Iterator<Item = &mut Tree> {
        self.shards
            .iter_mut()
            .chain(std::iter::once(&mut self.index))
    }

    /// Bytes up to the end of each tree's last commit, summed: bbolt's
    /// `Tx.Size` (the high-water mark of pages in use), which is what etcd
    /// reports as the db size and checks the quota against. Files are grown
    /// ahead of need with zero-filled space this does not count.
    pub fn used_bytes(&self) -> u64 {
        self.trees().map(Tree::committed_bytes).sum()
    }

    pub fn live_bytes(&self) -> u64 {
        self.trees().map(Tree::live_bytes).sum()
    }

    /// Rewrites every tree file without its dead pages, one after another.
    pub fn compact_files(&mut self) -> Result<(), MvccError> {
        for tree in self.trees_mut() {
            tree.compact_file()?;
        }
        Ok(())
    }

    /// Starts an online compaction of every tree (shards first, index last).
    pub fn begin_compaction(&mut self) -> Result<Vec<CompactionJob>, MvccError> {
        let mut jobs = Vec::with_capacity(self.shards.len() + 1);
        for tree in self.trees_mut() {
            jobs.push(tree.begin_compaction()?);
        }
        Ok(jobs)
    }

    pub fn compaction_backlog(&self) -> usize {
        self.trees().map(Tree::compaction_backlog).sum()
    }

    fn check_copies(&self, copies: usize) -> Result<(), MvccError> {
        if copies != self.shards.len() + 1 {
            return Err(MvccError::InvalidRequest(format!(
                "defragmentation copy has {copies} trees, the store {}",
                self.shards.len() + 1
            )));
        }
        Ok(())
    }

    pub fn catch_up(&mut self, copies: &mut [CompactedFile]) -> Result<usize, MvccError> {
        self.check_copies(copies.len())?;
        let mut copied = 0;
        for (tree, copy) in self.trees_mut().zip(copies.iter_mut()) {
            copied += tree.catch_up(copy)?;
        }
        Ok(copied)
    }

    /// Switches every tree to its copy. If one fails the others that
    /// switched stay switched (each copy holds the same commit as the file
    /// it replaces, so the store is consistent either way).
    pub fn finish_compaction(&mut self, copies: Vec<CompactedFile>) -> Result<(), MvccError> {
        self.check_copies(copies.len())?;
        let mut first_error = None;
        for (tree, copy) in self.trees_mut().zip(copies) {
            if let Err(e) = tree.finish_compaction(copy) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// The shard count recorded by the store in `dir`, if it has an index tree
/// that opens and records one (a store from before sharding records none).
pub fn recorded_shards(dir: &Path) -> Option<usize> {
    let path = dir.join(INDEX_FILE);
    if !path.exists() {
        return None;
    }
    let tree = Tree::open(&path, TreeOptions::default()).ok()?;
    let bytes = tree.read().get(LAYOUT_SHARDS).ok()??;
    decode_shard_count(&bytes).ok()
}

/// Removes shard files numbered `count` or above (left by a restore that
/// switched to fewer shards); they are not part of the store.
pub fn remove_stale_shard_files(dir: &Path, count: usize) -> Result<(), MvccError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        if let Some(i) = name.to_str().and_then(parse_shard_file) {
            if i >= count {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
    }
    Ok(())
}

fn decode_shard_count(bytes: &[u8]) -> Result<usize, MvccError> {
    let n = <[u8; 8]>::try_from(bytes)
        .map(u64::from_le_bytes)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=MAX_SHARDS).contains(n));
    n.ok_or_else(|| {
        MvccError::Corrupt(format!(
            "recorded shard count is malformed ({} bytes)",
            bytes.len()
        ))
    })
}

/// One staged write routed to a tree: `None` = remove.
type TreeWrite<'a> = Write<'a>;

/// Commits to shard tree `shard` (of `shards`) its share of `writes`, if
/// any, recording `user_meta`. `index_meta` is the index tree's applied
/// index: a shard already ahead of it holds the commit of a checkpoint
/// torn before its index commit, whose previous commit `open` needs to
/// roll back to, so it is not written again.
pub(super) fn commit_shard<'w>(
    tree: &mut Tree,
    shard: usize,
    shards: usize,
    writes: impl Writes<'w>,
    index_meta: u64,
    user_meta: u64,
) -> Result<(), MvccError> {
    let mine: Vec<TreeWrite<'_>> = writes
        .into_iter()
        .filter(|(k, _)| route(k, shards) == Some(shard))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    if tree.user_meta() > index_meta {
        return Err(MvccError::CheckpointTorn {
            path: tree.path().to_path_buf(),
            tree_index: tree.user_meta(),
            index: index_meta,
        });
    }
    commit_tree(tree, &mine, user_meta)
}

fn commit_tree(tree: &mut Tree, writes: &[TreeWrite<'_>], user_meta: u64) -> Result<(), MvccError> {
    let mut batch = tree.write();
    for &(k, v) in writes {
        match v {
            Some(v) => {
                batch.insert(k, v)?;
            }
            None => {
                batch.remove(k)?;
            }
        }
    }
    batch.commit(user_meta)?;
    Ok(())
}

impl BackendView {
    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn tree_of(&self, key: &[u8]) -> &Snapshot {
        match route(key, self.shard_count()) {
            Some(i) => &self.shards[i],
            None => &self.index,
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.tree_of(key).get(key)?)
    }

    /// The snapshots a scan over `bounds` reads.
    fn sources(&self, bounds: &KeyBounds) -> Vec<&Snapshot> {
        let t = targets(bounds, self.shard_count());
        let mut out: Vec<&Snapshot> = match t.shards {
            ShardTargets::None => Vec::new(),
            ShardTargets::One(i) => vec![&self.shards[i]],
            ShardTargets::All => self.shards.iter().collect(),
        };
        if t.index {
            out.push(&self.index);
        }
        out
    }

    /// Caller guarantees the bounds are not inverted (see `bounds_nonempty`).
    pub fn scan(&self, bounds: &KeyBounds) -> ScanIter<'_> {
        self.scan_dir(bounds, true)
    }

    /// Descending; same bounds contract as `scan`.
    pub fn scan_rev(&self, bounds: &KeyBounds) -> ScanIter<'_> {
        self.scan_dir(bounds, false)
    }

    fn scan_dir(&self, bounds: &KeyBounds, forward: bool) -> ScanIter<'_> {
        let (start, end) = as_slices(bounds);
        let mut iters: Vec<ScanIter<'_>> = self
            .sources(bounds)
            .into_iter()
            .map(|snap| -> ScanIter<'_> {
                if forward {
                    Box::new(snap.range(start, end).map(|i| i.map_err(MvccError::from)))
                } else {
                    Box::new(
                        snap.range_rev(start, end)
                            .map(|i| i.map_err(MvccError::from)),
                    )
                }
            })
            .collect();
        match iters.len() {
            0 => Box::new(std::iter::empty()),
            1 => iters.pop().unwrap_or_else(|| Box::new(std::iter::empty())),
            _ => Box::new(TreeMerge {
                sources: iters.into_iter().map(Iterator::peekable).collect(),
                forward,
            }),
        }
    }

    pub fn scan_empty(&self) -> ScanIter<'_> {
        Box::new(std::iter::empty())
    }

    pub fn count(&self, bounds: &KeyBounds) -> Result<u64, MvccError> {
        let (start, end) = as_slices(bounds);
        let mut n = 0;
        for snap in self.sources(bounds) {
            n += snap.count(start, end)?;
        }
        Ok(n)
    }

    /// Checks that every key is in the tree `route` assigns it: versions in
    /// their shard, nothing else in a shard, no version in the index.
    /// Reads every shard tree: for integrity checks only.
    pub fn check_placement(&self) -> Result<(), MvccError> {
        let n = self.shard_count();
        if n == 0 {
            return Ok(());
        }
        let versions = space_bounds(VERSION);
        let (start, end) = as_slices(&versions);
        let stray = self.index.count(start, end)?;
        if stray > 0 {
            return Err(MvccError::Corrupt(format!(
                "{stray} versions in the index tree, which holds none with {n} shards"
            )));
        }
        for (i, snap) in self.shards.iter().enumerate() {
            for item in snap.range(Bound::Unbounded, Bound::Unbounded) {
                let (k, _) = item?;
                if route(&k, n) != Some(i) {
                    return Err(MvccError::Corrupt(format!(
                        "key {} is in {} but belongs elsewhere",
                        super::keyspace::hex(&k),
                        shard_file(i)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// k-way merge of scans over trees with disjoint keys, all in one direction.
struct TreeMerge<'a> {
    sources: Vec<Peekable<ScanIter<'a>>>,
    forward: bool,
}

impl Iterator for TreeMerge<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), MvccError>;

    fn next(&mut self) -> Option<Self::Item> {
        let forward = self.forward;
        let mut best: Option<(usize, &Vec<u8>)> = None;
        let mut failed = None;
        for (i, src) in self.sources.iter_mut().enumerate() {
            match src.peek() {
                None => {}
                Some(Err(_)) => {
                    failed = Some(i);
                    break;
                }
                Some(Ok((k, _))) if best.is_none_or(|(_, bk)| (k < bk) == forward) => {
                    best = Some((i, k));
                }
                Some(Ok(_)) => {}
            }
        }
        let i = failed.or(best.map(|(i, _)| i))?;
        self.sources[i].next()
    }
}
