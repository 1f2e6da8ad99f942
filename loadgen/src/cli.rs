//! The command line: etcd's `tools/benchmark` flags where a workload has an
//! etcd counterpart, plus the Kubernetes and list-storm profiles.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pacing::parse_duration;

/// Load generator for etcd v3-API servers.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for etcd v3-API servers (etcd, basalt)",
    after_help = "Run a workload (`loadgen put --total 10000`) or a profile \
                  (`loadgen --profile kubernetes --nodes 500 --duration 60s`)."
)]
pub struct Cli {
    /// Comma-separated client URLs.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// CA to verify `https` endpoints with (etcd benchmark's `--cacert`).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Client certificate for `https` endpoints (`--cert`).
    #[arg(long, global = true, requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// Client certificate's key (`--key`; `range`'s key is positional).
    #[arg(long = "key", id = "tls_key", global = true, requires = "cert")]
    pub tls_key: Option<PathBuf>,
    /// gRPC connections (HTTP/2 channels); clients are spread over them.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients (tasks issuing requests one at a time).
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Stop after this long (e.g. 30s, 500ms, 2m).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests (default: the workload's, as in etcd's benchmark).
    #[arg(long, global = true)]
    pub total: Option<u64>,
    /// Requests per second over all clients (default: as fast as possible).
    #[arg(long, global = true)]
    pub rate: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Draw a latency-percentile plot (SVG) to this file.
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// Run a traffic profile instead of a single workload.
    #[arg(long, global = true)]
    pub profile: Option<Profile>,
    /// Compaction period: put compacts to the current revision minus 1,000
    /// (as etcd's benchmark); the kubernetes profile runs the apiserver's
    /// compaction (default 5m there, none for put).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub compact_interval: Option<Duration>,
    /// Threads of the async runtime (default: 1 for put and range, one per
    /// CPU otherwise).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Do not draw the progress bar.
    #[arg(long, global = true)]
    pub no_progress: bool,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    #[command(flatten)]
    pub list_storm: ListStormArgs,
    #[command(subcommand)]
    pub workload: Option<Workload>,
}

/// Traffic profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// What kube-apiserver sends: a synthetic cluster, then its request mix.
    Kubernetes,
    /// Many concurrent full LISTs of a large prefix.
    ListStorm,
}

/// etcd-benchmark workloads.
#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Unary Put of random or sequential keys.
    Put(PutArgs),
    /// Range over one key, a prefix or a key range.
    Range(RangeArgs),
    /// Txn with `--txn-ops` puts.
    TxnPut(TxnPutArgs),
    /// Txns that either read a range or put a key, in `--rw-ratio`.
    TxnMixed(TxnMixedArgs),
    /// Creates many watchers, then puts to the watched keys and counts events.
    Watch(WatchArgs),
    /// Latency from a put to its event on many watchers of one key.
    WatchLatency(WatchLatencyArgs),
    /// Lease keep-alive round trips.
    LeaseKeepalive(LeaseKeepaliveArgs),
}

impl Workload {
    /// The name used in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) => "put",
            Workload::Range(_) => "range",
            Workload::TxnPut(_) => "txn-put",
            Workload::TxnMixed(_) => "txn-mixed",
            Workload::Watch(_) => "watch",
            Workload::WatchLatency(_) => "watch-latency",
            Workload::LeaseKeepalive(_) => "lease-keepalive",
        }
    }
}

/// Key and value shape of written keys.
#[derive(Clone, Debug, Args)]
pub struct KeyArgs {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Write keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Prefix of every key written (part of --key-size).
    #[arg(long, default_value = "")]
    pub prefix: String,
}

/// `put` flags.
#[derive(Clone, Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Read consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable (goes through the leader's ReadIndex).
    L,
    /// Serializable (local read).
    S,
}

/// `range` flags.
#[derive(Clone, Debug, Args)]
pub struct RangeArgs {
    /// Key to read (the start of the range).
    pub key: String,
    /// End of the range (exclusive); none reads the single key.
    pub end: Option<String>,
    /// Read every key with `key` as prefix.
    #[arg(long, conflicts_with = "end")]
    pub prefix: bool,
    /// l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum keys returned (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Return only the count.
    #[arg(long)]
    pub count_only: bool,
    /// Return keys without values.
    #[arg(long)]
    pub keys_only: bool,
}

/// `txn-put` flags.
#[derive(Clone, Debug, Args)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Puts per transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

/// `txn-mixed` flags.
#[derive(Clone, Debug, Args)]
pub struct TxnMixedArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Read transactions per write transaction.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// l (linearizable) or s (serializable) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum keys per read (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
}

/// Watch stream layout, shared by `watch` and `watch-latency`.
#[derive(Clone, Debug, Args)]
pub struct StreamArgs {
    /// Watch streams (gRPC bidi streams), spread over the connections.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers created on each stream.
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// Puts per second (0: as fast as one putter goes).
    #[arg(long, default_value_t = 100.0)]
    pub put_rate: f64,
    /// Puts in all (bounded further by --total and --duration).
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Ask for the previous key-value with each event.
    #[arg(long)]
    pub prevkv: bool,
    /// Value size of the puts.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
}

/// `watch` flags.
#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub streams: StreamArgs,
    /// Distinct keys watched (watchers are spread over them).
    #[arg(long, default_value_t = 1)]
    pub watched_key_total: u64,
    /// Key size of the watched keys.
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
}

/// `watch-latency` flags.
#[derive(Clone, Debug, Args)]
pub struct WatchLatencyArgs {
    #[command(flatten)]
    pub streams: StreamArgs,
}

/// `lease-keepalive` flags.
#[derive(Clone, Debug, Args)]
pub struct LeaseKeepaliveArgs {
    /// TTL of each client's lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

/// `--profile kubernetes` flags.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Kubernetes profile")]
pub struct KubernetesArgs {
    /// Cluster size; object counts and rates scale with it.
    #[arg(long, global = true, default_value_t = 500)]
    pub nodes: u64,
    /// Multiplies every traffic rate (a test can compress minutes into seconds).
    #[arg(long, global = true, default_value_t = 1.0)]
    pub speedup: f64,
    /// TTL of events (kube-apiserver --event-ttl).
    #[arg(long, global = true, value_parser = parse_duration, default_value = "1h")]
    pub event_ttl: Duration,
    /// Pod object size in bytes (clusterloader2 uses 15 KB).
    #[arg(long, global = true, default_value_t = 15_000)]
    pub pod_size: usize,
    /// Delete every key under /registry/ before loading the cluster.
    #[arg(long, global = true)]
    pub clean: bool,
}

/// `--profile list-storm` flags.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "List-storm profile")]
pub struct ListStormArgs {
    /// Concurrent full LISTs.
    #[arg(long, global = true, default_value_t = 8)]
    pub lists: usize,
    /// Keys under the listed prefix.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub storm_keys: u64,
    /// Value size of those keys (10,000 × 8 KB = 80 MB).
    #[arg(long, global = true, default_value_t = 8_000)]
    pub storm_val_size: usize,
    /// Page size of each LIST (the apiserver's watch-cache fill uses 10,000; 0: one unpaged Range).
    #[arg(long, global = true, default_value_t = 10_000)]
    pub page_size: i64,
    /// Do not load: list the keys an earlier run loaded (there must be
    /// exactly --storm-keys of them). With --total 0, a run only loads, so
    /// a harness can measure the server's memory between the two.
    #[arg(long, global = true)]
    pub storm_reuse: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_do_not_clash_with_a_range_key() {
        let cli = Cli::try_parse_from([
            "loadgen", "--cacert", "ca.pem", "--cert", "c.pem", "--key", "k.pem", "range", "probe",
        ])
        .expect("parse");
        assert_eq!(cli.tls_key, Some(PathBuf::from("k.pem")));
        assert!(Cli::try_parse_from(["loadgen", "--cert", "c.pem", "range", "probe"]).is_err());
    }
}
