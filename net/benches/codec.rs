//! gRPC codec micro-benchmarks: what one request costs on the wire before
//! and after the store — decoding a framed request, converting it to the
//! engine's types, and encoding a response (one key, and a 1,000-key LIST
//! page of 1 KiB values, the shape kube-apiserver pages through).
//!
//! `cargo bench -p basalt-net --bench codec`

use basalt_engine::mvcc as m;
use basalt_net::grpc::{encode_message, Deframer};
use basalt_net::proto::etcdserverpb as pb;
use basalt_net::wire;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;

fn header() -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 1_000_000,
        raft_term: 3,
    }
}

fn kvs(n: usize, value_len: usize) -> Vec<m::KeyValue> {
    (0..n)
        .map(|i| m::KeyValue {
            key: format!("/registry/pods/default/pod-{i:06}").into_bytes(),
            create_revision: 10 + i as i64,
            mod_revision: 20 + i as i64,
            version: 2,
            value: vec![b'v'; value_len],
            lease: 0,
        })
        .collect()
}

fn range_response(n: usize, value_len: usize) -> m::RangeResponse {
    m::RangeResponse {
        kvs: kvs(n, value_len),
        more: true,
        count: 150_000,
    }
}

fn decode_put(c: &mut Criterion) {
    let req = pb::PutRequest {
        key: b"bench-key0".to_vec(),
        value: vec![b'v'; 256],
        ..Default::default()
    };
    let framed = encode_message(&req);
    let mut g = c.benchmark_group("codec_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_request_256B_deframe_decode_convert", |b| {
        let mut deframer = Deframer::new(2 * 1024 * 1024);
        b.iter(|| {
            deframer.push(&framed);
            let msg = deframer
                .next_message()
                .expect("frame")
                .expect("whole message");
            let put = pb::PutRequest::decode(msg).expect("decode");
            wire::put_request(&put)
        })
    });
    g.finish();
}

fn encode_responses(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_encode");
    for (label, n, value_len) in [
        ("range_1_key_256B", 1, 256),
        ("range_1000_keys_1KiB", 1000, 1024),
    ] {
        let resp = range_response(n, value_len);
        let bytes = encode_message(&wire::range_response(resp.clone(), &header())).len();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(label, |b| {
            b.iter_batched(
                || resp.clone(),
                |r| encode_message(&wire::range_response(r, &header())),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decode_put, encode_responses);
criterion_main!(benches);
