//! Reading the WAL back: `Wal::entries` over 100k entries of 256 B spread
//! across several segments, after a reopen that kept only the index (what
//! a leader does when a follower lags). A plain timing loop, not criterion:
//! one pass is tens of milliseconds and the numbers wanted are throughput.
//!
//! `cargo bench -p basalt-engine --bench wal_read`
//! (`WAL_READ_BENCH_DIR` picks the file system: a temporary directory is
//! made in it; default: the system's temporary directory).

use std::time::{Duration, Instant};

use basalt_engine::wal::{Entry, EntryKind, Wal, WalOptions};

const ENTRIES: u64 = 100_000;
const DATA_BYTES: usize = 256;
/// Raft's default `max_size_per_msg` in basalt: one append message's worth.
const READ_BUDGET: u64 = 1 << 20;
const PASSES: usize = 7;

fn opts() -> WalOptions {
    WalOptions {
        // ~29 MB of records in 4 MiB segments: 8 files.
        segment_bytes: 4 << 20,
        materialize_recovered: false,
        ..WalOptions::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn bench(dir: &std::path::Path) {
    let (wal, _) = Wal::open(dir, opts()).await.unwrap();
    let mut batch = Vec::with_capacity(1000);
    for index in 1..=ENTRIES {
        batch.push(Entry {
            term: 1 + index / 30_000,
            index,
            kind: EntryKind::Normal,
            data: vec![(index % 251) as u8; DATA_BYTES],
        });
        if batch.len() == 1000 {
            wal.append(&batch).await.unwrap();
            batch.clear();
        }
    }
    wal.close().await.unwrap();

    let started = Instant::now();
    let (wal, _) = Wal::open(dir, opts()).await.unwrap();
    let reopen = started.elapsed();
    let segments = wal.segment_paths().len();
    println!(
        "wal_read: {ENTRIES} entries x {DATA_BYTES} B in {segments} segments; reopen (index only) {:.1} ms",
        reopen.as_secs_f64() * 1e3
    );

    // Whole log, in calls of one append message's budget.
    let mut scans = Vec::new();
    let mut calls = 0;
    for _ in 0..PASSES {
        let t = Instant::now();
        let mut lo = 1;
        calls = 0;
        while lo <= ENTRIES {
            let got = wal.entries(lo, ENTRIES + 1, READ_BUDGET).unwrap();
            assert_eq!(got[0].index, lo);
            lo += got.len() as u64;
            calls += 1;
        }
        scans.push(t.elapsed());
    }
    let best = *scans.iter().min().unwrap();
    let med = median(scans);
    let rate = |d: Duration| ENTRIES as f64 / d.as_secs_f64();
    let mbps = |d: Duration| (ENTRIES as usize * DATA_BYTES) as f64 / d.as_secs_f64() / 1e6;
    println!(
        "wal_read: scan in {calls} calls of <= 1 MiB: median {:.1} ms = {:.2} M entries/s ({:.0} MB/s of data); best {:.1} ms = {:.2} M entries/s",
        med.as_secs_f64() * 1e3,
        rate(med) / 1e6,
        mbps(med),
        best.as_secs_f64() * 1e3,
        rate(best) / 1e6
    );

    // One entry at a time, scattered (a follower probing for its match).
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = 1 + x % ENTRIES;
        let got = wal.entries(i, i + 1, 0).unwrap();
        assert_eq!(got[0].index, i);
    }
    let each = t.elapsed() / n;
    println!(
        "wal_read: single scattered entry: {:.2} us per call",
        each.as_secs_f64() * 1e6
    );

    let t = Instant::now();
    let mut sum = 0u64;
    for i in 1..=ENTRIES {
        sum = sum.wrapping_add(wal.term(i).unwrap());
    }
    let each = t.elapsed() / ENTRIES as u32;
    println!(
        "wal_read: term(): {:.0} ns per call (checksum {sum})",
        each.as_secs_f64() * 1e9
    );
    wal.close().await.unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then a smoke run is not wanted.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tmp = match std::env::var_os("WAL_READ_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let dir = tmp.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { bench(&dir).await })
        .unwrap()
        .join()
        .unwrap();
}
