//! etcd's authentication and RBAC through etcdctl 3.4: the same script of
//! `user`, `role`, `auth` commands and reads and writes with and without
//! `--user` runs against a real etcd and against basalt, and the outputs,
//! errors and exit codes must match; then what only basalt can show here:
//! the auth state surviving a restart, and being the same on every member
//! of a 3-member cluster.

mod support;

use support::cluster::Cluster;
use support::{etcdctl_transcript as run, Kind, Server};

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";

/// The script: set-up errors, permissions on keys, prefixes, ranges and
/// from-key, then what a user may and may not do once auth is on.
const SCRIPT: &[&[&str]] = &[
    &["auth", "enable"],
    &["user", "add", "root:rootpw"],
    &["user", "add", "root:again"],
    &["role", "add", "r1"],
    &["role", "add", "r1"],
    &["user", "add", "alice:alicepw"],
    &["user", "get", "alice"],
    &["user", "get", "nobody"],
    &["user", "list"],
    &["role", "list"],
    &["role", "grant-permission", "r1", "read", "foo"],
    &[
        "role",
        "grant-permission",
        "r1",
        "readwrite",
        "--prefix",
        "dir/",
    ],
    &["role", "grant-permission", "r1", "write", "--from-key", "m"],
    &["role", "grant-permission", "r1", "read", "a", "c"],
    &["role", "grant-permission", "nope", "read", "a"],
    &["role", "get", "r1"],
    &["role", "get", "nope"],
    &["user", "grant-role", "alice", "r1"],
    &["user", "grant-role", "alice", "nope"],
    &["user", "grant-role", "bob", "r1"],
    &["user", "get", "alice"],
    &["role", "revoke-permission", "r1", "foo"],
    &["role", "revoke-permission", "r1", "zzz"],
    &["role", "get", "r1"],
    &["auth", "enable"],
    &["put", "k", "v"],
    &["get", "k"],
    &["user", "list"],
    &[ROOT, "put", "foo", "1"],
    &[ROOT, "put", "dir/a", "2"],
    &[ROOT, "put", "b", "3"],
    &[ALICE, "get", "foo"],
    &[ALICE, "get", "dir/a"],
    &[ALICE, "get", "--prefix", "dir/"],
    &[ALICE, "get", "--prefix", "di"],
    &[ALICE, "put", "dir/b", "4"],
    &[ALICE, "put", "zzz", "5"],
    &[ALICE, "get", "zzz"],
    &[ALICE, "get", "a", "c"],
    &[ALICE, "get", "a", "d"],
    &[ALICE, "del", "dir/b"],
    &[ALICE, "del", "b"],
    &[ALICE, "put", "--prev-kv", "zzz", "6"],
    &["--user=alice:wrong", "get", "dir/a"],
    &["--user=nobody:x", "get", "dir/a"],
    &[ALICE, "user", "list"],
    &[ALICE, "user", "get", "alice"],
    &[ALICE, "user", "get", "root"],
    &[ALICE, "role", "get", "r1"],
    &[ALICE, "role", "add", "r2"],
    &[ALICE, "auth", "disable"],
    &[ALICE, "compaction", "1"],
    &[ALICE, "defrag"],
    &[ROOT, "user", "list"],
    &[ROOT, "role", "list"],
    &[ROOT, "user", "revoke-role", "alice", "r1"],
    &[ALICE, "get", "dir/a"],
    &[ROOT, "user", "revoke-role", "alice", "r1"],
    &[ROOT, "user", "revoke-role", "root", "root"],
    &[ROOT, "role", "delete", "root"],
    &[ROOT, "user", "delete", "root"],
    &[ROOT, "role", "delete", "r1"],
    &[ROOT, "role", "delete", "r1"],
    &[ROOT, "user", "delete", "alice"],
    &[ROOT, "user", "delete", "alice"],
    &[ALICE, "get", "dir/a"],
    &[ROOT, "auth", "disable"],
    &["get", "dir/a"],
    &["user", "list"],
    &["user", "delete", "root"],
    &["role", "list"],
];

/// Catches: any rule of the auth store or of the permission checks that
/// differs from etcd's (a missing error, a wrong message, an operation
/// allowed that etcd refuses or the reverse, a list out of order).
#[tokio::test]
async fn etcdctl_auth_script_matches_etcd() {
    let etcd = Server::start(Kind::Etcd).await;
    let expected: Vec<String> = SCRIPT.iter().map(|args| run(&etcd, args)).collect();
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let mut mismatches = Vec::new();
    for (args, want) in SCRIPT.iter().zip(&expected) {
        let got = run(&basalt, args);
        if &got != want {
            mismatches.push(format!("--- etcd:\n{want}\n--- basalt:\n{got}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} commands differ from etcd:\n{}\nbasalt log:\n{}",
        mismatches.len(),
        SCRIPT.len(),
        mismatches.join("\n"),
        basalt.log()
    );
}

#[track_caller]
fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn refused(out: std::process::Output) -> String {
    assert!(!out.status.success(), "etcdctl succeeded unexpectedly");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Users, roles, permissions and the switch, set up for the tests below.
fn set_up(etcdctl: impl Fn(&[&str]) -> std::process::Output) {
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "r1"],
        &[
            "role",
            "grant-permission",
            "r1",
            "readwrite",
            "--prefix",
            "a/",
        ],
        &["user", "grant-role", "alice", "r1"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Catches: auth state kept only in memory (not in the checkpointed
/// member metadata or not replayed from the log): after a restart auth
/// would be off, or the users gone.
#[tokio::test]
async fn auth_survives_a_restart() {
    let basalt = Server::start(Kind::Basalt).await;
    set_up(|args| basalt.etcdctl(args));
    ok(basalt.etcdctl(&[ALICE, "put", "a/1", "x"]));
    let basalt = basalt.restart(&[]).await;
    assert!(refused(basalt.etcdctl(&["get", "a/1"])).contains("user name is empty"));
    assert!(ok(basalt.etcdctl(&[ALICE, "get", "a/1"])).contains('x'));
    assert!(refused(basalt.etcdctl(&[ALICE, "put", "b", "x"])).contains("permission denied"));
    assert_eq!(ok(basalt.etcdctl(&[ROOT, "user", "list"])), "alice\nroot\n");
    // And once more after a checkpoint moved past the auth entries.
    let basalt = basalt.restart(&["--snapshot-count", "1"]).await;
    ok(basalt.etcdctl(&[ROOT, "put", "c", "1"]));
    ok(basalt.etcdctl(&[ROOT, "put", "c", "2"]));
    let basalt = basalt.restart(&[]).await;
    assert!(refused(basalt.etcdctl(&["get", "c"])).contains("user name is empty"));
    assert!(ok(basalt.etcdctl(&[ROOT, "get", "c"])).contains('2'));
}

/// Catches: auth applied on the proposing member only (not through the
/// log), or lost by a member that restarts: a follower would serve
/// anyone, or forget the users; a simple token known to the member that
/// issued it only (requests balanced to another member would fail with
/// `invalid auth token`).
#[tokio::test]
async fn auth_enabled_on_the_leader_holds_on_every_member() {
    let mut cluster = Cluster::start(Kind::Basalt, 3, &[]).await;
    let leader = cluster.wait_leader().await;
    let endpoints = cluster.endpoints();
    set_up(|args| cluster.etcdctl_at(&endpoints[leader..=leader], args));
    for (i, endpoint) in endpoints.iter().enumerate() {
        let at = std::slice::from_ref(endpoint);
        let denied = refused(cluster.etcdctl_at(at, &["put", "a/x", "1"]));
        assert!(
            denied.contains("user name is empty"),
            "member {i}: {denied}"
        );
        ok(cluster.etcdctl_at(at, &[ALICE, "put", "a/x", &i.to_string()]));
        let denied = refused(cluster.etcdctl_at(at, &[ALICE, "get", "b"]));
        assert!(denied.contains("permission denied"), "member {i}: {denied}");
    }
    // One token, from whichever member authenticated it, serves requests
    // balanced over all three (a simple token goes through the log).
    let options = etcd_client::ConnectOptions::new().with_user("alice", "alicepw");
    let mut c = etcd_client::Client::connect(endpoints.clone(), Some(options))
        .await
        .expect("connect");
    for n in 0..30 {
        let got = c.get("a/x", None).await;
        assert!(got.is_ok(), "request {n} with alice's token: {got:?}");
    }
    let follower = (leader + 1) % 3;
    cluster.restart(follower).await;
    let at = std::slice::from_ref(&endpoints[follower]);
    assert!(refused(cluster.etcdctl_at(at, &["get", "a/x"])).contains("user name is empty"));
    assert!(ok(cluster.etcdctl_at(at, &[ALICE, "get", "a/x"])).contains('2'));
    assert_eq!(
        ok(cluster.etcdctl_at(at, &[ROOT, "user", "list"])),
        "alice\nroot\n"
    );
}

/// What a user client sees of Txn, Watch and Lease checks and of a
/// password change, as etcd-client (Rust) reports it.
async fn client_scenario(server: &Server) -> support::Transcript {
    use etcd_client::{
        Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp, WatchOptions,
    };
    set_up(|args| server.etcdctl(args));
    let connect = |user: &str, password: &str| {
        let options = ConnectOptions::new().with_user(user, password);
        Client::connect([server.endpoint.clone()], Some(options))
    };
    let mut root = connect("root", "rootpw").await.expect("root");
    let mut alice = connect("alice", "alicepw").await.expect("alice");
    let mut t = support::Transcript { lines: Vec::new() };
    let txn = |other: &str| {
        Txn::new()
            .when([Compare::value("a/1", CompareOp::Equal, "x")])
            .and_then([TxnOp::put("a/2", "y", None)])
            .or_else([TxnOp::put(other, "z", None)])
    };
    let r = alice.txn(txn("a/3")).await.map(|r| r.succeeded());
    t.record("txn within a/", r);
    let r = alice.txn(txn("b")).await.map(|r| r.succeeded());
    t.record("txn whose else branch writes b", r);
    let r = alice
        .txn(Txn::new().when([Compare::version("b", CompareOp::Equal, 0)]))
        .await
        .map(|r| r.succeeded());
    t.record("txn comparing b", r);
    for (label, key, prefix) in [("watch b", "b", false), ("watch a/", "a/", true)] {
        let options = prefix.then(|| WatchOptions::new().with_prefix());
        match alice.watch(key, options).await {
            Ok(mut stream) => {
                let first = stream
                    .message()
                    .await
                    .map(|m| m.map(|m| (m.created(), m.canceled(), m.cancel_reason().to_string())));
                t.record(label, first);
            }
            Err(e) => t.record::<()>(label, Err(e)).unwrap_or(()),
        }
    }
    let lease = root.lease_grant(100, None).await.expect("grant").id();
    let with_lease = || Some(PutOptions::new().with_lease(lease));
    t.record(
        "root puts b on the lease",
        root.put("b", "x", with_lease()).await.map(|_| ()),
    );
    let r = alice.put("a/l", "x", with_lease()).await.map(|_| ());
    t.record("alice attaches a/l to the lease", r);
    let r = alice.lease_revoke(lease).await.map(|_| ());
    t.record("alice revokes the lease", r);
    t.record(
        "root revokes the lease",
        root.lease_revoke(lease).await.map(|_| ()),
    );
    let r = root
        .user_change_password("alice", "newpw")
        .await
        .map(|_| ());
    t.record("root changes alice's password", r);
    let r = alice.get("a/1", None).await.map(|r| r.kvs().len());
    t.record("alice with the old token", r);
    t
}

/// Catches: a Txn branch or compare not checked, a Watch created on a
/// range the user may not read, a lease revoked or joined by a user who
/// may not write its keys, a token still valid after a password change.
#[tokio::test]
async fn client_checks_match_etcd() {
    let etcd = Server::start(Kind::Etcd).await;
    let expected = client_scenario(&etcd).await;
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let got = client_scenario(&basalt).await;
    support::assert_transcripts_match("client checks", &expected, &got, &basalt);
}

/// Catches: the client certificate's CN not taken as the user under
/// `--client-cert-auth` (every call would be `user name is empty`), or
/// taken over a token (root's calls would be alice's).
#[tokio::test]
async fn client_certificate_cn_is_the_user_like_etcd() {
    use support::pki::{arg, Ca};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let server_cert = ca.issue(dir.path(), "server", "server", &["127.0.0.1"], 1);
    let alice = ca.issue(dir.path(), "alice", "alice", &[], 2);
    let flags = [
        format!("--cert-file={}", arg(&server_cert.cert_file)),
        format!("--key-file={}", arg(&server_cert.key_file)),
        format!("--trusted-ca-file={}", arg(&ca.cert_file)),
        "--client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tls = support::ClientTls {
        ca: Some(ca.cert_file.clone()),
        cert: Some((alice.cert_file.clone(), alice.key_file.clone())),
        ..support::ClientTls::default()
    };
    let script: &[&[&str]] = &[
        &["put", "a/cn", "1"],
        &["get", "a/cn"],
        &["get", "b"],
        &["user", "list"],
        &[ROOT, "user", "list"],
        &[ROOT, "put", "b", "2"],
    ];
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_tls(kind, tls.clone(), &flags).await;
        set_up(|args| server.etcdctl(args));
        let lines: Vec<String> = script.iter().map(|args| run(&server, args)).collect();
        transcripts.push(lines.join("\n"));
    }
    assert_eq!(
        transcripts[1], transcripts[0],
        "basalt (left) vs etcd (right)"
    );
    assert!(transcripts[0].contains("permission denied"));
}

/// Catches: `--auth-token jwt,…` not acted on (or its tokens refused):
/// etcdctl authenticates with a signed token and is checked as with a
/// simple one, on etcd and basalt alike.
#[tokio::test]
async fn jwt_tokens_work_like_etcds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let (private, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).expect("key");
    std::fs::write(&public, key.public_key_pem()).expect("key");
    let token = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256",
        public.display(),
        private.display()
    );
    let script: &[&[&str]] = &[
        &[ALICE, "put", "a/j", "1"],
        &[ALICE, "get", "a/j"],
        &[ALICE, "get", "b"],
        &[ROOT, "user", "list"],
        &["--user=alice:bad", "get", "a/j"],
    ];
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_with(kind, &[&token]).await;
        set_up(|args| server.etcdctl(args));
        let lines: Vec<String> = script.iter().map(|args| run(&server, args)).collect();
        transcripts.push(lines.join("\n"));
    }
    assert_eq!(
        transcripts[1], transcripts[0],
        "basalt (left) vs etcd (right)"
    );
    assert!(transcripts[0].contains("a/j\n1"), "{}", transcripts[0]);
}

/// Checks that `server` holds the users, roles and switch of `set_up`.
fn assert_auth_of_set_up(server: &Server) {
    let denied = refused(server.etcdctl(&["get", "a/1"]));
    assert!(denied.contains("user name is empty"), "{denied}");
    assert!(ok(server.etcdctl(&[ALICE, "get", "a/1"])).contains('x'));
    assert!(refused(server.etcdctl(&[ALICE, "put", "b", "x"])).contains("permission denied"));
    assert_eq!(ok(server.etcdctl(&[ROOT, "user", "list"])), "alice\nroot\n");
    assert!(ok(server.etcdctl(&[ROOT, "role", "get", "r1"])).contains("(prefix a/)"));
}

/// Catches: users, roles or the switch left out of the etcd-format
/// snapshot, or not read back on restore, either way: an etcd snapshot
/// restored in basalt, and a basalt snapshot restored in etcd, keep them
/// (passwords as bcrypt hashes each side verifies).
#[tokio::test]
async fn auth_travels_in_snapshots_both_ways() {
    use support::{basalt_restore, free_port};
    let dir = tempfile::tempdir().expect("tempdir");
    // etcd → basalt.
    let etcd = Server::start(Kind::Etcd).await;
    set_up(|args| etcd.etcdctl(args));
    ok(etcd.etcdctl(&[ALICE, "put", "a/1", "x"]));
    let from_etcd = dir.path().join("etcd.db");
    ok(etcd.etcdctl(&[ROOT, "snapshot", "save", from_etcd.to_str().unwrap()]));
    drop(etcd);
    let data_dir = dir.path().join("basalt");
    let out = basalt_restore(&from_etcd, &data_dir, &[]);
    assert!(out.status.success(), "restore: {out:?}");
    let basalt = Server::start_on(Kind::Basalt, data_dir, (free_port(), free_port())).await;
    assert_auth_of_set_up(&basalt);
    // basalt → etcd.
    let from_basalt = dir.path().join("basalt.db");
    ok(basalt.etcdctl(&[ROOT, "snapshot", "save", from_basalt.to_str().unwrap()]));
    drop(basalt);
    let ports = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let data_dir = dir.path().join("etcd");
    let out = std::process::Command::new(support::ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", from_basalt.to_str().unwrap()])
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "default",
        ])
        .args(["--initial-cluster", &format!("default={peer}")])
        .args(["--initial-advertise-peer-urls", &peer])
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl snapshot restore: {out:?}");
    let etcd = Server::start_on(Kind::Etcd, data_dir, ports).await;
    assert_auth_of_set_up(&etcd);
}

/// Catches: password checks run on the serving thread (bcrypt takes tens
/// of milliseconds each) or a failed one leaking the password into the
/// log: a stream of wrong passwords is refused one by one with etcd's
/// error, and other clients are served meanwhile.
#[tokio::test]
async fn a_stream_of_wrong_passwords_is_refused_and_others_are_served() {
    use etcd_client::{Client, ConnectOptions};
    let server = Server::start(Kind::Basalt).await;
    set_up(|args| server.etcdctl(args));
    let endpoint = server.endpoint.clone();
    let attacks: Vec<_> = (0..16)
        .map(|i| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let options = ConnectOptions::new().with_user("alice", format!("guess-{i}"));
                Client::connect([endpoint], Some(options)).await.err()
            })
        })
        .collect();
    let options = ConnectOptions::new().with_user("alice", "alicepw");
    let mut alice = Client::connect([endpoint], Some(options))
        .await
        .expect("alice");
    for n in 0..20 {
        let started = std::time::Instant::now();
        alice.put("a/busy", n.to_string(), None).await.expect("put");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "a put took {:?} during the guessing",
            started.elapsed()
        );
    }
    for a in attacks {
        let e = a
            .await
            .expect("task")
            .expect("a wrong password was accepted");
        assert_eq!(
            support::describe_error(&e),
            "code=InvalidArgument message=\"etcdserver: authentication failed, invalid user ID or password\""
        );
    }
    let log = server.log();
    assert!(!log.contains("guess-"), "a password in the log");
    assert!(
        log.contains("authentication failed"),
        "no log line for the refusals"
    );
}

/// Catches: Lock and Election acting with the server's rights rather than
/// the caller's (etcd's servers call their own client with the caller's
/// token). basalt only: etcd 3.4's Lock server does not answer a refused
/// Rust-client Lock in time to compare.
#[tokio::test]
async fn lock_and_election_need_the_callers_rights() {
    use etcd_client::{Client, ConnectOptions};
    let server = Server::start(Kind::Basalt).await;
    set_up(|args| server.etcdctl(args));
    let options = ConnectOptions::new().with_user("alice", "alicepw");
    let mut alice = Client::connect([server.endpoint.clone()], Some(options))
        .await
        .expect("alice");
    let held = alice.lock("a", None).await.expect("lock a/");
    alice.unlock(held.key()).await.expect("unlock a/");
    let denied = "code=Unknown message=\"etcdserver: permission denied\"";
    let e = alice.lock("b", None).await.expect_err("lock b/");
    assert_eq!(support::describe_error(&e), denied);
    let e = alice.campaign("b", "v", 0).await.expect_err("campaign b/");
    assert_eq!(support::describe_error(&e), denied);
    let e = alice.leader("b").await.expect_err("leader b/");
    assert_eq!(support::describe_error(&e), denied);
    alice.campaign("a", "v", 0).await.expect("campaign a/");
}

/// Catches: LeaseTimeToLive listing the keys of a lease to a user who may
/// not read them (etcd 3.5.8's fix; etcd 3.4.23 still lists them, so
/// basalt only).
#[tokio::test]
async fn lease_time_to_live_lists_keys_only_to_readers() {
    use etcd_client::{Client, ConnectOptions, LeaseTimeToLiveOptions, PutOptions};
    let server = Server::start(Kind::Basalt).await;
    set_up(|args| server.etcdctl(args));
    let connect = |user: &str, password: &str| {
        let options = ConnectOptions::new().with_user(user, password);
        Client::connect([server.endpoint.clone()], Some(options))
    };
    let mut root = connect("root", "rootpw").await.expect("root");
    let mut alice = connect("alice", "alicepw").await.expect("alice");
    let lease = root.lease_grant(100, None).await.expect("grant").id();
    let on_lease = Some(PutOptions::new().with_lease(lease));
    root.put("b", "x", on_lease).await.expect("put");
    let ttl = alice
        .lease_time_to_live(lease, None)
        .await
        .expect("no keys");
    assert!(ttl.keys().is_empty());
    let keys = Some(LeaseTimeToLiveOptions::new().with_keys());
    let e = alice
        .lease_time_to_live(lease, keys.clone())
        .await
        .expect_err("keys of b");
    assert_eq!(
        support::describe_error(&e),
        "code=PermissionDenied message=\"etcdserver: permission denied\""
    );
    let ttl = root.lease_time_to_live(lease, keys).await.expect("root");
    assert_eq!(ttl.keys(), [b"b".to_vec()]);
}
