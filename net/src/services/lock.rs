//! etcd's Lock service (`v3lockpb.Lock`): a distributed lock made of keys,
//! as etcd's server makes it from its client library's mutex.
//!
//! Lock(name, lease) puts `name/<lease in hex>` with the lease (once: a
//! second Lock with the same lease is the same acquisition) and holds the
//! lock once no key under `name/` was created before it: it waits for every
//! older one to be deleted (unlocked, or gone with its lease). Unlock(key)
//! deletes the key. A lease of 0 gets a new 60 s lease, as etcd's session
//! does; a lease that does not exist fails the Lock with etcd's error. A
//! Lock whose caller goes away before it holds the lock deletes its key.
//!
//! Waiting re-reads the older keys (a linearizable range) with a growing
//! pause, from 10 ms up to 100 ms, instead of etcd's watch.

use std::rc::Rc;
use std::time::Duration;

use basalt_engine::mvcc::OpResponse;
use prost::Message;

use crate::auth::Access;
use crate::grpc::{unary, Metadata, Router, Status};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{LogEntry, LogRequest, Reply};
use crate::wire;

use super::{unexpected, ServiceContext};

pub const LOCK_METHOD: &str = "/v3lockpb.Lock/Lock";
pub const UNLOCK_METHOD: &str = "/v3lockpb.Lock/Unlock";

/// The TTL of the lease a Lock without one gets (etcd's session default).
const SESSION_TTL: i64 = 60;
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone, PartialEq, Message)]
pub struct LockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct LockResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<pb::ResponseHeader>,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct UnlockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct UnlockResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<pb::ResponseHeader>,
}

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        LOCK_METHOD,
        unary(move |req: LockRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                check_name(&c, &meta, &req.name).map_err(as_client_error)?;
                lock(c, req).await.map_err(as_client_error)
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        UNLOCK_METHOD,
        unary(move |req: UnlockRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                check_key(&c, &meta, &req.key).map_err(as_client_error)?;
                unlock(c, req).await.map_err(as_client_error)
            }
        }),
    );
}

/// etcd's lock and election servers are clients of their own server with
/// the caller's token: they need read and write permission on `name/` and
/// every key under it.
pub(super) fn check_name(ctx: &ServiceContext, meta: &Metadata, name: &[u8]) -> Result<(), Status> {
    let caller = ctx.latest_caller(meta)?;
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let end = prefix_end(&prefix);
    caller.check(&prefix, &end, Access::Read)?;
    caller.check(&prefix, &end, Access::Write)?;
    Ok(())
}

/// Write permission on one key a lock or leader holds (Unlock, Proclaim,
/// Resign).
pub(super) fn check_key(ctx: &ServiceContext, meta: &Metadata, key: &[u8]) -> Result<(), Status> {
    Ok(ctx.latest_caller(meta)?.check(key, &[], Access::Write)?)
}

/// etcd's lock server calls its own client library, whose errors reach the
/// caller as gRPC code Unknown with the server's message.
pub(super) fn as_client_error(e: Status) -> Status {
    Status::new(crate::grpc::Code::Unknown, e.message)
}

/// The lease a Lock or Campaign holds its key with (a new one of
/// [`SESSION_TTL`] for 0), the prefix `name/`, and its key `name/<lease>`.
pub(super) async fn session_key(
    ctx: &ServiceContext,
    name: &[u8],
    lease: i64,
) -> Result<(i64, Vec<u8>, Vec<u8>), Status> {
    let lease = if lease == 0 {
        new_session_lease(ctx).await?
    } else {
        lease
    };
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Ok((lease, prefix, key))
}

/// Waits until no key under `prefix` was created before `rev`; the header
/// of the read that found none.
pub(super) async fn wait_for_older(
    ctx: &ServiceContext,
    prefix: &[u8],
    rev: i64,
) -> Result<Option<pb::ResponseHeader>, Status> {
    let mut pause = FIRST_PAUSE;
    loop {
        let older = by_create(prefix, pb::range_request::SortOrder::Descend, rev - 1);
        let r = range(ctx, older).await?;
        if r.kvs.is_empty() {
            return Ok(r.header);
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Compares `key`'s create revision with `rev` (0: the key does not exist).
pub(super) fn created_at(key: &[u8], rev: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

/// The end of the range of keys starting with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn range_op(req: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(req)),
    }
}

/// The key under `prefix` created first (or last), at most `max_create`.
pub(super) fn by_create(
    prefix: &[u8],
    order: pb::range_request::SortOrder,
    max_create: i64,
) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

pub(super) async fn txn(
    ctx: &ServiceContext,
    req: pb::TxnRequest,
) -> Result<pb::TxnResponse, Status> {
    match ctx
        .propose(LogEntry::new(LogRequest::Txn(req)).on_behalf())
        .await?
    {
        Reply::Applied(OpResponse::Txn(r), header) => Ok(wire::txn_response(r, &header)),
        _ => Err(unexpected("Txn")),
    }
}

/// A linearizable range.
pub(super) async fn range(
    ctx: &ServiceContext,
    req: pb::RangeRequest,
) -> Result<pb::RangeResponse, Status> {
    let published = ctx.read_view(false).await?;
    let resp = published.view.range(&wire::range_request(&req)?)?;
    Ok(wire::range_response(resp, &published.header()))
}

/// A new lease of [`SESSION_TTL`] for a Lock that names none.
pub(super) async fn new_session_lease(ctx: &ServiceContext) -> Result<i64, Status> {
    use std::hash::{BuildHasher, Hasher};
    for attempt in 0u64..16 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let id = (h.finish() & i64::MAX as u64) as i64;
        if id == 0 {
            continue;
        }
        let grant = pb::LeaseGrantRequest {
            ttl: SESSION_TTL,
            id,
        };
        match ctx
            .propose(LogEntry::new(LogRequest::LeaseGrant(grant)))
            .await
        {
            Ok(_) => return Ok(id),
            Err(e) if e == Status::from(crate::error::Error::LeaseExists) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Status::new(crate::grpc::Code::Internal, "no free lease id"))
}

/// Deletes the key of a Lock that did not get to hold the lock.
struct Abandon {
    ctx: Rc<ServiceContext>,
    key: Option<Vec<u8>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let ctx = self.ctx.clone();
            glommio::spawn_local(async move {
                let _ = ctx
                    .propose(
                        LogEntry::new(LogRequest::DeleteRange(pb::DeleteRangeRequest {
                            key,
                            ..Default::default()
                        }))
                        .on_behalf(),
                    )
                    .await;
            })
            .detach();
        }
    }
}

async fn lock(ctx: Rc<ServiceContext>, req: LockRequest) -> Result<LockResponse, Status> {
    let (lease, prefix, key) = session_key(&ctx, &req.name, req.lease).await?;
    let first = || by_create(&prefix, pb::range_request::SortOrder::Ascend, 0);
    let acquire = pb::TxnRequest {
        compare: vec![created_at(&key, 0)],
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.clone(),
                    lease,
                    ..Default::default()
                })),
            },
            range_op(first()),
        ],
        failure: vec![
            range_op(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
            range_op(first()),
        ],
    };
    let resp = txn(&ctx, acquire).await?;
    let mut guard = Abandon {
        ctx: ctx.clone(),
        key: resp.succeeded.then(|| key.clone()),
    };
    let ranges: Vec<&pb::RangeResponse> = resp
        .responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(pb::response_op::Response::ResponseRange(r)) => Some(r),
            _ => None,
        })
        .collect();
    let my_rev = if resp.succeeded {
        resp.header.as_ref().map_or(0, |h| h.revision)
    } else {
        ranges
            .first()
            .and_then(|r| r.kvs.first())
            .map_or(0, |kv| kv.create_revision)
    };
    let owner_rev = ranges
        .last()
        .and_then(|r| r.kvs.first())
        .map_or(0, |kv| kv.create_revision);
    let mut header = resp.header;
    if owner_rev != my_rev {
        header = wait_for_older(&ctx, &prefix, my_rev).await?;
    }
    guard.key = None;
    Ok(LockResponse { header, key })
}

async fn unlock(ctx: Rc<ServiceContext>, req: UnlockRequest) -> Result<UnlockResponse, Status> {
    let delete = pb::DeleteRangeRequest {
        key: req.key,
        ..Default::default()
    };
    match ctx
        .propose(LogEntry::new(LogRequest::DeleteRange(delete)).on_behalf())
        .await?
    {
        Reply::Applied(OpResponse::DeleteRange(_), header) => Ok(UnlockResponse {
            header: Some(header),
        }),
        _ => Err(unexpected("DeleteRange")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
