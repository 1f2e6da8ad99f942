//! The counterexample, for a person: the acknowledged operations that
//! cannot all be true, the longest linearization the search found, and why
//! none of the operations that had to come next can.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::candidates::RevisionOrder;
use super::model::{KeyOp, ModRevision, Model, Reject, State};
use super::search::Partial;
use super::KeyHistory;
use crate::report::offset;
use crate::revision::Evidence;

/// Most operations a violation lists; the rest are counted.
const MAX_LISTED_OPS: usize = 40;
/// Most operations of a long linearization a violation shows (the last).
const MAX_SHOWN_ORDER: usize = 12;

/// `ops` are the key's operations as searched (maybe shrunk), `partial`
/// the longest linearization of them found.
pub(super) fn explain(
    key: &KeyHistory,
    ops: &[KeyOp],
    model: &Model<'_>,
    partial: &Partial,
    evidence: &Evidence<'_>,
) -> String {
    let mut text = String::new();
    list_acknowledged(&mut text, ops, evidence);
    show_linearization(&mut text, key, ops, partial);
    show_dead_end(&mut text, key, ops, model, partial, evidence);
    text
}

fn list_acknowledged(text: &mut String, ops: &[KeyOp], evidence: &Evidence<'_>) {
    let definite: Vec<&KeyOp> = ops.iter().filter(|op| op.is_definite()).collect();
    let others = ops.len() - definite.len();
    let _ = write!(
        text,
        "these {} acknowledged operations cannot all have happened as reported",
        definite.len()
    );
    if others > 0 {
        let _ = write!(
            text,
            ", even letting each of the {others} other writes on the key take effect once \
             at any time after its call, or never"
        );
    }
    text.push_str(":\n");
    for op in definite.iter().take(MAX_LISTED_OPS) {
        let _ = writeln!(text, "  {}", evidence.op(op.id));
    }
    if definite.len() > MAX_LISTED_OPS {
        let _ = writeln!(text, "  … and {} more", definite.len() - MAX_LISTED_OPS);
    }
}

fn show_linearization(text: &mut String, key: &KeyHistory, ops: &[KeyOp], partial: &Partial) {
    let hidden = partial.order.len().saturating_sub(MAX_SHOWN_ORDER);
    let _ = write!(
        text,
        "longest linearization found ({} operations):",
        partial.order.len()
    );
    if hidden > 0 {
        text.push_str(" …");
    }
    for &index in &partial.order[hidden..] {
        let op = &ops[index as usize];
        let _ = write!(text, " {}", op.id);
        if !op.is_definite() {
            text.push_str(" (took effect)");
        }
    }
    let _ = writeln!(
        text,
        "\nafter it, {}",
        describe_state(key, ops, &partial.state)
    );
}

/// The definite operation that returned first among those left had to be
/// linearized by then: each operation called before that is listed with
/// why it cannot come next.
fn show_dead_end(
    text: &mut String,
    key: &KeyHistory,
    ops: &[KeyOp],
    model: &Model<'_>,
    partial: &Partial,
    evidence: &Evidence<'_>,
) {
    let linearized: HashSet<u32> = partial.order.iter().copied().collect();
    let left = |index: usize| !linearized.contains(&(index as u32));
    let due = ops
        .iter()
        .enumerate()
        .filter(|&(index, op)| op.is_definite() && left(index))
        .filter_map(|(_, op)| Some((op.ret?, op)))
        .min_by_key(|&(ret, _)| ret);
    let Some((due_at, due)) = due else { return };
    let _ = writeln!(
        text,
        "{} returned at {}, so one of these had to come next, and none can:",
        due.id,
        offset(due_at, evidence.origin)
    );
    let order = RevisionOrder::after(ops, &partial.order);
    let mut indeterminate = 0;
    for (index, op) in ops.iter().enumerate() {
        if !left(index) || op.call > due_at {
            continue;
        }
        if !op.is_definite() {
            indeterminate += 1;
            continue;
        }
        let step = match order.first_blocking(index as u32) {
            Some(first) => Err(Reject::RevisionOrder { first }),
            None => model.step(&partial.state, index as u32, op),
        };
        let why = match step {
            Ok(_) => "could come next, but then nothing else could".to_string(),
            Err(reject) => reject.describe(&key.values, ops),
        };
        let _ = writeln!(text, "  {}: {why}", evidence.op(op.id));
    }
    if indeterminate > 0 {
        let _ = writeln!(
            text,
            "  (and {indeterminate} of the other writes, each may take effect here or not, \
             which does not help)"
        );
    }
}

fn describe_state(key: &KeyHistory, ops: &[KeyOp], state: &State) -> String {
    let value = key.values.show(state.value);
    let revision = match state.mod_revision {
        ModRevision::Known(revision) => format!("mod_revision {revision}"),
        ModRevision::Unknown { writer, min } => {
            format!(
                "mod_revision whatever {} got ({min} or later)",
                ops[writer as usize].id
            )
        }
    };
    format!(
        "the key is {value} @ {revision}, and the store at revision {} or later",
        state.floor
    )
}
