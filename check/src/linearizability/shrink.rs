//! Shrinks a key's non-linearizable history to a small core a person can
//! read.
//!
//! Shrinking only ever weakens the history, so whatever core remains
//! still proves the original wrong: a read, or an operation that changed
//! nothing, is dropped (one constraint fewer); an acknowledged write is made
//! indeterminate (it may now also not have happened, or have happened with
//! another revision). Indeterminate operations are never dropped: a read
//! may need one to be explained. What remains acknowledged is the core: the
//! responses that cannot all be true together.
//!
//! Reads go first, while every acknowledged write still fixes the order by
//! its revision and each search is quick; then writes. Each pass weakens
//! halves, then quarters, down to single operations (as delta debugging
//! does), keeping each weakening that leaves the history non-linearizable.
//! A weakening whose search runs out of its share of the budget is not
//! kept: the core is then larger than it could be, never wrong.

use std::collections::HashSet;
use std::time::Instant;

use super::candidates::position;
use super::model::{Action, KeyOp, Model};
use super::search::{search, Budget, Found, Partial};

/// Most steps one shrinking search may take: a weakening that needs more
/// is not worth the wait.
const MAX_STEPS_PER_TRIAL: u64 = 20_000;

/// A weakened copy of the key's operations that is still not
/// linearizable, with the search's longest linearization of it.
pub(super) struct Core {
    pub ops: Vec<KeyOp>,
    pub released: HashSet<i64>,
    pub partial: Partial,
}

/// Returns `None` if no weakening was kept (the budget ran out first, or
/// every operation is needed).
pub(super) fn shrink(
    ops: &[KeyOp],
    taken: &HashSet<i64>,
    max_steps: u64,
    max_memo_bytes: usize,
    deadline: Instant,
) -> (Option<Core>, u64) {
    let mut shrinker = Shrinker {
        ops,
        taken,
        weakened: vec![false; ops.len()],
        best: None,
        steps: 0,
        max_steps,
        max_memo_bytes,
        deadline,
    };
    let writes = |op: &KeyOp| position(op).is_some_and(|(_, read)| !read);
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].is_definite() && !writes(&ops[i]))
        .collect();
    let written: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].is_definite() && writes(&ops[i]))
        .collect();
    shrinker.pass(&reads);
    shrinker.pass(&written);
    (shrinker.best, shrinker.steps)
}

struct Shrinker<'a> {
    ops: &'a [KeyOp],
    taken: &'a HashSet<i64>,
    weakened: Vec<bool>,
    best: Option<Core>,
    steps: u64,
    max_steps: u64,
    max_memo_bytes: usize,
    deadline: Instant,
}

impl Shrinker<'_> {
    /// Weakens what it can of `candidates`, in ever smaller groups.
    fn pass(&mut self, candidates: &[usize]) {
        let mut group = candidates.len().div_ceil(2).max(1);
        loop {
            let remaining: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| !self.weakened[i])
                .collect();
            for chunk in remaining.chunks(group) {
                if self.steps >= self.max_steps || Instant::now() >= self.deadline {
                    return;
                }
                self.try_weaken(chunk);
            }
            if group == 1 {
                return;
            }
            group = group.div_ceil(2);
        }
    }

    fn try_weaken(&mut self, chunk: &[usize]) {
        let mut trial = self.weakened.clone();
        chunk.iter().for_each(|&i| trial[i] = true);
        let (weaker, released) = weaken(self.ops, &trial);
        let model = Model {
            taken: self.taken,
            released: &released,
        };
        let max_steps = (self.max_steps - self.steps).min(MAX_STEPS_PER_TRIAL);
        let budget = Budget {
            max_steps,
            max_memo_bytes: self.max_memo_bytes,
            deadline: self.deadline,
        };
        let searched = search(&weaker, &model, &budget);
        self.steps += searched.steps;
        if let Found::Illegal(partial) = searched.found {
            self.weakened = trial;
            self.best = Some(Core {
                ops: weaker,
                released,
                partial,
            });
        }
    }
}

/// `ops` with the marked ones weakened, and the revisions of writes that
/// are no longer acknowledged.
fn weaken(ops: &[KeyOp], marked: &[bool]) -> (Vec<KeyOp>, HashSet<i64>) {
    let mut released = HashSet::new();
    let mut weaker = Vec::with_capacity(ops.len());
    for (op, &marked) in ops.iter().zip(marked) {
        if !marked {
            weaker.push(op.clone());
            continue;
        }
        let action = match op.action.clone() {
            Action::Get { .. } => continue,
            Action::Put { value, revision } => {
                released.extend(revision);
                Action::Put {
                    value,
                    revision: None,
                }
            }
            Action::Delete {
                outcome: Some(deleted),
            } if deleted.count > 0 => {
                released.insert(deleted.header);
                Action::Delete { outcome: None }
            }
            Action::Delete { .. } => continue,
            Action::CasPut {
                compare,
                value,
                outcome: Some(outcome),
            } if outcome.succeeded => {
                released.insert(outcome.header);
                Action::CasPut {
                    compare,
                    value,
                    outcome: None,
                }
            }
            Action::CasPut { .. } => continue,
        };
        weaker.push(KeyOp {
            ret: None,
            action,
            ..op.clone()
        });
    }
    (weaker, released)
}
