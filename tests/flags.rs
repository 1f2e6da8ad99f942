//! basalt-only flags, end to end through the binary.

mod support;

use std::process::Command;

use support::{Kind, Server};

#[tokio::test]
async fn spin_before_park_is_applied_and_reported() {
    let server = Server::start_with(Kind::Basalt, &["--spin-before-park", "50us"]).await;
    let mut c = server.client().await;
    c.put("k", "v", None)
        .await
        .expect("put with spinning executors");
    let got = c.get("k", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");
    assert!(
        server.log().contains("spin_before_park=Some(50µs)"),
        "start-up log does not report the spin:\n{}",
        server.log()
    );
}

#[test]
fn a_bad_spin_duration_is_refused_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["--spin-before-park", "5000ms"])
        .output()
        .expect("run basalt");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("over the 1s limit"), "{stderr}");
}

/// etcd refuses a bad auto-compaction flag before starting, with exit 1 and
/// one of these messages; basalt must refuse the same input the same way.
#[test]
fn bad_auto_compaction_flags_are_refused_like_etcd() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--auto-compaction-mode=foo",
                "--auto-compaction-retention=1",
            ],
            "unknown auto-compaction-mode \"foo\"",
        ),
        (
            &[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=abc",
            ],
            "error parsing CompactionRetention: time: invalid duration \"abc\"",
        ),
        (
            &["--auto-compaction-retention=-1"],
            "error parsing CompactionRetention: time: missing unit in duration \"-1\"",
        ),
    ];
    for (args, message) in cases {
        assert_refused_like_etcd(args, message, message);
    }
}

/// With a retention set, the server compacts on its own (revision mode's
/// five-minute interval is too long for a test; periodic mode with a short
/// retention shows the flags are wired through).
#[tokio::test]
async fn periodic_auto_compaction_runs_from_the_flags() {
    let server = Server::start_with(
        Kind::Basalt,
        &[
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=500ms",
        ],
    )
    .await;
    let mut c = server.client().await;
    for i in 0..3 {
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let started = std::time::Instant::now();
    loop {
        let compacted = c.hash_kv(0).await.expect("hash_kv").compact_version();
        if compacted == 4 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no auto compaction to revision 4 yet (at {compacted})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        server.log().contains("completed auto compaction"),
        "{}",
        server.log()
    );
}

/// etcd's checks of the Raft timing flags, with its messages and exit 1.
#[test]
fn bad_raft_timing_flags_are_refused_like_etcd() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--heartbeat-interval=300", "--election-timeout=1000"],
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]",
        ),
        (
            &["--heartbeat-interval=1000", "--election-timeout=60000"],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (
            &["--heartbeat-interval=0"],
            "--heartbeat-interval must be >0 (set to 0ms)",
        ),
    ];
    for (args, message) in cases {
        assert_refused_like_etcd(args, message, message);
    }
}

/// etcd's checks of `--initial-cluster` against `--name` and
/// `--initial-advertise-peer-urls`: exit 1 with etcd's words, nothing served.
#[test]
fn an_initial_cluster_that_does_not_name_this_member_is_refused_like_etcd() {
    let adv = "http://127.0.0.1:23805";
    // (--initial-cluster, basalt's message, what etcd's says: it names the
    // URL it found missing and adds detail of its own after).
    let cases: [(&str, &str, &str); 3] = [
        (
            "y=http://127.0.0.1:23805",
            "couldn't find local name \"x\" in the initial cluster configuration",
            "couldn't find local name \"x\" in the initial cluster configuration",
        ),
        (
            "x=http://127.0.0.1:23806",
            "--initial-cluster has x=http://127.0.0.1:23806 but missing from --initial-advertise-peer-urls=http://127.0.0.1:23805",
            "--initial-cluster has x=http://127.0.0.1:23806 but missing from --initial-advertise-peer-urls=http://127.0.0.1:23805",
        ),
        (
            "x=http://127.0.0.1:23805,x=http://127.0.0.1:23807",
            "--initial-cluster has x=http://127.0.0.1:23805,http://127.0.0.1:23807 but missing from --initial-advertise-peer-urls=http://127.0.0.1:23805",
            "but missing from --initial-advertise-peer-urls=http://127.0.0.1:23805",
        ),
    ];
    for (cluster, basalt_says, etcd_says) in cases {
        let client = format!("http://127.0.0.1:{}", support::free_port());
        let peer = format!("http://127.0.0.1:{}", support::free_port());
        let args = [
            "--name",
            "x",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            adv,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
        ];
        assert_refused_like_etcd(&args, basalt_says, etcd_says);
    }
}

/// Runs basalt and etcd 3.4 with `args` (each in a data dir of its own):
/// both must exit 1 at once, saying what is given.
fn assert_refused_like_etcd(args: &[&str], basalt_says: &str, etcd_says: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (binary, kind, message) in [
        (env!("CARGO_BIN_EXE_basalt"), "basalt", basalt_says),
        ("/usr/bin/etcd", "etcd", etcd_says),
    ] {
        let out = Command::new(binary)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path().join(kind))
            .output()
            .unwrap_or_else(|e| panic!("run {binary}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind} {args:?}: {stderr}");
        assert!(stderr.contains(message), "{kind} {args:?}: {stderr}");
    }
}

/// Bad TLS input stops basalt as it stops etcd 3.4: exit 1, Go's words.
#[test]
fn bad_tls_files_and_flags_are_refused_like_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = support::pki::Ca::new(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server", "server", &["127.0.0.1"], 1);
    let other = ca.issue(dir.path(), "other", "other", &["127.0.0.1"], 2);
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let arg = |p: &std::path::Path| p.display().to_string();
    let (cert, key) = (arg(&server.cert_file), arg(&server.key_file));
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![],
            "TLS key/cert (--cert-file, --key-file) must be provided for client url {client} with HTTPS scheme".into(),
        ),
        (
            vec!["--cert-file=/nonexistent/cert.pem".into(), format!("--key-file={key}")],
            "open /nonexistent/cert.pem: no such file or directory".into(),
        ),
        (
            vec![format!("--cert-file={cert}"), "--key-file=/nonexistent/key.pem".into()],
            "open /nonexistent/key.pem: no such file or directory".into(),
        ),
        (
            vec![format!("--cert-file={cert}"), format!("--key-file={}", arg(&other.key_file))],
            "tls: private key does not match public key".into(),
        ),
        (
            vec![format!("--cert-file={}", arg(&junk)), format!("--key-file={key}")],
            "tls: failed to find any PEM data in certificate input".into(),
        ),
        (
            vec![
                format!("--cert-file={cert}"),
                format!("--key-file={key}"),
                "--cipher-suites=foo".into(),
            ],
            "unexpected TLS cipher suite \"foo\"".into(),
        ),
    ];
    for (tls, message) in cases {
        let client = format!("https://127.0.0.1:{}", support::free_port());
        let peer = format!("http://127.0.0.1:{}", support::free_port());
        let message = message.replace("{client}", &client);
        let mut args = vec![
            "--listen-client-urls".to_string(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("default={peer}"),
        ];
        args.extend(tls);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused_like_etcd(&args, &message, &message);
    }
}

/// An https peer URL without peer certificates stops basalt as etcd.
#[test]
fn an_https_peer_url_without_peer_certificates_is_refused_like_etcd() {
    let client = format!("http://127.0.0.1:{}", support::free_port());
    let port = support::free_port();
    let peer = format!("https://127.0.0.1:{port}");
    let args = [
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("default={peer}"),
    ];
    let message = format!(
        "cannot listen on TLS for 127.0.0.1:{port}: KeyFile and CertFile are not presented"
    );
    assert_refused_like_etcd(&args, &message, &message);
}
