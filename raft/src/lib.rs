//! basalt-raft: Raft consensus as a pure, deterministic state machine.
//!
//! A [`RawNode`] is a value: the application feeds it clock ticks
//! ([`RawNode::tick`]), messages from peers ([`RawNode::step`]) and requests
//! ([`RawNode::propose`], [`RawNode::read_index`], [`RawNode::transfer_leader`],
//! [`RawNode::propose_conf_change`]), then collects a [`Ready`] listing what
//! to persist, send and apply, and acknowledges it with [`RawNode::advance`].
//! The crate does no I/O, reads no clock, starts no thread; the same inputs
//! always give the same outputs, which is what lets a seeded simulation run
//! thousands of faulty clusters and replay any failure exactly.
//!
//! Invariants the state machine keeps (and checks with assertions):
//! at most one leader per term; a committed entry is never overwritten;
//! `applied <= committed <= last index`; a leader commits by counting only
//! entries of its own term.
//!
//! ```
//! use basalt_raft::{Config, MemStorage, RawNode, StateRole};
//!
//! // A single-member cluster elects itself and commits a proposal.
//! let mut node = RawNode::new(Config::new(1), MemStorage::new_with_voters(&[1])).unwrap();
//! node.campaign();
//! assert_eq!(node.role(), StateRole::Leader);
//! node.propose(b"hello".to_vec()).unwrap();
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let rd = node.ready();
//!     if let Some(hs) = rd.hard_state {
//!         node.storage_mut().set_hard_state(hs);
//!     }
//!     node.storage_mut().append(&rd.entries).unwrap();
//!     // (a real server sends rd.messages to peers here)
//!     applied.extend(rd.committed_entries.into_iter().filter(|e| !e.data.is_empty()).map(|e| e.data));
//!     node.advance().unwrap();
//! }
//! assert_eq!(applied, vec![b"hello".to_vec()]);
//! ```

mod confchange;
mod error;
mod log;
mod message;
mod progress;
mod quorum;
mod raft;
mod raw_node;
mod read_only;
mod storage;
mod tracker;

pub use error::{Error, Result};
pub use message::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfState, Entry,
    EntryType, HardState, Message, MessageType, NodeId, Snapshot, SnapshotMetadata,
    CAMPAIGN_TRANSFER, ENTRY_OVERHEAD_BYTES, NO_NODE,
};
pub use progress::ProgressState;
pub use quorum::VoteResult;
pub use raft::{Config, SoftState, StateRole};
pub use raw_node::{PeerStatus, RawNode, Ready, Status};
pub use read_only::{ReadOnlyOption, ReadState};
pub use storage::{MemStorage, Storage, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
