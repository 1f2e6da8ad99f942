//! The fault schedule and the one who carries it out.
//!
//! Fault model: one member at a time is faulty (a minority of three), for
//! a bounded time, then healed, and the nemesis waits until that member
//! serves linearizable reads again before the next fault. Faults:
//!
//! - [`FaultKind::Kill`]: SIGKILL the server process, keep it down, start
//!   it again on its data dir;
//! - [`FaultKind::Pause`]: SIGSTOP, then SIGCONT (a long GC pause, a frozen
//!   VM): its connections stay open and silent;
//! - [`FaultKind::Partition`]: cut it off from the other members (clients
//!   still reach it, see [`super::netns`]), then heal;
//! - [`FaultKind::PausedPartition`]: cut it off and pause it at once; while
//!   it is frozen the others elect a leader and go on; it wakes up still
//!   cut off and, if it led, still believing it leads, for about an
//!   election timeout (a paused process's Raft clock does not run), and
//!   only then is healed. The classic way a deposed leader serves stale
//!   reads;
//! - [`FaultKind::Replace`]: etcd's runbook for a lost member, while the
//!   clients run: `member remove` it (it stops itself), wipe its data dir,
//!   `member add --learner` with the same peer URL, start it with
//!   `--initial-cluster-state existing` (it gets the leader's snapshot),
//!   `member promote` it once it caught up.
//!
//! A fault's target is a member picked by the seed, or whoever leads (or
//! follows) when the fault starts, asked through Status.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;

use super::clock::Clock;
use super::netns::Network;
use super::rng::Rng;
use super::workload::{connect, key_name};

/// The members' `--election-timeout` (etcd's default, which the runs keep).
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a healed member may take to serve linearizable reads again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How long the clients run against each membership of a growing and
/// shrinking cluster.
const MEMBERSHIP_DWELL: Duration = Duration::from_millis(1500);
/// Status and probe requests give up after this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    PausedPartition,
    Replace,
    /// A member added (learner, joined, promoted): only in
    /// [`Nemesis::grow_and_shrink`], never in a random schedule.
    Grow,
    /// A member removed: likewise.
    Shrink,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::PausedPartition,
        FaultKind::Replace,
    ];

    /// Whether it needs network namespaces.
    pub fn cuts_network(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::PausedPartition)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    /// A member that does not lead when the fault starts.
    Follower,
    Member(usize),
}

/// One fault of a schedule.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
    /// Healthy time before it starts.
    pub gap: Duration,
    /// How long the member stays down, paused or cut off.
    pub hold: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct Schedule {
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// Rounds of faults, each round every kind of `kinds` once in a seeded
    /// order, until about `length` is planned (at least one round); half
    /// of the faults hit the leader.
    pub fn random(
        rng: &mut Rng,
        members: usize,
        kinds: &[FaultKind],
        length: Duration,
    ) -> Schedule {
        let mut schedule = Schedule::default();
        if kinds.is_empty() {
            return schedule;
        }
        let mut planned = Duration::ZERO;
        while planned < length || schedule.faults.is_empty() {
            let mut round = kinds.to_vec();
            rng.shuffle(&mut round);
            for kind in round {
                let target = if rng.percent(50) {
                    Target::Leader
                } else {
                    Target::Member(rng.index(members))
                };
                let hold = match kind {
                    FaultKind::Kill => rng.duration(Duration::from_secs(1), Duration::from_secs(4)),
                    FaultKind::Pause => {
                        rng.duration(Duration::from_secs(2), Duration::from_secs(4))
                    }
                    FaultKind::Partition => {
                        rng.duration(Duration::from_secs(2), Duration::from_secs(5))
                    }
                    // Long enough that the others surely elect a leader.
                    FaultKind::PausedPartition => {
                        rng.duration(3 * ELECTION_TIMEOUT, Duration::from_secs(4))
                    }
                    // Down between its removal and its new start.
                    FaultKind::Replace => {
                        rng.duration(Duration::from_millis(500), Duration::from_secs(2))
                    }
                    FaultKind::Grow | FaultKind::Shrink => Duration::ZERO,
                };
                let gap = rng.duration(Duration::from_millis(500), Duration::from_secs(2));
                planned += gap + hold + estimated_recovery(kind);
                schedule.faults.push(Fault {
                    kind,
                    target,
                    gap,
                    hold,
                });
            }
        }
        schedule
    }

    /// `times` times the same fault.
    pub fn repeat(fault: Fault, times: usize) -> Schedule {
        Schedule {
            faults: vec![fault; times],
        }
    }

    pub fn kinds(&self) -> Vec<FaultKind> {
        let mut kinds: Vec<FaultKind> = self.faults.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Without the faults that need network namespaces.
    pub fn without_network_faults(mut self) -> Schedule {
        self.faults.retain(|f| !f.kind.cuts_network());
        self
    }
}

/// Time a fault adds beyond its hold, for planning only.
fn estimated_recovery(kind: FaultKind) -> Duration {
    match kind {
        FaultKind::PausedPartition => 2 * ELECTION_TIMEOUT + Duration::from_secs(1),
        FaultKind::Replace => Duration::from_secs(4),
        _ => Duration::from_secs(1),
    }
}

/// A fault as it happened.
#[derive(Clone, Debug)]
pub struct Happened {
    pub kind: FaultKind,
    pub member: usize,
    /// Whether the member led when the fault started.
    pub was_leader: bool,
    pub started_at: u64,
    pub healed_at: u64,
    /// When it served linearizable reads again; `None`: not within
    /// [`RECOVERY_LIMIT`].
    pub recovered_at: Option<u64>,
}

impl fmt::Display for Happened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8.3}s {:?} m{}{} until {:.3}s, serving again ",
            Clock::seconds(self.started_at),
            self.kind,
            self.member,
            if self.was_leader { " (leader)" } else { "" },
            Clock::seconds(self.healed_at),
        )?;
        match self.recovered_at {
            Some(at) => write!(f, "at {:.3}s", Clock::seconds(at)),
            None => write!(f, "NEVER (within {RECOVERY_LIMIT:?})"),
        }
    }
}

/// Carries out a schedule on a cluster.
pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    network: Option<&'a Network>,
    binary: &'a Path,
    clock: Clock,
    rng: Rng,
    /// Member id (from Status) to member index.
    ids: HashMap<u64, usize>,
    pub happened: Vec<Happened>,
    /// What went wrong that the history cannot show: a member that did not
    /// come back.
    pub problems: Vec<String>,
}

impl<'a> Nemesis<'a> {
    /// `binary` is the members' executable, to check that a restarted
    /// member's PID is the server itself.
    pub async fn new(
        cluster: &'a mut Cluster,
        network: Option<&'a Network>,
        binary: &'a Path,
        clock: Clock,
        rng: Rng,
    ) -> Nemesis<'a> {
        let mut ids = HashMap::new();
        for (i, m) in cluster.members.iter().enumerate() {
            let status = status(&m.client_url).await;
            let id = status
                .unwrap_or_else(|| panic!("m{i} does not answer Status at the start"))
                .member_id;
            ids.insert(id, i);
        }
        Nemesis {
            cluster,
            network,
            binary,
            clock,
            rng,
            ids,
            happened: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub async fn run(&mut self, schedule: &Schedule) {
        for fault in &schedule.faults {
            tokio::time::sleep(fault.gap).await;
            self.inject(fault).await;
        }
    }

    async fn inject(&mut self, fault: &Fault) {
        let leader = self.leader().await;
        let n = self.cluster.members.len();
        let member = match (fault.target, leader) {
            (Target::Member(i), _) => i,
            (Target::Leader, Some(l)) => l,
            (Target::Follower, Some(l)) => (l + 1 + self.rng.index(n - 1)) % n,
            // Nobody leads right now: any member will do.
            (Target::Leader | Target::Follower, None) => self.rng.index(n),
        };
        let started_at = self.clock.now();
        match fault.kind {
            FaultKind::Kill => {
                self.cluster.kill(member);
                tokio::time::sleep(fault.hold).await;
                self.cluster.respawn(member);
                self.verify(member);
            }
            FaultKind::Pause => {
                self.cluster.pause(member);
                tokio::time::sleep(fault.hold).await;
                self.cluster.resume(member);
            }
            FaultKind::Partition => {
                let network = self.network.expect("partitions need the network");
                network.isolate(member).expect("isolate");
                tokio::time::sleep(fault.hold).await;
                network.heal(member).expect("heal");
            }
            FaultKind::PausedPartition => {
                let network = self.network.expect("partitions need the network");
                network.isolate(member).expect("isolate");
                self.cluster.pause(member);
                tokio::time::sleep(fault.hold).await;
                self.cluster.resume(member);
                // Awake and still cut off for longer than it can take a
                // leader to notice it lost its followers.
                tokio::time::sleep(2 * ELECTION_TIMEOUT).await;
                network.heal(member).expect("heal");
            }
            FaultKind::Replace => {
                if let Err(e) = self.replace(member, fault.hold).await {
                    self.problems.push(format!("replacing m{member}: {e}"));
                }
            }
            FaultKind::Grow | FaultKind::Shrink => {
                panic!("{:?} is not a scheduled fault", fault.kind)
            }
        }
        let healed_at = self.clock.now();
        let recovered_at = self.wait_serving(member).await;
        if recovered_at.is_none() {
            self.problems.push(format!(
                "m{member} did not serve a linearizable read within {RECOVERY_LIMIT:?} after {:?} was healed",
                fault.kind
            ));
        }
        self.happened.push(Happened {
            kind: fault.kind,
            member,
            was_leader: leader == Some(member),
            started_at,
            healed_at,
            recovered_at,
        });
    }

    /// Another member than `member` that runs, to send membership calls to.
    fn other_than(&self, member: usize) -> Vec<String> {
        self.cluster
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| *i != member && m.is_running() && !m.is_paused())
            .map(|(_, m)| m.client_url.clone())
            .collect()
    }

    /// Retries `call` on the members other than `member` for up to 20 s
    /// (a leader may be changing meanwhile).
    async fn membership_call<T, F, Fut>(
        &self,
        member: usize,
        what: &str,
        call: F,
    ) -> Result<T, String>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            for url in self.other_than(member) {
                let Some(client) = connect(&url, PROBE_TIMEOUT).await else {
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(5), call(client)).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "timed out".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(format!("{what}: {last}"))
    }

    /// etcd's runbook for replacing `member` (see [`FaultKind::Replace`]).
    async fn replace(&mut self, member: usize, down: Duration) -> Result<(), String> {
        let old = self
            .ids
            .iter()
            .find(|(_, &i)| i == member)
            .map(|(&id, _)| id)
            .ok_or("no id for the member")?;
        self.membership_call(member, "member remove", |mut c| async move {
            match c.member_remove(old).await {
                // Applied by an earlier try whose answer was lost.
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.message() == "etcdserver: member not found" =>
                {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        })
        .await?;
        // It stops by itself once it applies its removal; a member that
        // never hears of it is stopped here.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.cluster.members[member].exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.cluster.wipe_to_join(member);
        tokio::time::sleep(down).await;
        let peer = self.cluster.members[member].peer_url.clone();
        let new = self
            .membership_call(member, "member add", |mut c| {
                let peer = peer.clone();
                async move {
                    let opts = etcd_client::MemberAddOptions::new().with_is_learner();
                    match c.member_add([peer.clone()], Some(opts)).await {
                        Ok(r) => Ok(r.member().map_or(0, |m| m.id())),
                        // Added by an earlier try whose answer was lost.
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.message() == "etcdserver: Peer URLs already exists" =>
                        {
                            let list = c.member_list().await?;
                            Ok(list
                                .members()
                                .iter()
                                .find(|m| m.peer_urls().contains(&peer))
                                .map_or(0, |m| m.id()))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if new == 0 {
            return Err("member add named no member".into());
        }
        self.ids.remove(&old);
        self.ids.insert(new, member);
        self.cluster.respawn(member);
        self.verify(member);
        self.membership_call(member, "member promote", |mut c| async move {
            c.member_promote(new).await
        })
        .await?;
        Ok(())
    }

    /// Grows the cluster to `to` members one at a time (`member add
    /// --learner`, start with `--initial-cluster-state existing` and the
    /// members as `member add` lists them, `member promote` once in sync),
    /// then shrinks it back one at a time (`member remove`; the member
    /// stops itself), while the clients run.
    pub async fn grow_and_shrink(&mut self, to: usize, back_to: usize) {
        let founders = self.cluster.members.len();
        let mut added = Vec::new();
        for _ in founders..to {
            let started_at = self.clock.now();
            let i = self
                .cluster
                .add_slot(crate::support::cluster::MemberPlan::loopback("http"));
            let result = self.grow(i).await;
            if let Err(e) = &result {
                self.problems.push(format!("adding m{i}: {e}"));
            }
            let healed_at = self.clock.now();
            let recovered_at = self.wait_serving(i).await;
            self.happened.push(Happened {
                kind: FaultKind::Grow,
                member: i,
                was_leader: false,
                started_at,
                healed_at,
                recovered_at,
            });
            if result.is_err() {
                return;
            }
            added.push(i);
            // The clients run a while against each membership.
            tokio::time::sleep(MEMBERSHIP_DWELL).await;
        }
        let keep = back_to.saturating_sub(founders);
        for i in added.into_iter().skip(keep).rev() {
            let started_at = self.clock.now();
            let id = self.id_of(i);
            let result = match id {
                Some(id) => self
                    .membership_call(i, "member remove", |mut c| async move {
                        c.member_remove(id).await.map(|_| ())
                    })
                    .await
                    .map(|_| ()),
                None => Err("no id".into()),
            };
            if let Err(e) = result {
                self.problems.push(format!("removing m{i}: {e}"));
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while !self.cluster.members[i].exited() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !self.cluster.members[i].exited() {
                self.problems.push(format!("removed m{i} did not stop"));
            }
            self.cluster.kill(i);
            let at = self.clock.now();
            self.happened.push(Happened {
                kind: FaultKind::Shrink,
                member: i,
                was_leader: false,
                started_at,
                healed_at: at,
                recovered_at: Some(at),
            });
            tokio::time::sleep(MEMBERSHIP_DWELL).await;
        }
    }

    fn id_of(&self, member: usize) -> Option<u64> {
        self.ids
            .iter()
            .find(|(_, &i)| i == member)
            .map(|(&id, _)| id)
    }

    /// `member add --learner` for slot `i`, its start, its promotion.
    async fn grow(&mut self, i: usize) -> Result<(), String> {
        let peer = self.cluster.members[i].peer_url.clone();
        let name = self.cluster.members[i].name.clone();
        let (id, initial_cluster) = self
            .membership_call(i, "member add", |mut c| {
                let (peer, name) = (peer.clone(), name.clone());
                async move {
                    let opts = etcd_client::MemberAddOptions::new().with_is_learner();
                    let r = c.member_add([peer.clone()], Some(opts)).await?;
                    let id = r.member().map_or(0, |m| m.id());
                    // What etcdctl prints as ETCD_INITIAL_CLUSTER.
                    let initial: Vec<String> = r
                        .member_list()
                        .iter()
                        .flat_map(|m| {
                            let n = if m.id() == id {
                                name.clone()
                            } else {
                                m.name().to_string()
                            };
                            m.peer_urls()
                                .iter()
                                .map(move |u| format!("{n}={u}"))
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    Ok((id, initial.join(",")))
                }
            })
            .await?;
        self.ids.insert(id, i);
        self.cluster.join(i, initial_cluster);
        self.membership_call(i, "member promote", |mut c| async move {
            c.member_promote(id).await.map(|_| ())
        })
        .await
    }

    /// A restarted member's PID must be the server in its namespace.
    fn verify(&self, member: usize) {
        if let (Some(network), Some(pid)) = (self.network, self.cluster.members[member].pid()) {
            if let Err(e) = network.verify_member(member, pid, self.binary) {
                panic!("m{member} restarted wrong: {e}");
            }
        }
    }

    /// The member that says it leads, at the highest term any says so.
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for m in &self.cluster.members {
            if !m.is_running() || m.is_paused() {
                continue;
            }
            let Some(s) = status(&m.client_url).await else {
                continue;
            };
            if s.leader == s.member_id && best.is_none_or(|(term, _)| s.raft_term > term) {
                if let Some(&i) = self.ids.get(&s.member_id) {
                    best = Some((s.raft_term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits until `member` answers a linearizable read; when it did.
    async fn wait_serving(&self, member: usize) -> Option<u64> {
        let deadline = Instant::now() + RECOVERY_LIMIT;
        let url = &self.cluster.members[member].client_url;
        while Instant::now() < deadline {
            if let Some(mut client) = connect(url, PROBE_TIMEOUT).await {
                let read = tokio::time::timeout(PROBE_TIMEOUT, client.get(key_name(0), None));
                if let Ok(Ok(_)) = read.await {
                    return Some(self.clock.now());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

struct MemberStatus {
    member_id: u64,
    leader: u64,
    raft_term: u64,
}

async fn status(url: &str) -> Option<MemberStatus> {
    let mut client = connect(url, PROBE_TIMEOUT).await?;
    let s = tokio::time::timeout(PROBE_TIMEOUT, client.status())
        .await
        .ok()?
        .ok()?;
    Some(MemberStatus {
        member_id: s.header()?.member_id(),
        leader: s.leader(),
        raft_term: s.raft_term(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_schedule_has_every_kind_and_replays() {
        let plan = |seed| {
            Schedule::random(
                &mut Rng::new(seed),
                3,
                &FaultKind::ALL,
                Duration::from_secs(1),
            )
        };
        let schedule = plan(3);
        assert_eq!(schedule.kinds(), FaultKind::ALL.to_vec());
        let again = plan(3);
        assert_eq!(
            format!("{:?}", schedule.faults),
            format!("{:?}", again.faults)
        );
        assert!(schedule
            .without_network_faults()
            .faults
            .iter()
            .all(|f| !f.kind.cuts_network()));
    }
}
