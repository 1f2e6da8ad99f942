//! Seeded deterministic simulation: random clusters under message loss,
//! duplication, reordering and delay, partitions (symmetric and one-way),
//! crashes and restarts, membership changes, leadership transfers and log
//! compaction; the checker in `cluster` verifies election safety, log
//! matching, leader completeness, state-machine safety and read
//! linearizability after every step. After the faults heal, a leader must
//! be elected and a proposal applied everywhere within a bounded time.
//!
//! `BASALT_SIM_SEEDS=N` runs N seeds per cluster size (default 200, so 600
//! in CI); `BASALT_SIM_SEED=S` replays one seed with its trace;
//! `BASALT_SIM_FIRST_SEED=F` shifts the seed range.

mod cluster;

use std::time::Instant;

use basalt_raft::{ConfChange, ConfChangeType, NodeId, StateRole};
use cluster::{joint, Cluster, SimOptions, Violation};

/// Ticks of chaos before healing, and the liveness bound after it.
const CHAOS_TICKS: u64 = 300;
const LIVENESS_TICKS: u64 = 400;

fn options(size: usize, seed: u64) -> SimOptions {
    let mut rng = cluster::Rng::new(seed.wrapping_mul(31).wrapping_add(size as u64));
    let mut o = SimOptions {
        max_inflight_msgs: 1 + rng.below(4) as usize,
        ..SimOptions::default()
    };
    o.pre_vote = rng.chance(750);
    // Check-quorum makes followers ignore votes while they hear a leader.
    o.check_quorum = rng.chance(750);
    o.max_inflight_bytes = if rng.chance(500) {
        0
    } else {
        64 + rng.below(256)
    };
    o.max_size_per_msg = 32 + rng.below(512);
    o.drop_per_mille = rng.below(150);
    o.dup_per_mille = rng.below(100);
    o.max_delay = rng.below(4);
    o.long_delay_per_mille = rng.below(30);
    o.long_delay = 40;
    // Some seeds are stormy: frequent early elections.
    o.election_churn_per_mille = if rng.chance(300) {
        40 + rng.below(80)
    } else {
        rng.below(20)
    };
    // Half the seeds pipeline as the server does: the leader sends before
    // its own persist, and sometimes crashes before that persist completes.
    // (Drawn last, so the options of earlier draws stay those of old seeds.)
    if rng.chance(500) {
        o.leader_sends_first_per_mille = 1000;
        o.crash_mid_persist_per_mille = 5 + rng.below(20);
    }
    o
}

/// Runs one seed; `Err` carries a description of the violated property.
fn run_seed(size: usize, seed: u64, keep_trace: bool) -> Result<Stats, Violation> {
    let voters: Vec<NodeId> = (1..=size as NodeId).collect();
    let opts = options(size, seed);
    let mut c = Cluster::new(&voters, opts, seed);
    c.keep_trace = keep_trace;
    let spare: Vec<NodeId> = (size as NodeId + 1..=size as NodeId + 2).collect();
    let mut stats = Stats::default();
    let mut body = || -> Result<(), Violation> {
        for _ in 0..CHAOS_TICKS {
            chaos_step(&mut c, &spare, &mut stats)?;
            c.tick(20)?;
        }
        c.heal();
        liveness(&mut c)
    };
    if let Err(v) = body() {
        return Err(Violation(format!(
            "{}\n--- last events ---\n{}",
            v.0,
            c.trace_tail(env_u64("BASALT_SIM_TRACE").unwrap_or(80) as usize)
        )));
    }
    stats.reads = c.reads_served;
    stats.mid_persist_crashes = c.mid_persist_crashes;
    stats.applied = c.history.len() as u64;
    Ok(stats)
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    applied: u64,
    reads: u64,
    mid_persist_crashes: u64,
    crashes: u64,
    conf_changes: u64,
    transfers: u64,
}

fn chaos_step(c: &mut Cluster, spare: &[NodeId], stats: &mut Stats) -> Result<(), Violation> {
    let live = c.live_ids();
    if let Some(id) = c.rng.pick(&live) {
        if c.rng.chance(300) {
            c.propose(id);
        }
    }
    if let Some(id) = c.rng.pick(&live) {
        if c.rng.chance(60) {
            c.start_read(id);
        }
    }
    let churn = c.opts.election_churn_per_mille;
    if c.rng.chance(churn) {
        // Election churn: a node times out early (its clock runs fast).
        if let Some(id) = c.rng.pick(&live).filter(|&id| c.is_live(id)) {
            c.log(|| format!("campaign {id}"));
            c.raw(id).campaign();
            c.process(id)?;
        }
    }
    if c.rng.chance(8) && live.len() > 1 {
        if let Some(id) = c.rng.pick(&live) {
            c.crash(id);
            stats.crashes += 1;
        }
    }
    if c.rng.chance(40) {
        let down: Vec<NodeId> = c
            .nodes
            .iter()
            .filter(|(_, n)| n.raw.is_none())
            .map(|(&id, _)| id)
            .collect();
        if let Some(id) = c.rng.pick(&down) {
            c.restart(id);
        }
    }
    if c.rng.chance(10) {
        // A random symmetric partition, or a one-way cut of one link.
        let all: Vec<NodeId> = c.nodes.keys().copied().collect();
        if c.rng.chance(500) {
            let group: Vec<NodeId> = all.iter().copied().filter(|_| c.rng.chance(400)).collect();
            c.log(|| format!("partition {group:?}"));
            c.partition(&group);
        } else if let (Some(a), Some(b)) = (c.rng.pick(&all), c.rng.pick(&all)) {
            c.log(|| format!("cut {a}->{b}"));
            c.cut.insert((a, b));
        }
    }
    if c.rng.chance(25) {
        c.cut.clear();
        c.log(|| "links healed".to_string());
    }
    if let Some(leader) = c.leader() {
        if c.rng.chance(8) {
            let voters: Vec<NodeId> = c.voters_of(leader).into_iter().collect();
            if let Some(to) = c.rng.pick(&voters).filter(|_| c.is_live(leader)) {
                c.log(|| format!("transfer {leader} -> {to}"));
                let _ = c.raw(leader).transfer_leader(to);
                c.process(leader)?;
                stats.transfers += 1;
            }
        }
        if c.rng.chance(10) {
            if let Some(cc) = pick_conf_change(c, leader, spare) {
                // A node that is about to join must exist to receive the log.
                for ch in &cc.changes {
                    if !c.nodes.contains_key(&ch.node_id)
                        && ch.change_type != ConfChangeType::RemoveNode
                    {
                        c.add_node(ch.node_id, basalt_raft::MemStorage::new());
                    }
                }
                if c.propose_conf_change(leader, cc) {
                    stats.conf_changes += 1;
                }
            }
        }
    }
    if c.rng.chance(20) {
        if let Some(id) = c.rng.pick(&live) {
            if c.nodes.get(&id).is_some_and(|n| n.raw.is_some()) {
                let keep = c.rng.below(5);
                c.compact(id, keep)?;
            }
        }
    }
    Ok(())
}

/// A membership change that keeps at least one voter: add a learner,
/// promote one, remove a member, or swap two through joint consensus.
fn pick_conf_change(c: &mut Cluster, leader: NodeId, spare: &[NodeId]) -> Option<ConfChange> {
    let cs = c.nodes[&leader].conf_state.clone();
    let members = c.members_of(leader);
    let outsiders: Vec<NodeId> = spare
        .iter()
        .copied()
        .filter(|id| !members.contains(id))
        .collect();
    let learners = cs.learners.clone();
    let voters = cs.voters.clone();
    match c.rng.below(5) {
        0 => c.rng.pick(&outsiders).map(ConfChange::add_learner),
        1 => c.rng.pick(&learners).map(ConfChange::add_node),
        2 if voters.len() > 2 => c.rng.pick(&voters).map(ConfChange::remove_node),
        3 if !learners.is_empty() => c.rng.pick(&learners).map(ConfChange::remove_node),
        4 => {
            let add = c.rng.pick(&outsiders)?;
            let remove = c.rng.pick(&voters)?;
            Some(joint(&[
                (ConfChangeType::AddNode, add),
                (ConfChangeType::RemoveNode, remove),
            ]))
        }
        _ => None,
    }
}

/// After healing: a leader emerges and a fresh proposal reaches every
/// member's state machine within `LIVENESS_TICKS`.
fn liveness(c: &mut Cluster) -> Result<(), Violation> {
    let mut marker: Option<Vec<u8>> = None;
    for t in 0..LIVENESS_TICKS {
        c.tick(0)?;
        let Some(leader) = c.leader() else { continue };
        if !c.is_live(leader) || c.raw(leader).role() != StateRole::Leader {
            continue;
        }
        match &marker {
            None => {
                if t % 5 == 0 {
                    marker = c.propose(leader);
                }
            }
            Some(m) => {
                let members = c.members_of(leader);
                let done = members
                    .iter()
                    .all(|id| c.nodes.get(id).is_some_and(|n| n.state.contains(m)));
                if done {
                    return Ok(());
                }
                // The proposal may have been lost with a leader change:
                // propose again on the current leader now and then.
                if t % 50 == 49 {
                    marker = c.propose(leader);
                }
            }
        }
    }
    let status: Vec<String> = c
        .nodes
        .iter()
        .map(|(id, n)| match &n.raw {
            Some(r) => format!(
                "{id}: {:?} term {} lead {} commit {} applied {} conf {:?}",
                r.role(),
                r.term(),
                r.leader_id(),
                r.committed(),
                n.applied_index,
                n.conf_state
            ),
            None => format!("{id}: down"),
        })
        .collect();
    Err(Violation(format!(
        "liveness: no proposal applied on all members {LIVENESS_TICKS} ticks after healing\n{}",
        status.join("\n")
    )))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_many(size: usize) {
    if let Some(seed) = env_u64("BASALT_SIM_SEED") {
        match run_seed(size, seed, true) {
            Ok(stats) => println!("size {size} seed {seed}: ok {stats:?}"),
            Err(v) => panic!("size {size} seed {seed}: {}", v.0),
        }
        return;
    }
    let seeds = env_u64("BASALT_SIM_SEEDS").unwrap_or(200);
    let first = env_u64("BASALT_SIM_FIRST_SEED").unwrap_or(0);
    let start = Instant::now();
    let mut total = Stats::default();
    for seed in first..first + seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(size, seed, false));
        let failure = match outcome {
            Ok(Ok(s)) => {
                total.applied += s.applied;
                total.reads += s.reads;
                total.crashes += s.crashes;
                total.conf_changes += s.conf_changes;
                total.transfers += s.transfers;
                total.mid_persist_crashes += s.mid_persist_crashes;
                None
            }
            Ok(Err(v)) => Some(v.0),
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or(p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        };
        if let Some(why) = failure {
            // Re-run with the trace on to show what led there.
            let trace = match std::panic::catch_unwind(|| run_seed(size, seed, true)) {
                Ok(Err(v)) => v.0,
                _ => String::new(),
            };
            panic!(
                "simulation failed: size {size} seed {seed}: {why}\n{trace}\nreplay: BASALT_SIM_SEED={seed} cargo test -p basalt-raft --test simulation size_{size} -- --nocapture"
            );
        }
    }
    println!(
        "size {size}: {seeds} seeds clean in {:.1}s (entries applied {}, reads {}, crashes {} + {} leaders mid-persist, conf changes {}, transfers {})",
        start.elapsed().as_secs_f64(),
        total.applied,
        total.reads,
        total.crashes,
        total.mid_persist_crashes,
        total.conf_changes,
        total.transfers
    );
}

#[test]
fn size_1() {
    run_many(1);
}

#[test]
fn size_3() {
    run_many(3);
}

#[test]
fn size_5() {
    run_many(5);
}

/// Seeds that once failed, replayed on every run. They depend on this
/// file's exact use of the PRNG: when the driver changes, re-find them.
#[test]
fn regressions() {
    // size 3 seed 1228: a candidate whose Vote requests always reached a
    // voter already at a higher term got no answer and never caught up.
    for (size, seed) in [(3usize, 1228u64)] {
        if let Err(v) = run_seed(size, seed, true) {
            panic!("regression size {size} seed {seed}: {}", v.0);
        }
    }
}
