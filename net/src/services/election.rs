//! etcd's Election service (`v3electionpb.Election`), made of keys as
//! etcd's server makes it from its client library's election.
//!
//! Campaign(name, lease, value) puts `name/<lease in hex>` = value with the
//! lease (or, for the same lease again, proclaims the value) and answers
//! once no key under `name/` was created before it: the campaigner leads.
//! Leader answers the oldest key under `name/`; Observe streams it each
//! time it changes; Proclaim replaces the leader's value while its key is
//! still the one it created; Resign deletes it. Errors are etcd's client
//! library's (code Unknown): `election: no leader`, `election: not leader`,
//! `"leader" field must be provided`.
//!
//! Waiting (Campaign) and Observe re-read the keys (a linearizable range)
//! every 10–100 ms instead of watching them; an Observe sees the leader's
//! value as of each read, so values proclaimed in quick succession may be
//! reported only as the last one.

use std::rc::Rc;
use std::time::Duration;

use prost::Message;

use crate::auth::Access;
use crate::grpc::{server_streaming, unary, Code, Metadata, Router, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;

use super::lock::{
    as_client_error, by_create, check_key, check_name, created_at, range, session_key, txn,
    wait_for_older,
};
use super::ServiceContext;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);
/// Changes of the leader's key read from history per poll, at most.
const OBSERVE_BATCH: usize = 1000;

#[derive(Clone, PartialEq, Message)]
pub struct LeaderKey {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub rev: i64,
    #[prost(int64, tag = "4")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CampaignRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub lease: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CampaignResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<pb::ResponseHeader>,
    #[prost(message, optional, tag = "2")]
    pub leader: Option<LeaderKey>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProclaimRequest {
    #[prost(message, optional, tag = "1")]
    pub leader: Option<LeaderKey>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProclaimResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<pb::ResponseHeader>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LeaderRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LeaderResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<pb::ResponseHeader>,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<mvccpb::KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResignRequest {
    #[prost(message, optional, tag = "1")]
    pub leader: Option<LeaderKey>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResignResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<pb::ResponseHeader>,
}

/// etcd's errors from its client library's election (code Unknown).
fn no_leader() -> Status {
    Status::new(Code::Unknown, "election: no leader")
}
fn not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}
fn missing_leader() -> Status {
    Status::new(Code::Unknown, "\"leader\" field must be provided")
}

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        "/v3electionpb.Election/Campaign",
        unary(move |req: CampaignRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                check_name(&c, &meta, &req.name).map_err(as_client_error)?;
                campaign(c, req).await.map_err(as_client_error)
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/v3electionpb.Election/Proclaim",
        unary(move |req: ProclaimRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                let key = req.leader.as_ref().map_or(&[][..], |l| &l.key[..]);
                check_key(&c, &meta, key).map_err(as_client_error)?;
                proclaim(&c, req).await.map_err(as_client_error)
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/v3electionpb.Election/Leader",
        unary(move |req: LeaderRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                check_name_read(&c, &meta, &req.name).map_err(as_client_error)?;
                match leader(&c, &req.name).await.map_err(as_client_error)? {
                    (header, Some(kv)) => Ok(LeaderResponse {
                        header: Some(header),
                        kv: Some(kv),
                    }),
                    (_, None) => Err(no_leader()),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/v3electionpb.Election/Observe",
        server_streaming(move |req: LeaderRequest, meta: Metadata, mut responses| {
            let c = c.clone();
            // etcd's Observe: the leader's key, then every value it is
            // given (each Proclaim) until it is deleted, then the next
            // leader's. Between polls the key's history is read, so
            // values proclaimed in quick succession are each reported, as
            // etcd's watch reports them.
            async move {
                check_name_read(&c, &meta, &req.name).map_err(as_client_error)?;
                let mut pause = FIRST_PAUSE;
                loop {
                    let (header, kv) = leader(&c, &req.name).await.map_err(as_client_error)?;
                    let Some(kv) = kv else {
                        glommio::timer::sleep(pause).await;
                        pause = (pause * 2).min(LONGEST_PAUSE);
                        continue;
                    };
                    let key = kv.key.clone();
                    let mut next = header.revision + 1;
                    responses
                        .send(&LeaderResponse {
                            header: Some(header),
                            kv: Some(kv),
                        })
                        .await?;
                    pause = FIRST_PAUSE;
                    let mut end = key.clone();
                    end.push(0);
                    'follow: loop {
                        glommio::timer::sleep(pause).await;
                        let view = c.read_view(false).await?;
                        let Ok(events) = view.view.events_from(&key, &end, next, OBSERVE_BATCH)
                        else {
                            // Compacted past what was seen: start over.
                            break 'follow;
                        };
                        let header = view.header();
                        drop(view);
                        if events.is_empty() {
                            next = next.max(header.revision + 1);
                            pause = (pause * 2).min(LONGEST_PAUSE);
                            continue;
                        }
                        pause = FIRST_PAUSE;
                        for e in events {
                            if e.kind == basalt_engine::mvcc::EventKind::Delete {
                                break 'follow;
                            }
                            next = e.kv.mod_revision + 1;
                            responses
                                .send(&LeaderResponse {
                                    header: Some(header),
                                    kv: Some(crate::wire::key_value(e.kv)),
                                })
                                .await?;
                        }
                    }
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/v3electionpb.Election/Resign",
        unary(move |req: ResignRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                let key = req.leader.as_ref().map_or(&[][..], |l| &l.key[..]);
                check_key(&c, &meta, key).map_err(as_client_error)?;
                resign(&c, req).await.map_err(as_client_error)
            }
        }),
    );
}

/// Read permission on `name/` and every key under it (Leader, Observe).
fn check_name_read(ctx: &ServiceContext, meta: &Metadata, name: &[u8]) -> Result<(), Status> {
    let caller = ctx.latest_caller(meta)?;
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let end = super::lock::prefix_end(&prefix);
    Ok(caller.check(&prefix, &end, Access::Read)?)
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// The oldest key under `name/` (the leader's), if any.
async fn leader(
    ctx: &ServiceContext,
    name: &[u8],
) -> Result<(pb::ResponseHeader, Option<mvccpb::KeyValue>), Status> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let r = range(
        ctx,
        by_create(&prefix, pb::range_request::SortOrder::Ascend, 0),
    )
    .await?;
    Ok((r.header.unwrap_or_default(), r.kvs.into_iter().next()))
}

async fn campaign(
    ctx: Rc<ServiceContext>,
    req: CampaignRequest,
) -> Result<CampaignResponse, Status> {
    let (lease, prefix, key) = session_key(&ctx, &req.name, req.lease).await?;
    let resp = txn(
        &ctx,
        pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, &req.value, lease)],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            }],
        },
    )
    .await?;
    let mut header = resp.header;
    let mut rev = header.as_ref().map_or(0, |h| h.revision);
    if !resp.succeeded {
        let existing = resp.responses.first().and_then(|r| match &r.response {
            Some(pb::response_op::Response::ResponseRange(r)) => r.kvs.first().cloned(),
            _ => None,
        });
        if let Some(kv) = existing {
            rev = kv.create_revision;
            if kv.value != req.value {
                let leader = LeaderKey {
                    name: req.name.clone(),
                    key: key.clone(),
                    rev,
                    lease,
                };
                proclaim_as(&ctx, &leader, &req.value).await?;
            }
        }
    }
    // Lead once every key created before ours is gone.
    wait_for_older(&ctx, &prefix, rev).await?;
    if header.is_none() {
        header = Some(pb::ResponseHeader::default());
    }
    Ok(CampaignResponse {
        header,
        leader: Some(LeaderKey {
            name: req.name,
            key,
            rev,
            lease,
        }),
    })
}

/// Puts `value` on the leader's key if it is still the one it created.
async fn proclaim_as(
    ctx: &ServiceContext,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<pb::ResponseHeader, Status> {
    let resp = txn(
        ctx,
        pb::TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![put_op(&leader.key, value, leader.lease)],
            failure: Vec::new(),
        },
    )
    .await?;
    if !resp.succeeded {
        return Err(not_leader());
    }
    Ok(resp.header.unwrap_or_default())
}

async fn proclaim(ctx: &ServiceContext, req: ProclaimRequest) -> Result<ProclaimResponse, Status> {
    let leader = req.leader.ok_or_else(missing_leader)?;
    let header = proclaim_as(ctx, &leader, &req.value).await?;
    Ok(ProclaimResponse {
        header: Some(header),
    })
}

async fn resign(ctx: &ServiceContext, req: ResignRequest) -> Result<ResignResponse, Status> {
    let leader = req.leader.ok_or_else(missing_leader)?;
    let resp = txn(
        ctx,
        pb::TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(
                    pb::DeleteRangeRequest {
                        key: leader.key.clone(),
                        ..Default::default()
                    },
                )),
            }],
            failure: Vec::new(),
        },
    )
    .await?;
    Ok(ResignResponse {
        header: resp.header,
    })
}
