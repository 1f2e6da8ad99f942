//! Leases on the sequencer: grants and revokes are proposed as log
//! entries, lease reads come from its store.

use std::rc::Rc;

use basalt_engine::mvcc::{Lease, OpResponse};

use crate::grpc::{Code, Router, Status};
use crate::peer::{PeerAnswer, PeerQuery};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{Command, LogEntry, LogRequest, Reply, Sequencer};

use super::call::LeaseApi;
use super::lessor::{LeaseConfig, LeaseLog, Lessor, LogFuture};
use super::service::register;

fn applied_header(reply: Result<Reply, Status>) -> Result<pb::ResponseHeader, Status> {
    match reply? {
        Reply::Applied(OpResponse::LeaseGrant | OpResponse::LeaseRevoke, header) => Ok(header),
        _ => Err(Status::new(
            Code::Internal,
            "sequencer answered a lease proposal with another reply",
        )),
    }
}

impl LeaseLog for Sequencer {
    fn propose_grant(&self, id: i64, ttl: i64) -> LogFuture<'_, pb::ResponseHeader> {
        let entry = LogEntry::new(LogRequest::LeaseGrant(pb::LeaseGrantRequest { ttl, id }));
        Box::pin(async move { applied_header(self.execute(Command::Propose(entry)).await) })
    }

    fn propose_revoke(&self, id: i64) -> LogFuture<'_, pb::ResponseHeader> {
        let entry = LogEntry::new(LogRequest::LeaseRevoke(pb::LeaseRevokeRequest { id }));
        Box::pin(async move { applied_header(self.execute(Command::Propose(entry)).await) })
    }

    fn lease(&self, id: i64) -> Result<Option<Lease>, Status> {
        Ok(self.store().lease(id)?)
    }

    fn lease_ttls(&self) -> Vec<(i64, i64)> {
        self.store().lease_ttls().collect()
    }

    fn header(&self) -> pb::ResponseHeader {
        Sequencer::header(self)
    }

    fn is_leader(&self) -> bool {
        self.driver().status().role == basalt_raft::StateRole::Leader
    }

    fn propose_keepalive(&self, id: i64) -> LogFuture<'_, i64> {
        let entry = LogEntry::new(LogRequest::LeaseKeepAlive(pb::LeaseKeepAliveRequest { id }));
        Box::pin(async move {
            match self.execute(Command::Propose(entry)).await? {
                Reply::Renewed(ttl, _) => Ok(ttl),
                _ => Err(Status::new(
                    Code::Internal,
                    "sequencer answered a keepalive with another reply",
                )),
            }
        })
    }

    fn note_renewed(&self) {
        let c = &self.counters().leases_renewed;
        c.set(c.get() + 1);
    }

    fn note_expired(&self) {
        let c = &self.counters().leases_expired;
        c.set(c.get() + 1);
    }

    fn ask_leader(&self, query: PeerQuery) -> LogFuture<'_, Option<PeerAnswer>> {
        Box::pin(async move { Ok(self.ask_leader(query).await?) })
    }

    fn propose_checkpoint(&self, checkpoints: Vec<(i64, i64)>) -> LogFuture<'_, ()> {
        let entry = LogEntry::new(LogRequest::LeaseCheckpoint(pb::LeaseCheckpointRequest {
            checkpoints: checkpoints
                .into_iter()
                .map(|(id, remaining_ttl)| pb::LeaseCheckpoint { id, remaining_ttl })
                .collect(),
        }));
        Box::pin(async move {
            match self.execute(Command::Propose(entry)).await? {
                Reply::Done(_) => Ok(()),
                _ => Err(Status::new(
                    Code::Internal,
                    "sequencer answered a lease checkpoint with another reply",
                )),
            }
        })
    }
}

/// Serves Lease on the sequencer's executor: creates the lessor (every
/// stored lease starts its full TTL now), registers the five Lease methods
/// on `router` and spawns the expiry loop. Call it once, on that executor;
/// the lessor lives as long as `router` does.
pub fn attach(router: &mut Router, seq: &Rc<Sequencer>, cfg: LeaseConfig) -> Rc<Lessor> {
    let log: Rc<dyn LeaseLog> = seq.clone();
    let lessor = Rc::new(Lessor::new(log, cfg));
    let weak = Rc::downgrade(&lessor);
    seq.subscribe_leases(Box::new(move |event| {
        if let Some(l) = weak.upgrade() {
            l.applied(event);
        }
    }));
    let weak = Rc::downgrade(&lessor);
    seq.answer_queries_with(Box::new(move |query| match weak.upgrade() {
        Some(l) => l.answer(query),
        None => PeerAnswer::NotLeader,
    }));
    let api: Rc<dyn LeaseApi> = lessor.clone();
    register(router, api);
    glommio::spawn_local(Lessor::run_expiry(Rc::downgrade(&lessor))).detach();
    lessor
}
