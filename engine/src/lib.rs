//! basalt-engine: durable storage for basalt (WAL, B+tree, MVCC, leases).
pub mod btree;
pub mod mvcc;
pub mod wal;
