//! Maintenance and Cluster services, checked on etcd and basalt alike (the
//! same assertions must hold for both; ids, sizes and hashes differ by
//! implementation so they are checked for consistency, not equality).

mod support;

use etcd_client::{AlarmAction, AlarmType, GetOptions};
use support::{Kind, Server};

fn version_at_least(v: &str, min: (u64, u64, u64)) -> bool {
    let parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    (
        parts.first().copied().unwrap_or(0),
        parts.get(1).copied().unwrap_or(0),
        parts.get(2).copied().unwrap_or(0),
    ) >= min
}

#[tokio::test]
async fn status_member_list_hash_and_defragment() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut c = server.client().await;
        for i in 0..20 {
            c.put(format!("k{i}"), "v", None).await.expect("put");
        }
        let status = c.status().await.expect("status");
        let header = status.header().expect("header");
        assert_eq!(
            status.leader(),
            header.member_id(),
            "{kind:?}: single member leads"
        );
        assert!(
            status.raft_index() >= 20,
            "{kind:?}: raft index {}",
            status.raft_index()
        );
        assert!(status.raft_term() >= 1);
        assert!(status.db_size() > 0);
        if kind == Kind::Basalt {
            assert!(
                version_at_least(status.version(), (3, 5, 8)),
                "kube-apiserver needs version >= 3.5.8, got {}",
                status.version()
            );
        }
        let members = c.member_list().await.expect("member list");
        assert_eq!(members.members().len(), 1);
        let m = &members.members()[0];
        assert_eq!(m.id(), header.member_id());
        assert_eq!(m.name(), "default");
        assert_eq!(m.client_urls(), std::slice::from_ref(&server.endpoint));
        assert!(!m.is_learner());

        let h1 = c.hash_kv(0).await.expect("hash_kv");
        let h2 = c.hash_kv(0).await.expect("hash_kv again");
        assert_eq!(h1.hash(), h2.hash(), "{kind:?}: hash_kv is stable");
        c.put("k0", "changed", None).await.expect("put");
        let h3 = c.hash_kv(0).await.expect("hash_kv after put");
        assert_ne!(h1.hash(), h3.hash(), "{kind:?}: hash_kv sees a put");
        let h_old = c
            .hash_kv(h1.header().unwrap().revision())
            .await
            .expect("hash_kv at old rev");
        assert_eq!(
            h_old.hash(),
            h1.hash(),
            "{kind:?}: hash_kv at a revision is repeatable"
        );

        c.defragment().await.expect("defragment");
        let all = c
            .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .expect("get");
        assert_eq!(all.count(), 20, "{kind:?}: defragment keeps the data");
    }
}

#[tokio::test]
async fn snapshot_save_streams_the_database() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut c = server.client().await;
        for i in 0..50 {
            c.put(format!("snap/{i}"), vec![b'x'; 1000], None)
                .await
                .expect("put");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("snap.db");
        let out = server.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{kind:?}: snapshot save failed: {out:?}"
        );
        let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 50_000,
            "{kind:?}: snapshot of 50 KB of values is only {len} bytes"
        );
    }
}

#[tokio::test]
async fn quota_raises_nospace_alarm() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_with(kind, &["--quota-backend-bytes", "1048576"]).await;
        let mut c = server.client().await;
        let mut error = None;
        for i in 0..400 {
            if let Err(e) = c.put(format!("fill{i}"), vec![b'x'; 16 * 1024], None).await {
                error = Some(support::describe_error(&e));
                break;
            }
        }
        let error =
            error.unwrap_or_else(|| panic!("{kind:?}: 6 MiB of puts never hit a 1 MiB quota"));
        assert_eq!(
            error, "code=ResourceExhausted message=\"etcdserver: mvcc: database space exceeded\"",
            "{kind:?}"
        );
        let alarms = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert_eq!(alarms.alarms().len(), 1, "{kind:?}");
        assert_eq!(alarms.alarms()[0].alarm(), AlarmType::Nospace);
        // Reads still work; writes keep failing until the alarm is disarmed.
        c.get("fill0", None)
            .await
            .expect("reads work under NOSPACE");
        let e = c
            .put("small", "v", None)
            .await
            .expect_err("writes fail under NOSPACE");
        assert!(support::describe_error(&e).contains("database space exceeded"));
        // Free space, then disarm: writes work again.
        c.delete(
            "fill",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("delete under NOSPACE");
        let rev = c.get("x", None).await.unwrap().header().unwrap().revision();
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
        c.defragment().await.expect("defragment");
        // Disarming names the member that raised the alarm, as etcdctl does.
        let mut disarm = etcd_client::AlarmOptions::new();
        disarm.with_member(alarms.alarms()[0].member_id());
        c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(disarm))
            .await
            .expect("disarm");
        let left = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert!(
            left.alarms().is_empty(),
            "{kind:?}: alarm still raised after disarm"
        );
        c.put("small", "v", None)
            .await
            .expect("writes work after disarm");
    }
}

/// HashKV is etcd's own hash: the same history gives the same number on
/// etcd and basalt, at every revision asked, before and after a
/// compaction (which drops versions from the hash only as etcd does).
#[tokio::test]
async fn hash_kv_is_etcds_hash_of_the_same_history() {
    let mut seen = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut c = server.client().await;
        let mut hashes = Vec::new();
        for i in 0..40 {
            c.put(format!("h/{}", i % 15), format!("v{i}"), None)
                .await
                .expect("put");
        }
        c.delete("h/1", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("delete");
        let mid = c.get("x", None).await.unwrap().header().unwrap().revision();
        c.put("h/3", "after", None).await.expect("put");
        c.put("h/10", "back", None).await.expect("put");
        for r in [0, 5, 20, mid, mid + 1] {
            hashes.push((r, c.hash_kv(r).await.expect("hash_kv").hash()));
        }
        c.compact(mid - 5, None).await.expect("compact");
        for r in [0, mid - 4, mid, mid + 2] {
            let h = c.hash_kv(r).await.expect("hash_kv after compaction");
            hashes.push((r, h.hash()));
            assert_eq!(h.compact_version(), mid - 5, "{kind:?}");
        }
        seen.push(hashes);
    }
    assert_eq!(seen[0], seen[1], "etcd's hashes, then basalt's");
}

/// An alarm activated for member 0 is kept under member 0 (beside the
/// member's own), and a defragment answers without a header, as etcd 3.4.
#[tokio::test]
async fn alarm_for_member_zero_and_defragment_answer_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut c = server.client().await;
        let own = c.status().await.unwrap().header().unwrap().member_id();
        let mut lines = Vec::new();
        let mut zero = etcd_client::AlarmOptions::new();
        zero.with_member(0);
        let r = c
            .alarm(AlarmAction::Activate, AlarmType::Nospace, Some(zero))
            .await
            .unwrap();
        lines.push(format!(
            "activate member 0 answers: {:?}",
            r.alarms()
                .iter()
                .map(|a| (a.member_id() == own, a.member_id(), a.alarm()))
                .collect::<Vec<_>>()
        ));
        let mut mine = etcd_client::AlarmOptions::new();
        mine.with_member(own);
        c.alarm(AlarmAction::Activate, AlarmType::Nospace, Some(mine))
            .await
            .unwrap();
        let listed = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .unwrap();
        let mut members: Vec<String> = listed
            .alarms()
            .iter()
            .map(|a| {
                if a.member_id() == own {
                    "own".into()
                } else {
                    a.member_id().to_string()
                }
            })
            .collect();
        members.sort();
        lines.push(format!("listed under: {members:?}"));
        for a in listed.alarms() {
            let mut m = etcd_client::AlarmOptions::new();
            m.with_member(a.member_id());
            c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(m))
                .await
                .unwrap();
        }
        let d = c.defragment().await.unwrap();
        lines.push(format!("defragment header: {}", d.header().is_some()));
        transcripts.push(lines);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}
