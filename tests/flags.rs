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

// ---- etcd's whole command line (issue 16) ----

/// etcd 3.5.1's binaries (scripts/install-test-deps.sh).
fn etcd35() -> std::path::PathBuf {
    let bin =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-etcd35/etcdbin/etcd");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        bin.display()
    );
    bin
}

/// The flags an etcd binary's `--help` lists, with the default it prints.
fn help_flags(etcd: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new(etcd)
        .arg("--help")
        .output()
        .expect("etcd --help");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut flags = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("  --") else {
            continue;
        };
        let (name, default) = rest.split_once(' ').unwrap_or((rest, ""));
        flags.push((name.to_string(), default.trim_matches('\'').to_string()));
    }
    assert!(
        flags.len() > 70,
        "too few flags in {} --help: {flags:?}",
        etcd.display()
    );
    flags
}

/// Flags the test's server set-up passes itself (ports, names, data dir),
/// and `--config-file`, which would replace every other flag.
const SET_UP: &[&str] = &[
    "name",
    "data-dir",
    "listen-client-urls",
    "advertise-client-urls",
    "listen-peer-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "config-file",
];

/// A value etcd accepts for `name`: the default its help prints, where
/// that is a value (`math.MaxUint32` and an empty duration are not).
fn sample_value(name: &str, default: &str) -> String {
    match (name, default) {
        (_, "math.MaxUint32") => "4294967295".into(),
        ("backend-batch-interval", "") => "10ms".into(),
        // 3.5.1's help prints no default for it.
        ("experimental-bootstrap-defrag-threshold-megabytes", "") => "0".into(),
        _ => default.to_string(),
    }
}

/// What `basalt --help` says basalt does with each flag.
fn basalt_effects() -> std::collections::BTreeMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--help")
        .output()
        .expect("basalt --help");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut effects = std::collections::BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("  --") else {
            continue;
        };
        let name = rest.split(' ').next().unwrap_or("").to_string();
        let what = lines.next().unwrap_or("").trim().to_string();
        effects.insert(name, what);
    }
    effects
}

/// Every flag `etcd --help` of 3.4.23 and 3.5.1 lists, at the value etcd
/// prints as its default, is taken by etcd (checked: it parses them all and
/// prints its version) and by a basalt that then starts and serves; each
/// flag basalt does not act on is named in exactly one warning.
#[tokio::test]
async fn every_flag_of_etcd_34_and_35_starts_basalt() {
    let effects = basalt_effects();
    for etcd in [std::path::PathBuf::from("/usr/bin/etcd"), etcd35()] {
        let mut args = Vec::new();
        for (name, default) in help_flags(&etcd) {
            assert!(
                effects.contains_key(&name),
                "basalt --help does not list --{name} (from {})",
                etcd.display()
            );
            if SET_UP.contains(&name.as_str()) {
                continue;
            }
            args.push(format!("--{name}={}", sample_value(&name, &default)));
        }
        let parsed = Command::new(&etcd)
            .args(&args)
            .arg("--version")
            .output()
            .expect("etcd");
        assert!(
            parsed.status.success(),
            "{} refuses {args:?}: {}",
            etcd.display(),
            String::from_utf8_lossy(&parsed.stderr)
        );

        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_with(Kind::Basalt, &refs).await;
        let mut c = server.client().await;
        c.put("k", "v", None).await.expect("put");
        assert_eq!(c.get("k", None).await.expect("get").kvs()[0].value(), b"v");
        let log = server.log();
        let mut without_effect = 0;
        for arg in &args {
            let name = arg[2..].split('=').next().unwrap();
            // Text lines ("…: --name is …") or, as the sample value of
            // --logger is zap, etcd's JSON lines ("msg":"--name is …").
            let says = format!("--{name} is accepted but has no effect in basalt");
            let warned = log.matches(&format!(": {says}")).count()
                + log.matches(&format!("\"msg\":\"{says}")).count();
            let expected = usize::from(
                effects[name].starts_with("[no effect") || effects[name].starts_with("[refused"),
            );
            without_effect += expected;
            assert_eq!(
                warned, expected,
                "--{name} ({}) warned {warned} times:\n{log}",
                effects[name]
            );
        }
        // Many of etcd's flags are ones basalt does not act on (29 when
        // this was written): a check that found none would be checking
        // nothing.
        assert!(
            without_effect > 20,
            "only {without_effect} flags warned about:\n{log}"
        );
    }
}

/// Flags with Go's syntax forms are read alike: `-flag value`,
/// `--flag value`, `--flag=value`, a boolean alone.
#[tokio::test]
async fn gos_flag_forms_are_all_read() {
    let server = Server::start_with(
        Kind::Basalt,
        &[
            "-initial-cluster-token",
            "tok-a",
            "--max-txn-ops",
            "3",
            "-max-request-bytes=2048",
            "--strict-reconfig-check",
        ],
    )
    .await;
    let mut c = server.client().await;
    let ops: Vec<etcd_client::TxnOp> = (0..4)
        .map(|i| etcd_client::TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let err = c
        .txn(etcd_client::Txn::new().and_then(ops))
        .await
        .expect_err("4 ops over --max-txn-ops 3");
    assert!(
        err.to_string()
            .contains("too many operations in txn request"),
        "{err}"
    );
    let err = c
        .put("big", vec![0u8; 4096], None)
        .await
        .expect_err("over --max-request-bytes");
    assert!(err.to_string().contains("request is too large"), "{err}");
    assert!(server
        .log()
        .contains(": --strict-reconfig-check is accepted but has no effect in basalt"));
}

/// Runs `binary` with `args` and `env`; its status and stderr. Killed (and
/// the test failed) if it has not ended in 10 s: a bad flag ends at once.
fn run_briefly(binary: &str, args: &[String], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {binary}: {e}"));
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{binary} {args:?} is still running");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad flags and values end basalt as they end etcd 3.4: the same first
/// line (Go's flag package words) and exit 2 for what the parser refuses;
/// exit 1 with etcd's words for what etcd refuses after parsing.
#[test]
fn bad_flags_and_values_fail_as_on_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = format!("http://127.0.0.1:{}", support::free_port());
    let client = format!("http://127.0.0.1:{}", support::free_port());
    let ports = |kind: &str| -> Vec<String> {
        vec![
            format!("--data-dir={}", dir.path().join(kind).display()),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
        ]
    };
    // (flag, what the parser says: both print this line first, exit 2)
    let parse_errors: &[(&[&str], &str)] = &[
        (&["--bogus"], "flag provided but not defined: -bogus"),
        (&["-bogus=1"], "flag provided but not defined: -bogus"),
        (&["--heartbeat-interval=abc"], "invalid value \"abc\" for flag -heartbeat-interval: parse error"),
        (&["--heartbeat-interval", "-5"], "invalid value \"-5\" for flag -heartbeat-interval: parse error"),
        (&["--max-request-bytes=99999999999999999999"], "invalid value \"99999999999999999999\" for flag -max-request-bytes: value out of range"),
        (&["--quota-backend-bytes=1.5"], "invalid value \"1.5\" for flag -quota-backend-bytes: parse error"),
        (&["--initial-cluster-state=foo"], "invalid value \"foo\" for flag -initial-cluster-state: invalid value"),
        (&["--proxy=maybe"], "invalid value \"maybe\" for flag -proxy: invalid value"),
        (&["--client-cert-auth=maybe"], "invalid boolean value \"maybe\" for -client-cert-auth: parse error"),
        (&["--grpc-keepalive-min-time=5"], "invalid value \"5\" for flag -grpc-keepalive-min-time: parse error"),
        (&["--experimental-corrupt-check-time=1d"], "invalid value \"1d\" for flag -experimental-corrupt-check-time: parse error"),
        (&["--max-concurrent-streams=-1"], "invalid value \"-1\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"-1\": invalid syntax"),
        (&["--listen-client-urls=foo"], "invalid value \"foo\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: foo"),
        (&["--listen-peer-urls=http://127.0.0.1"], "invalid value \"http://127.0.0.1\" for flag -listen-peer-urls: URL address does not have the form \"host:port\": http://127.0.0.1"),
        (&["--advertise-client-urls=http://127.0.0.1:1/x"], "invalid value \"http://127.0.0.1:1/x\" for flag -advertise-client-urls: URL must not contain a path: http://127.0.0.1:1/x"),
        (&["--cors=foo"], "invalid value \"foo\" for flag -cors: URL scheme must be http, https, unix, or unixs: foo"),
        (&["--name"], "flag needs an argument: -name"),
        (&["---x"], "bad flag syntax: ---x"),
    ];
    for (bad, says) in parse_errors {
        for (binary, kind) in [
            (env!("CARGO_BIN_EXE_basalt"), "basalt"),
            ("/usr/bin/etcd", "etcd"),
        ] {
            let mut args = ports(kind);
            args.extend(bad.iter().map(|s| s.to_string()));
            let (code, stderr) = run_briefly(binary, &args, &[]);
            assert_eq!(code, Some(2), "{kind} {bad:?}: {stderr}");
            assert_eq!(
                stderr.lines().next(),
                Some(*says),
                "{kind} {bad:?}: {stderr}"
            );
        }
    }
    // What etcd refuses after parsing, with exit 1.
    struct Later {
        args: &'static [&'static str],
        env: &'static [(&'static str, &'static str)],
        says: &'static str,
        advertise: bool,
    }
    let later = |args, env, says| Later {
        args,
        env,
        says,
        advertise: true,
    };
    let later_errors = [
        later(&["positional"], &[], "error verifying flags, 'positional' is not a valid flag"),
        later(&["--logger=bogus"], &[], "error verifying flags, unknown logger option \"bogus\""),
        later(&[], &[("ETCD_HEARTBEAT_INTERVAL", "abc")], "error verifying flags, invalid value \"abc\" for ETCD_HEARTBEAT_INTERVAL: parse error"),
        later(&[], &[("ETCD_NAME", "other")], "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"),
        Later {
            advertise: false,
            ..later(&[], &[], "--advertise-client-urls is required when --listen-client-urls is set explicitly")
        },
    ];
    for Later {
        args: bad,
        env,
        says,
        advertise,
    } in later_errors
    {
        for (binary, kind) in [
            (env!("CARGO_BIN_EXE_basalt"), "basalt"),
            ("/usr/bin/etcd", "etcd"),
        ] {
            let mut args = ports(kind);
            if !advertise {
                args.retain(|a| !a.starts_with("--advertise-client-urls"));
            }
            args.push("--name=default".into());
            args.extend(bad.iter().map(|s| s.to_string()));
            let (code, stderr) = run_briefly(binary, &args, env);
            assert_eq!(code, Some(1), "{kind} {bad:?} {env:?}: {stderr}");
            assert!(stderr.contains(says), "{kind} {bad:?} {env:?}: {stderr}");
        }
    }
}

/// What basalt cannot be is refused, not run as something else: `--enable-v2=true`
/// (etcd would serve the v2 API), `--proxy=on`, `--force-new-cluster`,
/// discovery bootstrap. At etcd's defaults those flags are accepted.
#[test]
fn what_basalt_cannot_serve_is_refused_at_start() {
    for (bad, says) in [
        (
            "--enable-v2=true",
            "--enable-v2 is not supported by basalt: basalt serves the v3 API only",
        ),
        ("--enable-v2", "--enable-v2 is not supported by basalt"),
        (
            "--proxy=on",
            "--proxy is not supported by basalt: basalt has no v2 proxy mode",
        ),
        (
            "--force-new-cluster",
            "--force-new-cluster is not supported by basalt",
        ),
        (
            "--discovery=https://discovery.example/x",
            "--discovery is not supported by basalt",
        ),
        (
            "--experimental-enable-v2v3=/v2",
            "--experimental-enable-v2v3 is not supported by basalt",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = vec![
            format!("--data-dir={}", dir.path().join("d").display()),
            bad.to_string(),
        ];
        let (code, stderr) = run_briefly(env!("CARGO_BIN_EXE_basalt"), &args, &[]);
        assert_eq!(code, Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("error verifying flags, {says}")),
            "{bad}: {stderr}"
        );
        assert!(!dir.path().join("d").exists(), "{bad}: a data dir was made");
    }
}

/// `--version` prints etcd's four lines in etcd's order (the first is
/// what scripts read: the etcd API version basalt serves), then basalt's.
#[test]
fn version_prints_etcds_layout() {
    let ours = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--version")
        .output()
        .expect("basalt");
    let theirs = Command::new("/usr/bin/etcd")
        .arg("--version")
        .output()
        .expect("etcd");
    assert_eq!(ours.status.code(), Some(0));
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
    let label = |l: &str| l.split_once(": ").map(|(k, _)| k.to_string());
    let ours_labels: Vec<_> = ours.lines().filter_map(label).collect();
    let theirs_labels: Vec<_> = theirs.lines().filter_map(label).collect();
    assert_eq!(ours_labels[..4], theirs_labels[..], "{ours}");
    let lines: Vec<&str> = ours.lines().collect();
    assert_eq!(
        lines[0], "etcd Version: 3.5.17",
        "the etcd API version Status reports"
    );
    assert_eq!(
        lines[4],
        format!("basalt Version: {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(lines[5].starts_with("Rust Version: rustc 1."), "{ours}");
    assert!(lines[3].starts_with("Go OS/Arch: linux/"), "{ours}");
    let sha = lines[1].strip_prefix("Git SHA: ").unwrap();
    // The commit the build script saw when this package was built (the
    // binary and this test are built together; HEAD may have moved since).
    match option_env!("BASALT_GIT_SHA") {
        Some(built) => assert_eq!(sha, built, "{ours}"),
        None => assert_eq!(sha, "not set", "{ours}"),
    }
    // Flags before --version are still checked, as etcd checks them.
    let bad = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["--bogus", "--version"])
        .output()
        .expect("basalt");
    assert_eq!(bad.status.code(), Some(2));
}

/// `--client-cert-allowed-hostname`: a client certificate must be valid for
/// that host name, on basalt as on etcd 3.4.
#[tokio::test]
async fn client_cert_allowed_hostname_admits_only_that_host_like_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = support::pki::Ca::new(dir.path(), "ca");
    let server_cert = ca.issue(dir.path(), "server", "server", &["127.0.0.1"], 1);
    let good = ca.issue(dir.path(), "good", "good", &["client.example"], 2);
    let bad = ca.issue(dir.path(), "bad", "bad", &["other.example"], 3);
    let arg = |p: &std::path::Path| p.display().to_string();
    let flags = [
        format!("--cert-file={}", arg(&server_cert.cert_file)),
        format!("--key-file={}", arg(&server_cert.key_file)),
        format!("--trusted-ca-file={}", arg(&ca.cert_file)),
        "--client-cert-auth".to_string(),
        "--client-cert-allowed-hostname=client.example".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let as_client = |cert: &support::pki::Issued| support::ClientTls {
        ca: Some(ca.cert_file.clone()),
        cert: Some((cert.cert_file.clone(), cert.key_file.clone())),
        also_listen: Vec::new(),
    };
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_tls(kind, as_client(&good), &flags).await;
        for (who, cert, admitted) in [("good", &good, true), ("bad", &bad, false)] {
            let out = Command::new(support::ETCDCTL_BIN)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", server.endpoint))
                .args(as_client(cert).etcdctl_args())
                .args(["--dial-timeout=2s", "--command-timeout=3s", "put", "k", who])
                .output()
                .expect("etcdctl");
            assert_eq!(
                out.status.success(),
                admitted,
                "{kind:?} with the {who} certificate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `--log-outputs` with a file: log lines go there (appended), and only
/// there unless stderr is listed too.
#[tokio::test]
async fn log_outputs_writes_to_the_files_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("basalt.log");
    std::fs::write(&file, "kept\n").expect("write");
    let only_file = format!("--log-outputs={}", file.display());
    let server = Server::start_with(Kind::Basalt, &[&only_file, "--enable-pprof"]).await;
    let warning = ": --enable-pprof is accepted but has no effect in basalt";
    let written = std::fs::read_to_string(&file).expect("read");
    assert!(
        written.starts_with("kept\n"),
        "the file was truncated: {written}"
    );
    assert!(written.contains(warning), "{written}");
    assert!(!server.log().contains(warning), "{}", server.log());
    drop(server);
    let both = format!("--log-outputs=stderr,{}", file.display());
    let server = Server::start_with(Kind::Basalt, &[&both, "--enable-pprof"]).await;
    assert!(server.log().contains(warning), "{}", server.log());
    let written = std::fs::read_to_string(&file).expect("read");
    assert_eq!(written.matches(warning).count(), 2, "{written}");
}

/// `--restore-snapshot` with a config file is refused rather than ignored
/// (which would start a server instead of restoring).
#[test]
fn restore_snapshot_with_a_config_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("etcd.yaml");
    std::fs::write(&file, "name: x\n").expect("write");
    let args = vec![
        format!("--config-file={}", file.display()),
        format!(
            "--restore-snapshot={}",
            dir.path().join("snap.db").display()
        ),
    ];
    let (code, stderr) = run_briefly(env!("CARGO_BIN_EXE_basalt"), &args, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--restore-snapshot cannot be used with a config file"),
        "{stderr}"
    );
}

/// `--max-concurrent-streams` (etcd 3.4): with 2, a client connection
/// holding two watch streams gets no third stream until one ends, on
/// basalt as on etcd.
#[tokio::test]
async fn max_concurrent_streams_bounds_a_connection_like_etcd() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_with(kind, &["--max-concurrent-streams=2"]).await;
        let mut c = server.client().await;
        let w1 = c.watch("a", None).await.expect("first watch");
        let w2 = c.watch("b", None).await.expect("second watch");
        let third =
            tokio::time::timeout(std::time::Duration::from_secs(2), c.put("k", "v", None)).await;
        assert!(
            third.is_err(),
            "{kind:?}: a third stream was opened on a full connection"
        );
        drop((w1, w2));
        let after =
            tokio::time::timeout(std::time::Duration::from_secs(5), c.put("k", "v", None)).await;
        assert!(
            matches!(after, Ok(Ok(_))),
            "{kind:?}: no stream after the watches ended: {after:?}"
        );
    }
}

/// `--experimental-watch-progress-notify-interval`: a watcher that asked
/// for progress notifications gets one within the interval, on basalt (one
/// executor and two) as on etcd.
#[tokio::test]
async fn watch_progress_notify_interval_is_applied_like_etcd() {
    for (kind, cores) in [(Kind::Etcd, "1"), (Kind::Basalt, "1"), (Kind::Basalt, "2")] {
        let mut flags = vec!["--experimental-watch-progress-notify-interval=300ms"];
        if kind == Kind::Basalt {
            flags.extend(["--cores", cores]);
        }
        let server = Server::start_with(kind, &flags).await;
        let mut c = server.client().await;
        c.put("k", "v", None).await.expect("put");
        // Several watch streams, so both executors serve one.
        for _ in 0..2 {
            let options = etcd_client::WatchOptions::new().with_progress_notify();
            let mut stream = c.watch("k", Some(options)).await.expect("watch");
            let started = std::time::Instant::now();
            loop {
                let next =
                    tokio::time::timeout(std::time::Duration::from_secs(3), stream.message()).await;
                let resp = match next {
                    Ok(Ok(Some(resp))) => resp,
                    other => panic!("{kind:?} cores={cores}: no progress notification: {other:?}"),
                };
                if !resp.created() && resp.events().is_empty() {
                    break;
                }
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(3));
            drop(stream);
            c = server.client().await;
        }
    }
}

/// `--logger zap` writes etcd's JSON lines: every line an object opening
/// with `level`, `ts`, `caller`, `msg`, on etcd 3.4 as on basalt.
#[tokio::test]
async fn zap_logs_are_json_lines_in_etcds_layout() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_with(kind, &["--logger=zap"]).await;
        let mut c = server.client().await;
        c.put("k", "v", None).await.unwrap();
        let log = server.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() >= 3, "{kind:?}: {log}");
        for line in lines {
            let ok = line.starts_with("{\"level\":\"")
                && line.contains(",\"ts\":\"")
                && line.contains(",\"caller\":\"")
                && line.contains(",\"msg\":\"")
                && line.ends_with('}')
                && line.find("\"ts\":") < line.find("\"caller\":")
                && line.find("\"caller\":") < line.find("\"msg\":");
            assert!(ok, "{kind:?}: not etcd's zap layout: {line}");
            let ts = line.split("\"ts\":\"").nth(1).unwrap_or("");
            assert!(
                ts.len() > 23 && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T',
                "{kind:?}: ts {ts}"
            );
        }
    }
}
