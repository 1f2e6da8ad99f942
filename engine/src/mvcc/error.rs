//! The one error type of `engine::mvcc`.

/// Errors of the MVCC store. `Compacted`, `FutureRevision`, `LeaseNotFound`,
/// `LeaseExists` and `KeyNotFound` are client errors that `net` maps to etcd's
/// gRPC codes; an op that fails with them changed nothing. The others mean the
/// store's files or I/O are broken.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// etcd: "mvcc: required revision has been compacted".
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// etcd: "mvcc: required revision is a future revision".
    #[error("required revision is a future revision")]
    FutureRevision,
    /// etcd: "lease not found".
    #[error("lease {0:#x} not found")]
    LeaseNotFound(i64),
    /// etcd: "lease already exists".
    #[error("lease {0:#x} already exists")]
    LeaseExists(i64),
    /// etcd: "key not found" (a put with ignore_value/ignore_lease on a missing key).
    #[error("key not found")]
    KeyNotFound,
    /// `apply` was given a log index at or below one already applied.
    #[error("log index {index} already applied (last applied {applied})")]
    StaleIndex { index: u64, applied: u64 },
    /// A request no etcd would accept and `net` did not catch (e.g. lease id 0).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A checkpoint task has the trees (see `Store::start_checkpoint`):
    /// finish it before starting another or defragmenting.
    #[error("a checkpoint is in flight; finish it first")]
    CheckpointInFlight,
    /// An earlier checkpoint committed this shard tree but not the index
    /// tree; committing it again would lose the commit recovery rolls back
    /// to. Reopening the store rolls the shard back (the WAL replays it).
    #[error(
        "{path} holds a commit at index {tree_index}, the index tree only {index}: \
         a checkpoint failed half-way; reopen the store to roll it back"
    )]
    CheckpointTorn {
        path: std::path::PathBuf,
        tree_index: u64,
        index: u64,
    },
    /// Stored or streamed data failed a check; says what and where.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The B+tree under the store failed (its message names file and page).
    #[error(transparent)]
    Tree(#[from] crate::btree::BtreeError),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
