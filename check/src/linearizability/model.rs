//! The sequential model of one key, as the search steps it.
//!
//! The state is the key's value and mod_revision plus `floor`, a lower
//! bound on the store's revision at this point of the linearization, as far
//! as this key's operations tell. etcd's revision is a logical clock of the
//! linearization: a write linearized here gets a revision above `floor`, a
//! read sees a header revision at or above it. Other keys' writes move the
//! real revision further, unseen, which is why it is a bound.
//!
//! An indeterminate write has no revision to tell. Linearizing one sets the
//! key's mod_revision to [`ModRevision::Unknown`]: "whatever revision that
//! write got", at least `floor + 1`, and not a revision an acknowledged write
//! got. The first operation that reads it binds it: a get, or a failed
//! compare-and-put, reporting mod_revision m; a compare-and-put on m that
//! succeeds. A write that follows replaces it unbound, which is sound: its
//! revision only had to lie between its neighbours', and the bound on the
//! follower (`> floor`, with `floor` raised by one for the unknown write)
//! already says so.
//!
//! An indeterminate operation is only linearized for its effect: one that
//! would change nothing here (a delete of an absent key, a compare that
//! fails) is the same as one that never happened, which the search tries
//! anyway, so the model refuses it. After an indeterminate write, the next
//! operation must be one that reads the state: had a blind write followed,
//! the indeterminate write would have changed nothing but raise the
//! revision floor, so the linearization without it is at least as good.
//! Refusing that order prunes the search without losing an answer.

use std::collections::{HashMap, HashSet};

use super::candidates::position;
use crate::bytes::Bytes;
use crate::history::OpId;

/// An interned value of the key; [`ABSENT`] is "no such key".
pub(super) type ValueId = u32;
pub(super) const ABSENT: ValueId = 0;

/// The values one key's operations mention, interned so states are small
/// and copied without allocating.
#[derive(Debug, Default)]
pub(super) struct Values {
    ids: HashMap<Bytes, ValueId>,
    bytes: Vec<Bytes>,
}

impl Values {
    pub(super) fn intern(&mut self, value: &Bytes) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.bytes.push(value.clone());
        let id = ValueId::try_from(self.bytes.len()).expect("fewer than 2^32 values on one key");
        self.ids.insert(value.clone(), id);
        id
    }

    pub(super) fn intern_optional(&mut self, value: Option<&Bytes>) -> ValueId {
        value.map_or(ABSENT, |value| self.intern(value))
    }

    pub(super) fn show(&self, id: ValueId) -> String {
        match id {
            ABSENT => "absent".into(),
            id => self.bytes[id as usize - 1].to_string(),
        }
    }
}

/// One operation of the key, reduced to what the model needs.
#[derive(Clone, Debug)]
pub(super) struct KeyOp {
    pub id: OpId,
    pub call: u64,
    /// `None`: indeterminate, returns at +infinity.
    pub ret: Option<u64>,
    pub action: Action,
}

impl KeyOp {
    pub(super) fn is_definite(&self) -> bool {
        self.ret.is_some()
    }
}

/// A request with its response; `None` outcomes are indeterminate.
#[derive(Clone, Debug)]
pub(super) enum Action {
    Get {
        value: ValueId,
        mod_revision: i64,
        header: i64,
    },
    Put {
        value: ValueId,
        revision: Option<i64>,
    },
    Delete {
        outcome: Option<Deleted>,
    },
    CasPut {
        compare: CompareOn,
        value: ValueId,
        outcome: Option<CasOutcome>,
    },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Deleted {
    pub count: i64,
    pub header: i64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum CompareOn {
    ModRevision(i64),
    /// Never [`ABSENT`]: a compare names bytes.
    Value(ValueId),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct CasOutcome {
    pub succeeded: bool,
    pub header: i64,
    /// When failed: (value, mod_revision) read, `None` for an absent key.
    pub current: Option<(ValueId, i64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ModRevision {
    Known(i64),
    /// Set by the indeterminate write at `writer` (its index among the
    /// key's operations); at least `min`.
    Unknown {
        writer: u32,
        min: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    pub value: ValueId,
    pub mod_revision: ModRevision,
    pub floor: i64,
    /// The last operation linearized was indeterminate (see module docs).
    pub after_indeterminate: bool,
}

impl State {
    /// Every key is absent when the history starts.
    pub(super) const INITIAL: State = State {
        value: ABSENT,
        mod_revision: ModRevision::Known(0),
        floor: 0,
        after_indeterminate: false,
    };
}

/// Why an operation cannot come next in the linearization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reject {
    WrongValue {
        expected: ValueId,
        found: ValueId,
    },
    WrongModRevision {
        expected: i64,
        found: i64,
    },
    /// An unknown revision bound below what its writer could have got.
    RevisionBeforeWriter {
        writer: u32,
        min: i64,
        found: i64,
    },
    /// An unknown revision bound to one an acknowledged write got.
    RevisionTaken {
        found: i64,
    },
    ModRevisionAboveHeader {
        mod_revision: i64,
        header: i64,
    },
    HeaderBehind {
        floor: i64,
        header: i64,
    },
    WriteNotAfter {
        floor: i64,
        revision: i64,
    },
    DeleteCount {
        present: bool,
        deleted: i64,
    },
    CompareHeld,
    CompareFailed,
    /// The definite operation at `first` (an index among the key's
    /// operations) has a lower revision, so it has to come first.
    RevisionOrder {
        first: u32,
    },
    /// An indeterminate operation that would change nothing.
    NoEffect,
    /// A blind write right after an indeterminate one (see module docs).
    AfterIndeterminate,
}

/// Steps states; shared by every search over one key.
pub(super) struct Model<'a> {
    /// Revisions acknowledged writes got, on any key.
    pub taken: &'a HashSet<i64>,
    /// Of those, ones an unknown revision may still take: acknowledged
    /// writes of this key the shrinker turned indeterminate.
    pub released: &'a HashSet<i64>,
}

impl Model<'_> {
    /// The state after `op` (the `index`-th of the key's operations), or why
    /// it cannot come next.
    pub(super) fn step(&self, state: &State, index: u32, op: &KeyOp) -> Result<State, Reject> {
        match op.action {
            Action::Get {
                value,
                mod_revision,
                header,
            } => self.get(state, value, mod_revision, header),
            Action::Put {
                value,
                revision: Some(revision),
            } => {
                if state.after_indeterminate {
                    return Err(Reject::AfterIndeterminate);
                }
                write_at(state, value, revision)
            }
            Action::Put {
                value,
                revision: None,
            } => blind_write(state, index, Some(value)),
            Action::Delete {
                outcome: Some(deleted),
            } => delete(state, deleted),
            Action::Delete { outcome: None } => match state.value {
                ABSENT => Err(Reject::NoEffect),
                _ => blind_write(state, index, None),
            },
            Action::CasPut {
                compare,
                value,
                outcome: Some(outcome),
            } => self.cas_put(state, compare, value, outcome),
            Action::CasPut {
                compare,
                value,
                outcome: None,
            } => {
                let state = self
                    .compare_holds(state, compare)
                    .map_err(|_| Reject::NoEffect)?;
                Ok(indeterminate_write(&state, index, Some(value)))
            }
        }
    }

    fn get(
        &self,
        state: &State,
        value: ValueId,
        mod_revision: i64,
        header: i64,
    ) -> Result<State, Reject> {
        read_header(state, header)?;
        if mod_revision > header {
            return Err(Reject::ModRevisionAboveHeader {
                mod_revision,
                header,
            });
        }
        if value != state.value {
            return Err(Reject::WrongValue {
                expected: state.value,
                found: value,
            });
        }
        let mod_revision = self.bind(state, mod_revision)?;
        Ok(State {
            value,
            mod_revision,
            floor: header,
            after_indeterminate: false,
        })
    }

    fn cas_put(
        &self,
        state: &State,
        compare: CompareOn,
        value: ValueId,
        outcome: CasOutcome,
    ) -> Result<State, Reject> {
        let header = outcome.header;
        if outcome.succeeded {
            let state = self.compare_holds(state, compare)?;
            return write_at(&state, value, header);
        }
        read_header(state, header)?;
        let (found_value, found_revision) = outcome.current.unwrap_or((ABSENT, 0));
        if found_revision > header {
            return Err(Reject::ModRevisionAboveHeader {
                mod_revision: found_revision,
                header,
            });
        }
        if found_value != state.value {
            return Err(Reject::WrongValue {
                expected: state.value,
                found: found_value,
            });
        }
        let mod_revision = self.bind(state, found_revision)?;
        let bound = State {
            mod_revision,
            floor: header,
            after_indeterminate: false,
            ..*state
        };
        match self.compare_holds(&bound, compare) {
            Ok(_) => Err(Reject::CompareHeld),
            Err(_) => Ok(bound),
        }
    }

    /// The state with the compare holding (binding an unknown revision to
    /// the expected one if need be), or `CompareFailed`.
    fn compare_holds(&self, state: &State, compare: CompareOn) -> Result<State, Reject> {
        match compare {
            CompareOn::Value(expected) if expected == state.value => Ok(*state),
            CompareOn::Value(_) => Err(Reject::CompareFailed),
            CompareOn::ModRevision(expected) => match state.mod_revision {
                ModRevision::Known(current) if current == expected => Ok(*state),
                ModRevision::Known(_) => Err(Reject::CompareFailed),
                ModRevision::Unknown { .. } => {
                    let mod_revision = self
                        .bind(state, expected)
                        .map_err(|_| Reject::CompareFailed)?;
                    Ok(State {
                        mod_revision,
                        floor: state.floor.max(expected),
                        ..*state
                    })
                }
            },
        }
    }

    /// The key's mod_revision if an operation reads it as `found`.
    fn bind(&self, state: &State, found: i64) -> Result<ModRevision, Reject> {
        match state.mod_revision {
            ModRevision::Known(expected) if expected == found => Ok(ModRevision::Known(found)),
            ModRevision::Known(expected) => Err(Reject::WrongModRevision { expected, found }),
            ModRevision::Unknown { writer, min } if found < min => {
                Err(Reject::RevisionBeforeWriter { writer, min, found })
            }
            ModRevision::Unknown { .. }
                if self.taken.contains(&found) && !self.released.contains(&found) =>
            {
                Err(Reject::RevisionTaken { found })
            }
            ModRevision::Unknown { .. } => Ok(ModRevision::Known(found)),
        }
    }
}

fn read_header(state: &State, header: i64) -> Result<(), Reject> {
    if header < state.floor {
        return Err(Reject::HeaderBehind {
            floor: state.floor,
            header,
        });
    }
    Ok(())
}

/// An acknowledged write of `value` at `revision`.
fn write_at(state: &State, value: ValueId, revision: i64) -> Result<State, Reject> {
    if revision <= state.floor {
        return Err(Reject::WriteNotAfter {
            floor: state.floor,
            revision,
        });
    }
    Ok(State {
        value,
        mod_revision: ModRevision::Known(revision),
        floor: revision,
        after_indeterminate: false,
    })
}

fn delete(state: &State, deleted: Deleted) -> Result<State, Reject> {
    let present = state.value != ABSENT;
    if deleted.count != i64::from(present) {
        return Err(Reject::DeleteCount {
            present,
            deleted: deleted.count,
        });
    }
    if !present {
        read_header(state, deleted.header)?;
        return Ok(State {
            floor: deleted.header,
            after_indeterminate: false,
            ..*state
        });
    }
    if deleted.header <= state.floor {
        return Err(Reject::WriteNotAfter {
            floor: state.floor,
            revision: deleted.header,
        });
    }
    Ok(State {
        value: ABSENT,
        mod_revision: ModRevision::Known(0),
        floor: deleted.header,
        after_indeterminate: false,
    })
}

/// An indeterminate put or delete: its result does not depend on the state
/// before, so it may not directly follow another indeterminate write.
fn blind_write(state: &State, index: u32, value: Option<ValueId>) -> Result<State, Reject> {
    if state.after_indeterminate {
        return Err(Reject::AfterIndeterminate);
    }
    Ok(indeterminate_write(state, index, value))
}

/// `value: None` deletes the key.
fn indeterminate_write(state: &State, index: u32, value: Option<ValueId>) -> State {
    let floor = state.floor + 1;
    match value {
        Some(value) => State {
            value,
            mod_revision: ModRevision::Unknown {
                writer: index,
                min: floor,
            },
            floor,
            after_indeterminate: true,
        },
        None => State {
            value: ABSENT,
            mod_revision: ModRevision::Known(0),
            floor,
            after_indeterminate: true,
        },
    }
}

impl Reject {
    /// For a person; `ops` are the key's operations, to name a writer.
    pub(super) fn describe(&self, values: &Values, ops: &[KeyOp]) -> String {
        match *self {
            Reject::WrongValue { expected, found } => {
                format!("saw {}, but the key is {} here", values.show(found), values.show(expected))
            }
            Reject::WrongModRevision { expected, found } => {
                format!("saw mod_revision {found}, but it is {expected} here")
            }
            Reject::RevisionBeforeWriter { writer, min, found } => format!(
                "saw mod_revision {found}, but its writer {} (indeterminate) can only have got {min} or later here",
                ops[writer as usize].id
            ),
            Reject::RevisionTaken { found } => format!(
                "saw mod_revision {found} for an indeterminate write, but an acknowledged write got revision {found}"
            ),
            Reject::ModRevisionAboveHeader { mod_revision, header } => {
                format!("mod_revision {mod_revision} is above the response's header revision {header}")
            }
            Reject::HeaderBehind { floor, header } => {
                format!("header revision {header} is behind revision {floor}, already reached here")
            }
            Reject::WriteNotAfter { floor, revision } => {
                format!("wrote revision {revision}, but revision {floor} was already reached here")
            }
            Reject::DeleteCount { present: true, deleted } => {
                format!("deleted {deleted}, but the key exists here")
            }
            Reject::DeleteCount { present: false, deleted } => {
                format!("deleted {deleted}, but the key is absent here")
            }
            Reject::CompareHeld => "the compare failed, but it holds here".into(),
            Reject::CompareFailed => "the compare succeeded, but it does not hold here".into(),
            Reject::RevisionOrder { first } => {
                let first = &ops[first as usize];
                let (revision, _) = position(first).expect("definite");
                format!("{} (at revision {revision}) has to come first: revisions are the linearization order", first.id)
            }
            Reject::NoEffect => "would change nothing here (the same as never taking effect)".into(),
            Reject::AfterIndeterminate => {
                "cannot directly follow an indeterminate write (an order without that write is tried instead)".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action, definite: bool) -> KeyOp {
        KeyOp {
            id: OpId(0),
            call: 0,
            ret: definite.then_some(1),
            action,
        }
    }

    fn ok(action: Action) -> KeyOp {
        op(action, true)
    }

    fn unsure(action: Action) -> KeyOp {
        op(action, false)
    }

    const V: ValueId = 1;
    const W: ValueId = 2;

    fn model_step(taken: &[i64], state: &State, op: &KeyOp) -> Result<State, Reject> {
        let taken: HashSet<i64> = taken.iter().copied().collect();
        let released = HashSet::new();
        Model {
            taken: &taken,
            released: &released,
        }
        .step(state, 7, op)
    }

    #[test]
    fn get_binds_an_indeterminate_writes_revision_once() {
        let written = model_step(
            &[],
            &State::INITIAL,
            &unsure(Action::Put {
                value: V,
                revision: None,
            }),
        )
        .unwrap();
        assert_eq!(
            written.mod_revision,
            ModRevision::Unknown { writer: 7, min: 1 }
        );
        let read = ok(Action::Get {
            value: V,
            mod_revision: 5,
            header: 6,
        });
        let bound = model_step(&[], &written, &read).unwrap();
        assert_eq!(
            (bound.mod_revision, bound.floor),
            (ModRevision::Known(5), 6)
        );
        // A second read must agree with the first binding.
        let other = ok(Action::Get {
            value: V,
            mod_revision: 4,
            header: 6,
        });
        assert_eq!(
            model_step(&[], &bound, &other),
            Err(Reject::WrongModRevision {
                expected: 5,
                found: 4
            })
        );
        // Nor may it take a revision an acknowledged write got.
        assert_eq!(
            model_step(&[5], &written, &read),
            Err(Reject::RevisionTaken { found: 5 })
        );
    }

    #[test]
    fn delete_of_an_absent_key_keeps_the_revision() {
        let state = State {
            floor: 4,
            ..State::INITIAL
        };
        let same = ok(Action::Delete {
            outcome: Some(Deleted {
                count: 0,
                header: 4,
            }),
        });
        assert_eq!(model_step(&[], &state, &same).unwrap().floor, 4);
        let counted = ok(Action::Delete {
            outcome: Some(Deleted {
                count: 1,
                header: 5,
            }),
        });
        assert!(matches!(
            model_step(&[], &state, &counted),
            Err(Reject::DeleteCount { .. })
        ));
        assert_eq!(
            model_step(&[], &state, &unsure(Action::Delete { outcome: None })),
            Err(Reject::NoEffect)
        );
    }

    #[test]
    fn compare_and_put_follows_etcd_compare_semantics() {
        let absent = State {
            floor: 3,
            ..State::INITIAL
        };
        let create = |succeeded, current| {
            ok(Action::CasPut {
                compare: CompareOn::ModRevision(0),
                value: V,
                outcome: Some(CasOutcome {
                    succeeded,
                    header: 4,
                    current,
                }),
            })
        };
        assert!(model_step(&[], &absent, &create(true, None)).is_ok());
        assert_eq!(
            model_step(&[], &absent, &create(false, None)),
            Err(Reject::CompareHeld)
        );
        let by_value = ok(Action::CasPut {
            compare: CompareOn::Value(W),
            value: V,
            outcome: Some(CasOutcome {
                succeeded: true,
                header: 4,
                current: None,
            }),
        });
        assert_eq!(
            model_step(&[], &absent, &by_value),
            Err(Reject::CompareFailed)
        );
    }

    #[test]
    fn blind_write_may_not_follow_an_indeterminate_write() {
        let written = model_step(
            &[],
            &State::INITIAL,
            &unsure(Action::Put {
                value: V,
                revision: None,
            }),
        )
        .unwrap();
        let put = ok(Action::Put {
            value: W,
            revision: Some(9),
        });
        assert_eq!(
            model_step(&[], &written, &put),
            Err(Reject::AfterIndeterminate)
        );
    }
}
