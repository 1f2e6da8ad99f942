//! Membership plus per-member progress: who votes, who learns, and how far
//! each one's log has come.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::message::{ConfState, NodeId};
use crate::progress::Progress;
use crate::quorum::{JointConfig, VoteResult};

/// The current membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipConfig {
    pub voters: JointConfig,
    /// Non-voting members; never overlaps with either voter set.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint config is left.
    pub learners_next: BTreeSet<NodeId>,
    pub auto_leave: bool,
}

impl MembershipConfig {
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    pub fn from_conf_state(cs: &ConfState) -> MembershipConfig {
        MembershipConfig {
            voters: JointConfig {
                incoming: cs.voters.iter().copied().collect(),
                outgoing: cs.voters_outgoing.iter().copied().collect(),
            },
            learners: cs.learners.iter().copied().collect(),
            learners_next: cs.learners_next.iter().copied().collect(),
            auto_leave: cs.auto_leave,
        }
    }

    /// Every member, voting or not.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut ids = self.voters.ids();
        ids.extend(&self.learners);
        ids.extend(&self.learners_next);
        ids
    }
}

pub struct ProgressTracker {
    pub config: MembershipConfig,
    pub progress: BTreeMap<NodeId, Progress>,
    votes: HashMap<NodeId, bool>,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub fn new(max_inflight: usize, max_inflight_bytes: u64) -> ProgressTracker {
        ProgressTracker {
            config: MembershipConfig::default(),
            progress: BTreeMap::new(),
            votes: HashMap::new(),
            max_inflight,
            max_inflight_bytes,
        }
    }

    /// Installs `config`, keeping the progress of members that stay and
    /// creating fresh progress (next = `next_index`) for new ones.
    pub fn apply_config(&mut self, config: MembershipConfig, next_index: u64) {
        let members = config.members();
        self.progress.retain(|id, _| members.contains(id));
        for &id in &members {
            let (max, bytes) = (self.max_inflight, self.max_inflight_bytes);
            let pr = self.progress.entry(id).or_insert_with(|| {
                let mut p = Progress::new(next_index, max, bytes);
                // A new member gets a full election timeout to answer before
                // check-quorum counts it as unreachable.
                p.recent_active = true;
                p
            });
            pr.is_learner = config.learners.contains(&id) || config.learners_next.contains(&id);
        }
        self.config = config;
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(id)
    }

    /// Exactly one voter, and it is `id`: it can decide everything alone.
    pub fn is_singleton(&self, id: NodeId) -> bool {
        let v = &self.config.voters;
        !v.is_joint() && v.incoming.len() == 1 && v.incoming.contains(&id)
    }

    pub fn committed(&self) -> u64 {
        self.config
            .voters
            .committed(|id| self.progress.get(&id).map_or(0, |p| p.matched))
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn tally(&self) -> VoteResult {
        self.config.voters.vote_result(&self.votes)
    }

    /// Whether a quorum of voters was recently active; `self_id` always is.
    pub fn quorum_active(&self, self_id: NodeId) -> bool {
        let votes: HashMap<NodeId, bool> = self
            .progress
            .iter()
            .filter(|(id, _)| self.config.voters.contains(**id))
            .map(|(&id, p)| (id, id == self_id || p.recent_active))
            .collect();
        self.config.voters.vote_result(&votes) == VoteResult::Won
    }

    pub fn vote_result_of(&self, acks: &BTreeSet<NodeId>) -> VoteResult {
        let votes: HashMap<NodeId, bool> = acks.iter().map(|&id| (id, true)).collect();
        self.config.voters.vote_result(&votes)
    }
}
