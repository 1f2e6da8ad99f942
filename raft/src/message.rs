//! Wire-level values: log entries, messages between peers, hard state,
//! snapshots and configuration changes.
//!
//! These are plain data so the peer transport (in `net/`) can encode them
//! with any codec; only [`ConfChange`] carries its own byte encoding, because
//! it travels inside [`Entry::data`] and must survive the WAL unchanged.

use crate::error::{Error, Result};

/// Identifies a member of the cluster. `0` means "nobody" (no leader, no vote).
pub type NodeId = u64;

/// The id that stands for "no node".
pub const NO_NODE: NodeId = 0;

/// What an entry's `data` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryType {
    /// Opaque application data (empty for the no-op a new leader appends).
    #[default]
    Normal,
    /// An encoded [`ConfChange`]; the application must call
    /// `RawNode::apply_conf_change` when it applies this entry.
    ConfChange,
}

/// One record of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub entry_type: EntryType,
    pub data: Vec<u8>,
}

/// Fixed per-entry cost counted by flow control on top of the payload, so a
/// flood of empty entries still counts against the byte budget.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// A normal entry carrying `data`; term and index are set when appended.
    pub fn normal(data: Vec<u8>) -> Entry {
        Entry {
            data,
            ..Entry::default()
        }
    }

    /// Bytes this entry counts for batching and in-flight limits.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The kinds of message peers exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A client proposal forwarded from a follower to the leader.
    Propose,
    /// Log entries (possibly none) after (`index`, `log_term`), with the leader's commit.
    Append,
    /// Acknowledges an `Append` up to `index`, or rejects it with a hint.
    AppendResponse,
    /// Candidate asks for a vote at `term` with its last (`index`, `log_term`).
    Vote,
    VoteResponse,
    /// Pre-vote: "would you vote for me at `term`?" without anyone changing term.
    PreVote,
    PreVoteResponse,
    /// Keeps followers' election timers at bay; carries commit and a read context.
    Heartbeat,
    HeartbeatResponse,
    /// A whole snapshot for a follower too far behind the leader's log.
    Snapshot,
    /// Asks the leader for a read index (forwarded from a follower).
    ReadIndex,
    ReadIndexResponse,
    /// Asks the leader to hand leadership to `from`.
    TransferLeader,
    /// Tells the transfer target to campaign at once, skipping pre-vote.
    TimeoutNow,
}

/// A message between two members.
///
/// One flat struct for every type, like etcd's `raftpb.Message`, so a codec
/// needs one schema. Fields a type does not use stay at their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_type: MessageType,
    pub to: NodeId,
    pub from: NodeId,
    pub term: u64,
    /// Term of the entry at `index` (append, vote) or of the rejection hint.
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub snapshot: Option<Snapshot>,
    pub reject: bool,
    /// On a rejected append: the follower's best guess of where logs agree.
    pub reject_hint: u64,
    /// Read-index request id, or [`CAMPAIGN_TRANSFER`] on a forced vote.
    pub context: Vec<u8>,
}

/// Marks a vote request caused by leadership transfer: it must not be ignored
/// by voters that still hear from the current leader.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

impl Message {
    pub fn new(msg_type: MessageType, from: NodeId, to: NodeId) -> Message {
        Message {
            msg_type,
            to,
            from,
            term: 0,
            log_term: 0,
            index: 0,
            entries: Vec::new(),
            commit: 0,
            snapshot: None,
            reject: false,
            reject_hint: 0,
            context: Vec::new(),
        }
    }

    /// True for the responses that report on an earlier request of ours.
    pub fn is_response(&self) -> bool {
        matches!(
            self.msg_type,
            MessageType::AppendResponse
                | MessageType::VoteResponse
                | MessageType::PreVoteResponse
                | MessageType::HeartbeatResponse
                | MessageType::ReadIndexResponse
        )
    }
}

/// What must be durable before any message of the same `Ready` is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub vote: NodeId,
    pub commit: u64,
}

impl HardState {
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// Cluster membership as recorded in snapshots and returned by
/// `apply_conf_change`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    /// Non-empty only in a joint configuration: the voters being left.
    pub voters_outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing config that become learners when the joint
    /// configuration is left.
    pub learners_next: Vec<NodeId>,
    pub auto_leave: bool,
}

/// Position and membership a snapshot stands for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMetadata {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

/// The state machine's image at `metadata.index`; `data` is the application's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub metadata: SnapshotMetadata,
    pub data: Vec<u8>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

/// One membership step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChangeType {
    AddNode,
    AddLearner,
    RemoveNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    pub change_type: ConfChangeType,
    pub node_id: NodeId,
}

/// How a configuration change is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeTransition {
    /// One voter change at a time goes straight to the new config; anything
    /// larger goes through joint consensus, left automatically.
    #[default]
    Auto,
    /// Always through joint consensus, left automatically by the leader.
    JointImplicit,
    /// Always through joint consensus; the application proposes the
    /// (empty) change that leaves it.
    JointExplicit,
}

/// A membership change. An empty `changes` list means "leave the joint
/// configuration".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfChange {
    pub transition: ConfChangeTransition,
    pub changes: Vec<ConfChangeSingle>,
    pub context: Vec<u8>,
}

const CONF_CHANGE_VERSION: u8 = 1;

impl ConfChange {
    pub fn add_node(id: NodeId) -> ConfChange {
        ConfChange::single(ConfChangeType::AddNode, id)
    }

    pub fn add_learner(id: NodeId) -> ConfChange {
        ConfChange::single(ConfChangeType::AddLearner, id)
    }

    pub fn remove_node(id: NodeId) -> ConfChange {
        ConfChange::single(ConfChangeType::RemoveNode, id)
    }

    fn single(change_type: ConfChangeType, node_id: NodeId) -> ConfChange {
        ConfChange {
            changes: vec![ConfChangeSingle {
                change_type,
                node_id,
            }],
            ..ConfChange::default()
        }
    }

    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChange {
        ConfChange::default()
    }

    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this change enters a joint configuration, and if so
    /// whether the leader leaves it on its own.
    pub(crate) fn enters_joint(&self) -> Option<bool> {
        let voter_changes = self
            .changes
            .iter()
            .filter(|c| c.change_type != ConfChangeType::AddLearner)
            .count();
        match self.transition {
            ConfChangeTransition::Auto if self.changes.len() > 1 || voter_changes > 1 => Some(true),
            ConfChangeTransition::Auto => None,
            ConfChangeTransition::JointImplicit => Some(true),
            ConfChangeTransition::JointExplicit => Some(false),
        }
    }

    /// Encodes as: version u8, transition u8, count u32, (type u8, id u64)*,
    /// context length u32, context bytes; all little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.changes.len() * 9 + self.context.len());
        out.push(CONF_CHANGE_VERSION);
        out.push(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointImplicit => 1,
            ConfChangeTransition::JointExplicit => 2,
        });
        out.extend_from_slice(&(self.changes.len() as u32).to_le_bytes());
        for c in &self.changes {
            out.push(match c.change_type {
                ConfChangeType::AddNode => 0,
                ConfChangeType::AddLearner => 1,
                ConfChangeType::RemoveNode => 2,
            });
            out.extend_from_slice(&c.node_id.to_le_bytes());
        }
        out.extend_from_slice(&(self.context.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<ConfChange> {
        let mut r = ByteReader {
            buf,
            what: "ConfChange",
        };
        if r.u8()? != CONF_CHANGE_VERSION {
            return Err(r.fail("unknown version"));
        }
        let transition = match r.u8()? {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointImplicit,
            2 => ConfChangeTransition::JointExplicit,
            _ => return Err(r.fail("unknown transition")),
        };
        let count = r.u32()? as usize;
        // Each change takes 9 bytes; refuse counts the buffer cannot hold
        // before allocating for them.
        if count > r.buf.len() / 9 {
            return Err(r.fail("change count exceeds buffer"));
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            let change_type = match r.u8()? {
                0 => ConfChangeType::AddNode,
                1 => ConfChangeType::AddLearner,
                2 => ConfChangeType::RemoveNode,
                _ => return Err(r.fail("unknown change type")),
            };
            let node_id = r.u64()?;
            if node_id == NO_NODE {
                return Err(r.fail("node id 0"));
            }
            changes.push(ConfChangeSingle {
                change_type,
                node_id,
            });
        }
        let len = r.u32()? as usize;
        let context = r.take(len)?.to_vec();
        if !r.buf.is_empty() {
            return Err(r.fail("trailing bytes"));
        }
        Ok(ConfChange {
            transition,
            changes,
            context,
        })
    }
}

struct ByteReader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    fn fail(&self, reason: &'static str) -> Error {
        Error::Decode {
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.fail("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips() {
        let cc = ConfChange {
            transition: ConfChangeTransition::JointExplicit,
            changes: vec![
                ConfChangeSingle {
                    change_type: ConfChangeType::AddNode,
                    node_id: 4,
                },
                ConfChangeSingle {
                    change_type: ConfChangeType::RemoveNode,
                    node_id: 1,
                },
            ],
            context: b"ctx".to_vec(),
        };
        assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
    }

    #[test]
    fn conf_change_rejects_garbage() {
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut good = ConfChange::add_node(3).encode();
        good.push(0);
        assert!(ConfChange::decode(&good).is_err());
        let huge = [1u8, 0, 255, 255, 255, 255];
        assert!(ConfChange::decode(&huge).is_err());
    }

    #[test]
    fn auto_transition_uses_joint_only_for_multi_changes() {
        assert_eq!(ConfChange::add_node(2).enters_joint(), None);
        let mut cc = ConfChange::add_node(2);
        cc.changes.push(ConfChangeSingle {
            change_type: ConfChangeType::RemoveNode,
            node_id: 1,
        });
        assert_eq!(cc.enters_joint(), Some(true));
    }
}
