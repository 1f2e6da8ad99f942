//! Watch and Lease served in-process, driven by the `etcd-client` crate:
//! what a client observes, with etcd's responses as the expectation.

use std::time::Duration;

use basalt_net::{Config, ServerHandle};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions, WatchResponse, WatchStream,
};

struct TestServer {
    handle: Option<ServerHandle>,
    dir: tempfile::TempDir,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        TestServer::start_in(dir)
    }

    fn start_in(dir: tempfile::TempDir) -> TestServer {
        let handle = basalt_net::start(Config::for_test(dir.path())).expect("server starts");
        TestServer {
            handle: Some(handle),
            dir,
        }
    }

    async fn client(&self) -> Client {
        let url = self.handle.as_ref().expect("running").client_url();
        Client::connect([url], None).await.expect("connect")
    }

    /// Clean shutdown, then the same data dir again.
    fn restart(&mut self) {
        self.handle
            .take()
            .expect("running")
            .shutdown()
            .expect("clean shutdown");
        let cfg = Config::for_test(self.dir.path());
        self.handle = Some(basalt_net::start(cfg).expect("server restarts"));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

async fn next(w: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), w.message())
        .await
        .expect("watch response within 10 s")
        .expect("watch stream ok")
        .expect("watch stream open")
}

/// (event type, key, mod revision, has prev_kv) of each event.
fn events(r: &WatchResponse) -> Vec<(EventType, String, i64, bool)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event kv");
            (
                e.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.mod_revision(),
                e.prev_kv().is_some(),
            )
        })
        .collect()
}

fn revision(r: &WatchResponse) -> i64 {
    r.header().expect("header").revision()
}

#[tokio::test(flavor = "current_thread")]
async fn live_events_history_cancel_progress_and_compaction() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.put("w/before", "0", None).await.unwrap();
    let mut w = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = next(&mut w).await;
    assert!(created.created());
    assert_eq!((created.watch_id(), revision(&created)), (0, 2));

    c.put("w/a", "1", None).await.unwrap();
    c.put("x/outside", "1", None).await.unwrap();
    c.txn(Txn::new().and_then([TxnOp::put("w/t1", "1", None), TxnOp::put("w/t2", "2", None)]))
        .await
        .unwrap();
    c.delete("w/before", None).await.unwrap();
    let r = next(&mut w).await;
    assert_eq!(events(&r), vec![(EventType::Put, "w/a".into(), 3, false)]);
    let r = next(&mut w).await;
    assert_eq!(revision(&r), 5, "one response per revision");
    assert_eq!(
        events(&r),
        vec![
            (EventType::Put, "w/t1".into(), 5, false),
            (EventType::Put, "w/t2".into(), 5, false)
        ]
    );
    let r = next(&mut w).await;
    assert_eq!(
        events(&r),
        vec![(EventType::Delete, "w/before".into(), 6, true)]
    );

    // A second watcher on the same stream replays history from revision 3.
    w.watch("w/a", Some(WatchOptions::new().with_start_revision(3)))
        .await
        .unwrap();
    let created = next(&mut w).await;
    assert!(created.created());
    assert_eq!((created.watch_id(), revision(&created)), (1, 6));
    let r = next(&mut w).await;
    assert_eq!(
        (r.watch_id(), events(&r)),
        (1, vec![(EventType::Put, "w/a".into(), 3, false)])
    );

    w.cancel(0).await.unwrap();
    let r = next(&mut w).await;
    assert!(r.canceled());
    assert_eq!((r.watch_id(), revision(&r)), (0, 6));

    w.request_progress().await.unwrap();
    let r = next(&mut w).await;
    assert_eq!((r.watch_id(), revision(&r), r.events().len()), (-1, 6, 0));

    // Compacted start: created, then canceled with the compact revision.
    c.compact(4, None).await.unwrap();
    let mut s2 = c
        .watch("w/a", Some(WatchOptions::new().with_start_revision(2)))
        .await
        .unwrap();
    assert!(next(&mut s2).await.created());
    let r = next(&mut s2).await;
    assert!(r.canceled());
    assert_eq!((r.compact_revision(), revision(&r)), (4, 0));
}

/// A watcher whose client does not read while thousands of writes happen
/// is moved off the live path and caught up from history: every revision
/// arrives once, in order.
#[tokio::test(flavor = "current_thread")]
async fn slow_watcher_gets_every_revision_in_order() {
    const WRITES: i64 = 2000;
    let server = TestServer::start();
    let mut c = server.client().await;
    let mut w = c.watch("slow", None).await.unwrap();
    assert!(next(&mut w).await.created());
    let value = "v".repeat(2048);
    for batch in 0..WRITES / 100 {
        let puts = (0..100).map(|_| {
            let mut c = c.clone();
            let value = value.clone();
            async move { c.put("slow", value, None).await.unwrap() }
        });
        futures_util::future::join_all(puts).await;
        assert!(batch < WRITES / 100);
    }
    let mut revs = Vec::new();
    while revs.len() < WRITES as usize {
        let r = next(&mut w).await;
        revs.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    assert_eq!(revs, (2..2 + WRITES).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn lease_grant_keepalive_ttl_revoke_and_errors() {
    let server = TestServer::start();
    let mut c = server.client().await;
    let g = c
        .lease_grant(1, Some(LeaseGrantOptions::new().with_id(55)))
        .await
        .unwrap();
    assert_eq!((g.id(), g.ttl()), (55, 2), "TTL raised to etcd's minimum");
    let e = c
        .lease_grant(10, Some(LeaseGrantOptions::new().with_id(55)))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("etcdserver: lease already exists"),
        "{e}"
    );
    let e = c.lease_grant(10_000_000_000, None).await.unwrap_err();
    assert!(
        e.to_string().contains("etcdserver: too large lease TTL"),
        "{e}"
    );
    let generated = c.lease_grant(60, None).await.unwrap();
    assert!(generated.id() > 0);

    let id = generated.id();
    c.put("l/a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    c.put("l/b", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let t = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert!(t.ttl() > 55 && t.ttl() <= 60, "remaining {}", t.ttl());
    assert_eq!(t.keys(), &[b"l/a".to_vec(), b"l/b".to_vec()]);
    let unknown = c.lease_time_to_live(4242, None).await.unwrap();
    assert_eq!(unknown.ttl(), -1);

    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = stream.message().await.unwrap().unwrap();
    assert_eq!((r.id(), r.ttl()), (id, 60));

    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    let mut want = vec![55, id];
    want.sort();
    assert_eq!(ids, want);

    let mut watch = c
        .watch("l/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(next(&mut watch).await.created());
    let before = c
        .get("l/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let revoked = c.lease_revoke(id).await.unwrap();
    assert_eq!(
        revoked.header().unwrap().revision(),
        before + 1,
        "one revision"
    );
    let r = next(&mut watch).await;
    assert_eq!(
        events(&r),
        vec![
            (EventType::Delete, "l/a".into(), before + 1, false),
            (EventType::Delete, "l/b".into(), before + 1, false)
        ]
    );
    let e = c.lease_revoke(id).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("etcdserver: requested lease not found"),
        "{e}"
    );
    let count = c
        .get(
            "l/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(count, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn expiry_deletes_keys() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.lease_grant(2, Some(LeaseGrantOptions::new().with_id(7)))
        .await
        .unwrap();
    c.put("exp/a", "v", Some(PutOptions::new().with_lease(7)))
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = c
            .get(
                "exp/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap()
            .count();
        if n == 0 {
            gone = true;
            break;
        }
    }
    assert!(gone, "keys of an expired lease are deleted within 6 s");
    assert_eq!(c.lease_time_to_live(7, None).await.unwrap().ttl(), -1);
}

#[tokio::test(flavor = "current_thread")]
async fn restart_gives_leases_their_full_ttl() {
    let mut server = TestServer::start();
    let mut c = server.client().await;
    c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(8)))
        .await
        .unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();
    let mut c = server.client().await;
    let t = c.lease_time_to_live(8, None).await.unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert!(
        t.ttl() >= 59,
        "full TTL again after restart, got {}",
        t.ttl()
    );
}
