//! etcd's Lease service.
//!
//! A lease is granted and revoked through the log like any write, so both
//! are durable and a revoke's key deletions reach watchers; its clock lives
//! only in memory on the sequencer's executor ([`Keeper`]), and after a
//! restart every lease starts over with its full TTL, as in etcd without
//! lease checkpoints. [`Lessor`] joins the two and [`register`] serves the
//! gRPC methods on top of it.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use basalt_net::lease::{effective_ttl, min_ttl, Keeper};
//!
//! // etcd's default heartbeat and election timeout raise a 1 s TTL to 2 s.
//! let ttl = effective_ttl(1, min_ttl(Duration::from_millis(100), Duration::from_secs(1)));
//! assert_eq!(ttl, Some(2));
//!
//! let mut keeper = Keeper::new();
//! let t0 = Instant::now();
//! keeper.grant(7, 2, t0);
//! assert_eq!(keeper.renew(7, t0 + Duration::from_secs(1)), Some(2));
//! assert_eq!(keeper.take_expired(t0 + Duration::from_secs(3), 100), vec![7]);
//! ```

mod call;
mod keeper;
mod lessor;
mod service;
mod ttl;
mod wiring;

pub use call::{LeaseApi, LeaseCall, LeaseReply};
pub use keeper::Keeper;
pub use lessor::{LeaseConfig, LeaseEvent, LeaseLog, Lessor, LogFuture, LEASE_CHECKPOINT_INTERVAL};
pub use service::{
    register, GRANT_METHOD, KEEP_ALIVE_METHOD, LEASES_METHOD, REVOKE_METHOD, TIME_TO_LIVE_METHOD,
};
pub use ttl::{effective_ttl, min_ttl, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT, MAX_LEASE_TTL};
pub use wiring::attach;
