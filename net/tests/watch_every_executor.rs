//! Watch streams are served by the executor of their connection, each
//! executor's hub fed every applied batch by the sequencer: with two
//! executors and connections spread over both, every stream gets every
//! revision once, in order, live and from history, and a progress answer
//! never claims a revision whose events the stream has not been given.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};

/// Connections spread by the kernel over the executors (all on one of two
/// has odds of 2 in 4,096).
const CONNECTIONS: usize = 12;

type Seen = Vec<(i64, EventType, String)>;

async fn next(w: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), w.message())
        .await
        .expect("watch response within 20 s")
        .expect("watch stream ok")
        .expect("watch stream open")
}

/// Events of watcher `id` until revision `last` was seen.
async fn collect(w: &mut WatchStream, id: i64, last: i64, seen: &mut Seen) {
    while seen.last().is_none_or(|(rev, _, _)| *rev < last) {
        let r = next(w).await;
        assert!(!r.canceled(), "watcher canceled: {}", r.cancel_reason());
        if r.watch_id() != id {
            continue;
        }
        for e in r.events() {
            let kv = e.kv().unwrap();
            seen.push((
                kv.mod_revision(),
                e.event_type(),
                kv.key_str().unwrap().to_string(),
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_gets_every_revision_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = basalt_net::Config::for_test(dir.path());
    cfg.cores = 2;
    cfg.snapshot_count = 25;
    let server = basalt_net::start(cfg).unwrap();
    let url = server.client_url();
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut c = Client::connect([url.as_str()], None).await.unwrap();
        let opts = WatchOptions::new().with_prefix().with_prev_key();
        let mut w = c.watch("w/", Some(opts)).await.unwrap();
        let created = next(&mut w).await;
        assert!(created.created() && created.watch_id() == 0);
        clients.push(c);
        streams.push(w);
    }
    let mut expected: Seen = Vec::new();
    for i in 0..120usize {
        let c = &mut clients[i % CONNECTIONS];
        let key = format!("w/{}", i % 10);
        if i % 9 == 8 {
            let r = c.delete(key.as_str(), None).await.unwrap();
            if r.deleted() == 1 {
                let rev = r.header().unwrap().revision();
                expected.push((rev, EventType::Delete, key));
            }
        } else {
            let r = c.put(key.as_str(), format!("v{i}"), None).await.unwrap();
            expected.push((r.header().unwrap().revision(), EventType::Put, key));
        }
        // Writes no watcher wants.
        c.put(format!("x/{i}"), "x", None).await.unwrap();
    }
    let last = expected.last().unwrap().0;
    for (n, w) in streams.iter_mut().enumerate() {
        let mut seen = Vec::new();
        collect(w, 0, last, &mut seen).await;
        assert_eq!(seen, expected, "live events of connection {n}");

        // A progress answer's revision has all its events delivered.
        w.request_progress().await.unwrap();
        loop {
            let r = next(w).await;
            if r.watch_id() == -1 {
                let at = r.header().unwrap().revision();
                assert!(at >= last, "progress at {at} after events up to {last}");
                break;
            }
            assert!(r.events().is_empty(), "an event after all were seen");
        }

        // A second watcher on the same stream, from history.
        let first = expected[0].0;
        let opts = WatchOptions::new().with_prefix().with_start_revision(first);
        w.watch("w/", Some(opts)).await.unwrap();
        let created = next(w).await;
        assert!(created.created());
        let id = created.watch_id();
        let mut replayed = Vec::new();
        collect(w, id, last, &mut replayed).await;
        assert_eq!(replayed, expected, "history of connection {n}");
    }

    // Every stream closes; writes go on (an executor with no stream is sent
    // nothing); new streams start from the current revision, and history
    // still has the writes made while none was open.
    drop(streams);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut gap: Seen = Vec::new();
    for i in 0..20usize {
        let key = format!("w/gap{i}");
        let r = clients[i % CONNECTIONS]
            .put(key.as_str(), "g", None)
            .await
            .unwrap();
        gap.push((r.header().unwrap().revision(), EventType::Put, key));
    }
    let gap_end = gap.last().unwrap().0;
    for (n, c) in clients.iter_mut().enumerate() {
        let mut w = c
            .watch("w/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let created = next(&mut w).await;
        assert!(created.created());
        let at = created.header().unwrap().revision();
        assert!(at >= gap_end, "connection {n}: created at {at} < {gap_end}");
        let r = c.put(format!("w/after{n}"), "a", None).await.unwrap();
        let rev = r.header().unwrap().revision();
        let mut seen = Vec::new();
        collect(&mut w, 0, rev, &mut seen).await;
        assert_eq!(seen, vec![(rev, EventType::Put, format!("w/after{n}"))]);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(gap[0].0);
        w.watch("w/gap", Some(opts)).await.unwrap();
        let id = next(&mut w).await.watch_id();
        let mut replayed = Vec::new();
        collect(&mut w, id, gap_end, &mut replayed).await;
        assert_eq!(replayed, gap, "gap history on connection {n}");
    }
    server.shutdown().unwrap();
}
