//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

mod large_range;
mod page;

use std::rc::Rc;
use std::sync::Arc;

use basalt_engine::mvcc::OpResponse;

use crate::grpc::{unary, HandlerFuture, Metadata, RequestStream, ResponseSink, Router, Status};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{is_read_only, LogEntry, LogRequest, Published, ReadOnlyTxn, Reply};
use crate::{validate, wire};

use self::page::{PageOut, RangePage};

use super::{unexpected, ServiceContext};

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.KV/Range",
        Rc::new(
            move |meta: Metadata, mut requests: RequestStream, mut responses: ResponseSink| {
                let c = c.clone();
                Box::pin(async move {
                    let req: pb::RangeRequest = requests.next().await?.ok_or_else(|| {
                        Status::new(
                            crate::grpc::Code::Internal,
                            "grpc: unary call ended without a request",
                        )
                    })?;
                    range(c, req, &meta, &mut responses).await
                }) as HandlerFuture
            },
        ),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.KV/Put",
        unary(move |req: pb::PutRequest, meta| put(c.clone(), req, meta)),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.KV/DeleteRange",
        unary(move |req: pb::DeleteRangeRequest, meta| delete_range(c.clone(), req, meta)),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.KV/Txn",
        unary(move |req: pb::TxnRequest, meta| txn(c.clone(), req, meta)),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.KV/Compact",
        unary(move |req: pb::CompactionRequest, _| compact(c.clone(), req)),
    );
}

/// Read on this executor from the latest published view (every shard
/// file, merged at one revision; no hop to the sequencer). A Range in key
/// order is answered in pages, written into the response as it is read
/// (see [`large_range`]); other sort orders are read whole.
async fn range(
    ctx: Rc<ServiceContext>,
    req: pb::RangeRequest,
    meta: &Metadata,
    responses: &mut ResponseSink,
) -> Result<(), Status> {
    validate::range(&req)?;
    let r = wire::range_request(&req)?;
    let published = ctx.read_view(req.serializable).await?;
    ctx.caller(meta, &published)?.range(&req)?;
    if large_range::eligible(&r) {
        let sizes = large_range::PageSizes::default();
        let source = ViewSource(published);
        return match large_range::answer(&source, r, sizes, responses).await? {
            Some(whole) => responses.send(&whole).await,
            None => {
                responses.message_sent();
                Ok(())
            }
        };
    }
    let resp = published.view.range(&r)?;
    responses
        .send(&wire::range_response(resp, &published.header()))
        .await
}

/// The pages of one response, all from the view it started with.
struct ViewSource(Arc<Published>);

impl large_range::PageSource for ViewSource {
    async fn page(&self, page: RangePage) -> Result<(PageOut, pb::ResponseHeader), Status> {
        // A LIST of many pages must not hold this core from its other
        // connections (or, on executor 0, from the sequencer): each page is
        // a synchronous read of a few ms, and other tasks run between pages.
        // (`yield_if_needed` would wait out glommio's 100 ms time slice.)
        futures_lite::future::yield_now().await;
        let out = page.run(&self.0.view)?;
        Ok((out, self.0.header()))
    }
}

async fn put(
    ctx: Rc<ServiceContext>,
    req: pb::PutRequest,
    meta: Metadata,
) -> Result<pb::PutResponse, Status> {
    validate::put(&req)?;
    let caller = ctx.latest_caller(&meta)?;
    caller.put(&req)?;
    match ctx
        .propose(LogEntry::new(LogRequest::Put(req)).by(&caller))
        .await?
    {
        Reply::Applied(OpResponse::Put(r), header) => Ok(wire::put_response(r, &header)),
        _ => Err(unexpected("Put")),
    }
}

async fn delete_range(
    ctx: Rc<ServiceContext>,
    req: pb::DeleteRangeRequest,
    meta: Metadata,
) -> Result<pb::DeleteRangeResponse, Status> {
    validate::delete_range(&req)?;
    let caller = ctx.latest_caller(&meta)?;
    caller.delete_range(&req)?;
    match ctx
        .propose(LogEntry::new(LogRequest::DeleteRange(req)).by(&caller))
        .await?
    {
        Reply::Applied(OpResponse::DeleteRange(r), header) => Ok(wire::delete_response(r, &header)),
        _ => Err(unexpected("DeleteRange")),
    }
}

/// A txn that writes nothing skips the log (no fdatasync) and is evaluated
/// here on the latest published view; every other txn is proposed.
async fn txn(
    ctx: Rc<ServiceContext>,
    req: pb::TxnRequest,
    meta: Metadata,
) -> Result<pb::TxnResponse, Status> {
    validate::txn(&req, ctx.limits.max_txn_ops)?;
    let caller = ctx.latest_caller(&meta)?;
    caller.txn(&req)?;
    if is_read_only(&req) {
        let read = wire::txn_request(&req)?;
        if let Some(read) = ReadOnlyTxn::new(read) {
            let published = ctx.read_view(txn_is_serializable(&req)).await?;
            let resp = read.evaluate(&published.view)?;
            return Ok(wire::txn_response(resp, &published.header()));
        }
    }
    match ctx
        .propose(LogEntry::new(LogRequest::Txn(req)).by(&caller))
        .await?
    {
        Reply::Applied(OpResponse::Txn(r), header) => Ok(wire::txn_response(r, &header)),
        _ => Err(unexpected("Txn")),
    }
}

/// etcd's rule: a read-only txn is serializable when every range in it
/// (nested txns included) asks to be.
fn txn_is_serializable(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => txn_is_serializable(t),
            _ => true,
        })
}

/// Compaction is applied synchronously in the engine, so `physical` is
/// always satisfied when this returns.
async fn compact(
    ctx: Rc<ServiceContext>,
    req: pb::CompactionRequest,
) -> Result<pb::CompactionResponse, Status> {
    match ctx
        .propose(LogEntry::new(LogRequest::Compaction(req)))
        .await?
    {
        Reply::Applied(OpResponse::Compact, header) => Ok(pb::CompactionResponse {
            header: Some(header),
        }),
        _ => Err(unexpected("Compact")),
    }
}
