//! The same values in the WAL's types and in Raft's: the engine does not
//! depend on the raft crate (DESIGN: dependency direction), so the mapping
//! lives here, where both meet.

use basalt_engine::wal;

pub(crate) fn entry_to_wal(e: basalt_raft::Entry) -> wal::Entry {
    wal::Entry {
        term: e.term,
        index: e.index,
        kind: match e.entry_type {
            basalt_raft::EntryType::Normal => wal::EntryKind::Normal,
            basalt_raft::EntryType::ConfChange => wal::EntryKind::ConfChange,
        },
        data: e.data,
    }
}

pub(crate) fn entry_from_wal(e: wal::Entry) -> basalt_raft::Entry {
    basalt_raft::Entry {
        term: e.term,
        index: e.index,
        entry_type: match e.kind {
            wal::EntryKind::Normal => basalt_raft::EntryType::Normal,
            wal::EntryKind::ConfChange => basalt_raft::EntryType::ConfChange,
        },
        data: e.data,
    }
}

pub(crate) fn hard_state_to_wal(hs: basalt_raft::HardState) -> wal::HardState {
    wal::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

pub(crate) fn hard_state_from_wal(hs: wal::HardState) -> basalt_raft::HardState {
    basalt_raft::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

/// The WAL's read errors in Raft's terms. Raft knows only "compacted" and
/// "unavailable"; an I/O error or damage found while reading back is
/// logged here and reported as unavailable, which makes a leader try the
/// follower again later (or send a snapshot) instead of sending bad data.
pub(crate) fn error_to_raft(e: wal::WalError, index: u64) -> basalt_raft::Error {
    match e {
        wal::WalError::Released { index, first_index } => {
            basalt_raft::Error::Compacted { index, first_index }
        }
        wal::WalError::Unavailable { index, last_index } => {
            basalt_raft::Error::Unavailable { index, last_index }
        }
        other => {
            tracing::error!(error = %other, index, "raft log: reading the wal failed");
            basalt_raft::Error::Unavailable {
                index,
                last_index: index.saturating_sub(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_hard_states_round_trip() {
        for entry_type in [
            basalt_raft::EntryType::Normal,
            basalt_raft::EntryType::ConfChange,
        ] {
            let e = basalt_raft::Entry {
                term: 3,
                index: 9,
                entry_type,
                data: b"x".to_vec(),
            };
            assert_eq!(entry_from_wal(entry_to_wal(e.clone())), e);
        }
        let hs = basalt_raft::HardState {
            term: 4,
            vote: 2,
            commit: 7,
        };
        assert_eq!(hard_state_from_wal(hard_state_to_wal(hs)), hs);
    }
}
