//! From measurements to docs/benchmarks/RESULTS.md (one member) or
//! RESULTS-cluster.md (a cluster): the median run per server and scenario,
//! the issue's targets as basalt/etcd ratios, and a table per scenario.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::scenario::{Measurement, Scenario};

const MB: f64 = 1024.0 * 1024.0;

/// A server as the results name it.
#[derive(Clone, Debug)]
pub struct ServerEntry {
    pub name: String,
    pub slug: String,
    /// "serving", or why it is absent.
    pub status: String,
    pub serving: bool,
}

/// Everything a results page needs.
pub struct Results<'a> {
    pub command: String,
    pub machine: String,
    pub when: String,
    /// The workspace's commit (with "-dirty" for uncommitted changes).
    pub commit: String,
    pub rounds: usize,
    /// Members per server.
    pub members: usize,
    /// How the servers were started where the flags choose it (basalt's
    /// cores and pinning), one sentence each.
    pub setup: Vec<String>,
    pub work_dir: String,
    pub servers: Vec<ServerEntry>,
    pub scenarios: &'a [Scenario],
    pub measurements: Vec<Measurement>,
    /// Runs that failed, with why.
    pub failures: Vec<String>,
    /// File name of the throughput chart next to RESULTS.md, if drawn.
    pub chart: Option<String>,
}

/// The median run (by throughput) of each (scenario, server), with the
/// throughput range over all its runs.
pub struct Cell<'a> {
    pub run: &'a Measurement,
    pub min_ops: f64,
    pub max_ops: f64,
    pub runs: usize,
}

impl Results<'_> {
    /// The median cell of `scenario` on `server`, if it ran.
    pub fn cell(&self, scenario: &str, server: &str) -> Option<Cell<'_>> {
        let mut runs: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.scenario == scenario && m.server == server)
            .collect();
        if runs.is_empty() {
            return None;
        }
        runs.sort_by(|a, b| {
            a.report
                .throughput_ops_s
                .total_cmp(&b.report.throughput_ops_s)
        });
        Some(Cell {
            run: runs[(runs.len() - 1) / 2],
            min_ops: runs[0].report.throughput_ops_s,
            max_ops: runs[runs.len() - 1].report.throughput_ops_s,
            runs: runs.len(),
        })
    }

    fn server(&self, slug: &str) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.slug == slug)
    }

    /// The whole RESULTS.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if self.members > 1 {
            let _ = writeln!(
                out,
                "# Side-by-side benchmark results: {}-member clusters\n",
                self.members
            );
        } else {
            let _ = writeln!(out, "# Side-by-side benchmark results\n");
        }
        let _ = writeln!(
            out,
            "Measured {} at commit {} on {}. Produced by the harness (see [README.md](README.md)) with:\n",
            self.when, self.commit, self.machine
        );
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let _ = writeln!(out, "| server | status |\n|---|---|");
        for s in &self.servers {
            let _ = writeln!(out, "| {} | {} |", s.name, s.status);
        }
        if self.members > 1 {
            let _ = writeln!(
                out,
                "\nMethod: every run starts a fresh {n}-member cluster of the server, founded \
                 with etcd's flags (`--initial-cluster m1=…,m2=…,m3=… --initial-cluster-state new`), \
                 with empty data dirs under `{dir}` (one disk for all members) and loopback ports. \
                 It waits until every member answers a linearizable read and every member names \
                 the same leader (`etcdctl endpoint status`), then `loadgen` talks to the member \
                 the scenario names: the leader, or the first member in start order that is not \
                 the leader. Rounds alternate the order of the servers. Each cell is the median \
                 run by throughput of {rounds} rounds; \"range\" is the lowest and highest \
                 throughput over the rounds. Peak RSS is every member's VmHWM at the end of the \
                 run: Σ their sum, max the largest member's; RSS growth Σ is the sum over members \
                 of VmHWM at the end minus VmRSS just before the run. Latencies are loadgen's, \
                 client-side.",
                n = self.members,
                dir = self.work_dir,
                rounds = self.rounds
            );
        } else {
            let _ = writeln!(
                out,
                "\nMethod: every run starts the server afresh with an empty data dir under `{}` \
                 (one disk for all servers) and talks to it over loopback through `loadgen`. \
                 Rounds alternate the order of the servers. Each cell is the median run by \
                 throughput of {} rounds; \"range\" is the lowest and highest throughput over the \
                 rounds. Peak RSS is the server's VmHWM; RSS growth is VmHWM at the end of the run \
                 minus VmRSS just before it (for the list storm the peak is reset after loading, \
                 so growth is the storm's alone). Latencies are loadgen's, client-side.",
                self.work_dir, self.rounds
            );
        }
        for line in &self.setup {
            let _ = writeln!(out, "\n{line}");
        }
        let _ = writeln!(out);
        self.targets(&mut out);
        if let Some(chart) = &self.chart {
            let _ = writeln!(out, "![throughput relative to etcd 3.4]({chart})\n");
        }
        for scenario in self.scenarios {
            self.scenario_section(&mut out, scenario);
        }
        let with_incidents: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.report.errors() > 0)
            .collect();
        if !with_incidents.is_empty() {
            let _ = writeln!(out, "## Errors and violations loadgen saw\n");
            for m in with_incidents {
                let _ = writeln!(
                    out,
                    "- {} on {}, round {}: {} errors",
                    m.scenario,
                    m.server,
                    m.round + 1,
                    m.report.errors()
                );
                for line in m.incidents.iter().take(5) {
                    let _ = writeln!(out, "  - `{line}`");
                }
            }
            let _ = writeln!(out);
        }
        let with_notes: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| !m.notes.is_empty())
            .collect();
        if !with_notes.is_empty() {
            let _ = writeln!(out, "## What the servers did besides serving\n");
            for m in with_notes {
                for note in &m.notes {
                    let _ = writeln!(
                        out,
                        "- {} on {}, round {}: {note}",
                        m.scenario,
                        m.server,
                        m.round + 1
                    );
                }
            }
            let _ = writeln!(out);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "## Runs that failed\n");
            for f in &self.failures {
                let _ = writeln!(out, "- {f}");
            }
            let _ = writeln!(out);
        }
        out
    }

    fn targets(&self, out: &mut String) {
        let targets: &[Target] = if self.members > 1 {
            let _ = writeln!(out, "## Targets ({}-member clusters)\n", self.members);
            &CLUSTER_TARGETS
        } else {
            let _ = writeln!(out, "## Targets (issue 5)\n");
            &TARGETS
        };
        let etcds: Vec<&ServerEntry> = ["etcd-3.4", "etcd-3.5"]
            .iter()
            .filter_map(|s| self.server(s))
            .collect();
        let basalt = self.server("basalt");
        let mut header = String::from("| target |");
        let mut rule = String::from("|---|");
        for e in &etcds {
            let _ = write!(header, " {} |", e.name);
            rule.push_str("---|");
        }
        header.push_str(" basalt |");
        rule.push_str("---|");
        for e in &etcds {
            let _ = write!(header, " basalt / {} |", e.name);
            rule.push_str("---|");
        }
        header.push_str(" met |");
        rule.push_str("---|");
        let _ = writeln!(out, "{header}\n{rule}");
        for target in targets {
            let value = |slug: &str| -> Option<f64> {
                let server = self.server(slug)?;
                (target.metric)(self, &server.name)
            };
            let mut row = format!("| {} |", target.title);
            for e in &etcds {
                let _ = write!(row, " {} |", fmt_value(value(&e.slug), target.unit));
            }
            let b = basalt.and_then(|_| value("basalt"));
            let _ = write!(row, " {} |", fmt_value(b, target.unit));
            let mut verdicts = Vec::new();
            for e in &etcds {
                let (ratio, which) = match (target.ratio_of, b, value(&e.slug)) {
                    (Some(ratio_of), Some(_), Some(_)) => {
                        match basalt.and_then(|basalt| ratio_of(self, &basalt.name, &e.name)) {
                            Some((r, which)) => (Some(r), format!(" ({which})")),
                            None => (None, String::new()),
                        }
                    }
                    (None, Some(b), Some(e)) if e > 0.0 => (Some(b / e), String::new()),
                    _ => (None, String::new()),
                };
                let _ = write!(
                    row,
                    " {} |",
                    ratio.map_or("—".into(), |r| format!("{r:.2}×{which}"))
                );
                if let Some(r) = ratio {
                    verdicts.push(if target.higher_is_better {
                        r >= target.ratio
                    } else {
                        r <= target.ratio
                    });
                }
            }
            let met = if !basalt.is_some_and(|s| s.serving) {
                "not measured (basalt not serving)".to_string()
            } else if b.is_none() {
                "not measured".to_string()
            } else if verdicts.is_empty() {
                "no etcd figure".to_string()
            } else if verdicts.iter().all(|v| *v) {
                "yes".to_string()
            } else {
                "**no**".to_string()
            };
            let _ = writeln!(row, " {met} |");
            out.push_str(&row);
        }
        let _ = writeln!(out);
    }

    fn scenario_section(&self, out: &mut String, scenario: &Scenario) {
        let _ = writeln!(out, "## {}: {}\n", scenario.id, scenario.title);
        let _ = writeln!(out, "`loadgen {}`\n", scenario.measure.join(" "));
        match scenario.main_op {
            Some(op) => {
                let memory = if self.members > 1 {
                    "peak RSS MB Σ | max | RSS growth MB Σ"
                } else {
                    "peak RSS MB | RSS growth MB"
                };
                let rule = if self.members > 1 {
                    "---|---|---|"
                } else {
                    "---|---|"
                };
                let _ = writeln!(
                    out,
                    "| server | ops/s | range | {op} p50 ms | p99 ms | p99.9 ms | max ms | MB/s | {memory} | errors |\n\
                     |---|---|---|---|---|---|---|---|{rule}---|"
                );
                for s in &self.servers {
                    let Some(cell) = self.cell(scenario.id, &s.name) else {
                        let blanks = if self.members > 1 {
                            "| | | | | | | | | | |"
                        } else {
                            "| | | | | | | | | |"
                        };
                        let _ = writeln!(out, "| {} | {} {blanks}", s.name, absent(s));
                        continue;
                    };
                    let r = &cell.run.report;
                    let o = r.ops.get(op);
                    let ms = |f: fn(&crate::loadgen::Op) -> f64| {
                        o.map_or("—".into(), |o| format!("{:.3}", f(o)))
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {:.1} | {:.1}–{:.1} ({} runs) | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                        s.name,
                        r.throughput_ops_s,
                        cell.min_ops,
                        cell.max_ops,
                        cell.runs,
                        ms(|o| o.p50_ms),
                        ms(|o| o.p99_ms),
                        ms(|o| o.p999_ms),
                        ms(|o| o.max_ms),
                        r.bytes_per_s.map_or("—".into(), |b| format!("{:.1}", b / 1e6)),
                        self.memory_cells(cell.run),
                        cell.run.rss_growth as f64 / MB,
                        r.errors()
                    );
                }
            }
            None => self.per_op_table(out, scenario),
        }
        let _ = writeln!(out);
    }

    /// Peak RSS: the member's, or the cluster's sum and largest member's.
    fn memory_cells(&self, run: &Measurement) -> String {
        if self.members > 1 {
            format!(
                "{:.1} | {:.1}",
                run.peak_rss as f64 / MB,
                run.peak_rss_max as f64 / MB
            )
        } else {
            format!("{:.1}", run.peak_rss as f64 / MB)
        }
    }

    /// Kubernetes: p99 per operation for every server side by side.
    fn per_op_table(&self, out: &mut String, scenario: &Scenario) {
        let cells: Vec<(&ServerEntry, Option<Cell<'_>>)> = self
            .servers
            .iter()
            .map(|s| (s, self.cell(scenario.id, &s.name)))
            .collect();
        let mut ops: BTreeMap<&str, ()> = BTreeMap::new();
        for (_, c) in &cells {
            if let Some(c) = c {
                for name in c.run.report.ops.keys() {
                    ops.insert(name, ());
                }
            }
        }
        let mut header = String::from("| operation |");
        let mut rule = String::from("|---|");
        for (s, _) in &cells {
            let _ = write!(header, " {} count | p50 ms | p99 ms |", s.name);
            rule.push_str("---|---|---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for op in ops.keys() {
            let mut row = format!("| {op} |");
            for (s, c) in &cells {
                match c.as_ref().and_then(|c| c.run.report.ops.get(*op)) {
                    Some(o) => {
                        let _ = write!(row, " {} | {:.3} | {:.3} |", o.count, o.p50_ms, o.p99_ms);
                    }
                    None if c.is_none() => {
                        let _ = write!(row, " {} | | |", absent(s));
                    }
                    None => row.push_str(" — | | |"),
                }
            }
            let _ = writeln!(out, "{row}");
        }
        let mut summary = String::from("| **total** |");
        for (s, c) in &cells {
            match c {
                Some(c) => {
                    let _ = write!(
                        summary,
                        " {:.1} ops/s | peak RSS {:.1} MB | errors {} |",
                        c.run.report.throughput_ops_s,
                        c.run.peak_rss as f64 / MB,
                        c.run.report.errors()
                    );
                }
                None => {
                    let _ = write!(summary, " {} | | |", absent(s));
                }
            }
        }
        let _ = writeln!(out, "{summary}");
    }
}

fn absent(s: &ServerEntry) -> &str {
    if s.serving {
        "no run"
    } else {
        "not serving"
    }
}

#[derive(Clone, Copy)]
enum Unit {
    OpsPerSecond,
    Milliseconds,
    Megabytes,
}

fn fmt_value(v: Option<f64>, unit: Unit) -> String {
    match (v, unit) {
        (None, _) => "—".into(),
        (Some(v), Unit::OpsPerSecond) => format!("{v:.1} ops/s"),
        (Some(v), Unit::Milliseconds) => format!("{v:.3} ms"),
        (Some(v), Unit::Megabytes) => format!("{:.1} MB", v / MB),
    }
}

/// basalt's figure over one etcd's, from (results, basalt name, etcd
/// name), with what it was taken from.
type RatioOf = fn(&Results<'_>, &str, &str) -> Option<(f64, String)>;

struct Target {
    title: &'static str,
    unit: Unit,
    /// basalt/etcd must be ≥ this (higher is better) or ≤ it.
    ratio: f64,
    higher_is_better: bool,
    metric: fn(&Results<'_>, &str) -> Option<f64>,
    /// How basalt compares with one etcd when it is not metric/metric.
    ratio_of: Option<RatioOf>,
}

fn throughput(r: &Results<'_>, scenario: &str, server: &str) -> Option<f64> {
    r.cell(scenario, server)
        .map(|c| c.run.report.throughput_ops_s)
}

fn p99(r: &Results<'_>, scenario: &str, op: &str, server: &str) -> Option<f64> {
    r.cell(scenario, server)
        .and_then(|c| c.run.report.ops.get(op).map(|o| o.p99_ms))
}

/// The target bounds every kubernetes operation's p99 ratio, so the ratio
/// shown is the worst over the operations both servers ran.
fn worst_k8s_p99_ratio(r: &Results<'_>, basalt: &str, etcd: &str) -> Option<(f64, String)> {
    let b = r.cell("kubernetes", basalt)?;
    let e = r.cell("kubernetes", etcd)?;
    b.run
        .report
        .ops
        .iter()
        .filter(|(_, o)| o.count > 0)
        .filter_map(|(name, o)| {
            let theirs = e
                .run
                .report
                .ops
                .get(name)
                .filter(|t| t.count > 0 && t.p99_ms > 0.0)?;
            Some((o.p99_ms / theirs.p99_ms, name.clone()))
        })
        .reduce(|a, b| if b.0 > a.0 { b } else { a })
}

/// Per server, the figure shown is its worst p99 over the operations.
fn worst_k8s_p99(r: &Results<'_>, server: &str) -> Option<f64> {
    let cell = r.cell("kubernetes", server)?;
    cell.run
        .report
        .ops
        .values()
        .filter(|o| o.count > 0)
        .map(|o| o.p99_ms)
        .reduce(f64::max)
}

const TARGETS: [Target; 6] = [
    Target {
        title: "put, 100 clients: throughput ≥ 5×",
        unit: Unit::OpsPerSecond,
        ratio: 5.0,
        higher_is_better: true,
        metric: |r, s| throughput(r, "put-100", s),
        ratio_of: None,
    },
    Target {
        title: "serial put: p99 ≤ 1/3",
        unit: Unit::Milliseconds,
        ratio: 1.0 / 3.0,
        higher_is_better: false,
        metric: |r, s| p99(r, "put-serial", "put", s),
        ratio_of: None,
    },
    Target {
        title: "linearizable single-key range, 100 clients: throughput ≥ 5×",
        unit: Unit::OpsPerSecond,
        ratio: 5.0,
        higher_is_better: true,
        metric: |r, s| throughput(r, "range-100", s),
        ratio_of: None,
    },
    Target {
        title: "list storm: lists/s ≥ 3×",
        unit: Unit::OpsPerSecond,
        ratio: 3.0,
        higher_is_better: true,
        metric: |r, s| throughput(r, "list-storm", s),
        ratio_of: None,
    },
    Target {
        title: "list storm: peak-RSS growth ≤ 1/10",
        unit: Unit::Megabytes,
        ratio: 0.1,
        higher_is_better: false,
        metric: |r, s| r.cell("list-storm", s).map(|c| c.run.rss_growth as f64),
        ratio_of: None,
    },
    Target {
        title: "kubernetes profile: p99 of every operation ≤ 1/3 (figures: worst p99; ratio: the worst operation's)",
        unit: Unit::Milliseconds,
        ratio: 1.0 / 3.0,
        higher_is_better: false,
        metric: worst_k8s_p99,
        ratio_of: Some(worst_k8s_p99_ratio),
    },
];

/// The issue's targets for a 3-member cluster, each server measured on
/// the same scenario.
const CLUSTER_TARGETS: [Target; 3] = [
    Target {
        title: "put on the leader, 100 clients: throughput ≥ 2×",
        unit: Unit::OpsPerSecond,
        ratio: 2.0,
        higher_is_better: true,
        metric: |r, s| throughput(r, "cluster-put-100", s),
        ratio_of: None,
    },
    Target {
        title: "serial put on the leader: p99 ≤ 1×",
        unit: Unit::Milliseconds,
        ratio: 1.0,
        higher_is_better: false,
        metric: |r, s| p99(r, "cluster-put-serial", "put", s),
        ratio_of: None,
    },
    Target {
        title: "linearizable single-key range on a follower, 100 clients: throughput ≥ 3×",
        unit: Unit::OpsPerSecond,
        ratio: 3.0,
        higher_is_better: true,
        metric: |r, s| throughput(r, "cluster-range-100-follower", s),
        ratio_of: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{Op, Report};
    use crate::scenario::{scenarios, Settings};

    fn run(server: &str, scenario: &str, round: usize, ops_s: f64, p99: f64) -> Measurement {
        let op = Op {
            count: 100,
            errors: 0,
            p50_ms: p99 / 2.0,
            p90_ms: p99 / 1.5,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            max_ms: p99 * 3.0,
        };
        Measurement {
            scenario: scenario.into(),
            server: server.into(),
            round,
            report: Report {
                profile: "put".into(),
                duration_s: 1.0,
                throughput_ops_s: ops_s,
                ops: [("put".to_string(), op)].into_iter().collect(),
                bytes_per_s: None,
            },
            peak_rss: 100 * 1024 * 1024,
            peak_rss_max: 100 * 1024 * 1024,
            rss_growth: 0,
            incidents: vec![],
            notes: vec![],
        }
    }

    fn k8s(server: &str, a_p99: f64, b_p99: f64) -> Measurement {
        let mut m = run(server, "kubernetes", 0, 100.0, a_p99);
        let mut b = m.report.ops["put"].clone();
        b.p99_ms = b_p99;
        m.report.ops.insert("update-leases".into(), b);
        m
    }

    #[test]
    fn kubernetes_ratio_is_the_worst_per_operation() {
        let results = Results {
            command: String::new(),
            machine: String::new(),
            when: String::new(),
            commit: String::new(),
            rounds: 1,
            members: 1,
            setup: vec![],
            work_dir: String::new(),
            servers: vec![
                ServerEntry {
                    name: "etcd 3.4.23".into(),
                    slug: "etcd-3.4".into(),
                    status: "serving".into(),
                    serving: true,
                },
                ServerEntry {
                    name: "basalt".into(),
                    slug: "basalt".into(),
                    status: "serving".into(),
                    serving: true,
                },
            ],
            scenarios: &[],
            measurements: vec![k8s("etcd 3.4.23", 10.0, 6.0), k8s("basalt", 1.0, 5.0)],
            failures: vec![],
            chart: None,
        };
        assert_eq!(worst_k8s_p99(&results, "etcd 3.4.23"), Some(10.0));
        let (ratio, op) = worst_k8s_p99_ratio(&results, "basalt", "etcd 3.4.23").unwrap();
        assert!((ratio - 5.0 / 6.0).abs() < 1e-9, "{ratio}");
        assert_eq!(op, "update-leases");
        let md = results.markdown();
        assert!(
            md.contains("| 10.000 ms | 5.000 ms | 0.83× (update-leases) | **no** |"),
            "{md}"
        );
    }

    #[test]
    fn median_cell_and_ratios() {
        let settings = Settings {
            duration: "1s".into(),
            nodes: 1,
            k8s_speedup: 1.0,
            storm_keys: 1,
            storm_val_size: 1,
            storm_lists: 1,
            members: 1,
        };
        let list = scenarios(&settings, &["put-100".into(), "put-serial".into()]).unwrap();
        let results = Results {
            command: "side-by-side".into(),
            machine: "test".into(),
            when: "now".into(),
            commit: "abc1234".into(),
            rounds: 3,
            members: 1,
            setup: vec![],
            work_dir: "/tmp".into(),
            servers: vec![
                ServerEntry {
                    name: "etcd 3.4.23".into(),
                    slug: "etcd-3.4".into(),
                    status: "serving".into(),
                    serving: true,
                },
                ServerEntry {
                    name: "basalt".into(),
                    slug: "basalt".into(),
                    status: "serving".into(),
                    serving: true,
                },
            ],
            scenarios: &list,
            measurements: vec![
                run("etcd 3.4.23", "put-100", 0, 1000.0, 10.0),
                run("etcd 3.4.23", "put-100", 1, 3000.0, 10.0),
                run("etcd 3.4.23", "put-100", 2, 2000.0, 10.0),
                run("basalt", "put-100", 0, 12000.0, 1.0),
                run("etcd 3.4.23", "put-serial", 0, 500.0, 3.0),
                run("basalt", "put-serial", 0, 900.0, 2.0),
            ],
            failures: vec![],
            chart: None,
        };
        let cell = results.cell("put-100", "etcd 3.4.23").unwrap();
        assert_eq!(cell.run.report.throughput_ops_s, 2000.0);
        assert_eq!((cell.min_ops, cell.max_ops, cell.runs), (1000.0, 3000.0, 3));
        let md = results.markdown();
        assert!(md.contains("| put, 100 clients: throughput ≥ 5× | 2000.0 ops/s | 12000.0 ops/s | 6.00× | yes |"), "{md}");
        assert!(
            md.contains("| serial put: p99 ≤ 1/3 | 3.000 ms | 2.000 ms | 0.67× | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("not measured (basalt not serving)") || md.contains("| list storm"),
            "{md}"
        );
    }

    fn servers() -> Vec<ServerEntry> {
        [
            ("etcd 3.4.23", "etcd-3.4"),
            ("etcd 3.5.1", "etcd-3.5"),
            ("basalt", "basalt"),
        ]
        .into_iter()
        .map(|(name, slug)| ServerEntry {
            name: name.into(),
            slug: slug.into(),
            status: "serving".into(),
            serving: true,
        })
        .collect()
    }

    #[test]
    fn cluster_results_show_member_memory_cluster_targets_and_events() {
        let settings = Settings {
            duration: "1s".into(),
            nodes: 1,
            k8s_speedup: 1.0,
            storm_keys: 1,
            storm_val_size: 1,
            storm_lists: 1,
            members: 3,
        };
        let list = scenarios(&settings, &crate::scenario::default_ids(3)).unwrap();
        let mut basalt_put = run("basalt", "cluster-put-100", 0, 5000.0, 4.0);
        basalt_put.peak_rss = 300 * 1024 * 1024;
        basalt_put.peak_rss_max = 120 * 1024 * 1024;
        basalt_put.rss_growth = 30 * 1024 * 1024;
        basalt_put.notes = vec!["the leader changed during the run: m1 before, m2 after".into()];
        let results = Results {
            command: "side-by-side --members 3".into(),
            machine: "test".into(),
            when: "now".into(),
            commit: "abc1234".into(),
            rounds: 1,
            members: 3,
            setup: vec!["basalt members run with `--cores 1`.".into()],
            work_dir: "/tmp".into(),
            servers: servers(),
            scenarios: &list,
            measurements: vec![
                run("etcd 3.4.23", "cluster-put-100", 0, 2000.0, 10.0),
                run("etcd 3.5.1", "cluster-put-100", 0, 2500.0, 10.0),
                basalt_put,
                run("etcd 3.4.23", "cluster-put-serial", 0, 400.0, 4.0),
                run("basalt", "cluster-put-serial", 0, 600.0, 5.0),
                run("etcd 3.4.23", "cluster-range-100-follower", 0, 1000.0, 4.0),
                run("etcd 3.5.1", "cluster-range-100-follower", 0, 2000.0, 4.0),
                run("basalt", "cluster-range-100-follower", 0, 4000.0, 4.0),
            ],
            failures: vec![],
            chart: None,
        };
        let md = results.markdown();
        assert!(
            md.starts_with("# Side-by-side benchmark results: 3-member clusters"),
            "{md}"
        );
        assert!(
            md.contains("Measured now at commit abc1234 on test."),
            "{md}"
        );
        assert!(
            md.contains(
                "\n\nbasalt members run with `--cores 1`.\n\n## Targets (3-member clusters)\n"
            ),
            "{md}"
        );
        assert!(
            md.contains("| put on the leader, 100 clients: throughput ≥ 2× | 2000.0 ops/s | 2500.0 ops/s | 5000.0 ops/s | 2.50× | 2.00× | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| serial put on the leader: p99 ≤ 1× | 4.000 ms | — | 5.000 ms | 1.25× | — | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| linearizable single-key range on a follower, 100 clients: throughput ≥ 3× | 1000.0 ops/s | 2000.0 ops/s | 4000.0 ops/s | 4.00× | 2.00× | **no** |"),
            "{md}"
        );
        assert!(
            !md.contains("issue 5") && !md.contains("list storm"),
            "{md}"
        );
        assert!(
            md.contains("| server | ops/s | range | put p50 ms | p99 ms | p99.9 ms | max ms | MB/s | peak RSS MB Σ | max | RSS growth MB Σ | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"),
            "{md}"
        );
        assert!(
            md.contains("| basalt | 5000.0 | 5000.0–5000.0 (1 runs) | 2.000 | 4.000 | 8.000 | 12.000 | — | 300.0 | 120.0 | 30.0 | 0 |"),
            "{md}"
        );
        // A scenario a server did not run keeps the table's shape.
        let leader_range = md.split("## cluster-range-100-leader").nth(1).unwrap();
        let row = leader_range
            .lines()
            .find(|l| l.starts_with("| basalt |"))
            .unwrap();
        assert_eq!(row.matches('|').count(), 13, "{row}");
        assert!(
            md.contains("## What the servers did besides serving\n\n- cluster-put-100 on basalt, round 1: the leader changed during the run: m1 before, m2 after\n"),
            "{md}"
        );
    }
}
