//! etcd's snapshot format, both ways: a basalt [`ReadView`] streamed as the
//! file `etcdctl snapshot save` stores (a bbolt database in etcd's layout,
//! then the SHA-256 of it), and such a file restored into a basalt store.
//!
//! Layers, top down: `export` / `import` (basalt's history ↔ etcd's
//! buckets), `schema` (etcd's bucket names and key encodings), `proto` (the
//! two protobuf messages etcd stores), `bbolt` (pages and trees).
//!
//! Invariants: a written file is one forward stream whose length is known
//! before its first byte ([`EtcdSnapshot::file_len`]); memory stays bounded by a
//! page per tree level and the largest value. A read file is checked before
//! use (trailer, meta checksums, every page and element against the file's
//! bounds, the protobufs field by field), and an error names the page,
//! bucket or key; the store it restores into is replaced only once the
//! whole file was read and the new store verified.
//!
//! ```
//! use basalt_engine::etcdfmt::{restore_bytes, EtcdSnapshot, RestoreOptions, SnapshotMeta};
//! use basalt_engine::mvcc::{Op, PutRequest, RangeRequest, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
//! let put = Op::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() });
//! store.apply(1, &put).unwrap();
//! let snap = EtcdSnapshot::plan(store.read_view(), SnapshotMeta { term: 1, ..Default::default() }).unwrap();
//! let mut file = Vec::new();
//! snap.write(&mut file).unwrap();
//! assert_eq!(file.len() as u64, snap.file_len());
//! restore_bytes(&file, &dir.path().join("b"), &RestoreOptions::default()).unwrap();
//! let back = Store::open(&dir.path().join("b"), StoreOptions::default()).unwrap();
//! let got = back.range(&RangeRequest { key: b"k".to_vec(), ..Default::default() }).unwrap();
//! assert_eq!(got.kvs[0].value, b"v");
//! ```
//!
//! [`ReadView`]: crate::mvcc::ReadView

pub mod bbolt;
mod error;
mod export;
mod hash;
mod import;
pub mod proto;
pub mod schema;

pub use error::EtcdFmtError;
pub use export::{EtcdSnapshot, SnapshotAuth, SnapshotMember, SnapshotMeta, TRAILER_LEN};
pub use hash::{hash_kv, Crc32c, HashKv};
pub use import::{is_etcd_db, restore, restore_bytes, RestoreOptions, Restored};
