//! etcd's v3 services on top of the sequencer: KV, Maintenance, Cluster,
//! Lock, Election and the parts of Auth a server without auth answers. Each executor builds its
//! own [`Router`] from a [`ServiceContext`].
//!
//! Watch and Lease live in `crate::watch` and `crate::lease`; the server
//! registers them on each executor's router next to these.

mod auth;
mod cluster;
mod election;
mod kv;
mod lease_guard;
mod lock;
mod maintenance;

use crate::auth::Caller;
pub use lease_guard::guard_leases;

use std::rc::Rc;
use std::sync::Arc;

use crate::grpc::{Router, Status};
use crate::member::ClusterInfo;
use crate::sequencer::{Command, LogEntry, Published, PublishedViews, Reply, SequencerClient};

/// The etcd version basalt reports in Maintenance.Status: the etcd API
/// release basalt's behaviour follows. Clients gate features on it
/// (kube-apiserver wants at least 3.5.8), so it names a real 3.5 release.
pub const ETCD_COMPAT_VERSION: &str = "3.5.17";

/// Request limits with etcd's defaults.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// `--max-txn-ops` (etcd default 128).
    pub max_txn_ops: usize,
    /// `--max-request-bytes` (etcd default 1.5 MiB).
    pub max_request_bytes: usize,
    /// `--quota-backend-bytes` (etcd default 2 GiB), reported by Status.
    pub quota_backend_bytes: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            quota_backend_bytes: 2 << 30,
        }
    }
}

/// What every service handler on one executor shares.
pub struct ServiceContext {
    pub sequencer: SequencerClient,
    /// The sequencer's latest read view: Range and read-only Txn read it
    /// on this executor.
    pub views: PublishedViews,
    pub cluster: ClusterInfo,
    pub limits: KvLimits,
    /// This member's auth tokens, shared by every executor.
    pub tokens: Arc<crate::auth::Tokens>,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
}

impl ServiceContext {
    async fn propose(&self, entry: LogEntry) -> Result<Reply, Status> {
        self.sequencer.call(Command::Propose(entry)).await
    }

    /// The view a read is answered from: the latest for a serializable
    /// read, or where this member alone decides what is committed (the
    /// only voter); else the latest once a ReadIndex round says this
    /// member has applied everything committed when the read began.
    async fn read_view(&self, serializable: bool) -> Result<Arc<Published>, Status> {
        let latest = self.views.latest()?;
        if !serializable && latest.is_learner {
            return Err(crate::error::Error::NotSupportedForLearner.into());
        }
        if serializable || latest.reads_are_local {
            return Ok(latest);
        }
        self.sequencer.call(Command::ReadIndex).await?;
        self.views.latest()
    }

    /// Who makes a call with `meta`, judged by the auth state of
    /// `published`.
    fn caller(
        &self,
        meta: &crate::grpc::Metadata,
        published: &Published,
    ) -> Result<Caller, Status> {
        Ok(Caller::of(meta, &published.auth, &self.tokens)?)
    }

    /// The caller against the latest applied auth state.
    fn latest_caller(&self, meta: &crate::grpc::Metadata) -> Result<Caller, Status> {
        let latest = self.views.latest()?;
        self.caller(meta, &latest)
    }
}

/// Every method this crate serves, for one executor.
pub fn router(ctx: Rc<ServiceContext>) -> Router {
    let mut r = Router::new();
    kv::register(&mut r, &ctx);
    maintenance::register(&mut r, &ctx);
    cluster::register(&mut r, &ctx);
    auth::register(&mut r, &ctx);
    lock::register(&mut r, &ctx);
    election::register(&mut r, &ctx);
    r
}

/// A reply of an unexpected kind: a bug between a service and the
/// sequencer, answered as Internal rather than a panic.
fn unexpected(what: &str) -> Status {
    Status::new(
        crate::grpc::Code::Internal,
        format!("basalt: unexpected sequencer reply to {what}"),
    )
}

/// etcd's rule for learners: they serve Status and serializable Range (the
/// latter checked in [`ServiceContext::read_view`]) and refuse every other
/// call with `etcdserver: rpc not supported for learner`.
pub fn learner_gate(views: crate::sequencer::PublishedViews) -> crate::grpc::Gate {
    std::rc::Rc::new(move |path: &str| {
        let served = matches!(
            path,
            "/etcdserverpb.Maintenance/Status" | "/etcdserverpb.KV/Range"
        ) || path.starts_with("/grpc.health.v1.Health/");
        match views.latest() {
            Ok(p) if p.is_learner && !served => {
                Err(crate::error::Error::NotSupportedForLearner.into())
            }
            _ => Ok(()),
        }
    })
}

/// etcd's check of a watch at creation: read permission on its range for
/// the stream's caller; any failure is `permission denied`, as the text of
/// its gRPC error (etcd's `isWatchPermitted`).
pub fn watch_authorizer(
    views: PublishedViews,
    tokens: Arc<crate::auth::Tokens>,
) -> crate::watch::WatchAuthorizer {
    crate::watch::WatchAuthorizer(Rc::new(move |meta, req| {
        let denied = || {
            let e = crate::error::Error::PermissionDenied;
            format!("rpc error: code = {} desc = {e}", e.code().grpc_go_name())
        };
        let latest = views.latest().map_err(|_| denied())?;
        let caller = Caller::of(meta, &latest.auth, &tokens).map_err(|_| denied())?;
        caller
            .check(&req.key, &req.range_end, crate::auth::Access::Read)
            .map_err(|_| denied())
    }))
}
