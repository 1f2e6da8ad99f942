//! What the sequencer does with requests that need no log entry (read-only
//! txns) and with work that must not stop writes (defragmentation), seen
//! through a real etcd client against an in-process server.

use basalt_net::{Config, ServerHandle};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

struct TestServer {
    handle: Option<ServerHandle>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = basalt_net::start(Config::for_test(dir.path())).expect("server starts");
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
