//! The gRPC layer seen from a raw HTTP/2 client: framing, trailers,
//! UNIMPLEMENTED, compressed-flag rejection and `grpc-timeout`.

use std::time::{Duration, Instant};

use basalt_net::grpc::encode_message;
use basalt_net::proto::etcdserverpb as pb;
use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use prost::Message;

struct Reply {
    status: String,
    message: Option<String>,
    body: Vec<u8>,
}

/// One call: POSTs `body` (already framed) to `path` and collects the
/// response body and its status trailers (or trailers-only headers).
async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    send.send_data(body, true).unwrap();
    let resp = resp.await.unwrap();
    let (parts, mut recv) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(chunk.chunk());
    }
    let trailers: HeaderMap = recv.trailers().await.unwrap().unwrap_or(parts.headers);
    Reply {
        status: trailers["grpc-status"].to_str().unwrap().to_owned(),
        message: trailers
            .get("grpc-message")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: data,
    }
}

fn server() -> (tempfile::TempDir, basalt_net::ServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let h = basalt_net::start(basalt_net::Config::for_test(dir.path())).unwrap();
    (dir, h)
}

#[tokio::test]
async fn unary_round_trip_and_trailers() {
    let (_d, s) = server();
    let put = pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let r = call(
        s.client_addr(),
        "/etcdserverpb.KV/Put",
        encode_message(&put),
        &[],
    )
    .await;
    assert_eq!((r.status.as_str(), r.message), ("0", None));
    let range = pb::RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let r = call(
        s.client_addr(),
        "/etcdserverpb.KV/Range",
        encode_message(&range),
        &[],
    )
    .await;
    assert_eq!(r.status, "0");
    assert_eq!(r.body[0], 0, "uncompressed");
    let len = u32::from_be_bytes([r.body[1], r.body[2], r.body[3], r.body[4]]) as usize;
    assert_eq!(r.body.len(), 5 + len);
    let resp = pb::RangeResponse::decode(&r.body[5..]).unwrap();
    assert_eq!(resp.kvs[0].value, b"v");
    assert_eq!(resp.header.unwrap().revision, 2);
    s.shutdown().unwrap();
}

#[tokio::test]
async fn errors_are_trailers_with_percent_encoded_messages() {
    let (_d, s) = server();
    let r = call(
        s.client_addr(),
        "/etcdserverpb.KV/Nope",
        encode_message(&pb::RangeRequest::default()),
        &[],
    )
    .await;
    assert_eq!(r.status, "12");
    assert_eq!(
        r.message.as_deref(),
        Some("unknown method Nope for service etcdserverpb.KV")
    );
    assert!(r.body.is_empty());

    let empty_key = encode_message(&pb::RangeRequest::default());
    let r = call(s.client_addr(), "/etcdserverpb.KV/Range", empty_key, &[]).await;
    assert_eq!(r.status, "3");
    assert_eq!(
        r.message.as_deref(),
        Some("etcdserver: key is not provided")
    );

    // Compressed flag without an encoding: grpc-go's Internal error.
    let mut framed = encode_message(&pb::RangeRequest::default()).to_vec();
    framed[0] = 1;
    let r = call(
        s.client_addr(),
        "/etcdserverpb.KV/Range",
        framed.into(),
        &[],
    )
    .await;
    assert_eq!(r.status, "13");
    assert_eq!(
        r.message.as_deref(),
        Some("grpc: compressed flag set with identity or empty encoding")
    );

    let r = call(
        s.client_addr(),
        "/etcdserverpb.KV/Range",
        encode_message(&pb::RangeRequest::default()),
        &[("grpc-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, "12");

    // Garbage instead of a protobuf message.
    let r = call(
        s.client_addr(),
        "/etcdserverpb.KV/Range",
        Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]),
        &[],
    )
    .await;
    assert_eq!(r.status, "13");
    s.shutdown().unwrap();
}

#[tokio::test]
async fn grpc_timeout_ends_a_call_with_deadline_exceeded() {
    let (_d, s) = server();
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
        )),
    };
    // A watch never ends by itself; only the deadline can end it here.
    let t = Instant::now();
    let tcp = tokio::net::TcpStream::connect(s.client_addr())
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(format!(
        "http://{}/etcdserverpb.Watch/Watch",
        s.client_addr()
    ))
    .header("content-type", "application/grpc")
    .header("grpc-timeout", "200m")
    .body(())
    .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(encode_message(&create), false).unwrap();
    let (_, mut recv) = resp.await.unwrap().into_parts();
    while let Some(chunk) = recv.data().await {
        let n = chunk.unwrap().len();
        let _ = recv.flow_control().release_capacity(n);
    }
    let trailers = recv.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "4");
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(send);
    s.shutdown().unwrap();
}
