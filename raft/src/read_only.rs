//! Pending ReadIndex requests on the leader, each waiting for a quorum of
//! heartbeat acknowledgements that prove the leader was still the leader
//! when the read began.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::message::{Message, NodeId};

/// How reads are made linearizable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// Confirm leadership with a heartbeat round per batch of reads.
    #[default]
    Safe,
    /// Trust the leader lease given by check-quorum: no round trip, but
    /// correctness depends on bounded clock drift between members.
    LeaseBased,
}

/// A read that may be served once the state machine has applied `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub request_ctx: Vec<u8>,
}

pub(crate) struct ReadIndexStatus {
    pub request: Message,
    pub index: u64,
    pub acks: BTreeSet<NodeId>,
}

/// Requests in arrival order; a quorum ack of a later request confirms
/// every earlier one too.
#[derive(Default)]
pub(crate) struct ReadOnly {
    pending: HashMap<Vec<u8>, ReadIndexStatus>,
    queue: VecDeque<Vec<u8>>,
}

/// Upper bound on outstanding read requests a leader tracks; beyond it new
/// reads are dropped rather than growing memory without bound.
pub(crate) const MAX_PENDING_READS: usize = 65_536;

impl ReadOnly {
    /// Returns false (and drops the request) if the context is already
    /// pending or the queue is full.
    pub fn add_request(&mut self, index: u64, request: Message) -> bool {
        let ctx = request.context.clone();
        if self.pending.contains_key(&ctx) || self.queue.len() >= MAX_PENDING_READS {
            return false;
        }
        self.pending.insert(
            ctx.clone(),
            ReadIndexStatus {
                request,
                index,
                acks: BTreeSet::new(),
            },
        );
        self.queue.push_back(ctx);
        true
    }

    pub fn recv_ack(&mut self, from: NodeId, ctx: &[u8]) -> Option<&BTreeSet<NodeId>> {
        let st = self.pending.get_mut(ctx)?;
        st.acks.insert(from);
        Some(&st.acks)
    }

    /// Removes and returns every request up to and including `ctx`.
    pub fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .filter_map(|c| self.pending.remove(&c))
            .collect()
    }

    pub fn last_pending_ctx(&self) -> Option<&[u8]> {
        self.queue.back().map(|c| c.as_slice())
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}
