//! `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive (bidi),
//! LeaseTimeToLive and LeaseLeases on a [`LeaseApi`].

use std::rc::Rc;

use crate::grpc::{unary, HandlerFuture, Metadata, RequestStream, ResponseSink, Router};
use crate::proto::etcdserverpb as pb;

use super::call::{call_for, LeaseApi, LeaseCall, LeaseReply};

pub const GRANT_METHOD: &str = "/etcdserverpb.Lease/LeaseGrant";
pub const REVOKE_METHOD: &str = "/etcdserverpb.Lease/LeaseRevoke";
pub const KEEP_ALIVE_METHOD: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
pub const TIME_TO_LIVE_METHOD: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
pub const LEASES_METHOD: &str = "/etcdserverpb.Lease/LeaseLeases";

/// Registers the five Lease methods, served by `api` (the
/// [`super::Lessor`]), on the sequencer's executor's router.
pub fn register(router: &mut Router, api: Rc<dyn LeaseApi>) {
    let a = api.clone();
    router.add(
        GRANT_METHOD,
        unary(move |req: pb::LeaseGrantRequest, _: Metadata| {
            let a = a.clone();
            async move {
                call_for(&a, LeaseCall::Grant(req), |r| match r {
                    LeaseReply::Grant(r) => Some(r),
                    _ => None,
                })
                .await
            }
        }),
    );
    let a = api.clone();
    router.add(
        REVOKE_METHOD,
        unary(move |req: pb::LeaseRevokeRequest, _: Metadata| {
            let a = a.clone();
            async move {
                call_for(&a, LeaseCall::Revoke(req), |r| match r {
                    LeaseReply::Revoke(r) => Some(r),
                    _ => None,
                })
                .await
            }
        }),
    );
    let a = api.clone();
    router.add(
        TIME_TO_LIVE_METHOD,
        unary(move |req: pb::LeaseTimeToLiveRequest, _: Metadata| {
            let a = a.clone();
            async move {
                call_for(&a, LeaseCall::TimeToLive(req), |r| match r {
                    LeaseReply::TimeToLive(r) => Some(r),
                    _ => None,
                })
                .await
            }
        }),
    );
    let a = api.clone();
    router.add(
        LEASES_METHOD,
        unary(move |_: pb::LeaseLeasesRequest, _: Metadata| {
            let a = a.clone();
            async move {
                call_for(&a, LeaseCall::Leases, |r| match r {
                    LeaseReply::Leases(r) => Some(r),
                    _ => None,
                })
                .await
            }
        }),
    );
    router.add(
        KEEP_ALIVE_METHOD,
        Rc::new(
            move |_: Metadata, mut requests: RequestStream, mut responses: ResponseSink| {
                let a = api.clone();
                // One answer per keepalive, in order, until the client
                // closes its side.
                Box::pin(async move {
                    while let Some(req) = requests.next::<pb::LeaseKeepAliveRequest>().await? {
                        let resp = call_for(&a, LeaseCall::KeepAlive(req), |r| match r {
                            LeaseReply::KeepAlive(r) => Some(r),
                            _ => None,
                        })
                        .await?;
                        responses.send(&resp).await?;
                    }
                    Ok(())
                }) as HandlerFuture
            },
        ),
    );
}
