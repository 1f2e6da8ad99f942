//! The durable ordered map under the store: one `engine::btree` file.
//!
//! This module is the only place that knows the B+tree's API, so the rest of
//! the MVCC layer reads and writes plain ordered bytes.

use std::ops::Bound;
use std::path::Path;

use crate::btree::{Snapshot, Tree, TreeOptions};

use super::error::MvccError;
use super::keyspace::KeyBounds;
use super::layers::Overlay;

/// Ascending (key, value) pairs of a scan.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), MvccError>> + 'a>;

pub struct Backend {
    tree: Tree,
}

/// A consistent read view pinned at one commit.
pub struct BackendView {
    snap: Snapshot,
}

fn as_slices(bounds: &KeyBounds) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        bounds.0.as_ref().map(|v| v.as_slice()),
        bounds.1.as_ref().map(|v| v.as_slice()),
    )
}

impl Backend {
    pub fn open(path: &Path, opts: TreeOptions) -> Result<Backend, MvccError> {
        Ok(Backend {
            tree: Tree::open(path, opts)?,
        })
    }

    pub fn view(&self) -> BackendView {
        BackendView {
            snap: self.tree.read(),
        }
    }

    /// Writes `writes` and `user_meta` durably, all or nothing.
    pub fn commit(&mut self, writes: &Overlay, user_meta: u64) -> Result<(), MvccError> {
        let mut batch = self.tree.write();
        for (k, v) in writes {
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

    pub fn user_meta(&self) -> u64 {
        self.tree.user_meta()
    }

    pub fn file_bytes(&self) -> u64 {
        self.tree.file_bytes()
    }

    pub fn live_bytes(&self) -> u64 {
        self.tree.live_bytes()
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn tree_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }

    pub fn compact_file(&mut self) -> Result<(), MvccError> {
        Ok(self.tree.compact_file()?)
    }
}

impl BackendView {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.snap.get(key)?)
    }

    /// Caller guarantees the bounds are not inverted (see `bounds_nonempty`).
    pub fn scan(&self, bounds: &KeyBounds) -> ScanIter<'_> {
        let (start, end) = as_slices(bounds);
        Box::new(
            self.snap
                .range(start, end)
                .map(|item| item.map_err(MvccError::from)),
        )
    }

    /// Descending; same bounds contract as `scan`.
    pub fn scan_rev(&self, bounds: &KeyBounds) -> ScanIter<'_> {
        let (start, end) = as_slices(bounds);
        Box::new(
            self.snap
                .range_rev(start, end)
                .map(|item| item.map_err(MvccError::from)),
        )
    }

    pub fn scan_empty(&self) -> ScanIter<'_> {
        Box::new(std::iter::empty())
    }

    pub fn count(&self, bounds: &KeyBounds) -> Result<u64, MvccError> {
        let (start, end) = as_slices(bounds);
        Ok(self.snap.count(start, end)?)
    }
}
