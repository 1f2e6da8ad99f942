//! The one error type of the WAL.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the WAL.
///
/// `Clone` because one failed write+fdatasync fails every caller that shared
/// it; the I/O error is kept behind an `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// An operating-system call failed.
    #[error("wal: {op} {}: {source}", path.display())]
    Io {
        /// What the WAL was doing ("writing", "fdatasync", "renaming", …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A record that cannot be the torn tail of the log failed validation:
    /// the node must not start on it.
    #[error("wal: corrupt log in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the first bad record or batch in that file.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// A write or fdatasync failed earlier; after a failed fdatasync the
    /// page state is unknown, so the WAL refuses all further work rather
    /// than retrying (the process should restart and recover).
    #[error("wal: unusable after an earlier failure: {0}")]
    Poisoned(String),
    /// `append` was given entries that do not continue the log.
    #[error("wal: entry index {found} does not continue the log (expected {expected})")]
    NotContiguous {
        /// The index the log needs next.
        expected: u64,
        /// The index that was offered.
        found: u64,
    },
    /// The index lies below the first retained entry.
    #[error("wal: index {index} is below the first retained index {first_index}")]
    Released {
        /// The index asked for.
        index: u64,
        /// The first index the WAL still holds.
        first_index: u64,
    },
    /// The index lies beyond the last entry that can be read back (not
    /// appended, or appended but not yet durable).
    #[error("wal: entry {index} is not in the log (last readable index is {last_index})")]
    Unavailable {
        /// The index asked for.
        index: u64,
        /// The last index that can be read.
        last_index: u64,
    },
    /// One `append` call is larger than fits in one segment.
    #[error("wal: append of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size of the rejected append.
        bytes: u64,
        /// The largest append a segment can hold.
        limit: u64,
    },
    /// The options cannot work (e.g. a segment smaller than one batch).
    #[error("wal: invalid options: {0}")]
    InvalidOptions(String),
    /// Another open WAL (in this or another process) holds the directory.
    #[error("wal: {} is in use by another process or WAL instance", .0.display())]
    Locked(PathBuf),
    /// The WAL was closed while the operation waited.
    #[error("wal: closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn glommio<T>(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: glommio::GlommioError<T>,
    ) -> Self {
        WalError::io(op, path, std::io::Error::from(source))
    }
}
