//! Durability of acknowledged writes across kill -9 and clean restarts.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use support::{Kind, Server};

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    writers_then_kill_9(&[]).await;
}

/// Checkpoints every 20 entries on two executors (two shard trees): the
/// kill lands while background checkpoints run, possibly between a shard
/// tree's commit and the index tree's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_during_checkpoints() {
    writers_then_kill_9(&["--snapshot-count", "20", "--cores", "2"]).await;
}

/// `--wal-dir` puts the WAL in a directory of its own (etcd's dedicated
/// WAL disk); writes acknowledged before a kill -9 are read back from it.
/// Fails if the flag is ignored (the WAL lands in the data dir).
#[tokio::test]
async fn acknowledged_writes_survive_kill_9_with_a_wal_dir() {
    let wal = tempfile::tempdir().unwrap();
    let wal_dir = wal.path().join("wal");
    let flag = format!("--wal-dir={}", wal_dir.display());
    let server = writers_then_kill_9(&[&flag]).await;
    let segments = std::fs::read_dir(&wal_dir).unwrap().count();
    assert!(segments > 0, "nothing in --wal-dir");
    assert!(server.data_dir().join("member/store").exists());
    assert!(
        !server.data_dir().join("member/wal").exists(),
        "a WAL in the data dir despite --wal-dir"
    );
}

/// Runs writers, kills the server with -9, restarts it with the same
/// flags and checks every acknowledged write; returns the restarted server.
async fn writers_then_kill_9(extra: &[&str]) -> Server {
    let server = Server::start_with(Kind::Basalt, extra).await;
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut c = server.client().await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w}/k{i:05}");
                match c.put(key.clone(), format!("value-{i}"), None).await {
                    Ok(r) => acked
                        .lock()
                        .unwrap()
                        .push((key, r.header().map(|h| h.revision()).unwrap_or(0))),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = server.restart(extra).await;
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few writes acknowledged before the kill: {}",
        acked.len()
    );
    let mut c = server.client().await;
    let all = c
        .get("w", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get after restart");
    let present: std::collections::HashMap<Vec<u8>, i64> = all
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
        .collect();
    for (key, rev) in &acked {
        assert_eq!(
            present.get(key.as_bytes()),
            Some(rev),
            "acknowledged write {key}@{rev} lost after kill -9"
        );
    }
    // Every key is distinct and the start probe only reads, so each revision
    // after the initial 1 is exactly one put: nothing lost, nothing half-applied.
    let max_rev = all.header().map(|h| h.revision()).unwrap_or(0);
    assert_eq!(
        max_rev as usize,
        all.kvs().len() + 1,
        "revisions and keys disagree"
    );
    server
}

#[tokio::test]
async fn clean_shutdown_and_restart_keeps_everything() {
    let mut server = Server::start(Kind::Basalt).await;
    let mut c = server.client().await;
    for i in 0..200 {
        c.put(format!("k{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    c.delete("k000", None).await.expect("delete");
    c.compact(50, None).await.expect("compact");
    let before = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    drop(c);
    assert!(
        server.terminate(),
        "basalt did not exit 0 on SIGTERM:\n{}",
        server.log()
    );
    let server = server.restart(&[]).await;
    let mut c = server.client().await;
    let after = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get after restart");
    assert_eq!(format!("{:?}", before.kvs()), format!("{:?}", after.kvs()));
    assert_eq!(
        before.header().map(|h| h.revision()),
        after.header().map(|h| h.revision())
    );
    let err = c
        .get("k001", Some(GetOptions::new().with_revision(10)))
        .await
        .expect_err("compacted");
    assert!(
        support::describe_error(&err).contains("required revision has been compacted"),
        "{err}"
    );
}
