//! etcd's permission checks on the Lease calls that touch keys, wrapped
//! around the lessor's handlers on the sequencer's executor: LeaseRevoke
//! needs write permission on every key attached to the lease (etcd's
//! `checkLeasePuts`), LeaseTimeToLive with `keys` read permission on each
//! (etcd 3.5.8's fix; 3.4.23 lists them to anyone).

use std::rc::Rc;
use std::sync::Arc;

use prost::Message;

use crate::auth::{Access, Caller, Tokens};
use crate::grpc::{Code, HandlerFuture, Metadata, RequestStream, ResponseSink, Router, Status};
use crate::lease::{REVOKE_METHOD, TIME_TO_LIVE_METHOD};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::Sequencer;

/// Wraps the Lease handlers of `r` (already registered) with the checks.
pub fn guard_leases(r: &mut Router, seq: Rc<Sequencer>, tokens: Arc<Tokens>) {
    let check = Rc::new(move |meta: &Metadata, id: i64, access: Access| {
        let latest = seq.views().latest()?;
        let caller = Caller::of(meta, &latest.auth, &tokens)?;
        if !latest.auth.enabled {
            return Ok(());
        }
        let keys = seq.store().lease(id)?.map(|l| l.keys).unwrap_or_default();
        for key in keys {
            caller.check(&key, &[], access)?;
        }
        Ok::<(), Status>(())
    });
    let c = check.clone();
    wrap(
        r,
        REVOKE_METHOD,
        move |req: &pb::LeaseRevokeRequest, meta| c(meta, req.id, Access::Write),
    );
    wrap(
        r,
        TIME_TO_LIVE_METHOD,
        move |req: &pb::LeaseTimeToLiveRequest, meta| {
            if req.keys {
                check(meta, req.id, Access::Read)
            } else {
                Ok(())
            }
        },
    );
}

/// Replaces the unary handler of `path` by one that decodes the request,
/// runs `check`, then hands the same bytes to the original handler.
fn wrap<Req, F>(r: &mut Router, path: &str, check: F)
where
    Req: Message + Default + 'static,
    F: Fn(&Req, &Metadata) -> Result<(), Status> + 'static,
{
    let Some(inner) = r.method(path) else {
        return;
    };
    let check = Rc::new(check);
    r.add(
        path,
        Rc::new(
            move |meta: Metadata, mut requests: RequestStream, responses: ResponseSink| {
                let (inner, check) = (inner.clone(), check.clone());
                Box::pin(async move {
                    let bytes = requests.next_bytes().await?.ok_or_else(|| {
                        Status::new(Code::Internal, "grpc: unary call ended without a request")
                    })?;
                    let req = Req::decode(bytes.clone()).map_err(|e| {
                        Status::new(
                            Code::Internal,
                            format!("grpc: error unmarshalling request: {e}"),
                        )
                    })?;
                    check(&req, &meta)?;
                    let (mut tx, rx) = futures_channel::mpsc::channel(1);
                    let _ = tx.try_send(bytes);
                    drop(tx);
                    inner
                        .call(meta, RequestStream::from_channel(rx), responses)
                        .await
                }) as HandlerFuture
            },
        ),
    );
}
