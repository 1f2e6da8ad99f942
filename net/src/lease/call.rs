//! One lease operation as a value, so an executor other than the
//! sequencer's can forward it there (both enums are `Send`) and the Lease
//! handlers serve local and forwarded calls the same way.

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

/// Where the Lease handlers of one executor send their calls: the
/// [`Lessor`] itself on the sequencer's executor, a forwarder elsewhere.
pub trait LeaseApi {
    fn call(&self, call: LeaseCall) -> LogFuture<'_, LeaseReply>;
}

/// A [`LeaseApi`] that hands every call to `forward` (e.g. over the
/// server's channel mesh to the executor that runs [`Lessor::execute`]).
pub struct ForwardedLeases {
    pub forward: Rc<dyn Fn(LeaseCall) -> LogFuture<'static, LeaseReply>>,
}

impl LeaseApi for ForwardedLeases {
    fn call(&self, call: LeaseCall) -> LogFuture<'_, LeaseReply> {
        (self.forward)(call)
    }
}

impl Lessor {
    /// Executes one call on this lessor.
    pub async fn execute(&self, call: LeaseCall) -> Result<LeaseReply, Status> {
        Ok(match call {
            LeaseCall::Grant(r) => LeaseReply::Grant(self.grant(r).await?),
            LeaseCall::Revoke(r) => LeaseReply::Revoke(self.revoke(r).await?),
            LeaseCall::KeepAlive(r) => LeaseReply::KeepAlive(self.keep_alive(&r)),
            LeaseCall::TimeToLive(r) => LeaseReply::TimeToLive(self.time_to_live(&r)?),
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
