//! One fault run, start to verdict: a 3-member cluster (each member in its
//! own network namespace when namespaces can be had), the workload
//! recording, the nemesis carrying out its schedule, everything healed, a
//! quiet period, final reads of every key on every member, watchers
//! caught up, then the recording saved and checked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use basalt_check::{check, Limits, Outcome, Recording, Report, Response, Verdict};

use crate::support::cluster::{Cluster, MemberPlan};
use crate::support::{free_port, Kind, ETCD_BIN};

use super::clock::Clock;
use super::nemesis::{FaultKind, Happened, Nemesis, Schedule};
use super::netns::Network;
use super::rng::Rng;
use super::workload::{Workload, WorkloadPlan};

/// Members of every run: three, so one faulty member is a minority.
pub const MEMBERS: usize = 3;
/// Set (to anything) to fail instead of skipping partitions when network
/// namespaces cannot be had.
pub const REQUIRE_NETNS: &str = "BASALT_FAULTS_REQUIRE_NETNS";
/// After the quiet period every member must answer the final reads, and
/// every watcher catch up, within this.
const FINAL_DEADLINE: Duration = Duration::from_secs(30);

/// The faults of a run.
#[derive(Clone, Debug)]
pub enum Faults {
    /// [`Schedule::random`] from the run's seed, over these kinds.
    Random {
        kinds: Vec<FaultKind>,
        length: Duration,
    },
    Fixed(Schedule),
    /// No faults: a cluster of `founders` grows to `to` members and
    /// shrinks back to `back_to`, one membership change at a time, while
    /// the clients run ([`super::nemesis::Nemesis::grow_and_shrink`]).
    Grow {
        founders: usize,
        to: usize,
        back_to: usize,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// Names the run in output and saved files ("basalt", "etcd", a
    /// mutation).
    pub label: String,
    pub kind: Kind,
    pub seed: u64,
    pub faults: Faults,
    pub workload: WorkloadPlan,
    /// Clients keep running this long after the last fault is healed.
    pub quiet: Duration,
    /// `BASALT_TEST_MUTATION` for the members (basalt debug builds).
    pub mutation: Option<&'static str>,
}

impl RunPlan {
    /// A basalt run of random faults of every kind.
    pub fn basalt(seed: u64, length: Duration) -> RunPlan {
        RunPlan {
            label: "basalt".into(),
            kind: Kind::Basalt,
            seed,
            faults: Faults::Random {
                kinds: FaultKind::ALL.to_vec(),
                length,
            },
            workload: WorkloadPlan::default(),
            quiet: Duration::from_secs(3),
            mutation: None,
        }
    }
}

/// How many of what the recording holds.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub ops: usize,
    pub acknowledged_writes: usize,
    pub acknowledged_reads: usize,
    pub indeterminate: usize,
    pub failed: usize,
    /// Watchers, each resume counted.
    pub watchers: usize,
    pub resumes: usize,
    pub events: usize,
}

impl Counts {
    fn of(recording: &Recording) -> Counts {
        let mut counts = Counts {
            ops: recording.history.ops.len(),
            watchers: recording.watchers.len(),
            resumes: recording
                .watchers
                .iter()
                .filter(|w| w.resumes.is_some())
                .count(),
            events: recording
                .watchers
                .iter()
                .flat_map(|w| &w.responses)
                .map(|r| r.events.len())
                .sum(),
            ..Counts::default()
        };
        for op in &recording.history.ops {
            match &op.outcome {
                Outcome::Ok(Response::Get(_)) => counts.acknowledged_reads += 1,
                Outcome::Ok(Response::CasPut(r)) if !r.succeeded => counts.acknowledged_reads += 1,
                Outcome::Ok(_) => counts.acknowledged_writes += 1,
                Outcome::Indeterminate => counts.indeterminate += 1,
                Outcome::Failed => counts.failed += 1,
            }
        }
        counts
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops ({} acknowledged writes, {} acknowledged reads, {} indeterminate, {} failed); \
             {} watchers ({} resumes) with {} events",
            self.ops,
            self.acknowledged_writes,
            self.acknowledged_reads,
            self.indeterminate,
            self.failed,
            self.watchers,
            self.resumes,
            self.events
        )
    }
}

/// What a run did and what the checker said.
pub struct RunResult {
    pub label: String,
    pub seed: u64,
    pub report: Report,
    pub counts: Counts,
    /// The schedule carried out (network faults left out without
    /// namespaces).
    pub schedule: Schedule,
    pub happened: Vec<Happened>,
    /// Liveness trouble the history cannot show: a member that did not
    /// come back or answer the final reads, a watcher that did not catch
    /// up.
    pub problems: Vec<String>,
    /// Why partitions were skipped, if they were.
    pub no_partitions: Option<String>,
    /// How long the run took, checking included.
    pub elapsed: Duration,
    /// The run's files: `history.jsonl`, `nemesis.txt`, member logs.
    dir: tempfile::TempDir,
}

impl RunResult {
    pub fn verdict(&self) -> Verdict {
        self.report.verdict()
    }

    pub fn history_path(&self) -> PathBuf {
        self.dir.path().join("history.jsonl")
    }

    /// The kinds of fault that happened, and how often.
    pub fn fault_counts(&self) -> BTreeMap<FaultKind, usize> {
        let mut counts = BTreeMap::new();
        for h in &self.happened {
            *counts.entry(h.kind).or_default() += 1;
        }
        counts
    }

    /// One line: label, seed, verdict, counts.
    pub fn summary(&self) -> String {
        format!(
            "{} seed {}: {:?} in {:.1}s; {}; faults {:?}{}",
            self.label,
            self.seed,
            self.verdict(),
            self.elapsed.as_secs_f64(),
            self.counts,
            self.fault_counts(),
            if self.problems.is_empty() {
                String::new()
            } else {
                format!("; PROBLEMS: {}", self.problems.join("; "))
            }
        )
    }

    /// Copies the history, the nemesis timeline and the member logs to
    /// `<target>/fault-runs/` (`<seed>.jsonl` for basalt runs,
    /// `<label>-<seed>.jsonl` for others); returns the history's path.
    pub fn preserve(&self) -> PathBuf {
        let dir = fault_runs_dir();
        std::fs::create_dir_all(&dir).expect("fault-runs dir");
        let stem = if self.label == "basalt" {
            self.seed.to_string()
        } else {
            format!("{}-{}", self.label, self.seed)
        };
        let history = dir.join(format!("{stem}.jsonl"));
        std::fs::copy(self.history_path(), &history).expect("copy history");
        for entry in std::fs::read_dir(self.dir.path())
            .expect("run dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "history.jsonl" {
                let _ = std::fs::copy(entry.path(), dir.join(format!("{stem}.{name}")));
            }
        }
        history
    }

    /// Everything a person needs when the run is not what was expected.
    pub fn explain(&self) -> String {
        format!(
            "{}\nnemesis:\n{}\nreport:\n{}",
            self.summary(),
            self.happened
                .iter()
                .map(|h| format!("  {h}\n"))
                .collect::<String>(),
            self.report
        )
    }
}

/// Where failed runs are kept: `$BASALT_FAULT_RUNS_DIR`, else
/// `fault-runs/` in the target directory.
pub fn fault_runs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BASALT_FAULT_RUNS_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("fault-runs")
}

/// The members' executable.
pub fn binary(kind: Kind) -> PathBuf {
    match kind {
        Kind::Etcd => PathBuf::from(ETCD_BIN),
        Kind::Basalt => PathBuf::from(env!("CARGO_BIN_EXE_basalt")),
    }
}

/// The network, or why there is none (said loudly; fatal when
/// [`REQUIRE_NETNS`] is set).
pub fn network() -> Result<Network, String> {
    Network::create(MEMBERS).inspect_err(|reason| {
        eprintln!(
            "NOTICE: network namespaces unavailable ({reason}): partition faults are SKIPPED"
        );
        if std::env::var_os(REQUIRE_NETNS).is_some() {
            panic!("{REQUIRE_NETNS} is set and partitions are unavailable: {reason}");
        }
    })
}

/// Runs `plan` to its verdict.
pub async fn run(plan: &RunPlan) -> RunResult {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("run dir");
    // The members that join later run on loopback, beside the founders.
    let network = match plan.faults {
        Faults::Grow { .. } => Err("membership runs stay on loopback".to_string()),
        _ => network(),
    };
    let no_partitions = network.as_ref().err().cloned();
    let founders = match plan.faults {
        Faults::Grow { founders, .. } => founders,
        _ => MEMBERS,
    };
    let mut cluster =
        start_members(plan.kind, founders, network.as_ref().ok(), plan.mutation).await;
    let exe = binary(plan.kind);
    if let Ok(network) = &network {
        for (i, m) in cluster.members.iter().enumerate() {
            let pid = m.pid().expect("started");
            if let Err(e) = network.verify_member(i, pid, &exe) {
                panic!("m{i} started wrong: {e}");
            }
        }
    }
    let mut rng = Rng::new(plan.seed);
    let mut schedule = match &plan.faults {
        Faults::Random { kinds, length } => Schedule::random(&mut rng, MEMBERS, kinds, *length),
        Faults::Fixed(schedule) => schedule.clone(),
        Faults::Grow { .. } => Schedule::default(),
    };
    if network.is_err() {
        schedule = schedule.without_network_faults();
    }
    eprintln!(
        "{} seed {}: {} faults planned ({:?}){}",
        plan.label,
        plan.seed,
        schedule.faults.len(),
        schedule.kinds(),
        plan.mutation
            .map(|m| format!(", members run with BASALT_TEST_MUTATION={m}"))
            .unwrap_or_default()
    );

    let clock = Clock::start();
    let endpoints = cluster.endpoints();
    let mut workload = Workload::start(plan.seed, endpoints, plan.workload.clone(), clock);
    // The clients get going before the first fault.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (happened, mut problems) = {
        let rng = Rng::fork(plan.seed, u64::MAX);
        let mut nemesis = Nemesis::new(&mut cluster, network.as_ref().ok(), &exe, clock, rng).await;
        nemesis.run(&schedule).await;
        if let Faults::Grow { to, back_to, .. } = plan.faults {
            nemesis.grow_and_shrink(to, back_to).await;
        }
        (nemesis.happened, nemesis.problems)
    };
    tokio::time::sleep(plan.quiet).await;
    problems.extend(workload.stop_clients().await);
    let finals = workload.final_reads(FINAL_DEADLINE).await;
    problems.extend(finals.problems);
    problems.extend(alarms_left(&cluster).await);
    problems.extend(
        workload
            .stop_watchers(finals.revision, FINAL_DEADLINE)
            .await,
    );
    let recording = workload.recording();
    drop(workload);

    recording
        .save(&dir.path().join("history.jsonl"))
        .expect("save history");
    let timeline: String = happened.iter().map(|h| format!("{h}\n")).collect();
    std::fs::write(dir.path().join("nemesis.txt"), timeline).expect("save timeline");
    // The members' logs live in the cluster's directory, which goes with it.
    for i in 0..MEMBERS {
        cluster.kill(i);
        let log = cluster.members[i].log_path();
        let _ = std::fs::copy(log, dir.path().join(format!("m{i}.log")));
    }
    drop(cluster);
    let report = check(&recording, &Limits::default()).expect("a well-formed recording");
    RunResult {
        label: plan.label.clone(),
        seed: plan.seed,
        counts: Counts::of(&recording),
        report,
        schedule,
        happened,
        problems,
        no_partitions,
        elapsed: started.elapsed(),
        dir,
    }
}

/// Three members of `kind`, in `network`'s namespaces if given, else on
/// loopback; `mutation` is passed to them as `BASALT_TEST_MUTATION`.
pub async fn start_cluster(
    kind: Kind,
    network: Option<&Network>,
    mutation: Option<&str>,
) -> Cluster {
    start_members(kind, MEMBERS, network, mutation).await
}

/// [`start_cluster`] with `n` members (on loopback unless `network`).
async fn start_members(
    kind: Kind,
    n: usize,
    network: Option<&Network>,
    mutation: Option<&str>,
) -> Cluster {
    let plans = (0..n)
        .map(|i| match network {
            Some(net) => MemberPlan {
                client_url: format!("http://{}:2379", net.client_ip(i)),
                peer_url: format!("http://{}:2380", net.peer_ip(i)),
                netns: Some(net.namespace(i).to_string()),
                extra: Vec::new(),
            },
            None => MemberPlan {
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                netns: None,
                extra: Vec::new(),
            },
        })
        .collect();
    let env: Vec<(&str, &str)> = mutation
        .map(|m| ("BASALT_TEST_MUTATION", m))
        .into_iter()
        .collect();
    // Basalt members also run the corruption check and lease checkpoints,
    // often, so every fault run shows they raise no false alarm.
    let extra: &[&str] = match kind {
        Kind::Basalt => &[
            "--experimental-corrupt-check-time=2s",
            "--experimental-enable-lease-checkpoint",
            "--experimental-lease-checkpoint-interval=2s",
        ],
        _ => &[],
    };
    Cluster::start_planned(kind, plans, extra, &env).await
}

/// Alarms listed at the end of a run: none is expected (the workload stays
/// far below the quota, and members never diverge).
async fn alarms_left(cluster: &Cluster) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, m) in cluster.members.iter().enumerate() {
        let Ok(mut c) = etcd_client::Client::connect([m.client_url.as_str()], None).await else {
            continue;
        };
        let listed = tokio::time::timeout(
            Duration::from_secs(5),
            c.alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            ),
        )
        .await;
        if let Ok(Ok(r)) = listed {
            for a in r.alarms() {
                problems.push(format!(
                    "m{i} lists alarm {:?} of member {:x}",
                    a.alarm(),
                    a.member_id()
                ));
            }
        }
    }
    problems
}
