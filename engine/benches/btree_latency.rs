//! Commit latency distributions, printed as markdown tables:
//! 1. a single-key commit against the raw limit (4 KiB overwrite of a
//!    pre-written file + fdatasync), the two alternating so both see the same
//!    disk weather;
//! 2. online space reclamation beside a write load: commits of 10 random
//!    inserts without and with a compaction copying the tree on another
//!    thread, the writer's bounded catch-up steps between its commits, and
//!    how long it waits to switch files.
//!
//! `cargo bench -p basalt-engine --bench btree_latency`; tree size from
//! `BTREE_BENCH_KEYS` (default 1,000,000), directory from `BTREE_BENCH_DIR`,
//! pairs from `BTREE_BENCH_PAIRS` (default 1000; 0 skips part 1). Not a criterion bench: it
//! measures distributions, under a concurrent background job for (2).

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use basalt_engine::btree::{Tree, TreeOptions};

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"k/0000000000000\0";
    k[2..16].copy_from_slice(format!("{i:014}").as_bytes());
    k
}

fn commit_some(tree: &mut Tree, next: &mut u64, n: u64, keys: u64) -> Duration {
    let start = Instant::now();
    let mut b = tree.write();
    for _ in 0..keys {
        *next += 1;
        b.insert(
            &key((next.wrapping_mul(2_654_435_761)) % (2 * n)),
            &[3u8; 100],
        )
        .unwrap();
    }
    b.commit(*next).unwrap();
    start.elapsed()
}

/// Keys per commit of the write load beside the compaction.
const KEYS_PER_COMMIT: u64 = 10;
/// Commits timed before the compaction starts and after it switches.
const COMMITS_BEFORE_AND_AFTER: usize = 300;
/// Most keys one catch-up step copies: a few commits' worth, so a step costs
/// about one commit and the backlog still shrinks by 30 keys per round.
const CATCH_UP_KEYS: usize = 4 * KEYS_PER_COMMIT as usize;
/// Bound on catch-up rounds (the backlog is a few thousand keys).
const MAX_CATCH_UP_STEPS: usize = 2000;

fn summary(name: &str, mut lat: Vec<Duration>) {
    if lat.is_empty() {
        println!("| {name} | 0 | – | – | – |");
        return;
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} |",
        lat.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists targets; nothing to list here.
    }
    let n: u64 = std::env::var("BTREE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = match std::env::var_os("BTREE_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let mut tree = Tree::open(&dir.path().join("reclaim.tree"), TreeOptions::default()).unwrap();
    let mut i = 0;
    while i < n {
        let mut b = tree.write();
        for j in i..(i + 100_000).min(n) {
            b.insert(&key(2 * j), &[7u8; 100]).unwrap();
        }
        b.commit(0).unwrap();
        i += 100_000;
    }
    let mut next = 0;
    let pairs: usize = std::env::var("BTREE_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let raw_path = dir.path().join("raw");
    std::fs::write(&raw_path, vec![0u8; 1 << 20]).unwrap();
    let raw = std::fs::OpenOptions::new()
        .write(true)
        .open(&raw_path)
        .unwrap();
    raw.sync_all().unwrap();
    let (mut raw_lat, mut one_lat) = (Vec::new(), Vec::new());
    for p in 0..pairs as u64 {
        let t = Instant::now();
        raw.write_all_at(&[5u8; 4096], (p * 4096) % (1 << 20))
            .unwrap();
        raw.sync_data().unwrap();
        raw_lat.push(t.elapsed());
        one_lat.push(commit_some(&mut tree, &mut next, n, 1));
    }
    if pairs > 0 {
        println!("| paired, {pairs} × each, alternating | count | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|");
        summary("raw 4 KiB pwrite + fdatasync (overwrite)", raw_lat);
        summary("commit of 1 random insert", one_lat);
        println!();
    }

    let baseline: Vec<Duration> = (0..COMMITS_BEFORE_AND_AFTER)
        .map(|_| commit_some(&mut tree, &mut next, n, KEYS_PER_COMMIT))
        .collect();

    let before = (tree.file_bytes(), tree.live_bytes());
    let job = tree.begin_compaction().unwrap();
    let build_start = Instant::now();
    let copier = std::thread::spawn(move || job.build());
    let mut during = Vec::new();
    while !copier.is_finished() {
        during.push(commit_some(&mut tree, &mut next, n, KEYS_PER_COMMIT));
    }
    let build_time = build_start.elapsed();
    let mut copy = copier.join().unwrap().unwrap();
    let backlog = tree.compaction_backlog();
    // The writer drains the backlog in bounded steps between its own commits
    // (as the sequencer does), then switches right after a step that left
    // nothing behind, so the switch has no delta to copy.
    let (mut catching, mut steps) = (Vec::new(), Vec::new());
    while tree.compaction_backlog() > 0 && steps.len() < MAX_CATCH_UP_STEPS {
        catching.push(commit_some(&mut tree, &mut next, n, KEYS_PER_COMMIT));
        let t = Instant::now();
        tree.catch_up_at_most(&mut copy, CATCH_UP_KEYS).unwrap();
        steps.push(t.elapsed());
    }
    let left = tree.compaction_backlog();
    let t = Instant::now();
    tree.finish_compaction(copy).unwrap();
    let finish = t.elapsed();
    let switched_bytes = tree.file_bytes();
    // The first commit after the switch is listed on its own: it is the one
    // that may wait for the switch's directory sync.
    let first_after = commit_some(&mut tree, &mut next, n, KEYS_PER_COMMIT);
    let after: Vec<Duration> = (0..COMMITS_BEFORE_AND_AFTER)
        .map(|_| commit_some(&mut tree, &mut next, n, KEYS_PER_COMMIT))
        .collect();

    println!("| commits of {KEYS_PER_COMMIT} random inserts | count | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    summary("no compaction", baseline);
    summary("while the copy runs", during);
    summary("between catch-up steps", catching);
    summary(
        &format!("catch-up steps (writer pauses, ≤ {CATCH_UP_KEYS} keys)"),
        steps,
    );
    summary("after the switch", after);
    println!();
    println!(
        "tree: {n} keys; file {} MiB (live {} MiB) before, {} MiB right after the switch",
        before.0 >> 20,
        before.1 >> 20,
        switched_bytes >> 20
    );
    println!(
        "copy on another thread: {:.2} s; backlog then {backlog} keys ({left} left at the switch); \
         switch (finish_compaction, the writer's wait) {:.2} ms; first commit after it {:.2} ms",
        build_time.as_secs_f64(),
        finish.as_secs_f64() * 1e3,
        first_after.as_secs_f64() * 1e3
    );
}
