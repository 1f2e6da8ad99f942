//! A member: one Raft node plus the machine it drives.
//!
//! - [`driver`]: the one owner of the `RawNode`, its log and its outbox;
//!   one pass of the Ready loop persists (one fdatasync: the group commit),
//!   sends, applies and answers.
//! - [`open`]: how a member enters Raft at start (founding a cluster,
//!   re-entering at its checkpoint, migrating an older data dir).
//! - [`meta`]: what every checkpoint records for that (the term of the
//!   applied index, the membership, the member's id).
//!
//! The applier (the store, read views, watch feeds) and the checkpointer
//! are the sequencer's (`crate::sequencer`); the peer transport is
//! `crate::peer`.

pub mod driver;
pub mod meta;
pub mod open;

pub use driver::{Doorbell, Driver, NodeStatus, Outbox, ProposalReply};
pub use meta::MemberMeta;
pub use open::{enter, Entered, NodeTiming};
