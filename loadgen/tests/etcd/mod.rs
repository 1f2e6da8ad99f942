//! A real etcd for one test: free loopback ports, a temporary data dir,
//! stopped (by its PID) when dropped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary (Debian's etcd-server; see scripts/install-test-deps.sh).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("BASALT_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// No loadgen run in these tests should take longer.
const LOADGEN_TIMEOUT: Duration = Duration::from_secs(120);

/// A CA, and a server and a client certificate for 127.0.0.1 signed by
/// it, made with `openssl` in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let script = format!(
            r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout {d}/ca-key.pem -out {d}/ca.pem -subj /CN=test-ca
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > {d}/ext.cnf
for name in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout {d}/$name-key.pem -out {d}/$name.csr -subj /CN=$name
  openssl x509 -req -in {d}/$name.csr -CA {d}/ca.pem -CAkey {d}/ca-key.pem \
    -CAcreateserial -days 2 -extfile {d}/ext.cnf -out {d}/$name.pem
done"#
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// `ca.pem`, `server.pem`, `client-key.pem`, …
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// etcdctl's and loadgen's client TLS flags.
    pub fn client_flags(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.file("ca.pem"),
            "--cert".into(),
            self.file("client.pem"),
            "--key".into(),
            self.file("client-key.pem"),
        ]
    }
}

/// A running etcd.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    /// etcdctl's flags for this etcd's client TLS, if it has any.
    tls: Vec<String>,
    /// The command line, for a restart.
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Starts etcd with `args`, its log in `dir` (appended to across restarts).
fn spawn(args: &[String], dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .expect("log file");
    Command::new(etcd_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts (install it with scripts/install-test-deps.sh)")
}

impl Etcd {
    /// Starts etcd and waits until it serves.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts etcd serving clients over TLS only, requiring a client
    /// certificate signed by `pki`'s CA.
    pub fn start_tls(pki: &Pki) -> Self {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&Pki>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let scheme = if pki.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let tls_args: Vec<String> = match pki {
            Some(pki) => vec![
                format!("--cert-file={}", pki.file("server.pem")),
                format!("--key-file={}", pki.file("server-key.pem")),
                format!("--trusted-ca-file={}", pki.file("ca.pem")),
                "--client-cert-auth".into(),
            ],
            None => Vec::new(),
        };
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut args = vec![
            "--name=loadgen-test".to_owned(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=loadgen-test={peer_url}"),
        ];
        args.extend(tls_args);
        let child = spawn(&args, dir.path());
        let etcd = Etcd {
            child,
            endpoint,
            tls: pki.map(Pki::client_flags).unwrap_or_default(),
            args,
            _dir: dir,
        };
        etcd.wait_ready();
        etcd
    }

    /// Kills etcd (by its PID), starts it again on the same ports and data,
    /// and waits until it serves.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.args, self._dir.path());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let healthy = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &self.endpoint,
                    "--command-timeout=1s",
                    "endpoint",
                    "health",
                ])
                .args(&self.tls)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if healthy {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd at {} did not become healthy in 20 s", self.endpoint);
    }

    /// Runs loadgen against this etcd with `args` (after the global flags).
    /// A run that hangs is killed and fails the test.
    pub fn loadgen(&self, args: &[&str]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--endpoints", &self.endpoint, "--no-progress"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("loadgen runs");
        let deadline = Instant::now() + LOADGEN_TIMEOUT;
        while child.try_wait().expect("loadgen status").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("loadgen output");
                panic!(
                    "loadgen {args:?} still running after {LOADGEN_TIMEOUT:?}:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("loadgen output")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
