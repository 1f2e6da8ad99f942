//! etcd's MVCC key-value semantics on top of `engine::btree`.
//!
//! A [`Store`] is the state machine the sequencer applies committed log
//! entries to, in order. It keeps etcd's rules exactly: one main revision per
//! write request or transaction (sub revisions number its effects), per-key
//! `create_revision` / `mod_revision` / `version` with generations (a delete
//! ends one; the next put starts a new one at version 1), tombstones, reads at
//! any revision not yet compacted, leases whose revocation deletes their keys
//! in one revision. Requests that change nothing do not bump the revision.
//!
//! ```
//! use basalt_engine::mvcc::{Op, PutRequest, RangeRequest, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
//! let put = |v: &[u8]| Op::Put(PutRequest { key: b"k".to_vec(), value: v.to_vec(), ..Default::default() });
//! assert_eq!(store.apply(1, &put(b"one")).unwrap().revision, 2);
//! assert_eq!(store.apply(2, &put(b"two")).unwrap().revision, 3);
//! store.checkpoint().unwrap(); // durable; applied_index() == 2
//! let old = store.range(&RangeRequest { key: b"k".to_vec(), revision: 2, ..Default::default() }).unwrap();
//! assert_eq!(old.kvs[0].value, b"one");
//! assert_eq!(old.kvs[0].version, 1);
//! ```
//!
//! Costs: a single-key get is two B+tree lookups. `count` (with or without
//! `limit`) at the current revision is the B+tree's O(log n) count over the
//! live-key space; at a past revision it is that count corrected by the keys
//! changed since (O(changes)), falling back to scanning the range's versions
//! when more changes than keys happened since. Sorting by anything but the
//! key, or revision filters, read the whole range (as etcd does).
//! `apply` stages tree writes in memory; a checkpoint commits them in one
//! batch, so the server chooses the durability interval (the WAL covers it),
//! and its commit can run on another thread (`checkpoint`: start / run /
//! finish) while this store keeps applying and serving reads.
//!
//! Files: an index tree (`mvcc.btree`: live keys, change log, leases, meta)
//! and `StoreOptions::shards` shard trees (`shard-000.btree`, …) holding the
//! versions, routed by a fixed hash of the user key (see `shard`). A
//! checkpoint commits the shard trees first and the index tree last, all
//! recording the applied index; on open, shards are rolled back to the
//! index's, so every tree agrees and the WAL replays from there.
//!
//! Invariants: the `l` space holds exactly the keys live at the current
//! revision, each pointing at an existing put record in `v`; every `v` entry
//! has its `r` change-log twin; `a` lists exactly the live keys of each lease;
//! every key is in the tree its routing names. See `keyspace` for the layout.

mod apply;
mod backend;
mod checkpoint;
mod defrag;
mod error;
mod history;
mod integrity;
mod keyspace;
mod layers;
mod read;
mod revision;
mod shard;
mod snapshot;
mod store;
mod types;
mod view;

pub use checkpoint::{CheckpointDone, CheckpointTask, IndexCommit, ShardCommit, ShardCommitted};
pub use defrag::{
    DefragCopy, DefragJob, AUTO_DEFRAG_MIN_RECLAIMABLE_BYTES, AUTO_DEFRAG_RECLAIMABLE_PERCENT,
};
pub use error::MvccError;
pub use history::{HistoryImport, HistoryVersion, ImportSummary};
pub use revision::Revision;
pub use shard::{shard_file, shard_of_user_key, MAX_SHARDS};
pub use store::{Store, StoreOptions, TREE_FILE};
pub use types::*;
pub use view::ReadView;
