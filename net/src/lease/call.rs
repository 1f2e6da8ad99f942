//! One lease operation as a value: the Lease handlers talk to a
//! [`LeaseApi`] (the [`Lessor`] on the sequencer's executor, or a fake in
//! tests), and both enums are `Send` should a call ever need to cross
//! executors by itself.

use std::rc::Rc;

use crate::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;

use super::lessor::{Lessor, LogFuture};

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseCall {
    Grant(pb::LeaseGrantRequest),
    Revoke(pb::LeaseRevokeRequest),
    KeepAlive(pb::LeaseKeepAliveRequest),
    TimeToLive(pb::LeaseTimeToLiveRequest),
    Leases,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseReply {
    Grant(pb::LeaseGrantResponse),
    Revoke(pb::LeaseRevokeResponse),
    KeepAlive(pb::LeaseKeepAliveResponse),
    TimeToLive(pb::LeaseTimeToLiveResponse),
    Leases(pb::LeaseLeasesResponse),
}

/// Where the Lease handlers send their calls: the [`Lessor`] on the
/// sequencer's executor (calls accepted elsewhere are bridged there whole
/// by the gRPC layer).
pub trait LeaseApi {
    fn call(&self, call: LeaseCall) -> LogFuture<'_, LeaseReply>;
}

impl Lessor {
    /// Executes one call on this lessor.
    pub async fn execute(&self, call: LeaseCall) -> Result<LeaseReply, Status> {
        Ok(match call {
            LeaseCall::Grant(r) => LeaseReply::Grant(self.grant(r).await?),
            LeaseCall::Revoke(r) => LeaseReply::Revoke(self.revoke(r).await?),
            LeaseCall::KeepAlive(r) => LeaseReply::KeepAlive(self.keep_alive(&r).await?),
            LeaseCall::TimeToLive(r) => LeaseReply::TimeToLive(self.time_to_live(&r).await?),
            LeaseCall::Leases => LeaseReply::Leases(self.leases()),
        })
    }
}

impl LeaseApi for Lessor {
    fn call(&self, call: LeaseCall) -> LogFuture<'_, LeaseReply> {
        Box::pin(self.execute(call))
    }
}

/// `api.call(call)` expecting the reply kind `pick` accepts.
pub(super) async fn call_for<T>(
    api: &Rc<dyn LeaseApi>,
    call: LeaseCall,
    pick: impl FnOnce(LeaseReply) -> Option<T>,
) -> Result<T, Status> {
    let reply = api.call(call).await?;
    pick(reply).ok_or_else(|| {
        Status::new(
            Code::Internal,
            "basalt: lease call answered with another reply",
        )
    })
}
