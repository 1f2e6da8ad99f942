//! B+tree micro-benchmarks: point get, range scan, batched inserts with their
//! commit (fdatasync included), `count` over a large range next to a scan
//! of the same range, and the CPU time of a checkpoint-sized commit.
//!
//! `cargo bench -p basalt-engine --bench btree`; the tree size is
//! `BTREE_BENCH_KEYS` (default 1,000,000 keys of 16 bytes, 100-byte values).
//! The tree file lives in `BTREE_BENCH_DIR` (default: the system temp dir).

use std::hint::black_box;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use basalt_engine::btree::{Tree, TreeOptions};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const VALUE_LEN: usize = 100;

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"k/0000000000000\0";
    k[2..16].copy_from_slice(format!("{i:014}").as_bytes());
    k
}

/// A cheap deterministic permutation of 0..n (2654435761 is prime, so it is
/// coprime with any smaller n).
fn scatter(i: u64, n: u64) -> u64 {
    (i.wrapping_mul(2_654_435_761)) % n
}

fn keys_in_tree() -> u64 {
    std::env::var("BTREE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("BTREE_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("temp dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// Builds the tree in batches of 100k keys (even keys only, so inserts of odd
/// keys land between existing ones).
fn build(n: u64) -> (tempfile::TempDir, Tree) {
    let dir = bench_dir();
    let mut tree = Tree::open(&dir.path().join("bench.tree"), TreeOptions::default()).unwrap();
    let value = [7u8; VALUE_LEN];
    let mut i = 0;
    while i < n {
        let mut b = tree.write();
        for j in i..(i + 100_000).min(n) {
            b.insert(&key(2 * j), &value).unwrap();
        }
        b.commit(i).unwrap();
        i += 100_000;
    }
    (dir, tree)
}

fn benches(c: &mut Criterion) {
    let n = keys_in_tree();
    let (_dir, mut tree) = build(n);
    let snap = tree.read();
    let mut g = c.benchmark_group("btree");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut i = 0u64;
    // Keys made up front, so the loop measures only the lookup.
    let probes: Vec<[u8; 16]> = (0..65_536).map(|j| key(2 * scatter(j, n))).collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("get_hit/{n}"), |b| {
        b.iter(|| {
            i += 1;
            let k = &probes[i as usize % probes.len()];
            black_box(snap.get_ref(k).unwrap().map(<[u8]>::len))
        })
    });

    const SCAN: u64 = 10_000;
    g.throughput(Throughput::Elements(SCAN));
    g.bench_function(format!("range_scan_{SCAN}/{n}"), |b| {
        b.iter(|| {
            i += 1;
            let start = key(2 * scatter(i, n.saturating_sub(SCAN).max(1)));
            let mut it = snap.range(Bound::Included(&start), Bound::Unbounded);
            let mut bytes = 0;
            for _ in 0..SCAN {
                match it.next_ref() {
                    Some(Ok((k, v))) => bytes += k.len() + v.len(),
                    _ => break,
                }
            }
            black_box(bytes)
        })
    });

    let (lo, hi) = (key(n / 4), key(n / 4 * 3)); // about half the keys
    let in_range = snap
        .count(Bound::Included(&lo), Bound::Excluded(&hi))
        .unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("count_{in_range}_keys/{n}"), |b| {
        b.iter(|| {
            black_box(
                snap.count(Bound::Included(&lo), Bound::Excluded(&hi))
                    .unwrap(),
            )
        })
    });
    g.sample_size(10);
    g.throughput(Throughput::Elements(in_range));
    g.bench_function(format!("scan_to_count_{in_range}_keys/{n}"), |b| {
        b.iter(|| {
            let mut it = snap.range(Bound::Included(&lo), Bound::Excluded(&hi));
            let mut count = 0u64;
            while let Some(e) = it.next_ref() {
                e.unwrap();
                count += 1;
            }
            black_box(count)
        })
    });

    drop(snap);
    g.sample_size(20);
    // The physical limit of a durable commit, for comparison: one 4 KiB
    // positional overwrite of a pre-written file plus fdatasync.
    let raw_path = _dir.path().join("raw");
    std::fs::write(&raw_path, vec![0u8; 1 << 20]).unwrap();
    let raw = std::fs::OpenOptions::new()
        .write(true)
        .open(&raw_path)
        .unwrap();
    raw.sync_all().unwrap();
    let block = [5u8; 4096];
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_pwrite_4KiB_fdatasync", |b| {
        let mut at = 0u64;
        b.iter(|| {
            at = (at + 4096) % (1 << 20);
            raw.write_all_at(&block, at).unwrap();
            raw.sync_data().unwrap();
        })
    });
    let value = [9u8; VALUE_LEN];
    let mut next = 0u64;
    for batch in [1u64, 100, 10_000] {
        g.throughput(Throughput::Elements(batch));
        g.bench_function(format!("insert_commit_batch_{batch}/{n}"), |b| {
            b.iter_batched(
                || {
                    let keys: Vec<[u8; 16]> = (0..batch)
                        .map(|_| {
                            next += 1;
                            key(2 * scatter(next, n) + 1)
                        })
                        .collect();
                    keys
                },
                |keys| {
                    let mut w = tree.write();
                    for k in &keys {
                        w.insert(k, &value).unwrap();
                    }
                    w.commit(0).unwrap();
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Thread CPU time: what a commit takes from the cores, without the waits
/// for the disk and the neighbours' scheduling that dominate wall time here.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// An MVCC-shaped key: a user key from 20,000 like Kubernetes pods, then an
/// 8-byte big-endian revision.
fn version_key(x: u64, revision: u64) -> Vec<u8> {
    let mut k = format!(
        "/registry/pods/ns-{:02}/pod-{:06}",
        x % 50,
        (x >> 20) % 20_000
    )
    .into_bytes();
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// What one shard-tree commit of a server checkpoint does: 5,000 new
/// versions of 256 B, inserted in key order (the overlay is sorted), into a
/// tree of `CHECKPOINT_BENCH_KEYS` versions (default 150,000), then
/// committed. Reports thread CPU time (`iter_custom`), fdatasync included.
fn checkpoint_commit(c: &mut Criterion) {
    const BATCH: u64 = 5_000;
    let n: u64 = std::env::var("CHECKPOINT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150_000);
    let dir = bench_dir();
    let mut tree = Tree::open(&dir.path().join("versions.tree"), TreeOptions::default()).unwrap();
    let mut x = 1u64;
    let mut revision = 0u64;
    let mut next_batch = || {
        let mut keys: Vec<Vec<u8>> = (0..BATCH)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                revision += 1;
                version_key(x, revision)
            })
            .collect();
        keys.sort_unstable();
        keys
    };
    let value = [5u8; 256];
    for _ in 0..n / BATCH {
        let mut w = tree.write();
        for k in next_batch() {
            w.insert(&k, &value).unwrap();
        }
        w.commit(0).unwrap();
    }
    let mut g = c.benchmark_group("btree");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function(format!("checkpoint_commit_{BATCH}x256B_cpu/{n}"), |b| {
        b.iter_custom(|iters| {
            let mut cpu = Duration::ZERO;
            for _ in 0..iters {
                let keys = next_batch();
                let t = thread_cpu();
                let mut w = tree.write();
                for k in &keys {
                    w.insert(k, &value).unwrap();
                }
                w.commit(0).unwrap();
                cpu += thread_cpu() - t;
            }
            cpu
        })
    });
    g.finish();
}

criterion_group!(btree, benches, checkpoint_commit);
criterion_main!(btree);
