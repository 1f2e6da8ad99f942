//! Multi-member clusters of real processes on loopback (etcd or basalt,
//! started with the same flags), for cluster tests and fault runs: kill,
//! pause (SIGSTOP) and resume members, restart them on their data dirs.
//! [`Cluster::start_planned`] places members elsewhere: on addresses of
//! the test's choosing, each in its own network namespace if asked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

use super::{free_port, Kind, ETCDCTL_BIN, ETCD_BIN};

/// `ip` (iproute2), which runs a member inside a network namespace.
pub const IP_BIN: &str = "/usr/sbin/ip";

pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The network namespace the member runs in (`ip netns exec`, which
    /// execs: the child's PID is the server's); `None`: the test's own.
    netns: Option<String>,
    /// Flags of this member only (after the cluster's).
    extra: Vec<String>,
    /// Started with `--initial-cluster-state existing` (it joined a
    /// running cluster after `member add`).
    joining: bool,
    /// Its own `--initial-cluster` (a member that joined later: the one
    /// `member add` printed), instead of the cluster's.
    initial_cluster: Option<String>,
}

/// Where a member of [`Cluster::start_planned`] listens and runs.
pub struct MemberPlan {
    pub client_url: String,
    pub peer_url: String,
    pub netns: Option<String>,
    /// Flags of this member only (its own certificates, say).
    pub extra: Vec<String>,
}

impl MemberPlan {
    /// A member on free loopback ports, its peer URL with `peer_scheme`
    /// (`http` or `https`).
    pub fn loopback(peer_scheme: &str) -> MemberPlan {
        MemberPlan {
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("{peer_scheme}://127.0.0.1:{}", free_port()),
            netns: None,
            extra: Vec::new(),
        }
    }
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process ended by itself (polls it).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

pub struct Cluster {
    pub kind: Kind,
    pub members: Vec<Member>,
    initial_cluster: String,
    extra: Vec<String>,
    /// Environment variables every member process gets.
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members founding a new cluster and waits until every
    /// one answers a linearizable read.
    pub async fn start(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        let plans = (0..n).map(|_| MemberPlan::loopback("http")).collect();
        Self::start_planned(kind, plans, extra, &[]).await
    }

    /// Like [`Cluster::start`], with each member where its plan says and
    /// `env` set for every member process.
    pub async fn start_planned(
        kind: Kind,
        plans: Vec<MemberPlan>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Self::launch(kind, plans, extra, env);
        for i in 0..cluster.members.len() {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Starts every member of [`Cluster::start_planned`] without waiting
    /// for any (some may be meant never to be ready).
    pub fn launch(
        kind: Kind,
        plans: Vec<MemberPlan>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Self::prepare(kind, plans, extra, env);
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster
    }

    /// `n` members on loopback restored from `snapshot` (saved by
    /// `etcdctl snapshot save`) as one cluster, the way etcd's disaster
    /// recovery does it: `etcdctl snapshot restore` (etcd) or `basalt
    /// --restore-snapshot` (basalt) on each member with the same
    /// `--initial-cluster*` flags, then every member started.
    pub async fn start_restored(kind: Kind, n: usize, snapshot: &Path) -> Cluster {
        let plans = (0..n).map(|_| MemberPlan::loopback("http")).collect();
        let mut cluster = Self::prepare(kind, plans, &[], &[]);
        for m in &cluster.members {
            let mut cmd = match kind {
                Kind::Etcd => {
                    let mut c = Command::new(ETCDCTL_BIN);
                    c.env("ETCDCTL_API", "3")
                        .arg("snapshot")
                        .arg("restore")
                        .arg(snapshot);
                    c
                }
                Kind::Basalt => {
                    let mut c = Command::new(env!("CARGO_BIN_EXE_basalt"));
                    c.arg("--restore-snapshot").arg(snapshot);
                    c
                }
            };
            let out = cmd
                .arg("--data-dir")
                .arg(&m.data_dir)
                .arg("--name")
                .arg(&m.name)
                .arg("--initial-cluster")
                .arg(&cluster.initial_cluster)
                .arg("--initial-cluster-token")
                .arg("test-cluster")
                .arg("--initial-advertise-peer-urls")
                .arg(&m.peer_url)
                .output()
                .expect("restore");
            assert!(
                out.status.success(),
                "{kind:?} restore of {}: {out:?}",
                m.name
            );
        }
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// The members of a cluster, none started yet.
    fn prepare(
        kind: Kind,
        plans: Vec<MemberPlan>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| Member {
                name: format!("m{i}"),
                client_url: plan.client_url,
                peer_url: plan.peer_url,
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
                paused: false,
                netns: plan.netns,
                extra: plan.extra,
                joining: false,
                initial_cluster: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            kind,
            members,
            initial_cluster,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dir: dir,
        }
    }

    fn spawn(&mut self, i: usize) {
        let bin = match self.kind {
            Kind::Etcd => PathBuf::from(ETCD_BIN),
            Kind::Basalt => PathBuf::from(env!("CARGO_BIN_EXE_basalt")),
        };
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut cmd = Command::new(IP_BIN);
                cmd.args(["netns", "exec", ns]).arg(&bin);
                cmd
            }
            None => Command::new(&bin),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(m.initial_cluster.as_ref().unwrap_or(&self.initial_cluster))
            .arg("--initial-cluster-token")
            .arg("test-cluster")
            .arg("--initial-cluster-state")
            .arg(if m.joining { "existing" } else { "new" })
            .args(&self.extra)
            .args(&m.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if self.kind == Kind::Basalt && !self.extra.iter().any(|a| a == "--cores") {
            cmd.arg("--cores").arg("1");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let m = &mut self.members[i];
        m.child = Some(child);
        m.paused = false;
    }

    /// Waits until member `i` answers a linearizable read (which needs a
    /// leader and a quorum).
    pub async fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = &mut self.members[i];
            if let Some(Ok(Some(status))) = m.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited early with {status}; log:\n{}", m.name, m.log());
            }
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(2),
                Client::connect([m.client_url.as_str()], None),
            )
            .await
            {
                if let Ok(read) =
                    tokio::time::timeout(Duration::from_secs(2), c.get("cluster-test-probe", None))
                        .await
                {
                    if super::answered(read) {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                let name = m.name.clone();
                panic!(
                    "{name} did not answer within 30 s; log:\n{}\nthe others: {}",
                    self.members[i].log(),
                    self.exited_members()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which members have exited, with their logs (a member that cannot
    /// reach a quorum is often waiting for one that died at start).
    fn exited_members(&mut self) -> String {
        let mut out = String::new();
        for m in &mut self.members {
            if let Some(Ok(Some(status))) = m.child.as_mut().map(|c| c.try_wait()) {
                out += &format!("\n{} exited with {status}; log:\n{}", m.name, m.log());
            }
        }
        if out.is_empty() {
            out = "all running".into();
        }
        out
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A client of member `i` only.
    pub async fn client(&self, i: usize) -> Client {
        Client::connect([self.members[i].client_url.as_str()], None)
            .await
            .expect("connect")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            if m.paused {
                signal(c.id(), "CONT");
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        m.paused = false;
    }

    /// SIGTERM, then waits (bounded) for the process to exit; true if it
    /// exited 0.
    pub fn terminate(&mut self, i: usize) -> bool {
        let m = &mut self.members[i];
        let Some(mut c) = m.child.take() else {
            return false;
        };
        signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// SIGSTOP: the process stays, silent.
    pub fn pause(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(pid) = m.pid() {
            signal(pid, "STOP");
            m.paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(pid) = m.pid() {
            signal(pid, "CONT");
            m.paused = false;
        }
    }

    /// Starts a killed member again on its data dir (the `--initial-*`
    /// flags are ignored then, as etcd ignores them).
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// A member that is not part of the cluster yet, where `plan` says
    /// (not in a namespace): it starts (see [`Cluster::join`]) after
    /// `member add`.
    pub fn add_slot(&mut self, plan: MemberPlan) -> usize {
        let i = self.members.len();
        let dir = self._dir.path();
        self.members.push(Member {
            name: format!("m{i}"),
            client_url: plan.client_url,
            peer_url: plan.peer_url,
            data_dir: dir.join(format!("m{i}")),
            log: dir.join(format!("m{i}.log")),
            child: None,
            paused: false,
            netns: None,
            extra: plan.extra,
            joining: true,
            initial_cluster: None,
        });
        i
    }

    /// Starts member `i` (added with `member add`) to join the running
    /// cluster with `initial_cluster` (what `member add` printed).
    pub fn join(&mut self, i: usize, initial_cluster: String) {
        let m = &mut self.members[i];
        m.joining = true;
        m.initial_cluster = Some(initial_cluster);
        self.spawn(i);
    }

    /// Replaces a stopped member's data dir with nothing: its next start
    /// joins the running cluster (`--initial-cluster-state existing`), as
    /// after `member remove` and `member add` in etcd's runbook.
    pub fn wipe_to_join(&mut self, i: usize) {
        self.kill(i);
        let m = &mut self.members[i];
        let _ = std::fs::remove_dir_all(&m.data_dir);
        m.joining = true;
    }

    /// Starts a killed member again without waiting for it.
    pub fn respawn(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The index of the member every running member names as leader, if
    /// they agree.
    pub async fn leader(&self) -> Option<usize> {
        let mut leader_id = None;
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || m.paused {
                continue;
            }
            let Ok(mut c) = Client::connect([m.client_url.as_str()], None).await else {
                return None;
            };
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await else {
                return None;
            };
            let _ = i;
            match leader_id {
                None => leader_id = Some(s.leader()),
                Some(l) if l == s.leader() => {}
                Some(_) => return None,
            }
        }
        let leader_id = leader_id?;
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || m.paused {
                continue;
            }
            let mut c = Client::connect([m.client_url.as_str()], None).await.ok()?;
            let s = c.status().await.ok()?;
            if s.header().map(|h| h.member_id()) == Some(leader_id) {
                return Some(i);
            }
        }
        None
    }

    /// Waits (bounded) until the running members agree on a leader.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// etcdctl (API v3) against every member.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        self.etcdctl_at(&self.endpoints(), args)
    }

    /// etcdctl (API v3) against the given endpoints.
    pub fn etcdctl_at(&self, endpoints: &[String], args: &[&str]) -> std::process::Output {
        Command::new(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg("--command-timeout=10s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl")
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
