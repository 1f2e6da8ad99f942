//! etcd's Maintenance service: Status, Defragment, Hash, HashKV, Snapshot,
//! Alarm.

use std::rc::Rc;

use crate::grpc::{server_streaming, unary, Metadata, ResponseSink, Router, Status};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{Command, Reply};

use super::{unexpected, ServiceContext, ETCD_COMPAT_VERSION};

/// Snapshot blob bytes per message (etcd sends 32 KiB pieces).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Status",
        unary(move |_: pb::StatusRequest, _| status(c.clone())),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/MoveLeader",
        unary(move |req: pb::MoveLeaderRequest, _| {
            let c = c.clone();
            async move {
                match c
                    .sequencer
                    .call(Command::MoveLeader {
                        target: req.target_id,
                    })
                    .await?
                {
                    Reply::Done(header) => Ok(pb::MoveLeaderResponse {
                        header: Some(header),
                    }),
                    _ => Err(unexpected("MoveLeader")),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Defragment",
        unary(move |_: pb::DefragmentRequest, _| {
            let c = c.clone();
            async move {
                match c.sequencer.call(Command::Defragment).await? {
                    Reply::Done(header) => Ok(pb::DefragmentResponse {
                        header: Some(header),
                    }),
                    _ => Err(unexpected("Defragment")),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Hash",
        unary(move |_: pb::HashRequest, _| {
            let c = c.clone();
            async move {
                match c.sequencer.call(Command::Hash).await? {
                    Reply::Hash { hash, header } => Ok(pb::HashResponse {
                        header: Some(header),
                        hash,
                    }),
                    _ => Err(unexpected("Hash")),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/HashKV",
        unary(move |req: pb::HashKvRequest, _| {
            let c = c.clone();
            async move {
                let cmd = Command::HashKv {
                    revision: req.revision,
                };
                match c.sequencer.call(cmd).await? {
                    Reply::HashKv {
                        hash,
                        compact_revision,
                        hash_revision,
                        header,
                    } => Ok(pb::HashKvResponse {
                        header: Some(header),
                        hash,
                        compact_revision,
                        hash_revision,
                    }),
                    _ => Err(unexpected("HashKV")),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Snapshot",
        server_streaming(move |_: pb::SnapshotRequest, _: Metadata, sink| {
            snapshot(c.clone(), sink)
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Alarm",
        unary(move |req: pb::AlarmRequest, _| {
            let c = c.clone();
            async move {
                match c.sequencer.call(Command::Alarm(req)).await? {
                    Reply::Alarms(alarms, header) => Ok(pb::AlarmResponse {
                        header: Some(header),
                        alarms,
                    }),
                    _ => Err(unexpected("Alarm")),
                }
            }
        }),
    );
}

async fn status(ctx: Rc<ServiceContext>) -> Result<pb::StatusResponse, Status> {
    let Reply::Status(s) = ctx.sequencer.call(Command::Status).await? else {
        return Err(unexpected("Status"));
    };
    Ok(pb::StatusResponse {
        header: Some(s.header),
        version: ETCD_COMPAT_VERSION.to_owned(),
        db_size: i64::try_from(s.db_size).unwrap_or(i64::MAX),
        leader: s.leader,
        raft_index: s.raft_index,
        raft_term: s.raft_term,
        raft_applied_index: s.raft_applied_index,
        errors: s.errors,
        db_size_in_use: i64::try_from(s.db_size_in_use).unwrap_or(i64::MAX),
        is_learner: s.is_learner,
        storage_version: String::new(),
        db_size_quota: i64::try_from(ctx.limits.quota_backend_bytes).unwrap_or(i64::MAX),
        downgrade_info: None,
    })
}

/// The store's snapshot, framed as etcdctl expects (see
/// [`crate::snapshot_file`]), in 32 KiB pieces, each saying how much follows.
/// The blob is built whole at the sequencer first (this slice); the
/// sending side still respects flow control piece by piece.
async fn snapshot(ctx: Rc<ServiceContext>, mut sink: ResponseSink) -> Result<(), Status> {
    let Reply::Snapshot { blob, header } = ctx.sequencer.call(Command::Snapshot).await? else {
        return Err(unexpected("Snapshot"));
    };
    let blob = crate::snapshot_file::wrap(blob);
    let total = blob.len();
    let mut sent = 0;
    for piece in blob.chunks(SNAPSHOT_CHUNK) {
        sent += piece.len();
        sink.send(&pb::SnapshotResponse {
            header: Some(header),
            remaining_bytes: (total - sent) as u64,
            blob: piece.to_vec(),
            version: ETCD_COMPAT_VERSION.to_owned(),
        })
        .await?;
    }
    Ok(())
}
