//! Shrinks a key's non-linearizable history to a small core a person can
//! read.
//!
//! Shrinking only ever weakens the history, so whatever core remains
//! still proves the original wrong: a read, or an operation that changed
//! nothing, is dropped (one constraint fewer); an acknowledged write is made
//! indeterminate (it may now also not have happened, or have happened with
//! another revision). Indeterminate operations are never dropped: a read
//! may need one to be explained. What remains acknowledged is the core: the
//! responses that cannot all be true together. Groups are weakened
//! halves first, then quarters, down to single operations (as delta
//! debugging does), keeping each weakening that leaves the history
//! non-linearizable.

use std::collections::HashSet;
use std::time::Instant;

use super::model::{Action, KeyOp, Model};
use super::search::{search, Budget, Found, Partial};

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
    let mut weakened = vec![false; ops.len()];
    let mut best: Option<Core> = None;
    let mut steps = 0u64;
    let definite: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].is_definite()).collect();
    let mut group = definite.len().div_ceil(2).max(1);
    loop {
        let remaining: Vec<usize> = definite.iter().copied().filter(|&i| !weakened[i]).collect();
        for chunk in remaining.chunks(group) {
            if steps >= max_steps || Instant::now() >= deadline {
                return (best, steps);
            }
            let mut trial = weakened.clone();
            chunk.iter().for_each(|&i| trial[i] = true);
            let (weaker, released) = weaken(ops, &trial);
            let model = Model { taken, released: &released };
            let budget = Budget { max_steps: max_steps - steps, max_memo_bytes, deadline };
            let searched = search(&weaker, &model, &budget);
            steps += searched.steps;
            if let Found::Illegal(partial) = searched.found {
                weakened = trial;
                best = Some(Core { ops: weaker, released, partial });
            }
        }
        if group == 1 {
            return (best, steps);
        }
        group = group.div_ceil(2);
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
                Action::Put { value, revision: None }
            }
            Action::Delete { outcome: Some(deleted) } if deleted.count > 0 => {
                released.insert(deleted.header);
                Action::Delete { outcome: None }
            }
            Action::Delete { .. } => continue,
            Action::CasPut { compare, value, outcome: Some(outcome) } if outcome.succeeded => {
                released.insert(outcome.header);
                Action::CasPut { compare, value, outcome: None }
            }
            Action::CasPut { .. } => continue,
        };
        weaker.push(KeyOp { ret: None, action, ..op.clone() });
    }
    (weaker, released)
}
