//! Reading a scrape's [`ServerState`] from the sequencer, and running the
//! metrics listeners beside it on its executor.

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::{
    client_http_handler, serve, DiskMetrics, Endpoint, ServerCounters, ServerState,
    CLIENT_HTTP_PATH,
};
use crate::grpc::{Router, Shutdown};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{Command, Reply, Sequencer};
use crate::services::ETCD_COMPAT_VERSION;

/// The metrics listeners of a running server, and the answers they (and
/// the client port) give.
pub struct MetricsServer {
    shutdown: Rc<Shutdown>,
    task: Option<glommio::task::JoinHandle<()>>,
    endpoint: Rc<Endpoint>,
    /// Where the disk work records its latencies.
    pub disk: Rc<DiskMetrics>,
}

impl MetricsServer {
    /// Serves `listeners` (from [`super::bind_listeners`]) on the current
    /// executor, which must be the sequencer's. No listeners: nothing runs
    /// (the client port can still be answered, see
    /// [`MetricsServer::attach`]).
    pub fn start(
        listeners: Vec<super::MetricsListener>,
        seq: Rc<Sequencer>,
        quota_backend_bytes: u64,
        extensive: bool,
    ) -> MetricsServer {
        let disk = seq.disk_metrics();
        let shutdown = Rc::new(Shutdown::new());
        let endpoint = Rc::new(Endpoint {
            state: Box::new(move || -> Pin<Box<dyn Future<Output = ServerState>>> {
                Box::pin(read_state(seq.clone(), quota_backend_bytes))
            }),
            disk: disk.clone(),
            calls: OnceCell::new(),
            extensive,
        });
        let task = (!listeners.is_empty()).then(|| {
            glommio::spawn_local(serve(listeners, endpoint.clone(), shutdown.clone())).detach()
        });
        MetricsServer {
            shutdown,
            task,
            endpoint,
            disk,
        }
    }

    /// Lets `router` (the sequencer's executor's) answer HTTP/1 requests
    /// on the client port, for itself and forwarded from other executors,
    /// and reports the gRPC calls the server counts: call after
    /// [`Router::count_calls`], whose counters hold every executor's slot.
    pub fn attach(&self, router: &mut Router) {
        if let Some(calls) = router.calls() {
            let _ = self.endpoint.calls.set(calls.metrics().clone());
        }
        router.add(CLIENT_HTTP_PATH, client_http_handler(self.endpoint.clone()));
    }

    /// Stops accepting and waits for the accept loops to end.
    pub async fn stop(mut self) {
        self.shutdown.fire();
        if let Some(t) = self.task.take() {
            t.await;
        }
    }
}

/// The sequencer's status, alarms and revisions, as Maintenance.Status and
/// Alarm report them to clients.
async fn read_state(seq: Rc<Sequencer>, quota_backend_bytes: u64) -> ServerState {
    let mut state = ServerState {
        version: ETCD_COMPAT_VERSION.to_owned(),
        quota_backend_bytes,
        ..ServerState::default()
    };
    let raft = seq.raft_metrics();
    state.has_leader = raft.has_leader;
    state.is_leader = raft.is_leader;
    state.is_learner = raft.is_learner;
    state.leader_changes = raft.leader_changes;
    state.proposals_failed = raft.proposals_failed;
    state.proposals_pending = raft.proposals_pending;
    state.peers = seq.peer_stats();
    let c = seq.counters();
    (state.puts, state.deletes) = (c.puts.get(), c.deletes.get());
    state.counters = ServerCounters {
        slow_applies: c.slow_applies.get(),
        leases_granted: c.leases_granted.get(),
        leases_revoked: c.leases_revoked.get(),
        leases_renewed: c.leases_renewed.get(),
        leases_expired: c.leases_expired.get(),
        lease_ttls: c.lease_ttls.clone(),
        read_indexes_failed: c.read_indexes_failed.get(),
        slow_read_indexes: c.slow_read_indexes.get(),
        installing_snapshot: c.installing_snapshot.get(),
        learners_promoted: c.learners_promoted.get(),
        wal_bytes: seq.wal_stats().map_or(0, |s| s.bytes),
    };
    if let Ok(Reply::Status(s)) = seq.execute(Command::Status).await {
        state.member_id = s.header.member_id;
        state.db_size = s.db_size;
        state.db_size_in_use = s.db_size_in_use;
        state.committed_index = s.raft_index;
        state.applied_index = s.raft_applied_index;
    }
    state.alarms = match seq
        .execute(Command::Alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        }))
        .await
    {
        Ok(Reply::Alarms(list, _)) => list
            .iter()
            .map(|a| {
                pb::AlarmType::try_from(a.alarm)
                    .map_or("UNKNOWN", |t| t.as_str_name())
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    };
    let store = seq.store();
    state.current_revision = store.current_revision();
    // etcd reports -1 until the first compaction; we keep 0 for "none".
    state.compact_revision = match store.compact_revision() {
        0 => -1,
        c => c,
    };
    state
}
