//! The harness's one error type.

use std::path::PathBuf;

/// Why the harness stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A server did not come up.
    #[error("{server} did not serve on {endpoint} within {seconds} s (log: {log})")]
    NotServing {
        server: String,
        endpoint: String,
        seconds: u64,
        log: PathBuf,
    },
    /// A server exited before it served.
    #[error("{server} exited ({status}) before serving (log: {log})")]
    Exited {
        server: String,
        status: String,
        log: PathBuf,
    },
    /// An install step failed.
    #[error("installing {what} failed: {detail}")]
    Install { what: String, detail: String },
    /// A cluster's members could not say who leads.
    #[error("endpoint status of {endpoints}: {detail}")]
    Status { endpoints: String, detail: String },
    /// A cluster's members did not agree on a leader in time.
    #[error("{server}: no leader every member names within {seconds} s ({detail}; logs: {logs})")]
    NoLeader {
        server: String,
        seconds: u64,
        detail: String,
        logs: String,
    },
    /// loadgen failed to produce a report.
    #[error("loadgen {args} failed (exit {code:?}): {stderr}")]
    Loadgen {
        args: String,
        code: Option<i32>,
        stderr: String,
    },
    /// A loadgen report could not be parsed.
    #[error("cannot parse the loadgen report {path}: {source}")]
    Report {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A chart could not be drawn.
    #[error("cannot draw {path}: {message}")]
    Chart { path: PathBuf, message: String },
    /// The command line asks for something that cannot run.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
}

/// Result with [`BenchError`].
pub type Result<T> = std::result::Result<T, BenchError>;
