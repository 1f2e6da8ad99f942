//! Differential tests for the Lease and Watch services against real etcd.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, DeleteOptions, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use support::{differential, normalise, Transcript};

/// One line per thing a client can observe in a watch response. Events are
/// listed one by one because servers may batch revisions differently.
fn watch_lines(resp: &WatchResponse) -> Vec<String> {
    let mut lines = Vec::new();
    let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
    if resp.created() || resp.canceled() || resp.compact_revision() != 0 || resp.events().is_empty()
    {
        lines.push(format!(
            "watch_id={} created={} canceled={} compact_revision={} cancel_reason={:?} header_revision={} events={}",
            resp.watch_id(),
            resp.created(),
            resp.canceled(),
            resp.compact_revision(),
            resp.cancel_reason(),
            rev,
            resp.events().len()
        ));
    }
    for e in resp.events() {
        lines.push(format!(
            "watch_id={} event {:?} kv={} prev_kv={}",
            resp.watch_id(),
            e.event_type(),
            normalise(&format!("{:?}", e.kv())),
            normalise(&format!("{:?}", e.prev_kv()))
        ));
    }
    lines
}

/// Reads from `stream` until `n` lines were seen (or 10 s pass). Each
/// watcher's lines keep their order; how two watchers of one stream
/// interleave is up to the server, so the lines are grouped by watch id.
async fn read_watch(stream: &mut WatchStream, t: &mut Transcript, n: usize) {
    let mut lines = Vec::new();
    while lines.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(resp))) => lines.extend(watch_lines(&resp)),
            Ok(Ok(None)) => {
                lines.push("watch stream ended".to_string());
                break;
            }
            Ok(Err(e)) => {
                lines.push(format!("watch error {}", support::describe_error(&e)));
                break;
            }
            Err(_) => {
                lines.push(format!(
                    "watch timed out after {} of {n} lines",
                    lines.len()
                ));
                break;
            }
        }
    }
    lines.sort_by_key(|l| l.split(' ').next().unwrap_or("").to_string());
    for line in lines {
        t.note(line);
    }
}

#[tokio::test]
async fn leases() {
    differential("leases", |mut c| async move {
        let mut t = Transcript::default();
        let r = c
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(1000)))
            .await;
        t.record("grant 1000 ttl 60", r);
        let r = c
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(1000)))
            .await;
        t.record("grant 1000 again", r);
        let r = c
            .lease_grant(30, Some(LeaseGrantOptions::new().with_id(2000)))
            .await;
        t.record("grant 2000 ttl 30", r);
        let r = c
            .lease_grant(-5, Some(LeaseGrantOptions::new().with_id(3000)))
            .await;
        t.record("grant negative ttl", r);
        let r = c
            .lease_grant(10_000_000_000, Some(LeaseGrantOptions::new().with_id(3001)))
            .await;
        t.record("grant huge ttl", r);
        match c.lease_grant(60, None).await {
            Ok(g) => t.note(format!(
                "grant generated id: nonzero={} ttl={}",
                g.id() != 0,
                g.ttl()
            )),
            Err(e) => t.note(format!(
                "grant generated id: ERR {}",
                support::describe_error(&e)
            )),
        }
        for k in ["l/a", "l/b"] {
            let r = c
                .put(k, "v", Some(PutOptions::new().with_lease(1000)))
                .await;
            t.record(&format!("put {k} lease 1000"), r);
        }
        let r = c
            .put("l/c", "v", Some(PutOptions::new().with_lease(2000)))
            .await;
        t.record("put l/c lease 2000", r);
        let r = c
            .put("l/b", "v2", Some(PutOptions::new().with_lease(2000)))
            .await;
        t.record("move l/b to lease 2000", r);
        let r = c
            .put("l/c", "v3", Some(PutOptions::new().with_ignore_lease()))
            .await;
        t.record("put l/c ignore_lease", r);
        let r = c.get("l/", Some(GetOptions::new().with_prefix())).await;
        t.record("get l/", r);
        for id in [1000, 2000, 4242] {
            match c
                .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await
            {
                Ok(r) => {
                    // etcd lists a lease's keys in no particular order.
                    let mut keys = r.keys().to_vec();
                    keys.sort();
                    t.note(format!(
                        "ttl {id}: id={} granted={} remaining_plausible={} keys={keys:?}",
                        r.id(),
                        r.granted_ttl(),
                        r.ttl() == -1 || (r.ttl() > 0 && r.ttl() <= r.granted_ttl()),
                    ))
                }
                Err(e) => t.note(format!("ttl {id}: ERR {}", support::describe_error(&e))),
            }
        }
        match c.leases().await {
            Ok(r) => {
                let mut ids: Vec<i64> = r
                    .leases()
                    .iter()
                    .map(|l| l.id())
                    .filter(|id| *id < 10_000)
                    .collect();
                ids.sort();
                t.note(format!("leases (small ids): {ids:?}"));
            }
            Err(e) => t.note(format!("leases: ERR {}", support::describe_error(&e))),
        }
        let r = c.lease_revoke(2000).await;
        t.record("revoke 2000", r);
        let r = c.get("l/", Some(GetOptions::new().with_prefix())).await;
        t.record("get l/ after revoke", r);
        let r = c.lease_revoke(2000).await;
        t.record("revoke 2000 again", r);
        match c.lease_keep_alive(1000).await {
            Ok((mut keeper, mut stream)) => {
                let sent = keeper.keep_alive().await.is_ok();
                match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                    Ok(Ok(Some(r))) => t.note(format!(
                        "keepalive 1000 sent={sent}: id={} ttl={}",
                        r.id(),
                        r.ttl()
                    )),
                    other => t.note(format!("keepalive 1000 sent={sent}: {}", other.is_ok())),
                }
            }
            Err(e) => t.note(format!(
                "keepalive 1000: ERR {}",
                support::describe_error(&e)
            )),
        }
        match c.lease_keep_alive(777).await {
            Ok((mut keeper, mut stream)) => {
                let sent = keeper.keep_alive().await.is_ok();
                match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                    Ok(Ok(Some(r))) => t.note(format!(
                        "keepalive unknown sent={sent}: id={} ttl={}",
                        r.id(),
                        r.ttl()
                    )),
                    Ok(Err(e)) => t.note(format!(
                        "keepalive unknown: ERR {}",
                        support::describe_error(&e)
                    )),
                    other => t.note(format!("keepalive unknown: {}", other.is_ok())),
                }
            }
            Err(e) => t.note(format!(
                "keepalive unknown: ERR {}",
                support::describe_error(&e)
            )),
        }
        t
    })
    .await;
}

#[tokio::test]
async fn lease_expiry_deletes_keys() {
    differential("lease_expiry_deletes_keys", |mut c| async move {
        let mut t = Transcript::default();
        let r = c
            .lease_grant(1, Some(LeaseGrantOptions::new().with_id(55)))
            .await;
        t.record("grant 55 ttl 1 (raised to the minimum)", r);
        let r = c
            .put("exp/a", "v", Some(PutOptions::new().with_lease(55)))
            .await;
        t.record("put exp/a", r);
        let r = c
            .put("exp/b", "v", Some(PutOptions::new().with_lease(55)))
            .await;
        t.record("put exp/b", r);
        let mut gone = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(r) = c
                .get(
                    "exp/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
            {
                if r.count() == 0 {
                    gone = true;
                    break;
                }
            }
        }
        t.note(format!("keys deleted by expiry within 10 s: {gone}"));
        let r = c
            .get("exp/a", Some(GetOptions::new().with_revision(3)))
            .await;
        t.record("exp/a at 3", r);
        match c.get("", Some(GetOptions::new().with_all_keys())).await {
            Ok(r) => t.note(format!(
                "revision after expiry: {}",
                r.header().map(|h| h.revision()).unwrap_or(-1)
            )),
            Err(e) => t.note(format!("ERR {}", support::describe_error(&e))),
        }
        let r = c.lease_revoke(55).await;
        t.record("revoke expired lease", r);
        t
    })
    .await;
}

async fn open_watch(
    c: &mut Client,
    t: &mut Transcript,
    key: &str,
    opts: WatchOptions,
) -> Option<WatchStream> {
    match c.watch(key, Some(opts)).await {
        Ok(s) => Some(s),
        Err(e) => {
            t.note(format!("watch open: ERR {}", support::describe_error(&e)));
            None
        }
    }
}

#[tokio::test]
async fn watch_events() {
    differential("watch_events", |mut c| async move {
        let mut t = Transcript::default();
        let r = c.put("w/before", "0", None).await;
        t.record("put w/before", r);
        let Some(mut w) = open_watch(
            &mut c,
            &mut t,
            "w/",
            WatchOptions::new().with_prefix().with_prev_key(),
        )
        .await
        else {
            return t;
        };
        read_watch(&mut w, &mut t, 1).await;
        let mut writer = c.clone();
        t.record("put w/a", writer.put("w/a", "1", None).await);
        t.record("put w/a again", writer.put("w/a", "2", None).await);
        t.record("put outside", writer.put("x/outside", "1", None).await);
        t.record("delete w/before", writer.delete("w/before", None).await);
        t.record(
            "txn two puts",
            writer
                .txn(
                    Txn::new()
                        .and_then([TxnOp::put("w/t1", "1", None), TxnOp::put("w/t2", "2", None)]),
                )
                .await,
        );
        t.record(
            "delete prefix",
            writer
                .delete("w/", Some(DeleteOptions::new().with_prefix()))
                .await,
        );
        read_watch(&mut w, &mut t, 8).await;
        t
    })
    .await;
}

#[tokio::test]
async fn watch_history_filters_and_cancel() {
    differential("watch_history_filters_and_cancel", |mut c| async move {
        let mut t = Transcript::default();
        for v in ["1", "2", "3"] {
            t.record("put h", c.put("h", v, None).await);
        }
        t.record("delete h", c.delete("h", None).await);
        // History replay from revision 2 with prev_kv.
        let Some(mut w) = open_watch(
            &mut c,
            &mut t,
            "h",
            WatchOptions::new().with_start_revision(2).with_prev_key(),
        )
        .await
        else {
            return t;
        };
        read_watch(&mut w, &mut t, 4).await;
        // A second watcher on the same stream, filtering out puts.
        let r = w
            .watch(
                "h",
                Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
            )
            .await;
        t.note(format!("second watcher requested: {}", r.is_ok()));
        read_watch(&mut w, &mut t, 1).await;
        t.record("put h again", c.put("h", "4", None).await);
        t.record("delete h again", c.delete("h", None).await);
        read_watch(&mut w, &mut t, 3).await;
        let r = w.cancel(0).await;
        t.note(format!("cancel 0 requested: {}", r.is_ok()));
        read_watch(&mut w, &mut t, 1).await;
        // Progress notification on request.
        let r = w.request_progress().await;
        t.note(format!("progress requested: {}", r.is_ok()));
        read_watch(&mut w, &mut t, 1).await;
        t
    })
    .await;
}

#[tokio::test]
async fn watch_compacted_revision() {
    differential("watch_compacted_revision", |mut c| async move {
        let mut t = Transcript::default();
        for v in ["1", "2", "3", "4"] {
            t.record("put k", c.put("k", v, None).await);
        }
        t.record("compact 3", c.compact(3, None).await);
        let Some(mut w) = open_watch(
            &mut c,
            &mut t,
            "k",
            WatchOptions::new().with_start_revision(2),
        )
        .await
        else {
            return t;
        };
        read_watch(&mut w, &mut t, 2).await;
        let Some(mut w2) = open_watch(
            &mut c,
            &mut t,
            "k",
            WatchOptions::new().with_start_revision(3),
        )
        .await
        else {
            return t;
        };
        read_watch(&mut w2, &mut t, 3).await;
        t
    })
    .await;
}
