//! Reads are answered on the executor that received them, from the read
//! view the sequencer published: with two executors and connections spread
//! over both (SO_REUSEPORT), a write acknowledged on one connection is seen
//! at once by a Range or read-only Txn on every other connection, and no
//! connection ever sees the revision go back.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

/// Connections spread by the kernel over the executors: with 16, all on
/// one of two executors has odds of 2 in 65,536.
const CONNECTIONS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_seen_at_once_by_reads_on_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = basalt_net::Config::for_test(dir.path());
    cfg.cores = 2;
    // Checkpoints (and so new tree files under the views) every few writes.
    cfg.snapshot_count = 25;
    let server = basalt_net::start(cfg).unwrap();
    let url = server.client_url();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(Client::connect([url.as_str()], None).await.unwrap());
    }
    let mut last_seen = [0i64; CONNECTIONS];
    for i in 0..150usize {
        let key = format!("k/{:03}", i % 40);
        let value = format!("v{i}");
        let writer = i % CONNECTIONS;
        let put = clients[writer]
            .put(key.as_str(), value.as_str(), None)
            .await
            .unwrap();
        let rev = put.header().unwrap().revision();
        for (c, client) in clients.iter_mut().enumerate() {
            let got = client.get(key.as_str(), None).await.unwrap();
            let header_rev = got.header().unwrap().revision();
            assert!(
                header_rev >= rev,
                "connection {c} read at {header_rev} < {rev}"
            );
            assert!(header_rev >= last_seen[c], "revision went back on {c}");
            last_seen[c] = header_rev;
            assert_eq!(got.kvs().len(), 1, "connection {c}, write {i}");
            assert_eq!(got.kvs()[0].value(), value.as_bytes());
            assert_eq!(got.kvs()[0].mod_revision(), rev);
        }
        if i % 30 == 29 {
            // A read-only txn and a prefix range on another connection.
            let other = &mut clients[(writer + 1) % CONNECTIONS];
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)])
                .and_then([TxnOp::get("k/", Some(GetOptions::new().with_prefix()))]);
            let resp = other.txn(txn).await.unwrap();
            assert!(resp.succeeded(), "write {i} not visible to a txn");
            let all = other
                .get(
                    "k/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .unwrap();
            assert_eq!(all.count(), (i + 1).min(40) as i64);
        }
    }
    server.shutdown().unwrap();
}
