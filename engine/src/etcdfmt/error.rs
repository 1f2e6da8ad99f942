//! The error type of `etcdfmt`: what is wrong and where, for a person to act on.

use crate::mvcc::MvccError;

#[derive(Debug, thiserror::Error)]
pub enum EtcdFmtError {
    /// The bytes are not an etcd snapshot at all.
    #[error("not an etcd snapshot: {0}")]
    NotASnapshot(String),
    /// The file ends before what it describes.
    #[error("truncated snapshot: {0}")]
    Truncated(String),
    /// The SHA-256 trailer does not match the database before it.
    #[error(
        "snapshot hash mismatch: the trailer says {expected}, the database hashes to {found} \
         (the file is damaged; --skip-hash-check restores it anyway)"
    )]
    HashMismatch { expected: String, found: String },
    /// A structure inside the file is broken.
    #[error("malformed snapshot at {place}: {what}")]
    Malformed { place: String, what: String },
    /// Well-formed, but holds something basalt does not restore (a bucket,
    /// field or feature of a newer etcd, auth data).
    #[error("unsupported snapshot content: {0}")]
    Unsupported(String),
    /// The store refused what was read, or failed.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bug: a writer's own invariant broke.
    #[error("internal error writing a snapshot: {0}")]
    Internal(String),
}

impl EtcdFmtError {
    pub(crate) fn stream(source: std::io::Error) -> EtcdFmtError {
        EtcdFmtError::Io {
            path: "<snapshot stream>".into(),
            source,
        }
    }
}
