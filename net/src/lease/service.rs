//! `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive (bidi),
//! LeaseTimeToLive and LeaseLeases on a [`Lessor`].

use std::rc::Rc;

use crate::grpc::{unary, HandlerFuture, Metadata, RequestStream, ResponseSink, Router};
use crate::proto::etcdserverpb as pb;

use super::lessor::Lessor;

pub const GRANT_METHOD: &str = "/etcdserverpb.Lease/LeaseGrant";
pub const REVOKE_METHOD: &str = "/etcdserverpb.Lease/LeaseRevoke";
pub const KEEP_ALIVE_METHOD: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
pub const TIME_TO_LIVE_METHOD: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
pub const LEASES_METHOD: &str = "/etcdserverpb.Lease/LeaseLeases";

/// Registers the Lease methods. The handlers must run on the lessor's
/// executor (the sequencer's).
pub fn register(router: &mut Router, lessor: Rc<Lessor>) {
    let l = lessor.clone();
    router.add(
        GRANT_METHOD,
        unary(move |req: pb::LeaseGrantRequest, _: Metadata| {
            let l = l.clone();
            async move { l.grant(req).await }
        }),
    );
    let l = lessor.clone();
    router.add(
        REVOKE_METHOD,
        unary(move |req: pb::LeaseRevokeRequest, _: Metadata| {
            let l = l.clone();
            async move { l.revoke(req).await }
        }),
    );
    let l = lessor.clone();
    router.add(
        TIME_TO_LIVE_METHOD,
        unary(move |req: pb::LeaseTimeToLiveRequest, _: Metadata| {
            let l = l.clone();
            async move { l.time_to_live(&req) }
        }),
    );
    let l = lessor.clone();
    router.add(
        LEASES_METHOD,
        unary(move |_: pb::LeaseLeasesRequest, _: Metadata| {
            let l = l.clone();
            async move { Ok(l.leases()) }
        }),
    );
    router.add(
        KEEP_ALIVE_METHOD,
        Rc::new(
            move |_: Metadata, mut requests: RequestStream, mut responses: ResponseSink| {
                let l = lessor.clone();
                // One answer per keepalive, in order, until the client
                // closes its side.
                Box::pin(async move {
                    while let Some(req) = requests.next::<pb::LeaseKeepAliveRequest>().await? {
                        let resp = l.keep_alive(&req);
                        responses.send(&resp).await?;
                    }
                    Ok(())
                }) as HandlerFuture
            },
        ),
    );
}
