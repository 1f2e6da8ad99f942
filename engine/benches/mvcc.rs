//! MVCC store micro-benchmarks: the sequencer's apply path and the read
//! paths whose cost etcd gets wrong (`count` with `limit` scans the whole
//! range in etcd; here it is the B+tree's O(log n) count at the current
//! revision, corrected by the changes since at a recent past revision, and a
//! scan only at revisions with more changes since than keys in the range).
//!
//! `cargo bench -p basalt-engine --bench mvcc`

use std::hint::black_box;

use basalt_engine::mvcc::{Op, PutRequest, RangeRequest, Store, StoreOptions};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

const KEYS: u64 = 100_000;
const VALUE: [u8; 256] = [7; 256];

fn key(i: u64) -> Vec<u8> {
    format!("/registry/pods/ns/{i:08}").into_bytes()
}

fn put(i: u64) -> Op {
    Op::Put(PutRequest {
        key: key(i),
        value: VALUE.to_vec(),
        ..Default::default()
    })
}

/// A store with `KEYS` keys, each written twice (so history exists), checkpointed.
fn loaded(dir: &std::path::Path) -> Store {
    let mut store = Store::open(dir, StoreOptions::default()).unwrap();
    let mut index = 0;
    for round in 0..2 {
        for i in 0..KEYS {
            index += 1;
            store.apply(index, &put(i)).unwrap();
            if index % 10_000 == 0 {
                store.checkpoint().unwrap();
            }
        }
        let _ = round;
    }
    store.checkpoint().unwrap();
    store
}

fn apply_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("mvcc_apply");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("put_1000_then_checkpoint", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut index = 0u64;
        b.iter(|| {
            for _ in 0..1000 {
                index += 1;
                black_box(store.apply(index, &put(index % KEYS)).unwrap());
            }
            store.checkpoint().unwrap();
        });
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = loaded(dir.path());
    let current = store.current_revision();
    let mut g = c.benchmark_group("mvcc_range");
    g.bench_function("get_one_key", |b| {
        let mut i = 0u64;
        b.iter_batched(
            || {
                i = (i + 7919) % KEYS;
                RangeRequest {
                    key: key(i),
                    ..Default::default()
                }
            },
            |req| black_box(store.range(&req).unwrap()),
            BatchSize::SmallInput,
        );
    });
    let prefix = RangeRequest {
        key: b"/registry/pods/".to_vec(),
        range_end: b"/registry/pods0".to_vec(),
        limit: 10,
        ..Default::default()
    };
    // "recent": one change since (the delta count); "old": every key changed
    // since (falls back to scanning the range, as etcd always does).
    for (name, revision) in [
        ("current", 0),
        ("recent", current - 1),
        ("old", current - KEYS as i64),
    ] {
        g.bench_with_input(
            BenchmarkId::new("limit10_with_count_of_100k", name),
            &revision,
            |b, &revision| {
                let req = RangeRequest {
                    revision,
                    ..prefix.clone()
                };
                b.iter(|| {
                    let r = store.range(&req).unwrap();
                    assert_eq!(r.count, KEYS as i64);
                    black_box(r)
                });
            },
        );
    }
    g.bench_function("count_only_100k", |b| {
        let req = RangeRequest {
            count_only: true,
            ..prefix.clone()
        };
        b.iter(|| black_box(store.range(&req).unwrap()));
    });
    g.finish();
}

/// `count` between checkpoints: 20k applied writes not yet in the tree.
fn count_with_pending(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = loaded(dir.path());
    let mut index = 2 * KEYS;
    for i in 0..20_000 {
        index += 1;
        // half overwrite existing keys, half add new ones
        store
            .apply(index, &put(if i % 2 == 0 { i } else { KEYS + i }))
            .unwrap();
    }
    let req = RangeRequest {
        key: b"/registry/pods/".to_vec(),
        range_end: b"/registry/pods0".to_vec(),
        count_only: true,
        ..Default::default()
    };
    assert_eq!(store.range(&req).unwrap().count, KEYS as i64 + 10_000);
    c.bench_function("mvcc_range/count_only_100k_with_20k_pending", |b| {
        b.iter(|| black_box(store.range(&req).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = apply_put, reads, count_with_pending
}
criterion_main!(benches);
