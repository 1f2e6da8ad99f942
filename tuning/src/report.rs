//! The `check` report: facts, measurements and findings, as JSON for
//! machines or as a table for people.

use std::fmt::Write;

use serde::Serialize;

use crate::facts::HostFacts;
use crate::measure::Measurements;
use crate::rules::{Finding, Summary, Verdict};

/// Bumped when the JSON shape changes incompatibly.
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub format: u32,
    pub tool: String,
    pub host_root: String,
    pub findings: Vec<Finding>,
    pub summary: Summary,
    pub facts: HostFacts,
    pub measurements: Measurements,
}

impl Report {
    pub fn new(
        host_root: String,
        facts: HostFacts,
        measurements: Measurements,
        findings: Vec<Finding>,
    ) -> Self {
        Self {
            format: REPORT_FORMAT,
            tool: format!("basalt-tune {}", env!("CARGO_PKG_VERSION")),
            host_root,
            summary: Summary::of(&findings),
            findings,
            facts,
            measurements,
        }
    }

    pub fn worst(&self) -> Verdict {
        self.findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
    }

    /// A table: one line per item, then why it matters and the fix,
    /// indented under it.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "basalt-tune check — data dir {}",
            self.facts.disk.data_dir
        );
        let id_width = self
            .findings
            .iter()
            .map(|f| f.id.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        let mut area = None;
        for finding in &self.findings {
            if area != Some(finding.area) {
                area = Some(finding.area);
                let _ = writeln!(out, "\n{}", finding.area.label().to_uppercase());
            }
            let _ = writeln!(
                out,
                "  {:<5} {:<id_width$}  {}",
                finding.verdict.label(),
                finding.id,
                finding.value
            );
            if !finding.detail.is_empty() {
                let _ = writeln!(out, "  {:5} {:id_width$}  why: {}", "", "", finding.detail);
            }
            if let Some(fix) = &finding.fix {
                let _ = writeln!(out, "  {:5} {:id_width$}  fix: {}", "", "", fix);
            }
        }
        let s = self.summary;
        let _ = writeln!(
            out,
            "\n{} ok, {} info, {} warn, {} fail",
            s.ok, s.info, s.warn, s.fail
        );
        out
    }
}
