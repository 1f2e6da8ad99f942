//! The same settings given three ways — flags, `ETCD_*` environment
//! variables, etcd's YAML `--config-file` — start the same server, on
//! basalt as on etcd 3.4: the member's name, client and peer URLs as
//! MemberList reports them, and a limit that shows in answers.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, Kind, ETCD_BIN};

/// A process a test started, killed by its own id on drop.
struct Running {
    child: Child,
    log: std::path::PathBuf,
    endpoint: String,
    tls: Option<etcd_client::ConnectOptions>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&self) -> Option<etcd_client::Client> {
        let connect = etcd_client::Client::connect([self.endpoint.as_str()], self.tls.clone());
        tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .ok()?
            .ok()
    }
}

/// Starts `kind` with `args` and `env` (every other `ETCD_*` variable
/// removed) and waits until it answers MemberList.
async fn start(
    kind: Kind,
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    endpoint: &str,
) -> Running {
    start_tls(kind, dir, args, env, endpoint, None).await
}

async fn start_tls(
    kind: Kind,
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    endpoint: &str,
    tls: Option<etcd_client::ConnectOptions>,
) -> Running {
    let bin = match kind {
        Kind::Etcd => ETCD_BIN.to_string(),
        Kind::Basalt => env!("CARGO_BIN_EXE_basalt").to_string(),
    };
    let log = dir.join(format!("{kind:?}.log"));
    let file = std::fs::File::create(&log).expect("log");
    let mut cmd = Command::new(&bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("ETCD_") {
            cmd.env_remove(key);
        }
    }
    let child = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    let mut running = Running {
        child,
        log,
        endpoint: endpoint.to_string(),
        tls,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!(
                "{kind:?} {args:?} {env:?} exited with {status}:\n{}",
                running.log()
            );
        }
        if let Some(mut c) = running.client().await {
            if c.member_list().await.is_ok() {
                return running;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} did not start:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One member's settings.
struct Member {
    name: String,
    data_dir: String,
    client: String,
    peer: String,
}

impl Member {
    fn new(dir: &Path, name: &str) -> Member {
        Member {
            name: name.to_string(),
            data_dir: dir.join(format!("{name}.data")).display().to_string(),
            client: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
        }
    }

    /// (flag, value) pairs; `max-txn-ops` shows in answers.
    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("data-dir", self.data_dir.clone()),
            ("listen-client-urls", self.client.clone()),
            ("advertise-client-urls", self.client.clone()),
            ("listen-peer-urls", self.peer.clone()),
            ("initial-advertise-peer-urls", self.peer.clone()),
            ("initial-cluster", format!("{}={}", self.name, self.peer)),
            ("initial-cluster-token", "three-ways".into()),
            ("max-txn-ops", "2".into()),
        ]
    }

    fn flags(&self) -> Vec<String> {
        self.settings()
            .into_iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect()
    }

    fn env(&self) -> Vec<(String, String)> {
        self.settings()
            .into_iter()
            .map(|(k, v)| (format!("ETCD_{}", k.to_uppercase().replace('-', "_")), v))
            .collect()
    }

    fn yaml(&self) -> String {
        self.settings()
            .into_iter()
            .map(|(k, v)| match k {
                "max-txn-ops" => format!("{k}: {v}\n"),
                _ => format!("{k}: '{v}'\n"),
            })
            .collect()
    }
}

/// What MemberList and a 3-op txn say about a running member.
async fn observe(server: &Running) -> (Vec<(String, Vec<String>, Vec<String>)>, String) {
    let mut c = server.client().await.expect("client");
    let members = c.member_list().await.expect("member list");
    let members = members
        .members()
        .iter()
        .map(|m| {
            (
                m.name().to_string(),
                m.client_urls().to_vec(),
                m.peer_urls().to_vec(),
            )
        })
        .collect();
    let ops: Vec<etcd_client::TxnOp> = (0..3)
        .map(|i| etcd_client::TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let txn = c.txn(etcd_client::Txn::new().and_then(ops)).await;
    let txn = match txn {
        Ok(_) => "ok".to_string(),
        Err(etcd_client::Error::GRpcStatus(s)) => s.message().to_string(),
        Err(e) => e.to_string(),
    };
    (members, txn)
}

#[tokio::test]
async fn flags_environment_and_config_file_start_the_same_member_as_on_etcd() {
    for kind in [Kind::Basalt, Kind::Etcd] {
        for way in ["flags", "env", "file"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let m = Member::new(dir.path(), &format!("m-{way}"));
            let (args, env) = match way {
                "flags" => (m.flags(), vec![]),
                "env" => (vec![], m.env()),
                _ => {
                    let file = dir.path().join("etcd.yaml");
                    std::fs::write(&file, m.yaml()).expect("write");
                    (vec![format!("--config-file={}", file.display())], vec![])
                }
            };
            let server = start(kind, dir.path(), &args, &env, &m.client).await;
            let (members, txn) = observe(&server).await;
            assert_eq!(
                members,
                [(m.name.clone(), vec![m.client.clone()], vec![m.peer.clone()])],
                "{kind:?} by {way}"
            );
            assert_eq!(
                txn, "etcdserver: too many operations in txn request",
                "{kind:?} by {way}"
            );
            if way == "env" {
                let log = server.log();
                assert!(
                    log.contains("recognized and used environment variable ETCD_NAME=m-env"),
                    "{kind:?}:\n{log}"
                );
            }
        }
    }
}

/// With a config file, other flags and `ETCD_*` variables are ignored
/// (even a variable that names no flag draws no warning), as in etcd;
/// `ETCD_CONFIG_FILE` names the file too.
#[tokio::test]
async fn a_config_file_overrides_flags_and_environment_as_on_etcd() {
    for kind in [Kind::Basalt, Kind::Etcd] {
        for by_env in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let m = Member::new(dir.path(), "from-file");
            let file = dir.path().join("etcd.yaml");
            std::fs::write(&file, m.yaml()).expect("write");
            let mut args = vec!["--name=from-flag".to_string(), "--max-txn-ops=128".into()];
            let mut env = vec![
                (
                    "ETCD_INITIAL_CLUSTER_TOKEN".to_string(),
                    "from-env".to_string(),
                ),
                ("ETCD_NO_SUCH_FLAG".into(), "1".into()),
            ];
            if by_env {
                env.push(("ETCD_CONFIG_FILE".into(), file.display().to_string()));
            } else {
                args.push(format!("--config-file={}", file.display()));
            }
            let server = start(kind, dir.path(), &args, &env, &m.client).await;
            let (members, txn) = observe(&server).await;
            assert_eq!(members[0].0, "from-file", "{kind:?} by_env={by_env}");
            assert_eq!(txn, "etcdserver: too many operations in txn request");
            let log = server.log();
            assert!(
                !log.contains("unrecognized environment variable"),
                "{kind:?}:\n{log}"
            );
            assert!(log.to_lowercase().contains("other configuration command line flags and environment variables will be ignored"), "{kind:?}:\n{log}");
        }
    }
}

/// An `ETCD_*` variable that names no flag is warned about and the member
/// starts, on basalt as on etcd.
#[tokio::test]
async fn unrecognized_environment_variables_are_warned_about_as_on_etcd() {
    for kind in [Kind::Basalt, Kind::Etcd] {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Member::new(dir.path(), "warned");
        let env = vec![("ETCD_NO_SUCH_FLAG".to_string(), "1".to_string())];
        let server = start(kind, dir.path(), &m.flags(), &env, &m.client).await;
        let log = server.log();
        assert!(
            log.contains("unrecognized environment variable ETCD_NO_SUCH_FLAG=1"),
            "{kind:?}:\n{log}"
        );
    }
}

/// Bad config files stop basalt as they stop etcd 3.4: exit 1, etcd's words.
#[test]
fn bad_config_files_are_refused_like_etcd() {
    let cases = [
        ("name: [a", "error converting YAML to JSON: yaml: "),
        ("heartbeat-interval: \"abc\"", "json: cannot unmarshal string into Go struct field configYAML.heartbeat-interval of type uint"),
        ("auto-compaction-retention: 1", "json: cannot unmarshal number into Go struct field configYAML.auto-compaction-retention of type string"),
        ("client-transport-security: {cert-file: 1}", "json: cannot unmarshal number into Go struct field securityConfig.client-transport-security.cert-file of type string"),
        ("initial-cluster-state: foo", "unexpected clusterState \"foo\""),
    ];
    for (yaml, says) in cases {
        for (binary, kind) in [(env!("CARGO_BIN_EXE_basalt"), "basalt"), (ETCD_BIN, "etcd")] {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("etcd.yaml");
            std::fs::write(&file, yaml).expect("write");
            let out = Command::new(binary)
                .arg(format!("--config-file={}", file.display()))
                .current_dir(dir.path())
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{kind} {yaml}: {stderr}");
            assert!(
                stderr.contains("error verifying flags, "),
                "{kind} {yaml}: {stderr}"
            );
            assert!(stderr.contains(says), "{kind} {yaml}: {stderr}");
        }
    }
    for binary in [env!("CARGO_BIN_EXE_basalt"), ETCD_BIN] {
        let out = Command::new(binary)
            .arg("--config-file=/nonexistent/etcd.yaml")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{binary}: {stderr}");
        assert!(
            stderr.contains("open /nonexistent/etcd.yaml: no such file or directory"),
            "{binary}: {stderr}"
        );
    }
}

/// TLS from the config file's `client-transport-security` section: the
/// member serves https with the file's certificate and requires client
/// certificates, on basalt as on etcd.
#[tokio::test]
async fn client_tls_from_the_config_file() {
    for kind in [Kind::Basalt, Kind::Etcd] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = support::pki::Ca::new(dir.path(), "ca");
        let server = ca.issue(dir.path(), "server", "server", &["127.0.0.1"], 1);
        let client = ca.issue(dir.path(), "client", "client", &["127.0.0.1"], 2);
        let mut m = Member::new(dir.path(), "tls");
        m.client = m.client.replace("http://", "https://");
        let yaml = format!(
            "{}client-transport-security:\n  cert-file: {}\n  key-file: {}\n  trusted-ca-file: {}\n  client-cert-auth: true\n",
            m.yaml(),
            server.cert_file.display(),
            server.key_file.display(),
            ca.cert_file.display(),
        );
        let file = dir.path().join("etcd.yaml");
        std::fs::write(&file, yaml).expect("write");
        let tls = support::ClientTls {
            ca: Some(ca.cert_file.clone()),
            cert: Some((client.cert_file.clone(), client.key_file.clone())),
            also_listen: Vec::new(),
        };
        let args = vec![format!("--config-file={}", file.display())];
        let running = start_tls(
            kind,
            dir.path(),
            &args,
            &[],
            &m.client,
            Some(tls.connect_options()),
        )
        .await;
        let (members, _) = observe(&running).await;
        assert_eq!(members[0].1, [m.client.clone()], "{kind:?}");
        // Without a client certificate the member refuses the client.
        let no_cert = support::ClientTls { cert: None, ..tls };
        let refused =
            etcd_client::Client::connect([m.client.as_str()], Some(no_cert.connect_options()));
        let refused = match tokio::time::timeout(Duration::from_secs(3), refused).await {
            Ok(Ok(mut c)) => c.member_list().await.is_err(),
            _ => true,
        };
        assert!(refused, "{kind:?} served a client without a certificate");
    }
}
