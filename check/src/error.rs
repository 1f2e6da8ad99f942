//! Why a history could not be checked at all. A history that was checked
//! and found wrong is not an error: it is a [`crate::Report`] with
//! violations.

use std::path::PathBuf;

use crate::history::OpId;
use crate::watch::WatcherId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("operation {op} was recorded wrong: {reason}")]
    InvalidOperation { op: OpId, reason: String },
    #[error("watcher {watcher} was recorded wrong: {reason}")]
    InvalidWatcher { watcher: WatcherId, reason: String },
}
