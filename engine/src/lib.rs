//! basalt-engine: durable storage for basalt (WAL, B+tree, MVCC, leases).
pub mod mvcc;
