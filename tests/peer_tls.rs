//! TLS between members: `https://` peer URLs with the `--peer-*` flags.
//! A cluster replicates over TLS (basalt, and etcd 3.4 with the same
//! flags); a member whose certificate another CA signed, or whose common
//! name is not `--peer-cert-allowed-cn`, is kept out while the others
//! serve. Certificates are made by the test (rcgen).

mod support;

use std::time::Duration;

use support::cluster::{Cluster, MemberPlan};
use support::pki::{arg, Ca};
use support::Kind;

/// One cluster at a time: members kept out redial every second, and that
/// churn of ephemeral ports can take a port another test's member was
/// about to bind (its free port is only reserved, not held).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three members on https peer URLs, member `i` with a certificate from
/// `signers[i]` for 127.0.0.1 and the host `names[i]`, with that common
/// name, all trusting `trusted`.
fn plans(
    dir: &std::path::Path,
    trusted: &Ca,
    signers: [&Ca; 3],
    names: [&str; 3],
) -> Vec<MemberPlan> {
    (0..3)
        .map(|i| {
            let cert = signers[i].issue(
                dir,
                &format!("peer{i}"),
                names[i],
                &["127.0.0.1", names[i]],
                10 + i as u64,
            );
            let mut plan = MemberPlan::loopback("https");
            plan.extra = vec![
                format!("--peer-cert-file={}", arg(&cert.cert_file)),
                format!("--peer-key-file={}", arg(&cert.key_file)),
                format!("--peer-trusted-ca-file={}", arg(&trusted.cert_file)),
                "--peer-client-cert-auth".into(),
            ];
            plan
        })
        .collect()
}

/// Writes on one member and reads the value back from every member.
async fn replicates(cluster: &Cluster, members: &[usize]) {
    let mut c = cluster.client(members[0]).await;
    c.put("over-peer-tls", "yes", None).await.expect("put");
    for &i in members {
        let mut c = cluster.client(i).await;
        let got = c
            .get("over-peer-tls", None)
            .await
            .expect("linearizable get");
        assert_eq!(got.kvs()[0].value(), b"yes", "member {i}");
    }
}

/// Whether member `i` answers a linearizable read within a few seconds.
async fn serves(cluster: &Cluster, i: usize) -> bool {
    let read = async {
        let mut c = cluster.client(i).await;
        c.get("probe", None).await.is_ok()
    };
    tokio::time::timeout(Duration::from_secs(4), read)
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn a_cluster_replicates_over_peer_tls_like_etcd() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    for kind in [Kind::Etcd, Kind::Basalt] {
        let plans = plans(dir.path(), &ca, [&ca, &ca, &ca], ["m0", "m1", "m2"]);
        let cluster = Cluster::start_planned(kind, plans, &[], &[]).await;
        replicates(&cluster, &[0, 1, 2]).await;
        let list = cluster.etcdctl(&["member", "list"]);
        let list = String::from_utf8_lossy(&list.stdout).to_string();
        assert_eq!(
            list.matches("https://127.0.0.1:").count(),
            3,
            "{kind:?}: {list}"
        );
    }
}

/// A member whose certificate another CA signed is refused by the others
/// (and they log it); the two others serve without it.
#[tokio::test]
async fn a_peer_with_a_certificate_of_another_ca_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let stranger = Ca::new(dir.path(), "stranger-ca");
    let plans = plans(dir.path(), &ca, [&ca, &ca, &stranger], ["m0", "m1", "m2"]);
    let mut cluster = Cluster::launch(Kind::Basalt, plans, &[], &[]);
    cluster.wait_ready(0).await;
    cluster.wait_ready(1).await;
    replicates(&cluster, &[0, 1]).await;
    assert!(!serves(&cluster, 2).await, "the stranger joined");
    let logs = cluster.members[0].log() + &cluster.members[1].log();
    assert!(
        logs.contains("rejected peer connection"),
        "no refusal logged:\n{logs}"
    );
}

/// `--peer-cert-allowed-cn`: a member with a certificate from the right CA
/// but another common name is kept out.
#[tokio::test]
async fn peer_cert_allowed_cn_is_enforced() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let plans = plans(
        dir.path(),
        &ca,
        [&ca, &ca, &ca],
        ["etcd-peer", "etcd-peer", "intruder"],
    );
    let mut cluster = Cluster::launch(
        Kind::Basalt,
        plans,
        &["--peer-cert-allowed-cn=etcd-peer"],
        &[],
    );
    cluster.wait_ready(0).await;
    cluster.wait_ready(1).await;
    replicates(&cluster, &[0, 1]).await;
    assert!(!serves(&cluster, 2).await, "the intruder joined");
    let logs = cluster.members[0].log() + &cluster.members[1].log();
    assert!(
        logs.contains("client certificate authentication failed"),
        "no refusal logged:\n{logs}"
    );
}

/// `--peer-auto-tls`: self-signed peer certificates, not verified (etcd's
/// behaviour), still encrypt the peer traffic; the cluster replicates.
#[tokio::test]
async fn a_cluster_with_peer_auto_tls_replicates() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let plans = (0..3).map(|_| MemberPlan::loopback("https")).collect();
    let cluster = Cluster::start_planned(Kind::Basalt, plans, &["--peer-auto-tls"], &[]).await;
    replicates(&cluster, &[0, 1, 2]).await;
    for m in &cluster.members {
        assert!(
            m.data_dir.join("fixtures/peer/cert.pem").exists(),
            "{}",
            m.name
        );
    }
}

/// `--peer-cert-allowed-hostname`: a member whose certificate is not valid
/// for that host name is kept out.
#[tokio::test]
async fn peer_cert_allowed_hostname_is_enforced() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let member = "member.etcd.test";
    let plans = plans(
        dir.path(),
        &ca,
        [&ca, &ca, &ca],
        [member, member, "intruder.test"],
    );
    let mut cluster = Cluster::launch(
        Kind::Basalt,
        plans,
        &["--peer-cert-allowed-hostname=member.etcd.test"],
        &[],
    );
    cluster.wait_ready(0).await;
    cluster.wait_ready(1).await;
    replicates(&cluster, &[0, 1]).await;
    assert!(!serves(&cluster, 2).await, "the intruder joined");
    let logs = cluster.members[0].log() + &cluster.members[1].log();
    assert!(
        logs.contains("client certificate authentication failed"),
        "no refusal logged:\n{logs}"
    );
}

/// A member added with `member add` joins a cluster whose peers talk TLS:
/// it asks them who it is over https (its own peer certificate, the
/// cluster's CA) and catches up from the leader's snapshot.
#[tokio::test]
async fn a_member_joins_over_peer_tls() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let plans = plans(dir.path(), &ca, [&ca, &ca, &ca], ["m0", "m1", "m2"]);
    let mut cluster = Cluster::start_planned(Kind::Basalt, plans, &[], &[]).await;
    replicates(&cluster, &[0, 1, 2]).await;
    let cert = ca.issue(dir.path(), "peer3", "m3", &["127.0.0.1", "m3"], 13);
    let mut plan = MemberPlan::loopback("https");
    plan.extra = vec![
        format!("--peer-cert-file={}", arg(&cert.cert_file)),
        format!("--peer-key-file={}", arg(&cert.key_file)),
        format!("--peer-trusted-ca-file={}", arg(&ca.cert_file)),
        "--peer-client-cert-auth".into(),
    ];
    let peer_url = plan.peer_url.clone();
    let i = cluster.add_slot(plan);
    let add = cluster.etcdctl(&["member", "add", "m3", "--peer-urls", &peer_url, "--learner"]);
    assert!(add.status.success(), "{add:?}");
    let initial = String::from_utf8_lossy(&add.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .expect("ETCD_INITIAL_CLUSTER")
        .trim_end_matches('"')
        .to_string();
    cluster.join(i, initial);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = cluster.client(i).await;
        let opts = etcd_client::GetOptions::new().with_serializable();
        if let Ok(r) = c.get("over-peer-tls", Some(opts)).await {
            if r.kvs().first().map(|kv| kv.value()) == Some(&b"yes"[..]) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m3 did not catch up over peer TLS:\n{}",
            cluster.members[i].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
