//! basalt-engine: durable storage for basalt (WAL, B+tree, MVCC, leases).
//!
//! [`wal`]: the Raft log plus hard state, in pre-written segment files
//! overwritten with O_DIRECT through glommio; appends resolve only once
//! durable, and concurrent appends share one fdatasync (group commit).
//! Recovery cuts a torn tail and refuses any other damage with the file and
//! offset. Runs on one glommio executor (`!Send`).
//!
//! [`etcdfmt`]: etcd's snapshot format (a bbolt database plus a SHA-256),
//! read into a store and written from a read view, so etcd's backup tools
//! and basalt's restore each other's files.
pub mod btree;
pub mod etcdfmt;
pub mod mvcc;
pub mod wal;
