//! basalt-net: etcd's v3 gRPC API over h2 on glommio.
//!
//! The message types live in [`proto`], generated from our own `.proto`
//! files that are wire-identical to etcd's `etcdserverpb`, `mvccpb` and
//! `authpb` packages. [`grpc`] is the gRPC server layer on `h2`.

pub mod error;
pub mod grpc;
pub mod member;
pub mod proto;
pub mod sequencer;
pub mod validate;
pub mod wire;

pub use error::Error;
