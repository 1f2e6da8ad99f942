//! Read views: the store as of one applied entry, readable on any thread.
//!
//! [`Store::read_view`] takes a [`ReadView`] in O(1): the pinned tree
//! snapshots (memory maps shared through the page cache) plus the writes
//! not yet in them, held as persistent maps that share structure with the
//! store's own. The store keeps applying meanwhile; a view never changes.
//! The server takes one after every applied batch and hands it to every
//! executor, so a Range on any core reads every shard file itself, merges
//! them at one revision, and never waits for the core that writes.
//!
//! ```
//! use basalt_engine::mvcc::{Op, PutRequest, RangeRequest, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = Store::open(dir.path(), StoreOptions { shards: 2, ..Default::default() }).unwrap();
//! let put = |v: &str| Op::Put(PutRequest { key: b"k".to_vec(), value: v.into(), ..Default::default() });
//! store.apply(1, &put("one")).unwrap();
//! let view = store.read_view();
//! store.apply(2, &put("two")).unwrap();
//! let get = RangeRequest { key: b"k".to_vec(), ..Default::default() };
//! let seen = std::thread::spawn(move || view.range(&get).unwrap()).join().unwrap();
//! assert_eq!(seen.kvs[0].value, b"one"); // as of entry 1, on another thread
//! ```

use std::collections::BTreeMap;

use super::apply::Applier;
use super::backend::BackendView;
use super::error::MvccError;
use super::keyspace::UserRange;
use super::layers::{Layered, LivePresence, Overlay, Presence, Staged, Staging};
use super::read;
use super::types::{Event, RangeRequest, RangeResponse, TxnRequest, TxnResponse};

/// The store as of one applied entry; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct ReadView {
    pub(super) base: BackendView,
    pub(super) frozen: Staging,
    pub(super) pending: Staging,
    pub(super) frozen_presence: LivePresence,
    pub(super) presence: LivePresence,
    pub(super) current: i64,
    pub(super) compacted: i64,
    pub(super) applied: u64,
}

/// Nothing is being applied in a view.
static NO_SCRATCH: Overlay = BTreeMap::new();
/// A read-only txn never looks a lease up (only puts do).
static NO_LEASES: BTreeMap<i64, i64> = BTreeMap::new();

impl ReadView {
    /// Index of the last entry applied when the view was taken.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    pub fn current_revision(&self) -> i64 {
        self.current
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    fn staged(&self) -> Staged<'_> {
        Staged {
            base: &self.base,
            frozen: &self.frozen,
            pending: &self.pending,
            presence: Presence {
                frozen: &self.frozen_presence,
                pending: &self.presence,
            },
        }
    }

    pub(super) fn layered(&self) -> Layered<'_> {
        self.staged().with_scratch(&NO_SCRATCH)
    }

    /// Visits every entry of the logical state in key order.
    pub(super) fn for_each_entry(
        &self,
        f: &mut super::snapshot::EntryVisitor<'_>,
    ) -> Result<(), MvccError> {
        for item in self.layered().scan(&super::keyspace::logical_bounds()) {
            let (k, v) = item?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// etcd's Range as the store answered it when the view was taken;
    /// `revision` 0 reads the view's current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        read::range(&self.layered(), self.current, self.compacted, req)
    }

    /// A txn that writes nothing, answered as [`super::Store::read_txn`]
    /// would have when the view was taken.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        if !req.is_read_only() {
            return Err(MvccError::InvalidRequest(
                "read_txn given a txn that writes".into(),
            ));
        }
        let mut scratch = Overlay::default();
        Applier::new(
            self.staged(),
            &mut scratch,
            &NO_LEASES,
            self.current,
            self.compacted,
        )
        .read_txn(req)
    }

    /// Changes in `[key, range_end)` at revisions >= `start_revision`, as
    /// [`super::Store::events_from`] gives them (up to the view's revision).
    pub fn events_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max: usize,
    ) -> Result<Vec<Event>, MvccError> {
        if start_revision < self.compacted {
            return Err(MvccError::Compacted {
                requested: start_revision,
                compacted: self.compacted,
            });
        }
        read::events_from(
            &self.layered(),
            UserRange::new(key, range_end),
            start_revision,
            max,
        )
    }
}
