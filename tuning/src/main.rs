//! `basalt-tune`: checks this host for what will hurt a latency-tuned
//! basalt node (`check`) and derives its flags (`recommend`).
//!
//! Exit status: 0 when no item fails, 1 when an item fails (`check`
//! only), 2 when the checks could not run (bad input, unusable data dir).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use basalt_tuning::check::{self, CheckOptions};
use basalt_tuning::duration;
use basalt_tuning::host_root::HostRoot;
use basalt_tuning::measure::peer::parse_peer_url;
use basalt_tuning::measure::{DiskProbeConfig, PeerProbeConfig};
use basalt_tuning::rules::{Plan, Verdict};
use basalt_tuning::TuneError;

#[derive(Parser)]
#[command(
    name = "basalt-tune",
    version,
    about = "Checks a host for basalt and recommends its flags; changes nothing on the host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the host and print a verdict and fix per item.
    Check {
        #[command(flatten)]
        common: CommonArgs,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure, then print the flags for this node.
    Recommend {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// An etcd-style config file (--config-file).
    Yaml,
    /// One --flag=value per line.
    Flags,
    Json,
}

#[derive(Args)]
struct CommonArgs {
    /// The directory basalt will keep its data in (must exist; the disk
    /// test writes a scratch directory inside it and removes it).
    #[arg(long, default_value = "default.basalt")]
    data_dir: PathBuf,
    /// Other members' peer URLs, comma-separated (http://10.0.0.2:2380,…).
    #[arg(long, value_delimiter = ',')]
    peer_urls: Vec<String>,
    /// Executors basalt will run (its --cores); default: every CPU in the
    /// affinity mask.
    #[arg(long)]
    cores: Option<u64>,
    /// Time budget of the disk test (all three phases).
    #[arg(long, default_value = "2s")]
    disk_time: String,
    /// Most syncs per disk phase.
    #[arg(long, default_value_t = 10_000)]
    disk_max_syncs: u64,
    /// TCP connects per peer.
    #[arg(long, default_value_t = 5)]
    peer_samples: u64,
    /// Longest wait for one peer connect or name lookup.
    #[arg(long, default_value = "1s")]
    peer_timeout: String,
    /// Read /proc and /sys below this directory (e.g. the host's root
    /// mounted into a container).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
}

fn in_range(what: &'static str, got: u64, min: u64, max: u64) -> Result<u64, TuneError> {
    if (min..=max).contains(&got) {
        Ok(got)
    } else {
        Err(TuneError::OutOfRange {
            what,
            min,
            max,
            got,
        })
    }
}

fn duration_in_range(
    what: &'static str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, TuneError> {
    let value = duration::parse(text)?;
    if value < min || value > max {
        return Err(TuneError::OutOfRange {
            what,
            min: min.as_millis() as u64,
            max: max.as_millis() as u64,
            got: value.as_millis() as u64,
        });
    }
    Ok(value)
}

impl CommonArgs {
    fn options(&self) -> Result<CheckOptions, TuneError> {
        let peers = self
            .peer_urls
            .iter()
            .filter(|url| !url.trim().is_empty())
            .map(|url| parse_peer_url(url))
            .collect::<Result<Vec<_>, _>>()?;
        in_range("number of --peer-urls", peers.len() as u64, 0, 64)?;
        let cores = self
            .cores
            .map(|cores| in_range("--cores", cores, 1, 4096))
            .transpose()?
            .map(|cores| cores as usize);
        Ok(CheckOptions {
            host: HostRoot::new(&self.host_root),
            data_dir: self.data_dir.clone(),
            peers,
            plan: Plan { cores },
            disk: DiskProbeConfig {
                budget: duration_in_range(
                    "--disk-time in ms",
                    &self.disk_time,
                    Duration::from_millis(10),
                    Duration::from_secs(600),
                )?,
                max_syncs: in_range("--disk-max-syncs", self.disk_max_syncs, 1, 1_000_000)?
                    as usize,
            },
            peer_probe: PeerProbeConfig {
                samples: in_range("--peer-samples", self.peer_samples, 1, 100)? as usize,
                timeout: duration_in_range(
                    "--peer-timeout in ms",
                    &self.peer_timeout,
                    Duration::from_millis(1),
                    Duration::from_secs(30),
                )?,
            },
        })
    }
}

fn run(cli: Cli) -> Result<ExitCode, TuneError> {
    match cli.command {
        Command::Check { common, json } => {
            let options = common.options()?;
            let report = check::check(&options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_table());
            }
            Ok(if report.worst() == Verdict::Fail {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Recommend { common, format } => {
            let options = common.options()?;
            let observation = check::observe(&options)?;
            let recommendation = check::recommendation(&options, &observation);
            match format {
                Format::Yaml => print!("{}", recommendation.to_yaml()),
                Format::Flags => print!("{}", recommendation.to_flags()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&recommendation)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("basalt-tune: error: {error}");
            ExitCode::from(2)
        }
    }
}
