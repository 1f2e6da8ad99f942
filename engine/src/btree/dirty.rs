//! The writer's in-memory copy-on-write overlay: nodes a batch has changed,
//! hanging off pages it has not touched yet.
//!
//! A node is copied out of the map ("materialized") the first time a batch
//! changes something below it; its old pages then become garbage once the
//! batch commits. Splitting oversized nodes happens when the batch is written
//! ([`super::commit`]); merging underfull ones happens just before, in
//! [`rebalance`], so the tree on disk stays between ¼ and 1 page per node.

use super::dirty_leaf::DirtyLeaf;
use super::error::BtreeError;
use super::page::{branch_entry_len, NodeView, BRANCH_SLOT_LEN, HEADER_LEN};
use super::snapshot::Snapshot;

/// A child pointer: the committed node at `page` (holding `count` keys), or,
/// once the batch has touched it, its changed copy in `dirty`.
pub(crate) struct Link {
    pub page: u64,
    pub count: u64,
    pub dirty: Option<Box<Dirty>>,
}

pub(crate) enum Dirty {
    Leaf(DirtyLeaf),
    Branch(Branch),
}

/// `keys[i]` separates `children[i]` (keys below it) from `children[i + 1]`.
pub(crate) struct Branch {
    pub keys: Vec<Vec<u8>>,
    pub children: Vec<Link>,
}

impl Branch {
    fn child_for(&self, key: &[u8]) -> usize {
        self.keys.partition_point(|k| k.as_slice() <= key)
    }

    /// Removes child `i` together with the separator that bounded it.
    fn remove_child(&mut self, i: usize) -> Link {
        if !self.keys.is_empty() {
            self.keys.remove(i.saturating_sub(1));
        }
        self.children.remove(i)
    }
}

impl Link {
    pub(crate) fn clean(page: u64, count: u64) -> Link {
        Link {
            page,
            count,
            dirty: None,
        }
    }

    pub(crate) fn new_branch(separator: Vec<u8>, left: Link, right: Link) -> Link {
        Link {
            page: 0,
            count: 0,
            dirty: Some(Box::new(Dirty::Branch(Branch {
                keys: vec![separator],
                children: vec![left, right],
            }))),
        }
    }

    pub(crate) fn new_leaf(key: Vec<u8>, value: Vec<u8>) -> Link {
        Link {
            page: 0,
            count: 0,
            dirty: Some(Box::new(Dirty::Leaf(DirtyLeaf::single(&key, &value)))),
        }
    }
}

/// What the overlay reads clean nodes from, and where it lists the pages that
/// stop being reachable (each node is loaded once, so each page once).
pub(crate) struct Base<'a> {
    pub snap: &'a Snapshot,
    pub freed: &'a mut Vec<u64>,
}

impl Base<'_> {
    fn load(&mut self, page: u64) -> Result<Dirty, BtreeError> {
        let node = self.snap.node(page)?;
        let span = node.span_bytes().div_ceil(self.snap.page_size) as u64;
        self.freed.extend(page..page + span);
        Ok(decode(&node))
    }
}

fn decode(node: &NodeView<'_>) -> Dirty {
    if node.is_leaf() {
        Dirty::Leaf(DirtyLeaf::from_node(node))
    } else {
        Dirty::Branch(Branch {
            keys: (1..node.len())
                .map(|i| node.separator(i).to_vec())
                .collect(),
            children: (0..node.len())
                .map(|i| Link::clean(node.child_page(i), node.child_count(i)))
                .collect(),
        })
    }
}

/// The changed copy of `link`'s node, copying it out of the map if needed.
fn materialize<'l>(link: &'l mut Link, base: &mut Base<'_>) -> Result<&'l mut Dirty, BtreeError> {
    let node = match link.dirty.take() {
        Some(d) => d,
        None => Box::new(base.load(link.page)?),
    };
    Ok(link.dirty.insert(node))
}

/// Inserts or replaces; returns whether the key was present.
pub(crate) fn insert(
    link: &mut Link,
    key: &[u8],
    value: &[u8],
    base: &mut Base<'_>,
) -> Result<bool, BtreeError> {
    match materialize(link, base)? {
        Dirty::Leaf(leaf) => Ok(leaf.upsert(key, value)),
        Dirty::Branch(b) => {
            let c = b.child_for(key);
            let existed = insert(&mut b.children[c], key, value, base)?;
            if let Some((separator, right)) = split_if_large(&mut b.children[c]) {
                b.keys.insert(c, separator);
                b.children.insert(c + 1, right);
            }
            Ok(existed)
        }
    }
}

/// Changed nodes are packed into pages only at commit, but one batch may
/// insert millions of keys: past this many items a changed node is halved
/// right away, so each insert stays O(log n) instead of shifting a huge Vec.
const MAX_DIRTY_ITEMS: usize = 1024;

/// Halves `link`'s changed node if it has grown past [`MAX_DIRTY_ITEMS`];
/// returns the separator and the new right sibling.
pub(crate) fn split_if_large(link: &mut Link) -> Option<(Vec<u8>, Link)> {
    let right = match link.dirty.as_deref_mut()? {
        Dirty::Leaf(e) if e.len() > MAX_DIRTY_ITEMS => {
            let right = e.split_off(e.len() / 2);
            (right.key(0).to_vec(), Dirty::Leaf(right))
        }
        Dirty::Branch(b) if b.children.len() > MAX_DIRTY_ITEMS => {
            let mid = b.children.len() / 2;
            let children = b.children.split_off(mid);
            let mut keys = b.keys.split_off(mid - 1);
            let separator = keys.remove(0);
            (separator, Dirty::Branch(Branch { keys, children }))
        }
        _ => return None,
    };
    let (separator, node) = right;
    Some((
        separator,
        Link {
            page: 0,
            count: 0,
            dirty: Some(Box::new(node)),
        },
    ))
}

/// Removes `key`; returns whether it was present. Pages are copied only when
/// the key is really there, so removing a missing key costs no write.
pub(crate) fn remove(link: &mut Link, key: &[u8], base: &mut Base<'_>) -> Result<bool, BtreeError> {
    if link.dirty.is_none() && !clean_contains(base.snap, link.page, key)? {
        return Ok(false);
    }
    match materialize(link, base)? {
        Dirty::Leaf(leaf) => Ok(leaf.remove(key)),
        Dirty::Branch(b) => {
            let c = b.child_for(key);
            remove(&mut b.children[c], key, base)
        }
    }
}

fn clean_contains(snap: &Snapshot, page: u64, key: &[u8]) -> Result<bool, BtreeError> {
    Ok(clean_get(snap, page, key)?.is_some())
}

fn clean_get<'s>(
    snap: &'s Snapshot,
    page: u64,
    key: &[u8],
) -> Result<Option<&'s [u8]>, BtreeError> {
    let mut node = snap.node(page)?;
    while !node.is_leaf() {
        node = snap.node(node.child_page(node.child_for(key)))?;
    }
    Ok(node.leaf_search(key).ok().map(|i| node.leaf_value(i)))
}

/// Reads `key` through the overlay: the batch's own writes win.
pub(crate) fn get(link: &Link, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>, BtreeError> {
    match link.dirty.as_deref() {
        None => Ok(clean_get(snap, link.page, key)?.map(<[u8]>::to_vec)),
        Some(Dirty::Leaf(leaf)) => Ok(leaf.get(key).map(<[u8]>::to_vec)),
        Some(Dirty::Branch(b)) => get(&b.children[b.child_for(key)], key, snap),
    }
}

/// Encoded size of a changed node (before any split).
fn encoded_len(d: &Dirty) -> usize {
    match d {
        Dirty::Leaf(leaf) => leaf.encoded_len(),
        Dirty::Branch(b) => {
            HEADER_LEN + BRANCH_SLOT_LEN + b.keys.iter().map(|k| branch_entry_len(k)).sum::<usize>()
        }
    }
}

fn is_empty(link: &Link) -> bool {
    match link.dirty.as_deref() {
        Some(Dirty::Leaf(e)) => e.is_empty(),
        Some(Dirty::Branch(b)) => b.children.is_empty(),
        None => false,
    }
}

/// Drops emptied children and merges each changed child smaller than a
/// quarter page into a sibling, bottom-up. Only changed nodes can have shrunk,
/// so clean subtrees are not visited.
pub(crate) fn rebalance(b: &mut Branch, base: &mut Base<'_>) -> Result<(), BtreeError> {
    for child in &mut b.children {
        if let Some(Dirty::Branch(cb)) = child.dirty.as_deref_mut() {
            rebalance(cb, base)?;
        }
    }
    let mut i = 0;
    while i < b.children.len() {
        if is_empty(&b.children[i]) {
            b.remove_child(i);
        } else {
            i += 1;
        }
    }
    let min_len = base.snap.page_size / 4;
    let mut i = 0;
    while i < b.children.len() && b.children.len() > 1 {
        let small = match b.children[i].dirty.as_deref() {
            Some(d) => encoded_len(d) < min_len,
            None => false,
        };
        if !small {
            i += 1;
            continue;
        }
        let left = if i + 1 < b.children.len() { i } else { i - 1 };
        merge_siblings(b, left, base)?;
        i = left;
    }
    Ok(())
}

/// Moves everything of child `left + 1` into child `left`.
fn merge_siblings(b: &mut Branch, left: usize, base: &mut Base<'_>) -> Result<(), BtreeError> {
    let separator = b.keys.remove(left);
    let mut right = b.children.remove(left + 1);
    let right_page = right.page;
    let right_node = materialize(&mut right, base)?;
    let left_node = materialize(&mut b.children[left], base)?;
    match (left_node, right_node) {
        (Dirty::Leaf(l), Dirty::Leaf(r)) => l.append(r),
        (Dirty::Branch(l), Dirty::Branch(r)) => {
            l.keys.push(separator);
            l.keys.append(&mut r.keys);
            l.children.append(&mut r.children);
        }
        _ => {
            return Err(BtreeError::CorruptPage {
                path: base.snap.path.to_path_buf(),
                page: right_page,
                reason: "sibling nodes lie at different depths".to_string(),
            })
        }
    }
    Ok(())
}

/// Removes root levels left with a single child, and an empty root.
pub(crate) fn collapse_root(mut root: Option<Link>) -> Option<Link> {
    loop {
        let shrink = match root.as_ref().and_then(|l| l.dirty.as_deref()) {
            Some(Dirty::Branch(b)) => b.children.len() <= 1,
            Some(Dirty::Leaf(e)) => e.is_empty(),
            None => false,
        };
        if !shrink {
            return root;
        }
        root = match root.and_then(|l| l.dirty).map(|d| *d) {
            Some(Dirty::Branch(mut b)) => b.children.pop(),
            _ => None,
        };
    }
}
