//! One run of the checker: gather facts, measure, apply the rules.

use std::path::PathBuf;

use crate::error::TuneError;
use crate::facts::HostFacts;
use crate::host_root::HostRoot;
use crate::measure::{self, DiskProbeConfig, Measurements, PeerProbeConfig, PeerTarget};
use crate::recommend::{self, Recommendation};
use crate::report::Report;
use crate::rules::{self, Plan};

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub host: HostRoot,
    pub data_dir: PathBuf,
    pub peers: Vec<PeerTarget>,
    pub plan: Plan,
    pub disk: DiskProbeConfig,
    pub peer_probe: PeerProbeConfig,
}

/// Facts plus measurements: the input of both `check` and `recommend`.
#[derive(Debug, Clone)]
pub struct Observation {
    pub facts: HostFacts,
    pub measurements: Measurements,
}

/// Reads the host and runs the bounded measurements. Errors only when
/// the data dir cannot be used; everything else becomes a finding.
pub fn observe(options: &CheckOptions) -> Result<Observation, TuneError> {
    // The disk test first: it validates the data dir, and a missing or
    // read-only one should fail fast, before anything else is measured.
    let disk = measure::disk::measure(&options.data_dir, options.disk)?;
    let facts = HostFacts::gather(&options.host, &options.data_dir);
    let io_uring = measure::io_uring::probe();
    let peers = options
        .peers
        .iter()
        .map(|peer| measure::peer::measure(peer, options.peer_probe))
        .collect();
    Ok(Observation {
        facts,
        measurements: Measurements {
            disk,
            io_uring,
            peers,
        },
    })
}

pub fn check(options: &CheckOptions) -> Result<Report, TuneError> {
    let observation = observe(options)?;
    Ok(report(options, observation))
}

pub fn report(options: &CheckOptions, observation: Observation) -> Report {
    let findings = rules::evaluate(&observation.facts, &observation.measurements, options.plan);
    Report::new(
        options.host.root().display().to_string(),
        observation.facts,
        observation.measurements,
        findings,
    )
}

pub fn recommendation(options: &CheckOptions, observation: &Observation) -> Recommendation {
    recommend::recommend(&observation.facts, &observation.measurements, options.plan)
}
