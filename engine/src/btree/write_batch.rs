//! The single writer's batch: changes gathered in memory, made durable
//! together by one commit (one append, one meta write, one fdatasync).

use super::commit::{build_root, flush};
use super::dirty::{self, Base, Dirty, Link};
use super::error::BtreeError;
use super::meta::{Meta, FORMAT_VERSION};
use super::snapshot::Snapshot;
use super::{Tree, MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// Changes to a [`Tree`] that become durable and visible together on
/// [`WriteBatch::commit`]. Dropping a batch discards it.
pub struct WriteBatch<'t> {
    tree: &'t mut Tree,
    base: Snapshot,
    root: Option<Link>,
    /// Committed pages this batch's changes stop referencing.
    freed: Vec<u64>,
    /// Keys written, kept only while a compaction needs them.
    touched: Option<Vec<Vec<u8>>>,
}

fn check_key(key: &[u8]) -> Result<(), BtreeError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(BtreeError::KeySize {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

impl<'t> WriteBatch<'t> {
    pub(crate) fn new(tree: &'t mut Tree) -> WriteBatch<'t> {
        let base = tree.read();
        let root = (base.meta.root != 0).then(|| Link::clean(base.meta.root, base.meta.key_count));
        let touched = tree.tracks_keys().then(Vec::new);
        WriteBatch {
            tree,
            base,
            root,
            freed: Vec::new(),
            touched,
        }
    }

    /// Sets `key` to `value`; returns whether the key existed (in the tree or
    /// earlier in this batch).
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<bool, BtreeError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(BtreeError::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        if let Some(t) = &mut self.touched {
            t.push(key.to_vec());
        }
        match self.root.as_mut() {
            None => {
                self.root = Some(Link::new_leaf(key.to_vec(), value.to_vec()));
                Ok(false)
            }
            Some(root) => {
                let mut base = Base {
                    snap: &self.base,
                    freed: &mut self.freed,
                };
                let existed = dirty::insert(root, key, value, &mut base)?;
                if let Some((separator, right)) = dirty::split_if_large(root) {
                    let left = std::mem::replace(root, Link::clean(0, 0));
                    *root = Link::new_branch(separator, left, right);
                }
                Ok(existed)
            }
        }
    }

    /// Removes `key`; returns whether it existed.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool, BtreeError> {
        let Some(root) = self.root.as_mut() else {
            return Ok(false);
        };
        let mut base = Base {
            snap: &self.base,
            freed: &mut self.freed,
        };
        let existed = dirty::remove(root, key, &mut base)?;
        if let (true, Some(t)) = (existed, &mut self.touched) {
            t.push(key.to_vec());
        }
        Ok(existed)
    }

    /// Reads `key` as this batch would commit it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BtreeError> {
        match &self.root {
            None => Ok(None),
            Some(root) => dirty::get(root, key, &self.base),
        }
    }

    /// Writes the changed nodes (into reusable free pages, else after the
    /// committed pages), then the meta slot carrying `user_meta`, then
    /// fdatasyncs once. Durable and visible to new
    /// [`Tree::read`] snapshots when it returns; on error the tree still shows
    /// the previous commit.
    pub fn commit(self, user_meta: u64) -> Result<(), BtreeError> {
        let WriteBatch {
            tree,
            base,
            mut root,
            mut freed,
            touched,
        } = self;
        if let Some(Dirty::Branch(b)) = root.as_mut().and_then(|l| l.dirty.as_deref_mut()) {
            let mut base = Base {
                snap: &base,
                freed: &mut freed,
            };
            dirty::rebalance(b, &mut base)?;
        }
        let root = dirty::collapse_root(root);
        // `base` pins the last commit; the pages this commit may reuse were
        // freed by it or earlier, so the pin does not hold them back.
        let prev = base.meta;
        let txn = prev.txn + 1;
        let mut sink = tree.commit_sink(txn)?;
        let top = root.map(|r| flush(r, &mut sink)).unwrap_or_default();
        let top = build_root(top, &mut sink);
        let written = sink.pages();
        let meta = Meta {
            version: FORMAT_VERSION,
            page_size: prev.page_size,
            txn,
            root: top.as_ref().map_or(0, |r| r.page),
            key_count: top.as_ref().map_or(0, |r| r.count),
            page_count: sink.end(),
            commit_start: prev.page_count,
            live_pages: (prev.live_pages + written).saturating_sub(freed.len() as u64),
            user_meta,
            commit_digest: sink.digest(),
            commit_nodes: sink.nodes(),
        };
        let (unused, written_out) = sink.finish();
        if let Err(e) = written_out {
            tree.freelist.abandoned(unused);
            return Err(e);
        }
        tree.write_commit(&meta, touched.unwrap_or_default(), unused, freed)
    }
}
