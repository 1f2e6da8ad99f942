//! Large Range responses, answered in pages at one revision (see
//! `services::kv::large_range`), seen from clients: the same bytes as the
//! whole-response path, which a read-only Txn still takes; etcd's
//! OutOfRange when a compaction passes the revision mid-response.

use std::net::SocketAddr;

use basalt_net::grpc::encode_message;
use basalt_net::proto::etcdserverpb as pb;
use bytes::{Buf, Bytes};
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use prost::Message;

/// 1500 keys of 2 KB (1.8 MB once some are deleted or shrunk: past the
/// first page, so the paged path), every third rewritten and
/// every seventh deleted, so revision filters drop keys inside pages.
const KEYS: usize = 1500;
const VALUE_LEN: usize = 2000;

async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The response stream of one unary call on `client`.
async fn start_call(
    client: &mut SendRequest<Bytes>,
    path: &str,
    body: Bytes,
) -> (HeaderMap, h2::RecvStream) {
    let req = Request::post(format!("http://basalt{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(body, true).unwrap();
    let (parts, recv) = resp.await.unwrap().into_parts();
    (parts.headers, recv)
}

/// Reads the rest of a call: its body and the status trailers.
async fn finish_call(
    headers: HeaderMap,
    mut recv: h2::RecvStream,
    mut body: Vec<u8>,
) -> (Vec<u8>, HeaderMap) {
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(chunk.chunk());
    }
    let trailers = recv.trailers().await.unwrap().unwrap_or(headers);
    (body, trailers)
}

/// One successful unary call, decoded.
async fn call<Req: Message, Resp: Message + Default>(
    addr: SocketAddr,
    path: &str,
    req: &Req,
) -> Resp {
    let mut client = connect(addr).await;
    let (headers, recv) = start_call(&mut client, path, encode_message(req)).await;
    let (body, trailers) = finish_call(headers, recv, Vec::new()).await;
    assert_eq!(trailers["grpc-status"], "0", "{path}: {trailers:?}");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(body.len(), 5 + len, "{path}: one whole message");
    Resp::decode(&body[5..]).unwrap()
}

fn put(key: String, value_len: usize, fill: u8) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into_bytes(),
            value: vec![fill; value_len],
            ..Default::default()
        })),
    }
}

async fn txn(addr: SocketAddr, ops: Vec<pb::RequestOp>) -> pb::TxnResponse {
    let req = pb::TxnRequest {
        success: ops,
        ..Default::default()
    };
    call(addr, "/etcdserverpb.KV/Txn", &req).await
}

/// Writes the data set; returns the revision after the first round of puts.
async fn fill(addr: SocketAddr) -> i64 {
    let keys: Vec<usize> = (0..KEYS).collect();
    for chunk in keys.chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| {
                put(
                    format!("k/{i:05}"),
                    VALUE_LEN + i % 97,
                    b'a' + (i % 26) as u8,
                )
            })
            .collect();
        txn(addr, ops).await;
    }
    let first_round = txn(addr, Vec::new()).await.header.unwrap().revision;
    let rewritten: Vec<usize> = (0..KEYS).step_by(3).collect();
    for chunk in rewritten.chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| put(format!("k/{i:05}"), 300, b'z'))
            .collect();
        txn(addr, ops).await;
    }
    for i in (0..KEYS).step_by(7) {
        let req = pb::DeleteRangeRequest {
            key: format!("k/{i:05}").into_bytes(),
            ..Default::default()
        };
        let _: pb::DeleteRangeResponse = call(addr, "/etcdserverpb.KV/DeleteRange", &req).await;
    }
    first_round
}

fn server(cores: usize) -> (tempfile::TempDir, basalt_net::ServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = basalt_net::Config::for_test(dir.path());
    cfg.cores = cores;
    let h = basalt_net::start(cfg).unwrap();
    (dir, h)
}

/// The same range read in a read-only Txn: the whole-response path.
async fn range_in_txn(addr: SocketAddr, req: &pb::RangeRequest) -> pb::RangeResponse {
    let op = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(req.clone())),
    };
    let resp = txn(addr, vec![op]).await;
    match resp.responses.into_iter().next().and_then(|r| r.response) {
        Some(pb::response_op::Response::ResponseRange(r)) => r,
        other => panic!("a range in a txn answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_ranges_match_the_whole_response_path() {
    let (_dir, s) = server(2);
    let addr = s.client_addr();
    let first_round = fill(addr).await;
    let current = txn(addr, Vec::new()).await.header.unwrap().revision;
    let all = pb::RangeRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        ..Default::default()
    };
    let mut checked = 0;
    for revision in [0, first_round] {
        for limit in [0, 10, 1000] {
            for (keys_only, serializable) in [(false, false), (true, true)] {
                let base = pb::RangeRequest {
                    revision,
                    limit,
                    keys_only,
                    serializable,
                    ..all.clone()
                };
                let variants = [
                    base.clone(),
                    pb::RangeRequest {
                        min_mod_revision: first_round + 1,
                        ..base.clone()
                    },
                    pb::RangeRequest {
                        min_create_revision: 3,
                        max_create_revision: 9,
                        ..base.clone()
                    },
                    pb::RangeRequest {
                        sort_order: pb::range_request::SortOrder::Ascend as i32,
                        max_mod_revision: first_round,
                        ..base.clone()
                    },
                ];
                for req in variants {
                    let paged: pb::RangeResponse = call(addr, "/etcdserverpb.KV/Range", &req).await;
                    let whole = range_in_txn(addr, &req).await;
                    assert_eq!(paged.header.unwrap().revision, current);
                    assert_eq!(
                        (paged.count, paged.more, paged.kvs.len()),
                        (whole.count, whole.more, whole.kvs.len()),
                        "{req:?}"
                    );
                    assert!(paged.kvs == whole.kvs, "{req:?}: kvs differ");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 48);

    // A real client decodes the streamed message.
    let mut c = etcd_client::Client::connect([s.client_url()], None)
        .await
        .unwrap();
    let got = c
        .get("k/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let whole = range_in_txn(addr, &all).await;
    assert!(whole.kvs.len() > 1200);
    assert_eq!(got.kvs().len(), whole.kvs.len());
    assert_eq!(got.count(), whole.count);
    for (a, b) in got.kvs().iter().zip(&whole.kvs) {
        assert_eq!(
            (a.key(), a.value(), a.mod_revision()),
            (&b.key[..], &b.value[..], b.mod_revision)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_mid_response_does_not_change_it() {
    let (_dir, s) = server(1);
    let addr = s.client_addr();
    fill(addr).await;
    let all = pb::RangeRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        ..Default::default()
    };
    let before = range_in_txn(addr, &all).await;
    // h2's client window (64 KiB) is never handed back: the server stops
    // inside its first part, after the size pass, waiting for window.
    let mut client = connect(addr).await;
    let (headers, mut recv) =
        start_call(&mut client, "/etcdserverpb.KV/Range", encode_message(&all)).await;
    let mut body = Vec::new();
    while body.len() < 60_000 {
        body.extend_from_slice(&recv.data().await.unwrap().unwrap());
    }
    let announced = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert!(announced > 1_500_000, "{announced}");

    // Writes flow meanwhile: keys of the range change, and a compaction
    // passes the range's revision.
    let changed = txn(addr, vec![put("k/0000".into(), 1, b'x')]).await;
    let compact = pb::CompactionRequest {
        revision: changed.header.unwrap().revision,
        physical: true,
    };
    let _: pb::CompactionResponse = call(addr, "/etcdserverpb.KV/Compact", &compact).await;

    // Hand back the window held so far; the rest is read as it comes. The
    // response is the range as of its revision, as etcd's one read
    // transaction gives it: the pages all read the view it started with.
    let _ = recv.flow_control().release_capacity(body.len());
    let (body, trailers) = finish_call(headers, recv, body).await;
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    assert_eq!(body.len(), 5 + announced);
    let got = pb::RangeResponse::decode(&body[5..]).unwrap();
    let revision = |h: Option<pb::ResponseHeader>| h.unwrap().revision;
    assert_eq!(revision(got.header), revision(before.header));
    assert_eq!((got.count, got.more), (before.count, before.more));
    assert!(got.kvs == before.kvs, "kvs differ from the range before");
}
