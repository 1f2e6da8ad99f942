//! On-disk node layout: a node is a run of contiguous pages written once and
//! never changed, read in place from the memory map.
//!
//! Every node starts with a 32-byte little-endian header:
//!
//! | bytes  | field                                                    |
//! |--------|----------------------------------------------------------|
//! | 0..4   | CRC32 of bytes 4..span×page_size                         |
//! | 4      | kind: 1 = leaf, 2 = branch                               |
//! | 5..8   | zero                                                     |
//! | 8..12  | span: pages the node occupies (≥ 1)                      |
//! | 12..16 | n: entries (leaf) or children (branch)                   |
//! | 16..24 | the node's own page number (catches misdirected writes)  |
//! | 24..32 | id of the commit that wrote it                           |
//!
//! A leaf follows with `n` slots of `(offset u32, key_len u32, value_len u32)`
//! and the key and value bytes they point at. A branch follows with `n` slots
//! of `(child page u64, keys in child's subtree u64, offset u32, key_len u32)`;
//! the key of slot `i > 0` is the separator: every key in child `i` is ≥ it
//! and every key in child `i-1` is < it. Slot 0 carries no key.
//!
//! Nodes normally fit one page; a leaf with a value larger than a page simply
//! spans as many pages as it needs, so no separate overflow chain exists.

pub(crate) const HEADER_LEN: usize = 32;
pub(crate) const LEAF_SLOT_LEN: usize = 12;
pub(crate) const BRANCH_SLOT_LEN: usize = 24;
pub(crate) const KIND_LEAF: u8 = 1;
pub(crate) const KIND_BRANCH: u8 = 2;

/// Bytes a leaf entry adds to its node.
pub(crate) fn leaf_entry_len(key: &[u8], value: &[u8]) -> usize {
    LEAF_SLOT_LEN + key.len() + value.len()
}

/// Bytes a branch child adds to its node (its separator key included).
pub(crate) fn branch_entry_len(separator: &[u8]) -> usize {
    BRANCH_SLOT_LEN + separator.len()
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The node's header fields, read before the node itself is validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub crc: u32,
    pub kind: u8,
    pub span: u32,
    pub n: u32,
    pub page: u64,
    pub txn: u64,
}

impl Header {
    /// Reads the header from the first page of a node. `first_page` must be at
    /// least [`HEADER_LEN`] bytes.
    pub(crate) fn read(first_page: &[u8]) -> Header {
        Header {
            crc: read_u32(first_page, 0),
            kind: first_page[4],
            span: read_u32(first_page, 8),
            n: read_u32(first_page, 12),
            page: read_u64(first_page, 16),
            txn: read_u64(first_page, 24),
        }
    }
}

/// A validated node in the map. Construction checks the checksum and that
/// every slot points inside the node, so the accessors cannot go out of bounds.
#[derive(Clone, Copy)]
pub(crate) struct NodeView<'a> {
    bytes: &'a [u8],
    kind: u8,
    n: usize,
}

impl<'a> NodeView<'a> {
    /// Validates `bytes` (the node's whole span) as the node stored at `page`.
    /// Returns the reason on failure; the caller adds file and page.
    pub(crate) fn parse(bytes: &'a [u8], page: u64) -> Result<NodeView<'a>, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "node of {} bytes is shorter than its header",
                bytes.len()
            ));
        }
        let h = Header::read(bytes);
        let found = crc32fast::hash(&bytes[4..]);
        if found != h.crc {
            return Err(format!(
                "checksum mismatch: stored {:#010x}, computed {:#010x}",
                h.crc, found
            ));
        }
        if h.page != page {
            return Err(format!(
                "header names page {}, read at page {}",
                h.page, page
            ));
        }
        let n = h.n as usize;
        let slot_len = match h.kind {
            KIND_LEAF => LEAF_SLOT_LEN,
            KIND_BRANCH => BRANCH_SLOT_LEN,
            k => return Err(format!("unknown node kind {k}")),
        };
        let table_end = n
            .checked_mul(slot_len)
            .and_then(|t| t.checked_add(HEADER_LEN))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("{n} slots do not fit in {} bytes", bytes.len()))?;
        if h.kind == KIND_BRANCH && n == 0 {
            return Err("branch without children".to_string());
        }
        let view = NodeView {
            bytes,
            kind: h.kind,
            n,
        };
        if h.kind == KIND_BRANCH {
            // Children are always written before their parent, so they sit at
            // lower pages; checking it here makes every descent terminate even
            // in a damaged file (no cycles).
            if let Some(i) = (0..n).find(|&i| !(2..page).contains(&view.child_page(i))) {
                return Err(format!(
                    "child {i} points to page {}, not below its parent",
                    view.child_page(i)
                ));
            }
        }
        for i in 0..n {
            let (off, len) = view.slot_bytes(i);
            let end = off.saturating_add(len);
            if off < table_end || end > bytes.len() {
                return Err(format!("slot {i} points outside the node ({off}+{len})"));
            }
        }
        Ok(view)
    }

    /// Re-views bytes that an earlier [`NodeView::parse`] accepted, skipping
    /// the checksum: nodes are immutable, so the result is the same.
    pub(crate) fn trusted(bytes: &'a [u8]) -> NodeView<'a> {
        let h = Header::read(bytes);
        NodeView {
            bytes,
            kind: h.kind,
            n: h.n as usize,
        }
    }

    /// Offset and length of the bytes slot `i` points at (key+value for a leaf).
    fn slot_bytes(&self, i: usize) -> (usize, usize) {
        if self.kind == KIND_LEAF {
            let s = HEADER_LEN + i * LEAF_SLOT_LEN;
            let off = read_u32(self.bytes, s) as usize;
            let klen = read_u32(self.bytes, s + 4) as usize;
            let vlen = read_u32(self.bytes, s + 8) as usize;
            (off, klen + vlen)
        } else {
            let s = HEADER_LEN + i * BRANCH_SLOT_LEN;
            (
                read_u32(self.bytes, s + 16) as usize,
                read_u32(self.bytes, s + 20) as usize,
            )
        }
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.kind == KIND_LEAF
    }

    /// Entries (leaf) or children (branch).
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    pub(crate) fn span_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn leaf_key(&self, i: usize) -> &'a [u8] {
        let s = HEADER_LEN + i * LEAF_SLOT_LEN;
        let off = read_u32(self.bytes, s) as usize;
        let klen = read_u32(self.bytes, s + 4) as usize;
        &self.bytes[off..off + klen]
    }

    pub(crate) fn leaf_value(&self, i: usize) -> &'a [u8] {
        let s = HEADER_LEN + i * LEAF_SLOT_LEN;
        let off = read_u32(self.bytes, s) as usize;
        let klen = read_u32(self.bytes, s + 4) as usize;
        let vlen = read_u32(self.bytes, s + 8) as usize;
        &self.bytes[off + klen..off + klen + vlen]
    }

    /// Index of `key` among the leaf's entries, or where it would go.
    pub(crate) fn leaf_search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.leaf_key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub(crate) fn child_page(&self, i: usize) -> u64 {
        read_u64(self.bytes, HEADER_LEN + i * BRANCH_SLOT_LEN)
    }

    pub(crate) fn child_count(&self, i: usize) -> u64 {
        read_u64(self.bytes, HEADER_LEN + i * BRANCH_SLOT_LEN + 8)
    }

    /// Separator before child `i`; empty for child 0.
    pub(crate) fn separator(&self, i: usize) -> &'a [u8] {
        let (off, len) = self.slot_bytes(i);
        &self.bytes[off..off + len]
    }

    /// The child whose key range holds `key`: the last child whose separator
    /// is ≤ `key` (child 0 when `key` is below every separator).
    pub(crate) fn child_for(&self, key: &[u8]) -> usize {
        // Binary search over separators 1..n for the first one > key.
        let (mut lo, mut hi) = (1, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.separator(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo - 1
    }
}

/// Pages needed for a node of `len` bytes.
pub(crate) fn span_for(len: usize, page_size: usize) -> usize {
    len.div_ceil(page_size).max(1)
}

/// Encodes a leaf into `out` (appended, padded to whole pages) as page `page`
/// of commit `txn`. Returns the node's checksum.
#[cfg(test)]
pub(crate) fn encode_leaf<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    entries: &[(K, V)],
    page: u64,
    txn: u64,
    page_size: usize,
) -> u32 {
    let entries = entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    encode_leaf_entries(out, entries, page, txn, page_size)
}

/// Encodes the leaf holding `entries` (sorted) like [`encode_leaf`]; the
/// iterator is walked twice (sizes, then bytes), so it must be cheap to clone.
pub(crate) fn encode_leaf_entries<'e, I>(
    out: &mut Vec<u8>,
    entries: I,
    page: u64,
    txn: u64,
    page_size: usize,
) -> u32
where
    I: ExactSizeIterator<Item = (&'e [u8], &'e [u8])> + Clone,
{
    let n = entries.len();
    let data: usize = entries.clone().map(|(k, v)| leaf_entry_len(k, v)).sum();
    let len = HEADER_LEN + data;
    let start = out.len();
    let span = span_for(len, page_size);
    out.resize(start + span * page_size, 0);
    let node = &mut out[start..];
    let mut off = HEADER_LEN + n * LEAF_SLOT_LEN;
    for (i, (k, v)) in entries.enumerate() {
        let s = HEADER_LEN + i * LEAF_SLOT_LEN;
        put_u32(node, s, off as u32);
        put_u32(node, s + 4, k.len() as u32);
        put_u32(node, s + 8, v.len() as u32);
        node[off..off + k.len()].copy_from_slice(k);
        node[off + k.len()..off + k.len() + v.len()].copy_from_slice(v);
        off += k.len() + v.len();
    }
    finish_header(node, KIND_LEAF, span, n, page, txn)
}

/// One child of a branch being written: its separator (ignored for the first
/// child), page and subtree key count.
#[derive(Debug, Clone)]
pub(crate) struct ChildRef {
    pub separator: Vec<u8>,
    pub page: u64,
    pub count: u64,
}

/// Encodes a branch into `out` like [`encode_leaf`]. Returns the checksum.
pub(crate) fn encode_branch(
    out: &mut Vec<u8>,
    children: &[ChildRef],
    page: u64,
    txn: u64,
    page_size: usize,
) -> u32 {
    let keys: usize = children.iter().skip(1).map(|c| c.separator.len()).sum();
    let len = HEADER_LEN + children.len() * BRANCH_SLOT_LEN + keys;
    let start = out.len();
    let span = span_for(len, page_size);
    out.resize(start + span * page_size, 0);
    let node = &mut out[start..];
    let mut off = HEADER_LEN + children.len() * BRANCH_SLOT_LEN;
    for (i, c) in children.iter().enumerate() {
        let s = HEADER_LEN + i * BRANCH_SLOT_LEN;
        let key: &[u8] = if i == 0 { &[] } else { &c.separator };
        put_u64(node, s, c.page);
        put_u64(node, s + 8, c.count);
        put_u32(node, s + 16, off as u32);
        put_u32(node, s + 20, key.len() as u32);
        node[off..off + key.len()].copy_from_slice(key);
        off += key.len();
    }
    finish_header(node, KIND_BRANCH, span, children.len(), page, txn)
}

fn finish_header(node: &mut [u8], kind: u8, span: usize, n: usize, page: u64, txn: u64) -> u32 {
    // `node` is exactly the node's span: the encoders resized `out` to it.
    node[4] = kind;
    put_u32(node, 8, span as u32);
    put_u32(node, 12, n as u32);
    put_u64(node, 16, page);
    put_u64(node, 24, txn);
    let crc = crc32fast::hash(&node[4..]);
    put_u32(node, 0, crc);
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_and_branch_round_trip() {
        let mut out = Vec::new();
        let entries = [
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), vec![7; 5000]),
        ];
        let crc = encode_leaf(&mut out, &entries, 9, 3, 4096);
        assert_eq!(out.len(), 2 * 4096, "a 5000-byte value spans two pages");
        let leaf = NodeView::parse(&out, 9).unwrap();
        assert_eq!(Header::read(&out).crc, crc);
        assert!(leaf.is_leaf());
        assert_eq!(leaf.leaf_search(b"c"), Ok(1));
        assert_eq!(leaf.leaf_search(b"b"), Err(1));
        assert_eq!(leaf.leaf_value(1).len(), 5000);
        assert!(NodeView::parse(&out, 10).err().unwrap().contains("page 9"));

        let children = [
            ChildRef {
                separator: Vec::new(),
                page: 2,
                count: 4,
            },
            ChildRef {
                separator: b"m".to_vec(),
                page: 5,
                count: 6,
            },
        ];
        let mut out = Vec::new();
        encode_branch(&mut out, &children, 9, 3, 4096);
        let branch = NodeView::parse(&out, 9).unwrap();
        assert_eq!(branch.child_for(b"a"), 0);
        assert_eq!(branch.child_for(b"m"), 1);
        assert_eq!(branch.child_count(1), 6);
    }

    #[test]
    fn branch_pointing_at_or_above_itself_is_rejected() {
        let children = [
            ChildRef {
                separator: Vec::new(),
                page: 2,
                count: 1,
            },
            ChildRef {
                separator: b"m".to_vec(),
                page: 9,
                count: 1,
            },
        ];
        let mut out = Vec::new();
        encode_branch(&mut out, &children, 9, 3, 4096);
        let err = NodeView::parse(&out, 9).err().expect("cycle rejected");
        assert!(err.contains("not below its parent"), "{err}");
    }
}
