//! The workloads the harness runs against every server, as loadgen command
//! lines, and one measurement: fresh server, (preparation), loadgen, memory.

use std::path::Path;

use crate::error::{BenchError, Result};
use crate::loadgen::{Loadgen, Report};
use crate::memory;
use crate::server::ServerSpec;

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
}

/// One workload, the same for every server.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: &'static str,
    pub title: String,
    /// The operation whose latency the summary shows (none: every op).
    pub main_op: Option<&'static str>,
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

/// The scenarios named in `ids`.
pub fn scenarios(s: &Settings, ids: &[String]) -> Result<Vec<Scenario>> {
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
                prepare: None,
                load_then_reset_peak: None,
                measure: args(&[
                    "--profile", "kubernetes", "--nodes", &nodes, "--speedup", &speedup, "--duration", d,
                ]),
            },
            other => {
                return Err(BenchError::InvalidArgs(format!(
                    "unknown scenario `{other}`; known: {}",
                    ALL.join(", ")
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
    /// VmHWM at the end of the run (since the reset, for the list storm).
    pub peak_rss: u64,
    /// VmHWM at the end minus VmRSS just before the measured run.
    pub rss_growth: u64,
    /// The failed requests and violations loadgen printed.
    pub incidents: Vec<String>,
}

/// Runs `scenario` once on a fresh `server`.
pub fn measure(
    server: &ServerSpec,
    scenario: &Scenario,
    round: usize,
    work: &Path,
    raw: &Path,
    loadgen: &Loadgen,
) -> Result<Measurement> {
    let label = format!("{}-{round}", scenario.id);
    let running = server.start(work, &label, loadgen)?;
    let scratch = work.join(format!("{}-{label}.prepare.json", server.slug));
    // Preparation must be clean, or the measured run means nothing.
    let prepare = |args: &Vec<String>| -> Result<()> {
        let run = loadgen.run(&running.endpoint, args, &scratch)?;
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
        memory::reset_peak(running.pid())?;
    }
    let before = memory::resident(running.pid())?;
    let json = raw.join(format!("{}-{label}.json", server.slug));
    let run = loadgen.run(&running.endpoint, &scenario.measure, &json)?;
    let after = memory::resident(running.pid())?;
    running.stop();
    Ok(Measurement {
        scenario: scenario.id.to_owned(),
        server: server.name.clone(),
        round,
        report: run.report,
        peak_rss: after.peak,
        rss_growth: after.peak.saturating_sub(before.now),
        incidents: run.incidents,
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
}
