//! etcd's Lock service (`v3lockpb.Lock`) as the Rust client calls it,
//! against a real etcd 3.4 and basalt side by side: the lock key is
//! `name/<lease in hex>`, a second locker waits until the holder unlocks,
//! locking again with the same lease is the same acquisition, a revoked
//! lease releases the lock, an unknown lease is etcd's error.

mod support;

use std::time::Duration;

use etcd_client::LockOptions;
use support::{describe_error, Kind, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_unlock_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut c = server.client().await;
        let mut t = Vec::new();
        let a = c.lease_grant(30, None).await.unwrap().id();
        let b = c.lease_grant(30, None).await.unwrap().id();
        let held = c
            .lock("L", Some(LockOptions::new().with_lease(a)))
            .await
            .unwrap();
        t.push(format!(
            "first key is L/<lease a>: {}",
            held.key() == format!("L/{a:x}").as_bytes()
        ));
        let mut c2 = server.client().await;
        let waiter = tokio::spawn(async move {
            c2.lock("L", Some(LockOptions::new().with_lease(b)))
                .await
                .map(|r| (r.key().to_vec(), r.header().unwrap().revision()))
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        t.push(format!("second locker waits: {}", !waiter.is_finished()));
        // A waiter whose call is cancelled leaves no key behind.
        let d = c.lease_grant(30, None).await.unwrap().id();
        let mut c3 = server.client().await;
        let gives_up = tokio::spawn(async move {
            let _ = c3.lock("L", Some(LockOptions::new().with_lease(d))).await;
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        gives_up.abort();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let left = c.get(format!("L/{d:x}"), None).await.unwrap().kvs().len();
        t.push(format!("a cancelled waiter's key left: {left}"));
        let unlocked = c.unlock(held.key()).await.unwrap();
        let unlock_rev = unlocked.header().unwrap().revision();
        let (key_b, rev_b) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the second locker gets the lock once the first unlocks")
            .unwrap()
            .unwrap();
        t.push(format!(
            "second key is L/<lease b>: {}, answered at or after the unlock: {}",
            key_b == format!("L/{b:x}").as_bytes(),
            rev_b >= unlock_rev
        ));
        let again = c
            .lock("L", Some(LockOptions::new().with_lease(b)))
            .await
            .unwrap();
        t.push(format!(
            "same lease again: same key {}",
            again.key() == key_b.as_slice()
        ));
        let e = c
            .lock("M", Some(LockOptions::new().with_lease(0x7777)))
            .await
            .unwrap_err();
        t.push(format!("unknown lease: {}", describe_error(&e)));
        c.lease_revoke(b).await.unwrap();
        let after = tokio::time::timeout(
            Duration::from_secs(5),
            c.lock("L", Some(LockOptions::new().with_lease(a))),
        )
        .await
        .expect("a revoked lease releases the lock")
        .unwrap();
        t.push(format!(
            "after revoke, lease a holds it: {}",
            after.key() == format!("L/{a:x}").as_bytes()
        ));
        let none = c.lock("N", None).await.unwrap();
        let lease_hex = String::from_utf8_lossy(none.key())
            .strip_prefix("N/")
            .map(str::to_string)
            .unwrap_or_default();
        let lease = i64::from_str_radix(&lease_hex, 16).unwrap_or(0);
        let ttl = c.lease_time_to_live(lease, None).await.unwrap();
        t.push(format!("no lease: a new one of {} s", ttl.granted_ttl()));
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}
