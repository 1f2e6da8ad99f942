//! The workloads the harness runs against every server, as loadgen command
//! lines, and one measurement: fresh server (one member or a cluster),
//! (preparation), loadgen against the member the scenario names, memory of
//! every member.
//!
//! Single-member and cluster scenarios are apart: cluster ones are named
//! `cluster-…` and run only with more than one member, the others only
//! with one, so their results never mix.

use std::path::Path;

use crate::error::{BenchError, Result};
use crate::loadgen::{Loadgen, Report};
use crate::memory;
use crate::server::{Role, ServerSpec, Topology};

/// Sizes and lengths of the runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// loadgen --duration of each timed run.
    pub duration: String,
    /// Cluster size of the kubernetes profile.
    pub nodes: u64,
    /// Its --speedup (rates scale with nodes; this brings a small cluster's
    /// request counts up to where percentiles mean something).
    pub k8s_speedup: f64,
    /// Keys and value size of the list storm.
    pub storm_keys: u64,
    pub storm_val_size: usize,
    /// Concurrent LISTs in the storm.
    pub storm_lists: usize,
    /// Members per server: 1, or a cluster.
    pub members: usize,
}

/// One workload, the same for every server.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: &'static str,
    pub title: String,
    /// The operation whose latency the summary shows (none: every op).
    pub main_op: Option<&'static str>,
    /// The member loadgen talks to (preparation always goes to the
    /// leader).
    pub against: Role,
    /// Unmeasured loadgen run before the measured one.
    pub prepare: Option<Vec<String>>,
    /// Unmeasured load after which the server's peak RSS is reset, so the
    /// measured run's memory growth stands alone.
    pub load_then_reset_peak: Option<Vec<String>>,
    pub measure: Vec<String>,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Every scenario id, in run order.
pub const ALL: [&str; 5] = [
    "put-100",
    "put-serial",
    "range-100",
    "list-storm",
    "kubernetes",
];

/// Every cluster scenario id, in run order.
pub const CLUSTER_ALL: [&str; 4] = [
    "cluster-put-100",
    "cluster-put-serial",
    "cluster-range-100-leader",
    "cluster-range-100-follower",
];

/// The scenarios a run with `members` members runs by default.
pub fn default_ids(members: usize) -> Vec<String> {
    let ids: &[&str] = if members > 1 { &CLUSTER_ALL } else { &ALL };
    ids.iter().map(|s| s.to_string()).collect()
}

/// The scenarios named in `ids`, which must suit `s.members`.
pub fn scenarios(s: &Settings, ids: &[String]) -> Result<Vec<Scenario>> {
    for id in ids {
        let cluster = CLUSTER_ALL.contains(&id.as_str());
        if cluster && s.members < 2 {
            return Err(BenchError::InvalidArgs(format!(
                "`{id}` needs a cluster: add --members 3"
            )));
        }
        if !cluster && ALL.contains(&id.as_str()) && s.members > 1 {
            return Err(BenchError::InvalidArgs(format!(
                "`{id}` is a single-member scenario; with --members {} run {}",
                s.members,
                CLUSTER_ALL.join(", ")
            )));
        }
    }
    let d = s.duration.as_str();
    let keys = s.storm_keys.to_string();
    let val = s.storm_val_size.to_string();
    let lists = s.storm_lists.to_string();
    // Each listing task lists the prefix twice.
    let storm_total = (s.storm_lists * 2).to_string();
    let nodes = s.nodes.to_string();
    let speedup = s.k8s_speedup.to_string();
    let storm_mb = s.storm_keys as f64 * s.storm_val_size as f64 / 1e6;
    let mut out = Vec::new();
    for id in ids {
        let scenario = match id.as_str() {
            "put-100" => Scenario {
                id: "put-100",
                title: "put: 10 connections, 100 clients, 8 B keys, 256 B values".into(),
                main_op: Some("put"),
                against: Role::Leader,
                prepare: None,
                load_then_reset_peak: None,
                measure: args(&[
                    "--conns", "10", "--clients", "100", "--duration", d, "put", "--key-size", "8",
                    "--val-size", "256", "--key-space-size", "100000",
                ]),
            },
            "put-serial" => Scenario {
                id: "put-serial",
                title: "serial put: 1 connection, 1 client, 256 B values".into(),
                main_op: Some("put"),
                against: Role::Leader,
                prepare: None,
                load_then_reset_peak: None,
                measure: args(&[
                    "--conns", "1", "--clients", "1", "--duration", d, "put", "--key-size", "8",
                    "--val-size", "256", "--key-space-size", "100000",
                ]),
            },
            "range-100" => Scenario {
                id: "range-100",
                title: "linearizable single-key range: 10 connections, 100 clients".into(),
                main_op: Some("range"),
                against: Role::Leader,
                prepare: Some(args(&["--total", "1", "put", "--prefix", "bench-key", "--key-size", "0", "--val-size", "256"])),
                load_then_reset_peak: None,
                measure: args(&[
                    "--conns", "10", "--clients", "100", "--duration", d, "range", "bench-key0", "--consistency", "l",
                ]),
            },
            "list-storm" => Scenario {
                id: "list-storm",
                title: format!(
                    "list storm: {lists} concurrent full LISTs of {keys} keys × {val} B ({storm_mb:.0} MB), pages of 10,000"
                ),
                main_op: Some("list"),
                against: Role::Leader,
                prepare: None,
                load_then_reset_peak: Some(args(&[
                    "--profile", "list-storm", "--storm-keys", &keys, "--storm-val-size", &val, "--total", "0",
                ])),
                measure: args(&[
                    "--profile", "list-storm", "--lists", &lists, "--storm-keys", &keys, "--storm-val-size", &val,
                    "--storm-reuse", "--total", &storm_total,
                ]),
            },
            "kubernetes" => Scenario {
                id: "kubernetes",
                title: format!("kubernetes profile: {nodes} nodes, rates ×{speedup}"),
                main_op: None,
                against: Role::Leader,
                prepare: None,
                load_then_reset_peak: None,
                measure: args(&[
                    "--profile", "kubernetes", "--nodes", &nodes, "--speedup", &speedup, "--duration", d,
                ]),
            },
            "cluster-put-100" => Scenario {
                id: "cluster-put-100",
                title: format!("put on the leader of {} members: 10 connections, 100 clients, 8 B keys, 256 B values", s.members),
                main_op: Some("put"),
                against: Role::Leader,
                prepare: None,
                load_then_reset_peak: None,
                measure: args(&[
                    "--conns", "10", "--clients", "100", "--duration", d, "put", "--key-size", "8",
                    "--val-size", "256", "--key-space-size", "100000",
                ]),
            },
            "cluster-put-serial" => Scenario {
                id: "cluster-put-serial",
                title: format!("serial put on the leader of {} members: 1 connection, 1 client, 256 B values", s.members),
                main_op: Some("put"),
                against: Role::Leader,
                prepare: None,
                load_then_reset_peak: None,
                measure: args(&[
                    "--conns", "1", "--clients", "1", "--duration", d, "put", "--key-size", "8",
                    "--val-size", "256", "--key-space-size", "100000",
                ]),
            },
            "cluster-range-100-leader" | "cluster-range-100-follower" => {
                let (id, against, on) = if id == "cluster-range-100-leader" {
                    ("cluster-range-100-leader", Role::Leader, "the leader")
                } else {
                    ("cluster-range-100-follower", Role::Follower, "a follower")
                };
                Scenario {
                    id,
                    title: format!(
                        "linearizable single-key range on {on} of {} members: 10 connections, 100 clients",
                        s.members
                    ),
                    main_op: Some("range"),
                    against,
                    prepare: Some(args(&["--total", "1", "put", "--prefix", "bench-key", "--key-size", "0", "--val-size", "256"])),
                    load_then_reset_peak: None,
                    measure: args(&[
                        "--conns", "10", "--clients", "100", "--duration", d, "range", "bench-key0", "--consistency", "l",
                    ]),
                }
            }
            other => {
                return Err(BenchError::InvalidArgs(format!(
                    "unknown scenario `{other}`; known: {}, and with --members 3: {}",
                    ALL.join(", "),
                    CLUSTER_ALL.join(", ")
                )))
            }
        };
        out.push(scenario);
    }
    Ok(out)
}

/// One run of one scenario on one server.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub scenario: String,
    pub server: String,
    pub round: usize,
    pub report: Report,
    /// VmHWM at the end of the run (since the reset, for the list storm),
    /// summed over the members.
    pub peak_rss: u64,
    /// The largest member's VmHWM at the end of the run.
    pub peak_rss_max: u64,
    /// VmHWM at the end minus VmRSS just before the measured run, summed
    /// over the members.
    pub rss_growth: u64,
    /// The failed requests and violations loadgen printed.
    pub incidents: Vec<String>,
    /// What the cluster did that a reader should know: the leader changing
    /// during the run, members not stopping cleanly.
    pub notes: Vec<String>,
}

/// Every member's resident memory.
fn resident(pids: &[u32]) -> Result<Vec<memory::Resident>> {
    pids.iter().map(|&pid| memory::resident(pid)).collect()
}

/// Runs `scenario` once on a fresh `server` of `topology`.
pub fn measure(
    server: &ServerSpec,
    topology: &Topology,
    scenario: &Scenario,
    round: usize,
    work: &Path,
    raw: &Path,
    loadgen: &Loadgen,
) -> Result<Measurement> {
    let label = format!("{}-{round}", scenario.id);
    let running = server.start(work, &label, loadgen, topology)?;
    let pids = running.pids();
    let scratch = work.join(format!("{}-{label}.prepare.json", server.slug));
    // Preparation must be clean, or the measured run means nothing.
    let prepare = |args: &Vec<String>| -> Result<()> {
        let run = loadgen.run(running.endpoint(Role::Leader), args, &scratch)?;
        if run.report.errors() > 0 {
            return Err(BenchError::Loadgen {
                args: args.join(" "),
                code: Some(1),
                stderr: run.incidents.join("; "),
            });
        }
        Ok(())
    };
    if let Some(args) = &scenario.prepare {
        prepare(args)?;
    }
    if let Some(args) = &scenario.load_then_reset_peak {
        prepare(args)?;
        for &pid in &pids {
            memory::reset_peak(pid)?;
        }
    }
    let before = resident(&pids)?;
    let json = raw.join(format!("{}-{label}.json", server.slug));
    let run = loadgen.run(running.endpoint(scenario.against), &scenario.measure, &json)?;
    let after = resident(&pids)?;
    let mut notes = Vec::new();
    if topology.members() > 1 {
        let names = |i: usize| running.members()[i].name.clone();
        match running.current_leader() {
            Ok(Some(now)) if now == running.leader() => {}
            Ok(Some(now)) => notes.push(format!(
                "the leader changed during the run: {} before, {} after",
                names(running.leader()),
                names(now)
            )),
            Ok(None) => notes.push("no leader after the run".into()),
            Err(why) => notes.push(format!("no leader every member names after the run: {why}")),
        }
    }
    notes.extend(running.stop());
    Ok(Measurement {
        scenario: scenario.id.to_owned(),
        server: server.name.clone(),
        round,
        report: run.report,
        peak_rss: after.iter().map(|r| r.peak).sum(),
        peak_rss_max: after.iter().map(|r| r.peak).max().unwrap_or(0),
        rss_growth: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.peak.saturating_sub(b.now))
            .sum(),
        incidents: run.incidents,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            duration: "5s".into(),
            nodes: 10,
            k8s_speedup: 1.0,
            storm_keys: 100,
            storm_val_size: 1000,
            storm_lists: 8,
            members: 1,
        }
    }

    #[test]
    fn every_scenario_is_known_and_unknown_ones_are_refused() {
        let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        let list = scenarios(&settings(), &all).unwrap();
        assert_eq!(list.len(), ALL.len());
        assert!(list.iter().all(|s| s
            .measure
            .iter()
            .any(|a| a == "--duration" || a == "--total")));
        assert!(scenarios(&settings(), &["nope".to_string()]).is_err());
    }

    #[test]
    fn cluster_scenarios_run_only_on_clusters_and_single_ones_only_alone() {
        let single = settings();
        let cluster = Settings {
            members: 3,
            ..settings()
        };
        assert_eq!(default_ids(1), ALL.map(String::from).to_vec());
        assert_eq!(default_ids(3), CLUSTER_ALL.map(String::from).to_vec());
        let list = scenarios(&cluster, &default_ids(3)).unwrap();
        assert!(list.iter().all(|s| s.id.starts_with("cluster-")));
        let err = scenarios(&single, &["cluster-put-100".into()]).unwrap_err();
        assert!(err.to_string().contains("--members 3"), "{err}");
        let err = scenarios(&cluster, &["put-100".into()]).unwrap_err();
        assert!(err.to_string().contains("single-member"), "{err}");
    }

    #[test]
    fn cluster_scenarios_say_whom_they_load() {
        let cluster = Settings {
            members: 3,
            ..settings()
        };
        let list = scenarios(&cluster, &default_ids(3)).unwrap();
        let by_id = |id: &str| list.iter().find(|s| s.id == id).unwrap();
        let words = |id: &str| by_id(id).measure.join(" ");
        assert_eq!(
            words("cluster-put-100"),
            "--conns 10 --clients 100 --duration 5s put --key-size 8 --val-size 256 --key-space-size 100000"
        );
        assert!(words("cluster-put-serial").starts_with("--conns 1 --clients 1 --duration 5s put "));
        assert_eq!(by_id("cluster-put-100").against, Role::Leader);
        assert_eq!(by_id("cluster-put-serial").against, Role::Leader);
        for (id, role) in [
            ("cluster-range-100-leader", Role::Leader),
            ("cluster-range-100-follower", Role::Follower),
        ] {
            let s = by_id(id);
            assert_eq!(s.against, role, "{id}");
            assert_eq!(
                s.measure.join(" "),
                "--conns 10 --clients 100 --duration 5s range bench-key0 --consistency l"
            );
            // The key read is written first.
            assert!(s
                .prepare
                .as_ref()
                .unwrap()
                .join(" ")
                .contains("put --prefix bench-key --key-size 0"));
        }
        assert!(by_id("cluster-range-100-follower")
            .title
            .contains("a follower of 3 members"));
    }
}
