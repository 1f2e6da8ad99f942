//! `--auto-compaction-mode` / `--auto-compaction-retention` end to end: the
//! server compacts on its own, to the revision etcd's compactor would pick,
//! and a client sees it through HashKV and ranges at old revisions.

use std::time::{Duration, Instant};

use basalt_net::compactor::AutoCompaction;
use basalt_net::Config;
use etcd_client::{Client, GetOptions};

fn start(tweak: impl FnOnce(&mut Config)) -> (basalt_net::ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::for_test(dir.path());
    tweak(&mut cfg);
    (basalt_net::start(cfg).expect("server starts"), dir)
}

async fn compact_revision(client: &mut Client) -> i64 {
    client.hash_kv(0).await.expect("hash_kv").compact_version()
}

/// Polls until the server's compact revision is `want`, or panics after
/// `limit` with what it was.
async fn wait_for_compaction(client: &mut Client, want: i64, limit: Duration) {
    let started = Instant::now();
    loop {
        let now = compact_revision(client).await;
        if now == want {
            return;
        }
        assert!(
            now < want,
            "compacted past the expected revision: {now} > {want}"
        );
        assert!(
            started.elapsed() < limit,
            "compact revision still {now} after {limit:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_mode_keeps_the_last_n_revisions() {
    let (server, _dir) = start(|c| {
        c.auto_compaction = Some(AutoCompaction::Revision(3));
        c.revision_compaction_interval = Duration::from_millis(100);
    });
    let mut client = Client::connect([server.client_url()], None)
        .await
        .expect("connect");
    assert_eq!(compact_revision(&mut client).await, 0);
    for i in 0..10 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    // Revision 11 now; etcd's revision compactor keeps 3: compacts to 8.
    wait_for_compaction(&mut client, 8, Duration::from_secs(10)).await;
    let old = client
        .get("k0", Some(GetOptions::new().with_revision(7)))
        .await
        .expect_err("revision 7 is compacted");
    assert!(
        old.to_string()
            .contains("required revision has been compacted"),
        "{old}"
    );
    let kept = client
        .get("k6", Some(GetOptions::new().with_revision(8)))
        .await
        .expect("revision 8 is kept");
    assert_eq!(kept.kvs().len(), 1);
    // Nothing new written: the next rounds must not move it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(compact_revision(&mut client).await, 8);
    server.shutdown().expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_mode_compacts_to_the_revision_of_one_period_ago() {
    let (server, _dir) = start(|c| {
        c.auto_compaction = Some(AutoCompaction::Periodic(Duration::from_millis(600)));
    });
    let mut client = Client::connect([server.client_url()], None)
        .await
        .expect("connect");
    for i in 0..5 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    // Revision 6 from here on. The first compaction (one period after the
    // start) may still pick a sample from before the puts; the ones after
    // it pick a sample taken after them: revision 6, and never more.
    wait_for_compaction(&mut client, 6, Duration::from_secs(10)).await;
    let kept = client
        .get("k4", Some(GetOptions::new().with_revision(6)))
        .await
        .expect("the current revision stays readable");
    assert_eq!(kept.kvs().len(), 1);
    client
        .get("k0", Some(GetOptions::new().with_revision(5)))
        .await
        .expect_err("revision 5 is compacted");
    server.shutdown().expect("clean shutdown");
}
