//! `/metrics` (Prometheus text format, etcd's metric names), `/health`,
//! `/livez` and `/readyz` for the basalt server, on `--listen-metrics-urls`
//! and, with `/version`, on the client port (see [`answer`] and
//! [`crate::gateway`]).
//!
//! Scrapes are answered on the sequencer's executor: gauges are read from
//! the sequencer when a scrape arrives (nothing is counted twice), and the
//! disk latency histograms in [`DiskMetrics`] are plain `Cell`s that the
//! code doing the I/O observes into, so the request path takes no lock.
//! gRPC call counters ([`crate::grpc::CallMetrics`]) are kept per executor
//! by the executor serving the call and summed at scrape time.
//!
//! ```
//! use basalt_net::metrics::{render_metrics, DiskMetrics, ServerState};
//! let disk = DiskMetrics::default();
//! disk.wal_fsync.observe(std::time::Duration::from_micros(800));
//! let text = render_metrics(&ServerState::default(), &disk);
//! assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_count 1\n"));
//! ```

mod client_port;
mod endpoint;
mod grpc_server;
mod histogram;
mod http1;
mod source;

pub use client_port::{answer, client_http_handler, CLIENT_HTTP_PATH};
pub use endpoint::{
    bind_listeners, local_addrs, serve, Endpoint, Listener, MetricsListener, MAX_OPEN_CONNECTIONS,
};
pub use grpc_server::render_grpc_server;
pub use histogram::{Histogram, DISK_LATENCY_BUCKETS};
pub use http1::{Response, MAX_REQUEST_HEAD_BYTES};
pub use source::MetricsServer;

use std::fmt::Write;

/// Latency histograms of the disk work, observed by whoever does it.
pub struct DiskMetrics {
    /// One WAL batch made durable (write + fdatasync of a group commit).
    pub wal_fsync: Histogram,
    /// One store checkpoint (etcd: a bbolt backend commit).
    pub backend_commit: Histogram,
}

impl Default for DiskMetrics {
    fn default() -> DiskMetrics {
        DiskMetrics {
            wal_fsync: Histogram::new(&DISK_LATENCY_BUCKETS),
            backend_commit: Histogram::new(&DISK_LATENCY_BUCKETS),
        }
    }
}

/// What a scrape reports about the server, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerState {
    pub member_id: u64,
    /// The etcd version basalt reports (`etcd_server_version`).
    pub version: String,
    pub current_revision: i64,
    /// etcd reports -1 before the first compaction.
    pub compact_revision: i64,
    pub db_size: u64,
    pub db_size_in_use: u64,
    /// Raft entries committed (our WAL's last index: one member).
    pub committed_index: u64,
    pub applied_index: u64,
    pub quota_backend_bytes: u64,
    /// Active alarms by name (`NOSPACE`, `CORRUPT`).
    pub alarms: Vec<String>,
    /// This member knows a leader.
    pub has_leader: bool,
    /// This member leads.
    pub is_leader: bool,
    pub is_learner: bool,
    /// Leader changes this member has seen since it started.
    pub leader_changes: u64,
    /// Proposals that failed (timed out, dropped, no leader).
    pub proposals_failed: u64,
    /// Proposals waiting to be applied.
    pub proposals_pending: u64,
    /// (peer, bytes sent, bytes received, messages not sent).
    pub peers: Vec<(u64, u64, u64, u64)>,
}

/// The `/metrics` body.
pub fn render_metrics(s: &ServerState, disk: &DiskMetrics) -> String {
    let mut out = String::with_capacity(4096);
    gauge(
        &mut out,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u8::from(s.has_leader),
    );
    gauge(
        &mut out,
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        u8::from(s.is_leader),
    );
    gauge(
        &mut out,
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        u8::from(s.is_learner),
    );
    counter(
        &mut out,
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        s.leader_changes,
    );
    counter(
        &mut out,
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        s.proposals_failed,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        s.proposals_pending,
    );
    process_metrics(&mut out);
    peer_metrics(&mut out, &s.peers);
    header(
        &mut out,
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        "gauge",
    );
    let _ = writeln!(out, "etcd_server_id{{server_id=\"{:x}\"}} 1", s.member_id);
    header(
        &mut out,
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "etcd_server_version{{server_version=\"{}\"}} 1",
        s.version
    );
    header(
        &mut out,
        "etcd_cluster_version",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        "gauge",
    );
    let _ = writeln!(
        out,
        "etcd_cluster_version{{cluster_version=\"{}\"}} 1",
        major_minor(&s.version)
    );
    // etcd declares these two as gauges despite the _total suffix.
    gauge(
        &mut out,
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        s.committed_index,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        s.applied_index,
    );
    gauge(
        &mut out,
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        s.quota_backend_bytes,
    );
    gauge(
        &mut out,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        s.db_size,
    );
    // The 3.4 name, still exported by etcd 3.4 and 3.5 beside the new one.
    gauge(
        &mut out,
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        s.db_size,
    );
    gauge(
        &mut out,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        s.db_size_in_use,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        s.current_revision,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        s.compact_revision,
    );
    header(
        &mut out,
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        "histogram",
    );
    disk.wal_fsync
        .render(&mut out, "etcd_disk_wal_fsync_duration_seconds");
    header(
        &mut out,
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        "histogram",
    );
    disk.backend_commit
        .render(&mut out, "etcd_disk_backend_commit_duration_seconds");
    out
}

/// etcd's `etcd_network_peer_*` counters, one series per peer (ids in
/// hex, etcd's `To`/`From` labels); failures only where there were some,
/// as a Go counter vector shows only the series it was given.
fn peer_metrics(out: &mut String, peers: &[(u64, u64, u64, u64)]) {
    if peers.is_empty() {
        return;
    }
    header(
        out,
        "etcd_network_peer_sent_bytes_total",
        "The total number of bytes sent to peers.",
        "counter",
    );
    for (id, sent, _, _) in peers {
        let _ = writeln!(
            out,
            "etcd_network_peer_sent_bytes_total{{To=\"{id:x}\"}} {sent}"
        );
    }
    header(
        out,
        "etcd_network_peer_received_bytes_total",
        "The total number of bytes received from peers.",
        "counter",
    );
    for (id, _, received, _) in peers {
        let _ = writeln!(
            out,
            "etcd_network_peer_received_bytes_total{{From=\"{id:x}\"}} {received}"
        );
    }
    if peers.iter().any(|p| p.3 > 0) {
        header(
            out,
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures from peers.",
            "counter",
        );
        for (id, _, _, failures) in peers.iter().filter(|p| p.3 > 0) {
            let _ = writeln!(
                out,
                "etcd_network_peer_sent_failures_total{{To=\"{id:x}\"}} {failures}"
            );
        }
    }
}

/// Prometheus's standard `process_*` metrics for this process, from
/// `/proc/self` (nothing is written where it cannot be read).
fn process_metrics(out: &mut String) {
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) in ")".
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            header(
                out,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
            );
            let _ = writeln!(
                out,
                "process_cpu_seconds_total {}",
                (utime + stime) as f64 / ticks
            );
        }
        if let Some(vsize) = field(23) {
            gauge(
                out,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                vsize,
            );
        }
        if let Some(rss) = field(24) {
            gauge(
                out,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss * page,
            );
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let (Some(start), Some(boot)) = (field(22), boot) {
            header(
                out,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
            );
            let _ = writeln!(
                out,
                "process_start_time_seconds {}",
                boot as f64 + start as f64 / ticks
            );
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            dir.count(),
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        gauge(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            limit.rlim_cur,
        );
    }
}

/// `major.minor` of a version (`3.5.17` → `3.5`), etcd's cluster version.
fn major_minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// etcd's `/version` body: the server version and the cluster version
/// (`major.minor.0`; a single member's cluster runs its own version).
pub fn version_json(server_version: &str) -> String {
    format!(
        r#"{{"etcdserver":"{server_version}","etcdcluster":"{}.0"}}"#,
        major_minor(server_version)
    )
}

/// etcd 3.5's `/health` answer: status code and JSON body. Unhealthy while
/// an alarm is raised (etcd ignores none for the default `/health`).
pub fn health(s: &ServerState) -> (u16, String) {
    match s.alarms.first() {
        Some(alarm) => (
            503,
            format!(r#"{{"health":"false","reason":"ALARM {alarm}"}}"#),
        ),
        None if !s.has_leader => (
            503,
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#.to_owned(),
        ),
        None => (200, r#"{"health":"true","reason":""}"#.to_owned()),
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ServerState {
        ServerState {
            member_id: 0x8e9e05c52164694d,
            version: "3.5.17".into(),
            current_revision: 7,
            compact_revision: -1,
            db_size: 20480,
            db_size_in_use: 16384,
            committed_index: 9,
            applied_index: 9,
            quota_backend_bytes: 2 << 30,
            alarms: vec![],
            has_leader: true,
            is_leader: true,
            is_learner: false,
            leader_changes: 1,
            proposals_failed: 0,
            proposals_pending: 0,
            peers: Vec::new(),
        }
    }

    #[test]
    fn metrics_carry_etcd_names_and_values() {
        let text = render_metrics(&state(), &DiskMetrics::default());
        for line in [
            "etcd_server_has_leader 1\n",
            "etcd_server_is_leader 1\n",
            "etcd_server_leader_changes_seen_total 1\n",
            "etcd_server_id{server_id=\"8e9e05c52164694d\"} 1\n",
            "etcd_server_version{server_version=\"3.5.17\"} 1\n",
            "etcd_cluster_version{cluster_version=\"3.5\"} 1\n",
            "etcd_server_proposals_committed_total 9\n",
            "etcd_server_proposals_applied_total 9\n",
            "etcd_server_quota_backend_bytes 2147483648\n",
            "etcd_mvcc_db_total_size_in_bytes 20480\n",
            "etcd_mvcc_db_total_size_in_use_in_bytes 16384\n",
            "etcd_debugging_mvcc_current_revision 7\n",
            "etcd_debugging_mvcc_compact_revision -1\n",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n",
            "etcd_disk_backend_commit_duration_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_series_has_one_type_line() {
        let text = render_metrics(&state(), &DiskMetrics::default());
        let mut types = std::collections::BTreeSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = l.split(' ').nth(2).unwrap();
            assert!(types.insert(name.to_owned()), "{name} declared twice");
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let series = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s).filter(|f| types.contains(*f)))
                .unwrap_or(series);
            assert!(types.contains(family), "{series} has no TYPE line");
        }
    }

    #[test]
    fn version_names_the_cluster_version() {
        assert_eq!(
            version_json("3.5.17"),
            r#"{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}"#
        );
        assert_eq!(major_minor("3"), "3");
    }

    #[test]
    fn health_follows_alarms() {
        assert_eq!(
            health(&state()),
            (200, r#"{"health":"true","reason":""}"#.to_owned())
        );
        let mut s = state();
        s.alarms.push("NOSPACE".into());
        assert_eq!(
            health(&s),
            (
                503,
                r#"{"health":"false","reason":"ALARM NOSPACE"}"#.to_owned()
            )
        );
    }
}
