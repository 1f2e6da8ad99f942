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
        transcripts.push(t);
    }
    for (etcd, basalt) in transcripts[0].iter().zip(&transcripts[1]) {
        assert_eq!(etcd, basalt, "etcd (left) vs basalt (right)");
    }
}
