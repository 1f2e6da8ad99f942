//! etcdctl 3.4 against basalt: the same commands run against a real etcd and
//! against basalt, and their normalised outputs must match.

mod support;

use support::{etcdctl_transcript as run, Kind, Server};

const SCRIPT: &[&[&str]] = &[
    &["put", "foo", "bar"],
    &["put", "foo", "baz", "--prev-kv"],
    &["get", "foo"],
    &["put", "fop", "1"],
    &["put", "fo", "2"],
    &["get", "fo", "--prefix"],
    &["get", "fo", "--prefix", "--keys-only"],
    &["get", "fo", "--prefix", "--limit", "1"],
    &["get", "fo", "--prefix", "--count-only", "-w", "fields"],
    &["get", "foo", "--rev", "2"],
    &[
        "get",
        "",
        "--from-key",
        "--order",
        "DESCEND",
        "--sort-by",
        "VALUE",
    ],
    &["get", "foo", "-w", "fields"],
    &["del", "fop"],
    &["del", "fo", "--prefix", "--prev-kv"],
    &["del", "nothing"],
    &["put", "", "x"],
    &["get", "foo", "--rev", "99"],
    &["compaction", "2"],
    &["compaction", "1"],
    &["get", "foo", "--rev", "1"],
    &["lease", "grant", "100"],
    &["lease", "revoke", "1234"],
    &["lease", "timetolive", "1234"],
    &["alarm", "list"],
];

#[tokio::test]
async fn etcdctl_commands_match_etcd() {
    let etcd = Server::start(Kind::Etcd).await;
    let expected: Vec<String> = SCRIPT.iter().map(|args| run(&etcd, args)).collect();
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    for (args, want) in SCRIPT.iter().zip(&expected) {
        let got = run(&basalt, args);
        assert_eq!(
            &got,
            want,
            "etcdctl {args:?} differs from etcd\nbasalt log:\n{}",
            basalt.log()
        );
    }
}

#[tokio::test]
async fn etcdctl_txn_matches_etcd() {
    let input = "mod(\"k\") = \"0\"\n\nput k created\nget k\n\nget k\n\n";
    let mut outputs = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut out = Vec::new();
        for _ in 0..2 {
            let mut child = std::process::Command::new(support::ETCDCTL_BIN)
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &server.endpoint, "txn"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("etcdctl");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write");
            let o = child.wait_with_output().expect("etcdctl txn");
            out.push(format!(
                "exit={} {}{}",
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        outputs.push(out);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[tokio::test]
async fn etcdctl_watch_sees_puts() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let mut watch = std::process::Command::new(support::ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &server.endpoint,
                "watch",
                "wk",
                "--prefix",
                "--rev",
                "1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        for v in ["1", "2"] {
            let out = server.etcdctl(&["put", "wk1", v]);
            assert!(out.status.success(), "{kind:?}: put failed");
        }
        let out = server.etcdctl(&["del", "wk1"]);
        assert!(out.status.success());
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = watch.kill();
        let o = watch.wait_with_output().expect("watch output");
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            text, "PUT\nwk1\n1\nPUT\nwk1\n2\nDELETE\nwk1\n\n",
            "{kind:?} watch output"
        );
    }
}

#[tokio::test]
async fn etcdctl_member_list_and_endpoint_status() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start(kind).await;
        let out = server.etcdctl(&["member", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{kind:?}: member list failed");
        let fields: Vec<&str> = text.trim().split(", ").collect();
        assert_eq!(fields.len(), 6, "{kind:?}: {text}");
        assert_eq!(fields[1], "started");
        assert_eq!(fields[2], "default");
        assert_eq!(fields[4], server.endpoint);
        assert_eq!(fields[5], "false");
        let out = server.etcdctl(&["endpoint", "status", "-w", "json"]);
        assert!(out.status.success(), "{kind:?}: endpoint status failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\"leader\""), "{kind:?}: {text}");
        let out = server.etcdctl(&["endpoint", "health"]);
        assert!(
            out.status.success(),
            "{kind:?}: endpoint health failed: {:?}",
            out
        );
    }
}
