//! The etcd-benchmark workloads, with the meaning of etcd's
//! `tools/benchmark` subcommands of the same names.

pub mod kv;
pub mod lease;
pub mod watch;

use crate::cli::Workload;
use crate::error::Result;
use crate::report::Recorder;
use crate::run::Run;

/// etcd's benchmark runs 10,000 requests unless told otherwise.
pub const DEFAULT_TOTAL: u64 = 10_000;

/// Runs `workload`; returns what was recorded and how long the measured
/// phase lasted.
pub async fn run(
    run: &Run,
    workload: &Workload,
    compact: Option<std::time::Duration>,
) -> Result<(Recorder, std::time::Duration)> {
    match workload {
        Workload::Put(args) => kv::put(run, args, compact).await,
        Workload::Range(args) => kv::range(run, args).await,
        Workload::TxnPut(args) => kv::txn_put(run, args).await,
        Workload::TxnMixed(args) => kv::txn_mixed(run, args).await,
        Workload::Watch(args) => watch::watch(run, args).await,
        Workload::WatchLatency(args) => watch::watch_latency(run, args).await,
        Workload::LeaseKeepalive(args) => lease::keepalive(run, args).await,
    }
}
