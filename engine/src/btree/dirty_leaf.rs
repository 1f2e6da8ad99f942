//! A leaf the batch has changed: every key and value in one byte buffer plus
//! a sorted table of slots pointing into it.
//!
//! The first version kept a `Vec<(Vec<u8>, Vec<u8>)>`: copying a leaf of
//! ~15 entries out of the map cost ~30 allocations, and a checkpoint that
//! touches thousands of leaves spent a sixth of its time in malloc/free.
//! Here a leaf costs two allocations however many entries it holds, and an
//! insert only moves 16-byte slots.

use super::page::{leaf_entry_len, NodeView, HEADER_LEN};

/// Where one entry's bytes lie in [`DirtyLeaf::bytes`]: the key, then the
/// value right after it.
#[derive(Clone, Copy)]
struct Slot {
    off: usize,
    key_len: u32,
    value_len: u32,
}

impl Slot {
    fn len(self) -> usize {
        self.key_len as usize + self.value_len as usize
    }
}

/// Once this many bytes of the buffer are dead (replaced or removed
/// entries) and they are the larger part, the buffer is repacked, so
/// overwriting one key many times in a batch does not grow it without end.
const REPACK_MIN_GARBAGE: usize = 16 << 10;

pub(crate) struct DirtyLeaf {
    bytes: Vec<u8>,
    /// Sorted by key, no duplicates.
    slots: Vec<Slot>,
    /// Bytes of `bytes` no slot points at.
    garbage: usize,
    /// Sum of [`leaf_entry_len`] over the entries: the encoded size minus
    /// the header, kept so merging and splitting decisions are O(1).
    entries_len: usize,
}

impl DirtyLeaf {
    fn with_capacity(bytes: usize, entries: usize) -> DirtyLeaf {
        DirtyLeaf {
            bytes: Vec::with_capacity(bytes),
            slots: Vec::with_capacity(entries),
            garbage: 0,
            entries_len: 0,
        }
    }

    pub(crate) fn single(key: &[u8], value: &[u8]) -> DirtyLeaf {
        let mut leaf = DirtyLeaf::with_capacity(key.len() + value.len(), 1);
        leaf.push(key, value);
        leaf
    }

    /// Copies a committed leaf out of the map. `node` must be a leaf.
    pub(crate) fn from_node(node: &NodeView<'_>) -> DirtyLeaf {
        // One spare slot: the copy is made because something is about to be
        // inserted or changed.
        let mut leaf = DirtyLeaf::with_capacity(node.span_bytes(), node.len() + 1);
        for i in 0..node.len() {
            leaf.push(node.leaf_key(i), node.leaf_value(i));
        }
        leaf
    }

    /// Appends an entry that sorts after every entry already present.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(self.slots.last().is_none_or(|&s| self.key_of(s) < key));
        let slot = self.append_bytes(key, value);
        self.slots.push(slot);
        self.entries_len += leaf_entry_len(key, value);
    }

    fn append_bytes(&mut self, key: &[u8], value: &[u8]) -> Slot {
        let off = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        // Both fit in u32: keys and values are checked against
        // MAX_KEY_BYTES / MAX_VALUE_BYTES before they reach a batch, and
        // committed ones were written with 32-bit lengths.
        Slot {
            off,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        }
    }

    fn key_of(&self, s: Slot) -> &[u8] {
        &self.bytes[s.off..s.off + s.key_len as usize]
    }

    fn value_of(&self, s: Slot) -> &[u8] {
        let start = s.off + s.key_len as usize;
        &self.bytes[start..start + s.value_len as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(crate) fn key(&self, i: usize) -> &[u8] {
        self.key_of(self.slots[i])
    }

    pub(crate) fn entry(&self, i: usize) -> (&[u8], &[u8]) {
        let s = self.slots[i];
        (self.key_of(s), self.value_of(s))
    }

    /// Encoded size of this leaf as one node (before any split).
    pub(crate) fn encoded_len(&self) -> usize {
        HEADER_LEN + self.entries_len
    }

    pub(crate) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        self.slots.binary_search_by(|&s| self.key_of(s).cmp(key))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.search(key).ok().map(|i| self.value_of(self.slots[i]))
    }

    /// Inserts or replaces; returns whether the key was present.
    pub(crate) fn upsert(&mut self, key: &[u8], value: &[u8]) -> bool {
        match self.search(key) {
            Ok(i) => {
                let old = self.slots[i];
                self.entries_len = self.entries_len - old.value_len as usize + value.len();
                if old.value_len as usize == value.len() {
                    // Same size (e.g. fixed-width records): overwrite in place.
                    let start = old.off + old.key_len as usize;
                    self.bytes[start..start + value.len()].copy_from_slice(value);
                } else {
                    self.garbage += old.len();
                    self.slots[i] = self.append_bytes(key, value);
                    self.repack_if_wasteful();
                }
                true
            }
            Err(i) => {
                let slot = self.append_bytes(key, value);
                self.slots.insert(i, slot);
                self.entries_len += leaf_entry_len(key, value);
                false
            }
        }
    }

    /// Removes `key`; returns whether it was present.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        let Ok(i) = self.search(key) else {
            return false;
        };
        let old = self.slots.remove(i);
        self.garbage += old.len();
        self.entries_len -= LEAF_OVERHEAD + old.len();
        self.repack_if_wasteful();
        true
    }

    fn repack_if_wasteful(&mut self) {
        if self.garbage >= REPACK_MIN_GARBAGE && self.garbage * 2 > self.bytes.len() {
            let mut packed = DirtyLeaf::with_capacity(self.bytes.len() - self.garbage, self.len());
            packed.extend_from(self, 0..self.len());
            *self = packed;
        }
    }

    fn extend_from(&mut self, other: &DirtyLeaf, range: std::ops::Range<usize>) {
        for i in range {
            let (k, v) = other.entry(i);
            self.push(k, v);
        }
    }

    /// Moves entries `at..` into a new leaf.
    pub(crate) fn split_off(&mut self, at: usize) -> DirtyLeaf {
        let live: usize = self.slots[at..].iter().map(|&s| s.len()).sum();
        let mut right = DirtyLeaf::with_capacity(live, self.len() - at);
        right.extend_from(self, at..self.len());
        for s in self.slots.drain(at..) {
            self.garbage += s.len();
            self.entries_len -= LEAF_OVERHEAD + s.len();
        }
        self.repack_if_wasteful();
        right
    }

    /// Appends every entry of `right`, whose keys all sort after this leaf's.
    pub(crate) fn append(&mut self, right: &DirtyLeaf) {
        self.extend_from(right, 0..right.len());
    }
}

/// What an entry adds to a node besides its key and value bytes.
const LEAF_OVERHEAD: usize = super::page::LEAF_SLOT_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(leaf: &DirtyLeaf, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
        assert_eq!(leaf.len(), model.len());
        for (i, (k, v)) in model.iter().enumerate() {
            assert_eq!(leaf.entry(i), (k.as_slice(), v.as_slice()));
        }
        let len: usize = model.iter().map(|(k, v)| leaf_entry_len(k, v)).sum();
        assert_eq!(leaf.encoded_len(), HEADER_LEN + len);
    }

    #[test]
    fn matches_a_sorted_map_through_overwrites_removes_and_repacks() {
        let mut leaf = DirtyLeaf::single(b"m", b"0");
        let mut model = BTreeMap::from([(b"m".to_vec(), b"0".to_vec())]);
        let mut x = 7u64;
        for round in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{:03}", (x >> 33) % 300).into_bytes();
            // Values of varying size force appends (and so garbage).
            let value = vec![round as u8; ((x >> 20) % 40) as usize];
            if (x >> 12) % 3 == 0 {
                assert_eq!(leaf.remove(&key), model.remove(&key).is_some());
            } else {
                assert_eq!(
                    leaf.upsert(&key, &value),
                    model.insert(key, value).is_some()
                );
            }
        }
        check(&leaf, &model);
        assert!(
            leaf.bytes.len() < 2 * (leaf.encoded_len() + REPACK_MIN_GARBAGE),
            "garbage is repacked: {} bytes for {} live",
            leaf.bytes.len(),
            leaf.encoded_len()
        );

        let at = leaf.len() / 3;
        let right = leaf.split_off(at);
        let right_model = model.split_off(right.key(0));
        check(&leaf, &model);
        check(&right, &right_model);
        leaf.append(&right);
        model.extend(right_model);
        check(&leaf, &model);
        assert_eq!(leaf.get(b"zzz"), None);
    }
}
