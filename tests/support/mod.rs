//! Test support: start a real etcd and a basalt server on free loopback
//! ports, each with a fresh data dir, and run the same scenario against both.
//!
//! A scenario writes what it sees into a [`Transcript`]: one line per
//! response, with the fields that legitimately differ between two servers
//! (cluster and member ids, raft term) blanked. Two transcripts must match
//! line for line.

#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

/// Path of the etcd binary used as the reference implementation.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// Path of etcdctl (3.4), the reference command-line client.
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), so no
/// outgoing connection — of this test or any other running beside it — can
/// be given the port between this check and the server's own bind (a real
/// etcd member once failed with "address already in use" that way). Each
/// test process starts at its own offset and hands out each port once.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low <= LOW + 1_000 {
        // No room below the ephemeral range: any free port will do.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
    }
    let span = ephemeral_low - LOW;
    let base = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOW + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port on 127.0.0.1 below {ephemeral_low}");
}

/// Which implementation a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Basalt,
}

/// How a test's clients reach a TLS server (`https://` endpoint).
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// CA to verify the server with; `None`: not verified (`--auto-tls`).
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for `--client-cert-auth`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// More `--listen-client-urls` beside the https endpoint.
    pub also_listen: Vec<String>,
}

impl ClientTls {
    /// etcdctl's flags for this TLS.
    pub fn etcdctl_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        match &self.ca {
            Some(ca) => args.push(format!("--cacert={}", ca.display())),
            // etcdctl 3.4 skips verification only with both.
            None => {
                args.push("--insecure-transport=false".into());
                args.push("--insecure-skip-tls-verify".into());
            }
        }
        if let Some((cert, key)) = &self.cert {
            args.push(format!("--cert={}", cert.display()));
            args.push(format!("--key={}", key.display()));
        }
        args
    }

    /// The Rust client's options for this TLS (a CA is needed).
    pub fn connect_options(&self) -> etcd_client::ConnectOptions {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("read CA");
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &self.cert {
            let (c, k) = (
                std::fs::read(cert).expect("cert"),
                std::fs::read(key).expect("key"),
            );
            tls = tls.identity(etcd_client::Identity::from_pem(c, k));
        }
        etcd_client::ConnectOptions::new().with_tls(tls)
    }
}

/// A server process started by a test; killed (by its own PID) on drop.
pub struct Server {
    pub kind: Kind,
    pub endpoint: String,
    /// Set when the endpoint is `https://`.
    pub tls: Option<ClientTls>,
    child: Child,
    _dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    /// Client and peer ports, kept by [`Server::restart_on_same_ports`].
    ports: (u16, u16),
}

impl Server {
    /// Starts a fresh single-member server and waits until it answers.
    pub async fn start(kind: Kind) -> Server {
        Self::start_with(kind, &[]).await
    }

    /// Like [`Server::start`] with extra command-line flags.
    pub async fn start_with(kind: Kind, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let ports = (free_port(), free_port());
        Self::start_in(kind, dir, data_dir, extra, ports, None).await
    }

    /// Like [`Server::start_with`], serving clients on an `https://`
    /// endpoint that `tls` reaches (the TLS flags are in `extra`).
    pub async fn start_tls(kind: Kind, tls: ClientTls, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let ports = (free_port(), free_port());
        Self::start_in(kind, dir, data_dir, extra, ports, Some(tls)).await
    }

    /// Starts a server on an existing `data_dir` (e.g. one a snapshot was
    /// restored into) with the given (client, peer) ports.
    pub async fn start_on(kind: Kind, data_dir: PathBuf, ports: (u16, u16)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(kind, dir, data_dir, &[], ports, None).await
    }

    /// Starts another etcd build (e.g. 3.5 from `target/py-etcd35`) on
    /// `data_dir` with the given (client, peer) ports.
    pub async fn start_etcd_build(bin: &Path, data_dir: PathBuf, ports: (u16, u16)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_bin(Kind::Etcd, Some(bin), dir, data_dir, &[], ports, None).await
    }

    async fn start_in(
        kind: Kind,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        extra: &[&str],
        ports: (u16, u16),
        tls: Option<ClientTls>,
    ) -> Server {
        Self::start_bin(kind, None, dir, data_dir, extra, ports, tls).await
    }

    async fn start_bin(
        kind: Kind,
        other_build: Option<&Path>,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        extra: &[&str],
        ports: (u16, u16),
        tls: Option<ClientTls>,
    ) -> Server {
        let (client_port, peer_port) = ports;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let listen = std::iter::once(endpoint.clone())
            .chain(tls.iter().flat_map(|t| t.also_listen.iter().cloned()))
            .collect::<Vec<_>>()
            .join(",");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let self_check = std::env::var_os("BASALT_DIFF_SELF_CHECK").is_some();
        let bin = match (other_build, if self_check { Kind::Etcd } else { kind }) {
            (Some(bin), _) => bin.to_path_buf(),
            (None, Kind::Etcd) => PathBuf::from(ETCD_BIN),
            (None, Kind::Basalt) => PathBuf::from(env!("CARGO_BIN_EXE_basalt")),
        };
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(&bin);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&listen)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // One executor unless the test chose a count itself.
        if kind == Kind::Basalt && !self_check && !extra.contains(&"--cores") {
            cmd.arg("--cores").arg("1");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Server {
            kind,
            endpoint,
            tls,
            child,
            _dir: dir,
            data_dir,
            ports,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{:?} exited early with {status}; log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            if self.answers().await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} did not answer within 20 s; log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether a read gets an answer now.
    async fn answers(&self) -> bool {
        match &self.tls {
            // No CA to verify with (--auto-tls): etcdctl skips verification.
            Some(tls) if tls.ca.is_none() => self
                .etcdctl(&["get", "basalt-test-probe", "--command-timeout=1s"])
                .status
                .success(),
            _ => match self.connect().await {
                Ok(mut c) => answered(c.get("basalt-test-probe", None).await),
                Err(_) => false,
            },
        }
    }

    async fn connect(&self) -> Result<Client, etcd_client::Error> {
        let options = self.tls.as_ref().map(ClientTls::connect_options);
        Client::connect([&self.endpoint], options).await
    }

    /// The server's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new client connected to this server.
    pub async fn client(&self) -> Client {
        self.connect().await.expect("connect")
    }

    /// Waits (bounded) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !sent {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Kills (or has already stopped) this server and starts the same kind
    /// again on the same data dir; returns the new server.
    pub async fn restart(self, extra: &[&str]) -> Server {
        self.restart_with_ports(extra, (free_port(), free_port()))
            .await
    }

    /// Like [`Server::restart`], on the ports the server had.
    pub async fn restart_on_same_ports(self, extra: &[&str]) -> Server {
        let ports = self.ports;
        self.restart_with_ports(extra, ports).await
    }

    async fn restart_with_ports(mut self, extra: &[&str], ports: (u16, u16)) -> Server {
        self.kill();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        let data_dir = self.data_dir.clone();
        let kind = self.kind;
        let tls = self.tls.take();
        drop(self);
        Self::start_in(kind, dir, data_dir, extra, ports, tls).await
    }

    /// Runs etcdctl (API v3) against this server.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.endpoint)
            .arg("--command-timeout=10s")
            .args(self.tls.iter().flat_map(ClientTls::etcdctl_args))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a scenario saw, one normalised line per response.
#[derive(Default, Debug)]
pub struct Transcript {
    pub lines: Vec<String>,
}

impl Transcript {
    /// Records a response or an error under a label.
    pub fn record<T: Debug>(
        &mut self,
        label: &str,
        result: Result<T, etcd_client::Error>,
    ) -> Option<T> {
        match result {
            Ok(v) => {
                self.lines
                    .push(format!("{label}: {}", normalise(&format!("{v:?}"))));
                Some(v)
            }
            Err(e) => {
                self.lines
                    .push(format!("{label}: ERR {}", describe_error(&e)));
                None
            }
        }
    }

    /// Records a free-form line (already normalised by the caller).
    pub fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
}

/// The gRPC code and message of an error, the parts a client acts on.
pub fn describe_error(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            format!("code={:?} message={:?}", s.code(), s.message())
        }
        other => format!("client error: {other}"),
    }
}

/// Blanks the response-header fields that differ between any two servers.
pub fn normalise(debug: &str) -> String {
    ["cluster_id: ", "member_id: ", "raft_term: "]
        .iter()
        .fold(debug.to_string(), |text, field| {
            blank_number_after(&text, field)
        })
}

fn blank_number_after(text: &str, field: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(field) {
        out.push_str(&rest[..pos + field.len()]);
        out.push('_');
        rest = &rest[pos + field.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Runs `scenario` against a fresh etcd and a fresh basalt and asserts the
/// transcripts are identical.
pub async fn differential<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Transcript>,
{
    let etcd = Server::start(Kind::Etcd).await;
    let expected = scenario(etcd.client().await).await;
    drop(etcd);
    if std::env::var_os("BASALT_DIFF_PRINT").is_some() {
        eprintln!("== {name}: etcd transcript\n{}", expected.lines.join("\n"));
    }
    // BASALT_DIFF_SELF_CHECK=1 runs the scenario against a second etcd
    // instead: the transcripts must then match too, which proves a scenario
    // records nothing that differs between two runs of the same server.
    let other = if std::env::var_os("BASALT_DIFF_SELF_CHECK").is_some() {
        Kind::Etcd
    } else {
        Kind::Basalt
    };
    let basalt = Server::start(other).await;
    let got = scenario(basalt.client().await).await;
    assert_transcripts_match(name, &expected, &got, &basalt);
}

/// Asserts two transcripts match, printing the first difference in full.
pub fn assert_transcripts_match(
    name: &str,
    etcd: &Transcript,
    basalt: &Transcript,
    server: &Server,
) {
    for (i, (e, b)) in etcd.lines.iter().zip(&basalt.lines).enumerate() {
        if e != b {
            panic!(
                "scenario {name}: line {i} differs\n  etcd:   {e}\n  basalt: {b}\n\nfull etcd transcript:\n{}\n\nbasalt log:\n{}",
                etcd.lines.join("\n"),
                server.log()
            );
        }
    }
    assert_eq!(
        etcd.lines.len(),
        basalt.lines.len(),
        "scenario {name}: transcripts differ in length\netcd:\n{}\nbasalt:\n{}",
        etcd.lines.join("\n"),
        basalt.lines.join("\n")
    );
}
pub mod cluster;
pub mod pki;

/// Replaces what legitimately differs between two servers in etcdctl's
/// output: endpoints (ports) and hexadecimal member/lease ids.
pub fn normalise_etcdctl_output(text: &str, server: &Server) -> String {
    let text = text.replace(&server.endpoint, "ENDPOINT");
    text.split('\n')
        .map(|line| {
            for field in ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "] {
                if line.starts_with(field) {
                    return format!("{field}_");
                }
            }
            line.split(' ')
                .map(|word| {
                    let w = word.trim_matches(|c: char| c == ',' || c == '[' || c == ']');
                    if w.len() >= 8
                        && w.chars().all(|c| c.is_ascii_hexdigit())
                        && w.chars().any(|c| c.is_ascii_alphabetic())
                    {
                        word.replace(w, "ID")
                    } else {
                        word.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One etcdctl command against `server` as a transcript entry: the
/// command, its exit code and its normalised stdout and stderr.
pub fn etcdctl_transcript(server: &Server, args: &[&str]) -> String {
    let out = server.etcdctl(args);
    format!(
        "$ etcdctl {}\nexit={} stdout:\n{}stderr:\n{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        normalise_etcdctl_output(&String::from_utf8_lossy(&out.stdout), server),
        normalise_etcdctl_output(&String::from_utf8_lossy(&out.stderr), server)
            .lines()
            // etcdctl's client logs retries as JSON with timestamps and
            // random target names; the error it ends on is what counts.
            .filter(|l| !l.starts_with('{'))
            .map(|l| l
                .split_once("Error:")
                .map(|(_, e)| format!("Error:{e}"))
                .unwrap_or_else(|| l.to_string()))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Whether a probe read was answered by a serving member: a value, or a
/// refusal for want of credentials once auth is on.
pub fn answered<T>(read: Result<T, etcd_client::Error>) -> bool {
    match read {
        Ok(_) => true,
        Err(etcd_client::Error::GRpcStatus(s)) => s.message() == "etcdserver: user name is empty",
        Err(_) => false,
    }
}

/// `basalt --restore-snapshot file --data-dir data_dir extra…`.
pub fn basalt_restore(file: &Path, data_dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--restore-snapshot")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("basalt --restore-snapshot")
}

/// `/metrics` of the server at `client_url` (`http://host:port`), over
/// HTTP/1.1 on its client port.
pub fn scrape(client_url: &str) -> String {
    use std::io::{Read, Write};
    let addr = client_url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The value of an unlabelled series in a `/metrics` text.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
