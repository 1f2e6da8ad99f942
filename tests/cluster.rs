//! Three basalt members replicate through Raft: writes on any member are
//! read on every member, a leader killed is replaced while the others go
//! on serving and comes back caught up, leases and watches work through
//! followers; and what etcdctl shows of the cluster, and the errors when
//! there is no quorum, are what a real 3-member etcd 3.4 shows.

mod support;

use std::time::Duration;

use etcd_client::{EventType, GetOptions, PutOptions};
use support::cluster::Cluster;
use support::{describe_error, sample, scrape, Kind};

async fn get_value(c: &mut etcd_client::Client, key: &str) -> Option<Vec<u8>> {
    let r = c.get(key, None).await.expect("get");
    r.kvs().first().map(|kv| kv.value().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_member_are_read_on_every_member() {
    let cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    for round in 0..5 {
        for i in 0..clients.len() {
            let key = format!("k/{round}/{i}");
            clients[i]
                .put(key.as_str(), format!("v{round}{i}"), None)
                .await
                .expect("put on any member");
            // Linearizable: every member sees it at once.
            for (j, other) in clients.iter_mut().enumerate() {
                assert_eq!(
                    get_value(other, &key).await.as_deref(),
                    Some(format!("v{round}{i}").as_bytes()),
                    "write on m{i} not read on m{j}"
                );
            }
        }
    }
    // Same revision and the same data on every member.
    let mut seen = Vec::new();
    for c in clients.iter_mut() {
        let r = c
            .get("k/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let kvs: Vec<(Vec<u8>, Vec<u8>, i64)> = r
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
            .collect();
        seen.push((r.header().unwrap().revision(), kvs));
    }
    assert_eq!(seen[0].1.len(), 15);
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "members differ");
    // Hash at one revision is the same on every member.
    let rev = seen[0].0;
    let mut hashes = Vec::new();
    for c in clients.iter_mut() {
        hashes.push(c.hash_kv(rev).await.unwrap().hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_catches_up_when_back() {
    let mut cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let survivor = (leader + 1) % 3;
    let mut c = cluster.client(survivor).await;
    c.put("before", "1", None).await.unwrap();
    cluster.kill(leader);
    // The others elect a new leader and go on taking writes.
    let mut written = 0;
    for attempt in 0..100 {
        match c.put(format!("during/{attempt}"), "x", None).await {
            Ok(_) => written += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        if written >= 20 {
            break;
        }
    }
    assert_eq!(written, 20, "the two survivors did not take writes");
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    cluster.restart(leader).await;
    let mut back = cluster.client(leader).await;
    let r = back
        .get(
            "during/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(r.count(), 20, "the restarted member caught up");
    assert_eq!(
        get_value(&mut back, "before").await.as_deref(),
        Some(&b"1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_watches_work_through_followers() {
    let cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut f = cluster.client(follower).await;
    let mut o = cluster.client(other).await;
    // A watch on one follower sees a write made through the other.
    let mut stream = o
        .watch("w/", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let lease = f.lease_grant(3, None).await.unwrap();
    f.put(
        "w/leased",
        "v",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    let event = loop {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch event in time")
            .unwrap()
            .unwrap();
        if let Some(e) = resp.events().first() {
            break e.clone();
        }
    };
    assert_eq!(event.event_type(), EventType::Put);
    // Keepalives sent to a follower keep the lease alive past its TTL.
    let (mut keeper, mut acks) = f.lease_keep_alive(lease.id()).await.unwrap();
    for _ in 0..5 {
        keeper.keep_alive().await.unwrap();
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack.ttl(), 3, "keepalive through a follower");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        get_value(&mut o, "w/leased").await.is_some(),
        "expired despite keepalives"
    );
    drop(keeper);
    // Without keepalives the leader expires it; every member sees the delete.
    let delete = loop {
        let resp = tokio::time::timeout(Duration::from_secs(15), stream.message())
            .await
            .expect("expiry in time")
            .unwrap()
            .unwrap();
        if let Some(e) = resp.events().first() {
            break e.clone();
        }
    };
    assert_eq!(delete.event_type(), EventType::Delete);
    assert!(get_value(&mut f, "w/leased").await.is_none());
}

/// LeaseTimeToLive on a follower answers what the leader knows, as etcd
/// forwards it: a keepalive sent to the leader renews only the leader's
/// clock. Fails if the follower answers from its own clock (about 6 s
/// left instead of the renewed 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_time_to_live_on_a_follower_is_the_leaders_answer() {
    let cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let mut l = cluster.client(leader).await;
    let mut f = cluster.client((leader + 1) % 3).await;
    let lease = l.lease_grant(10, None).await.unwrap().id();
    l.put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (mut keeper, mut acks) = l.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().ttl(), 10);
    let r = f
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert!(
        r.ttl() >= 9,
        "the follower says {} s are left of a lease the leader just renewed to 10 s",
        r.ttl()
    );
    assert_eq!(r.granted_ttl(), 10);
    assert_eq!(r.keys(), [b"leased".to_vec()]);
    let unknown = f.lease_time_to_live(lease + 1, None).await.unwrap();
    assert_eq!((unknown.ttl(), unknown.granted_ttl()), (-1, 0));
}

/// `--experimental-initial-corrupt-check`: a restarted member whose data
/// differs from its peers' at the same revision exits 1 before serving a
/// client, with etcd's "found data inconsistency with peers"; a healthy
/// restarted member passes the check and serves. Fails if the check is
/// skipped (the tampered member serves its extra key) or misjudges a
/// healthy member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_corrupt_check_stops_a_member_whose_data_differs() {
    let mut cluster =
        Cluster::start(Kind::Basalt, 3, &["--experimental-initial-corrupt-check"]).await;
    let leader = cluster.wait_leader().await;
    let (healthy, victim) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut l = cluster.client(leader).await;
    for i in 0..10 {
        l.put(format!("k{i}"), "v", None).await.unwrap();
    }
    // A healthy member restarts through the check.
    cluster.restart(healthy).await;
    assert!(
        cluster.members[healthy]
            .log()
            .contains("initial corruption checking passed"),
        "{}",
        cluster.members[healthy].log()
    );
    assert!(cluster.terminate(victim));
    diverge(&cluster.members[victim].data_dir);
    for i in 0..5 {
        l.put(format!("after/{i}"), "v", None).await.unwrap();
    }
    cluster.respawn(victim);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.members[victim].exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the member with diverged data is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.members[victim].log();
    assert!(log.contains("found data inconsistency with peers"), "{log}");
    assert!(log.contains("found different hash values from remote peer"));
}

/// The Raft term of a lone member (the others killed) after `wait`: with
/// pre-vote its campaigns never win a pre-vote, so its term stays; without,
/// every election timeout raises it.
async fn lone_member_terms(extra: &[&str], wait: Duration) -> (u64, u64) {
    let mut cluster = Cluster::start(Kind::Basalt, 3, extra).await;
    let leader = cluster.wait_leader().await;
    let lone = (leader + 1) % 3;
    let mut c = cluster.client(lone).await;
    let before = c.status().await.unwrap().raft_term();
    cluster.kill(leader);
    cluster.kill((leader + 2) % 3);
    tokio::time::sleep(wait).await;
    let after = c.status().await.unwrap().raft_term();
    (before, after)
}

/// `--pre-vote`: on by default (etcd 3.5's default), off with
/// `--pre-vote=false` as etcd 3.4 runs by default. Fails if the flag is
/// ignored either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_vote_keeps_a_lone_members_term_and_can_be_turned_off() {
    let wait = Duration::from_secs(4);
    let (before, after) = lone_member_terms(&[], wait).await;
    assert_eq!(after, before, "with pre-vote the lone member's term moved");
    let (before, after) = lone_member_terms(&["--pre-vote=false"], wait).await;
    assert!(
        after >= before + 2,
        "without pre-vote a lone member campaigns every election timeout: term {before} then {after}"
    );
}

/// The series etcd's monitoring mixin (its alert rules and Grafana
/// dashboard) queries, with `--metrics extensive` as the mixin assumes for
/// `grpc_server_handling_seconds`. (`etcd_network_peer_sent_failures_total`
/// appears only once a send failed, on etcd as here.)
const MIXIN_SERIES: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_failed_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_db_total_size_in_bytes",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_network_peer_round_trip_time_seconds_bucket",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "process_resident_memory_bytes",
];

/// Every series of etcd's monitoring mixin is there, the peers' round
/// trips are measured, the handling times of the calls made and the puts
/// every member applied are counted. Fails if a family is renamed or missing, if `--metrics
/// extensive` is ignored, or if peers are never pinged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_monitoring_mixin_finds_every_series_it_queries() {
    let cluster = Cluster::start(Kind::Basalt, 3, &["--metrics=extensive"]).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client(leader).await;
    c.put("k", "v", None).await.unwrap();
    // Peers are pinged every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let text = scrape(&cluster.members[leader].client_url);
    let missing: Vec<&str> = MIXIN_SERIES
        .iter()
        .copied()
        .filter(|name| {
            !text.lines().any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']))
            })
        })
        .collect();
    assert!(missing.is_empty(), "missing series: {missing:?}");
    let count = |prefix: &str| -> Vec<f64> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let rtts = count("etcd_network_peer_round_trip_time_seconds_count{To=");
    assert_eq!(rtts.len(), 2, "one round trip histogram per peer");
    assert!(rtts.iter().all(|n| *n >= 1.0), "peers not pinged: {rtts:?}");
    assert_eq!(
        count("etcd_network_active_peers{"),
        vec![1.0, 1.0],
        "both peers connected"
    );
    let puts = count(
        "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\"",
    );
    assert_eq!(puts, vec![1.0]);
    // Every member counts the puts it applied, as etcd's mvcc does.
    let follower = scrape(&cluster.members[(leader + 1) % 3].client_url);
    assert_eq!(sample(&follower, "etcd_mvcc_put_total"), Some(1.0));
    assert_eq!(sample(&follower, "etcd_mvcc_delete_total"), Some(0.0));
    // Without --metrics extensive, as etcd, no handling time histograms.
    let plain = Cluster::start(Kind::Basalt, 1, &[]).await;
    assert!(!scrape(&plain.members[0].client_url).contains("grpc_server_handling_seconds"));
}

/// Makes a stopped member's store diverge: it applies the next log index
/// with a write of its own (`only-here`), so at the next revision it holds
/// another key than its peers and skips the entry they apply there.
fn diverge(data_dir: &std::path::Path) {
    use basalt_engine::mvcc::{Op, PutRequest, Store, StoreOptions};
    let mut store = Store::open(&data_dir.join("member/store"), StoreOptions::default()).unwrap();
    let next = store.last_applied() + 1;
    let put = PutRequest {
        key: b"only-here".to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    };
    store.apply(next, &Op::Put(put)).unwrap();
    store.checkpoint().unwrap();
}

/// Replaces what differs between two clusters: member ids, ports, times.
fn normalise_etcdctl(text: &str, cluster: &Cluster) -> String {
    let mut out = text.to_string();
    for (i, m) in cluster.members.iter().enumerate() {
        out = out.replace(&m.client_url, &format!("<client{i}>"));
        out = out.replace(&m.peer_url, &format!("<peer{i}>"));
    }
    out.lines()
        .map(|line| {
            // "id, status, name, peer URLs, client URLs, is learner": the
            // id (hex, without leading zeros) differs with the ports.
            line.split(", ")
                .enumerate()
                .map(|(i, f)| {
                    if i == 0 {
                        "<id>".to_string()
                    } else {
                        f.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_sees_the_cluster_as_it_sees_a_real_etcd_cluster() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let cluster = Cluster::start(kind, 3, &[]).await;
        let mut lines = Vec::new();
        let out = cluster.etcdctl(&["member", "list"]);
        assert!(out.status.success(), "{kind:?}: {out:?}");
        let mut members: Vec<String> =
            normalise_etcdctl(&String::from_utf8_lossy(&out.stdout), &cluster)
                .lines()
                .map(str::to_string)
                .collect();
        members.sort();
        lines.extend(members);
        let out = cluster.etcdctl(&["endpoint", "health", "--cluster"]);
        assert!(out.status.success(), "{kind:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let healthy = text
            .matches("is healthy: successfully committed proposal")
            .count();
        lines.push(format!("healthy members: {healthy}"));
        let out = cluster.etcdctl(&["endpoint", "status", "--cluster", "-w", "json"]);
        assert!(out.status.success(), "{kind:?}: {out:?}");
        let json = String::from_utf8_lossy(&out.stdout);
        let leaders: std::collections::BTreeSet<String> = json
            .split("\"leader\":")
            .skip(1)
            .map(|s| s.split(',').next().unwrap().to_string())
            .collect();
        lines.push(format!("distinct leaders reported: {}", leaders.len()));
        lines.push(format!(
            "members reporting: {}",
            json.matches("\"Endpoint\"").count()
        ));
        // Writes through one member are read through another.
        let out = cluster.etcdctl(&["put", "greeting", "hello"]);
        lines.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let mut c = cluster.client(2).await;
        lines.push(format!("{:?}", get_value(&mut c, "greeting").await));
        transcripts.push(lines);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}

/// With two of three members gone, a write and a linearizable read fail
/// with what etcd answers (and a serializable read is still served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_requests_fail_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let mut cluster = Cluster::start(kind, 3, &[]).await;
        let mut c = cluster.client(0).await;
        c.put("k", "v", None).await.unwrap();
        cluster.kill(1);
        cluster.kill(2);
        let mut lines = Vec::new();
        let put = c.put("k", "v2", None).await;
        lines.push(format!(
            "put: {}",
            put.map(|_| "ok".to_string())
                .unwrap_or_else(|e| describe_error(&e))
        ));
        let get = c.get("k", None).await;
        lines.push(format!(
            "linearizable get: {}",
            get.map(|_| "ok".to_string())
                .unwrap_or_else(|e| describe_error(&e))
        ));
        let get = c
            .get("k", Some(GetOptions::new().with_serializable()))
            .await
            .map(|r| r.kvs()[0].value().to_vec());
        lines.push(format!("serializable get: {get:?}"));
        transcripts.push(lines);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}

/// kube-apiserver's watches carry `hasleader: true`: when the member loses
/// its leader such a stream ends with etcd's "no leader", and a new one is
/// refused, as on a real etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_watches_end_without_a_leader_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let mut cluster = Cluster::start(kind, 3, &[]).await;
        let opts = etcd_client::ConnectOptions::new().with_require_leader(true);
        let mut c =
            etcd_client::Client::connect([cluster.members[0].client_url.as_str()], Some(opts))
                .await
                .unwrap();
        let mut stream = c.watch("rl", None).await.unwrap();
        c.put("rl", "1", None).await.unwrap();
        cluster.kill(1);
        cluster.kill(2);
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Err(_) => break "still open after 30 s".to_string(),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => break "ended without an error".to_string(),
                Ok(Err(e)) => break describe_error(&e),
            }
        };
        let again = match c.watch("rl", None).await {
            Ok(mut s) => match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                Ok(Err(e)) => describe_error(&e),
                other => format!("opened: {other:?}"),
            },
            Err(e) => describe_error(&e),
        };
        transcripts.push(vec![
            format!("open stream: {ended}"),
            format!("new stream: {again}"),
        ]);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}

/// `etcdctl move-leader` hands leadership to the member named (refused for
/// a stranger), and a leader stopped with SIGTERM hands it over before it
/// exits, so the others have a leader at once: as on a real etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request_and_on_sigterm_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let mut cluster = Cluster::start(kind, 3, &[]).await;
        let mut lines = Vec::new();
        let leader = cluster.wait_leader().await;
        let target = (leader + 1) % 3;
        let target_id = cluster
            .client(target)
            .await
            .status()
            .await
            .unwrap()
            .header()
            .unwrap()
            .member_id();
        let out = cluster.etcdctl(&["move-leader", &format!("{target_id:x}")]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        lines.push(format!(
            "move-leader: exit {:?}, {}",
            out.status.code(),
            text.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ));
        lines.push(format!(
            "leader is the target: {}",
            cluster.wait_leader().await == target
        ));
        let out = cluster.etcdctl(&["move-leader", "1234"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        lines.push(format!(
            "move-leader to a stranger: exit {:?}, bad transferee: {}",
            out.status.code(),
            err.contains("etcdserver: bad leader transferee")
        ));
        // SIGTERM the leader: the others lead at once, no election wait.
        // (etcd re-raises the signal and so exits non-zero; basalt exits 0.)
        let _ = cluster.terminate(target);
        let survivor = (target + 1) % 3;
        let status = cluster.client(survivor).await.status().await.unwrap();
        lines.push(format!(
            "survivors have a leader at once: {}",
            status.leader() != 0 && status.leader() != target_id
        ));
        transcripts.push(lines);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}

/// A follower paused while the leader wrote more than its log keeps is
/// sent the leader's store as a snapshot stream: it installs it, serves
/// the same data (equal hashes), and its watcher gets every event it
/// missed exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_gets_a_snapshot_and_its_watchers_miss_nothing() {
    let mut cluster = Cluster::start(
        Kind::Basalt,
        3,
        &[
            "--snapshot-count",
            "100",
            "--experimental-snapshot-catchup-entries",
            "50",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut f = cluster.client(follower).await;
    let mut watch = f
        .watch("s/", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    cluster.pause(follower);
    let mut l = cluster.client(leader).await;
    const WRITES: usize = 600;
    let mut revisions = Vec::new();
    for i in 0..WRITES {
        let r = l
            .put(format!("s/{:03}", i % 250), format!("v{i}"), None)
            .await
            .unwrap();
        revisions.push(r.header().unwrap().revision());
    }
    // Checkpoints every second compact the leader's log past the follower.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.resume(follower);
    let mut seen = Vec::new();
    while seen.len() < WRITES {
        let Ok(resp) = tokio::time::timeout(Duration::from_secs(30), watch.message()).await else {
            let logs: Vec<String> = cluster
                .members
                .iter()
                .map(|m| {
                    m.log()
                        .lines()
                        .filter(|l| {
                            std::env::var_os("RUST_LOG").is_some() || !l.contains(" DEBUG ")
                        })
                        .map(|l| format!("{}: {l}", m.name))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            panic!(
                "the follower's watcher has {} of {WRITES} events after 30 s\n{}",
                seen.len(),
                logs.join("\n")
            );
        };
        for e in resp.unwrap().unwrap().events() {
            let kv = e.kv().unwrap();
            seen.push((kv.mod_revision(), kv.value().to_vec()));
        }
    }
    let expected: Vec<(i64, Vec<u8>)> = revisions
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, format!("v{i}").into_bytes()))
        .collect();
    assert_eq!(seen, expected, "every missed event exactly once, in order");
    let rev = *revisions.last().unwrap();
    let mut hashes = Vec::new();
    for i in 0..3 {
        hashes.push(cluster.client(i).await.hash_kv(rev).await.unwrap().hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    assert!(
        cluster.members[follower]
            .log()
            .contains("installed a snapshot from the leader"),
        "the follower caught up without a snapshot: the test proves nothing"
    );
    let count = f
        .get(
            "s/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(count, 250);
}

/// A follower whose watchers are behind history the leader compacted gets
/// a snapshot: each such watcher is canceled with the compact revision
/// (etcd's answer when a watcher's events are gone), on every executor,
/// never silently skipping events. The paused follower may still receive
/// the entries the leader sent before it stopped reading (they wait in its
/// socket) and apply some of them before the snapshot: whatever a watcher
/// gets is every revision from its start, in order, and it either reaches
/// the last write or is canceled with the compact revision just after its
/// last event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_behind_a_compaction_are_canceled_when_their_member_installs_a_snapshot() {
    let mut cluster = Cluster::start(
        Kind::Basalt,
        3,
        &[
            "--snapshot-count",
            "100",
            "--experimental-snapshot-catchup-entries",
            "50",
            "--cores",
            "2",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    // Four connections: dealt round-robin, they land on both executors.
    let mut watches = Vec::new();
    for _ in 0..4 {
        let mut f = cluster.client(follower).await;
        let stream = f
            .watch("c/", Some(etcd_client::WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        watches.push((f, stream));
    }
    cluster.pause(follower);
    let l = cluster.client(leader).await;
    let put = |i: usize| {
        let mut l = l.clone();
        async move {
            l.put(format!("c/{:03}", i % 50), format!("v{i}"), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision()
        }
    };
    // More writes than the leader sends a follower without an answer (512
    // appends): the follower applies at most those when it wakes, then
    // needs a snapshot, taken after the compaction.
    let mut compacted = 0;
    for i in 0..600 {
        compacted = put(i).await;
    }
    l.clone().compact(compacted, None).await.unwrap();
    let mut last = 0;
    for i in 600..800 {
        last = put(i).await;
    }
    // Checkpoints every second compact the leader's log past the follower.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.resume(follower);
    let mut canceled = 0;
    for (n, (_, stream)) in watches.iter_mut().enumerate() {
        let mut next = 2;
        loop {
            let resp = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .unwrap_or_else(|_| {
                    let log = cluster.members[follower].log();
                    let tail: Vec<&str> = log.lines().filter(|l| !l.contains(" DEBUG ")).collect();
                    panic!(
                        "watcher {n}: nothing in 30 s after revision {next}; the follower's log:\n{}",
                        tail[tail.len().saturating_sub(20)..].join("\n")
                    )
                })
                .unwrap()
                .unwrap();
            if resp.canceled() {
                assert_eq!(resp.compact_revision(), compacted, "watcher {n}: {resp:?}");
                assert!(
                    next < compacted,
                    "watcher {n} was canceled at {next}, past the compaction at {compacted}"
                );
                canceled += 1;
                break;
            }
            for e in resp.events() {
                let rev = e.kv().unwrap().mod_revision();
                assert_eq!(rev, next, "watcher {n}: events skipped or repeated");
                next += 1;
            }
            if next > last {
                break;
            }
        }
    }
    let log = cluster.members[follower].log();
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the follower caught up without a snapshot: the test proves nothing"
    );
    let gone = log.contains("the events a snapshot skipped are gone");
    assert_eq!(
        canceled,
        if gone { 4 } else { 0 },
        "every watcher is canceled exactly when the snapshot skipped compacted events"
    );
    eprintln!("watchers canceled by the snapshot: {canceled} of 4");
}

/// An alarm raised while a follower was away reaches it with the
/// snapshot it installs (the entry that raised it is no longer in the
/// leader's log): the follower lists it and refuses writes as the others
/// do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_reach_a_follower_with_its_snapshot() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let mut cluster = Cluster::start(
        Kind::Basalt,
        3,
        &[
            "--snapshot-count",
            "100",
            "--experimental-snapshot-catchup-entries",
            "50",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut l = cluster.client(leader).await;
    let leader_id = l.status().await.unwrap().header().unwrap().member_id();
    cluster.pause(follower);
    // More writes than the leader sends a paused follower (512 appends),
    // then the alarm, then deletes (allowed under NOSPACE) so the log
    // moves on past it.
    for i in 0..600 {
        l.put(format!("a/{:03}", i % 100), "v", None).await.unwrap();
    }
    let mut raise = AlarmOptions::new();
    raise.with_member(leader_id);
    l.alarm(AlarmAction::Activate, AlarmType::Nospace, Some(raise))
        .await
        .unwrap();
    for i in 0..100 {
        l.delete(format!("a/{i:03}"), None).await.unwrap();
    }
    // Checkpoints every second compact the leader's log past the follower.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.resume(follower);
    let mut f = cluster.client(follower).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let alarms = f
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .unwrap();
        let listed: Vec<(u64, AlarmType)> = alarms
            .alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect();
        if listed == [(leader_id, AlarmType::Nospace)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower lists {listed:?} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = f.put("a/new", "v", None).await.unwrap_err().to_string();
    assert!(err.contains("database space exceeded"), "{err}");
    assert!(
        cluster.members[follower]
            .log()
            .contains("installed a snapshot from the leader"),
        "the follower caught up without a snapshot: the test proves nothing"
    );
}

/// A stream to a member's peer port from a member of another cluster, or
/// from a stranger, is refused with the reason; garbage is dropped; the
/// member serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_other_clusters_and_strangers() {
    use basalt_net::peer::{
        Frame, FrameDecoder, FrameEncoder, Hello, HelloReply, Refusal, StreamKind, WireLimits,
    };
    use std::io::{Read, Write};

    let cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let mut c = cluster.client(0).await;
    let status = c.status().await.unwrap();
    let header = status.header().unwrap();
    let (cluster_id, me) = (header.cluster_id(), header.member_id());
    let peer_addr = cluster.members[0]
        .peer_url
        .trim_start_matches("http://")
        .to_string();
    let ask = |hello: Hello| -> Option<HelloReply> {
        let mut s = std::net::TcpStream::connect(&peer_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        FrameEncoder::new(WireLimits::default())
            .hello(&hello, &mut out)
            .unwrap();
        s.write_all(&out).unwrap();
        let mut dec = FrameDecoder::new(WireLimits::default());
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = dec.next_frame().unwrap() {
                return match frame.decode().unwrap() {
                    Frame::HelloReply(r) => Some(r),
                    _ => None,
                };
            }
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return None;
            }
            dec.push(&buf[..n]);
        }
    };
    let other_cluster = ask(Hello::new(cluster_id ^ 1, 0xdead, me, StreamKind::Messages));
    assert!(
        matches!(
            other_cluster,
            Some(HelloReply::Refused(Refusal::ClusterIdMismatch { .. }))
        ),
        "{other_cluster:?}"
    );
    let stranger = ask(Hello::new(cluster_id, 0xdead, me, StreamKind::Messages));
    assert!(
        matches!(
            stranger,
            Some(HelloReply::Refused(Refusal::UnknownMember { id: 0xdead }))
        ),
        "{stranger:?}"
    );
    let mut s = std::net::TcpStream::connect(&peer_addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        s.read(&mut buf).unwrap_or(0),
        0,
        "garbage gets the stream closed"
    );
    c.put("still", "serving", None).await.unwrap();
    assert!(
        cluster.members[0].log().contains("cluster ID mismatch")
            || cluster.members[0].log().contains("refused a peer"),
        "the refusal is logged"
    );
}

/// A member over its quota raises NOSPACE through the log: every member
/// lists the alarm and refuses writes, and disarming it on any member
/// lets writes through everywhere, as on a real etcd cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nospace_alarm_holds_on_every_member_as_on_etcd() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let cluster = Cluster::start(kind, 3, &["--quota-backend-bytes", "1048576"]).await;
        let leader = cluster.wait_leader().await;
        let mut l = cluster.client(leader).await;
        let mut lines = Vec::new();
        let mut hit = None;
        for i in 0..400 {
            if let Err(e) = l.put(format!("fill{i}"), vec![b'x'; 16 * 1024], None).await {
                hit = Some(describe_error(&e));
                break;
            }
        }
        lines.push(format!("leader fill: {hit:?}"));
        let leader_id = l.status().await.unwrap().header().unwrap().member_id();
        // The alarm reaches the others through the log.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..3 {
            let mut c = cluster.client(i).await;
            let alarms = c
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
                .unwrap();
            let put = c.put("small", "v", None).await;
            // Each member over its own quota raises its own alarm, when it
            // gets there: which one is listed first (the leader's or a
            // follower's) depends on timing, on etcd as on basalt.
            let _ = leader_id;
            lines.push(format!(
                "member {}: a NOSPACE listed {}, put {}",
                if i == leader { "leader" } else { "follower" },
                alarms
                    .alarms()
                    .iter()
                    .any(|a| a.alarm() == AlarmType::Nospace),
                put.map(|_| "ok".to_string())
                    .unwrap_or_else(|e| describe_error(&e))
            ));
        }
        lines.sort();
        // Free space and disarm through a follower.
        let follower = (leader + 1) % 3;
        let mut f = cluster.client(follower).await;
        f.delete(
            "fill",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
        let rev = f.get("x", None).await.unwrap().header().unwrap().revision();
        f.compact(rev, None).await.unwrap();
        for i in 0..3 {
            cluster.client(i).await.defragment().await.unwrap();
        }
        let alarms = f
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .unwrap();
        for a in alarms.alarms() {
            let mut opts = AlarmOptions::new();
            opts.with_member(a.member_id());
            f.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..3 {
            let put = cluster.client(i).await.put("after", "v", None).await;
            lines.push(format!("after disarm, put on member: {}", put.is_ok()));
        }
        transcripts.push(lines);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}

/// A follower killed (-9) right after it installed a snapshot restarts as
/// the same member of the same cluster and serves the data: what it needs
/// to re-enter Raft was made durable with the installed store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_right_after_installing_a_snapshot_comes_back() {
    let mut cluster = Cluster::start(
        Kind::Basalt,
        3,
        &[
            "--snapshot-count",
            "100",
            "--experimental-snapshot-catchup-entries",
            "50",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    cluster.pause(follower);
    let mut l = cluster.client(leader).await;
    // More than the leader pipelines to a silent follower (512 appends),
    // so the rest is compacted away before it wakes.
    for i in 0..800 {
        l.put(format!("s/{i:03}"), "v", None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.resume(follower);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.members[follower]
        .log()
        .contains("installed a snapshot from the leader")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot installed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(follower);
    cluster.restart(follower).await;
    let mut f = cluster.client(follower).await;
    let count = f
        .get(
            "s/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(count, 800);
    let members = f.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
}

/// With `--experimental-enable-lease-checkpoint`, the leader records each
/// lease's remaining TTL in the log, so a new leader goes on from there
/// instead of giving the lease its full TTL again; a keepalive clears the
/// record through the log, so a renewed lease never dies early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_checkpoints_carry_remaining_ttls_to_a_new_leader() {
    let mut cluster = Cluster::start(
        Kind::Basalt,
        3,
        &[
            "--experimental-enable-lease-checkpoint",
            "--experimental-lease-checkpoint-interval=3s",
        ],
    )
    .await;
    let leader = cluster.wait_leader().await;
    let mut l = cluster.client(leader).await;
    let idle = l.lease_grant(16, None).await.unwrap().id();
    let renewed = l.lease_grant(16, None).await.unwrap().id();
    // Checkpoints at about 3 s and 6 s record 13 s and 10 s left.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (mut keeper, mut acks) = l.lease_keep_alive(renewed).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().ttl(), 16);
    drop((keeper, acks));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_leader().await;
    // The new lessor promotes at its next expiry tick (every 500 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut n = cluster.client(new_leader).await;
    let ttl = |r: etcd_client::LeaseTimeToLiveResponse| (r.ttl(), r.granted_ttl());
    let (idle_left, granted) = ttl(n.lease_time_to_live(idle, None).await.unwrap());
    assert_eq!(granted, 16);
    assert!(
        (5..=12).contains(&idle_left),
        "the new leader gave the idle lease {idle_left} s: its checkpointed \
         remaining TTL (about 10 s) plus the election timeout was expected, \
         not its full TTL"
    );
    let (renewed_left, _) = ttl(n.lease_time_to_live(renewed, None).await.unwrap());
    assert!(
        renewed_left >= 13,
        "the lease renewed after its checkpoint has {renewed_left} s left: \
         the keepalive did not clear the checkpoint"
    );
}

/// With `--experimental-corrupt-check-time`, the leader compares every
/// member's HashKV at the same point of the log. A member whose store lost
/// an entry the others applied (and holds a write they do not) gets the
/// CORRUPT alarm; every member then refuses writes with etcd's
/// `etcdserver: corrupt cluster` (DataLoss) and still serves reads, as
/// etcd 3.4's corrupt applier does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_diverged_gets_the_corrupt_alarm_and_writes_stop() {
    use etcd_client::{AlarmAction, AlarmType};
    let mut cluster =
        Cluster::start(Kind::Basalt, 3, &["--experimental-corrupt-check-time=1s"]).await;
    let leader = cluster.wait_leader().await;
    let victim = (leader + 1) % 3;
    let mut l = cluster.client(leader).await;
    for i in 0..20 {
        l.put(format!("k{i}"), "v", None).await.unwrap();
    }
    // Healthy members agree, check after check.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cluster.members[leader]
        .log()
        .contains("corruption check: hashes agree")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no corruption check passed on the leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alarms = l.alarm(AlarmAction::Get, AlarmType::None, None).await;
    assert!(alarms.unwrap().alarms().is_empty());
    let victim_id = cluster
        .client(victim)
        .await
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .member_id();
    assert!(cluster.terminate(victim));
    diverge(&cluster.members[victim].data_dir);
    for i in 0..5 {
        l.put(format!("after/{i}"), "v", None).await.unwrap();
    }
    cluster.restart(victim).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let corrupt = loop {
        let alarms = l
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .unwrap();
        let listed: Vec<(u64, AlarmType)> = alarms
            .alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect();
        if !listed.is_empty() {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CORRUPT alarm within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(corrupt, vec![(victim_id, AlarmType::Corrupt)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let e = c.put("refused", "v", None).await.unwrap_err();
        assert_eq!(
            describe_error(&e),
            "code=DataLoss message=\"etcdserver: corrupt cluster\"",
            "member {i}"
        );
        assert!(get_value(&mut c, "k0").await.is_some(), "reads go on");
    }
}

/// What `/metrics` says of the cluster is true, as on etcd: every member
/// has a leader, exactly one says it leads, each saw a leader change, and
/// the process and proposal families of etcd's monitoring mixin are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_tell_the_truth_about_the_cluster_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let cluster = Cluster::start(kind, 3, &[]).await;
        let leader = cluster.wait_leader().await;
        // Every member is asked something, and the leader's log reaches
        // both followers.
        for i in 0..3 {
            let mut c = cluster.client(i).await;
            c.put(format!("m{i}"), "v", None).await.unwrap();
        }
        let _ = leader;
        let mut members = Vec::new();
        let mut leaders = 0.0;
        for m in &cluster.members {
            let mut lines = Vec::new();
            let text = scrape(&m.client_url);
            leaders += sample(&text, "etcd_server_is_leader").unwrap_or(-1.0);
            lines.push(format!(
                "has leader {:?}, leader changes seen > 0: {}, failed proposals {:?}, pending {:?}",
                sample(&text, "etcd_server_has_leader"),
                sample(&text, "etcd_server_leader_changes_seen_total").unwrap_or(0.0) > 0.0,
                sample(&text, "etcd_server_proposals_failed_total"),
                sample(&text, "etcd_server_proposals_pending"),
            ));
            let labelled_positive = |prefix: &str| {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .filter(|v| *v > 0.0)
                    .count()
            };
            // How much a follower sends back, and on which stream, differs
            // between etcd's transport and basalt's; the leader sends to
            // both followers and every member hears from a peer on both.
            let is_leader = sample(&text, "etcd_server_is_leader") == Some(1.0);
            lines.push(format!(
                "{}: peers sent to {}, received from some: {}",
                if is_leader { "leader" } else { "follower" },
                if is_leader {
                    labelled_positive("etcd_network_peer_sent_bytes_total{To=\"").to_string()
                } else {
                    "-".to_string()
                },
                labelled_positive("etcd_network_peer_received_bytes_total{From=\"") > 0,
            ));
            for name in [
                "etcd_network_client_grpc_received_bytes_total",
                "etcd_network_client_grpc_sent_bytes_total",
                "process_resident_memory_bytes",
                "process_cpu_seconds_total",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ] {
                lines.push(format!(
                    "{name} > 0: {}",
                    sample(&text, name).unwrap_or(0.0) > 0.0
                ));
            }
            members.push(lines);
        }
        // Which member leads differs from run to run: compare as a set.
        members.sort();
        members.push(vec![format!("members that lead: {leaders}")]);
        transcripts.push(members);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}
