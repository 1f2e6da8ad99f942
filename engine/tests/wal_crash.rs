//! `kill -9` crash test: a child process appends with many concurrent tasks
//! and prints every index whose append resolved; the parent SIGKILLs it
//! mid-run, reopens the WAL and checks that every printed index is there.
//!
//! The child is this same test binary, re-run with only `crash_child`
//! selected and the WAL directory in `CHILD_DIR_ENV`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use basalt_engine::wal::{Entry, EntryKind, Wal, WalOptions};

const CHILD_DIR_ENV: &str = "BASALT_WAL_CRASH_CHILD_DIR";

fn opts() -> WalOptions {
    // Small segments so the run crosses several rollovers.
    WalOptions {
        segment_bytes: 256 << 10,
        max_batch_bytes: 64 << 10,
        ..WalOptions::default()
    }
}

fn entry(index: u64) -> Entry {
    let len = 50 + (index % 13) as usize * 40;
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: (0..len).map(|i| (index as usize * 31 + i) as u8).collect(),
    }
}

fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .expect("executor starts")
}

/// The child: appends until killed (or a safety limit), printing acks.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    executor().run(async move {
        let (wal, _) = Wal::open(Path::new(&dir), opts()).await.unwrap();
        let wal = Rc::new(wal);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let wal = Rc::clone(&wal);
            tasks.push(glommio::spawn_local(async move {
                while Instant::now() < deadline {
                    let index = wal.last_index() + 1;
                    wal.append(&[entry(index)]).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {index}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_entry() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        let want = 300 + round * 250;
        while (acked.len() as u64) < want {
            let Some(line) = lines.next() else { break };
            if let Some(i) = line.unwrap().strip_prefix("ack ") {
                acked.push(i.parse::<u64>().unwrap());
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Acks printed before the kill landed are still in the pipe.
        for line in lines {
            if let Some(i) = line.unwrap().strip_prefix("ack ") {
                acked.push(i.parse::<u64>().unwrap());
            }
        }
        child.wait().unwrap();
        assert!(
            acked.len() as u64 >= want,
            "child died early: {} acks",
            acked.len()
        );
        acked_total += acked.len();

        let d = dir.path().to_path_buf();
        executor().run(async move {
            let (wal, rec) = Wal::open(&d, opts()).await.unwrap();
            let last = wal.last_index();
            eprintln!(
                "round {round}: {} acks, max acked {:?}, recovered up to {last}, torn tail cut: {}",
                acked.len(),
                acked.iter().max(),
                rec.torn_tail_cut
            );
            for i in &acked {
                assert!(
                    *i <= last,
                    "round {round}: acked index {i} lost (last {last})"
                );
            }
            assert_eq!(rec.entries.len() as u64, last, "log is contiguous from 1");
            for (k, e) in rec.entries.iter().enumerate() {
                assert_eq!(
                    *e,
                    entry(k as u64 + 1),
                    "round {round}: entry {} damaged",
                    k + 1
                );
            }
            wal.close().await.unwrap();
        });
    }
    assert!(acked_total > 1000);
}
