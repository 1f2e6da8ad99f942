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
pub use grpc_server::{render_grpc_server, render_handling_seconds};
pub use histogram::{
    Histogram, DEFRAG_BUCKETS, DISK_LATENCY_BUCKETS, LEASE_TTL_BUCKETS, PEER_RTT_BUCKETS,
};
pub use http1::{Response, MAX_REQUEST_HEAD_BYTES};
pub use source::MetricsServer;

use std::fmt::Write;

/// Latency histograms of the disk work, observed by whoever does it.
pub struct DiskMetrics {
    /// One WAL batch made durable (write + fdatasync of a group commit).
    pub wal_fsync: Histogram,
    /// One store checkpoint (etcd: a bbolt backend commit).
    pub backend_commit: Histogram,
    /// One defragmentation, start to switch.
    pub defrag: Histogram,
    /// A defragmentation is running.
    pub defrag_inflight: std::cell::Cell<bool>,
}

impl Default for DiskMetrics {
    fn default() -> DiskMetrics {
        DiskMetrics {
            wal_fsync: Histogram::new(&DISK_LATENCY_BUCKETS),
            backend_commit: Histogram::new(&DISK_LATENCY_BUCKETS),
            defrag: Histogram::new(&DEFRAG_BUCKETS),
            defrag_inflight: std::cell::Cell::new(false),
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
    /// What this member knows of each peer.
    pub peers: Vec<PeerStats>,
    /// Puts and delete-ranges this member applied (in transactions too).
    pub puts: u64,
    pub deletes: u64,
    /// The rest of etcd's server counters.
    pub counters: ServerCounters,
}

/// etcd's counters of a member's applies, reads, leases and WAL.
#[derive(Debug, Clone)]
pub struct ServerCounters {
    pub slow_applies: u64,
    pub leases_granted: u64,
    pub leases_revoked: u64,
    pub leases_renewed: u64,
    pub leases_expired: u64,
    pub lease_ttls: Histogram,
    pub read_indexes_failed: u64,
    pub slow_read_indexes: u64,
    pub installing_snapshot: bool,
    pub learners_promoted: u64,
    pub wal_bytes: u64,
}

impl Default for ServerCounters {
    fn default() -> ServerCounters {
        ServerCounters {
            slow_applies: 0,
            leases_granted: 0,
            leases_revoked: 0,
            leases_renewed: 0,
            leases_expired: 0,
            lease_ttls: Histogram::new(&LEASE_TTL_BUCKETS),
            read_indexes_failed: 0,
            slow_read_indexes: 0,
            installing_snapshot: false,
            learners_promoted: 0,
            wal_bytes: 0,
        }
    }
}

impl PartialEq for ServerCounters {
    fn eq(&self, o: &ServerCounters) -> bool {
        let key = |c: &ServerCounters| {
            (
                c.slow_applies,
                c.leases_granted,
                c.leases_revoked,
                c.leases_renewed,
                c.leases_expired,
                c.lease_ttls.count(),
                c.read_indexes_failed,
                c.slow_read_indexes,
                c.installing_snapshot,
                c.learners_promoted,
                c.wal_bytes,
            )
        };
        key(self) == key(o)
    }
}

impl Eq for ServerCounters {}

/// One peer as `/metrics` reports it (etcd's `etcd_network_*` families).
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub id: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// Messages that could not be sent.
    pub failures: u64,
    /// A stream to the peer is up.
    pub active: bool,
    /// Round trips of the probes to the peer.
    pub rtt: Histogram,
}

impl PartialEq for PeerStats {
    fn eq(&self, other: &PeerStats) -> bool {
        (
            self.id,
            self.sent_bytes,
            self.received_bytes,
            self.failures,
            self.active,
        ) == (
            other.id,
            other.sent_bytes,
            other.received_bytes,
            other.failures,
            other.active,
        ) && self.rtt.count() == other.rtt.count()
    }
}

impl Eq for PeerStats {}

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
    peer_metrics(&mut out, s.member_id, &s.peers);
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
    // etcd 3.4's name (3.4 exports both; 3.5.1 only the new one), kept for
    // dashboards written against 3.4.
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
    header(
        &mut out,
        "etcd_disk_backend_defrag_duration_seconds",
        "The latency distribution of backend defragmentation.",
        "histogram",
    );
    disk.defrag
        .render(&mut out, "etcd_disk_backend_defrag_duration_seconds");
    gauge(
        &mut out,
        "etcd_disk_defrag_inflight",
        "Whether or not defrag is active on the member. 1 means active, 0 means not.",
        u8::from(disk.defrag_inflight.get()),
    );
    counter(
        &mut out,
        "etcd_mvcc_put_total",
        "Total number of puts seen by this member.",
        s.puts,
    );
    counter(
        &mut out,
        "etcd_mvcc_delete_total",
        "Total number of deletes seen by this member.",
        s.deletes,
    );
    server_counters(&mut out, &s.counters);
    out
}

fn server_counters(out: &mut String, c: &ServerCounters) {
    counter(
        out,
        "etcd_server_slow_apply_total",
        "The total number of slow apply requests (likely overloaded from slow disk).",
        c.slow_applies,
    );
    counter(
        out,
        "etcd_server_read_indexes_failed_total",
        "The total number of failed read indexes seen.",
        c.read_indexes_failed,
    );
    counter(
        out,
        "etcd_server_slow_read_indexes_total",
        "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
        c.slow_read_indexes,
    );
    gauge(
        out,
        "etcd_server_snapshot_apply_in_progress_total",
        "1 if the server is applying the incoming snapshot. 0 if none.",
        u8::from(c.installing_snapshot),
    );
    counter(
        out,
        "etcd_server_learner_promote_successes",
        "The total number of successful learner promotions while this member is leader.",
        c.learners_promoted,
    );
    gauge(
        out,
        "etcd_disk_wal_write_bytes_total",
        "Total number of bytes written in WAL.",
        c.wal_bytes,
    );
    counter(
        out,
        "etcd_debugging_lease_granted_total",
        "The total number of granted leases.",
        c.leases_granted,
    );
    counter(
        out,
        "etcd_debugging_lease_revoked_total",
        "The total number of revoked leases.",
        c.leases_revoked,
    );
    counter(
        out,
        "etcd_debugging_lease_renewed_total",
        "The number of renewed leases seen by the leader.",
        c.leases_renewed,
    );
    counter(
        out,
        "etcd_debugging_server_lease_expired_total",
        "The total number of expired leases.",
        c.leases_expired,
    );
    header(
        out,
        "etcd_debugging_lease_ttl_total",
        "Bucketed histogram of lease TTLs.",
        "histogram",
    );
    c.lease_ttls.render(out, "etcd_debugging_lease_ttl_total");
}

/// etcd's `etcd_network_peer_*` counters, one series per peer (ids in
/// hex, etcd's `To`/`From` labels); failures only where there were some,
/// as a Go counter vector shows only the series it was given.
fn peer_metrics(out: &mut String, me: u64, peers: &[PeerStats]) {
    if peers.is_empty() {
        return;
    }
    header(
        out,
        "etcd_network_active_peers",
        "The current number of active peer connections.",
        "gauge",
    );
    for p in peers {
        let _ = writeln!(
            out,
            "etcd_network_active_peers{{Local=\"{me:x}\",Remote=\"{:x}\"}} {}",
            p.id,
            u8::from(p.active)
        );
    }
    header(
        out,
        "etcd_network_peer_round_trip_time_seconds",
        "Round-Trip-Time histogram between peers",
        "histogram",
    );
    for p in peers {
        p.rtt.render_labeled(
            out,
            "etcd_network_peer_round_trip_time_seconds",
            &format!("To=\"{:x}\"", p.id),
        );
    }
    header(
        out,
        "etcd_network_peer_sent_bytes_total",
        "The total number of bytes sent to peers.",
        "counter",
    );
    for p in peers {
        let _ = writeln!(
            out,
            "etcd_network_peer_sent_bytes_total{{To=\"{:x}\"}} {}",
            p.id, p.sent_bytes
        );
    }
    header(
        out,
        "etcd_network_peer_received_bytes_total",
        "The total number of bytes received from peers.",
        "counter",
    );
    for p in peers {
        let _ = writeln!(
            out,
            "etcd_network_peer_received_bytes_total{{From=\"{:x}\"}} {}",
            p.id, p.received_bytes
        );
    }
    if peers.iter().any(|p| p.failures > 0) {
        header(
            out,
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures from peers.",
            "counter",
        );
        for p in peers.iter().filter(|p| p.failures > 0) {
            let _ = writeln!(
                out,
                "etcd_network_peer_sent_failures_total{{To=\"{:x}\"}} {}",
                p.id, p.failures
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
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count());
    if let Ok(n) = open_fds {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            n,
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
        // etcd 3.5's own names for the same two numbers.
        gauge(
            out,
            "os_fd_limit",
            "The file descriptor limit.",
            limit.rlim_cur,
        );
    }
    if let Ok(n) = open_fds {
        gauge(out, "os_fd_used", "The number of used file descriptors.", n);
    }
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0 {
        gauge(
            out,
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
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
            puts: 5,
            deletes: 2,
            counters: ServerCounters::default(),
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
            "etcd_disk_backend_defrag_duration_seconds_bucket{le=\"0.1\"} 0\n",
            "etcd_disk_defrag_inflight 0\n",
            "etcd_mvcc_put_total 5\n",
            "etcd_mvcc_delete_total 2\n",
            "etcd_server_slow_apply_total 0\n",
            "etcd_debugging_lease_ttl_total_bucket{le=\"1\"} 0\n",
            "# TYPE os_fd_used gauge\n",
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
