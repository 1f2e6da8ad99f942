//! The search for a linearization of one key's operations: Wing & Gong's
//! backtracking with Lowe's just-in-time order and a memo of the states
//! seen, the way Porcupine does it.
//!
//! Calls and returns sit in one doubly linked list in time order. From the
//! front, every call before the first return is an operation that may be
//! linearized next (none of the pending operations returned before it was
//! called); reaching a return means the operation returning there had to be
//! linearized by now, so the search backtracks. Linearizing an operation
//! unlinks its call and return, and backtracking links them back (dancing
//! links), so each step costs what the frontier holds, not the history.
//!
//! Three rules, each only cutting branches that cannot succeed or that
//! another branch covers, keep the search close to linear on etcd
//! histories:
//!
//! - Revision order ([`RevisionOrder`]): definite operations are taken in
//!   the order of their revisions (a read after the write of its header
//!   revision). Any other order fails in the model anyway, later.
//! - Indeterminate operations have a call and no return: they may be
//!   linearized whenever called, or never. The search is done when every
//!   definite operation is linearized; indeterminate ones left over never
//!   took effect. At each point definite candidates are tried first; an
//!   indeterminate operation is tried only if a candidate could use what
//!   it writes ([`Wants`]), and of several with the same effect only the
//!   first, since which one is used is immaterial.
//! - The memo holds (set of operations linearized, state) pairs already
//!   explored. A pair is also pruned when an explored one has the same
//!   state and the same definite operations, with fewer indeterminate ones:
//!   an indeterminate operation not yet linearized can only help, so having
//!   used more of them is never better.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use super::candidates::{Effect, RevisionOrder, Wants};
use super::model::{KeyOp, ModRevision, Model, State};

const NIL: u32 = u32::MAX;
/// Steps between two looks at the clock.
const CLOCK_EVERY: u64 = 1024;

/// When a search gives up and answers "unknown".
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    pub max_steps: u64,
    pub max_memo_bytes: usize,
    pub deadline: Instant,
}

/// The longest linearization found: operation indices in order, and the
/// state after them.
#[derive(Clone, Debug)]
pub(super) struct Partial {
    pub order: Vec<u32>,
    pub state: State,
}

#[derive(Debug)]
pub(super) enum Found {
    Linearizable,
    Illegal(Partial),
    /// The budget ran out; why, and how far it got.
    Unknown(Partial, String),
}

#[derive(Debug)]
pub(super) struct Searched {
    pub found: Found,
    pub steps: u64,
}

/// Where the search stands at the current node.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At an entry of the timeline, trying definite operations.
    Definite(u32),
    /// At an index of `alternatives`, trying indeterminate operations.
    Indeterminate(usize),
}

/// A linearized operation, and how to resume when it is taken back.
struct Frame {
    op: u32,
    before: State,
    /// `order.next` before it.
    next: usize,
}

/// Searches a linearization of `ops` (one key's, ordered by call time).
pub(super) fn search(ops: &[KeyOp], model: &Model<'_>, budget: &Budget) -> Searched {
    Search::new(ops, model).run(budget)
}

struct Search<'a> {
    ops: &'a [KeyOp],
    model: &'a Model<'a>,
    timeline: Timeline,
    /// What the candidates at the current node could use, and the
    /// indeterminate operations worth trying there (one per effect);
    /// filled when its indeterminate phase starts.
    wants: Wants,
    alternatives: Vec<u32>,
    frontier: Vec<u32>,
    followed: Vec<bool>,
    effects: HashSet<Effect>,
    memo: Memo,
    linearized: Vec<u64>,
    /// Zobrist hash of the definite operations in `linearized`.
    definite_hash: u64,
    definite: usize,
    pending_definite: usize,
    /// Definite operations by [`position`]; all before `next` are
    /// linearized, and only one at `next`'s position may come now.
    order: RevisionOrder,
    state: State,
    stack: Vec<Frame>,
    best: Option<(usize, Partial)>,
    steps: u64,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp], model: &'a Model<'a>) -> Self {
        assert!(
            ops.len() < (NIL / 2) as usize,
            "too many operations on one key"
        );
        let words = ops.len().div_ceil(64).max(1);
        let definite = ops.iter().filter(|op| op.is_definite()).count();
        Search {
            ops,
            model,
            timeline: Timeline::new(ops),
            memo: Memo::new(ops, words),
            linearized: vec![0; words],
            definite_hash: 0,
            definite,
            pending_definite: definite,
            order: RevisionOrder::new(ops),
            wants: Wants::default(),
            alternatives: Vec::new(),
            frontier: Vec::new(),
            followed: Vec::new(),
            effects: HashSet::new(),
            state: State::INITIAL,
            stack: Vec::new(),
            best: None,
            steps: 0,
        }
    }

    fn run(mut self, budget: &Budget) -> Searched {
        let mut cursor = self.front();
        loop {
            if self.pending_definite == 0 {
                return Searched {
                    found: Found::Linearizable,
                    steps: self.steps,
                };
            }
            let (op, otherwise) = match cursor {
                Cursor::Definite(entry) if entry == NIL || Timeline::is_return(entry) => {
                    self.gather_alternatives();
                    cursor = Cursor::Indeterminate(0);
                    continue;
                }
                Cursor::Definite(entry) => {
                    let next = Cursor::Definite(self.timeline.next[entry as usize]);
                    let op = Timeline::op(entry);
                    if !self.ops[op as usize].is_definite() {
                        cursor = next;
                        continue;
                    }
                    (op, next)
                }
                Cursor::Indeterminate(index) => match self.alternatives.get(index) {
                    Some(&op) => (op, Cursor::Indeterminate(index + 1)),
                    None => {
                        // Nothing can come next here.
                        self.remember_dead_end();
                        match self.backtrack() {
                            Some(resume) => cursor = resume,
                            None => return self.answer(Found::Illegal),
                        }
                        continue;
                    }
                },
            };
            if let Some(why) = self.over_budget(budget) {
                self.remember_dead_end();
                return self.answer(|best| Found::Unknown(best, why));
            }
            cursor = if self.try_linearize(op) {
                self.front()
            } else {
                otherwise
            };
        }
    }

    /// Fills `wants` and `alternatives` for the current node. Wanted is
    /// what the definite candidates that revision order allows now could
    /// use, and, as they may follow an indeterminate write, what wanted
    /// indeterminate compare-and-puts could use. Of indeterminate
    /// operations with the same effect, only the first is an alternative:
    /// both are callable from here on, so which one is used is immaterial.
    fn gather_alternatives(&mut self) {
        self.wants.clear();
        self.alternatives.clear();
        self.frontier.clear();
        self.effects.clear();
        let mut entry = self.timeline.next[self.timeline.head()];
        while entry != NIL && !Timeline::is_return(entry) {
            let op = Timeline::op(entry);
            let key_op = &self.ops[op as usize];
            if !key_op.is_definite() {
                self.frontier.push(op);
            } else if self.order.allows(op) {
                self.wants.add(key_op, &self.state);
            }
            entry = self.timeline.next[entry as usize];
        }
        self.followed.clear();
        self.followed.resize(self.frontier.len(), false);
        loop {
            let mut grew = false;
            for (index, &op) in self.frontier.iter().enumerate() {
                let key_op = &self.ops[op as usize];
                if !self.followed[index]
                    && key_op.reads_before_writing()
                    && self.wants.wanted(key_op)
                {
                    self.wants.add(key_op, &self.state);
                    self.followed[index] = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        for &op in &self.frontier {
            let key_op = &self.ops[op as usize];
            if self.wants.wanted(key_op) && self.effects.insert(key_op.effect()) {
                self.alternatives.push(op);
            }
        }
    }

    /// The answer when no linearization was found, with the longest
    /// partial one.
    fn answer(mut self, found: impl FnOnce(Partial) -> Found) -> Searched {
        let (_, best) = self.best.take().expect("a dead end was remembered");
        Searched {
            found: found(best),
            steps: self.steps,
        }
    }

    fn front(&self) -> Cursor {
        Cursor::Definite(self.timeline.next[self.timeline.head()])
    }

    fn over_budget(&mut self, budget: &Budget) -> Option<String> {
        self.steps += 1;
        if self.steps > budget.max_steps {
            return Some(format!(
                "gave up after {} states (the per-key budget)",
                budget.max_steps
            ));
        }
        if self.memo.bytes() > budget.max_memo_bytes {
            return Some(format!(
                "gave up when the memo reached {} MiB",
                budget.max_memo_bytes >> 20
            ));
        }
        if self.steps % CLOCK_EVERY == 0 && Instant::now() >= budget.deadline {
            return Some(format!("gave up after {} states: out of time", self.steps));
        }
        None
    }

    /// Linearizes `op` next if the model allows it and the resulting
    /// (set, state) was not explored before.
    fn try_linearize(&mut self, op: u32) -> bool {
        let key_op = &self.ops[op as usize];
        if !self.order.allows(op) {
            return false;
        }
        let Ok(next) = self.model.step(&self.state, op, key_op) else {
            return false;
        };
        assert!(!is_set(&self.linearized, op), "{op} linearized twice");
        let definite = self.ops[op as usize].is_definite();
        let hash = if definite {
            self.definite_hash ^ self.memo.zobrist[op as usize]
        } else {
            self.definite_hash
        };
        set_bit(&mut self.linearized, op);
        if !self.memo.insert(&self.linearized, hash, &next) {
            clear_bit(&mut self.linearized, op);
            return false;
        }
        self.stack.push(Frame {
            op,
            before: self.state,
            next: self.order.next,
        });
        self.timeline.lift(op, definite);
        self.state = next;
        self.definite_hash = hash;
        if definite {
            self.pending_definite -= 1;
        }
        self.order.skip_linearized(&self.linearized);
        true
    }

    /// Takes back the last operation linearized; where to look next.
    fn backtrack(&mut self) -> Option<Cursor> {
        let frame = self.stack.pop()?;
        let definite = self.ops[frame.op as usize].is_definite();
        self.timeline.unlift(frame.op, definite);
        clear_bit(&mut self.linearized, frame.op);
        self.state = frame.before;
        if definite {
            self.definite_hash ^= self.memo.zobrist[frame.op as usize];
            self.pending_definite += 1;
        }
        self.order.next = frame.next;
        if definite {
            let call = Timeline::call(frame.op);
            return Some(Cursor::Definite(self.timeline.next[call as usize]));
        }
        self.gather_alternatives();
        let at = self.alternatives.iter().position(|&op| op == frame.op);
        Some(Cursor::Indeterminate(
            at.expect("the node's alternatives are gathered again the same") + 1,
        ))
    }

    fn remember_dead_end(&mut self) {
        // The most definite operations, then the fewest indeterminate ones:
        // what is shown is then what had to happen, not what merely could.
        let definite_done = self.definite - self.pending_definite;
        let better = self.best.as_ref().is_none_or(|(done, best)| {
            definite_done > *done || (definite_done == *done && self.stack.len() < best.order.len())
        });
        if !better {
            return;
        }
        let order = self.stack.iter().map(|frame| frame.op).collect();
        self.best = Some((
            definite_done,
            Partial {
                order,
                state: self.state,
            },
        ));
    }
}

/// Calls and returns in time order; entry `2i` is operation i's call and
/// `2i + 1` its return (definite operations only); the last is the head.
struct Timeline {
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl Timeline {
    fn new(ops: &[KeyOp]) -> Self {
        let mut entries: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            let index = index as u32;
            entries.push((op.call, false, Self::call(index)));
            if let Some(ret) = op.ret {
                entries.push((ret, true, Self::call(index) + 1));
            }
        }
        // At equal times calls sort first: such operations overlap.
        entries.sort_unstable();
        let head = (ops.len() * 2) as u32;
        let mut timeline = Timeline {
            next: vec![NIL; ops.len() * 2 + 1],
            prev: vec![NIL; ops.len() * 2 + 1],
        };
        let mut last = head;
        for (_, _, entry) in entries {
            timeline.next[last as usize] = entry;
            timeline.prev[entry as usize] = last;
            last = entry;
        }
        timeline
    }

    fn head(&self) -> usize {
        self.next.len() - 1
    }

    fn call(op: u32) -> u32 {
        op * 2
    }

    fn op(entry: u32) -> u32 {
        entry / 2
    }

    fn is_return(entry: u32) -> bool {
        entry % 2 == 1
    }

    fn lift(&mut self, op: u32, definite: bool) {
        self.unlink(Self::call(op));
        if definite {
            self.unlink(Self::call(op) + 1);
        }
    }

    /// Undoes [`Timeline::lift`]; lifts are undone last first.
    fn unlift(&mut self, op: u32, definite: bool) {
        if definite {
            self.relink(Self::call(op) + 1);
        }
        self.relink(Self::call(op));
    }

    fn unlink(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    fn relink(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = entry;
        if next != NIL {
            self.prev[next as usize] = entry;
        }
    }
}

/// The (linearized set, state) pairs explored; see the module docs for
/// the dominance rule.
struct Memo {
    words: usize,
    /// Per operation: a random word for definite ones, 0 for indeterminate.
    zobrist: Vec<u64>,
    indeterminate: Vec<u64>,
    slots: HashMap<u64, Vec<u32>, BuildHasherDefault<PassThrough>>,
    sets: Vec<u64>,
    states: Vec<State>,
}

impl Memo {
    fn new(ops: &[KeyOp], words: usize) -> Self {
        let mut indeterminate = vec![0; words];
        let zobrist = ops
            .iter()
            .enumerate()
            .map(|(index, op)| {
                if op.is_definite() {
                    splitmix64(index as u64 + 1)
                } else {
                    set_bit(&mut indeterminate, index as u32);
                    0
                }
            })
            .collect();
        Memo {
            words,
            zobrist,
            indeterminate,
            slots: HashMap::default(),
            sets: Vec::new(),
            states: Vec::new(),
        }
    }

    fn bytes(&self) -> usize {
        self.sets.len() * 8 + self.states.len() * (std::mem::size_of::<State>() + 4)
    }

    /// Records the pair; false if it (or one that dominates it) was seen.
    fn insert(&mut self, set: &[u64], definite_hash: u64, state: &State) -> bool {
        let Memo {
            words,
            indeterminate,
            slots,
            sets,
            states,
            ..
        } = self;
        let same_hash = slots.entry(definite_hash ^ state_hash(state)).or_default();
        for &slot in same_hash.iter() {
            let stored = &sets[slot as usize * *words..][..*words];
            if states[slot as usize] == *state && dominates(stored, set, indeterminate) {
                return false;
            }
        }
        same_hash.push(states.len() as u32);
        states.push(*state);
        sets.extend_from_slice(set);
        true
    }
}

/// `stored` is a subset of `current`, and all they differ by is
/// indeterminate operations.
fn dominates(stored: &[u64], current: &[u64], indeterminate: &[u64]) -> bool {
    stored
        .iter()
        .zip(current)
        .zip(indeterminate)
        .all(|((&s, &c), &ind)| s & !c == 0 && (c & !s) & !ind == 0)
}

pub(super) fn set_bit(set: &mut [u64], index: u32) {
    set[index as usize / 64] |= 1 << (index % 64);
}

pub(super) fn is_set(set: &[u64], index: u32) -> bool {
    set[index as usize / 64] & (1 << (index % 64)) != 0
}

fn clear_bit(set: &mut [u64], index: u32) {
    set[index as usize / 64] &= !(1 << (index % 64));
}

fn state_hash(state: &State) -> u64 {
    let (tag, writer, revision) = match state.mod_revision {
        ModRevision::Known(revision) => (0u64, 0u64, revision),
        ModRevision::Unknown { writer, min } => (1, u64::from(writer), min),
    };
    let mut hash = splitmix64(u64::from(state.value) ^ (tag << 40) ^ (writer << 41));
    hash = splitmix64(hash ^ revision as u64);
    splitmix64(hash ^ (state.floor as u64) ^ u64::from(state.after_indeterminate))
}

pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The memo's keys are hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
