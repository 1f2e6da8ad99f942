//! Page reuse: what reopening costs now that it rebuilds the free pages by a
//! walk of the tree (every branch read, every leaf's header touched), next to
//! the size of the file; and single-key overwrite commits (fdatasync
//! included) on a tree whose commits reuse pages, with the file's
//! high-water mark reported before and after.
//!
//! `cargo bench -p basalt-engine --bench btree_reuse`; the tree size is
//! `BTREE_BENCH_KEYS` (default 1,000,000 keys of 16 bytes, 100-byte values),
//! in `BTREE_BENCH_DIR` (default: the system temp dir).

use std::hint::black_box;
use std::time::Duration;

use basalt_engine::btree::{Tree, TreeOptions};
use criterion::{criterion_group, criterion_main, Criterion};

fn key(i: u64) -> Vec<u8> {
    format!("k/{i:014}").into_bytes()
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

fn reuse(c: &mut Criterion) {
    let n = keys_in_tree();
    let dir = bench_dir();
    let path = dir.path().join("bench.tree");
    let mut tree = Tree::open(&path, TreeOptions::default()).unwrap();
    let value = [7u8; 100];
    for start in (0..n).step_by(100_000) {
        let mut b = tree.write();
        for i in start..(start + 100_000).min(n) {
            b.insert(&key(i), &value).unwrap();
        }
        b.commit(start).unwrap();
    }
    // Garbage to find: rewrite a tenth of the keys, a batch at a time.
    for start in (0..n).step_by(10_000).take(10) {
        let mut b = tree.write();
        for i in (start..start + 1000).map(|i| i * 7 % n) {
            b.insert(&key(i), &[9u8; 100]).unwrap();
        }
        b.commit(n + start).unwrap();
    }
    eprintln!(
        "tree: {n} keys, {} MiB in use, {} MiB live, {} MiB free",
        tree.committed_bytes() >> 20,
        tree.live_bytes() >> 20,
        tree.free_bytes() >> 20
    );
    drop(tree);

    let mut g = c.benchmark_group("btree_reuse");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("open (free-page walk, page cache warm)", |b| {
        b.iter(|| black_box(Tree::open(&path, TreeOptions::default()).unwrap()))
    });

    let mut tree = Tree::open(&path, TreeOptions::default()).unwrap();
    let before = tree.committed_bytes();
    let mut i = 0u64;
    g.bench_function("overwrite one key + commit (reusing pages)", |b| {
        b.iter(|| {
            i += 1;
            let mut batch = tree.write();
            batch.insert(&key(i * 7919 % n), &value).unwrap();
            batch.commit(2 * n + i).unwrap();
        })
    });
    g.finish();
    eprintln!(
        "after {i} single-key commits: {} MiB in use (was {} MiB)",
        tree.committed_bytes() >> 20,
        before >> 20
    );
}

criterion_group!(benches, reuse);
criterion_main!(benches);
