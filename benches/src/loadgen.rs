//! Running the `loadgen` binary and reading its JSON report. The harness
//! measures every server through loadgen, never through our own crates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// One operation in a loadgen report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A loadgen report (`--json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub profile: String,
    pub duration_s: f64,
    pub throughput_ops_s: f64,
    pub ops: BTreeMap<String, Op>,
    #[serde(default)]
    pub bytes_per_s: Option<f64>,
}

impl Report {
    /// Errors over all operations.
    pub fn errors(&self) -> u64 {
        self.ops.values().map(|o| o.errors).sum()
    }
}

/// The loadgen binary.
#[derive(Clone, Debug)]
pub struct Loadgen {
    pub binary: PathBuf,
}

impl Loadgen {
    /// `explicit`, or `loadgen` next to this executable (both are built
    /// into the same target directory).
    pub fn find(explicit: Option<PathBuf>) -> Result<Self> {
        let binary = match explicit {
            Some(b) => b,
            None => std::env::current_exe()
                .map_err(|source| BenchError::Io {
                    action: "locating",
                    path: "the harness executable".into(),
                    source,
                })?
                .with_file_name("loadgen"),
        };
        if !binary.exists() {
            return Err(BenchError::InvalidArgs(format!(
                "no loadgen at {}: build it with `cargo build --release -p basalt-loadgen` or pass --loadgen",
                binary.display()
            )));
        }
        Ok(Self { binary })
    }

    /// Whether `endpoint` answers a Range.
    pub fn probe(&self, endpoint: &str) -> bool {
        Command::new(&self.binary)
            .args([
                "--endpoints",
                endpoint,
                "--no-progress",
                "--total",
                "1",
                "range",
                "loadgen-ready",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs loadgen with `args` against `endpoint`, the report going to
    /// `json` and loadgen's messages to `json` with a `.log` extension. A
    /// run whose report counts errors (exit 1) still returns its report,
    /// with the error and violation lines loadgen printed.
    pub fn run(&self, endpoint: &str, args: &[String], json: &Path) -> Result<Run> {
        let out = Command::new(&self.binary)
            .args(["--endpoints", endpoint, "--no-progress", "--json"])
            .arg(json)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BenchError::Spawn {
                program: self.binary.display().to_string(),
                source,
            })?;
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let log = json.with_extension("log");
        std::fs::write(&log, &stderr).map_err(|source| BenchError::Io {
            action: "writing",
            path: log.clone(),
            source,
        })?;
        if !matches!(code, Some(0) | Some(1)) {
            return Err(BenchError::Loadgen {
                args: args.join(" "),
                code,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let text = std::fs::read_to_string(json).map_err(|source| BenchError::Io {
            action: "reading",
            path: json.to_path_buf(),
            source,
        })?;
        let report = serde_json::from_str(&text).map_err(|source| BenchError::Report {
            path: json.to_path_buf(),
            source,
        })?;
        let incidents = stderr
            .lines()
            .filter(|l| l.starts_with("error: ") || l.starts_with("violation: "))
            .map(str::to_owned)
            .collect();
        Ok(Run { report, incidents })
    }
}

/// A finished loadgen run.
#[derive(Clone, Debug)]
pub struct Run {
    pub report: Report,
    /// The failed requests and violations loadgen printed (its first few).
    pub incidents: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_schema() {
        let text = r#"{"profile":"put","duration_s":2.0,"throughput_ops_s":500.0,
            "ops":{"put":{"count":1000,"errors":1,"p50_ms":1.0,"p90_ms":2.0,"p99_ms":3.0,"p999_ms":4.0,"max_ms":5.0}}}"#;
        let r: Report = serde_json::from_str(text).unwrap();
        assert_eq!(r.ops["put"].count, 1000);
        assert_eq!(r.errors(), 1);
        assert_eq!(r.bytes_per_s, None);
    }
}
