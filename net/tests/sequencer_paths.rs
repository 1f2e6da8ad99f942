//! What the sequencer does with requests that need no log entry (read-only
//! txns) and with work that must not stop writes (defragmentation), seen
//! through a real etcd client against an in-process server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_net::{Config, ServerHandle};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

struct TestServer {
    handle: Option<ServerHandle>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::for_test(dir.path());
        tweak(&mut cfg);
        let handle = basalt_net::start(cfg).expect("server starts");
        TestServer {
            handle: Some(handle),
            _dir: dir,
        }
    }

    async fn client(&self) -> Client {
        let url = self.handle.as_ref().expect("running").client_url();
        Client::connect([url], None).await.expect("connect")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// The WAL's last index, as Maintenance.Status reports it.
async fn wal_index(c: &mut Client) -> u64 {
    c.status().await.expect("status").raft_index()
}

#[tokio::test]
async fn read_only_txn_is_not_logged_and_answers_as_before() {
    let s = TestServer::start();
    let mut c = s.client().await;
    c.put("a", "1", None).await.unwrap();
    c.put("b", "2", None).await.unwrap();
    let before = wal_index(&mut c).await;
    let revision = c.get("a", None).await.unwrap().header().unwrap().revision();

    let nested = Txn::new()
        .when([Compare::version("b", CompareOp::Equal, 1)])
        .and_then([TxnOp::get("b", None)]);
    let read = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1")])
        .and_then([
            TxnOp::get("", Some(GetOptions::new().with_all_keys())),
            TxnOp::txn(nested),
        ])
        .or_else([TxnOp::get("b", None)]);
    let r = c.txn(read.clone()).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), revision);
    let ops = r.op_responses();
    let TxnOpResponse::Get(all) = &ops[0] else {
        panic!("expected a range response, got {:?}", ops[0]);
    };
    assert_eq!(all.kvs().len(), 2);
    let TxnOpResponse::Txn(inner) = &ops[1] else {
        panic!("expected a txn response, got {:?}", ops[1]);
    };
    assert!(inner.succeeded());
    // The failure branch too, and a read-only txn's error.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "no")])
                .or_else([TxnOp::get("b", None)]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded());
    let TxnOpResponse::Get(b) = &r.op_responses()[0] else {
        panic!("expected a range response");
    };
    assert_eq!(b.kvs()[0].value(), b"2");
    let future = Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(99)))]);
    assert!(c.txn(future).await.is_err());
    assert_eq!(
        wal_index(&mut c).await,
        before,
        "read-only txns logged nothing"
    );

    // A txn that writes still goes through the log, and the read-only one
    // sees its effect at once.
    let write = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("a", "2", None)]);
    let w = c.txn(write).await.unwrap();
    assert!(w.succeeded());
    assert_eq!(wal_index(&mut c).await, before + 1);
    let r = c.txn(read).await.unwrap();
    assert!(
        !r.succeeded(),
        "the compare sees the write just acknowledged"
    );
    assert_eq!(
        r.header().unwrap().revision(),
        w.header().unwrap().revision()
    );
}

/// Puts `count` keys `{prefix}{i:05}` from `tasks` concurrent clients.
async fn fill(c: &Client, prefix: &str, count: usize, tasks: usize) {
    let mut joins = Vec::new();
    for t in 0..tasks {
        let mut c = c.clone();
        let prefix = prefix.to_owned();
        joins.push(tokio::spawn(async move {
            for i in (t..count).step_by(tasks) {
                c.put(format!("{prefix}{i:05}"), vec![b'v'; 512], None)
                    .await
                    .expect("fill put");
            }
        }));
    }
    for j in joins {
        j.await.expect("fill task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_on_during_defragment_and_nothing_is_lost() {
    // Frequent checkpoints: the copy has committed keys to catch up on.
    let s = TestServer::start_with(|cfg| {
        cfg.snapshot_count = 20;
        cfg.checkpoint_interval = Duration::from_millis(5);
    });
    let mut c = s.client().await;
    fill(&c, "k", 2000, 16).await;
    fill(&c, "k", 1000, 16).await; // overwrites leave dead versions
    let compact_at = c.status().await.unwrap().header().unwrap().revision();
    c.compact(compact_at, None).await.unwrap();
    let all_k = GetOptions::new().with_prefix();
    let before = c.get("k", Some(all_k.clone())).await.unwrap();
    assert_eq!(before.kvs().len(), 2000);
    let size_before = c.status().await.unwrap().db_size();

    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4 {
        let (mut c, done) = (c.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            // At least a few writes each, and on until the defrag answered.
            while written.len() < 5 || !done.load(Ordering::Acquire) {
                let key = format!("w{t}-{:05}", written.len());
                let issued = Instant::now();
                let r = c.put(key.clone(), key.clone(), None).await;
                let r = r.map(|r| r.header().unwrap().revision());
                written.push((key, r, issued, Instant::now()));
            }
            written
        }));
    }
    let started = Instant::now();
    c.defragment().await.expect("defragment");
    let ended = Instant::now();
    done.store(true, Ordering::Release);
    let mut revisions = Vec::new();
    let mut during = 0;
    for w in writers {
        for (key, r, issued, acknowledged) in w.await.expect("writer") {
            if issued > started && acknowledged < ended {
                during += 1;
            }
            let revision = r.unwrap_or_else(|e| panic!("put {key} during defrag: {e}"));
            revisions.push(revision);
            let got = c.get(key.clone(), None).await.unwrap();
            assert_eq!(got.kvs()[0].value(), key.as_bytes(), "{key}");
        }
    }
    // A blocking defrag acknowledges nothing sent after it started.
    assert!(
        during > 0,
        "no write was both sent and acknowledged during the {:?} defrag",
        ended - started
    );
    revisions.sort_unstable();
    revisions.dedup();
    assert!(revisions.len() >= 20, "every write got its own revision");

    let after = c.get("k", Some(all_k)).await.unwrap();
    let summary = |r: &etcd_client::GetResponse| -> Vec<_> {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&after), summary(&before), "defrag kept every key");
    let size_after = c.status().await.unwrap().db_size();
    assert!(
        size_after < size_before,
        "defrag shrank the file: {size_after} !< {size_before}"
    );
    // And the store is still writable and readable after the switch.
    c.put("after", "1", None).await.unwrap();
    assert_eq!(c.get("after", None).await.unwrap().count(), 1);
}
