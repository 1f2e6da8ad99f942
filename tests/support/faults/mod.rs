//! Fault runs: real member processes killed, paused and partitioned while
//! clients run, and the recorded history judged by `basalt-check`
//! (linearizability of the KV operations, etcd's watch guarantees).
//!
//! ```ignore
//! let result = run(&RunPlan::basalt(7, Duration::from_secs(20))).await;
//! assert_eq!(result.verdict(), Verdict::Ok, "{}", result.explain());
//! ```
//!
//! A run ([`run`]) puts three members (basalt or etcd) each in a network
//! namespace of its own ([`netns`]), starts the clients and watchers
//! ([`workload`]), lets the nemesis carry out a seeded fault schedule
//! ([`nemesis`]), heals everything, waits a quiet period, reads every key
//! on every member, lets the watchers catch up, saves the recording as JSON
//! lines and checks it. The seed ([`rng`]) fixes the schedule and every
//! client's choices; the timing is the real processes'.
//!
//! Invariants: at most one member is faulty at a time, every fault is
//! healed before the next, every process signalled is the server itself
//! (checked through /proc), and nothing outside this run's own
//! namespaces and links is touched. Without namespaces (not root, no
//! `ip`) partition faults are skipped with a printed notice, or refused
//! with `BASALT_FAULTS_REQUIRE_NETNS` set.

pub mod clock;
pub mod nemesis;
pub mod netns;
pub mod rng;
pub mod run;
pub mod workload;

pub use nemesis::{Fault, FaultKind, Schedule, Target};
pub use run::{run, Faults, RunPlan, RunResult};
pub use workload::WorkloadPlan;
