//! Servers under test: how to start each, as one member or as a cluster
//! founded with etcd's flags (fresh data dirs, loopback ports), how to know
//! it serves and who leads, how to stop it (SIGTERM by PID, then SIGKILL).
//!
//! A cluster serves once every member answers a linearizable read (which
//! needs a leader and a quorum) and every member names the same leader.

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::leader::{agreed_leader, describe, Etcdctl};
use crate::loadgen::Loadgen;

/// How long a server (every member of it) may take to serve its first
/// request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a cluster's members may take to agree on a leader once they
/// serve.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Which CPUs member processes may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Every CPU the harness may use; each process places its own threads.
    /// (basalt pins its executors from the first allowed CPU on, so with
    /// `--cores 1` every member's one executor lands on the same CPU.)
    Own,
    /// Member i runs only on the i-th allowed CPU (mod their number),
    /// through `taskset`, so members spread over the machine.
    Spread,
}

impl FromStr for Pinning {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "own" => Ok(Self::Own),
            "spread" => Ok(Self::Spread),
            other => Err(format!("unknown pinning `{other}`: use own or spread")),
        }
    }
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
    /// Added to every member's command line (basalt's `--cores N`).
    pub extra_args: Vec<String>,
    pub pinning: Pinning,
}

/// One member, or a cluster and the client that asks it who leads.
#[derive(Clone, Debug)]
pub enum Topology {
    Single,
    Cluster { members: usize, etcdctl: Etcdctl },
}

impl Topology {
    pub fn members(&self) -> usize {
        match self {
            Self::Single => 1,
            Self::Cluster { members, .. } => *members,
        }
    }
}

/// The member a scenario's client talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// The first member, in start order, that does not lead.
    Follower,
}

/// Where one member listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub name: String,
    pub client: String,
    pub peer: String,
}

/// Where every member of a deployment listens, and the token of the
/// cluster they found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub token: String,
    pub members: Vec<Addresses>,
}

/// A free loopback port, held until the listener is dropped (so ports
/// taken together are distinct).
fn free_port() -> Result<(TcpListener, u16)> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| {
            let port = l.local_addr()?.port();
            Ok((l, port))
        })
        .map_err(|source| BenchError::Io {
            action: "binding a free port on",
            path: "127.0.0.1".into(),
            source,
        })
}

impl Layout {
    /// `n` members on free loopback ports: "bench" alone, m1…mN in a
    /// cluster.
    pub fn on_free_ports(n: usize, token: String) -> Result<Self> {
        let mut held = Vec::with_capacity(2 * n);
        let mut port = || -> Result<u16> {
            let (listener, port) = free_port()?;
            held.push(listener);
            Ok(port)
        };
        let members = (0..n)
            .map(|i| {
                Ok(Addresses {
                    name: if n == 1 {
                        "bench".into()
                    } else {
                        format!("m{}", i + 1)
                    },
                    client: format!("http://127.0.0.1:{}", port()?),
                    peer: format!("http://127.0.0.1:{}", port()?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { token, members })
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s command line, before the spec's extra arguments. One
    /// member runs as the harness always ran it; a cluster's members take
    /// etcd's clustering flags, the same for etcd and basalt.
    pub fn args(&self, flavor: Flavor, i: usize, data_dir: &Path) -> Vec<OsString> {
        let m = &self.members[i];
        let mut args: Vec<OsString> = vec!["--data-dir".into(), data_dir.into()];
        let mut add = |list: &[&str]| args.extend(list.iter().map(OsString::from));
        add(&[
            "--listen-client-urls",
            &m.client,
            "--advertise-client-urls",
            &m.client,
        ]);
        if self.members.len() > 1 {
            add(&[
                "--name",
                &m.name,
                "--listen-peer-urls",
                &m.peer,
                "--initial-advertise-peer-urls",
                &m.peer,
                "--initial-cluster",
                &self.initial_cluster(),
                "--initial-cluster-token",
                &self.token,
                "--initial-cluster-state",
                "new",
            ]);
        } else if flavor == Flavor::Etcd {
            add(&[
                "--name",
                &m.name,
                "--listen-peer-urls",
                &m.peer,
                "--initial-advertise-peer-urls",
                &m.peer,
                "--initial-cluster",
                &self.initial_cluster(),
            ]);
        }
        args
    }
}

/// Parses a kernel CPU list ("0-3,6").
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            match (lo.trim().parse::<usize>(), hi.trim().parse::<usize>()) {
                (Ok(lo), Ok(hi)) if lo <= hi => (lo..=hi).collect(),
                _ => Vec::new(),
            }
        })
        .collect()
}

/// The CPUs this process may run on (empty if unknown).
fn allowed_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpu_list)
        })
        .unwrap_or_default()
}

/// A running member.
pub struct Member {
    pub name: String,
    pub endpoint: String,
    pub log: PathBuf,
    child: Child,
    data_dir: PathBuf,
}

/// A running server: one member, or a cluster with a leader.
pub struct Server {
    flavor: Flavor,
    members: Vec<Member>,
    leader: usize,
    etcdctl: Option<Etcdctl>,
}

impl ServerSpec {
    /// Starts the server (every member) with fresh data dirs under `work`,
    /// and waits until every member answers a linearizable Range and, in
    /// a cluster, names the same leader.
    pub fn start(
        &self,
        work: &Path,
        run_label: &str,
        loadgen: &Loadgen,
        topology: &Topology,
    ) -> Result<Server> {
        let n = topology.members();
        let layout = Layout::on_free_ports(n, format!("bench-{}-{run_label}", self.slug))?;
        let cpus = match self.pinning {
            Pinning::Own => Vec::new(),
            Pinning::Spread => allowed_cpus(),
        };
        let mut server = Server {
            flavor: self.flavor,
            members: Vec::with_capacity(n),
            leader: 0,
            etcdctl: None,
        };
        for i in 0..n {
            let stem = if n == 1 {
                format!("{}-{run_label}", self.slug)
            } else {
                format!("{}-{run_label}.{}", self.slug, layout.members[i].name)
            };
            let data_dir = work.join(format!("{stem}.data"));
            let log = work.join(format!("{stem}.log"));
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let args = layout.args(self.flavor, i, &data_dir);
            let child = self.spawn(&data_dir, &log, cpu, args)?;
            server.members.push(Member {
                name: layout.members[i].name.clone(),
                endpoint: layout.members[i].client.clone(),
                log,
                child,
                data_dir,
            });
        }
        self.wait_serving(&mut server, loadgen)?;
        if let Topology::Cluster { etcdctl, .. } = topology {
            server.etcdctl = Some(etcdctl.clone());
            server.leader = self.wait_leader(&server)?;
        }
        Ok(server)
    }

    fn spawn(
        &self,
        data_dir: &Path,
        log_path: &Path,
        cpu: Option<usize>,
        args: Vec<OsString>,
    ) -> Result<Child> {
        if data_dir.exists() {
            std::fs::remove_dir_all(data_dir).map_err(|source| BenchError::Io {
                action: "removing",
                path: data_dir.to_path_buf(),
                source,
            })?;
        }
        let log = File::create(log_path).map_err(|source| BenchError::Io {
            action: "creating",
            path: log_path.to_path_buf(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| BenchError::Io {
            action: "opening",
            path: log_path.to_path_buf(),
            source,
        })?;
        // taskset execs the server: the PID stays the server's.
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.args(args)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                program: self.binary.display().to_string(),
                source,
            })
    }

    /// The name errors give a member: the server's alone, or with the
    /// member's in a cluster.
    fn member_label(&self, server: &Server, i: usize) -> String {
        if server.members.len() == 1 {
            self.name.clone()
        } else {
            format!("{} member {}", self.name, server.members[i].name)
        }
    }

    fn wait_serving(&self, server: &mut Server, loadgen: &Loadgen) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut answered = vec![false; server.members.len()];
        loop {
            for (i, answered) in answered.iter_mut().enumerate() {
                if let Ok(Some(status)) = server.members[i].child.try_wait() {
                    let err = BenchError::Exited {
                        server: self.member_label(server, i),
                        status: status.to_string(),
                        log: server.members[i].log.clone(),
                    };
                    server.shutdown();
                    return Err(err);
                }
                if !*answered {
                    *answered = loadgen.probe(&server.members[i].endpoint);
                }
            }
            if answered.iter().all(|a| *a) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let i = answered.iter().position(|a| !a).unwrap_or(0);
                let err = BenchError::NotServing {
                    server: self.member_label(server, i),
                    endpoint: server.members[i].endpoint.clone(),
                    seconds: START_TIMEOUT.as_secs(),
                    log: server.members[i].log.clone(),
                };
                server.shutdown();
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_leader(&self, server: &Server) -> Result<usize> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let detail = match server.current_leader() {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => "members name different leaders or none".to_owned(),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(BenchError::NoLeader {
                    server: self.name.clone(),
                    seconds: LEADER_TIMEOUT.as_secs(),
                    detail,
                    logs: server
                        .members
                        .iter()
                        .map(|m| m.log.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Server {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every member's process id, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    /// The index of the member that led when the server was started.
    pub fn leader(&self) -> usize {
        self.leader
    }

    /// The index of the member playing `role` (one member plays both).
    pub fn member(&self, role: Role) -> usize {
        match role {
            Role::Leader => self.leader,
            Role::Follower => (0..self.members.len())
                .find(|&i| i != self.leader)
                .unwrap_or(self.leader),
        }
    }

    /// The client URL of the member playing `role`.
    pub fn endpoint(&self, role: Role) -> &str {
        &self.members[self.member(role)].endpoint
    }

    /// Who leads now: the one member, or the member every member names
    /// (None while they disagree). Err says why the members could not be
    /// asked, or what each answered when they disagree.
    pub fn current_leader(&self) -> std::result::Result<Option<usize>, String> {
        let Some(etcdctl) = &self.etcdctl else {
            return Ok(Some(0));
        };
        let endpoints: Vec<String> = self.members.iter().map(|m| m.endpoint.clone()).collect();
        let statuses = etcdctl.status(&endpoints).map_err(|e| e.to_string())?;
        match agreed_leader(&statuses) {
            Some(leader) => Ok(Some(leader)),
            None => Err(describe(&statuses)),
        }
    }

    /// Stops every member (SIGTERM to all, SIGKILL to those still running
    /// after the grace period) and removes the data dirs. Returns what
    /// went wrong on the way: members killed, basalt members exiting
    /// other than cleanly.
    pub fn stop(mut self) -> Vec<String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for m in &mut self.members {
            if let Ok(None) = m.child.try_wait() {
                let _ = Command::new("kill")
                    .args(["-TERM", &m.child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for m in self.members.drain(..) {
            let mut child = m.child;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => break None,
                }
            };
            match status {
                // basalt exits 0 on SIGTERM; etcd re-raises the signal.
                Some(s) if self.flavor == Flavor::Basalt && !s.success() => notes.push(format!(
                    "{} exited with {s} after SIGTERM (log: {})",
                    m.name,
                    m.log.display()
                )),
                Some(_) => {}
                None => {
                    let _ = child.kill();
                    notes.push(format!(
                        "{} still running {} s after SIGTERM: killed (log: {})",
                        m.name,
                        STOP_TIMEOUT.as_secs(),
                        m.log.display()
                    ));
                }
            }
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&m.data_dir);
        }
        notes
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n: usize) -> Layout {
        Layout {
            token: "T".into(),
            members: (1..=n)
                .map(|i| Addresses {
                    name: if n == 1 {
                        "bench".into()
                    } else {
                        format!("m{i}")
                    },
                    client: format!("http://c{i}"),
                    peer: format!("http://p{i}"),
                })
                .collect(),
        }
    }

    fn words(args: Vec<OsString>) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn one_member_runs_as_the_harness_always_ran_it() {
        let l = layout(1);
        assert_eq!(
            words(l.args(Flavor::Etcd, 0, Path::new("/d"))),
            "--data-dir /d --listen-client-urls http://c1 --advertise-client-urls http://c1 \
             --name bench --listen-peer-urls http://p1 --initial-advertise-peer-urls http://p1 \
             --initial-cluster bench=http://p1"
        );
        assert_eq!(
            words(l.args(Flavor::Basalt, 0, Path::new("/d"))),
            "--data-dir /d --listen-client-urls http://c1 --advertise-client-urls http://c1"
        );
    }

    #[test]
    fn cluster_members_take_etcds_flags_whatever_the_server() {
        let l = layout(3);
        let expected =
            "--data-dir /d2 --listen-client-urls http://c2 --advertise-client-urls http://c2 \
             --name m2 --listen-peer-urls http://p2 --initial-advertise-peer-urls http://p2 \
             --initial-cluster m1=http://p1,m2=http://p2,m3=http://p3 \
             --initial-cluster-token T --initial-cluster-state new";
        assert_eq!(words(l.args(Flavor::Etcd, 1, Path::new("/d2"))), expected);
        assert_eq!(words(l.args(Flavor::Basalt, 1, Path::new("/d2"))), expected);
    }

    #[test]
    fn free_ports_are_distinct() {
        let l = Layout::on_free_ports(3, "T".into()).unwrap();
        let mut urls: Vec<&String> = l
            .members
            .iter()
            .flat_map(|m| [&m.client, &m.peer])
            .collect();
        urls.sort();
        urls.dedup();
        assert_eq!(urls.len(), 6, "{l:?}");
        assert_eq!(l.members[2].name, "m3");
    }

    #[test]
    fn cpu_lists_and_pinning_names() {
        assert_eq!(parse_cpu_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7"), vec![0, 2, 3, 4, 7]);
        assert_eq!(parse_cpu_list("garbage"), Vec::<usize>::new());
        assert_eq!("spread".parse::<Pinning>(), Ok(Pinning::Spread));
        assert_eq!("own".parse::<Pinning>(), Ok(Pinning::Own));
        assert!("all".parse::<Pinning>().is_err());
    }
}
