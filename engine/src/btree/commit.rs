//! Writing nodes: turning a batch's overlay into pages (reused or appended,
//! splitting what grew past a page), and bulk-building a fresh tree for
//! compaction.

use std::collections::BTreeSet;
use std::ops::Range;

use super::dirty::{Dirty, Link};
use super::dirty_leaf::DirtyLeaf;
use super::error::BtreeError;
use super::meta::node_digest;
use super::page::{
    branch_entry_len, encode_branch, encode_leaf_entries, leaf_entry_len, span_for, ChildRef,
    BRANCH_SLOT_LEN, HEADER_LEN,
};
use super::pagefile::PageFile;

/// Places encoded nodes: in free pages handed over by the freelist when it
/// has one that fits, else appended from `end`; keeps the commit digest
/// ([`node_digest`] summed, order-independent) and counts.
///
/// Nodes are encoded into `buf`, which holds consecutive pages starting at
/// `run_start`; a node placed anywhere else writes the run out first, so a
/// commit into contiguous free pages (or appending) still writes in large
/// pieces.
pub(crate) struct NodeSink<'f> {
    buf: Vec<u8>,
    run_start: u64,
    /// The next page to append at.
    end: u64,
    /// Pages this sink may overwrite (see `freelist.rs`).
    free: BTreeSet<u64>,
    /// Pages written so far (all spans).
    written: u64,
    nodes: u64,
    txn: u64,
    page_size: usize,
    digest: u64,
    /// A commit's sink writes its nodes out every [`STREAM_BYTES`] while
    /// they are encoded (see [`NodeSink::streaming`]).
    out: Option<&'f PageFile>,
    /// The first write error while streaming; later nodes are still encoded
    /// (so page numbers stay right) but not written, and
    /// [`NodeSink::finish`] reports it.
    error: Option<BtreeError>,
}

/// How many encoded bytes a commit gathers before writing them out. A
/// checkpoint rewrites thousands of leaves (~20 MiB): encoding all of them
/// into one buffer first cost a page fault per fresh 4 KiB of buffer plus
/// its reallocations, and the kernel then copied 20 MiB that had long left
/// the CPU caches. A buffer this size is reused and still in cache when
/// `pwrite` copies it.
const STREAM_BYTES: usize = 256 << 10;

impl NodeSink<'static> {
    /// A sink that only appends, from `start_page`, keeping the nodes until
    /// [`NodeSink::drain`] (a bulk build into a fresh file).
    pub(crate) fn new(start_page: u64, txn: u64, page_size: usize) -> NodeSink<'static> {
        NodeSink::with_out(None, start_page, BTreeSet::new(), txn, page_size)
    }
}

impl<'f> NodeSink<'f> {
    fn with_out(
        out: Option<&'f PageFile>,
        start_page: u64,
        free: BTreeSet<u64>,
        txn: u64,
        page_size: usize,
    ) -> NodeSink<'f> {
        let capacity = if out.is_some() {
            STREAM_BYTES + page_size
        } else {
            0
        };
        debug_assert!(free.last().is_none_or(|&p| p < start_page));
        NodeSink {
            buf: Vec::with_capacity(capacity),
            run_start: start_page,
            end: start_page,
            free,
            written: 0,
            nodes: 0,
            txn,
            page_size,
            digest: 0,
            out,
            error: None,
        }
    }

    /// A sink that writes its nodes to `file` as they are encoded, into the
    /// `free` pages (all below `end_page`) or appended from `end_page`; call
    /// [`NodeSink::finish`] to write the rest, then grow the file's map
    /// (`ensure_len`) over them before anyone reads them.
    /// Free pages and pages past the committed ones are invisible until a
    /// meta slot names them, so writing them early changes nothing for a
    /// crash.
    pub(crate) fn streaming(
        file: &'f PageFile,
        end_page: u64,
        free: BTreeSet<u64>,
        txn: u64,
        page_size: usize,
    ) -> NodeSink<'f> {
        NodeSink::with_out(Some(file), end_page, free, txn, page_size)
    }

    /// Writes what is still buffered; returns the free pages not used, and
    /// the first write error.
    pub(crate) fn finish(mut self) -> (BTreeSet<u64>, Result<(), BtreeError>) {
        self.stream(true);
        let free = std::mem::take(&mut self.free);
        match self.error.take() {
            Some(e) => (free, Err(e)),
            None => (free, Ok(())),
        }
    }

    fn stream(&mut self, force: bool) {
        if self.buf.is_empty() || (!force && self.buf.len() < STREAM_BYTES) {
            return;
        }
        if let Some(file) = self.out.filter(|_| self.error.is_none()) {
            // No `ensure_len` here: a write past the end extends the file by
            // itself, and growing (zero-filling a chunk ahead, remapping)
            // once per 256 KiB cost more than the writes. The commit grows
            // the file once, after its last node.
            let offset = self.run_start * self.page_size as u64;
            if let Err(e) = file.write_at(&self.buf, offset) {
                self.error = Some(e);
            }
        }
        self.run_start += (self.buf.len() / self.page_size) as u64;
        self.buf.clear();
    }

    /// Picks the page of a node of `span` pages that must lie above
    /// `above` (a branch's highest child), and makes `buf` end there.
    fn place(&mut self, span: usize, above: u64) -> u64 {
        let reused = if span == 1 {
            self.free.range(above + 1..).next().copied()
        } else {
            None
        };
        let page = match reused {
            Some(p) => {
                self.free.remove(&p);
                if let Some(file) = self.out {
                    file.map().clear_verified(p);
                }
                p
            }
            None => {
                let p = self.end;
                self.end += span as u64;
                p
            }
        };
        let run_end = self.run_start + (self.buf.len() / self.page_size) as u64;
        // A bulk build has no free pages: its nodes stay one run.
        debug_assert!(self.out.is_some() || page == run_end);
        if page != run_end {
            self.stream(true);
            self.run_start = page;
        }
        self.written += span as u64;
        page
    }

    /// Pages written so far.
    pub(crate) fn pages(&self) -> u64 {
        self.written
    }

    /// The page after the last appended one.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    pub(crate) fn nodes(&self) -> u64 {
        self.nodes
    }

    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    fn leaf<L: LeafEntries + ?Sized>(&mut self, entries: &L, range: Range<usize>) -> u64 {
        let len = HEADER_LEN
            + range
                .clone()
                .map(|i| {
                    let (k, v) = entries.entry(i);
                    leaf_entry_len(k, v)
                })
                .sum::<usize>();
        let page = self.place(span_for(len, self.page_size), 0);
        let crc = encode_leaf_entries(
            &mut self.buf,
            range.map(|i| entries.entry(i)),
            page,
            self.txn,
            self.page_size,
        );
        self.placed(page, crc);
        page
    }

    fn branch(&mut self, children: &[ChildRef]) -> u64 {
        let keys: usize = children.iter().skip(1).map(|c| c.separator.len()).sum();
        let len = HEADER_LEN + children.len() * BRANCH_SLOT_LEN + keys;
        let highest_child = children.iter().map(|c| c.page).max().unwrap_or(0);
        let page = self.place(span_for(len, self.page_size), highest_child);
        let crc = encode_branch(&mut self.buf, children, page, self.txn, self.page_size);
        self.placed(page, crc);
        page
    }

    fn placed(&mut self, page: u64, crc: u32) {
        self.digest = self.digest.wrapping_add(node_digest(page, crc));
        self.nodes += 1;
        if self.out.is_some() {
            self.stream(false);
        }
    }

    /// Writes the buffered nodes to `file` once enough have gathered (or
    /// always, with `force`), so a bulk build needs bounded memory.
    pub(crate) fn drain(&mut self, file: &PageFile, force: bool) -> Result<(), BtreeError> {
        const DRAIN_BYTES: usize = 4 << 20;
        if self.buf.is_empty() || (!force && self.buf.len() < DRAIN_BYTES) {
            return Ok(());
        }
        let offset = self.run_start * self.page_size as u64;
        file.write_at(&self.buf, offset)?;
        self.run_start += (self.buf.len() / self.page_size) as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Splits items of the given encoded sizes into runs that each fit a page
/// (an item larger than a page gets a run of its own), of about equal size so
/// a node that just overflowed becomes two half-full ones. Runs have at least
/// `min_items` items when there are that many: a branch needs two children
/// to make progress towards a single root.
fn chunks(sizes: &[usize], page_size: usize, min_items: usize) -> Vec<Range<usize>> {
    let cap = page_size - HEADER_LEN;
    let total: usize = sizes.iter().sum();
    if total <= cap || sizes.len() < 2 * min_items {
        let whole = 0..sizes.len();
        return vec![whole];
    }
    let target = total.div_ceil(total.div_ceil(cap));
    let mut out = Vec::new();
    let (mut start, mut cur) = (0, 0);
    for (i, &s) in sizes.iter().enumerate() {
        if i - start >= min_items && (cur + s > cap || cur >= target) {
            out.push(start..i);
            start = i;
            cur = 0;
        }
        cur += s;
    }
    match out.last_mut() {
        Some(last) if sizes.len() - start < min_items => last.end = sizes.len(),
        _ => out.push(start..sizes.len()),
    }
    out
}

/// A sorted run of leaf entries, however it is stored.
pub(crate) trait LeafEntries {
    fn entry_count(&self) -> usize;
    fn entry(&self, i: usize) -> (&[u8], &[u8]);
}

impl LeafEntries for Vec<(Vec<u8>, Vec<u8>)> {
    fn entry_count(&self) -> usize {
        self.len()
    }

    fn entry(&self, i: usize) -> (&[u8], &[u8]) {
        (&self[i].0, &self[i].1)
    }
}

impl LeafEntries for DirtyLeaf {
    fn entry_count(&self) -> usize {
        self.len()
    }

    fn entry(&self, i: usize) -> (&[u8], &[u8]) {
        DirtyLeaf::entry(self, i)
    }
}

/// Writes a sorted run of leaf entries as one or more leaves.
pub(crate) fn write_leaves<L: LeafEntries + ?Sized>(
    entries: &L,
    sink: &mut NodeSink<'_>,
) -> Vec<ChildRef> {
    let n = entries.entry_count();
    if n == 0 {
        return Vec::new();
    }
    let sizes: Vec<usize> = (0..n)
        .map(|i| {
            let (k, v) = entries.entry(i);
            leaf_entry_len(k, v)
        })
        .collect();
    chunks(&sizes, sink.page_size, 1)
        .into_iter()
        .map(|r| ChildRef {
            separator: entries.entry(r.start).0.to_vec(),
            count: r.len() as u64,
            page: sink.leaf(entries, r),
        })
        .collect()
}

/// Writes one level of branches over `children`; the separator of each
/// returned piece is the key pulled up between it and the piece before.
pub(crate) fn write_branches(children: &[ChildRef], sink: &mut NodeSink<'_>) -> Vec<ChildRef> {
    let sizes: Vec<usize> = children
        .iter()
        .map(|c| branch_entry_len(&c.separator))
        .collect();
    if sizes.is_empty() {
        return Vec::new();
    }
    chunks(&sizes, sink.page_size, 2)
        .into_iter()
        .map(|r| ChildRef {
            separator: children[r.start].separator.clone(),
            page: sink.branch(&children[r.clone()]),
            count: children[r].iter().map(|c| c.count).sum(),
        })
        .collect()
}

/// Writes the changed nodes under `link` (children first, so every pointer
/// refers to a page already placed) and returns what replaces it in its
/// parent: nothing if it emptied, several pieces if it split.
pub(crate) fn flush(link: Link, sink: &mut NodeSink<'_>) -> Vec<ChildRef> {
    let Some(node) = link.dirty else {
        return vec![ChildRef {
            separator: Vec::new(),
            page: link.page,
            count: link.count,
        }];
    };
    match *node {
        Dirty::Leaf(entries) => write_leaves(&entries, sink),
        Dirty::Branch(b) => {
            let mut refs = Vec::with_capacity(b.children.len());
            let separators = std::iter::once(Vec::new()).chain(b.keys);
            for (child, separator) in b.children.into_iter().zip(separators) {
                let mut pieces = flush(child, sink);
                if let Some(first) = pieces.first_mut() {
                    first.separator = separator;
                }
                refs.append(&mut pieces);
            }
            write_branches(&refs, sink)
        }
    }
}

/// Stacks branch levels over `level` until one node remains; returns the root.
pub(crate) fn build_root(mut level: Vec<ChildRef>, sink: &mut NodeSink<'_>) -> Option<ChildRef> {
    while level.len() > 1 {
        level = write_branches(&level, sink);
    }
    level.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_pages_and_keep_minimum() {
        let sizes = vec![100; 100];
        let runs = chunks(&sizes, 4096, 2);
        assert_eq!(runs.first().map(|r| r.start), Some(0));
        assert_eq!(runs.last().map(|r| r.end), Some(100));
        for w in runs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &runs {
            assert!(r.len() >= 2);
            assert!(sizes[r.clone()].iter().sum::<usize>() <= 4096 - HEADER_LEN);
        }
        // Just over one page splits into two roughly equal halves.
        let runs = chunks(&vec![100; 41], 4096, 1);
        assert_eq!(runs.len(), 2);
        assert!(runs[0].len().abs_diff(runs[1].len()) <= 1);
        // Huge items: each gets its own run, but branches keep two per node.
        assert_eq!(chunks(&[10_000, 10_000, 10_000], 4096, 1).len(), 3);
        assert_eq!(chunks(&[10_000, 10_000, 10_000], 4096, 2), vec![0..3]);
    }
}

#[cfg(test)]
mod streaming_tests {
    use super::STREAM_BYTES;
    use crate::btree::{Tree, TreeOptions};

    fn key(i: u64) -> Vec<u8> {
        format!("key/{:08}", i.wrapping_mul(2_654_435_761) % 1_000_003).into_bytes()
    }

    /// A commit far larger than the streaming buffer is written in many
    /// pieces while the file grows under it; reopening must find every node
    /// (the meta's digest covers them all) and the previous commits intact.
    #[test]
    fn commits_larger_than_the_stream_buffer_reopen_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut tree = Tree::open(&path, TreeOptions::default()).unwrap();
        let value = vec![3u8; 300];
        let per_batch = 4 * STREAM_BYTES as u64 / 300;
        for round in 0..3u64 {
            let mut batch = tree.write();
            for i in round * per_batch..(round + 1) * per_batch {
                batch.insert(&key(i), &value).unwrap();
            }
            batch.commit(round + 1).unwrap();
            let pages = tree.committed_bytes();
            assert!(round == 0 || pages > 4 * STREAM_BYTES as u64, "{pages}");
        }
        drop(tree);
        let tree = Tree::open(&path, TreeOptions::default()).unwrap();
        assert_eq!(tree.user_meta(), 3);
        assert_eq!(tree.len(), 3 * per_batch);
        tree.check_integrity().unwrap();
        let snap = tree.read();
        for i in 0..3 * per_batch {
            assert_eq!(snap.get_ref(&key(i)).unwrap(), Some(&value[..]));
        }
        drop(snap);
        // The older commit (slot of txn 2) is still a valid rollback point.
        drop(tree);
        let old = Tree::open_at_most(&path, TreeOptions::default(), 2).unwrap();
        assert_eq!(old.len(), 2 * per_batch);
        old.check_integrity().unwrap();
    }
}
