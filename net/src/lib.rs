//! basalt-net: etcd's v3 gRPC API over h2 on glommio.
//!
//! The message types live in [`proto`], generated from our own `.proto`
//! files that are wire-identical to etcd's `etcdserverpb`, `mvccpb` and
//! `authpb` packages.

pub mod proto;
