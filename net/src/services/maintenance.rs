//! etcd's Maintenance service: Status, Defragment, Hash, HashKV, Snapshot,
//! Alarm.

use std::rc::Rc;

use basalt_engine::etcdfmt::{self, EtcdFmtError, EtcdSnapshot, SnapshotMember, SnapshotMeta};

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
        unary(move |req: pb::MoveLeaderRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                c.latest_caller(&meta)?.check_maintenance()?;
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
        unary(move |_: pb::DefragmentRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                c.latest_caller(&meta)?.check_maintenance()?;
                match c.sequencer.call(Command::Defragment).await? {
                    // etcd answers a defragment without a header.
                    Reply::Done(_) => Ok(pb::DefragmentResponse { header: None }),
                    _ => Err(unexpected("Defragment")),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Hash",
        unary(move |_: pb::HashRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                c.latest_caller(&meta)?.check_maintenance()?;
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
        unary(move |req: pb::HashKvRequest, meta: Metadata| {
            let c = c.clone();
            async move {
                c.latest_caller(&meta)?.check_maintenance()?;
                hash_kv(c, req.revision).await
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Maintenance/Snapshot",
        server_streaming(move |_: pb::SnapshotRequest, meta: Metadata, sink| {
            let c = c.clone();
            async move {
                c.latest_caller(&meta)?.check_maintenance()?;
                snapshot(c, sink).await
            }
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

/// etcd's HashKV (see `basalt_engine::etcdfmt::hash_kv`) of the view a
/// linearizable read would see, on a blocking thread: it reads every
/// version up to the revision.
async fn hash_kv(ctx: Rc<ServiceContext>, revision: i64) -> Result<pb::HashKvResponse, Status> {
    let published = ctx.read_view(false).await?;
    let header = published.header();
    let view = published.view.clone();
    drop(published);
    let h = glommio::executor()
        .spawn_blocking(move || etcdfmt::hash_kv(&view, revision))
        .await?;
    Ok(pb::HashKvResponse {
        header: Some(header),
        hash: h.hash,
        compact_revision: h.compact_revision,
        hash_revision: h.hash_revision,
    })
}

/// Chunks the snapshot writer may run ahead of the client.
const SNAPSHOT_CHUNKS_QUEUED: usize = 4;

/// etcd's snapshot (see `basalt_engine::etcdfmt`) of the view a
/// linearizable read would see, in 32 KiB pieces, each saying how much
/// follows. The view is pinned for the whole stream, so the file is one
/// consistent state while writes go on; it is laid out and written on a
/// blocking thread, a few pieces ahead of the client at most.
async fn snapshot(ctx: Rc<ServiceContext>, mut sink: ResponseSink) -> Result<(), Status> {
    let Reply::Members(cluster, _) = ctx.sequencer.call(Command::Members).await? else {
        return Err(unexpected("Snapshot"));
    };
    let published = ctx.read_view(false).await?;
    let header = published.header();
    let view = published.view.clone();
    let meta = SnapshotMeta {
        term: published.raft_term,
        members: cluster
            .members
            .into_iter()
            .map(|m| SnapshotMember {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: false,
            })
            .collect(),
        auth: published.auth.to_etcd(),
    };
    drop(published);
    let failed = |e: EtcdFmtError| {
        Status::new(
            crate::grpc::Code::Internal,
            format!("basalt: writing the snapshot: {e}"),
        )
    };
    let snap = glommio::executor()
        .spawn_blocking(move || EtcdSnapshot::plan(view, meta))
        .await
        .map_err(failed)?;
    let total = snap.file_len();
    let (tx, mut rx) = futures_channel::mpsc::channel::<Vec<u8>>(SNAPSHOT_CHUNKS_QUEUED);
    let writer = glommio::spawn_local(glommio::executor().spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(SNAPSHOT_CHUNK),
        };
        snap.write(&mut out)?;
        out.send_chunk().map_err(EtcdFmtError::Internal)
    }));
    let mut sent = 0u64;
    while let Some(blob) = futures_lite::StreamExt::next(&mut rx).await {
        sent += blob.len() as u64;
        sink.send(&pb::SnapshotResponse {
            header: Some(header),
            remaining_bytes: total.saturating_sub(sent),
            blob,
            version: ETCD_COMPAT_VERSION.to_owned(),
        })
        .await?;
    }
    writer.await.map_err(failed)?;
    if sent != total {
        return Err(failed(EtcdFmtError::Internal(format!(
            "wrote {sent} bytes of a {total}-byte snapshot"
        ))));
    }
    Ok(())
}

/// Cuts the snapshot into pieces and hands them to the stream, blocking
/// (on its own thread) while the stream is [`SNAPSHOT_CHUNKS_QUEUED`] ahead.
struct ChunkWriter {
    tx: futures_channel::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send_chunk(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK));
        let tx = &mut self.tx;
        futures_lite::future::block_on(std::future::poll_fn(|cx| tx.poll_ready(cx)))
            .and_then(|()| tx.start_send(chunk))
            .map_err(|_| "the client closed the snapshot stream".to_string())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = (SNAPSHOT_CHUNK - self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK {
            self.send_chunk().map_err(std::io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
