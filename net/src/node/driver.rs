//! The driver: the one owner of this member's [`RawNode`], its Raft log
//! ([`WalStorage`]) and its outbox to the peers.
//!
//! Everything that reaches Raft — client proposals, peer messages, clock
//! ticks, linearizable read requests, transport reports — is queued in the
//! [`Inbox`] and fed to the node at the start of one pass of the Ready
//! loop ([`Driver::take_ready`]). The loop (`Sequencer::run_node`) then
//! persists the Ready's entries and hard state with one fdatasync (the
//! group commit: there is no other batching layer in front of the WAL),
//! sends its messages, applies its committed entries and calls
//! [`Driver::advance`]. A pass never holds the node across an await: the
//! log is shared (`Rc<WalStorage>`) so persisting does not borrow it.
//!
//! Waiting clients are keyed by request id ([`Waiters`]), never by a
//! position in a batch, and every wait is bounded by the request timeout.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use basalt_engine::mvcc as m;
use basalt_raft::{
    ConfChange, ConfState, Entry, HardState, Message, NodeId, RawNode, ReadState, Ready, Snapshot,
    StateRole, Storage,
};
use futures_channel::oneshot;
use prost::Message as _;

use crate::error::Error;
use crate::grpc::Status;
use crate::raftlog::WalStorage;
use crate::sequencer::{LogEntry, Reply};

/// Client proposals waiting for their entries to apply, at most; more are
/// refused with etcd's "too many requests".
pub const MAX_WAITING_PROPOSALS: usize = 16_384;
/// Linearizable reads waiting for a read index, at most.
pub const MAX_WAITING_READS: usize = 65_536;
/// A ReadIndex round unanswered this long is asked again (etcd's
/// `readIndexRetryTime`).
pub const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

/// Raft's log shared between the node (which reads it) and the loop (which
/// persists through it without borrowing the node).
pub struct SharedLog(pub Rc<WalStorage>);

impl Storage for SharedLog {
    fn initial_state(&self) -> basalt_raft::Result<(HardState, ConfState)> {
        self.0.initial_state()
    }
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> basalt_raft::Result<Vec<Entry>> {
        self.0.entries(lo, hi, max_bytes)
    }
    fn term(&self, index: u64) -> basalt_raft::Result<u64> {
        self.0.term(index)
    }
    fn first_index(&self) -> basalt_raft::Result<u64> {
        self.0.first_index()
    }
    fn last_index(&self) -> basalt_raft::Result<u64> {
        self.0.last_index()
    }
    fn snapshot(&self) -> basalt_raft::Result<Snapshot> {
        self.0.snapshot()
    }
}

/// Where the messages of a Ready go: the peer transport. A full queue or an
/// unknown peer is reported back through [`Driver::report_unreachable`],
/// never waited on.
pub trait Outbox {
    fn send(&self, messages: Vec<Message>);
}

/// What the rest of the member may know of the node without borrowing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub leader: NodeId,
    pub term: u64,
    pub role: StateRole,
    /// Raft's commit index.
    pub committed: u64,
    /// Voters in the configuration: one means no read needs a round.
    pub voters: usize,
    pub is_learner: bool,
}

impl NodeStatus {
    /// The whole status, membership included (at start and after a
    /// membership change).
    fn of<S: Storage>(node: &RawNode<S>) -> NodeStatus {
        let st = node.status();
        let cs = &st.conf_state;
        NodeStatus {
            voters: cs.voters.len().max(cs.voters_outgoing.len()),
            is_learner: cs.learners.contains(&node.id()),
            ..self_status(node, 0, false)
        }
    }

    /// The same with the membership unchanged: no allocation, for every
    /// pass of the loop.
    fn refreshed<S: Storage>(&self, node: &RawNode<S>) -> NodeStatus {
        self_status(node, self.voters, self.is_learner)
    }

    /// A read on this member is linearizable without a ReadIndex round:
    /// it is the only voter, so whatever it applied is all that was ever
    /// committed, and it answers a write only after applying it.
    pub fn reads_are_local(&self) -> bool {
        self.voters == 1 && self.role == StateRole::Leader
    }
}

fn self_status<S: Storage>(node: &RawNode<S>, voters: usize, is_learner: bool) -> NodeStatus {
    NodeStatus {
        id: node.id(),
        leader: node.leader_id(),
        term: node.term(),
        role: node.role(),
        committed: node.committed(),
        voters,
        is_learner,
    }
}

/// One client waiting for its proposal to apply.
struct Waiter {
    reply: oneshot::Sender<Result<Reply, Status>>,
    /// The operation, decoded once when proposed (the applier would
    /// otherwise decode the entry it already had).
    op: Option<m::Op>,
    deadline: Instant,
}

#[derive(Default)]
struct Waiters {
    by_id: HashMap<u64, Waiter>,
}

/// A read waiting for its read index, then for the index to apply.
type ReadReply = oneshot::Sender<Result<(), Status>>;

#[derive(Default)]
struct Reads {
    /// Asked for since the round in flight started: they ride the next one.
    waiting: Vec<(ReadReply, Instant)>,
    /// The round in flight: its context and who rides it.
    in_flight: Option<(u64, Vec<(ReadReply, Instant)>)>,
    /// When the round in flight was asked for.
    in_flight_since: Option<Instant>,
    /// Rounds answered, waiting for the member to apply their index.
    answered: Vec<(u64, Vec<(ReadReply, Instant)>)>,
    next_ctx: u64,
}

/// Inputs queued for the next pass.
#[derive(Default)]
struct Inbox {
    proposals: Vec<(u64, Vec<u8>)>,
    /// Membership changes, proposed one per pass at most.
    conf_changes: Vec<ConfChange>,
    messages: Vec<Message>,
    ticks: usize,
    unreachable: Vec<NodeId>,
    snapshot_reports: Vec<(NodeId, bool)>,
    campaign: bool,
    transfer_to: Option<NodeId>,
}

/// Wakes the loop when work arrives; a ring while it is busy is kept.
#[derive(Default)]
pub struct Doorbell {
    rung: Cell<bool>,
    waiter: RefCell<Option<std::task::Waker>>,
}

impl Doorbell {
    pub fn ring(&self) {
        self.rung.set(true);
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.rung.replace(false) {
                return std::task::Poll::Ready(());
            }
            *self.waiter.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

pub struct Driver {
    node: RefCell<RawNode<SharedLog>>,
    log: Rc<WalStorage>,
    inbox: RefCell<Inbox>,
    /// Proposals Raft refused while there was no leader: proposed again
    /// once one is known (a refused proposal surely did not commit).
    parked: RefCell<Vec<(u64, Vec<u8>)>>,
    /// Membership changes waiting for a leader, likewise.
    parked_conf_changes: RefCell<Vec<ConfChange>>,
    doorbell: Doorbell,
    waiters: RefCell<Waiters>,
    reads: RefCell<Reads>,
    status: Cell<NodeStatus>,
    next_request: Cell<u64>,
    request_timeout: Duration,
    /// A hard state whose only change was the commit index: not worth an
    /// fdatasync of its own, it rides the next write.
    deferred_hard_state: Cell<Option<HardState>>,
    outbox: RefCell<Option<Rc<dyn Outbox>>>,
    /// Log writes made (for the WAL fault test hook).
    persists: Cell<u64>,
}

impl Driver {
    pub fn new(node: RawNode<SharedLog>, log: Rc<WalStorage>, request_timeout: Duration) -> Driver {
        let status = NodeStatus::of(&node);
        // Request ids grow across restarts (milliseconds since the epoch
        // in the high bits), so an entry replayed after a restart never
        // answers a new client.
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Driver {
            node: RefCell::new(node),
            log,
            inbox: RefCell::default(),
            parked: RefCell::default(),
            parked_conf_changes: RefCell::default(),
            doorbell: Doorbell::default(),
            waiters: RefCell::default(),
            reads: RefCell::default(),
            status: Cell::new(status),
            next_request: Cell::new(millis << 20),
            request_timeout,
            deferred_hard_state: Cell::new(None),
            outbox: RefCell::new(None),
            persists: Cell::new(0),
        }
    }

    /// Where messages go from now on.
    pub fn set_outbox(&self, outbox: Rc<dyn Outbox>) {
        *self.outbox.borrow_mut() = Some(outbox);
    }

    pub fn status(&self) -> NodeStatus {
        self.status.get()
    }

    pub fn log(&self) -> &Rc<WalStorage> {
        &self.log
    }

    /// Waits until something was queued since the last pass.
    pub async fn wait(&self) {
        self.doorbell.wait().await
    }

    /// Wakes the loop (to stop, say).
    pub fn wake(&self) {
        self.doorbell.ring();
    }

    // ---- inputs ----

    /// Queues a client's write. `op` is the entry's operation, kept for
    /// the applier; the answer comes when the entry applies here, or an
    /// error when the request timeout passes first.
    pub fn propose(
        &self,
        mut entry: LogEntry,
        op: Option<m::Op>,
        max_bytes: usize,
    ) -> Result<oneshot::Receiver<Result<Reply, Status>>, Error> {
        if self.waiters.borrow().by_id.len() >= MAX_WAITING_PROPOSALS {
            return Err(Error::TooManyRequests);
        }
        let id = self.next_request.get() + 1;
        self.next_request.set(id);
        entry.member_id = self.status.get().id;
        entry.request_id = id;
        let bytes = entry.encode_to_vec();
        if bytes.len() > max_bytes {
            return Err(Error::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().by_id.insert(
            id,
            Waiter {
                reply: tx,
                op,
                deadline: Instant::now() + self.request_timeout,
            },
        );
        self.inbox.borrow_mut().proposals.push((id, bytes));
        self.doorbell.ring();
        Ok(rx)
    }

    /// Queues a membership change. `build` makes the change from the
    /// (member, request) ids that name its waiter, which it must carry in
    /// its context; the answer comes when the change applies here (see
    /// [`Driver::take_waiter_by_id`]) or the request timeout passes.
    pub fn propose_conf_change(
        &self,
        build: impl FnOnce(u64, u64) -> ConfChange,
    ) -> Result<oneshot::Receiver<Result<Reply, Status>>, Error> {
        if self.waiters.borrow().by_id.len() >= MAX_WAITING_PROPOSALS {
            return Err(Error::TooManyRequests);
        }
        let id = self.next_request.get() + 1;
        self.next_request.set(id);
        let cc = build(self.status.get().id, id);
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().by_id.insert(
            id,
            Waiter {
                reply: tx,
                op: None,
                deadline: Instant::now() + self.request_timeout,
            },
        );
        self.inbox.borrow_mut().conf_changes.push(cc);
        self.doorbell.ring();
        Ok(rx)
    }

    /// The waiter of the request `request_id` proposed by `member_id`, if
    /// this member proposed it and it still waits.
    pub fn take_waiter_by_id(&self, member_id: u64, request_id: u64) -> Option<ProposalReply> {
        if member_id != self.status.get().id || request_id == 0 {
            return None;
        }
        let w = self.waiters.borrow_mut().by_id.remove(&request_id)?;
        Some(ProposalReply(w.reply))
    }

    /// On the leader: how far `id`'s log matches (Raft's progress) and how
    /// far the leader's own does; `None` elsewhere or for a stranger.
    pub fn progress_of(&self, id: NodeId) -> Option<(u64, u64)> {
        let st = self.node.borrow().status();
        let matched = |who| st.progress.iter().find(|p| p.id == who).map(|p| p.matched);
        Some((matched(id)?, matched(st.id)?))
    }

    /// Queues a linearizable read: answered once this member has applied
    /// everything committed when the read was asked for.
    pub fn read_index(&self) -> Result<oneshot::Receiver<Result<(), Status>>, Error> {
        let (tx, rx) = oneshot::channel();
        let status = self.status.get();
        let unsafe_read = match test_mutation() {
            Some(Mutation::StaleFollowerReads) => true,
            Some(Mutation::LeaderLocalReads) => status.role == StateRole::Leader,
            None => false,
        };
        if status.reads_are_local() || unsafe_read {
            let _ = tx.send(Ok(()));
            return Ok(rx);
        }
        let mut reads = self.reads.borrow_mut();
        if reads.waiting.len() >= MAX_WAITING_READS {
            return Err(Error::TooManyRequests);
        }
        reads
            .waiting
            .push((tx, Instant::now() + self.request_timeout));
        drop(reads);
        self.doorbell.ring();
        Ok(rx)
    }

    /// Messages from a peer.
    pub fn receive(&self, batch: Vec<Message>) {
        self.inbox.borrow_mut().messages.extend(batch);
        self.doorbell.ring();
    }

    /// One heartbeat interval passed.
    pub fn tick(&self) {
        self.inbox.borrow_mut().ticks += 1;
        self.doorbell.ring();
    }

    pub fn report_unreachable(&self, id: NodeId) {
        self.inbox.borrow_mut().unreachable.push(id);
        self.doorbell.ring();
    }

    pub fn report_snapshot(&self, id: NodeId, success: bool) {
        self.inbox.borrow_mut().snapshot_reports.push((id, success));
        self.doorbell.ring();
    }

    /// Campaign at the next pass (a sole voter does not wait out an
    /// election timeout).
    pub fn campaign(&self) {
        self.inbox.borrow_mut().campaign = true;
        self.doorbell.ring();
    }

    /// Hand leadership to `to` (etcd's MoveLeader).
    pub fn transfer_leader(&self, to: NodeId) {
        self.inbox.borrow_mut().transfer_to = Some(to);
        self.doorbell.ring();
    }

    // ---- one pass ----

    /// Feeds everything queued to the node and takes its Ready, if any.
    pub fn take_ready(&self) -> Option<Ready> {
        let inbox = std::mem::take(&mut *self.inbox.borrow_mut());
        let mut node = self.node.borrow_mut();
        for _ in 0..inbox.ticks {
            node.tick();
        }
        if inbox.campaign {
            node.campaign();
        }
        for id in inbox.unreachable {
            node.report_unreachable(id);
        }
        for (id, ok) in inbox.snapshot_reports {
            node.report_snapshot(id, ok);
        }
        for m in inbox.messages {
            let (from, kind) = (m.from, m.msg_type);
            if let Err(e) = node.step(m) {
                tracing::debug!(from, ?kind, error = %e, "raft refused a peer message");
            }
        }
        if let Some(to) = inbox.transfer_to {
            if let Err(e) = node.transfer_leader(to) {
                tracing::warn!(to, error = %e, "leadership transfer refused");
            }
        }
        let mut proposals = std::mem::take(&mut *self.parked.borrow_mut());
        proposals.extend(inbox.proposals);
        if !proposals.is_empty() {
            // Raft refuses a batch whole, before taking anything from it,
            // only when there is no leader to take it: the copy kept for
            // that case is made only then.
            if node.leader_id() == 0 || node.lead_transferee() != 0 {
                tracing::debug!(
                    n = proposals.len(),
                    "proposals parked until a leader takes them"
                );
                *self.parked.borrow_mut() = proposals;
            } else {
                let n = proposals.len();
                let data: Vec<Vec<u8>> = proposals.into_iter().map(|p| p.1).collect();
                if let Err(e) = node.propose_batch(data) {
                    // Over the uncommitted-bytes cap: these surely did not
                    // commit; their clients time out, as etcd's do.
                    tracing::warn!(error = %e, n, "proposals dropped by raft");
                }
            }
        }
        let mut changes = std::mem::take(&mut *self.parked_conf_changes.borrow_mut());
        changes.extend(inbox.conf_changes);
        if !changes.is_empty() {
            if node.leader_id() == 0 || node.lead_transferee() != 0 {
                *self.parked_conf_changes.borrow_mut() = changes;
            } else {
                for cc in changes {
                    // Raft takes one change at a time: one proposed while
                    // another is pending is dropped, and its client times
                    // out (as etcd's).
                    if let Err(e) = node.propose_conf_change(&cc) {
                        tracing::warn!(error = %e, "membership change dropped by raft");
                    }
                }
            }
        }
        self.start_read_round(&mut node);
        self.status.set(self.status.get().refreshed(&node));
        if inbox.ticks > 0 {
            self.expire(Instant::now());
        }
        node.has_ready().then(|| node.ready())
    }

    fn start_read_round(&self, node: &mut RawNode<SharedLog>) {
        let mut reads = self.reads.borrow_mut();
        // A round unanswered for a while was lost (its request or answer
        // dropped, or the leader it went to deposed): its readers ride a
        // new one rather than wait out their timeout (etcd asks again after
        // `readIndexRetryTime`, 500 ms).
        if reads
            .in_flight_since
            .is_some_and(|t| t.elapsed() >= READ_INDEX_RETRY)
        {
            if let Some((_, riders)) = reads.in_flight.take() {
                reads.waiting.extend(riders);
            }
            reads.in_flight_since = None;
        }
        if reads.in_flight.is_some() || reads.waiting.is_empty() {
            return;
        }
        let ctx = reads.next_ctx;
        reads.next_ctx += 1;
        // Unique in the cluster: the leader keeps every member's pending
        // reads by context.
        let mut bytes = node.id().to_be_bytes().to_vec();
        bytes.extend_from_slice(&ctx.to_be_bytes());
        match node.read_index(bytes) {
            Ok(()) => {
                let riders = std::mem::take(&mut reads.waiting);
                reads.in_flight = Some((ctx, riders));
                reads.in_flight_since = Some(Instant::now());
            }
            // No leader yet: they wait for the next pass, within their
            // timeout.
            Err(e) => tracing::debug!(error = %e, "read index refused"),
        }
    }

    /// Persists a Ready's entries and hard state: one write, one
    /// fdatasync. A hard state that changed only its commit index is kept
    /// for the next write (Raft does not need it durable).
    pub async fn persist(&self, rd: &mut Ready) -> Result<(), Error> {
        let entries = std::mem::take(&mut rd.entries);
        let hard_state = rd.hard_state.or(self.deferred_hard_state.get());
        if entries.is_empty() && !rd.must_sync {
            if rd.hard_state.is_some() {
                self.deferred_hard_state.set(rd.hard_state);
            }
            return Ok(());
        }
        let n = self.persists.get() + 1;
        self.persists.set(n);
        if test_wal_fault_at() == Some(n) {
            self.log
                .wal()
                .inject_fault(basalt_engine::wal::Fault::FailSync);
        }
        self.log.persist(entries, hard_state).await?;
        self.deferred_hard_state.set(None);
        Ok(())
    }

    /// Whether this Ready's messages may go before its persist (then the
    /// leader's fsync overlaps its followers' round trip, as etcd's does).
    /// Safe for a leader whose Ready changes neither term nor vote and
    /// whose configuration needs another member to commit: the commit
    /// index it sends then counts only entries persisted in earlier passes
    /// (acknowledgements are stepped only after this pass's persist), so a
    /// crash before this persist loses nothing committed. Proven in
    /// raft/tests/simulation.rs (`leader_sends_first_per_mille`, with
    /// crashes before the persist; without the configuration rule it finds
    /// a lost committed entry).
    pub fn sends_before_persist(&self, rd: &Ready) -> bool {
        let status = self.status.get();
        let persisted = self.log.hard_state();
        let keeps_vote = rd
            .hard_state
            .is_none_or(|hs| hs.term == persisted.term && hs.vote == persisted.vote);
        status.role == StateRole::Leader && keeps_vote && rd.snapshot.is_none() && status.voters > 1
    }

    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        match self.outbox.borrow().as_ref() {
            Some(out) => out.send(messages),
            None => {
                for m in messages {
                    tracing::debug!(to = m.to, kind = ?m.msg_type, "no transport: message dropped");
                    self.report_unreachable(m.to);
                }
            }
        }
    }

    /// The waiter of an entry this member proposed, with its decoded op.
    pub fn take_waiter(&self, entry: &LogEntry) -> Option<(ProposalReply, Option<m::Op>)> {
        if entry.member_id != self.status.get().id || entry.request_id == 0 {
            return None;
        }
        let w = self.waiters.borrow_mut().by_id.remove(&entry.request_id)?;
        Some((ProposalReply(w.reply), w.op))
    }

    pub fn apply_conf_change(&self, cc: &ConfChange) -> Result<ConfState, Error> {
        let cs = self
            .node
            .borrow_mut()
            .apply_conf_change(cc)
            .map_err(|e| Error::Wal(format!("applying a membership change: {e}")))?;
        self.status.set(NodeStatus::of(&self.node.borrow()));
        Ok(cs)
    }

    /// Read states of a Ready: each answers the round it names once
    /// `applied` reaches its index.
    pub fn read_states(&self, states: Vec<ReadState>, applied: u64) {
        let mut reads = self.reads.borrow_mut();
        let me = self.status.get().id.to_be_bytes();
        for rs in states {
            let Some(ours) = rs.request_ctx.strip_prefix(&me[..]) else {
                continue;
            };
            let Ok(ctx) = <[u8; 8]>::try_from(ours) else {
                continue;
            };
            let ctx = u64::from_be_bytes(ctx);
            match reads.in_flight.take() {
                Some((c, riders)) if c == ctx => {
                    reads.answered.push((rs.index, riders));
                    reads.in_flight_since = None;
                }
                other => reads.in_flight = other,
            }
        }
        drop(reads);
        self.applied(applied);
    }

    /// Answers every read whose index this member has now applied.
    pub fn applied(&self, applied: u64) {
        let mut reads = self.reads.borrow_mut();
        let mut i = 0;
        while i < reads.answered.len() {
            if reads.answered[i].0 <= applied {
                let (_, riders) = reads.answered.swap_remove(i);
                for (tx, _) in riders {
                    let _ = tx.send(Ok(()));
                }
            } else {
                i += 1;
            }
        }
    }

    pub fn advance(&self) {
        if let Err(e) = self.node.borrow_mut().advance() {
            tracing::error!(error = %e, "raft advance without a ready");
        }
        self.status
            .set(self.status.get().refreshed(&self.node.borrow()));
    }

    /// The timeout error a client sees, as etcd 3.4 words it (with or
    /// without a leader: checked against a 3-member etcd, `tests/cluster.rs`).
    fn timeout_error(&self) -> Error {
        Error::Timeout
    }

    /// Fails every proposal and read whose request timeout has passed.
    fn expire(&self, now: Instant) {
        let err: Status = self.timeout_error().into();
        let mut waiters = self.waiters.borrow_mut();
        let late: Vec<u64> = waiters
            .by_id
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in &late {
            if let Some(w) = waiters.by_id.remove(id) {
                let _ = w.reply.send(Err(err.clone()));
            }
        }
        drop(waiters);
        if !late.is_empty() {
            self.parked
                .borrow_mut()
                .retain(|(id, _)| !late.contains(id));
        }
        let mut reads = self.reads.borrow_mut();
        let expire_riders = |riders: &mut Vec<(ReadReply, Instant)>| {
            let mut i = 0;
            while i < riders.len() {
                if riders[i].1 <= now {
                    let (tx, _) = riders.swap_remove(i);
                    let _ = tx.send(Err(err.clone()));
                } else {
                    i += 1;
                }
            }
        };
        expire_riders(&mut reads.waiting);
        if let Some((_, riders)) = reads.in_flight.as_mut() {
            expire_riders(riders);
            // A round whose riders all gave up is abandoned, so the next
            // one can start (its answer, if it ever comes, is ignored).
            if riders.is_empty() {
                reads.in_flight = None;
                reads.in_flight_since = None;
            }
        }
        for (_, riders) in reads.answered.iter_mut() {
            expire_riders(riders);
        }
        reads.answered.retain(|(_, r)| !r.is_empty());
    }

    /// Fails everything waiting (the member is stopping, or its log failed).
    pub fn fail_all(&self, err: Error) {
        let status: Status = err.into();
        for (_, w) in self.waiters.borrow_mut().by_id.drain() {
            let _ = w.reply.send(Err(status.clone()));
        }
        self.parked.borrow_mut().clear();
        self.parked_conf_changes.borrow_mut().clear();
        let mut reads = self.reads.borrow_mut();
        let mut riders: Vec<(ReadReply, Instant)> = std::mem::take(&mut reads.waiting);
        if let Some((_, r)) = reads.in_flight.take() {
            riders.extend(r);
        }
        reads.in_flight_since = None;
        for (_, r) in reads.answered.drain(..) {
            riders.extend(r);
        }
        for (tx, _) in riders {
            let _ = tx.send(Err(status.clone()));
        }
    }

    /// Proposals waiting to apply (for a stop to drain).
    pub fn waiting_proposals(&self) -> usize {
        self.waiters.borrow().by_id.len()
    }

    /// Whether Raft holds committed entries not yet handed out, or the
    /// inbox holds work.
    pub fn has_work(&self) -> bool {
        let inbox = self.inbox.borrow();
        !inbox.proposals.is_empty() || !inbox.messages.is_empty() || self.node.borrow().has_ready()
    }

    /// On a leader: the voter (not us) whose log matches ours furthest.
    pub fn most_caught_up_voter(&self) -> Option<NodeId> {
        let st = self.node.borrow().status();
        st.progress
            .iter()
            .filter(|p| p.id != st.id && !p.is_learner && st.conf_state.voters.contains(&p.id))
            .max_by_key(|p| p.matched)
            .map(|p| p.id)
    }

    /// The membership as Raft sees it now.
    pub fn conf_state(&self) -> ConfState {
        self.node.borrow().status().conf_state
    }
}

/// Deliberate bugs for the fault tests to catch (debug builds only, set by
/// `BASALT_TEST_MUTATION`): each makes linearizable reads unsafe in a way
/// a correct history checker must notice under faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Every member answers linearizable reads from its own applied state
    /// (`stale-follower-reads`).
    StaleFollowerReads,
    /// A leader answers them without confirming it still leads
    /// (`leader-local-reads`): a deposed, partitioned leader serves stale
    /// data.
    LeaderLocalReads,
}

/// The mutation this process runs with, if any (always none in release
/// builds).
pub fn test_mutation() -> Option<Mutation> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static MUTATION: std::sync::OnceLock<Option<Mutation>> = std::sync::OnceLock::new();
    *MUTATION.get_or_init(|| {
        let m = match std::env::var("BASALT_TEST_MUTATION").ok()?.as_str() {
            "stale-follower-reads" => Mutation::StaleFollowerReads,
            "leader-local-reads" => Mutation::LeaderLocalReads,
            other => {
                tracing::error!(mutation = other, "unknown BASALT_TEST_MUTATION ignored");
                return None;
            }
        };
        tracing::warn!(
            ?m,
            "BASALT_TEST_MUTATION: linearizable reads are deliberately unsafe"
        );
        Some(m)
    })
}

/// Test hook (debug builds only): `BASALT_TEST_WAL_FAULT=fail-sync-at:N`
/// makes the fdatasync of the member's N-th log write fail, as a dying
/// disk would.
fn test_wal_fault_at() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        std::env::var("BASALT_TEST_WAL_FAULT")
            .ok()?
            .strip_prefix("fail-sync-at:")?
            .parse()
            .ok()
    })
}

/// The answer channel of one proposal.
pub struct ProposalReply(oneshot::Sender<Result<Reply, Status>>);

impl ProposalReply {
    pub fn send(self, result: Result<Reply, Status>) {
        let _ = self.0.send(result);
    }
}
