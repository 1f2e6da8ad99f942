//! The Raft protocol itself: one value per member, fed ticks and messages,
//! producing messages and log changes. One step function per role, like
//! etcd-io/raft, so each role's rules read on their own.

use std::collections::BTreeSet;

use crate::confchange;
use crate::error::{Error, Result};
use crate::log::RaftLog;
use crate::message::{
    ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType, NodeId, Snapshot,
    CAMPAIGN_TRANSFER, NO_NODE,
};
use crate::progress::ProgressState;
use crate::quorum::VoteResult;
use crate::read_only::{ReadOnly, ReadOnlyOption, ReadState, MAX_PENDING_READS};
use crate::storage::Storage;
use crate::tracker::{MembershipConfig, ProgressTracker};

/// Tunables of one member. Defaults follow etcd (100 ms ticks: heartbeat
/// every tick, election after 10).
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    /// Ticks without hearing from a leader before campaigning; the actual
    /// timeout is drawn from `[election_tick, 2 * election_tick)`.
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Last index the application has already applied (on restart).
    pub applied: u64,
    /// Cap on the entry bytes in one append message (batching).
    pub max_size_per_msg: u64,
    /// Flow control: appends in flight to one follower, by count ...
    pub max_inflight_msgs: usize,
    /// ... and by entry bytes (0 = no byte limit).
    pub max_inflight_bytes: u64,
    /// Cap on the committed entry bytes handed out in one `Ready`.
    pub max_committed_size_per_ready: u64,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers then ignore disruptive votes while in lease.
    pub check_quorum: bool,
    /// Ask "would you vote for me?" before bumping the term, so a node that
    /// rejoins after a partition does not depose a healthy leader.
    pub pre_vote: bool,
    pub read_only_option: ReadOnlyOption,
    /// Followers drop proposals instead of forwarding them to the leader.
    pub disable_proposal_forwarding: bool,
    /// Cap on the payload bytes a leader holds appended but not yet
    /// applied; proposals beyond it are dropped (0 = no cap). Bounds the
    /// memory a slow quorum can make the leader hold.
    pub max_uncommitted_entries_size: u64,
    /// Seeds the election-timeout randomizer, so runs replay exactly.
    pub seed: u64,
}

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            max_committed_size_per_ready: u64::MAX,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            disable_proposal_forwarding: false,
            max_uncommitted_entries_size: 0,
            seed: id,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.id == NO_NODE {
            return bad("id must not be 0");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be greater than 0");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be greater than 0");
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return bad("lease-based reads need check_quorum");
        }
        Ok(())
    }
}

/// The role a member currently plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateRole {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth telling the application about when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub leader_id: NodeId,
    pub role: StateRole,
}

/// Small deterministic PRNG (SplitMix64): enough to spread election
/// timeouts, and the same seed always gives the same run.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// Cap on proposals and reads a fresh leader queues before its first commit.
const MAX_PENDING_READ_INDEX_MESSAGES: usize = 4096;

pub(crate) struct Raft<S: Storage> {
    pub id: NodeId,
    pub term: u64,
    pub vote: NodeId,
    pub log: RaftLog<S>,
    pub tracker: ProgressTracker,
    pub state: StateRole,
    pub leader_id: NodeId,
    /// Target of an ongoing leadership transfer, or `NO_NODE`.
    pub lead_transferee: NodeId,
    /// Index of the latest conf change entry appended by this leader; a new
    /// one is refused until the application has applied past it.
    pub pending_conf_index: u64,
    pub msgs: Vec<Message>,
    pub read_states: Vec<ReadState>,
    read_only: ReadOnly,
    /// Reads that arrived before this leader committed an entry of its term.
    pending_read_index: Vec<Message>,
    /// Payload bytes this leader appended that are not yet applied.
    uncommitted_size: u64,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    randomized_election_timeout: usize,
    rng: SplitMix64,
    cfg: Config,
}

impl<S: Storage> Raft<S> {
    pub fn new(cfg: Config, storage: S) -> Result<Raft<S>> {
        cfg.validate()?;
        let (hs, cs) = storage.initial_state()?;
        let log = RaftLog::new(storage, cfg.max_committed_size_per_ready)?;
        let mut r = Raft {
            id: cfg.id,
            term: 0,
            vote: NO_NODE,
            log,
            tracker: ProgressTracker::new(cfg.max_inflight_msgs, cfg.max_inflight_bytes),
            state: StateRole::Follower,
            leader_id: NO_NODE,
            lead_transferee: NO_NODE,
            pending_conf_index: 0,
            msgs: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::default(),
            pending_read_index: Vec::new(),
            uncommitted_size: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            rng: SplitMix64(cfg.seed ^ cfg.id.wrapping_mul(0xA24B_AED4_963E_E407)),
            cfg,
        };
        let next = r.log.last_index() + 1;
        r.tracker
            .apply_config(MembershipConfig::from_conf_state(&cs), next);
        if !hs.is_empty() {
            let (first, last) = (r.log.committed, r.log.last_index());
            if hs.commit < first || hs.commit > last {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "hard state commit {} outside the log [{first}, {last}]",
                        hs.commit
                    ),
                });
            }
            r.log.committed = hs.commit;
            r.term = hs.term;
            r.vote = hs.vote;
        }
        if r.cfg.applied > 0 {
            if r.cfg.applied > r.log.committed {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "applied {} is above commit {}",
                        r.cfg.applied, r.log.committed
                    ),
                });
            }
            r.log.applied = r.cfg.applied.max(r.log.applied);
        }
        let term = r.term;
        r.become_follower(term, NO_NODE);
        Ok(r)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            role: self.state,
        }
    }

    pub fn conf_state(&self) -> ConfState {
        self.tracker.config.to_conf_state()
    }

    // ----- sending -------------------------------------------------------

    fn send(&mut self, mut m: Message) {
        // Forwarded requests keep their origin (a transfer names its target).
        if m.from == NO_NODE {
            m.from = self.id;
        }
        match m.msg_type {
            MessageType::Vote
            | MessageType::PreVote
            | MessageType::VoteResponse
            | MessageType::PreVoteResponse => {
                // Vote traffic carries a deliberately chosen term (pre-vote
                // uses the future term); never fill it in implicitly.
                debug_assert!(m.term != 0, "vote message without term: {m:?}");
            }
            // Requests forwarded to the leader are term-less, like proposals
            // from the local application.
            MessageType::Propose | MessageType::ReadIndex | MessageType::TransferLeader => {
                m.term = 0
            }
            _ => m.term = self.term,
        }
        self.msgs.push(m);
    }

    /// Sends the next append (or a snapshot) to `to` if flow control
    /// allows; returns whether anything was sent. With `send_if_empty`
    /// an append without entries still goes out (to carry the commit).
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let prev_index = next - 1;
        let prev_term = self.log.term(prev_index);
        let ents = self.log.entries_from(next, self.cfg.max_size_per_msg);
        let (prev_term, ents) = match (prev_term, ents) {
            (Ok(t), Ok(e)) => (t, e),
            _ => return self.maybe_send_snapshot(to),
        };
        if ents.is_empty() && !send_if_empty {
            return false;
        }
        let count = ents.len();
        let bytes: u64 = ents.iter().map(Entry::size).sum();
        let last = ents.last().map_or(prev_index, |e| e.index);
        let mut m = Message::new(MessageType::Append, self.id, to);
        m.index = prev_index;
        m.log_term = prev_term;
        m.entries = ents;
        m.commit = self.log.committed;
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.sent_entries(count, last, bytes);
        }
        self.send(m);
        true
    }

    fn maybe_send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        // A follower that has not answered lately is likely down; a
        // snapshot is expensive, so wait until it shows signs of life.
        if !pr.recent_active {
            return false;
        }
        let snapshot = match self.log.snapshot() {
            Ok(s) if !s.is_empty() => s,
            _ => return false,
        };
        let index = snapshot.metadata.index;
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        let mut m = Message::new(MessageType::Snapshot, self.id, to);
        m.snapshot = Some(snapshot);
        self.send(m);
        true
    }

    /// Sends as much as flow control allows to `to`: pipelining.
    fn send_append_stream(&mut self, to: NodeId, send_if_empty: bool) {
        if self.maybe_send_append(to, send_if_empty) {
            while self.maybe_send_append(to, false) {}
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    fn bcast_append(&mut self) {
        for id in self.peers() {
            self.send_append_stream(id, true);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self
            .read_only
            .last_pending_ctx()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        self.bcast_heartbeat_with_ctx(ctx);
    }

    fn bcast_heartbeat_with_ctx(&mut self, ctx: Vec<u8>) {
        for id in self.peers() {
            let matched = self.tracker.progress[&id].matched;
            let mut m = Message::new(MessageType::Heartbeat, self.id, id);
            // Never tell a follower to commit beyond what it is known to
            // hold; it may not have those entries yet.
            m.commit = matched.min(self.log.committed);
            m.context = ctx.clone();
            self.send(m);
        }
    }

    // ----- role changes ---------------------------------------------------

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader_id = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = NO_NODE;
        self.tracker.reset_votes();
        let last = self.log.last_index();
        let id = self.id;
        for (&pid, pr) in self.tracker.progress.iter_mut() {
            let learner = pr.is_learner;
            *pr = crate::progress::Progress::new(
                last + 1,
                self.cfg.max_inflight_msgs,
                self.cfg.max_inflight_bytes,
            );
            pr.is_learner = learner;
            if pid == id {
                pr.matched = last;
            }
        }
        self.pending_conf_index = 0;
        self.read_only = ReadOnly::default();
        self.pending_read_index.clear();
        self.uncommitted_size = 0;
    }

    fn reset_randomized_election_timeout(&mut self) {
        let base = self.cfg.election_tick;
        self.randomized_election_timeout = base + (self.rng.next_u64() % base as u64) as usize;
    }

    pub fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.leader_id = leader;
        self.state = StateRole::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "leader cannot become pre-candidate"
        );
        // Pre-vote changes neither term nor vote: a failed pre-election
        // leaves no trace that could disrupt the cluster.
        self.tracker.reset_votes();
        self.state = StateRole::PreCandidate;
        self.leader_id = NO_NODE;
    }

    fn become_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "leader cannot become candidate"
        );
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.state = StateRole::Candidate;
    }

    fn become_leader(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Follower,
            "follower cannot become leader directly"
        );
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.state = StateRole::Leader;
        let id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            pr.become_replicate();
            pr.recent_active = true;
        }
        // No conf change may be proposed until everything before this
        // term is applied: that is what makes single-step changes safe
        // across leader changes.
        self.pending_conf_index = self.log.last_index();
        // The empty entry of our term lets earlier entries commit (§5.4.2).
        self.append_entries(vec![Entry::default()]);
    }

    /// Appends entries proposed to this leader, stamping term and index.
    fn append_entries(&mut self, mut ents: Vec<Entry>) {
        let mut last = self.log.last_index();
        for e in &mut ents {
            last += 1;
            e.term = self.term;
            e.index = last;
        }
        let last = self.log.append(&ents);
        let id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            pr.maybe_update(last);
        }
        self.maybe_commit();
    }

    fn maybe_commit(&mut self) -> bool {
        let mci = self.tracker.committed();
        if self.log.maybe_commit(mci, self.term) {
            self.release_pending_read_index();
            return true;
        }
        false
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// Whether this node may campaign: a voter with no pending snapshot.
    pub fn promotable(&self) -> bool {
        self.tracker
            .progress
            .get(&self.id)
            .is_some_and(|p| !p.is_learner)
            && self.tracker.is_voter(self.id)
            && self.log.unstable.snapshot.is_none()
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let lo = self.log.applied + 1;
        let hi = self.log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.log.slice(lo.max(self.log.first_index()), hi, u64::MAX) {
            Ok(ents) => ents.iter().any(|e| e.entry_type == EntryType::ConfChange),
            Err(_) => false,
        }
    }

    fn hup(&mut self, kind: CampaignKind) {
        if self.state == StateRole::Leader || !self.promotable() {
            return;
        }
        // A committed but unapplied membership change may remove us or
        // change the quorum; campaigning on the old config is unsafe.
        if self.has_unapplied_conf_change() {
            return;
        }
        let kind = if kind == CampaignKind::Election && self.cfg.pre_vote {
            CampaignKind::PreElection
        } else {
            kind
        };
        self.campaign(kind);
    }

    fn campaign(&mut self, kind: CampaignKind) {
        let (msg_type, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageType::PreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::Vote, self.term)
        };
        let id = self.id;
        if self.poll(id, true) == VoteResult::Won {
            // Single voter: nobody else to ask.
            if kind == CampaignKind::PreElection {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let voters: BTreeSet<NodeId> = self.tracker.config.voters.ids();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in voters {
            if to == self.id {
                continue;
            }
            let mut m = Message::new(msg_type, self.id, to);
            m.term = term;
            m.index = last_index;
            m.log_term = last_term;
            if kind == CampaignKind::Transfer {
                m.context = CAMPAIGN_TRANSFER.to_vec();
            }
            self.send(m);
        }
    }

    fn poll(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.tracker.record_vote(from, granted);
        self.tracker.tally()
    }

    // ----- ticking --------------------------------------------------------

    pub fn tick(&mut self) {
        match self.state {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(CampaignKind::Election);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    let term = self.term;
                    self.become_follower(term, NO_NODE);
                    return;
                }
                let id = self.id;
                for (&pid, pr) in self.tracker.progress.iter_mut() {
                    if pid != id {
                        pr.recent_active = false;
                    }
                }
            }
            // A transfer that has not finished within an election timeout
            // has failed; resume accepting proposals.
            self.lead_transferee = NO_NODE;
            if !self.tracker.is_voter(self.id) {
                self.transfer_to_best_voter();
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    // ----- stepping -------------------------------------------------------

    /// Rejects messages no correct peer sends, before they can break a
    /// log invariant: appends must carry contiguous entries following
    /// `index` with terms that never decrease and never exceed the sender's.
    fn validate(m: &Message) -> Result<()> {
        let bad = |reason| Err(Error::InvalidMessage { reason });
        match m.msg_type {
            MessageType::Append => {
                let mut prev_term = m.log_term;
                for (i, e) in m.entries.iter().enumerate() {
                    if e.index != m.index + 1 + i as u64 {
                        return bad("append entries are not contiguous after index");
                    }
                    if e.term < prev_term || e.term > m.term {
                        return bad("append entry terms out of order");
                    }
                    prev_term = e.term;
                }
                if m.log_term > m.term {
                    return bad("append log_term above message term");
                }
            }
            MessageType::Snapshot if m.snapshot.is_none() => {
                return bad("snapshot message without snapshot")
            }
            _ => {}
        }
        Ok(())
    }

    pub fn step(&mut self, m: Message) -> Result<()> {
        Self::validate(&m)?;
        if matches!(
            m.msg_type,
            MessageType::VoteResponse | MessageType::PreVoteResponse
        ) && m.reject
        {
            // Whatever the term, a reported commit point is a fact.
            self.learn_commit_from_peer(m.commit, m.log_term);
        }
        if m.term == 0 {
            if !matches!(
                m.msg_type,
                MessageType::Propose | MessageType::ReadIndex | MessageType::TransferLeader
            ) {
                return Err(Error::InvalidMessage {
                    reason: "only proposals, reads and transfers may have term 0",
                });
            }
        } else if m.term > self.term {
            if matches!(m.msg_type, MessageType::Vote | MessageType::PreVote) {
                let force = m.context == CAMPAIGN_TRANSFER;
                let in_lease = self.cfg.check_quorum
                    && self.leader_id != NO_NODE
                    && self.election_elapsed < self.cfg.election_tick;
                if !force && in_lease {
                    // We heard from a leader within the minimum election
                    // timeout: this vote is disruptive, ignore it.
                    return Ok(());
                }
            }
            match m.msg_type {
                // A pre-vote never changes our term, and neither does a
                // granted pre-vote answer (we campaign at that term next).
                MessageType::PreVote => {}
                MessageType::PreVoteResponse if !m.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            if (self.cfg.check_quorum || self.cfg.pre_vote)
                && matches!(m.msg_type, MessageType::Heartbeat | MessageType::Append)
            {
                // A stale leader (maybe just back from a partition) must
                // learn our term, or with pre-vote/check-quorum it could
                // keep a lagging node from ever winning an election.
                let r = Message::new(MessageType::AppendResponse, self.id, m.from);
                self.send(r);
            } else if matches!(m.msg_type, MessageType::PreVote | MessageType::Vote) {
                // Tell a candidate from an old term about ours. Without this a
                // candidate that only ever talks to voters whose campaigns run
                // ahead of it (their Vote requests never reach it, e.g. it is
                // not in their stale config) stays behind forever.
                let resp = if m.msg_type == MessageType::Vote {
                    MessageType::VoteResponse
                } else {
                    MessageType::PreVoteResponse
                };
                let mut r = Message::new(resp, self.id, m.from);
                r.term = self.term;
                r.reject = true;
                r.commit = self.log.committed;
                r.log_term = self.log.term_or_zero(self.log.committed);
                self.send(r);
            }
            return Ok(());
        }

        match m.msg_type {
            MessageType::Vote | MessageType::PreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.state {
                StateRole::Leader => self.step_leader(m),
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m),
                StateRole::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(&mut self, m: Message) {
        let is_pre = m.msg_type == MessageType::PreVote;
        let can_vote = self.vote == m.from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            || (is_pre && m.term > self.term);
        let resp_type = if is_pre {
            MessageType::PreVoteResponse
        } else {
            MessageType::VoteResponse
        };
        let mut r = Message::new(resp_type, self.id, m.from);
        if can_vote && self.log.is_up_to_date(m.index, m.log_term) {
            // Answer at the requester's term: for pre-vote our own term is
            // lower and the answer must still count.
            r.term = m.term;
            if !is_pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            r.term = self.term;
            r.reject = true;
            // Share our commit point: a candidate holding that entry may
            // commit up to it. That lets a member that has not yet learned a
            // committed membership change (and so still needs our vote under
            // the old config) apply it and move on without us.
            r.commit = self.log.committed;
            r.log_term = self.log.term_or_zero(self.log.committed);
        }
        self.send(r);
    }

    /// A peer told us (i, t) is committed. Committedness is a fact about
    /// the entry, not about who reports it, and Log Matching makes our
    /// entry at (i, t) the same entry with the same prefix.
    fn learn_commit_from_peer(&mut self, index: u64, term: u64) {
        if index > self.log.committed && term > 0 && self.log.match_term(index, term) {
            self.log.commit_to(index);
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::Propose => {
                if self.leader_id == NO_NODE {
                    return Err(Error::ProposalDropped {
                        reason: "no leader",
                    });
                }
                if self.cfg.disable_proposal_forwarding {
                    return Err(Error::ProposalDropped {
                        reason: "proposal forwarding disabled",
                    });
                }
                let mut m = m;
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::Append => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::TransferLeader | MessageType::ReadIndex => {
                if self.leader_id == NO_NODE {
                    return Err(Error::ProposalDropped {
                        reason: "no leader",
                    });
                }
                let mut m = m;
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::TimeoutNow => {
                // The leader picked us: campaign at once, skipping pre-vote
                // and the lease of the other voters.
                self.hup(CampaignKind::Transfer);
            }
            MessageType::ReadIndexResponse => {
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx: m.context,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<()> {
        let my_resp = if self.state == StateRole::PreCandidate {
            MessageType::PreVoteResponse
        } else {
            MessageType::VoteResponse
        };
        match m.msg_type {
            MessageType::Propose => {
                return Err(Error::ProposalDropped {
                    reason: "no leader (election in progress)",
                })
            }
            MessageType::ReadIndex | MessageType::TransferLeader => {
                return Err(Error::ProposalDropped {
                    reason: "no leader (election in progress)",
                })
            }
            MessageType::Append => {
                self.become_follower(m.term, m.from);
                self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            t if t == my_resp => match self.poll(m.from, !m.reject) {
                VoteResult::Won => {
                    if self.state == StateRole::PreCandidate {
                        self.campaign(CampaignKind::Election);
                    } else {
                        self.become_leader();
                        self.bcast_append();
                    }
                }
                VoteResult::Lost => {
                    // A pre-vote rejection at a higher term already made us
                    // a follower above; this is a plain lost election.
                    let term = self.term;
                    self.become_follower(term, NO_NODE);
                }
                VoteResult::Pending => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn step_leader(&mut self, m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::Propose => self.leader_propose(m)?,
            MessageType::ReadIndex => self.leader_read_index(m),
            MessageType::TransferLeader => self.leader_transfer(m.from),
            MessageType::AppendResponse => self.handle_append_response(m),
            MessageType::HeartbeatResponse => self.handle_heartbeat_response(m),
            _ => {}
        }
        Ok(())
    }

    fn leader_propose(&mut self, mut m: Message) -> Result<()> {
        if m.entries.is_empty() {
            return Err(Error::ProposalDropped {
                reason: "empty proposal",
            });
        }
        if !self.tracker.progress.contains_key(&self.id) {
            return Err(Error::ProposalDropped {
                reason: "leader is no longer a member",
            });
        }
        if self.lead_transferee != NO_NODE {
            return Err(Error::ProposalDropped {
                reason: "leadership transfer in progress",
            });
        }
        let mut conf_index = None;
        for (i, e) in m.entries.iter().enumerate() {
            if e.entry_type != EntryType::ConfChange {
                continue;
            }
            let cc = ConfChange::decode(&e.data)?;
            let joint = self.tracker.config.voters.is_joint();
            if self.pending_conf_index > self.log.applied || conf_index.is_some() {
                return Err(Error::ProposalDropped {
                    reason: "a configuration change is already pending",
                });
            }
            if joint && !cc.is_leave_joint() {
                return Err(Error::ProposalDropped {
                    reason: "must leave the joint configuration first",
                });
            }
            if !joint && cc.is_leave_joint() {
                return Err(Error::ProposalDropped {
                    reason: "not in a joint configuration",
                });
            }
            conf_index = Some(self.log.last_index() + 1 + i as u64);
        }
        let payload: u64 = m.entries.iter().map(|e| e.data.len() as u64).sum();
        let limit = self.cfg.max_uncommitted_entries_size;
        // An empty backlog always accepts one proposal, however large, so
        // an oversized entry cannot wedge the leader.
        if limit > 0 && self.uncommitted_size > 0 && self.uncommitted_size + payload > limit {
            return Err(Error::ProposalDropped {
                reason: "too many uncommitted entry bytes",
            });
        }
        self.uncommitted_size += payload;
        if let Some(ci) = conf_index {
            self.pending_conf_index = ci;
        }
        for e in &mut m.entries {
            e.term = 0;
            e.index = 0;
        }
        self.append_entries(std::mem::take(&mut m.entries));
        self.bcast_append();
        Ok(())
    }

    fn leader_read_index(&mut self, m: Message) {
        if self.tracker.is_singleton(self.id) {
            let idx = self.log.committed;
            self.respond_read_index(m, idx);
            return;
        }
        // Until an entry of this term commits, our commit index may lag
        // behind the previous leader's: a read index from it could be stale.
        if !self.committed_entry_in_current_term() {
            if self.pending_read_index.len() < MAX_PENDING_READ_INDEX_MESSAGES {
                self.pending_read_index.push(m);
            }
            return;
        }
        self.handle_read_index_request(m);
    }

    fn handle_read_index_request(&mut self, m: Message) {
        let committed = self.log.committed;
        match self.cfg.read_only_option {
            ReadOnlyOption::Safe => {
                let ctx = m.context.clone();
                if self.read_only.len() >= MAX_PENDING_READS
                    || !self.read_only.add_request(committed, m)
                {
                    return;
                }
                let id = self.id;
                self.read_only.recv_ack(id, &ctx);
                self.bcast_heartbeat_with_ctx(ctx);
            }
            ReadOnlyOption::LeaseBased => self.respond_read_index(m, committed),
        }
    }

    fn release_pending_read_index(&mut self) {
        if self.pending_read_index.is_empty() || !self.committed_entry_in_current_term() {
            return;
        }
        for m in std::mem::take(&mut self.pending_read_index) {
            self.handle_read_index_request(m);
        }
    }

    fn respond_read_index(&mut self, req: Message, index: u64) {
        if req.from == NO_NODE || req.from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: req.context,
            });
            return;
        }
        let mut r = Message::new(MessageType::ReadIndexResponse, self.id, req.from);
        r.index = index;
        r.context = req.context;
        self.send(r);
    }

    fn leader_transfer(&mut self, transferee: NodeId) {
        let Some(pr) = self.tracker.progress.get(&transferee) else {
            return;
        };
        if pr.is_learner || transferee == self.id || self.lead_transferee == transferee {
            return;
        }
        let matched = pr.matched;
        self.lead_transferee = transferee;
        // The transfer must finish within one election timeout.
        self.election_elapsed = 0;
        if matched == self.log.last_index() {
            self.send_timeout_now(transferee);
        } else {
            self.send_append_stream(transferee, true);
        }
    }

    /// A leader that is no longer a voter hands over to the voter whose log
    /// is longest.
    fn transfer_to_best_voter(&mut self) {
        let voters = self.tracker.config.voters.ids();
        let best = self
            .tracker
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id && voters.contains(id))
            .max_by_key(|(id, p)| (p.matched, std::cmp::Reverse(**id)))
            .map(|(&id, _)| id);
        if let Some(id) = best {
            self.leader_transfer(id);
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        let m = Message::new(MessageType::TimeoutNow, self.id, to);
        self.send(m);
    }

    fn handle_append_response(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject {
            let mut hint = m.reject_hint;
            if m.log_term > 0 {
                // Fast backtracking: skip every entry of ours whose term is
                // above the follower's term at the hint.
                hint = self.log.find_conflict_by_term(m.reject_hint, m.log_term);
            }
            let pr = self.tracker.progress.get_mut(&from).expect("checked above");
            if pr.maybe_decr_to(m.index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append_stream(from, true);
            }
            return;
        }
        let first_index = self.log.first_index();
        let pr = self.tracker.progress.get_mut(&from).expect("checked above");
        let was_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= first_index => pr.become_replicate(),
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            // A follower we had stopped sending to may lack the current
            // commit index: tell it even without new entries.
            self.send_append_stream(from, was_paused);
        }
        if from == self.lead_transferee
            && self.tracker.progress[&from].matched == self.log.last_index()
        {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, m: Message) {
        let from = m.from;
        let last = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last || pr.state == ProgressState::Probe {
            self.maybe_send_append(from, true);
        }
        if self.cfg.read_only_option != ReadOnlyOption::Safe || m.context.is_empty() {
            return;
        }
        let won = match self.read_only.recv_ack(from, &m.context) {
            Some(acks) => self.tracker.vote_result_of(acks) == VoteResult::Won,
            None => false,
        };
        if won {
            for rs in self.read_only.advance(&m.context) {
                self.respond_read_index(rs.request, rs.index);
            }
        }
    }

    fn handle_append(&mut self, m: Message) {
        if m.index < self.log.committed {
            let mut r = Message::new(MessageType::AppendResponse, self.id, m.from);
            r.index = self.log.committed;
            self.send(r);
            return;
        }
        let mut r = Message::new(MessageType::AppendResponse, self.id, m.from);
        match self
            .log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            Some(last_new) => r.index = last_new,
            None => {
                // Tell the leader where our log may agree with its own: the
                // last index at or below its probe whose term is no higher
                // than the probe's term.
                let hint = self
                    .log
                    .find_conflict_by_term(m.index.min(self.log.last_index()), m.log_term);
                r.index = m.index;
                r.reject = true;
                r.reject_hint = hint;
                r.log_term = self.log.term_or_zero(hint);
            }
        }
        self.send(r);
    }

    fn handle_heartbeat(&mut self, m: Message) {
        debug_assert!(
            m.commit <= self.log.last_index(),
            "heartbeat commit {} beyond our log",
            m.commit
        );
        self.log.commit_to(m.commit.min(self.log.last_index()));
        let mut r = Message::new(MessageType::HeartbeatResponse, self.id, m.from);
        r.context = m.context;
        self.send(r);
    }

    fn handle_snapshot(&mut self, mut m: Message) {
        let Some(snapshot) = m.snapshot.take() else {
            return;
        };
        let mut r = Message::new(MessageType::AppendResponse, self.id, m.from);
        if self.restore(snapshot) {
            r.index = self.log.last_index();
        } else {
            r.index = self.log.committed;
        }
        self.send(r);
    }

    /// Installs a snapshot from the leader if it brings us forward.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.metadata;
        if meta.index <= self.log.committed {
            return false;
        }
        // The snapshot's membership may not include us yet (we were added
        // after it was taken): install it anyway; the entries that follow
        // it carry our addition. Its config is committed, and newer than
        // ours because its index is above our commit.
        let cfg = MembershipConfig::from_conf_state(&meta.conf_state);
        if self.log.match_term(meta.index, meta.term) {
            // We already hold the snapshot's last entry: just commit it.
            self.log.commit_to(meta.index);
            return false;
        }
        let next = meta.index + 1;
        self.log.restore(snapshot);
        self.tracker.progress.clear();
        self.tracker.apply_config(cfg, next);
        true
    }

    // ----- application-facing --------------------------------------------

    /// Applies a committed configuration change; returns the new membership.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState> {
        let next_cfg = confchange::apply(&self.tracker.config, cc)?;
        let next = self.log.last_index() + 1;
        self.tracker.apply_config(next_cfg, next);
        let still_voter = self.tracker.is_voter(self.id);
        if self.state == StateRole::Leader {
            if !still_voter {
                // Removed or demoted. Stepping down at once could leave the
                // remaining voters unable to elect anyone: they may not know
                // yet that the change committed and still need our vote,
                // which our longer log would refuse. So keep leading (the
                // new quorum commits without us) and hand leadership to the
                // most caught-up voter.
                self.transfer_to_best_voter();
            } else {
                if self.lead_transferee != NO_NODE && !self.tracker.is_voter(self.lead_transferee) {
                    self.lead_transferee = NO_NODE;
                }
                // The quorum changed: the commit index may move.
                if self.maybe_commit() {
                    self.bcast_append();
                } else {
                    // New members start in probe state: probe them now
                    // rather than at the next heartbeat.
                    for id in self.peers() {
                        let probe = self.tracker.progress[&id].state == ProgressState::Probe;
                        self.send_append_stream(id, probe);
                    }
                }
            }
        }
        Ok(self.conf_state())
    }

    /// Called after the application applied up to `applied`: proposes
    /// leaving a joint configuration the leader is meant to leave itself.
    /// The application applied entries carrying `payload` bytes.
    pub fn reduce_uncommitted_size(&mut self, payload: u64) {
        if self.state == StateRole::Leader {
            self.uncommitted_size = self.uncommitted_size.saturating_sub(payload);
        }
    }

    pub fn after_applied(&mut self) {
        if self.state == StateRole::Leader
            && self.tracker.config.auto_leave
            && self.pending_conf_index <= self.log.applied
        {
            let e = Entry {
                entry_type: EntryType::ConfChange,
                data: ConfChange::leave_joint().encode(),
                ..Entry::default()
            };
            self.pending_conf_index = self.log.last_index() + 1;
            self.append_entries(vec![e]);
            self.bcast_append();
        }
    }

    pub fn campaign_now(&mut self) {
        self.hup(CampaignKind::Election);
    }

    pub fn report_unreachable(&mut self, id: NodeId) {
        if self.state != StateRole::Leader {
            return;
        }
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    pub fn report_snapshot(&mut self, id: NodeId, success: bool) {
        if self.state != StateRole::Leader {
            return;
        }
        let Some(pr) = self.tracker.progress.get_mut(&id) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if !success {
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for the next heartbeat answer before probing again.
        pr.probe_sent = true;
    }
}
