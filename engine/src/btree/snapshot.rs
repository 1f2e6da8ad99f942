//! Read-only views of one commit: point reads, ordered range iteration in
//! both directions, and `count` over a range in O(log n) node reads.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::BtreeError;
use super::freelist::ReadPin;
use super::meta::{Meta, FIRST_NODE_PAGE};
use super::page::{Header, NodeView, HEADER_LEN};
use super::pagefile::MappedFile;

/// Finds and validates the node at `page` of a map holding `page_count`
/// committed pages. With `use_verified`, a node that already passed its
/// checksum in this map is not hashed again.
pub(crate) fn read_node<'a>(
    map: &'a MappedFile,
    use_verified: bool,
    path: &Path,
    page_size: usize,
    page_count: u64,
    page: u64,
) -> Result<NodeView<'a>, BtreeError> {
    let corrupt = |reason: String| BtreeError::CorruptPage {
        path: path.to_path_buf(),
        page,
        reason,
    };
    if !(FIRST_NODE_PAGE..page_count).contains(&page) {
        return Err(corrupt(format!(
            "referenced page is outside the committed pages {FIRST_NODE_PAGE}..{page_count}"
        )));
    }
    let Some(off) = usize::try_from(page)
        .ok()
        .and_then(|p| p.checked_mul(page_size))
        .filter(|off| off.saturating_add(page_size) <= map.len())
    else {
        return Err(corrupt(format!(
            "page lies past the end of the file ({} bytes)",
            map.len()
        )));
    };
    let h = Header::read(&map[off..off + HEADER_LEN]);
    let span = u64::from(h.span);
    if span == 0 || page + span > page_count {
        return Err(corrupt(format!(
            "node span of {span} pages does not fit the committed pages (up to {page_count})"
        )));
    }
    let end = off.saturating_add((span as usize).saturating_mul(page_size));
    if end > map.len() {
        return Err(corrupt(format!(
            "node ends past the end of the file ({} bytes)",
            map.len()
        )));
    }
    if use_verified && map.is_verified(page) {
        return Ok(NodeView::trusted(&map[off..end]));
    }
    let node = NodeView::parse(&map[off..end], page).map_err(corrupt)?;
    if use_verified {
        map.mark_verified(page);
    }
    Ok(node)
}

/// A key and its value, borrowed from a snapshot's map.
pub type EntryRef<'a> = (&'a [u8], &'a [u8]);

/// A consistent, read-only view of the tree as of one commit. Cheap to clone;
/// it keeps its memory map alive, so later commits, file growth and
/// [`super::Tree::compact_file`] never change what it sees.
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) map: Arc<MappedFile>,
    pub(crate) path: Arc<PathBuf>,
    pub(crate) page_size: usize,
    pub(crate) meta: Meta,
    /// Keeps the writer from reusing the pages this commit reads.
    pub(crate) _pin: Arc<ReadPin>,
}

impl Snapshot {
    pub(crate) fn node(&self, page: u64) -> Result<NodeView<'_>, BtreeError> {
        read_node(
            &self.map,
            true,
            &self.path,
            self.page_size,
            self.meta.page_count,
            page,
        )
    }

    /// Keys in the tree.
    pub fn len(&self) -> u64 {
        self.meta.key_count
    }

    pub fn is_empty(&self) -> bool {
        self.meta.key_count == 0
    }

    /// The `user_meta` stored by the commit this snapshot shows.
    pub fn user_meta(&self) -> u64 {
        self.meta.user_meta
    }

    /// Id of the commit this snapshot shows.
    pub fn commit_id(&self) -> u64 {
        self.meta.txn
    }

    /// The value stored under `key`, borrowed from the map (no copy).
    pub fn get_ref(&self, key: &[u8]) -> Result<Option<&[u8]>, BtreeError> {
        if self.meta.root == 0 {
            return Ok(None);
        }
        let mut node = self.node(self.meta.root)?;
        while !node.is_leaf() {
            node = self.node(node.child_page(node.child_for(key)))?;
        }
        Ok(node.leaf_search(key).ok().map(|i| node.leaf_value(i)))
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BtreeError> {
        Ok(self.get_ref(key)?.map(<[u8]>::to_vec))
    }

    /// Entries with keys in the range, ascending.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> RangeIter {
        RangeIter::new(self.clone(), start, end, Direction::Forward)
    }

    /// Entries with keys in the range, descending.
    pub fn range_rev(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> RangeIter {
        RangeIter::new(self.clone(), start, end, Direction::Backward)
    }

    /// Number of keys in the range, from the per-child counts in branch nodes:
    /// two root-to-leaf descents whatever the size of the range.
    pub fn count(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64, BtreeError> {
        let lower = match start {
            Bound::Unbounded => 0,
            Bound::Included(k) => self.rank(k, false)?,
            Bound::Excluded(k) => self.rank(k, true)?,
        };
        let upper = match end {
            Bound::Unbounded => self.meta.key_count,
            Bound::Included(k) => self.rank(k, true)?,
            Bound::Excluded(k) => self.rank(k, false)?,
        };
        Ok(upper.saturating_sub(lower))
    }

    /// Keys `< key` (or `≤ key` when `inclusive`).
    fn rank(&self, key: &[u8], inclusive: bool) -> Result<u64, BtreeError> {
        if self.meta.root == 0 {
            return Ok(0);
        }
        let mut below = 0;
        let mut node = self.node(self.meta.root)?;
        while !node.is_leaf() {
            let c = node.child_for(key);
            below += (0..c).map(|i| node.child_count(i)).sum::<u64>();
            node = self.node(node.child_page(c))?;
        }
        let pos = match node.leaf_search(key) {
            Ok(i) if inclusive => i + 1,
            Ok(i) | Err(i) => i,
        };
        Ok(below + pos as u64)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

/// A node on the iterator's root-to-leaf path: where it lies in the map (it
/// was validated when pushed) and the position in it. For a branch, `idx` is
/// the child being visited. For a leaf, going forward it is the next entry;
/// going backward it is one past the next entry (0 = exhausted).
struct Frame {
    off: usize,
    len: usize,
    idx: usize,
}

/// Iterator over a key range of a [`Snapshot`], in either direction. Yields
/// owned pairs; [`RangeIter::next_ref`] lends them without copying.
pub struct RangeIter {
    snap: Snapshot,
    frames: Vec<Frame>,
    /// The bound the iterator walks towards (end going forward, start backward).
    stop: Bound<Vec<u8>>,
    direction: Direction,
    done: bool,
    seeked: Option<Bound<Vec<u8>>>,
}

impl RangeIter {
    fn new(
        snap: Snapshot,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
    ) -> RangeIter {
        let own = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
        let (from, stop) = match direction {
            Direction::Forward => (own(start), own(end)),
            Direction::Backward => (own(end), own(start)),
        };
        let done = snap.meta.root == 0;
        RangeIter {
            snap,
            frames: Vec::new(),
            stop,
            direction,
            done,
            seeked: Some(from),
        }
    }

    fn push(&mut self, page: u64, from: &Bound<Vec<u8>>) -> Result<bool, BtreeError> {
        let node = self.snap.node(page)?;
        let off = page as usize * self.snap.page_size;
        let forward = self.direction == Direction::Forward;
        let idx = match (from, node.is_leaf()) {
            (Bound::Unbounded, false) => {
                if forward {
                    0
                } else {
                    node.len() - 1
                }
            }
            (Bound::Unbounded, true) => {
                if forward {
                    0
                } else {
                    node.len()
                }
            }
            (Bound::Included(k) | Bound::Excluded(k), false) => node.child_for(k),
            (Bound::Included(k), true) => match node.leaf_search(k) {
                Ok(i) if !forward => i + 1,
                Ok(i) | Err(i) => i,
            },
            (Bound::Excluded(k), true) => match node.leaf_search(k) {
                Ok(i) if forward => i + 1,
                Ok(i) | Err(i) => i,
            },
        };
        let leaf = node.is_leaf();
        let len = node.span_bytes();
        self.frames.push(Frame { off, len, idx });
        Ok(leaf)
    }

    /// Pushes nodes from `page` down to a leaf, positioned at `from`.
    fn descend(&mut self, mut page: u64, from: &Bound<Vec<u8>>) -> Result<(), BtreeError> {
        loop {
            if self.push(page, from)? {
                return Ok(());
            }
            let f = &self.frames[self.frames.len() - 1];
            page = NodeView::trusted(&self.snap.map[f.off..f.off + f.len]).child_page(f.idx);
        }
    }

    /// Position of the next entry: (node offset, node length, index).
    fn advance(&mut self) -> Result<Option<(usize, usize, usize)>, BtreeError> {
        if let Some(from) = self.seeked.take() {
            self.descend(self.snap.meta.root, &from)?;
        }
        let forward = self.direction == Direction::Forward;
        while let Some(f) = self.frames.last_mut() {
            let v = NodeView::trusted(&self.snap.map[f.off..f.off + f.len]);
            let n = v.len();
            if v.is_leaf() {
                if forward && f.idx < n {
                    f.idx += 1;
                    return Ok(Some((f.off, f.len, f.idx - 1)));
                }
                if !forward && f.idx > 0 {
                    f.idx -= 1;
                    return Ok(Some((f.off, f.len, f.idx)));
                }
                self.frames.pop();
                continue;
            }
            let next = if forward {
                (f.idx + 1 < n).then(|| f.idx + 1)
            } else {
                f.idx.checked_sub(1)
            };
            match next {
                Some(i) => {
                    f.idx = i;
                    let child = v.child_page(i);
                    self.descend(child, &Bound::Unbounded)?;
                }
                None => {
                    self.frames.pop();
                }
            }
        }
        Ok(None)
    }

    /// The next entry, borrowed from the snapshot's map.
    pub fn next_ref(&mut self) -> Option<Result<EntryRef<'_>, BtreeError>> {
        if self.done {
            return None;
        }
        let (off, len, idx) = match self.advance() {
            Ok(Some(pos)) => pos,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let leaf = NodeView::trusted(&self.snap.map[off..off + len]);
        let key = leaf.leaf_key(idx);
        let inside = match (&self.stop, self.direction) {
            (Bound::Unbounded, _) => true,
            (Bound::Included(s), Direction::Forward) => key <= s.as_slice(),
            (Bound::Excluded(s), Direction::Forward) => key < s.as_slice(),
            (Bound::Included(s), Direction::Backward) => key >= s.as_slice(),
            (Bound::Excluded(s), Direction::Backward) => key > s.as_slice(),
        };
        if !inside {
            self.done = true;
            return None;
        }
        Some(Ok((key, leaf.leaf_value(idx))))
    }
}

impl Iterator for RangeIter {
    type Item = Result<(Vec<u8>, Vec<u8>), BtreeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
}
