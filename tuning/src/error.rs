//! The one error type of basalt-tuning. Every variant names the path or
//! input at fault and what the operator can do about it.

use std::io;
use std::path::PathBuf;

/// Everything that stops `basalt-tune` from producing a report.
///
/// Problems *with the host* (a slow disk, an unreachable peer, io_uring
/// blocked) are not errors: they are findings with a verdict. These are
/// problems with what the operator asked for, or with running the checks.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(
        "data dir {path} does not exist: create it on the disk basalt will use \
         (the checker never creates it), or pass --data-dir"
    )]
    DataDirMissing { path: PathBuf },

    #[error("data dir {path} is not a directory")]
    DataDirNotDirectory { path: PathBuf },

    #[error(
        "cannot write in data dir {path}: {source}; the disk test needs a writable \
         directory on the disk basalt will use (is it a read-only mount or an immutable directory?)"
    )]
    DataDirNotWritable { path: PathBuf, source: io::Error },

    #[error("disk test in {path} failed: {source}")]
    DiskIo { path: PathBuf, source: io::Error },

    #[error("peer URL {url:?} is not valid: {reason}")]
    BadPeerUrl { url: String, reason: String },

    #[error("invalid duration {input:?}: {reason} (examples: 2s, 500ms, 1500us)")]
    BadDuration { input: String, reason: String },

    #[error("{what} must be between {min} and {max}, got {got}")]
    OutOfRange {
        what: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },

    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
