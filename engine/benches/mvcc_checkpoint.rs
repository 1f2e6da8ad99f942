//! How long a checkpoint keeps the caller's thread: `start_checkpoint` +
//! `finish_checkpoint` (the task runs on another thread) against the whole
//! inline `checkpoint()`, for 5,000 pending puts of 256-byte values.
//!
//! `cargo bench -p basalt-engine --bench mvcc_checkpoint`
//! (`CHECKPOINT_ROUNDS`, default 15; `CHECKPOINT_DIR` for the files,
//! default the system temp dir).

use std::time::{Duration, Instant};

use basalt_engine::mvcc::{Op, PutRequest, Store, StoreOptions};

const PUTS: usize = 5_000;
const VALUE_BYTES: usize = 256;

struct Round {
    inline: Duration,
    start: Duration,
    run: Duration,
    finish: Duration,
}

/// Applies `PUTS` puts over a key space 4x larger (mostly new keys, some
/// overwrites), continuing the log at `index`.
fn fill(store: &mut Store, index: &mut u64, seed: u64) {
    let mut x = seed;
    for _ in 0..PUTS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *index += 1;
        let op = Op::Put(PutRequest {
            key: format!(
                "/registry/pods/ns-{:02}/pod-{:06}",
                x % 50,
                (x >> 20) % 20_000
            )
            .into_bytes(),
            value: vec![(x >> 7) as u8; VALUE_BYTES],
            ..Default::default()
        });
        store.apply(*index, &op).expect("apply");
    }
}

fn measure(shards: usize, rounds: usize) -> Vec<Round> {
    let base = std::env::var_os("CHECKPOINT_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let opts = StoreOptions {
        shards,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), opts).expect("open");
    let mut index = 0;
    // Warm up: a store that already holds data, files already grown.
    for seed in 0..3 {
        fill(&mut store, &mut index, seed);
        store.checkpoint().expect("checkpoint");
    }
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds as u64 {
        fill(&mut store, &mut index, 100 + 2 * r);
        let t = Instant::now();
        store.checkpoint().expect("checkpoint");
        let inline = t.elapsed();

        fill(&mut store, &mut index, 101 + 2 * r);
        let t = Instant::now();
        let task = store.start_checkpoint().expect("start").expect("pending");
        let start = t.elapsed();
        let worker = std::thread::spawn(move || {
            let t = Instant::now();
            let done = task.run();
            (done, t.elapsed())
        });
        let (done, run) = worker.join().expect("task thread");
        let t = Instant::now();
        store.finish_checkpoint(done).expect("finish");
        let finish = t.elapsed();
        out.push(Round {
            inline,
            start,
            run,
            finish,
        });
    }
    out
}

fn stats(mut xs: Vec<Duration>) -> String {
    xs.sort();
    let p = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:>9.3?}  p90 {:>9.3?}  max {:>9.3?}",
        p(0.5),
        p(0.9),
        p(1.0)
    )
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent:
    // do one quick round then, to keep the build honest but fast.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching {
        std::env::var("CHECKPOINT_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15)
    } else {
        1
    };
    println!("checkpoint of {PUTS} pending puts of {VALUE_BYTES} B, {rounds} rounds");
    for shards in [1, 4] {
        let rounds = measure(shards, rounds);
        let caller = rounds.iter().map(|r| r.start + r.finish).collect();
        println!("shards={shards}");
        println!(
            "  inline checkpoint()        {}",
            stats(rounds.iter().map(|r| r.inline).collect())
        );
        println!("  caller: start + finish     {}", stats(caller));
        println!(
            "    start_checkpoint         {}",
            stats(rounds.iter().map(|r| r.start).collect())
        );
        println!(
            "    finish_checkpoint        {}",
            stats(rounds.iter().map(|r| r.finish).collect())
        );
        println!(
            "  task.run() (other thread)  {}",
            stats(rounds.iter().map(|r| r.run).collect())
        );
    }
}
