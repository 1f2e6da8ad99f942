//! KV workloads: put, range, txn-put, txn-mixed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::DEFAULT_TOTAL;
use crate::cli::{Consistency, PutArgs, RangeArgs, TxnMixedArgs, TxnPutArgs};
use crate::connection::Connection;
use crate::error::{LoadgenError, Result};
use crate::grpc::messages::{
    path, request_op, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse,
};
use crate::grpc::Channel;
use crate::keys::{prefix_end, random_value, KeySpace};
use crate::report::Recorder;
use crate::run::{gather, Phase, Run};

/// etcd's benchmark compacts to this many revisions behind the newest.
const COMPACT_BEHIND: i64 = 1_000;

fn key_space(args: &crate::cli::KeyArgs) -> Result<KeySpace> {
    if args.key_space_size == 0 {
        return Err(LoadgenError::InvalidArgs(
            "--key-space-size must be at least 1".into(),
        ));
    }
    Ok(KeySpace::new(
        &args.prefix,
        args.key_size,
        args.key_space_size,
        args.sequential_keys,
    ))
}

/// `put`: unary Puts from `--clients` tasks.
pub async fn put(
    run: &Run,
    args: &PutArgs,
    compact: Option<Duration>,
) -> Result<(Recorder, Duration)> {
    let keys = Arc::new(key_space(&args.keys)?);
    // Shared by every request: cloning `Bytes` copies no value.
    let value = Bytes::from(random_value(args.keys.val_size, &mut fastrand::Rng::new()));
    let phase = Arc::new(run.phase(Some(DEFAULT_TOTAL)));
    let mut tasks = Vec::new();
    for client in 0..run.clients {
        let conn = run.conn(client).clone();
        let channel = lean_channel(&conn)?;
        let (phase, keys, value) = (phase.clone(), keys.clone(), value.clone());
        let mut tally = run.tally(&phase);
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::new();
            let mut request = PutRequest {
                value,
                ..Default::default()
            };
            while let Some(ticket) = phase.pacer.next().await {
                request.key = Bytes::from(keys.pick(ticket, &mut rng));
                let floor = conn.floor();
                let call = channel.unary::<_, PutResponse>(path::PUT, &request);
                let Some(outcome) = phase.timed(call).await else {
                    break;
                };
                tally.settle("put", &conn, floor, outcome, |r| {
                    r.header.as_ref().map(|h| h.revision)
                });
            }
            tally.rec
        }));
    }
    if let Some(every) = compact {
        tasks.push(spawn_compactor(run, phase.clone(), every));
    }
    let rec = gather(tasks, &run.incidents).await;
    Ok((rec, phase.finish()))
}

/// etcd's benchmark compactor: every `every`, compact to the newest
/// revision minus [`COMPACT_BEHIND`]. Ends with the phase.
fn spawn_compactor(
    run: &Run,
    phase: Arc<Phase>,
    every: Duration,
) -> tokio::task::JoinHandle<Recorder> {
    let conn = run.conn(0).clone();
    let mut tally = run.tally(&phase);
    tokio::spawn(async move {
        let mut kv = conn.kv();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = phase.shutdown.wait() => break,
            }
            let floor = conn.floor();
            let Some(outcome) = phase.timed(kv.get("compact-probe", None)).await else {
                break;
            };
            let Some(resp) = tally.settle("compact-probe", &conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) else {
                continue;
            };
            let target = resp.header().map(|h| h.revision()).unwrap_or(0) - COMPACT_BEHIND;
            if target <= 0 {
                continue;
            }
            let floor = conn.floor();
            let Some(outcome) = phase.timed(kv.compact(target, None)).await else {
                break;
            };
            tally.settle("compact", &conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            });
        }
        tally.rec
    })
}

/// `range`: Range requests over one key, a prefix or a range.
pub async fn range(run: &Run, args: &RangeArgs) -> Result<(Recorder, Duration)> {
    if args.limit < 0 {
        return Err(LoadgenError::InvalidArgs(
            "--limit must not be negative".into(),
        ));
    }
    let range_end = if args.prefix {
        Bytes::from(prefix_end(args.key.as_bytes()))
    } else if let Some(end) = &args.end {
        Bytes::copy_from_slice(end.as_bytes())
    } else {
        Bytes::new()
    };
    let serializable = args.consistency == Consistency::S;
    let request = RangeRequest {
        key: Bytes::copy_from_slice(args.key.as_bytes()),
        range_end,
        limit: args.limit,
        serializable,
        keys_only: args.keys_only,
        count_only: args.count_only,
        ..Default::default()
    };
    let phase = Arc::new(run.phase(Some(DEFAULT_TOTAL)));
    let mut tasks = Vec::new();
    for client in 0..run.clients {
        let conn = run.conn(client).clone();
        let channel = lean_channel(&conn)?;
        let (phase, request) = (phase.clone(), request.clone());
        let mut tally = run.tally(&phase);
        tasks.push(tokio::spawn(async move {
            while phase.pacer.next().await.is_some() {
                let floor = conn.read_floor(serializable);
                let call = channel.unary::<_, RangeResponse>(path::RANGE, &request);
                let Some(outcome) = phase.timed(call).await else {
                    break;
                };
                if let Some(resp) = tally.settle("range", &conn, floor, outcome, |r| {
                    r.header.as_ref().map(|h| h.revision)
                }) {
                    let bytes: usize = resp
                        .kvs
                        .iter()
                        .map(|kv| kv.key.len() + kv.value.len())
                        .sum();
                    tally.rec.add_bytes(bytes as u64);
                }
            }
            tally.rec
        }));
    }
    let rec = gather(tasks, &run.incidents).await;
    Ok((rec, phase.finish()))
}

/// The lean channel of a connection opened for a KV workload.
fn lean_channel(conn: &Connection) -> Result<Channel> {
    conn.channel().cloned().ok_or_else(|| {
        LoadgenError::InvalidArgs("KV workloads need connections opened with the lean path".into())
    })
}

/// `txn-put`: Txns of `--txn-ops` unconditional puts.
pub async fn txn_put(run: &Run, args: &TxnPutArgs) -> Result<(Recorder, Duration)> {
    if args.txn_ops == 0 {
        return Err(LoadgenError::InvalidArgs(
            "--txn-ops must be at least 1".into(),
        ));
    }
    let keys = Arc::new(key_space(&args.keys)?);
    let value = Bytes::from(random_value(args.keys.val_size, &mut fastrand::Rng::new()));
    let phase = Arc::new(run.phase(Some(DEFAULT_TOTAL)));
    let mut tasks = Vec::new();
    for client in 0..run.clients {
        let conn = run.conn(client).clone();
        let channel = lean_channel(&conn)?;
        let (phase, keys, value, ops) = (phase.clone(), keys.clone(), value.clone(), args.txn_ops);
        let mut tally = run.tally(&phase);
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::new();
            let mut txn = TxnRequest::default();
            while let Some(ticket) = phase.pacer.next().await {
                // etcd rejects a txn that puts one key twice; draw distinct
                // keys as long as the key space allows.
                let mut picked: Vec<Vec<u8>> = Vec::with_capacity(ops);
                for i in 0..ops as u64 {
                    let mut key = keys.pick(ticket * ops as u64 + i, &mut rng);
                    let mut tries = 0;
                    while picked.contains(&key) && tries < 16 {
                        key = keys.nth(rng.u64(0..keys.size()));
                        tries += 1;
                    }
                    if !picked.contains(&key) {
                        picked.push(key);
                    }
                }
                txn.success.clear();
                txn.success.extend(picked.into_iter().map(|key| RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: Bytes::from(key),
                        value: value.clone(),
                        ..Default::default()
                    })),
                }));
                let floor = conn.floor();
                let call = channel.unary::<_, TxnResponse>(path::TXN, &txn);
                let Some(outcome) = phase.timed(call).await else {
                    break;
                };
                tally.settle("txn-put", &conn, floor, outcome, |r| {
                    r.header.as_ref().map(|h| h.revision)
                });
            }
            tally.rec
        }));
    }
    let rec = gather(tasks, &run.incidents).await;
    Ok((rec, phase.finish()))
}

/// `txn-mixed`: Txns that read the key space's range or put one key.
pub async fn txn_mixed(run: &Run, args: &TxnMixedArgs) -> Result<(Recorder, Duration)> {
    if !(args.rw_ratio.is_finite() && args.rw_ratio >= 0.0) {
        return Err(LoadgenError::InvalidArgs(
            "--rw-ratio must be a number ≥ 0".into(),
        ));
    }
    let keys = Arc::new(key_space(&args.keys)?);
    let value = Bytes::from(random_value(args.keys.val_size, &mut fastrand::Rng::new()));
    let read_share = args.rw_ratio / (args.rw_ratio + 1.0);
    let serializable = args.consistency == Consistency::S;
    let (start, end) = keys.bounds();
    let read = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                key: Bytes::from(start),
                range_end: Bytes::from(end),
                limit: args.limit,
                serializable,
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    let phase = Arc::new(run.phase(Some(DEFAULT_TOTAL)));
    let mut tasks = Vec::new();
    for client in 0..run.clients {
        let conn = run.conn(client).clone();
        let channel = lean_channel(&conn)?;
        let (phase, keys, value, read) = (phase.clone(), keys.clone(), value.clone(), read.clone());
        let mut tally = run.tally(&phase);
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::new();
            let mut write = TxnRequest::default();
            while let Some(ticket) = phase.pacer.next().await {
                let is_read = rng.f64() < read_share;
                let (op, txn, floor) = if is_read {
                    ("txn-read", &read, conn.read_floor(serializable))
                } else {
                    write.success.clear();
                    write.success.push(RequestOp {
                        request: Some(request_op::Request::Put(PutRequest {
                            key: Bytes::from(keys.pick(ticket, &mut rng)),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    });
                    ("txn-write", &write, conn.floor())
                };
                let call = channel.unary::<_, TxnResponse>(path::TXN, txn);
                let Some(outcome) = phase.timed(call).await else {
                    break;
                };
                tally.settle(op, &conn, floor, outcome, |r| {
                    r.header.as_ref().map(|h| h.revision)
                });
            }
            tally.rec
        }));
    }
    let rec = gather(tasks, &run.incidents).await;
    Ok((rec, phase.finish()))
}
