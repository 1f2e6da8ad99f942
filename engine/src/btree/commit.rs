//! Writing nodes: turning a batch's overlay into appended pages (splitting
//! what grew past a page), and bulk-building a fresh tree for compaction.

use std::ops::Range;

use super::dirty::{Dirty, Link};
use super::error::BtreeError;
use super::page::{
    branch_entry_len, encode_branch, encode_leaf, leaf_entry_len, ChildRef, HEADER_LEN,
};
use super::pagefile::PageFile;

/// Appends encoded nodes at consecutive pages from `start_page`, keeping the
/// commit digest (CRC32 over the node checksums, in page order).
pub(crate) struct NodeSink {
    buf: Vec<u8>,
    start_page: u64,
    /// Pages already handed to the file by [`NodeSink::drain`].
    drained_pages: u64,
    txn: u64,
    page_size: usize,
    digest: crc32fast::Hasher,
}

impl NodeSink {
    pub(crate) fn new(start_page: u64, txn: u64, page_size: usize) -> NodeSink {
        NodeSink {
            buf: Vec::new(),
            start_page,
            drained_pages: 0,
            txn,
            page_size,
            digest: crc32fast::Hasher::new(),
        }
    }

    fn next_page(&self) -> u64 {
        self.start_page + self.drained_pages + (self.buf.len() / self.page_size) as u64
    }

    /// Pages appended so far.
    pub(crate) fn pages(&self) -> u64 {
        self.next_page() - self.start_page
    }

    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn digest(&self) -> u32 {
        self.digest.clone().finalize()
    }

    fn leaf(&mut self, entries: &[(Vec<u8>, Vec<u8>)]) -> u64 {
        let page = self.next_page();
        let crc = encode_leaf(&mut self.buf, entries, page, self.txn, self.page_size);
        self.digest.update(&crc.to_le_bytes());
        page
    }

    fn branch(&mut self, children: &[ChildRef]) -> u64 {
        let page = self.next_page();
        let crc = encode_branch(&mut self.buf, children, page, self.txn, self.page_size);
        self.digest.update(&crc.to_le_bytes());
        page
    }

    /// Writes the buffered nodes to `file` once enough have gathered (or
    /// always, with `force`), so a bulk build needs bounded memory.
    pub(crate) fn drain(&mut self, file: &PageFile, force: bool) -> Result<(), BtreeError> {
        const DRAIN_BYTES: usize = 4 << 20;
        if self.buf.is_empty() || (!force && self.buf.len() < DRAIN_BYTES) {
            return Ok(());
        }
        let offset = (self.start_page + self.drained_pages) * self.page_size as u64;
        file.write_at(&self.buf, offset)?;
        self.drained_pages += (self.buf.len() / self.page_size) as u64;
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

/// Writes a sorted run of leaf entries as one or more leaves.
pub(crate) fn write_leaves(entries: &[(Vec<u8>, Vec<u8>)], sink: &mut NodeSink) -> Vec<ChildRef> {
    let sizes: Vec<usize> = entries.iter().map(|(k, v)| leaf_entry_len(k, v)).collect();
    if sizes.is_empty() {
        return Vec::new();
    }
    chunks(&sizes, sink.page_size, 1)
        .into_iter()
        .map(|r| ChildRef {
            separator: entries[r.start].0.clone(),
            page: sink.leaf(&entries[r.clone()]),
            count: r.len() as u64,
        })
        .collect()
}

/// Writes one level of branches over `children`; the separator of each
/// returned piece is the key pulled up between it and the piece before.
pub(crate) fn write_branches(children: &[ChildRef], sink: &mut NodeSink) -> Vec<ChildRef> {
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
pub(crate) fn flush(link: Link, sink: &mut NodeSink) -> Vec<ChildRef> {
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
pub(crate) fn build_root(mut level: Vec<ChildRef>, sink: &mut NodeSink) -> Option<ChildRef> {
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
