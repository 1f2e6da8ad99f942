//! The application's handle on a Raft member: inputs in, [`Ready`] out.

use crate::error::{Error, Result};
use crate::message::{
    ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType, NodeId, Snapshot,
    NO_NODE,
};
use crate::progress::ProgressState;
use crate::raft::{Config, Raft, SoftState, StateRole};
use crate::read_only::ReadState;
use crate::storage::Storage;

/// Everything the application must do after feeding inputs, in order:
/// 1. persist `snapshot`, `entries` and `hard_state` (fsync if `must_sync`);
/// 2. send `messages`;
/// 3. apply `snapshot`, then `committed_entries` (calling
///    [`RawNode::apply_conf_change`] for conf change entries);
/// 4. serve `read_states` once applied up to their index;
/// 5. call [`RawNode::advance`].
#[derive(Debug, Default)]
pub struct Ready {
    /// Set when leader or role changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    /// Set when term, vote or commit changed since the last `Ready`.
    pub hard_state: Option<HardState>,
    pub read_states: Vec<ReadState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub committed_entries: Vec<Entry>,
    pub messages: Vec<Message>,
    /// Entries or term/vote changed: the write must be durable before
    /// any message goes out.
    pub must_sync: bool,
}

/// What `advance` needs to remember about the outstanding `Ready`.
struct Outstanding {
    last_entry: Option<(u64, u64)>,
    /// Payload bytes of the committed entries handed out.
    applied_payload: u64,
    snapshot_index: Option<u64>,
    last_committed: Option<u64>,
}

/// Progress of one member as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub matched: u64,
    pub next: u64,
    pub state: ProgressState,
    pub is_learner: bool,
    /// Appends sent but not acknowledged, and their entry bytes.
    pub inflight_msgs: usize,
    pub inflight_bytes: u64,
}

/// A snapshot of this member's state, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub hard_state: HardState,
    pub soft_state: SoftState,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub conf_state: ConfState,
    /// Filled on the leader only.
    pub progress: Vec<PeerStatus>,
    pub lead_transferee: NodeId,
}

pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft: SoftState,
    prev_hard: HardState,
    outstanding: Option<Outstanding>,
}

impl<S: Storage> RawNode<S> {
    /// Starts (or restarts) a member from whatever `storage` holds.
    pub fn new(config: Config, storage: S) -> Result<RawNode<S>> {
        let raft = Raft::new(config, storage)?;
        let prev_soft = raft.soft_state();
        let prev_hard = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
            outstanding: None,
        })
    }

    /// Advances the logical clock by one tick (etcd: 100 ms by default).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Feeds a message received from a peer.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if matches!(m.msg_type, MessageType::Propose) && m.from == NO_NODE {
            return Err(Error::InvalidMessage {
                reason: "forwarded proposal without sender",
            });
        }
        self.raft.step(m)
    }

    /// Proposes application data. `Err(ProposalDropped)` means the proposal
    /// surely will not commit; `Ok` means it may (the application learns
    /// which from the committed entries).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<()> {
        self.propose_entry(Entry::normal(data))
    }

    /// Proposes several payloads as one message: they are appended together
    /// and travel to followers in the same append (up to `max_size_per_msg`),
    /// so the per-message costs are paid once for the batch. All or none
    /// are accepted.
    pub fn propose_batch(&mut self, batch: Vec<Vec<u8>>) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::ProposalDropped {
                reason: "empty proposal",
            });
        }
        let mut m = Message::new(MessageType::Propose, self.raft.id, NO_NODE);
        m.entries = batch.into_iter().map(Entry::normal).collect();
        self.raft.step(m)
    }

    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<()> {
        self.propose_entry(Entry {
            entry_type: EntryType::ConfChange,
            data: cc.encode(),
            ..Entry::default()
        })
    }

    fn propose_entry(&mut self, e: Entry) -> Result<()> {
        let mut m = Message::new(MessageType::Propose, self.raft.id, NO_NODE);
        m.entries = vec![e];
        self.raft.step(m)
    }

    /// Asks for a linearizable read point; the answer arrives as a
    /// [`ReadState`] carrying `ctx` in a later `Ready`. `ctx` must be
    /// unique among outstanding reads.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        let mut m = Message::new(MessageType::ReadIndex, self.raft.id, NO_NODE);
        m.context = ctx;
        self.raft.step(m)
    }

    /// Asks the leader to hand leadership to `to` (forwarded if we are not
    /// the leader).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        let m = Message::new(MessageType::TransferLeader, to, NO_NODE);
        self.raft.step(m)
    }

    /// Starts an election now (subject to pre-vote).
    pub fn campaign(&mut self) {
        self.raft.campaign_now();
    }

    /// Applies a committed conf change entry; returns the new membership to
    /// store alongside the application's state.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState> {
        self.raft.apply_conf_change(cc)
    }

    /// The transport could not reach `id`: stop pipelining to it.
    pub fn report_unreachable(&mut self, id: NodeId) {
        self.raft.report_unreachable(id);
    }

    /// The transport finished (or failed) sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: NodeId, success: bool) {
        self.raft.report_snapshot(id, success);
    }

    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.soft_state() != self.prev_soft
            || r.hard_state() != self.prev_hard
            || r.log.unstable.snapshot.is_some()
            || !r.log.unstable.entries.is_empty()
            || r.log.has_next_committed_entries()
            || !r.msgs.is_empty()
            || !r.read_states.is_empty()
    }

    /// Collects the work accumulated since the last `advance`.
    pub fn ready(&mut self) -> Ready {
        let r = &mut self.raft;
        let soft = r.soft_state();
        let hard = r.hard_state();
        let entries = r.log.unstable.entries.clone();
        let snapshot = r.log.unstable.snapshot.clone();
        let committed_entries = r.log.next_committed_entries();
        let hard_state = (hard != self.prev_hard).then_some(hard);
        let must_sync = !entries.is_empty()
            || hard.term != self.prev_hard.term
            || hard.vote != self.prev_hard.vote;
        let rd = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state,
            read_states: std::mem::take(&mut r.read_states),
            messages: std::mem::take(&mut r.msgs),
            must_sync,
            entries,
            snapshot,
            committed_entries,
        };
        self.prev_soft = soft;
        self.prev_hard = hard;
        self.outstanding = Some(Outstanding {
            last_entry: rd.entries.last().map(|e| (e.index, e.term)),
            applied_payload: rd
                .committed_entries
                .iter()
                .map(|e| e.data.len() as u64)
                .sum(),
            snapshot_index: rd.snapshot.as_ref().map(|s| s.metadata.index),
            last_committed: rd.committed_entries.last().map(|e| e.index),
        });
        rd
    }

    /// Acknowledges the last `Ready`: its entries are persisted and its
    /// committed entries applied.
    pub fn advance(&mut self) -> Result<()> {
        let o = self.outstanding.take().ok_or(Error::NoPendingReady)?;
        let log = &mut self.raft.log;
        if let Some(idx) = o.snapshot_index {
            log.stable_snapshot_to(idx);
            log.applied = log.applied.max(idx);
        }
        if let Some((index, term)) = o.last_entry {
            log.stable_to(index, term);
        }
        if let Some(idx) = o.last_committed {
            log.applied_to(idx);
        }
        self.raft.reduce_uncommitted_size(o.applied_payload);
        self.raft.after_applied();
        Ok(())
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.state == StateRole::Leader {
            r.tracker
                .progress
                .iter()
                .map(|(&id, p)| PeerStatus {
                    id,
                    matched: p.matched,
                    next: p.next,
                    state: p.state,
                    is_learner: p.is_learner,
                    inflight_msgs: p.inflights.count(),
                    inflight_bytes: p.inflights.bytes(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: r.soft_state(),
            applied: r.log.applied,
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            conf_state: r.conf_state(),
            progress,
            lead_transferee: r.lead_transferee,
        }
    }

    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    pub fn role(&self) -> StateRole {
        self.raft.state
    }

    pub fn leader_id(&self) -> NodeId {
        self.raft.leader_id
    }

    /// The member leadership is being handed to (`NO_NODE`: none); a
    /// leader refuses proposals meanwhile.
    pub fn lead_transferee(&self) -> NodeId {
        self.raft.lead_transferee
    }

    pub fn term(&self) -> u64 {
        self.raft.term
    }

    pub fn committed(&self) -> u64 {
        self.raft.log.committed
    }

    /// Term of the entry at `index` as this member's log sees it (including
    /// entries not persisted yet).
    pub fn log_term(&self, index: u64) -> Result<u64> {
        self.raft.log.term(index)
    }

    /// Entries `lo..hi` of this member's log (persisted or not).
    pub fn log_entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        self.raft.log.slice(lo, hi, u64::MAX)
    }

    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// Mutable access for persisting a `Ready` and compacting.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }
}
