//! Quorum arithmetic for simple majorities and joint configurations.
//!
//! A joint configuration (during membership change) needs a majority of
//! *both* the incoming and the outgoing voter sets for any decision.

use std::collections::{BTreeSet, HashMap};

use crate::message::NodeId;

/// Outcome of counting votes (or acknowledgements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: enough voters have not answered.
    Pending,
    Lost,
    Won,
}

/// Tally of a simple majority over `voters`. An empty set wins everything,
/// so a joint config whose outgoing half is empty acts as the incoming alone.
pub fn majority_vote(voters: &BTreeSet<NodeId>, votes: &HashMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let q = voters.len() / 2 + 1;
    if yes >= q {
        VoteResult::Won
    } else if yes + missing >= q {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Highest index acknowledged by a majority of `voters`; `u64::MAX` for an
/// empty set (so it never limits a joint config's minimum).
pub fn majority_committed(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut idx: Vec<u64> = voters.iter().map(|&id| acked(id)).collect();
    idx.sort_unstable();
    // With n sorted ascending, the value at n - q is held by q voters.
    let q = idx.len() / 2 + 1;
    idx[idx.len() - q]
}

/// The two voter sets of a (possibly joint) configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: BTreeSet<NodeId>,
    pub outgoing: BTreeSet<NodeId>,
}

impl JointConfig {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    pub fn vote_result(&self, votes: &HashMap<NodeId, bool>) -> VoteResult {
        let a = majority_vote(&self.incoming, votes);
        let b = majority_vote(&self.outgoing, votes);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    pub fn committed(&self, acked: impl Fn(NodeId) -> u64) -> u64 {
        let a = majority_committed(&self.incoming, &acked);
        let b = majority_committed(&self.outgoing, &acked);
        a.min(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_commit_index() {
        let acked = |id: u64| [0, 5, 3, 9, 1, 7][id as usize];
        assert_eq!(majority_committed(&set(&[1]), acked), 5);
        assert_eq!(majority_committed(&set(&[1, 2]), acked), 3);
        assert_eq!(majority_committed(&set(&[1, 2, 3]), acked), 5);
        assert_eq!(majority_committed(&set(&[1, 2, 3, 4]), acked), 3);
        assert_eq!(majority_committed(&set(&[1, 2, 3, 4, 5]), acked), 5);
        assert_eq!(majority_committed(&set(&[]), acked), u64::MAX);
    }

    #[test]
    fn joint_needs_both_majorities() {
        let cfg = JointConfig {
            incoming: set(&[1, 2, 3]),
            outgoing: set(&[3, 4, 5]),
        };
        let votes: HashMap<u64, bool> = [(1, true), (2, true)].into_iter().collect();
        assert_eq!(cfg.vote_result(&votes), VoteResult::Pending);
        let votes: HashMap<u64, bool> = [(1, true), (2, true), (4, false), (5, false)]
            .into_iter()
            .collect();
        assert_eq!(cfg.vote_result(&votes), VoteResult::Lost);
        let votes: HashMap<u64, bool> = [(1, true), (3, true), (4, true)].into_iter().collect();
        assert_eq!(cfg.vote_result(&votes), VoteResult::Won);
        let acked = |id: u64| [0, 9, 9, 2, 1, 1][id as usize];
        assert_eq!(cfg.committed(acked), 1);
    }

    #[test]
    fn vote_tally_majority() {
        let v = set(&[1, 2, 3]);
        let votes: HashMap<u64, bool> = [(1, true), (2, false)].into_iter().collect();
        assert_eq!(majority_vote(&v, &votes), VoteResult::Pending);
        let votes: HashMap<u64, bool> = [(1, false), (2, false)].into_iter().collect();
        assert_eq!(majority_vote(&v, &votes), VoteResult::Lost);
    }
}
