//! Is the KV history linearizable?
//!
//! Linearizability is compositional (Herlihy & Wing): a history is
//! linearizable if the operations on each key are. So the history is cut
//! per key, and each key's operations are searched for a linearization
//! against a model of one etcd key ([`model`]) that also checks the
//! revisions responses carry. What a per-key search cannot see (a revision
//! shared by two keys, revisions going backwards across keys in real time)
//! is checked over the whole history by [`crate::revision`].
//!
//! A key with no linearization is shrunk to a core of operations that
//! cannot all be true together ([`shrink`]), and reported with the longest
//! linearization the search found and why no remaining operation could
//! follow it. A key whose search runs out of budget ([`Limits`]) is
//! reported as undecided: the verdict is then `Unknown`, never `Ok`.

mod candidates;
mod explain;
mod model;
mod search;
mod shrink;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use self::explain::explain;
use self::model::{Action, CasOutcome, CompareOn, Deleted, KeyOp, Model, Values};
use self::search::{search, Budget, Found};
use crate::bytes::Bytes;
use crate::error::Error;
use crate::history::{Compare, History, OpId, Outcome, Request, Response};
use crate::report::{Inconclusive, Report, ViolationKind};
use crate::revision::{self, Evidence, Ledger};

/// When the search gives up on a key and answers "unknown".
#[derive(Clone, Debug)]
pub struct Limits {
    /// Model steps the search of one key may take.
    pub max_states_per_key: u64,
    /// Memory the memo of one key's search may take.
    pub max_memo_bytes: usize,
    /// Wall time for the whole check; keys not decided by then are unknown.
    pub max_time: Duration,
    /// Whether to shrink a non-linearizable key to a core of operations.
    pub shrink: bool,
    /// Model steps all shrinking searches of one key may take together.
    pub max_shrink_states: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_states_per_key: 5_000_000,
            max_memo_bytes: 1 << 30,
            max_time: Duration::from_secs(300),
            shrink: true,
            max_shrink_states: 500_000,
        }
    }
}

/// Checks that the history is linearizable, with etcd's revision rules.
pub fn check_linearizability(history: &History, limits: &Limits) -> Result<Report, Error> {
    let started = Instant::now();
    history.validate()?;
    let evidence = Evidence::new(history, &[]);
    let mut report = Report::default();
    revision::check_unique(history, &evidence, &mut report);
    revision::check_real_time(history, &evidence, &mut report);
    Ledger::from_history(history).report_conflicts(&evidence, false, &mut report);

    let taken = revision::acknowledged(history);
    let keys = partition(history);
    report.stats.operations = history.ops.len();
    report.stats.keys = keys.len();
    let deadline = started + limits.max_time;
    for key in &keys {
        check_key(key, &evidence, &taken, limits, deadline, &mut report);
    }
    report.stats.elapsed = started.elapsed();
    Ok(report)
}

/// One key's operations, ready for the search.
#[derive(Debug)]
struct KeyHistory {
    key: Bytes,
    /// Ordered by call time.
    ops: Vec<KeyOp>,
    values: Values,
}

fn check_key(
    key: &KeyHistory,
    evidence: &Evidence<'_>,
    taken: &HashSet<i64>,
    limits: &Limits,
    deadline: Instant,
    report: &mut Report,
) {
    let released = HashSet::new();
    let model = Model {
        taken,
        released: &released,
    };
    let budget = Budget {
        max_steps: limits.max_states_per_key,
        max_memo_bytes: limits.max_memo_bytes,
        deadline,
    };
    let searched = search(&key.ops, &model, &budget);
    report.stats.states_explored += searched.steps;
    match searched.found {
        Found::Linearizable => {}
        Found::Unknown(partial, reason) => report.inconclusive.push(Inconclusive {
            key: key.key.clone(),
            reason,
            detail: explain(key, &key.ops, &model, &partial, evidence),
        }),
        Found::Illegal(partial) => {
            let (core, steps) = match limits.shrink {
                true => shrink::shrink(
                    &key.ops,
                    taken,
                    limits.max_shrink_states,
                    limits.max_memo_bytes,
                    deadline,
                ),
                false => (None, 0),
            };
            report.stats.states_explored += steps;
            let (ops, detail) = match &core {
                Some(core) => {
                    let model = Model {
                        taken,
                        released: &core.released,
                    };
                    (
                        &core.ops,
                        explain(key, &core.ops, &model, &core.partial, evidence),
                    )
                }
                None => (&key.ops, explain(key, &key.ops, &model, &partial, evidence)),
            };
            let listed = ops
                .iter()
                .filter(|op| op.is_definite())
                .map(|op| op.id)
                .collect();
            report.violation(
                ViolationKind::NotLinearizable,
                Some(&key.key),
                listed,
                detail,
            );
        }
    }
}

/// The history cut per key, in key order. Failed operations took no
/// effect and indeterminate reads returned nothing: neither is kept.
fn partition(history: &History) -> Vec<KeyHistory> {
    let mut by_key: BTreeMap<&Bytes, Vec<OpId>> = BTreeMap::new();
    for (id, op) in history.iter() {
        let kept = match (&op.request, &op.outcome) {
            (_, Outcome::Failed) | (Request::Get { .. }, Outcome::Indeterminate) => false,
            (_, Outcome::Ok(_) | Outcome::Indeterminate) => true,
        };
        if kept {
            by_key.entry(op.key()).or_default().push(id);
        }
    }
    by_key
        .into_iter()
        .map(|(key, ids)| {
            let mut values = Values::default();
            let mut ops: Vec<KeyOp> = ids
                .into_iter()
                .map(|id| key_op(history, id, &mut values))
                .collect();
            ops.sort_by_key(|op| (op.call, op.id));
            KeyHistory {
                key: key.clone(),
                ops,
                values,
            }
        })
        .collect()
}

fn key_op(history: &History, id: OpId, values: &mut Values) -> KeyOp {
    let op = history.op(id);
    let response = op.response();
    let action = match (&op.request, response) {
        (Request::Get { .. }, Some(Response::Get(r))) => Action::Get {
            value: values.intern_optional(r.value.as_ref()),
            mod_revision: r.mod_revision,
            header: r.header_revision,
        },
        (Request::Put { value, .. }, response) => Action::Put {
            value: values.intern(value),
            revision: response.map(Response::header_revision),
        },
        (Request::Delete { .. }, response) => Action::Delete {
            outcome: match response {
                Some(Response::Delete(r)) => Some(Deleted {
                    count: r.deleted,
                    header: r.header_revision,
                }),
                _ => None,
            },
        },
        (Request::CasPut { compare, value, .. }, response) => Action::CasPut {
            compare: match compare {
                Compare::ModRevision(expected) => CompareOn::ModRevision(*expected),
                Compare::Value(expected) => CompareOn::Value(values.intern(expected)),
            },
            value: values.intern(value),
            outcome: match response {
                Some(Response::CasPut(r)) => Some(CasOutcome {
                    succeeded: r.succeeded,
                    header: r.header_revision,
                    current: r
                        .current
                        .as_ref()
                        .map(|c| (values.intern(&c.value), c.mod_revision)),
                }),
                _ => None,
            },
        },
        (Request::Get { .. }, _) => {
            unreachable!("validated: a get is answered by a get, or not kept")
        }
    };
    let ret = response.map(|_| op.returned_at);
    KeyOp {
        id,
        call: op.called_at,
        ret,
        action,
    }
}
