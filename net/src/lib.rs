//! basalt-net: etcd's v3 gRPC API over h2 on glommio.
//!
//! The message types live in [`proto`], generated from our own `.proto`
//! files that are wire-identical to etcd's `etcdserverpb`, `mvccpb` and
//! `authpb` packages. [`grpc`] is the gRPC server layer on `h2`.

pub mod auth;
pub mod compactor;
pub mod config;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod proto;
pub mod raftlog;
pub mod sequencer;
pub mod server;
pub mod services;
pub mod snapshot_file;
pub mod tls;
pub mod validate;
pub mod watch;
pub mod wire;

pub use config::Config;
pub use error::Error;
pub use server::{start, ServerHandle};
