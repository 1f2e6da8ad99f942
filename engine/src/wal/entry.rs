//! What the WAL stores: Raft log entries and the Raft hard state.

/// One Raft log entry. The WAL never looks inside `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log; the first entry of a fresh log has index 1.
    pub index: u64,
    /// What `data` holds.
    pub kind: EntryKind,
    /// Opaque payload (the server stores the protobuf-encoded request).
    pub data: Vec<u8>,
}

/// What an entry's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A client request.
    Normal,
    /// A membership change.
    ConfChange,
}

impl EntryKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// Raft's persistent state besides the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate voted for in `term` (0 = none).
    pub vote: u64,
    /// Highest index known to be committed.
    pub commit: u64,
}
