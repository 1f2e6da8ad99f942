//! The rules: pure functions from facts and measurements to findings,
//! each with a verdict, the reason it matters and the fix. No I/O here,
//! so every rule is tested with recorded facts.

pub mod cpu;
pub mod disk;
pub mod io_uring;
pub mod memory;
pub mod network;

use serde::Serialize;

use crate::facts::{CpuFacts, HostFacts};
use crate::measure::Measurements;

/// How a finding bears on running basalt here, from good to bad. The
/// order is the severity order, so the worst of several is `max`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine as it is.
    Ok,
    /// Worth knowing, or not applicable; nothing to fix.
    Info,
    /// Will cost latency or stability; fix before production.
    Warn,
    /// basalt will not run well or at all, or data is at risk.
    Fail,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Info => "info",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Cpu,
    Memory,
    Disk,
    IoUring,
    Network,
}

impl Area {
    pub fn label(self) -> &'static str {
        match self {
            Area::Cpu => "cpu",
            Area::Memory => "memory",
            Area::Disk => "disk",
            Area::IoUring => "io_uring",
            Area::Network => "network",
        }
    }
}

/// One checked item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// Stable identifier, `area.item` (`disk.fdatasync`); peers add the
    /// URL: `network.peer[http://10.0.0.2:2380]`.
    pub id: String,
    pub area: Area,
    pub verdict: Verdict,
    /// What was found, short.
    pub value: String,
    /// Why it matters.
    pub detail: String,
    /// What to do; `None` when nothing is to be done.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(
        id: impl Into<String>,
        area: Area,
        verdict: Verdict,
        value: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            area,
            verdict,
            value: value.into(),
            detail: String::new(),
            fix: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// What the operator told us about the planned deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plan {
    /// `--cores`: executors basalt will start; default all CPUs in the
    /// affinity mask.
    pub cores: Option<usize>,
}

/// The CPUs basalt's executors would be pinned to: the first `cores`
/// of the affinity mask, or all of it.
pub fn planned_cpus_of(cpu: &CpuFacts, plan: Plan) -> Vec<u32> {
    let affinity = if cpu.affinity.is_empty() {
        &cpu.online
    } else {
        &cpu.affinity
    };
    match plan.cores {
        Some(cores) => affinity.iter().copied().take(cores).collect(),
        None => affinity.clone(),
    }
}

/// Runs every rule. The order is the report's order.
pub fn evaluate(facts: &HostFacts, measured: &Measurements, plan: Plan) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(cpu::evaluate(&facts.cpu, plan));
    // Executors are what pin memory: --cores as given (even when it does
    // not fit the mask, which cpu.affinity reports), else the mask.
    let executors = plan
        .cores
        .unwrap_or_else(|| planned_cpus_of(&facts.cpu, plan).len());
    findings.extend(memory::evaluate(&facts.memory, executors.max(1)));
    findings.extend(disk::evaluate(facts, &measured.disk));
    findings.extend(io_uring::evaluate(&facts.kernel, &measured.io_uring));
    findings.extend(network::evaluate(&facts.network, &measured.peers));
    findings
}

/// Counts of findings per verdict.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub ok: usize,
    pub info: usize,
    pub warn: usize,
    pub fail: usize,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Self {
        let mut summary = Self::default();
        for finding in findings {
            match finding.verdict {
                Verdict::Ok => summary.ok += 1,
                Verdict::Info => summary.info += 1,
                Verdict::Warn => summary.warn += 1,
                Verdict::Fail => summary.fail += 1,
            }
        }
        summary
    }
}

/// Byte counts for people: `512 KiB`, `30 MiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 || unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_order_by_severity() {
        assert!(Verdict::Fail > Verdict::Warn);
        assert!(Verdict::Warn > Verdict::Info);
        assert!(Verdict::Info > Verdict::Ok);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512 * 1024), "512 KiB");
        assert_eq!(human_bytes(30 << 20), "30 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
