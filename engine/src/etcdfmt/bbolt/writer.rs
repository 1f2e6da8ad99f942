//! Writes a bbolt file as one forward stream, in bounded memory.
//!
//! The meta pages come first in the file but name the root page and the
//! page count, which are known only once every page is laid out; so the
//! file is laid out twice over the same (unchanging) source: a planning
//! pass that only counts pages, then a writing pass. Each bucket's tree is
//! built bottom-up as its sorted entries arrive: a leaf is written once
//! full, and each branch level keeps just the page it is filling, so
//! memory is a page per level plus the largest single entry.
//!
//! File layout: meta pages 0 and 1 (equal but for their transaction ids),
//! then each bucket's pages, then the root bucket's page(s) last. No
//! freelist is stored (etcd runs bbolt that way too: every page no bucket
//! reaches is free), and every page below the high water mark is reached.

use std::io::Write;

use super::page::{
    Header, Meta, BUCKET_HEADER, ELEMENT, FLAG_BRANCH, FLAG_LEAF, FLAG_META, HEADER, LEAF_BUCKET,
    NO_FREELIST, PAGE_SIZE,
};
use crate::etcdfmt::error::EtcdFmtError;

/// Buckets smaller than this are stored inline in their parent, as bbolt
/// does (a quarter page).
const INLINE_MAX: usize = PAGE_SIZE / 4;

/// Called with each (key, value) of a bucket, in key order.
pub type EntrySink<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), EtcdFmtError> + 'a;

/// Gives a bucket's entries, sorted by key, each time it is asked (once
/// per pass).
pub trait BucketSource {
    fn for_each(&self, f: &mut EntrySink<'_>) -> Result<(), EtcdFmtError>;
}

impl BucketSource for Vec<(Vec<u8>, Vec<u8>)> {
    fn for_each(&self, f: &mut EntrySink<'_>) -> Result<(), EtcdFmtError> {
        self.iter().try_for_each(|(k, v)| f(k, v))
    }
}

/// A bucket to write: its name and where its entries come from.
pub type BucketSpec<'a> = (&'a [u8], &'a dyn BucketSource);

/// What the planning pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Pages in the file (its length is this times [`PAGE_SIZE`]).
    pub pages: u64,
    /// The root bucket's page.
    pub root: u64,
}

impl Plan {
    pub fn file_len(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

/// Lays out a file of `buckets` (sorted by name, no duplicates) without
/// writing it.
pub fn plan(buckets: &[BucketSpec<'_>]) -> Result<Plan, EtcdFmtError> {
    let mut sink = Sink {
        out: None,
        next: 2,
        buf: Vec::new(),
    };
    let root = lay_out(buckets, &mut sink)?;
    Ok(Plan {
        pages: sink.next,
        root,
    })
}

/// Writes the file `plan` laid out (the same `buckets`, unchanged).
pub fn write(
    buckets: &[BucketSpec<'_>],
    plan: Plan,
    out: &mut dyn Write,
) -> Result<(), EtcdFmtError> {
    for (id, txid) in [(0u64, 2u64), (1, 1)] {
        let mut page = Vec::with_capacity(PAGE_SIZE);
        Header {
            id,
            flags: FLAG_META,
            count: 0,
            overflow: 0,
        }
        .write(&mut page);
        page.extend_from_slice(
            &Meta {
                page_size: PAGE_SIZE as u32,
                root: plan.root,
                freelist: NO_FREELIST,
                high_water: plan.pages,
                txid,
            }
            .encode(),
        );
        page.resize(PAGE_SIZE, 0);
        out.write_all(&page).map_err(EtcdFmtError::stream)?;
    }
    let mut sink = Sink {
        out: Some(out),
        next: 2,
        buf: Vec::new(),
    };
    let root = lay_out(buckets, &mut sink)?;
    if root != plan.root || sink.next != plan.pages {
        return Err(EtcdFmtError::Internal(format!(
            "the source changed between passes: planned {} pages rooted at {}, wrote {} rooted at {root}",
            plan.pages, plan.root, sink.next
        )));
    }
    Ok(())
}

fn lay_out(buckets: &[BucketSpec<'_>], sink: &mut Sink<'_>) -> Result<u64, EtcdFmtError> {
    assert!(
        buckets.windows(2).all(|w| w[0].0 < w[1].0),
        "buckets must be sorted by name"
    );
    let mut root = TreeBuilder::default();
    for (name, source) in buckets {
        let mut tree = TreeBuilder::default();
        let mut last: Option<Vec<u8>> = None;
        source.for_each(&mut |k, v| {
            if last.as_deref().is_some_and(|l| l >= k) {
                return Err(EtcdFmtError::Internal(format!(
                    "bucket {:?}: keys out of order",
                    String::from_utf8_lossy(name)
                )));
            }
            last = Some(k.to_vec());
            tree.add(k, v, 0, sink)
        })?;
        let value = match tree.finish_bucket(sink)? {
            Finished::Inline(page) => {
                let mut v = vec![0u8; BUCKET_HEADER];
                v.extend_from_slice(&page);
                v
            }
            Finished::Root(id) => {
                let mut v = id.to_le_bytes().to_vec();
                v.extend_from_slice(&0u64.to_le_bytes());
                v
            }
        };
        root.add(name, &value, LEAF_BUCKET, sink)?;
    }
    root.finish_tree(sink)
}

/// Where pages go: nowhere while planning (only ids are counted).
struct Sink<'w> {
    out: Option<&'w mut dyn Write>,
    next: u64,
    buf: Vec<u8>,
}

impl Sink<'_> {
    fn writing(&self) -> bool {
        self.out.is_some()
    }

    /// Takes the next ids for a page of `len` bytes (with overflow pages)
    /// and, when writing, writes what `encode` puts after the header.
    fn page(
        &mut self,
        len: usize,
        flags: u16,
        count: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<u64, EtcdFmtError> {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let id = self.next;
        self.next += pages as u64;
        if let Some(out) = self.out.as_mut() {
            self.buf.clear();
            Header {
                id,
                flags,
                count: u16::try_from(count)
                    .map_err(|_| EtcdFmtError::Internal(format!("{count} elements on one page")))?,
                overflow: (pages - 1) as u32,
            }
            .write(&mut self.buf);
            encode(&mut self.buf);
            assert_eq!(self.buf.len(), len, "page {id}: encoded length");
            self.buf.resize(pages * PAGE_SIZE, 0);
            out.write_all(&self.buf).map_err(EtcdFmtError::stream)?;
        }
        Ok(id)
    }
}

struct LeafItem {
    key: Vec<u8>,
    /// Empty while planning (only its length counts).
    value: Vec<u8>,
    value_len: usize,
    flags: u32,
}

/// The branch page a level is filling: (first key of child, child page).
#[derive(Default)]
struct Level {
    children: Vec<(Vec<u8>, u64)>,
    bytes: usize,
}

#[derive(Default)]
struct TreeBuilder {
    leaf: Vec<LeafItem>,
    leaf_bytes: usize,
    levels: Vec<Level>,
    pages: u64,
}

enum Finished {
    Inline(Vec<u8>),
    Root(u64),
}

impl TreeBuilder {
    fn add(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u32,
        sink: &mut Sink<'_>,
    ) -> Result<(), EtcdFmtError> {
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.is_empty() && HEADER + self.leaf_bytes + size > PAGE_SIZE {
            self.flush_leaf(sink)?;
        }
        self.leaf.push(LeafItem {
            key: key.to_vec(),
            value: if sink.writing() {
                value.to_vec()
            } else {
                Vec::new()
            },
            value_len: value.len(),
            flags,
        });
        self.leaf_bytes += size;
        Ok(())
    }

    fn flush_leaf(&mut self, sink: &mut Sink<'_>) -> Result<(), EtcdFmtError> {
        let items = std::mem::take(&mut self.leaf);
        let len = HEADER + self.leaf_bytes;
        self.leaf_bytes = 0;
        let id = sink.page(len, FLAG_LEAF, items.len(), |out| encode_leaf(&items, out))?;
        self.pages += 1;
        let first = items.into_iter().next().map(|i| i.key).unwrap_or_default();
        self.push_child(0, first, id, sink)
    }

    fn push_child(
        &mut self,
        level: usize,
        key: Vec<u8>,
        id: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), EtcdFmtError> {
        if self.levels.len() == level {
            self.levels.push(Level::default());
        }
        let size = ELEMENT + key.len();
        let l = &self.levels[level];
        if !l.children.is_empty() && HEADER + l.bytes + size > PAGE_SIZE {
            self.flush_branch(level, sink)?;
        }
        let l = &mut self.levels[level];
        l.children.push((key, id));
        l.bytes += size;
        Ok(())
    }

    fn flush_branch(&mut self, level: usize, sink: &mut Sink<'_>) -> Result<(), EtcdFmtError> {
        let l = std::mem::take(&mut self.levels[level]);
        let id = sink.page(HEADER + l.bytes, FLAG_BRANCH, l.children.len(), |out| {
            encode_branch(&l.children, out)
        })?;
        let first = l
            .children
            .into_iter()
            .next()
            .map(|c| c.0)
            .unwrap_or_default();
        self.push_child(level + 1, first, id, sink)
    }

    /// Ends a bucket: inline if it never filled a page and is small.
    fn finish_bucket(mut self, sink: &mut Sink<'_>) -> Result<Finished, EtcdFmtError> {
        if self.pages == 0 && HEADER + self.leaf_bytes <= INLINE_MAX {
            let mut page = Vec::with_capacity(HEADER + self.leaf_bytes);
            Header {
                id: 0,
                flags: FLAG_LEAF,
                count: self.leaf.len() as u16,
                overflow: 0,
            }
            .write(&mut page);
            if sink.writing() {
                encode_leaf(&self.leaf, &mut page);
            } else {
                page.resize(HEADER + self.leaf_bytes, 0);
            }
            return Ok(Finished::Inline(page));
        }
        Ok(Finished::Root(self.finish_tree(sink)?))
    }

    /// Writes what is pending, bottom up; the root page.
    fn finish_tree(&mut self, sink: &mut Sink<'_>) -> Result<u64, EtcdFmtError> {
        if !self.leaf.is_empty() || self.pages == 0 {
            self.flush_leaf(sink)?;
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].children.len() == 1 {
                return Ok(self.levels[level].children[0].1);
            }
            if !self.levels[level].children.is_empty() {
                self.flush_branch(level, sink)?;
            }
            level += 1;
        }
    }
}

fn encode_leaf(items: &[LeafItem], out: &mut Vec<u8>) {
    let mut data = (items.len() * ELEMENT) as u32;
    for (i, item) in items.iter().enumerate() {
        let pos = data - (i * ELEMENT) as u32;
        out.extend_from_slice(&item.flags.to_le_bytes());
        out.extend_from_slice(&pos.to_le_bytes());
        out.extend_from_slice(&(item.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(item.value_len as u32).to_le_bytes());
        data += (item.key.len() + item.value_len) as u32;
    }
    for item in items {
        out.extend_from_slice(&item.key);
        out.extend_from_slice(&item.value);
    }
}

fn encode_branch(children: &[(Vec<u8>, u64)], out: &mut Vec<u8>) {
    let mut data = (children.len() * ELEMENT) as u32;
    for (i, (key, id)) in children.iter().enumerate() {
        let pos = data - (i * ELEMENT) as u32;
        out.extend_from_slice(&pos.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        data += key.len() as u32;
    }
    for (key, _) in children {
        out.extend_from_slice(key);
    }
}
