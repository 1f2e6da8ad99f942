//! An append-only copy-on-write B+tree in one file: ordered byte keys to byte
//! values, with snapshots that never block the writer.
//!
//! ```
//! use std::ops::Bound;
//! use basalt_engine::btree::{Tree, TreeOptions};
//!
//! # fn main() -> Result<(), basalt_engine::btree::BtreeError> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut tree = Tree::open(&dir.path().join("shard0.tree"), TreeOptions::default())?;
//! let mut batch = tree.write();
//! batch.insert(b"a", b"1")?;
//! batch.insert(b"b", b"2")?;
//! batch.commit(7)?; // durable here; 7 is e.g. the applied Raft index
//!
//! let snap = tree.read(); // pins this commit
//! let mut batch = tree.write();
//! batch.remove(b"a")?;
//! batch.commit(8)?;
//!
//! assert_eq!(snap.get(b"a")?, Some(b"1".to_vec())); // the snapshot is unchanged
//! assert_eq!(tree.read().get(b"a")?, None);
//! assert_eq!(tree.read().count(Bound::Unbounded, Bound::Unbounded)?, 1);
//! assert_eq!(tree.user_meta(), 8);
//! # Ok(()) }
//! ```
//!
//! # Layout and invariants
//! - Pages 0 and 1 are meta slots (layout in `meta.rs`); nodes follow
//!   (layout in `page.rs`). A node is one page, or several contiguous pages
//!   when a single entry is larger than a page. Every node carries a CRC32,
//!   its own page number and the id of the commit that wrote it; the CRC is
//!   checked the first time a node is read through a given map (nodes are
//!   immutable, so once is enough) and always for the last commit on open.
//! - A commit copies the changed root-to-leaf paths into free pages (see
//!   below) or to the end of the file, then writes the meta slot
//!   `commit_id % 2`, then issues one fdatasync. On open, the newest meta
//!   slot whose checksum and every node of its commit verify wins, so a crash
//!   at any point leaves the previous commit.
//! - Branches store, per child, the number of keys below it, so
//!   [`Snapshot::count`] reads two root-to-leaf paths, not the range.
//! - Pages a commit stops referencing are reused by later commits once
//!   neither the last durable commit nor the other meta slot's commit
//!   references them and no [`Snapshot`] can read them (`freelist.rs`); the
//!   list of free pages is rebuilt on open by a walk of both slots' trees.
//!   So [`Tree::committed_bytes`] (the high-water mark) stays near
//!   [`Tree::live_bytes`] under overwrites. Compaction gives space back to
//!   the filesystem, either blocking ([`Tree::compact_file`]) or online
//!   ([`Tree::begin_compaction`]: the copy runs on any thread from a
//!   snapshot while commits go on, and the writer only re-copies the keys
//!   committed meanwhile); [`Tree::reclaimable_bytes`] says when it pays.
//! - A [`Snapshot`] holds an `Arc` of the memory map it was taken from and a
//!   pin of its commit, so it stays valid across later commits, page reuse,
//!   file growth and compaction. It is `Send + Sync`; the `Tree` (the
//!   writer) is `Send`.
//! - Within a batch, [`WriteBatch::get`] sees the batch's own writes; nothing
//!   is visible to snapshots before [`WriteBatch::commit`] returns.
//! - An fdatasync failure poisons the tree ([`BtreeError::Poisoned`]): the
//!   kernel may have dropped the dirty pages, so the file must be reopened.
//!
//! # Files
//! `page.rs` node layout · `meta.rs` meta slots · `pagefile.rs` file, map and
//! growth · `freelist.rs` page reuse and read pins · `snapshot.rs` reads ·
//! `dirty.rs` the batch's copy-on-write overlay · `commit.rs` writing nodes ·
//! `write_batch.rs` the batch API · `compaction.rs` space reclamation.

mod commit;
mod compaction;
mod dirty;
mod dirty_leaf;
mod error;
mod freelist;
mod meta;
mod page;
mod pagefile;
mod snapshot;
mod write_batch;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use compaction::{CompactedFile, CompactionJob};
pub use error::BtreeError;
pub use snapshot::{EntryRef, RangeIter, Snapshot};
pub use write_batch::WriteBatch;

use commit::NodeSink;
use freelist::{Freelist, ReadPin};
use meta::{node_digest, Meta, FIRST_NODE_PAGE, FORMAT_V1, META_LEN};
use page::{Header, KIND_BRANCH};
use pagefile::{MappedFile, PageFile};
use snapshot::read_node;

/// Largest key accepted: above etcd's 1.5 MiB request limit plus the MVCC
/// revision suffix, so any key a client may send fits.
pub const MAX_KEY_BYTES: usize = 4 << 20;
/// Largest value accepted (etcd's request limit is 1.5 MiB by default and
/// configurable; this leaves room while keeping node offsets in 32 bits).
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// How a tree file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeOptions {
    /// Bytes per page, a power of two in 1 KiB..=64 KiB. Fixed when the file
    /// is created; opening it with another size is an error.
    pub page_size: u32,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions { page_size: 4096 }
    }
}

/// The tree file and its single writer. Readers take [`Snapshot`]s.
pub struct Tree {
    file: PageFile,
    meta: Meta,
    /// Set when an fdatasync failed: the kernel may have dropped the dirty
    /// pages, so nothing written afterwards can be trusted to be durable.
    poisoned: bool,
    /// While a compaction is under way: its id and the keys committed since
    /// its snapshot, which it must copy again before it can take over.
    compaction: Option<(u64, BTreeSet<Vec<u8>>)>,
    next_compaction_id: u64,
    freelist: Freelist,
    /// The last commit's sequence number in the file's read pins.
    seq: u64,
    /// The pin [`Tree::read`] hands out for the last commit, made on the
    /// first read after it (so a snapshot costs an `Arc` clone).
    pin: OnceLock<Arc<ReadPin>>,
}

impl Tree {
    /// Opens the tree at `path`, creating an empty one if the file is missing.
    pub fn open(path: &Path, opts: TreeOptions) -> Result<Tree, BtreeError> {
        Tree::open_at_most(path, opts, u64::MAX)
    }

    /// Opens the tree at its newest intact commit whose `user_meta` is at
    /// most `max_user_meta`, which may be the one before the newest: a
    /// caller that commits several trees in order (and records progress in
    /// the last one) rolls the earlier ones back to match after a crash
    /// between them. The older commit is intact because pages are only ever
    /// appended, and the next commit overwrites the newer slot and pages.
    /// No intact commit at or below the bound is an error naming the file.
    pub fn open_at_most(
        path: &Path,
        opts: TreeOptions,
        max_user_meta: u64,
    ) -> Result<Tree, BtreeError> {
        let ps = opts.page_size;
        if !ps.is_power_of_two() || !(1024..=65536).contains(&ps) {
            return Err(BtreeError::InvalidOptions(format!(
                "page_size {ps} is not a power of two in 1024..=65536"
            )));
        }
        let (mut file, _) = PageFile::open(path, u64::from(ps))?;
        // A file shorter than the two meta slots has never completed its
        // first sync (creation writes and syncs slot 0 before anything else),
        // so it holds nothing committed: start it afresh.
        let (meta, other) = if file.len() < 2 * u64::from(ps) {
            let meta = Meta::empty(ps);
            file.write_at(&meta.encode(), meta.slot_offset())?;
            file.sync()?;
            file.ensure_len(2 * u64::from(ps), true)?;
            (meta, None)
        } else {
            recover_meta(&file, ps, max_user_meta)?
        };
        let mut tree = Tree::from_parts(file, meta);
        let map = tree.file.map().clone();
        match freelist::unreachable_pages(&map, &tree.file.path, &meta, other.as_ref()) {
            Some((free, other_only)) => {
                tree.freelist = Freelist::from_open(free, other_only, tree.seq)
            }
            None => tracing::warn!(
                path = %tree.file.path.display(),
                "a page of the tree could not be read: no page is reused until a compaction"
            ),
        }
        Ok(tree)
    }

    fn from_parts(file: PageFile, meta: Meta) -> Tree {
        let seq = file.map().pins().next_seq();
        Tree {
            file,
            meta,
            poisoned: false,
            compaction: None,
            next_compaction_id: 0,
            freelist: Freelist::default(),
            seq,
            pin: OnceLock::new(),
        }
    }

    /// A consistent view of the last commit. Cheap (an `Arc` clone); never
    /// blocks or is blocked by the writer. Its pages are not reused while it
    /// lives.
    pub fn read(&self) -> Snapshot {
        let pin = self
            .pin
            .get_or_init(|| Arc::new(self.file.map().pins().pin(self.seq)));
        Snapshot {
            map: self.file.map().clone(),
            path: self.file.path.clone(),
            page_size: self.meta.page_size as usize,
            meta: self.meta,
            _pin: pin.clone(),
        }
    }

    /// Starts a batch of changes (there is one writer: the batch borrows the
    /// tree mutably).
    pub fn write(&mut self) -> WriteBatch<'_> {
        WriteBatch::new(self)
    }

    /// The `user_meta` of the last commit (0 for a new file).
    pub fn user_meta(&self) -> u64 {
        self.meta.user_meta
    }

    /// Id of the last commit; increases by one per commit.
    pub fn commit_id(&self) -> u64 {
        self.meta.txn
    }

    /// Keys in the tree as of the last commit.
    pub fn len(&self) -> u64 {
        self.meta.key_count
    }

    pub fn is_empty(&self) -> bool {
        self.meta.key_count == 0
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Size of the file on disk (it grows in chunks, so this includes
    /// preallocated space past the last commit).
    pub fn file_bytes(&self) -> u64 {
        self.file.len()
    }

    /// Bytes of the pages reachable from the last commit's root, plus the
    /// two meta slots: what [`Tree::compact_file`] would keep.
    pub fn live_bytes(&self) -> u64 {
        (self.meta.live_pages + FIRST_NODE_PAGE) * u64::from(self.meta.page_size)
    }

    /// Bytes up to the end of the last commit's pages: the high-water mark
    /// of pages in use (bbolt's `Tx.Size`), where the next commit appends
    /// what free pages cannot take.
    pub fn committed_bytes(&self) -> u64 {
        self.meta.page_count * self.page_size()
    }

    /// Bytes below [`Tree::committed_bytes`] that the last commit does not
    /// reach: free pages, reused by later commits, and what a compaction
    /// would give back to the filesystem.
    pub fn reclaimable_bytes(&self) -> u64 {
        self.committed_bytes().saturating_sub(self.live_bytes())
    }

    /// Bytes of pages free for reuse now or once durable and no snapshot
    /// reads them (at most [`Tree::reclaimable_bytes`]: pages an open could
    /// not account for are left alone until a compaction).
    pub fn free_bytes(&self) -> u64 {
        self.freelist.free_pages() * self.page_size()
    }

    fn page_size(&self) -> u64 {
        u64::from(self.meta.page_size)
    }

    /// Where a commit with id `txn` writes its nodes: straight to the file,
    /// into the pages free for it or after the committed pages, as they are
    /// encoded.
    fn commit_sink(&mut self, txn: u64) -> Result<NodeSink<'_>, BtreeError> {
        self.check_not_poisoned()?;
        let oldest_pin = self.file.map().pins().oldest();
        let free = self.freelist.take_reusable(oldest_pin);
        let (end, ps) = (self.meta.page_count, self.meta.page_size as usize);
        Ok(NodeSink::streaming(&self.file, end, free, txn, ps))
    }

    /// Writes the meta of a commit whose nodes a [`Tree::commit_sink`]
    /// wrote, then syncs once. `unused` are the free pages the sink did not
    /// take, `freed` the pages the commit stops referencing.
    fn write_commit(
        &mut self,
        meta: &Meta,
        touched: Vec<Vec<u8>>,
        unused: BTreeSet<u64>,
        freed: Vec<u64>,
    ) -> Result<(), BtreeError> {
        let written = self.write_meta_and_sync(meta);
        if let Err(e) = written {
            self.freelist.abandoned(unused);
            return Err(e);
        }
        self.meta = *meta;
        self.seq = self.file.map().pins().next_seq();
        self.pin = OnceLock::new();
        self.freelist.committed(unused, freed, self.seq);
        if let Some((_, keys)) = &mut self.compaction {
            keys.extend(touched);
        }
        Ok(())
    }

    fn write_meta_and_sync(&mut self, meta: &Meta) -> Result<(), BtreeError> {
        self.check_not_poisoned()?;
        let ps = self.page_size();
        self.file.ensure_len(meta.page_count * ps, true)?;
        self.file.write_at(&meta.encode(), meta.slot_offset())?;
        if let Err(e) = self.file.sync() {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    fn check_not_poisoned(&self) -> Result<(), BtreeError> {
        if self.poisoned {
            return Err(BtreeError::Poisoned {
                path: self.file.path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Whether commits must report the keys they touched (a compaction runs).
    fn tracks_keys(&self) -> bool {
        self.compaction.is_some()
    }

    /// Walks the whole tree checking every node's checksum, key order,
    /// separator bounds, per-child counts, equal leaf depth and the meta's
    /// key and live-page counts. Costs a full read; for tests and tooling.
    pub fn check_integrity(&self) -> Result<(), BtreeError> {
        let snap = self.read();
        let mut walk = IntegrityWalk {
            snap: &snap,
            leaf_depth: None,
            pages: 0,
        };
        let keys = if snap.meta.root == 0 {
            0
        } else {
            walk.node(snap.meta.root, 0, None, None)?
        };
        let corrupt = |reason: String| BtreeError::CorruptPage {
            path: self.file.path.to_path_buf(),
            page: snap.meta.root,
            reason,
        };
        if keys != snap.meta.key_count {
            return Err(corrupt(format!(
                "tree holds {keys} keys, meta says {}",
                snap.meta.key_count
            )));
        }
        if walk.pages != snap.meta.live_pages {
            return Err(corrupt(format!(
                "tree spans {} pages, meta says {} live",
                walk.pages, snap.meta.live_pages
            )));
        }
        Ok(())
    }
}

/// Picks the newest meta slot that decodes, records at most
/// `max_user_meta` and whose commit's nodes verify; also returns the other
/// slot's meta if it decodes (its pages must not be reused either).
fn recover_meta(
    file: &PageFile,
    page_size: u32,
    max_user_meta: u64,
) -> Result<(Meta, Option<Meta>), BtreeError> {
    let map = file.map();
    let ps = page_size as usize;
    let mut candidates = Vec::new();
    let mut reasons = [String::new(), String::new()];
    for (slot, reason) in reasons.iter_mut().enumerate() {
        let at = slot * ps;
        match Meta::decode(&map[at..(at + META_LEN).min(map.len())]) {
            Ok(m) => candidates.push(m),
            Err(r) => *reason = r,
        }
    }
    candidates.sort_by_key(|m| std::cmp::Reverse(m.txn));
    let all = candidates.clone();
    for m in candidates {
        let slot = (m.txn % 2) as usize;
        if m.page_size != page_size {
            return Err(BtreeError::PageSizeMismatch {
                path: file.path.to_path_buf(),
                expected: page_size,
                found: m.page_size,
            });
        }
        if m.user_meta > max_user_meta {
            reasons[slot] = format!(
                "commit {} records user_meta {}, above the {max_user_meta} asked for",
                m.txn, m.user_meta
            );
            continue;
        }
        match verify_commit(map, &file.path, &m) {
            Ok(()) => {
                let other = all.iter().find(|o| o.txn % 2 != m.txn % 2).copied();
                return Ok((m, other));
            }
            Err(e) => reasons[slot] = format!("commit {} does not verify: {e}", m.txn),
        }
    }
    let [slot0, slot1] = reasons;
    Err(BtreeError::NoValidMeta {
        path: file.path.to_path_buf(),
        slot0,
        slot1,
    })
}

/// Checks that every node of `m`'s commit is on disk intact: each parses, was
/// written by this commit, and together they match the meta's digest.
fn verify_commit(map: &MappedFile, path: &Path, m: &Meta) -> Result<(), BtreeError> {
    if m.version != FORMAT_V1 {
        return verify_scattered_commit(map, path, m);
    }
    let ps = m.page_size as usize;
    let mut digest = crc32fast::Hasher::new();
    let mut page = m.commit_start;
    while page < m.page_count {
        // Always hashed: these pages may be a torn commit's leftovers.
        let node = read_node(map, false, path, ps, m.page_count, page)?;
        let h = Header::read(&map[page as usize * ps..]);
        if h.txn != m.txn {
            return Err(BtreeError::CorruptPage {
                path: path.to_path_buf(),
                page,
                reason: format!("written by commit {}, expected {}", h.txn, m.txn),
            });
        }
        digest.update(&h.crc.to_le_bytes());
        page += node.span_bytes().div_ceil(ps) as u64;
    }
    if u64::from(digest.finalize()) != m.commit_digest {
        return Err(BtreeError::CorruptPage {
            path: path.to_path_buf(),
            page: m.commit_start,
            reason: "the commit's nodes do not match the meta's digest".to_string(),
        });
    }
    if m.root != 0 {
        read_node(map, false, path, ps, m.page_count, m.root)?;
    }
    Ok(())
}

/// [`verify_commit`] for version 2: the commit's nodes are the ones stamped
/// with its id, reached from the root through such nodes (a rewritten node's
/// ancestors are rewritten too). A node the commit did not get to write
/// still holds an older stamp (or garbage, which fails its checksum), so it
/// is missing from the count and sum.
fn verify_scattered_commit(map: &MappedFile, path: &Path, m: &Meta) -> Result<(), BtreeError> {
    let ps = m.page_size as usize;
    let corrupt = |page: u64, reason: String| BtreeError::CorruptPage {
        path: path.to_path_buf(),
        page,
        reason,
    };
    let stamp = |page: u64| -> Option<u64> {
        let off = usize::try_from(page).ok()?.checked_mul(ps)?;
        let bytes = map.get(off..off.checked_add(page::HEADER_LEN)?)?;
        Some(Header::read(bytes).txn)
    };
    let (mut nodes, mut digest) = (0u64, 0u64);
    let mut stack = Vec::new();
    if m.root != 0 {
        // The root is read in full whoever wrote it: it must be intact.
        read_node(map, false, path, ps, m.page_count, m.root)?;
        if stamp(m.root) == Some(m.txn) {
            stack.push(m.root);
        }
    }
    while let Some(page) = stack.pop() {
        let node = read_node(map, false, path, ps, m.page_count, page)?;
        let h = Header::read(&map[page as usize * ps..]);
        nodes += 1;
        if nodes > m.commit_nodes {
            return Err(corrupt(
                page,
                format!("more than the {} nodes the meta names", m.commit_nodes),
            ));
        }
        digest = digest.wrapping_add(node_digest(page, h.crc));
        if h.kind == KIND_BRANCH {
            for i in 0..node.len() {
                let child = node.child_page(i);
                if stamp(child) == Some(m.txn) {
                    stack.push(child);
                }
            }
        }
    }
    if nodes != m.commit_nodes || digest != m.commit_digest {
        return Err(corrupt(
            m.root,
            format!(
                "found {nodes} nodes of commit {} (meta says {}) or their digest differs",
                m.txn, m.commit_nodes
            ),
        ));
    }
    Ok(())
}

struct IntegrityWalk<'a> {
    snap: &'a Snapshot,
    leaf_depth: Option<usize>,
    pages: u64,
}

impl IntegrityWalk<'_> {
    /// Checks the subtree at `page` whose keys must lie in `[low, high)`;
    /// returns its key count.
    fn node(
        &mut self,
        page: u64,
        depth: usize,
        low: Option<&[u8]>,
        high: Option<&[u8]>,
    ) -> Result<u64, BtreeError> {
        let node = self.snap.node(page)?;
        self.pages += node.span_bytes().div_ceil(self.snap.page_size) as u64;
        let corrupt = |reason: String| BtreeError::CorruptPage {
            path: self.snap.path.to_path_buf(),
            page,
            reason,
        };
        let in_bounds = |k: &[u8]| low.is_none_or(|l| k >= l) && high.is_none_or(|h| k < h);
        if node.is_leaf() {
            if *self.leaf_depth.get_or_insert(depth) != depth {
                return Err(corrupt(format!(
                    "leaf at depth {depth}, others at {:?}",
                    self.leaf_depth
                )));
            }
            for i in 0..node.len() {
                let k = node.leaf_key(i);
                if !in_bounds(k) || (i > 0 && node.leaf_key(i - 1) >= k) {
                    return Err(corrupt(format!(
                        "key {i} is out of order or outside its parent's range"
                    )));
                }
            }
            return Ok(node.len() as u64);
        }
        let mut total = 0;
        for i in 0..node.len() {
            let lo = if i == 0 { low } else { Some(node.separator(i)) };
            let hi = if i + 1 < node.len() {
                Some(node.separator(i + 1))
            } else {
                high
            };
            if let Some(l) = lo.filter(|_| i > 0) {
                if !in_bounds(l) || hi.is_some_and(|h| l >= h) {
                    return Err(corrupt(format!("separator {i} is out of order")));
                }
            }
            let n = self.node(node.child_page(i), depth + 1, lo, hi)?;
            if n != node.child_count(i) {
                return Err(corrupt(format!(
                    "child {i} holds {n} keys, branch says {}",
                    node.child_count(i)
                )));
            }
            total += n;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod open_at_most_tests {
    use super::*;

    fn commit(tree: &mut Tree, key: &[u8], user_meta: u64) {
        let mut batch = tree.write();
        batch.insert(key, b"v").unwrap();
        batch.commit(user_meta).unwrap();
    }

    #[test]
    fn opens_the_previous_commit_when_the_newest_is_above_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut tree = Tree::open(&path, TreeOptions::default()).unwrap();
        commit(&mut tree, b"a", 5);
        commit(&mut tree, b"b", 9);
        drop(tree);

        let mut old = Tree::open_at_most(&path, TreeOptions::default(), 8).unwrap();
        assert_eq!(old.user_meta(), 5);
        assert_eq!(old.read().get(b"a").unwrap(), Some(b"v".to_vec()));
        assert_eq!(old.read().get(b"b").unwrap(), None);
        // Committing from the older state overwrites the newer commit.
        commit(&mut old, b"c", 7);
        drop(old);
        let tree = Tree::open(&path, TreeOptions::default()).unwrap();
        assert_eq!(tree.user_meta(), 7);
        assert_eq!(tree.read().get(b"b").unwrap(), None);
        assert_eq!(tree.read().get(b"c").unwrap(), Some(b"v".to_vec()));
        tree.check_integrity().unwrap();
        drop(tree);

        let newest = Tree::open_at_most(&path, TreeOptions::default(), 100).unwrap();
        assert_eq!(newest.user_meta(), 7);
        drop(newest);
        // Both slots (5 then 7) are above 4: nothing to open.
        let err = Tree::open_at_most(&path, TreeOptions::default(), 4)
            .err()
            .expect("no commit at or below 4");
        assert!(matches!(err, BtreeError::NoValidMeta { .. }), "{err}");
        assert!(err.to_string().contains("above the 4"), "{err}");
    }
}
