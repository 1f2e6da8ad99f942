//! The `check` report: facts, measurements and findings, as JSON for
//! machines or as a table for people.

use std::fmt::Write;

use serde::Serialize;

use crate::facts::HostFacts;
use crate::measure::Measurements;
use crate::rules::{Finding, Summary, Verdict};

/// The table wraps explanations to fit this many columns.
const TABLE_WIDTH: usize = 110;
/// Longer ids (peer URLs) overflow their column instead of widening it.
const ID_COLUMN_MAX: usize = 24;

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
            .filter(|&len| len <= ID_COLUMN_MAX)
            .max()
            .unwrap_or(0);
        let indent = " ".repeat(2 + 5 + 1 + id_width + 2);
        let text_width = TABLE_WIDTH.saturating_sub(indent.len()).max(40);
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
                write_wrapped(&mut out, &indent, "why: ", &finding.detail, text_width);
            }
            if let Some(fix) = &finding.fix {
                write_wrapped(&mut out, &indent, "fix: ", fix, text_width);
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

/// Writes `label` + `text` word-wrapped to `width`, every line indented;
/// continuation lines align under the text, past the label.
fn write_wrapped(out: &mut String, indent: &str, label: &str, text: &str, width: usize) {
    let width = width.saturating_sub(label.len()).max(20);
    let mut line = String::new();
    let mut first = true;
    let mut flush = |line: &mut String, first: &mut bool| {
        let prefix = if *first {
            label.to_owned()
        } else {
            " ".repeat(label.len())
        };
        let _ = writeln!(out, "{indent}{prefix}{line}");
        line.clear();
        *first = false;
    };
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            flush(&mut line, &mut first);
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        flush(&mut line, &mut first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_under_the_label() {
        let mut out = String::new();
        write_wrapped(
            &mut out,
            "  ",
            "why: ",
            "aaa bbb ccc ddd eee fff ggg hhh iii jjj kkk",
            25,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "  why: aaa bbb ccc ddd eee");
        assert_eq!(lines[1], "       fff ggg hhh iii jjj");
        assert_eq!(lines[2], "       kkk");
    }
}
