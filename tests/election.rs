//! etcd's Election service (`v3electionpb.Election`) as the Rust client
//! calls it, against a real etcd 3.4 and basalt side by side: campaign,
//! leader, observe (every value proclaimed, even back to back), proclaim,
//! a second campaigner waiting, resign, and etcd's errors.

mod support;

use std::time::Duration;

use etcd_client::{ProclaimOptions, ResignOptions};
use support::{describe_error, Kind, Server};

fn value(r: &etcd_client::LeaderResponse) -> String {
    r.kv()
        .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut c = server.client().await;
        let mut t = Vec::new();
        let a = c.lease_grant(30, None).await.unwrap().id();
        let b = c.lease_grant(30, None).await.unwrap().id();
        let won = c.campaign("E", "v1", a).await.unwrap();
        let ka = won.leader().unwrap().clone();
        t.push(format!(
            "leader key is E/<lease a>: {}, lease {}, rev > 0: {}",
            ka.key() == format!("E/{a:x}").as_bytes(),
            ka.lease() == a,
            ka.rev() > 0
        ));
        t.push(format!("leader: {}", value(&c.leader("E").await.unwrap())));
        let mut observer = server.client().await;
        let mut seen = observer.observe("E").await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), seen.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        t.push(format!("observed: {}", value(&first)));
        let mut c2 = server.client().await;
        let second = tokio::spawn(async move { c2.campaign("E", "v2", b).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        t.push(format!(
            "second campaigner waits: {}",
            !second.is_finished()
        ));
        c.proclaim("v1b", Some(ProclaimOptions::new().with_leader(ka.clone())))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), seen.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        t.push(format!("observed after proclaim: {}", value(&next)));
        // Values proclaimed back to back are each observed, in order (the
        // observer polled once between them and missed the middle ones).
        for v in ["p1", "p2", "p3", "p4"] {
            c.proclaim(v, Some(ProclaimOptions::new().with_leader(ka.clone())))
                .await
                .unwrap();
        }
        let mut quick = Vec::new();
        for _ in 0..4 {
            let r = tokio::time::timeout(Duration::from_secs(5), seen.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            quick.push(value(&r));
        }
        t.push(format!("observed quick proclaims: {quick:?}"));
        c.proclaim("v1b", Some(ProclaimOptions::new().with_leader(ka.clone())))
            .await
            .unwrap();
        let again = tokio::time::timeout(Duration::from_secs(5), seen.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        t.push(format!("observed after proclaim: {}", value(&again)));
        t.push(format!("leader: {}", value(&c.leader("E").await.unwrap())));
        c.resign(Some(ResignOptions::new().with_leader(ka.clone())))
            .await
            .unwrap();
        let won_b = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second campaigner leads once the first resigns")
            .unwrap()
            .unwrap();
        t.push(format!(
            "second leads with E/<lease b>: {}",
            won_b.leader().unwrap().key() == format!("E/{b:x}").as_bytes()
        ));
        let after = tokio::time::timeout(Duration::from_secs(5), seen.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        t.push(format!("observed after resign: {}", value(&after)));
        let stale = c
            .proclaim("late", Some(ProclaimOptions::new().with_leader(ka)))
            .await
            .unwrap_err();
        t.push(format!(
            "proclaim by a resigned leader: {}",
            describe_error(&stale)
        ));
        let none = c.leader("nobody").await.unwrap_err();
        t.push(format!(
            "leader of an empty election: {}",
            describe_error(&none)
        ));
        let missing = c.resign(None).await.unwrap_err();
        t.push(format!(
            "resign without a leader key: {}",
            describe_error(&missing)
        ));
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}
