//! Fault runs: three real members killed (SIGKILL), paused (SIGSTOP) and
//! cut off from each other (network namespaces) while clients read, write,
//! compare-and-put and watch; the recorded history must be linearizable
//! and the watches must keep etcd's guarantees (`basalt-check`).
//!
//! The CI slice: a few seeded short basalt runs (every fault kind in each),
//! the same runner against a real etcd 3.4 (a correct database must pass,
//! which checks the runner), and the mutation checks: basalt built with a
//! deliberately unsafe read path must be caught. Longer runs:
//! `scripts/fault-runs.sh` (see docs/faults.md).

#[path = "support/faults/mod.rs"]
mod faults;
mod support;

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use basalt_check::{Verdict, ViolationKind};
use faults::nemesis::ELECTION_TIMEOUT;
use faults::netns::Network;
use faults::run::{binary, start_cluster, MEMBERS, REQUIRE_NETNS};
use faults::{run, Fault, FaultKind, Faults, RunPlan, RunResult, Schedule, Target, WorkloadPlan};
use support::Kind;

/// Fault time of each CI run: one round of every fault kind.
const CI_LENGTH: Duration = Duration::from_secs(15);
/// The CI runs leave at least this much evidence behind.
const MIN_ACKNOWLEDGED_WRITES: usize = 200;
const MIN_WATCH_EVENTS: usize = 200;
/// Seeds a mutation check tries before it concludes the checker missed it.
const MUTATION_SEEDS: [u64; 3] = [1, 2, 3];
/// The violations a stale read shows as.
const STALE_READ: [ViolationKind; 3] = [
    ViolationKind::NotLinearizable,
    ViolationKind::RevisionWentBackwards,
    ViolationKind::StaleAfterWatch,
];

/// One run at a time: each is three servers on two shared cores, and the
/// faults are timed against elections.
fn serially<F: Future>(test: F) -> F::Output {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test)
}

/// Panics, keeping the run's files, unless the run passed and did enough.
fn assert_passed(result: &RunResult) {
    eprintln!("{}", result.explain());
    let mut wrong = Vec::new();
    if result.verdict() != Verdict::Ok {
        wrong.push(format!("verdict {:?}", result.verdict()));
    }
    if !result.problems.is_empty() {
        wrong.push(format!("problems: {:?}", result.problems));
    }
    if result.counts.acknowledged_writes < MIN_ACKNOWLEDGED_WRITES {
        wrong.push(format!(
            "only {} acknowledged writes",
            result.counts.acknowledged_writes
        ));
    }
    if result.counts.events < MIN_WATCH_EVENTS {
        wrong.push(format!("only {} watch events", result.counts.events));
    }
    let happened = result.fault_counts();
    for kind in result.schedule.kinds() {
        if !happened.contains_key(&kind) {
            wrong.push(format!("no {kind:?} fault happened"));
        }
    }
    if wrong.is_empty() {
        keep_if_asked(result);
    } else {
        let saved = result.preserve();
        panic!(
            "{}: {}\nhistory, timeline and member logs kept: {}\n{}",
            result.label,
            wrong.join(", "),
            saved.display(),
            result.explain()
        );
    }
}

/// `BASALT_FAULT_KEEP` set: passing runs are kept too, for a look.
fn keep_if_asked(result: &RunResult) {
    if std::env::var_os("BASALT_FAULT_KEEP").is_some() {
        eprintln!("kept: {}", result.preserve().display());
    }
}

/// Every kind of fault is planned in each CI run (partitions unless
/// namespaces are unavailable, which the run has said loudly).
fn assert_every_kind_planned(result: &RunResult) {
    let planned = result.schedule.kinds();
    for kind in FaultKind::ALL {
        let skipped = kind.cuts_network() && result.no_partitions.is_some();
        assert!(skipped || planned.contains(&kind), "{kind:?} not planned");
    }
}

fn basalt_ci_run(seed: u64) {
    let result = serially(run(&RunPlan::basalt(seed, CI_LENGTH)));
    assert_every_kind_planned(&result);
    assert_passed(&result);
}

#[test]
fn basalt_under_faults_seed_1() {
    basalt_ci_run(1);
}

#[test]
fn basalt_under_faults_seed_2() {
    basalt_ci_run(2);
}

#[test]
fn basalt_under_faults_seed_3() {
    basalt_ci_run(3);
}

/// Membership changes under load: one member grows to three, then five
/// (each added as a learner, joined, promoted), and the cluster shrinks
/// back to three while the clients run; the history must check, and etcd
/// 3.4 must pass the same.
fn grow_and_shrink(kind: Kind, label: &str) {
    let plan = RunPlan {
        label: label.into(),
        kind,
        faults: Faults::Grow {
            founders: 1,
            to: 5,
            back_to: 3,
        },
        ..RunPlan::basalt(7, CI_LENGTH)
    };
    let result = serially(run(&plan));
    let kinds: Vec<FaultKind> = result.happened.iter().map(|h| h.kind).collect();
    assert_eq!(
        kinds,
        [
            FaultKind::Grow,
            FaultKind::Grow,
            FaultKind::Grow,
            FaultKind::Grow,
            FaultKind::Shrink,
            FaultKind::Shrink
        ],
        "{}",
        result.summary()
    );
    assert_passed(&result);
}

#[test]
fn basalt_grows_to_five_and_shrinks_back_under_load() {
    grow_and_shrink(Kind::Basalt, "basalt-grow");
}

#[test]
fn etcd_grows_to_five_and_shrinks_back_under_load() {
    grow_and_shrink(Kind::Etcd, "etcd-grow");
}

/// The runner against a real etcd 3.4: a correct database must pass, or
/// the runner (or the checker) is wrong.
#[test]
fn etcd_passes_the_same_runner() {
    let plan = RunPlan {
        label: "etcd".into(),
        kind: Kind::Etcd,
        ..RunPlan::basalt(1, CI_LENGTH)
    };
    let result = serially(run(&plan));
    assert_every_kind_planned(&result);
    assert_passed(&result);
}

/// The fault machinery does what it claims: members run in their own
/// namespaces as the server process itself (so SIGSTOP and SIGKILL hit
/// the server, not `ip netns exec`), a cut-off member neither reaches nor
/// is reached by its peers while clients still reach it, and healing
/// undoes it.
#[test]
fn faults_hit_the_server_and_partitions_cut_only_peers() {
    serially(async {
        let network = match Network::create(MEMBERS) {
            Ok(network) => network,
            Err(reason) => {
                assert!(
                    std::env::var_os(REQUIRE_NETNS).is_none(),
                    "{REQUIRE_NETNS} is set: {reason}"
                );
                eprintln!("SKIPPED: network namespaces unavailable ({reason})");
                return;
            }
        };
        let mut cluster = start_cluster(Kind::Basalt, Some(&network), None).await;
        let exe = binary(Kind::Basalt);
        for (i, m) in cluster.members.iter().enumerate() {
            let pid = m.pid().expect("running");
            network
                .verify_member(i, pid, &exe)
                .expect("the server itself");
            assert_eq!(network.pids(i), vec![pid as i32], "m{i}'s namespace");
        }
        let peer = |i| SocketAddrV4::new(network.peer_ip(i), 2380);
        let client = |i| SocketAddr::from(SocketAddrV4::new(network.client_ip(i), 2379));
        let wait = Duration::from_secs(2);
        assert!(network.connects_from(0, peer(1), wait), "m0 reaches m1");

        network.isolate(1).expect("isolate");
        assert!(
            !network.connects_from(0, peer(1), wait),
            "m0 reaches cut-off m1"
        );
        assert!(
            !network.connects_from(1, peer(2), wait),
            "cut-off m1 reaches m2"
        );
        assert!(network.connects_from(0, peer(2), wait), "m0 reaches m2");
        assert!(
            TcpStream::connect_timeout(&client(1), wait).is_ok(),
            "clients still reach cut-off m1"
        );
        network.heal(1).expect("heal");
        assert!(
            eventually(|| network.connects_from(0, peer(1), wait)),
            "healed m1 reached"
        );

        let pid = cluster.members[0].pid().expect("running");
        cluster.pause(0);
        assert!(
            eventually(|| process_state(pid) == Some('T')),
            "SIGSTOP stops the server"
        );
        cluster.resume(0);
        assert!(
            eventually(|| process_state(pid) != Some('T')),
            "SIGCONT resumes it"
        );

        let pid = cluster.members[2].pid().expect("running");
        cluster.kill(2);
        assert_eq!(process_state(pid), None, "SIGKILL ends the server");
        assert!(network.pids(2).is_empty(), "nothing left in m2's namespace");
        cluster.respawn(2);
        let pid = cluster.members[2].pid().expect("running");
        network
            .verify_member(2, pid, &exe)
            .expect("restarted: the server itself");
        cluster.wait_ready(2).await;
    });
}

/// Whether `condition` holds within a few tries (signals and links take
/// effect asynchronously).
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    (0..20).any(|_| {
        condition() || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    })
}

/// A process's state letter from /proc (`T`: stopped), `None` if gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Runs `plan` under up to [`MUTATION_SEEDS`] seeds until one run shows a
/// stale read; panics if none does. A run may legitimately miss: the
/// stale window depends on timing the seed does not fix.
fn assert_caught(mut plan: RunPlan) {
    let mut missed = Vec::new();
    for seed in MUTATION_SEEDS {
        plan.seed = seed;
        let result = serially(run(&plan));
        eprintln!("{}", result.summary());
        if let Some(reason) = &result.no_partitions {
            eprintln!("SKIPPED: {} needs partitions ({reason})", plan.label);
            return;
        }
        let kinds = result.report.kinds();
        if STALE_READ.iter().any(|k| kinds.contains(k)) {
            let first = &result.report.violations[0];
            eprintln!(
                "{} seed {seed}: caught ({kinds:?}); first violation:\n{}",
                plan.label, first.detail
            );
            return;
        }
        eprintln!(
            "{} seed {seed}: NOT caught\n{}",
            plan.label,
            result.explain()
        );
        missed.push(result.preserve());
    }
    panic!(
        "the checker did not catch {} under seeds {MUTATION_SEEDS:?}; runs kept: {missed:?}",
        plan.label
    );
}

/// Clients pinned on every member keep reading while writers go on; a
/// cut-off member must serve stale reads under this mutation.
fn mutation_workload() -> WorkloadPlan {
    WorkloadPlan {
        pinned_readers: true,
        clients: 4,
        op_timeout: Duration::from_secs(1),
        think: Duration::from_millis(5),
        ..WorkloadPlan::default()
    }
}

/// A follower cut off from the others while clients pinned on it read.
fn cut_off_follower() -> Fault {
    Fault {
        kind: FaultKind::Partition,
        target: Target::Follower,
        gap: Duration::from_secs(1),
        hold: Duration::from_secs(4),
    }
}

/// The leader cut off and paused: it wakes up deposed, cut off, and (its
/// Raft clock stopped while paused) still believing it leads.
fn deposed_leader() -> Fault {
    Fault {
        kind: FaultKind::PausedPartition,
        target: Target::Leader,
        gap: Duration::from_secs(1),
        hold: 3 * ELECTION_TIMEOUT,
    }
}

/// A run of `schedule` with readers pinned on every member.
fn mutation_plan(label: &str, schedule: Schedule, mutation: Option<&'static str>) -> RunPlan {
    RunPlan {
        label: label.into(),
        faults: Faults::Fixed(schedule),
        workload: mutation_workload(),
        quiet: Duration::from_secs(1),
        mutation,
        ..RunPlan::basalt(0, Duration::ZERO)
    }
}

/// Every member answers linearizable reads from its own applied state: a
/// follower cut off from the others serves what it had.
#[test]
fn checker_catches_stale_follower_reads() {
    let schedule = Schedule::repeat(cut_off_follower(), 2);
    let mutation = "stale-follower-reads";
    assert_caught(mutation_plan(mutation, schedule, Some(mutation)));
}

/// A leader answers linearizable reads without confirming it still
/// leads: deposed, it serves what it had while the others move on.
#[test]
fn checker_catches_leader_local_reads() {
    let schedule = Schedule::repeat(deposed_leader(), 2);
    let mutation = "leader-local-reads";
    assert_caught(mutation_plan(mutation, schedule, Some(mutation)));
}

/// The control of the two above: their workload and faults against basalt
/// without a mutation pass, so what they catch is the mutation's doing.
#[test]
fn mutation_schedules_pass_without_the_mutation() {
    let schedule = Schedule {
        faults: vec![cut_off_follower(), deposed_leader()],
    };
    let result = serially(run(&mutation_plan("mutation-control", schedule, None)));
    assert_passed(&result);
}

/// Long runs: `BASALT_FAULT_SEEDS` (`1..=50`, `1..50` or `4,9,17`) of
/// `BASALT_FAULT_SECONDS` (default 60) of faults each, against
/// `BASALT_FAULT_KIND` (`basalt`, the default, or `etcd`), with
/// `BASALT_FAULT_CLIENTS` clients (5) waiting up to
/// `BASALT_FAULT_THINK_MS` (20) between requests. Prints each seed's
/// verdict and nemesis timeline and a summary; fails if any run did not
/// pass. See scripts/fault-runs.sh.
#[test]
#[ignore = "long: run through scripts/fault-runs.sh"]
fn fault_runs_from_env() {
    let seeds = parse_seeds(&std::env::var("BASALT_FAULT_SEEDS").unwrap_or("1..=5".into()));
    let number = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .map(|s| s.parse().unwrap_or_else(|_| panic!("{name}: a number")))
            .unwrap_or(default)
    };
    let workload = WorkloadPlan {
        clients: number("BASALT_FAULT_CLIENTS", 5) as usize,
        think: Duration::from_millis(number("BASALT_FAULT_THINK_MS", 20)),
        ..WorkloadPlan::default()
    };
    let kind = match std::env::var("BASALT_FAULT_KIND").as_deref() {
        Ok("etcd") => Kind::Etcd,
        Ok("basalt") | Err(_) => Kind::Basalt,
        Ok(other) => panic!("BASALT_FAULT_KIND: basalt or etcd, not {other:?}"),
    };
    let seconds = number("BASALT_FAULT_SECONDS", 60);
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for &seed in &seeds {
        let plan = RunPlan {
            label: if kind == Kind::Etcd { "etcd" } else { "basalt" }.into(),
            kind,
            workload: workload.clone(),
            ..RunPlan::basalt(seed, Duration::from_secs(seconds))
        };
        let result = serially(run(&plan));
        let line = result.summary();
        println!("{}", result.explain());
        let passed = result.verdict() == Verdict::Ok && result.problems.is_empty();
        if passed {
            keep_if_asked(&result);
        } else {
            let saved = result.preserve();
            println!("NOT PASSED, kept: {}", saved.display());
            failed.push((seed, saved));
        }
        lines.push(line);
    }
    println!(
        "\n== {} runs of {seconds}s: {} passed, {} failed",
        seeds.len(),
        seeds.len() - failed.len(),
        failed.len()
    );
    for line in &lines {
        println!("  {line}");
    }
    assert!(failed.is_empty(), "failed seeds: {failed:?}");
}

fn parse_seeds(text: &str) -> Vec<u64> {
    let number = |s: &str| -> u64 { s.trim().parse().expect("BASALT_FAULT_SEEDS: numbers") };
    if let Some((from, to)) = text.split_once("..=") {
        (number(from)..=number(to)).collect()
    } else if let Some((from, to)) = text.split_once("..") {
        (number(from)..number(to)).collect()
    } else {
        text.split(',').map(number).collect()
    }
}

#[test]
fn seeds_parse_as_ranges_or_lists() {
    assert_eq!(parse_seeds("1..=3"), vec![1, 2, 3]);
    assert_eq!(parse_seeds("1..3"), vec![1, 2]);
    assert_eq!(parse_seeds("4, 9,17"), vec![4, 9, 17]);
}
