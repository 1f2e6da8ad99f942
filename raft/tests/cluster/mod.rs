//! A simulated cluster of `RawNode`s over a faulty in-memory network, with
//! Raft's safety properties checked after every step.
//!
//! Everything is driven by one seeded PRNG, so a seed replays exactly.
//! Nodes persist `Ready`s into their `MemStorage` before sending; a crash
//! drops the `RawNode` and keeps only that storage.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use basalt_raft::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfState, Config, Entry,
    EntryType, MemStorage, Message, MessageType, NodeId, RawNode, ReadOnlyOption, StateRole,
    Storage,
};

/// SplitMix64: tiny, fast, and fully determined by its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_0FBA_5A17)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len() as u64) as usize])
        }
    }
}

/// Knobs of the network and of every node's Raft config.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_msgs: usize,
    pub max_inflight_bytes: u64,
    pub max_size_per_msg: u64,
    /// Network faults, per mille of messages.
    pub drop_per_mille: u64,
    pub dup_per_mille: u64,
    /// Messages are delayed by 0..=max_delay ticks (reordering included).
    pub max_delay: u64,
    /// Per mille of messages held back much longer (up to `long_delay`
    /// ticks), so stale messages from old terms arrive late.
    pub long_delay_per_mille: u64,
    pub long_delay: u64,
    /// Per mille of ticks on which the simulation makes a random node
    /// campaign early (the simulation driver reads it; nodes do not).
    pub election_churn_per_mille: u64,
    /// Serve reads from the leader lease instead of a heartbeat round.
    pub lease_reads: bool,
    /// basalt's leader pipelining: a leader whose Ready changes neither
    /// term nor vote sends its messages before persisting (per mille of
    /// such Readies), as the server does, while its fsync is in flight.
    pub leader_sends_first_per_mille: u64,
    /// Per mille of those Readies after which the leader crashes before
    /// its persist completes: the messages went out, its disk misses the
    /// Ready.
    pub crash_mid_persist_per_mille: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            election_tick: 10,
            heartbeat_tick: 2,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 4,
            max_inflight_bytes: 0,
            max_size_per_msg: 256,
            drop_per_mille: 0,
            dup_per_mille: 0,
            max_delay: 0,
            long_delay_per_mille: 0,
            long_delay: 0,
            election_churn_per_mille: 0,
            lease_reads: false,
            leader_sends_first_per_mille: 0,
            crash_mid_persist_per_mille: 0,
        }
    }
}

/// The application side of one member: its Raft node (absent while
/// crashed) and its state machine, which is the list of applied payloads.
pub struct SimNode {
    pub raw: Option<RawNode<MemStorage>>,
    /// What survives a crash: exactly what was persisted.
    pub disk: MemStorage,
    pub applied_index: u64,
    pub state: Vec<Vec<u8>>,
    pub conf_state: ConfState,
    pub restarts: u64,
}

/// (index, term, term of the previous entry if known, type, data).
type PersistedRecord = (u64, u64, Option<u64>, EntryType, Vec<u8>);

struct InFlight {
    deliver_at: u64,
    seq: u64,
    msg: Message,
}

/// A violated property, with the seed's event trace for replaying.
#[derive(Debug)]
pub struct Violation(pub String);

pub struct Cluster {
    pub opts: SimOptions,
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub now: u64,
    pub rng: Rng,
    net: Vec<InFlight>,
    seq: u64,
    /// Directed links that drop everything (partitions, one-way included).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    // --- what the checker knows ---
    leader_of_term: HashMap<u64, NodeId>,
    /// Every (index, term) seen in any persisted log -> (previous term, data).
    log_records: HashMap<(u64, u64), (u64, EntryType, Vec<u8>)>,
    /// The one history every state machine must follow: index -> entry.
    pub history: BTreeMap<u64, (u64, EntryType, Vec<u8>)>,
    /// Highest commit index any node has ever reported.
    pub max_committed: u64,
    /// Outstanding reads: ctx -> (node, commit index when the read began).
    reads: HashMap<Vec<u8>, (NodeId, u64)>,
    pub reads_served: u64,
    /// Leaders that crashed with their messages sent, before their persist.
    pub mid_persist_crashes: u64,
    pub next_payload: u64,
    pub trace: Vec<String>,
    pub keep_trace: bool,
    /// When set, a readable line per delivered message and state change
    /// (what the scenario tests print).
    pub events: Option<Vec<String>>,
}

fn node_config(opts: &SimOptions, id: NodeId, seed: u64, applied: u64) -> Config {
    let mut c = Config::new(id);
    c.election_tick = opts.election_tick;
    c.heartbeat_tick = opts.heartbeat_tick;
    c.pre_vote = opts.pre_vote;
    c.check_quorum = opts.check_quorum;
    c.max_inflight_msgs = opts.max_inflight_msgs;
    c.max_inflight_bytes = opts.max_inflight_bytes;
    c.max_size_per_msg = opts.max_size_per_msg;
    c.read_only_option = if opts.lease_reads {
        ReadOnlyOption::LeaseBased
    } else {
        ReadOnlyOption::Safe
    };
    c.applied = applied;
    c.seed = seed;
    c
}

fn decode_state(data: &[u8]) -> Vec<Vec<u8>> {
    // Snapshot data: a sequence of (u32 length, bytes).
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= data.len() {
        let n = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
        out.push(data[i + 4..i + 4 + n].to_vec());
        i += 4 + n;
    }
    out
}

fn encode_state(state: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in state {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

impl Cluster {
    /// A cluster whose initial voters are `voters`.
    pub fn new(voters: &[NodeId], opts: SimOptions, seed: u64) -> Cluster {
        let mut c = Cluster {
            opts,
            nodes: BTreeMap::new(),
            now: 0,
            rng: Rng::new(seed),
            net: Vec::new(),
            seq: 0,
            cut: BTreeSet::new(),
            leader_of_term: HashMap::new(),
            log_records: HashMap::new(),
            history: BTreeMap::new(),
            max_committed: 0,
            reads: HashMap::new(),
            reads_served: 0,
            mid_persist_crashes: 0,
            next_payload: 1,
            trace: Vec::new(),
            keep_trace: true,
            events: None,
        };
        for &id in voters {
            c.add_node(id, MemStorage::new_with_voters(voters));
        }
        c
    }

    /// Starts a member from `disk` (empty for a node joining later).
    pub fn add_node(&mut self, id: NodeId, disk: MemStorage) {
        let conf_state = disk.initial_state().map(|(_, cs)| cs).unwrap_or_default();
        let snap_index = disk.snapshot().map(|s| s.metadata.index).unwrap_or(0);
        let seed = self.rng.next_u64();
        let raw = RawNode::new(node_config(&self.opts, id, seed, snap_index), disk.clone())
            .expect("start node");
        self.nodes.insert(
            id,
            SimNode {
                raw: Some(raw),
                disk,
                applied_index: snap_index,
                state: Vec::new(),
                conf_state,
                restarts: 0,
            },
        );
    }

    pub fn log(&mut self, line: impl FnOnce() -> String) {
        if self.keep_trace {
            let l = line();
            self.trace.push(format!("[t={}] {l}", self.now));
        }
    }

    pub fn trace_tail(&self, n: usize) -> String {
        let mut s = String::new();
        for l in self
            .trace
            .iter()
            .rev()
            .take(n)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = writeln!(s, "{l}");
        }
        s
    }

    pub fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raw.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn leader(&self) -> Option<NodeId> {
        // The leader with the highest term, if several believe they lead
        // (an old one may not have heard of the new term yet).
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raw.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.role() == StateRole::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    pub fn raw(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raw.as_mut())
            .expect("node is live")
    }

    /// Whether `id` runs (a crash in the middle of handling a Ready can
    /// take a node down under its caller).
    pub fn is_live(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raw.is_some())
    }

    pub fn crash(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(raw) = n.raw.take() {
            n.disk = raw.storage().clone();
        }
        self.reads.retain(|_, (node, _)| *node != id);
        self.log(|| format!("crash {id}"));
    }

    /// Restarts a crashed node from its disk; its state machine restarts
    /// from the disk's snapshot and replays the log from there.
    pub fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let opts = self.opts.clone();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.raw.is_some() {
            return;
        }
        let snap = n.disk.snapshot().expect("mem snapshot");
        n.state = decode_state(&snap.data);
        n.applied_index = snap.metadata.index;
        n.conf_state = n.disk.initial_state().expect("mem state").1;
        n.restarts += 1;
        let raw = RawNode::new(
            node_config(&opts, id, seed, snap.metadata.index),
            n.disk.clone(),
        )
        .expect("restart node");
        n.raw = Some(raw);
        self.log(|| format!("restart {id}"));
    }

    fn send(&mut self, msg: Message) {
        let (from, to) = (msg.from, msg.to);
        let mut copies = 1;
        if self.rng.chance(self.opts.drop_per_mille) {
            copies = 0;
        } else if self.rng.chance(self.opts.dup_per_mille) {
            copies = 2;
        }
        if copies == 0 {
            self.on_dropped(&msg);
        }
        for _ in 0..copies {
            let mut delay = self.rng.below(self.opts.max_delay + 1);
            if self.rng.chance(self.opts.long_delay_per_mille) {
                delay += self.rng.below(self.opts.long_delay + 1);
            }
            self.seq += 1;
            self.net.push(InFlight {
                deliver_at: self.now + delay,
                seq: self.seq,
                msg: msg.clone(),
            });
        }
        let _ = (from, to);
    }

    /// The transport learns a snapshot did not arrive; tell the sender, as
    /// a real stream would.
    fn on_dropped(&mut self, msg: &Message) {
        if msg.msg_type == MessageType::Snapshot {
            if let Some(raw) = self.nodes.get_mut(&msg.from).and_then(|n| n.raw.as_mut()) {
                raw.report_snapshot(msg.to, false);
            }
        }
    }

    /// Removes and returns the in-flight messages matching `keep`, oldest
    /// first (at most `limit`).
    pub fn take_in_flight(
        &mut self,
        limit: usize,
        matches: impl Fn(&Message) -> bool,
    ) -> Vec<Message> {
        self.net.sort_by_key(|f| (f.deliver_at, f.seq));
        let mut taken = Vec::new();
        let mut rest = Vec::new();
        for f in self.net.drain(..) {
            if taken.len() < limit && matches(&f.msg) {
                taken.push(f.msg);
            } else {
                rest.push(f);
            }
        }
        self.net = rest;
        taken
    }

    pub fn in_flight(&self) -> usize {
        self.net.len()
    }

    /// Delivers every message due by now, in (time, seq) order.
    pub fn deliver_due(&mut self) -> Result<usize, Violation> {
        let mut due: Vec<InFlight> = Vec::new();
        let mut rest = Vec::new();
        for f in self.net.drain(..) {
            if f.deliver_at <= self.now {
                due.push(f);
            } else {
                rest.push(f);
            }
        }
        self.net = rest;
        due.sort_by_key(|f| (f.deliver_at, f.seq));
        let n = due.len();
        for f in due {
            self.deliver(f.msg)?;
        }
        Ok(n)
    }

    pub fn deliver(&mut self, msg: Message) -> Result<(), Violation> {
        let (from, to) = (msg.from, msg.to);
        let blocked = self.cut.contains(&(from, to));
        let live = self.nodes.get(&to).is_some_and(|n| n.raw.is_some());
        if blocked || !live {
            self.on_dropped(&msg);
            return Ok(());
        }
        if let Some(ev) = self.events.as_mut() {
            ev.push(format_message(&msg));
        }
        let is_snap = msg.msg_type == MessageType::Snapshot;
        self.log(|| {
            format!(
                "deliver {:?} {from}->{to} term {} idx {} logterm {} commit {} ents {} reject {} hint {}",
                msg.msg_type,
                msg.term,
                msg.index,
                msg.log_term,
                msg.commit,
                msg.entries.len(),
                msg.reject,
                msg.reject_hint
            )
        });
        // Errors from step are dropped requests (no leader etc.): fine.
        if !self.is_live(to) {
            return Ok(());
        }
        let _ = self.raw(to).step(msg);
        if is_snap {
            if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                raw.report_snapshot(to, true);
            }
        }
        self.process(to)
    }

    /// Handles every pending `Ready` of every live node.
    pub fn process_all(&mut self) -> Result<(), Violation> {
        for id in self.live_ids() {
            self.process(id)?;
        }
        Ok(())
    }

    /// Persists, sends and applies `id`'s Ready, checking invariants.
    pub fn process(&mut self, id: NodeId) -> Result<(), Violation> {
        loop {
            let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) else {
                return Ok(());
            };
            if !raw.has_ready() {
                return Ok(());
            }
            let mut rd = raw.ready();
            // 0. basalt's leader pipelining: its messages may go before
            // its own persist (never those of a Ready that changes term or
            // vote), and a crash may then cut the persist short.
            let persisted = raw.storage().hard_state();
            let keeps_vote = rd
                .hard_state
                .is_none_or(|hs| hs.term == persisted.term && hs.vote == persisted.vote);
            // Not for a leader that commits on its own (its configuration
            // is itself alone): its commit would count its unpersisted log.
            let cs = raw.status().conf_state;
            let alone = |ids: &[NodeId]| ids.iter().all(|&v| v == id);
            let commits_alone = alone(&cs.voters) && alone(&cs.voters_outgoing);
            let sends_first = raw.role() == StateRole::Leader
                && keeps_vote
                && !commits_alone
                && rd.snapshot.is_none()
                && self.opts.leader_sends_first_per_mille > 0
                && self.rng.chance(self.opts.leader_sends_first_per_mille);
            if sends_first {
                for m in std::mem::take(&mut rd.messages) {
                    self.send(m);
                }
                if self.opts.crash_mid_persist_per_mille > 0
                    && self.rng.chance(self.opts.crash_mid_persist_per_mille)
                {
                    self.log(|| {
                        format!("n{id} crashes with its messages sent, before its persist")
                    });
                    self.mid_persist_crashes += 1;
                    self.crash(id);
                    return Ok(());
                }
            }
            let raw = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.raw.as_mut())
                .expect("live");
            // 1. persist
            if let Some(s) = &rd.snapshot {
                raw.storage_mut()
                    .apply_snapshot(s.clone())
                    .map_err(|e| Violation(format!("apply snapshot: {e}")))?;
            }
            let mut records = Vec::with_capacity(rd.entries.len());
            for e in &rd.entries {
                let prev = if e.index > 1 {
                    raw.log_term(e.index - 1).ok()
                } else {
                    Some(0)
                };
                records.push((e.index, e.term, prev, e.entry_type, e.data.clone()));
            }
            raw.storage_mut()
                .append(&rd.entries)
                .map_err(|e| Violation(format!("append: {e}")))?;
            if let Some(hs) = rd.hard_state {
                raw.storage_mut().set_hard_state(hs);
            }
            let role = raw.role();
            let term = raw.term();
            let committed = raw.committed();
            if let (Some(ss), Some(ev)) = (rd.soft_state, self.events.as_mut()) {
                ev.push(format!(
                    "n{id} is {:?} at term {term}, leader {}",
                    ss.role, ss.leader_id
                ));
            }
            self.check_log_matching(id, records)?;
            if role == StateRole::Leader {
                self.check_leader(id, term)?;
            }
            self.max_committed = self.max_committed.max(committed);
            // 2. send
            for m in rd.messages {
                self.send(m);
            }
            // 3. apply
            if let Some(s) = rd.snapshot {
                let n = self.nodes.get_mut(&id).expect("node");
                n.state = decode_state(&s.data);
                n.applied_index = s.metadata.index;
                n.conf_state = s.metadata.conf_state.clone();
                let st = n.state.clone();
                self.check_snapshot_state(id, s.metadata.index, &st)?;
            }
            for e in rd.committed_entries {
                self.apply(id, e)?;
            }
            // 4. reads
            for rs in rd.read_states {
                if let Some(ev) = self.events.as_mut() {
                    ev.push(format!(
                        "n{id} read {:?} may be served at index {}",
                        show(&rs.request_ctx),
                        rs.index
                    ));
                }
                self.check_read(id, rs.index, &rs.request_ctx)?;
            }
            // 5. advance
            self.raw(id)
                .advance()
                .map_err(|e| Violation(format!("advance: {e}")))?;
        }
    }

    fn apply(&mut self, id: NodeId, e: Entry) -> Result<(), Violation> {
        let n = self.nodes.get_mut(&id).expect("node");
        if e.index != n.applied_index + 1 {
            return Err(Violation(format!(
                "node {id} applied index {} after {} (gap or repeat)",
                e.index, n.applied_index
            )));
        }
        n.applied_index = e.index;
        match self.history.get(&e.index) {
            Some((t, _, d)) if *t != e.term || *d != e.data => {
                return Err(Violation(format!(
                    "state machine safety: node {id} applied ({}, t{}) but history has t{t} at that index",
                    e.index, e.term
                )));
            }
            Some(_) => {}
            None => {
                self.history
                    .insert(e.index, (e.term, e.entry_type, e.data.clone()));
            }
        }
        match e.entry_type {
            EntryType::Normal => {
                if !e.data.is_empty() {
                    n.state.push(e.data);
                }
            }
            EntryType::ConfChange => {
                let cc = ConfChange::decode(&e.data)
                    .map_err(|err| Violation(format!("decode cc: {err}")))?;
                // An invalid change is invalid on every member alike.
                let raw = n.raw.as_mut().expect("live");
                if let Ok(cs) = raw.apply_conf_change(&cc) {
                    n.conf_state = cs;
                }
                let cs = n.conf_state.clone();
                if let Some(ev) = self.events.as_mut() {
                    ev.push(format!(
                        "n{id} applied conf change at {}: {}",
                        e.index,
                        show_conf(&cs)
                    ));
                }
                self.log(|| format!("node {id} applied conf change at {} -> {cs:?}", e.index));
            }
        }
        Ok(())
    }

    fn check_log_matching(
        &mut self,
        id: NodeId,
        records: Vec<PersistedRecord>,
    ) -> Result<(), Violation> {
        for (index, term, prev, ty, data) in records {
            let Some(prev) = prev else { continue };
            match self.log_records.get(&(index, term)) {
                Some((p, t, d)) if *p != prev || *t != ty || *d != data => {
                    return Err(Violation(format!(
                        "log matching: node {id} persisted ({index}, t{term}) with prev term {prev}, \
                         another log has prev term {p} / different data"
                    )));
                }
                Some(_) => {}
                None => {
                    self.log_records.insert((index, term), (prev, ty, data));
                }
            }
        }
        Ok(())
    }

    fn check_leader(&mut self, id: NodeId, term: u64) -> Result<(), Violation> {
        match self.leader_of_term.get(&term) {
            Some(&other) if other != id => {
                return Err(Violation(format!(
                    "election safety: nodes {other} and {id} both lead term {term}"
                )));
            }
            Some(_) => return Ok(()),
            None => {
                self.leader_of_term.insert(term, id);
                self.log(|| format!("node {id} leads term {term}"));
            }
        }
        // Leader completeness: a new leader holds every entry applied anywhere.
        let raw = self
            .nodes
            .get(&id)
            .and_then(|n| n.raw.as_ref())
            .expect("live");
        let status = raw.status();
        for (&index, (t, _, _)) in &self.history {
            if index < status.first_index {
                continue;
            }
            match raw.log_term(index) {
                Ok(lt) if lt == *t => {}
                other => {
                    return Err(Violation(format!(
                        "leader completeness: leader {id} of term {term} has {other:?} at committed index \
                         {index} (term {t})"
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_snapshot_state(
        &self,
        id: NodeId,
        index: u64,
        state: &[Vec<u8>],
    ) -> Result<(), Violation> {
        // The snapshot's state must be exactly the history's payloads up to index.
        let expected: Vec<&Vec<u8>> = self
            .history
            .range(..=index)
            .filter(|(_, (_, ty, d))| *ty == EntryType::Normal && !d.is_empty())
            .map(|(_, (_, _, d))| d)
            .collect();
        if index < 2 {
            return Ok(());
        }
        let covered = self.history.range(2..=index).count() as u64 + 1;
        // Only comparable when the history is known up to that index (the
        // bootstrap snapshot's index 1 is never applied, so count from 2).
        if covered == index {
            let got: Vec<&Vec<u8>> = state.iter().collect();
            if got != expected {
                return Err(Violation(format!(
                    "snapshot installed on node {id} at {index} diverges from history"
                )));
            }
        }
        Ok(())
    }

    /// Starts a linearizable read on `id`; it must see everything committed
    /// anywhere by now.
    pub fn start_read(&mut self, id: NodeId) {
        let ctx = format!("read-{}", self.next_payload).into_bytes();
        self.next_payload += 1;
        let required = self.max_committed;
        if !self.is_live(id) {
            return;
        }
        if self.raw(id).read_index(ctx.clone()).is_ok() {
            self.reads.insert(ctx, (id, required));
        }
        let _ = self.process(id);
    }

    fn check_read(&mut self, id: NodeId, index: u64, ctx: &[u8]) -> Result<(), Violation> {
        let Some((node, required)) = self.reads.remove(ctx) else {
            return Ok(());
        };
        if node != id {
            return Err(Violation(format!(
                "read {ctx:?} answered on node {id}, asked on {node}"
            )));
        }
        if index < required {
            return Err(Violation(format!(
                "linearizability: read on node {id} got index {index} but {required} was committed when it began"
            )));
        }
        self.reads_served += 1;
        Ok(())
    }

    /// Proposes a fresh 8-byte payload on `id`; returns it if accepted.
    pub fn propose(&mut self, id: NodeId) -> Option<Vec<u8>> {
        let data = self.next_payload.to_le_bytes().to_vec();
        self.next_payload += 1;
        if !self.is_live(id) {
            return None;
        }
        let ok = self.raw(id).propose(data.clone()).is_ok();
        let _ = self.process(id);
        ok.then_some(data)
    }

    pub fn propose_conf_change(&mut self, id: NodeId, cc: ConfChange) -> bool {
        if !self.is_live(id) {
            return false;
        }
        let ok = self.raw(id).propose_conf_change(&cc).is_ok();
        self.log(|| format!("propose conf change on {id}: {cc:?} -> {ok}"));
        let _ = self.process(id);
        ok
    }

    /// Snapshots `id`'s applied state and compacts its log below it,
    /// keeping `keep` entries for slow followers.
    pub fn compact(&mut self, id: NodeId, keep: u64) -> Result<(), Violation> {
        let Some(n) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(raw) = n.raw.as_mut() else {
            return Ok(());
        };
        let applied = n.applied_index;
        let snap_index = raw
            .storage()
            .snapshot()
            .map(|s| s.metadata.index)
            .unwrap_or(0);
        if applied <= snap_index + keep {
            return Ok(());
        }
        let data = encode_state(&n.state);
        let cs = n.conf_state.clone();
        raw.storage_mut()
            .create_snapshot(applied, cs, data)
            .map_err(|e| Violation(format!("snapshot: {e}")))?;
        raw.storage_mut()
            .compact(applied - keep)
            .map_err(|e| Violation(format!("compact: {e}")))?;
        self.log(|| {
            format!(
                "node {id} snapshot at {applied}, compacted to {}",
                applied - keep
            )
        });
        Ok(())
    }

    /// One clock tick for every live node, then deliveries until quiet.
    pub fn tick(&mut self, skip_per_mille: u64) -> Result<(), Violation> {
        self.now += 1;
        for id in self.live_ids() {
            if skip_per_mille > 0 && self.rng.chance(skip_per_mille) {
                continue; // models a slow clock on that node
            }
            if !self.is_live(id) {
                continue;
            }
            self.raw(id).tick();
            self.process(id)?;
        }
        self.settle()
    }

    /// Delivers due messages until none are left for this instant.
    pub fn settle(&mut self) -> Result<(), Violation> {
        for _ in 0..1000 {
            if self.deliver_due()? == 0 {
                return Ok(());
            }
        }
        Err(Violation(
            "network did not settle within 1000 rounds".into(),
        ))
    }

    /// Members (voters and learners) according to the current leader, or
    /// to the union of live nodes' views if there is none.
    pub fn members_of(&self, id: NodeId) -> BTreeSet<NodeId> {
        let cs = &self.nodes[&id].conf_state;
        cs.voters
            .iter()
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners)
            .chain(&cs.learners_next)
            .copied()
            .collect()
    }

    pub fn voters_of(&self, id: NodeId) -> BTreeSet<NodeId> {
        let cs = &self.nodes[&id].conf_state;
        cs.voters
            .iter()
            .chain(&cs.voters_outgoing)
            .copied()
            .collect()
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.opts.drop_per_mille = 0;
        self.opts.dup_per_mille = 0;
        self.opts.max_delay = self.opts.max_delay.min(1);
        self.opts.long_delay_per_mille = 0;
        self.opts.crash_mid_persist_per_mille = 0;
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            if self.nodes[&id].raw.is_none() {
                self.restart(id);
            }
        }
        self.log(|| "heal".to_string());
    }

    /// Isolates `group` from everybody else, both ways.
    pub fn partition(&mut self, group: &[NodeId]) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &a in group {
            for &b in &all {
                if !group.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }
}

/// A multi-member change as one joint `ConfChange`.
pub fn joint(changes: &[(ConfChangeType, NodeId)]) -> ConfChange {
    ConfChange {
        transition: ConfChangeTransition::Auto,
        changes: changes
            .iter()
            .map(|&(change_type, node_id)| ConfChangeSingle {
                change_type,
                node_id,
            })
            .collect(),
        context: Vec::new(),
    }
}

/// Payload bytes as text when printable, else hex.
pub fn show(data: &[u8]) -> String {
    if data.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(data).into_owned()
    } else {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn ids(v: &[NodeId]) -> String {
    let s: Vec<String> = v.iter().map(|i| i.to_string()).collect();
    format!("({})", s.join(" "))
}

pub fn show_conf(cs: &ConfState) -> String {
    let mut s = format!("voters={}", ids(&cs.voters));
    if !cs.voters_outgoing.is_empty() {
        s.push_str(&format!("&&{}", ids(&cs.voters_outgoing)));
    }
    if !cs.learners.is_empty() {
        s.push_str(&format!(" learners={}", ids(&cs.learners)));
    }
    if !cs.learners_next.is_empty() {
        s.push_str(&format!(" learners_next={}", ids(&cs.learners_next)));
    }
    if cs.auto_leave {
        s.push_str(" autoleave");
    }
    s
}

fn show_entry(e: &Entry) -> String {
    match e.entry_type {
        EntryType::Normal if e.data.is_empty() => format!("{}/{}", e.index, e.term),
        EntryType::Normal => format!("{}/{} {}", e.index, e.term, show(&e.data)),
        EntryType::ConfChange => match ConfChange::decode(&e.data) {
            Ok(cc) if cc.is_leave_joint() => format!("{}/{} conf:leave-joint", e.index, e.term),
            Ok(cc) => {
                let parts: Vec<String> = cc
                    .changes
                    .iter()
                    .map(|c| match c.change_type {
                        ConfChangeType::AddNode => format!("v{}", c.node_id),
                        ConfChangeType::AddLearner => format!("l{}", c.node_id),
                        ConfChangeType::RemoveNode => format!("r{}", c.node_id),
                    })
                    .collect();
                format!("{}/{} conf:{}", e.index, e.term, parts.join(","))
            }
            Err(_) => format!("{}/{} conf:?", e.index, e.term),
        },
    }
}

/// One line per message, e.g. `1->2 Append t2 prev=3/1 commit=3 [4/2 x]`.
pub fn format_message(m: &Message) -> String {
    let head = format!("{}->{} {:?} t{}", m.from, m.to, m.msg_type, m.term);
    let ctx = if m.context.is_empty() {
        String::new()
    } else {
        format!(" ctx={}", show(&m.context))
    };
    match m.msg_type {
        MessageType::Append => {
            let ents: Vec<String> = m.entries.iter().map(show_entry).collect();
            format!(
                "{head} prev={}/{} commit={} [{}]",
                m.index,
                m.log_term,
                m.commit,
                ents.join(", ")
            )
        }
        MessageType::AppendResponse if m.reject => {
            format!(
                "{head} reject index={} hint={}/{}",
                m.index, m.reject_hint, m.log_term
            )
        }
        MessageType::AppendResponse => format!("{head} index={}", m.index),
        MessageType::Vote | MessageType::PreVote => {
            format!("{head} last={}/{}{ctx}", m.index, m.log_term)
        }
        MessageType::VoteResponse | MessageType::PreVoteResponse => {
            if m.reject {
                format!("{head} rejected")
            } else {
                format!("{head} granted")
            }
        }
        MessageType::Heartbeat => format!("{head} commit={}{ctx}", m.commit),
        MessageType::HeartbeatResponse => format!("{head}{ctx}"),
        MessageType::Snapshot => match &m.snapshot {
            Some(s) => format!(
                "{head} snapshot={}/{} {}",
                s.metadata.index,
                s.metadata.term,
                show_conf(&s.metadata.conf_state)
            ),
            None => format!("{head} snapshot=none"),
        },
        MessageType::Propose => {
            let ents: Vec<String> = m.entries.iter().map(show_entry).collect();
            format!("{head} [{}]", ents.join(", "))
        }
        MessageType::ReadIndex => format!("{head}{ctx}"),
        MessageType::ReadIndexResponse => format!("{head} index={}{ctx}", m.index),
        MessageType::TransferLeader | MessageType::TimeoutNow => head,
    }
}
