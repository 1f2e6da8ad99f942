//! The crate's single error type.

/// Everything that can go wrong inside basalt-raft.
///
/// Storage errors (`Compacted`, `Unavailable`, `SnapshotTemporarilyUnavailable`)
/// are also what a [`crate::Storage`] implementation returns, so the engine's
/// WAL can speak the same language as the in-memory log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The requested index lies below the first index still kept by the log.
    #[error("raft: requested index {index} is compacted (first available index is {first_index})")]
    Compacted { index: u64, first_index: u64 },
    /// The requested index lies beyond the last index of the log.
    #[error("raft: requested index {index} is unavailable (last index is {last_index})")]
    Unavailable { index: u64, last_index: u64 },
    /// The storage cannot produce a snapshot right now; the leader retries later.
    #[error("raft: snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// A snapshot older than what the storage already holds was offered.
    #[error("raft: snapshot at index {offered} is older than the current one at {current}")]
    SnapshotOutOfDate { offered: u64, current: u64 },
    /// A proposal was not accepted: no known leader, a leadership transfer in
    /// progress, this node is not a member, or a configuration change is
    /// already pending. The caller should answer its client with an error.
    #[error("raft: proposal dropped: {reason}")]
    ProposalDropped { reason: &'static str },
    /// `step` was handed a message meant for the local node only (or not for us).
    #[error("raft: cannot step message: {reason}")]
    InvalidMessage { reason: &'static str },
    /// The configuration handed to `RawNode::new` is not usable.
    #[error("raft: invalid config: {reason}")]
    InvalidConfig { reason: String },
    /// A configuration change that would break a membership rule.
    #[error("raft: invalid configuration change: {reason}")]
    InvalidConfChange { reason: String },
    /// A byte buffer did not decode as the structure it claims to be.
    #[error("raft: cannot decode {what}: {reason}")]
    Decode {
        what: &'static str,
        reason: &'static str,
    },
    /// `advance` was called without a matching `ready`, or twice.
    #[error("raft: advance called without an outstanding Ready")]
    NoPendingReady,
}

pub type Result<T> = std::result::Result<T, Error>;
