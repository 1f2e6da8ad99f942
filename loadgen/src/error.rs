//! The one error type of loadgen: everything that stops a run before it can
//! produce a report. Failed requests during a run are not errors of this
//! kind; they are counted per operation in the report.

use std::path::PathBuf;

/// Why a loadgen run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// No connection could be made to the endpoint list.
    #[error("cannot connect to {endpoints:?}: {source}")]
    Connect {
        endpoints: Vec<String>,
        source: etcd_client::Error,
    },
    /// The lean gRPC path could not reach an endpoint.
    #[error("cannot connect to {endpoint}: {message}")]
    Dial { endpoint: String, message: String },
    /// A request that the workload cannot do without (setup, load phase)
    /// failed.
    #[error("{phase} failed: {source}")]
    Setup {
        phase: String,
        source: etcd_client::Error,
    },
    /// The command line asks for something that cannot run.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// The endpoint already holds keys the profile would overwrite.
    #[error("{0}")]
    Dirty(String),
    /// Loading a profile's data set failed.
    #[error("loading failed: {0}")]
    Load(String),
    /// A task of a setup phase panicked or was cancelled.
    #[error("a setup task died: {0}")]
    Task(String),
    /// The report or plot could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The report could not be encoded.
    #[error("cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
    /// The plot could not be drawn.
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

/// Result with [`LoadgenError`].
pub type Result<T> = std::result::Result<T, LoadgenError>;
