//! Which operations are worth trying next, beyond what the model allows:
//! the rules that keep the search close to linear on etcd histories. Each
//! only cuts branches that cannot succeed, or that another branch covers.

use super::model::{Action, CasOutcome, CompareOn, KeyOp, State, ValueId, ABSENT};
use super::search::{is_set, set_bit};

impl KeyOp {
    /// A compare-and-put: what it does depends on the state before.
    pub(super) fn reads_before_writing(&self) -> bool {
        matches!(self.action, Action::CasPut { .. })
    }

    /// What an indeterminate operation does, as far as the model can tell
    /// two apart.
    pub(super) fn effect(&self) -> Effect {
        match self.action {
            Action::Get { value, .. } => Effect::Read(value),
            Action::Put { value, .. } => Effect::Put(value),
            Action::Delete { .. } => Effect::Delete,
            Action::CasPut {
                compare: CompareOn::ModRevision(expected),
                value,
                ..
            } => Effect::PutIfRevision(expected, value),
            Action::CasPut {
                compare: CompareOn::Value(expected),
                value,
                ..
            } => Effect::PutIfValue(expected, value),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Effect {
    Read(ValueId),
    Put(ValueId),
    Delete,
    PutIfRevision(i64, ValueId),
    PutIfValue(ValueId, ValueId),
}

/// Where a definite operation sits in etcd's order: at the revision it
/// wrote, or for a read (or a write that changed nothing) after the write
/// of its header revision. The model only accepts linearizations in this
/// order (every definite operation raises `floor` to its revision), so the
/// search takes definite operations in it and fails early otherwise.
pub(super) fn position(op: &KeyOp) -> Option<(i64, bool)> {
    let (revision, wrote) = match op.action {
        Action::Get { header, .. } => (header, false),
        Action::Put { revision, .. } => (revision?, true),
        Action::Delete { outcome, .. } => outcome.map(|d| (d.header, d.count > 0))?,
        Action::CasPut { outcome, .. } => outcome.map(|o| (o.header, o.succeeded))?,
    };
    Some((revision, !wrote))
}

/// The definite operations in etcd's order (see [`position`]).
pub(super) struct RevisionOrder {
    /// Operation indices by position.
    sorted: Vec<u32>,
    /// Per operation: its position, `None` for indeterminate ones.
    positions: Vec<Option<(i64, bool)>>,
    /// The first of `sorted` not linearized.
    pub(super) next: usize,
}

impl RevisionOrder {
    pub(super) fn new(ops: &[KeyOp]) -> Self {
        let positions: Vec<_> = ops.iter().map(position).collect();
        let mut sorted: Vec<u32> = (0..ops.len() as u32)
            .filter(|&i| positions[i as usize].is_some())
            .collect();
        sorted.sort_by_key(|&i| positions[i as usize]);
        RevisionOrder {
            sorted,
            positions,
            next: 0,
        }
    }

    /// Whether `op` may be linearized now: it is indeterminate, or nothing
    /// definite not yet linearized sits before it.
    pub(super) fn allows(&self, op: u32) -> bool {
        self.first_blocking(op).is_none()
    }

    /// The definite operation not yet linearized that must come before
    /// `op`, if any.
    pub(super) fn first_blocking(&self, op: u32) -> Option<u32> {
        let mine = self.positions[op as usize]?;
        let &first = self.sorted.get(self.next)?;
        (self.positions[first as usize].expect("definite") < mine).then_some(first)
    }

    pub(super) fn skip_linearized(&mut self, linearized: &[u64]) {
        while self
            .sorted
            .get(self.next)
            .is_some_and(|&op| is_set(linearized, op))
        {
            self.next += 1;
        }
    }

    /// The order after the operations of a partial linearization.
    pub(super) fn after(ops: &[KeyOp], done: &[u32]) -> Self {
        let mut order = RevisionOrder::new(ops);
        let mut linearized = vec![0; ops.len().div_ceil(64).max(1)];
        done.iter().for_each(|&op| set_bit(&mut linearized, op));
        order.skip_linearized(&linearized);
        order
    }
}

/// What indeterminate writes could make the operations that may come next
/// possible. An indeterminate write is only worth linearizing right before
/// an operation that reads what it wrote (a blind write after it would
/// make it pointless, see [`super::model`]), so the search tries only those
/// that some candidate wants.
#[derive(Debug, Default)]
pub(super) struct Wants {
    /// Some candidate needs the key present, or its revision unknown.
    any_write: bool,
    /// Some candidate needs the key absent.
    delete: bool,
    /// Values some candidate reads or compares.
    values: Vec<ValueId>,
}

impl Wants {
    pub(super) fn clear(&mut self) {
        self.any_write = false;
        self.delete = false;
        self.values.clear();
    }

    /// Adds what `op`, a candidate to come next in `state`, could use.
    pub(super) fn add(&mut self, op: &KeyOp, state: &State) {
        match op.action {
            Action::Get { value: ABSENT, .. } => self.delete = true,
            Action::Get { value, .. } => self.values.push(value),
            Action::Put { .. } | Action::Delete { outcome: None } => {}
            Action::Delete {
                outcome: Some(deleted),
            } => match deleted.count {
                0 => self.delete = true,
                // Only an absent key needs a write to be deleted.
                _ => self.any_write |= state.value == ABSENT,
            },
            Action::CasPut {
                outcome:
                    Some(CasOutcome {
                        succeeded: false,
                        current,
                        ..
                    }),
                ..
            } => match current {
                Some((value, _)) => self.values.push(value),
                None => self.delete = true,
            },
            Action::CasPut { compare, .. } => match compare {
                CompareOn::ModRevision(0) => self.delete = true,
                // An indeterminate write here gets a revision above the
                // floor: only a compare above it can bind to it.
                CompareOn::ModRevision(expected) => self.any_write |= expected > state.floor,
                CompareOn::Value(value) => self.values.push(value),
            },
        }
    }

    /// Whether the indeterminate `op` could help some candidate.
    pub(super) fn wanted(&self, op: &KeyOp) -> bool {
        match op.action {
            Action::Put { value, .. } | Action::CasPut { value, .. } => {
                self.any_write || self.values.contains(&value)
            }
            Action::Delete { .. } => self.delete,
            Action::Get { .. } => false,
        }
    }
}
