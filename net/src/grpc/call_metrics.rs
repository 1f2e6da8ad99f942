//! Per-method call counters behind the go-grpc-prometheus families etcd
//! exports: `grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_msg_received_total` and `grpc_server_msg_sent_total`, and
//! the handling time histogram `grpc_server_handling_seconds` (exported
//! with `--metrics extensive`, as etcd does).
//!
//! Thread-per-core: every executor owns one slot and is its only writer,
//! so an increment is an uncontended relaxed add on cache lines no other
//! core touches; a scrape sums the slots. Rows are 128-byte aligned so two
//! executors never write the same line.
//!
//! ```
//! use basalt_net::grpc::{CallMetrics, Code};
//! let metrics = CallMetrics::new(2);
//! let calls = metrics.executor(1);
//! let tally = calls.start("/etcdserverpb.KV/Put").unwrap();
//! tally.received();
//! tally.finished(Code::InvalidArgument);
//! let put = metrics.totals().into_iter().find(|t| t.method.name() == "Put").unwrap();
//! assert_eq!((put.started, put.received, put.sent), (1, 1, 0));
//! assert_eq!(put.handled[Code::InvalidArgument as usize], 1);
//! ```

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::status::Code;

/// The shape of a method, go-grpc-prometheus's `grpc_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    Unary,
    ServerStream,
    BidiStream,
}

impl MethodKind {
    pub fn label(self) -> &'static str {
        match self {
            MethodKind::Unary => "unary",
            MethodKind::ServerStream => "server_stream",
            MethodKind::BidiStream => "bidi_stream",
        }
    }
}

/// One counted method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// `/etcdserverpb.KV/Range`.
    pub path: &'static str,
    pub kind: MethodKind,
}

impl Method {
    /// `etcdserverpb.KV` (the `grpc_service` label).
    pub fn service(&self) -> &'static str {
        let p = self.path.strip_prefix('/').unwrap_or(self.path);
        p.rsplit_once('/').map_or(p, |(s, _)| s)
    }

    /// `Range` (the `grpc_method` label).
    pub fn name(&self) -> &'static str {
        self.path.rsplit_once('/').map_or(self.path, |(_, m)| m)
    }
}

const fn unary(path: &'static str) -> Method {
    Method {
        path,
        kind: MethodKind::Unary,
    }
}

/// Every method etcd's client gRPC server registers, so each has its
/// series (at zero) from the start, as go-grpc-prometheus pre-registers
/// them. Observed on etcd 3.4.23's `/metrics` (41 methods), plus the two
/// etcd 3.5 added (Auth/AuthStatus, Maintenance/Downgrade): basalt reports
/// a 3.5 version. Calls to any other path are not counted (grpc-go answers
/// unknown methods without running the interceptors).
pub const METHODS: &[Method] = &[
    unary("/etcdserverpb.KV/Range"),
    unary("/etcdserverpb.KV/Put"),
    unary("/etcdserverpb.KV/DeleteRange"),
    unary("/etcdserverpb.KV/Txn"),
    unary("/etcdserverpb.KV/Compact"),
    Method {
        path: "/etcdserverpb.Watch/Watch",
        kind: MethodKind::BidiStream,
    },
    unary("/etcdserverpb.Lease/LeaseGrant"),
    unary("/etcdserverpb.Lease/LeaseRevoke"),
    Method {
        path: "/etcdserverpb.Lease/LeaseKeepAlive",
        kind: MethodKind::BidiStream,
    },
    unary("/etcdserverpb.Lease/LeaseTimeToLive"),
    unary("/etcdserverpb.Lease/LeaseLeases"),
    unary("/etcdserverpb.Cluster/MemberAdd"),
    unary("/etcdserverpb.Cluster/MemberRemove"),
    unary("/etcdserverpb.Cluster/MemberUpdate"),
    unary("/etcdserverpb.Cluster/MemberList"),
    unary("/etcdserverpb.Cluster/MemberPromote"),
    unary("/etcdserverpb.Maintenance/Alarm"),
    unary("/etcdserverpb.Maintenance/Status"),
    unary("/etcdserverpb.Maintenance/Defragment"),
    unary("/etcdserverpb.Maintenance/Hash"),
    unary("/etcdserverpb.Maintenance/HashKV"),
    Method {
        path: "/etcdserverpb.Maintenance/Snapshot",
        kind: MethodKind::ServerStream,
    },
    unary("/etcdserverpb.Maintenance/MoveLeader"),
    unary("/etcdserverpb.Maintenance/Downgrade"),
    unary("/etcdserverpb.Auth/AuthEnable"),
    unary("/etcdserverpb.Auth/AuthDisable"),
    unary("/etcdserverpb.Auth/AuthStatus"),
    unary("/etcdserverpb.Auth/Authenticate"),
    unary("/etcdserverpb.Auth/UserAdd"),
    unary("/etcdserverpb.Auth/UserGet"),
    unary("/etcdserverpb.Auth/UserList"),
    unary("/etcdserverpb.Auth/UserDelete"),
    unary("/etcdserverpb.Auth/UserChangePassword"),
    unary("/etcdserverpb.Auth/UserGrantRole"),
    unary("/etcdserverpb.Auth/UserRevokeRole"),
    unary("/etcdserverpb.Auth/RoleAdd"),
    unary("/etcdserverpb.Auth/RoleGet"),
    unary("/etcdserverpb.Auth/RoleList"),
    unary("/etcdserverpb.Auth/RoleDelete"),
    unary("/etcdserverpb.Auth/RoleGrantPermission"),
    unary("/etcdserverpb.Auth/RoleRevokePermission"),
    unary("/grpc.health.v1.Health/Check"),
    Method {
        path: "/grpc.health.v1.Health/Watch",
        kind: MethodKind::ServerStream,
    },
];

const CODES: usize = Code::ALL.len();

/// go-grpc-prometheus's handling time buckets (Prometheus' defaults), in
/// seconds.
pub const HANDLING_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const HANDLING_SLOTS: usize = HANDLING_BUCKETS.len() + 1;

/// One method's counters in one executor's slot. Aligned so rows of
/// different slots never share a cache line.
#[repr(align(128))]
#[derive(Default)]
struct Row {
    started: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    handled: [AtomicU64; CODES],
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
    /// Calls ended per handling time bucket (not cumulative; the last is
    /// +Inf), and their total in nanoseconds.
    handling: [AtomicU64; HANDLING_SLOTS],
    handling_nanos: AtomicU64,
}

/// One executor's connection count, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Connections(AtomicU64);

/// The counters of one server, shared by its executors (`Send + Sync`).
pub struct CallMetrics {
    /// `slots[executor][method]`.
    slots: Box<[Box<[Row]>]>,
    /// Client connections each executor was given to serve.
    connections: Box<[Connections]>,
    by_path: HashMap<&'static str, usize>,
}

/// A method's counters summed over every executor.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodTotals {
    pub method: Method,
    pub started: u64,
    pub received: u64,
    pub sent: u64,
    /// Indexed by `Code as usize`.
    pub handled: [u64; CODES],
    /// Calls ended per [`HANDLING_BUCKETS`] bucket plus +Inf, not
    /// cumulative.
    pub handling: [u64; HANDLING_SLOTS],
    /// Seconds the ended calls took, in all.
    pub handling_seconds: f64,
}

impl CallMetrics {
    /// Counters for a server with `executors` executors (at least one).
    pub fn new(executors: usize) -> Arc<CallMetrics> {
        let slots = (0..executors.max(1))
            .map(|_| METHODS.iter().map(|_| Row::default()).collect())
            .collect();
        let by_path = METHODS
            .iter()
            .enumerate()
            .map(|(i, m)| (m.path, i))
            .collect();
        let connections = (0..executors.max(1))
            .map(|_| Connections::default())
            .collect();
        Arc::new(CallMetrics {
            slots,
            connections,
            by_path,
        })
    }

    /// The handle executor `id` counts through. An id past the count
    /// shares the last slot rather than panicking: totals stay right, only
    /// the one-writer-per-line property is lost.
    pub fn executor(self: &Arc<Self>, id: usize) -> ExecutorCalls {
        ExecutorCalls(Rc::new(Slot {
            metrics: self.clone(),
            index: id.min(self.slots.len() - 1),
        }))
    }

    /// Client connections served so far, per executor.
    pub fn connections(&self) -> Vec<u64> {
        self.connections
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .collect()
    }

    /// Every method's counters summed over the executors, in [`METHODS`]
    /// order.
    /// (received, sent) bytes of gRPC messages over every method and
    /// executor (etcd's `etcd_network_client_grpc_*_bytes_total`).
    pub fn bytes(&self) -> (u64, u64) {
        let mut totals = (0, 0);
        for slot in self.slots.iter() {
            for row in slot.iter() {
                totals.0 += row.received_bytes.load(Ordering::Relaxed);
                totals.1 += row.sent_bytes.load(Ordering::Relaxed);
            }
        }
        totals
    }

    pub fn totals(&self) -> Vec<MethodTotals> {
        METHODS
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut t = MethodTotals {
                    method: *m,
                    started: 0,
                    received: 0,
                    sent: 0,
                    handled: [0; CODES],
                    handling: [0; HANDLING_SLOTS],
                    handling_seconds: 0.0,
                };
                for slot in self.slots.iter() {
                    let row = &slot[i];
                    t.started += row.started.load(Ordering::Relaxed);
                    t.received += row.received.load(Ordering::Relaxed);
                    t.sent += row.sent.load(Ordering::Relaxed);
                    for (sum, c) in t.handled.iter_mut().zip(&row.handled) {
                        *sum += c.load(Ordering::Relaxed);
                    }
                    for (sum, c) in t.handling.iter_mut().zip(&row.handling) {
                        *sum += c.load(Ordering::Relaxed);
                    }
                    t.handling_seconds += row.handling_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                }
                t
            })
            .collect()
    }
}

/// One executor's slot of a [`CallMetrics`]. Cheap to clone (an `Rc`):
/// the executor's connections share it without touching the `Arc`.
#[derive(Clone)]
pub struct ExecutorCalls(Rc<Slot>);

struct Slot {
    metrics: Arc<CallMetrics>,
    index: usize,
}

impl ExecutorCalls {
    /// The whole server's counters this slot belongs to.
    pub fn metrics(&self) -> &Arc<CallMetrics> {
        &self.0.metrics
    }

    /// Counts a client connection this executor began to serve.
    pub fn connection_opened(&self) {
        bump(&self.0.metrics.connections[self.0.index].0);
    }

    /// Counts a call to `path` as started and returns its tally; `None`
    /// for a path that is not counted.
    pub fn start(&self, path: &str) -> Option<CallTally> {
        let method = *self.0.metrics.by_path.get(path)?;
        let tally = CallTally {
            calls: self.clone(),
            method,
            started: std::time::Instant::now(),
        };
        bump(&tally.row().started);
        Some(tally)
    }
}

/// The counters of one call in progress. Cheap to clone (an `Rc`).
#[derive(Clone)]
pub struct CallTally {
    calls: ExecutorCalls,
    method: usize,
    started: std::time::Instant,
}

impl CallTally {
    fn row(&self) -> &Row {
        &self.calls.0.metrics.slots[self.calls.0.index][self.method]
    }

    /// One request message decoded from the client.
    pub fn received(&self) {
        bump(&self.row().received);
    }

    /// Bytes of request messages read from the client.
    pub fn received_bytes(&self, n: usize) {
        self.row()
            .received_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes of response messages handed to the transport.
    pub fn sent_bytes(&self, n: usize) {
        self.row().sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One response message handed to the transport.
    pub fn sent(&self) {
        bump(&self.row().sent);
    }

    /// The call ended with `code`.
    pub fn finished(&self, code: Code) {
        let row = self.row();
        bump(&row.handled[code as usize]);
        let took = self.started.elapsed();
        let seconds = took.as_secs_f64();
        bump(&row.handling[HANDLING_BUCKETS.partition_point(|&b| b < seconds)]);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        row.handling_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Only the owning executor writes a row, so a load and a store would do;
/// `fetch_add` keeps the count right even where a slot is shared.
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_split_into_labels() {
        let m = CallMetrics::new(1);
        assert_eq!(m.by_path.len(), METHODS.len());
        let watch = METHODS[m.by_path["/etcdserverpb.Watch/Watch"]];
        assert_eq!(watch.service(), "etcdserverpb.Watch");
        assert_eq!(watch.name(), "Watch");
        assert_eq!(watch.kind.label(), "bidi_stream");
        let check = METHODS[m.by_path["/grpc.health.v1.Health/Check"]];
        assert_eq!(check.service(), "grpc.health.v1.Health");
    }

    #[test]
    fn executors_count_apart_and_sum_at_scrape() {
        let m = CallMetrics::new(2);
        let (a, b) = (m.executor(0), m.executor(1));
        for calls in [&a, &b, &b] {
            let t = calls.start("/etcdserverpb.KV/Range").unwrap();
            t.received();
            t.sent();
            t.finished(Code::Ok);
        }
        let t = a.start("/etcdserverpb.Watch/Watch").unwrap();
        t.received();
        t.received();
        t.finished(Code::Cancelled);
        assert!(a.start("/etcdserverpb.KV/Nope").is_none());
        let totals = m.totals();
        let range = totals.iter().find(|t| t.method.name() == "Range").unwrap();
        assert_eq!((range.started, range.received, range.sent), (3, 3, 3));
        assert_eq!(range.handled[Code::Ok as usize], 3);
        let watch = totals.iter().find(|t| t.method.name() == "Watch").unwrap();
        assert_eq!((watch.started, watch.received, watch.sent), (1, 2, 0));
        assert_eq!(watch.handled[Code::Cancelled as usize], 1);
        // Each ended call is timed once, in the first bucket here.
        assert_eq!(range.handling[0], 3);
        assert_eq!(range.handling.iter().sum::<u64>(), 3);
        assert!(range.handling_seconds < 0.005 * 3.0);
        // Slots really are separate.
        assert_eq!(m.slots[0][0].started.load(Ordering::Relaxed), 1);
        assert_eq!(m.slots[1][0].started.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn out_of_range_executor_shares_the_last_slot() {
        let m = CallMetrics::new(1);
        let t = m.executor(5).start("/etcdserverpb.KV/Put").unwrap();
        t.finished(Code::Ok);
        assert_eq!(m.totals()[1].handled[0], 1);
    }
}
