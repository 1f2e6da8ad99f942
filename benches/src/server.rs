//! Servers under test: how to start each (fresh data dir, loopback ports),
//! how to know it serves, how to stop it (SIGTERM by PID, then SIGKILL).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::loadgen::Loadgen;

/// How long a server may take to serve its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which command line a server takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// etcd: client and peer URLs on loopback, single-member cluster.
    Etcd,
    /// basalt: etcd's client flags (its defaults make a single member).
    Basalt,
}

/// A server binary to benchmark.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Label in the results ("etcd 3.4.23", "basalt").
    pub name: String,
    /// Short label for file names ("etcd-3.4", "basalt").
    pub slug: String,
    pub binary: PathBuf,
    pub flavor: Flavor,
}

/// A running server.
pub struct Server {
    child: Child,
    pub endpoint: String,
    data_dir: PathBuf,
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            action: "binding a free port on",
            path: "127.0.0.1".into(),
            source,
        })
}

impl ServerSpec {
    /// Starts the server with a fresh data dir under `work`, and waits
    /// until it answers a Range.
    pub fn start(&self, work: &Path, run_label: &str, loadgen: &Loadgen) -> Result<Server> {
        let data_dir = work.join(format!("{}-{run_label}.data", self.slug));
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).map_err(|source| BenchError::Io {
                action: "removing",
                path: data_dir.clone(),
                source,
            })?;
        }
        let log_path = work.join(format!("{}-{run_label}.log", self.slug));
        let log = File::create(&log_path).map_err(|source| BenchError::Io {
            action: "creating",
            path: log_path.clone(),
            source,
        })?;
        let client = format!("http://127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--data-dir").arg(&data_dir).args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ]);
        if self.flavor == Flavor::Etcd {
            let peer = format!("http://127.0.0.1:{}", free_port()?);
            cmd.args([
                "--name",
                "bench",
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("bench={peer}"),
            ]);
        }
        let log_err = log.try_clone().map_err(|source| BenchError::Io {
            action: "opening",
            path: log_path.clone(),
            source,
        })?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                program: self.binary.display().to_string(),
                source,
            })?;
        let mut server = Server {
            child,
            endpoint: client,
            data_dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let status = status.to_string();
                server.stop();
                return Err(BenchError::Exited {
                    server: self.name.clone(),
                    status,
                    log: log_path,
                });
            }
            if loadgen.probe(&server.endpoint) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let endpoint = server.endpoint.clone();
        server.stop();
        Err(BenchError::NotServing {
            server: self.name.clone(),
            endpoint,
            seconds: START_TIMEOUT.as_secs(),
            log: log_path,
        })
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period) and
    /// removes its data dir.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The first line of `binary --version`.
pub fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}
