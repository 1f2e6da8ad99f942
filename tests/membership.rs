//! Membership changes as etcdctl makes them, against a real 3-member etcd
//! 3.4 and a 3-member basalt side by side: adding a learner, the errors
//! etcd gives (too many learners, peer URLs taken, a learner not in sync,
//! unknown members), updating its peer URLs and removing it — the same
//! outputs, errors and exit codes.

mod support;

use std::time::Duration;

use support::cluster::Cluster;
use support::{free_port, Kind};

/// Blanks what differs between two clusters: member and cluster ids
/// (lowercase hex of 12+ characters), ports, and the order of the members
/// in `ETCD_INITIAL_CLUSTER` (etcd lists them by id).
fn normalise(text: &str, cluster: &Cluster, extra_peers: &[String]) -> String {
    let mut out = text.to_string();
    for (i, m) in cluster.members.iter().enumerate() {
        out = out.replace(&m.client_url, &format!("<client{i}>"));
        out = out.replace(&m.peer_url, &format!("<peer{i}>"));
    }
    for (i, p) in extra_peers.iter().enumerate() {
        out = out.replace(p, &format!("<new-peer{i}>"));
    }
    let hex = |w: &str| w.len() >= 12 && w.chars().all(|c| c.is_ascii_hexdigit());
    let mut lines: Vec<String> = out
        .lines()
        .map(|line| {
            let mut l = String::new();
            let mut word = String::new();
            for c in line.chars().chain(std::iter::once('\n')) {
                if c.is_ascii_alphanumeric() {
                    word.push(c);
                    continue;
                }
                l.push_str(if hex(&word) { "<hex>" } else { &word });
                word.clear();
                if c != '\n' {
                    l.push(c);
                }
            }
            // etcdctl pads ids to 16 characters (%16x).
            while l.contains("  <hex>") {
                l = l.replace("  <hex>", " <hex>");
            }
            match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
                Some(rest) => {
                    let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                    parts.sort();
                    format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
                }
                None => l,
            }
        })
        .collect();
    // `member list`: one line per member, by id.
    if lines.iter().all(|l| l.starts_with("<hex>, ")) {
        lines.sort();
    }
    lines.join("\n")
}

fn run(cluster: &Cluster, endpoints: &[String], args: &[&str], extra: &[String]) -> String {
    let out = cluster.etcdctl_at(endpoints, args);
    format!(
        "$ etcdctl {}\nexit {}\n{}{}",
        normalise(&args.join(" "), cluster, extra),
        out.status.code().unwrap_or(-1),
        normalise(&String::from_utf8_lossy(&out.stdout), cluster, extra),
        normalise(
            &errors(&String::from_utf8_lossy(&out.stderr)),
            cluster,
            extra
        ),
    )
}

/// etcdctl's stderr without the client library's JSON log lines (their
/// times and connection names differ from run to run).
fn errors(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The id in "Member <id> added to cluster …" (etcdctl prints it in hex).
fn added_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .nth(1)
        .expect("Member <id> added")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_update_promote_remove_as_on_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let cluster = Cluster::start(kind, 3, &[]).await;
        // etcd adds a voter only once connected to every voter for 5 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let leader = cluster.wait_leader().await;
        let at_leader = vec![cluster.members[leader].client_url.clone()];
        let all = cluster.endpoints();
        let extra: Vec<String> = (0..2)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let mut t = Vec::new();
        let add = cluster.etcdctl_at(
            &all,
            &["member", "add", "n4", "--peer-urls", &extra[0], "--learner"],
        );
        assert!(add.status.success(), "{kind:?}: {add:?}");
        let learner = added_id(&String::from_utf8_lossy(&add.stdout));
        t.push(normalise(
            &String::from_utf8_lossy(&add.stdout),
            &cluster,
            &extra,
        ));
        t.push(run(&cluster, &all, &["member", "list"], &extra));
        t.push(run(
            &cluster,
            &all,
            &["member", "add", "n5", "--peer-urls", &extra[1], "--learner"],
            &extra,
        ));
        // In the same second the same URLs make the same id ("member ID
        // already exist"); a second later, the URLs are the conflict.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        t.push(run(
            &cluster,
            &all,
            &["member", "add", "n5", "--peer-urls", &extra[0]],
            &extra,
        ));
        t.push(run(
            &cluster,
            &at_leader,
            &["member", "promote", &learner],
            &extra,
        ));
        t.push(run(
            &cluster,
            &all,
            &["member", "update", &learner, "--peer-urls", &extra[1]],
            &extra,
        ));
        // etcd 3.4 lists the learner as a voter after this update (its
        // update drops IsLearner; etcd 3.5 fixed that); basalt keeps it a
        // learner, as the Raft membership still has it.
        let list = run(&cluster, &all, &["member", "list"], &extra);
        let expected_learner = match kind {
            Kind::Etcd => "unstarted, , <new-peer1>, , false",
            _ => "unstarted, , <new-peer1>, , true",
        };
        assert!(list.contains(expected_learner), "{kind:?}: {list}");
        t.push(run(
            &cluster,
            &all,
            &["member", "update", "1234", "--peer-urls", &extra[0]],
            &extra,
        ));
        t.push(run(&cluster, &all, &["member", "remove", &learner], &extra));
        t.push(run(&cluster, &all, &["member", "remove", &learner], &extra));
        t.push(run(
            &cluster,
            &all,
            &["member", "list", "-w", "simple"],
            &extra,
        ));
        t.push(run(
            &cluster,
            &all,
            &["member", "add", "n6", "--peer-urls", "foo"],
            &extra,
        ));
        // With a follower down, the leader refuses to add a voter or to
        // remove the other follower: either would leave no quorum.
        let (down, other) = ((leader + 1) % 3, (leader + 2) % 3);
        let other_id = {
            let list = cluster.etcdctl_at(&at_leader, &["member", "list"]);
            let name = format!(", m{other}, ");
            String::from_utf8_lossy(&list.stdout)
                .lines()
                .find(|l| l.contains(&name))
                .and_then(|l| l.split(", ").next())
                .expect("the other follower listed")
                .to_string()
        };
        let mut cluster = cluster;
        cluster.kill(down);
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.push(run(
            &cluster,
            &at_leader,
            &["member", "add", "n7", "--peer-urls", &extra[0]],
            &extra,
        ));
        t.push(run(
            &cluster,
            &at_leader,
            &["member", "remove", &other_id],
            &extra,
        ));
        transcripts.push(t);
    }
    for (etcd, basalt) in transcripts[0].iter().zip(&transcripts[1]) {
        assert_eq!(etcd, basalt, "etcd (left) vs basalt (right)");
    }
    let tail = &transcripts[1][transcripts[1].len() - 2..];
    assert!(
        tail.iter()
            .all(|t| t.contains("Error: etcdserver: unhealthy cluster")),
        "{tail:?}"
    );
}

/// A basalt member process outside the test cluster's own list.
struct Extra(std::process::Child);

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `ETCD_INITIAL_CLUSTER` in `member add`'s output.
fn initial_cluster(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .expect("ETCD_INITIAL_CLUSTER in the output")
        .trim_end_matches('"')
        .to_string()
}

/// etcd's runbook for growing a cluster: `member add --learner`, start the
/// new member with `--initial-cluster-state existing` and the
/// `--initial-cluster` the add printed, `member promote` once it caught up,
/// then the four voters keep serving with one of the old ones down; and
/// `member remove` shrinks the cluster back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_catches_up_is_promoted_and_removed() {
    use etcd_client::GetOptions;
    let mut cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let mut l = cluster.client(leader).await;
    for i in 0..100 {
        l.put(format!("before/{i}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let (peer, client) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let add = cluster.etcdctl(&["member", "add", "n4", "--peer-urls", &peer, "--learner"]);
    assert!(add.status.success(), "{add:?}");
    let stdout = String::from_utf8_lossy(&add.stdout).to_string();
    let id = u64::from_str_radix(&added_id(&stdout), 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("n4.log")).unwrap();
    let mut n4_process = Extra(
        std::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
            .args(["--name", "n4", "--data-dir"])
            .arg(dir.path().join("n4"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster(&stdout)])
            .args(["--initial-cluster-state", "existing"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start n4"),
    );
    let n4_log = || std::fs::read_to_string(dir.path().join("n4.log")).unwrap_or_default();
    // The learner receives the store and serves it (serializable reads).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([client.as_str()], None).await {
            let opts = GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            if let Ok(r) = c.get("before/", Some(opts)).await {
                if r.count() == 100 {
                    break;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the learner did not catch up within 30 s:\n{}",
            n4_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let joined = n4_log();
    assert!(
        joined.contains("joining a running cluster") && joined.contains("snapshot"),
        "n4 should join and install the leader's snapshot:\n{joined}"
    );
    // A learner serves Status and serializable reads only, as in etcd.
    let mut c4 = etcd_client::Client::connect([client.as_str()], None)
        .await
        .unwrap();
    let refused = |r: Result<(), etcd_client::Error>| match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            format!("{:?} {}", s.code(), s.message())
        }
        other => format!("{other:?}"),
    };
    let learner_says = "Unavailable etcdserver: rpc not supported for learner";
    assert_eq!(
        refused(c4.put("x", "y", None).await.map(|_| ())),
        learner_says
    );
    assert_eq!(
        refused(c4.get("before/1", None).await.map(|_| ())),
        learner_says
    );
    assert_eq!(refused(c4.member_list().await.map(|_| ())), learner_says);
    assert!(c4.status().await.unwrap().is_learner());
    // Promoted on the leader once in sync.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.wait_leader().await;
        let mut l = cluster.client(leader).await;
        match l.member_promote(id).await {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "promote: {e}\n{}",
                n4_log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut l = cluster.client(leader).await;
    let members = l.member_list().await.unwrap();
    let n4 = members
        .members()
        .iter()
        .find(|m| m.id() == id)
        .expect("n4 listed");
    assert!(!n4.is_learner(), "promoted");
    assert_eq!(members.members().len(), 4);
    // Four voters: one old member down, the other three (n4 among them)
    // still make a quorum and take writes; n4 has them.
    let down = (leader + 1) % 3;
    cluster.kill(down);
    let survivor = (down + 1) % 3;
    let mut s = cluster.client(survivor).await;
    let mut written = false;
    for _ in 0..100 {
        if s.put("after", "4", None).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(written, "3 of 4 voters took no write\n{}", n4_log());
    let mut c4 = etcd_client::Client::connect([client.as_str()], None)
        .await
        .unwrap();
    let r = c4.get("after", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"4", "linearizable read on n4");
    cluster.restart(down).await;
    // Shrink back.
    let remove = cluster.etcdctl(&["member", "remove", &format!("{id:x}")]);
    assert!(remove.status.success(), "{remove:?}");
    let out = cluster.etcdctl(&["member", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("n4"), "{text}");
    // The removed member stops, and never serves again with that data.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while n4_process.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed member still runs:\n{}",
            n4_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        n4_log().contains("the member has been permanently removed from the cluster"),
        "{}",
        n4_log()
    );
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["--name", "n4", "--data-dir"])
        .arg(dir.path().join("n4"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("n4={peer}")])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("the member has been permanently removed from the cluster"),
        "{again:?}"
    );
}

/// Removing the leader: it commits its own removal and stops; the other
/// two elect a leader among themselves and go on taking writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_removed_leader_stops_and_the_rest_elect_a_new_one() {
    let mut cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let mut l = cluster.client(leader).await;
    let leader_id = l.status().await.unwrap().header().unwrap().member_id();
    l.put("before", "1", None).await.unwrap();
    let remove = cluster.etcdctl(&["member", "remove", &format!("{leader_id:x}")]);
    assert!(remove.status.success(), "{remove:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !cluster.members[leader].exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed leader still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivor = (leader + 1) % 3;
    let mut s = cluster.client(survivor).await;
    let mut written = false;
    for _ in 0..100 {
        if s.put("after", "2", None).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(written, "the two left took no write");
    let members = s.member_list().await.unwrap();
    assert_eq!(members.members().len(), 2);
    assert!(members.members().iter().all(|m| m.id() != leader_id));
    let mut o = cluster.client((leader + 2) % 3).await;
    assert_eq!(o.get("after", None).await.unwrap().kvs()[0].value(), b"2");
}

/// etcd's disaster recovery: a snapshot restored on each of three new
/// members with the same `--initial-cluster*` flags (`etcdctl snapshot
/// restore` for etcd, `basalt --restore-snapshot` for basalt) starts one
/// cluster holding the snapshot's data, that takes writes and agrees on
/// its hash, as a real etcd 3.4 restored the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_snapshot_as_on_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let file = dir.path().join(format!("{kind:?}.db"));
        {
            let source = support::Server::start(kind).await;
            let mut c = source.client().await;
            for i in 0..50 {
                c.put(format!("k{i:02}"), format!("v{i}"), None)
                    .await
                    .unwrap();
            }
            c.delete("k00", None).await.unwrap();
            let out = source.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
            assert!(out.status.success(), "{kind:?}: {out:?}");
        }
        let cluster = Cluster::start_restored(kind, 3, &file).await;
        let mut t = Vec::new();
        t.push(run(
            &cluster,
            &cluster.endpoints(),
            &["member", "list"],
            &[],
        ));
        let leader = cluster.wait_leader().await;
        let mut l = cluster.client(leader).await;
        let r = l
            .get("k", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        t.push(format!(
            "{} keys, last revision {}",
            r.kvs().len(),
            r.header().unwrap().revision()
        ));
        let put = l.put("after", "x", None).await.unwrap();
        t.push(format!(
            "put at revision {}",
            put.header().unwrap().revision()
        ));
        let rev = put.header().unwrap().revision();
        let mut hashes = Vec::new();
        for i in 0..3 {
            let mut c = cluster.client(i).await;
            // Each member applies the put before it answers at its revision.
            let mut h = c.hash_kv(rev).await;
            for _ in 0..20 {
                if h.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                h = c.hash_kv(rev).await;
            }
            hashes.push(h.unwrap().hash());
        }
        t.push(format!(
            "hashes equal on every member: {}",
            hashes.windows(2).all(|w| w[0] == w[1])
        ));
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1], "etcd vs basalt");
}

/// A member removed while it was down learns it from its peers (they
/// refuse it as removed) when it comes back, and stops, as etcd's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_stops_when_it_comes_back() {
    let mut cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let gone = (leader + 1) % 3;
    let gone_id = cluster
        .client(gone)
        .await
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .member_id();
    cluster.kill(gone);
    let at_leader = vec![cluster.members[leader].client_url.clone()];
    let remove = cluster.etcdctl_at(&at_leader, &["member", "remove", &format!("{gone_id:x}")]);
    assert!(remove.status.success(), "{remove:?}");
    cluster.respawn(gone);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cluster.members[gone].exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed member still runs:\n{}",
            cluster.members[gone].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cluster.members[gone]
        .log()
        .contains("the member has been permanently removed from the cluster"));
    let mut l = cluster.client(leader).await;
    l.put("still", "serving", None).await.unwrap();
}

/// kill -9 of the leader while a membership change is in flight: the
/// change either took effect everywhere or nowhere, the two left elect a
/// leader and agree on the members, and the change can be made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_during_a_change_leaves_every_member_agreeing() {
    let mut cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut l = cluster.client(leader).await;
    let opts = etcd_client::MemberAddOptions::new().with_is_learner();
    let add = l.member_add([peer.clone()], Some(opts));
    // The add is on its way (or applied) when the leader dies.
    let _ = tokio::time::timeout(Duration::from_millis(5), add).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let lists = |cluster: &Cluster| {
        let cluster_urls: Vec<String> = (0..3)
            .filter(|&i| i != leader)
            .map(|i| cluster.members[i].client_url.clone())
            .collect();
        async move {
            let mut seen = Vec::new();
            for url in cluster_urls {
                let mut c = etcd_client::Client::connect([url.as_str()], None)
                    .await
                    .unwrap();
                let ms = c.member_list().await.unwrap();
                let mut ids: Vec<(u64, bool)> = ms
                    .members()
                    .iter()
                    .map(|m| (m.id(), m.is_learner()))
                    .collect();
                ids.sort();
                seen.push(ids);
            }
            seen
        }
    };
    // Whatever became of the add, both survivors list the same members
    // once they applied what the new leader committed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let agreed = loop {
        let mut c = cluster.client(new_leader).await;
        let _ = c.put("sync", "x", None).await;
        let seen = lists(&cluster).await;
        if seen[0] == seen[1] {
            break seen[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(agreed.len() == 3 || agreed.len() == 4, "{agreed:?}");
    // The change can be made (again): added now, or already there.
    let mut n = cluster.client(new_leader).await;
    let opts = etcd_client::MemberAddOptions::new().with_is_learner();
    match n.member_add([peer.clone()], Some(opts)).await {
        Ok(r) => assert_eq!(r.member_list().len(), 4),
        Err(e) => assert_eq!(agreed.len(), 4, "{e}"),
    }
    cluster.restart(leader).await;
    let back = cluster.client(leader).await.member_list().await.unwrap();
    assert_eq!(back.members().len(), 4, "the old leader catches up");
}
