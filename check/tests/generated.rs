//! Generated histories: a simulated sequential store records linearizable
//! histories with random overlaps and lost outcomes; they must pass. Then
//! one response is mutated, and the mutations that are wrong for certain
//! must always be caught.

mod support;

use std::time::Instant;

use basalt_check::{
    check_linearizability, check_watches, History, Limits, OpId, Operation, Outcome, Report,
    Response, Verdict, ViolationKind,
};
use proptest::prelude::*;
use support::*;

fn config(
    seed: u64,
    ops: usize,
    keys: usize,
    clients: usize,
    indeterminate: f64,
    unique_values: bool,
) -> Config {
    Config {
        seed,
        ops,
        keys,
        clients,
        indeterminate,
        unique_values,
        watchers: 3,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn simulated_histories_pass(
        seed in any::<u64>(),
        ops in 1usize..160,
        keys in 1usize..5,
        clients in 1usize..7,
        indeterminate in 0.0f64..0.4,
        unique_values in any::<bool>(),
    ) {
        let simulated = simulate(&config(seed, ops, keys, clients, indeterminate, unique_values));
        let report = check_linearizability(&simulated.history, &Limits::default()).unwrap();
        prop_assert!(report.is_ok(), "seed {seed}:\n{report}");
        let report = check_watches(&simulated.history, &simulated.watchers).unwrap();
        prop_assert!(report.is_ok(), "seed {seed}:\n{report}");
    }
}

/// A change to one response of a correct history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    /// A get returns a value no operation wrote. Always wrong.
    ReadNeverWritten,
    /// A get returns an older write of the key than one acknowledged
    /// before the get was called. Always wrong.
    StaleRead,
    /// A write gets another acknowledged write's revision. Always wrong.
    DuplicateRevision,
    /// An operation gets a revision below one returned before its call.
    /// Always wrong.
    RevisionBackwards,
    /// A compare-and-put succeeds on a revision older than the
    /// acknowledged write it had to follow. Always wrong.
    StaleCompare,
    /// A get's mod_revision moves by one. Usually wrong.
    ModRevisionOffByOne,
    /// A get returns another value written to the same key. Often
    /// legal (a concurrent write).
    OtherValueOfKey,
    /// A write's revision moves up by one. Usually wrong.
    RevisionUpByOne,
    /// A delete's count flips.
    DeleteCountFlipped,
}

const ALWAYS_CAUGHT: [Mutation; 5] = [
    Mutation::ReadNeverWritten,
    Mutation::StaleRead,
    Mutation::DuplicateRevision,
    Mutation::RevisionBackwards,
    Mutation::StaleCompare,
];

const SOMETIMES_CAUGHT: [Mutation; 4] = [
    Mutation::ModRevisionOffByOne,
    Mutation::OtherValueOfKey,
    Mutation::RevisionUpByOne,
    Mutation::DeleteCountFlipped,
];

fn answered(history: &History) -> impl Iterator<Item = (OpId, &Operation, &Response)> {
    history
        .iter()
        .filter_map(|(id, op)| op.response().map(|response| (id, op, response)))
}

fn set_response(history: &mut History, id: OpId, response: Response) {
    history.ops[id.0].outcome = Outcome::Ok(response);
}

fn with_header(response: &Response, header: i64) -> Response {
    let mut response = response.clone();
    match &mut response {
        Response::Get(r) => r.header_revision = header,
        Response::Put(r) => r.header_revision = header,
        Response::Delete(r) => r.header_revision = header,
        Response::CasPut(r) => r.header_revision = header,
    }
    response
}

/// Applies `mutation` to one op chosen with `rng`; `None` if the history
/// has no op it applies to.
fn mutate(simulated: &Simulated, mutation: Mutation, rng: &mut Seeded) -> Option<History> {
    let history = &simulated.history;
    let mut mutated = history.clone();
    let choose =
        |candidates: Vec<(OpId, Response)>, rng: &mut Seeded| -> Option<(OpId, Response)> {
            (!candidates.is_empty()).then(|| rng.pick(&candidates).clone())
        };
    let gets = || {
        answered(history).filter_map(|(id, op, r)| match r {
            Response::Get(g) => Some((id, op, g)),
            _ => None,
        })
    };
    let acknowledged_writes = || answered(history).filter(|(_, _, r)| r.wrote());
    let (id, response) = match mutation {
        Mutation::ReadNeverWritten => choose(
            gets()
                .map(|(id, _, g)| {
                    (
                        id,
                        Response::get(
                            Some("never-written"),
                            g.mod_revision.max(1),
                            g.header_revision,
                        ),
                    )
                })
                .collect(),
            rng,
        )?,
        Mutation::StaleRead => {
            let mut candidates = Vec::new();
            for (id, op, g) in gets() {
                // The latest acknowledged value write of the key that
                // returned before the get was called, and one before it.
                let writes: Vec<_> = answered(history)
                    .filter(|(_, w, r)| {
                        w.key() == op.key() && r.wrote() && w.request.written_value().is_some()
                    })
                    .filter(|(_, w, _)| w.returned_at < op.called_at)
                    .map(|(_, w, r)| {
                        (
                            r.header_revision(),
                            w.request.written_value().unwrap().clone(),
                        )
                    })
                    .collect();
                let Some(&(newest, _)) = writes.iter().max_by_key(|(revision, _)| *revision) else {
                    continue;
                };
                if let Some((older, value)) = writes
                    .iter()
                    .filter(|(revision, _)| *revision < newest)
                    .max_by_key(|(r, _)| *r)
                {
                    let stale = Response::Get(basalt_check::GetResponse {
                        value: Some(value.clone()),
                        mod_revision: *older,
                        header_revision: g.header_revision,
                    });
                    candidates.push((id, stale));
                }
            }
            choose(candidates, rng)?
        }
        Mutation::DuplicateRevision => {
            let writes: Vec<_> = acknowledged_writes().collect();
            if writes.len() < 2 {
                return None;
            }
            let (a, b) = (
                rng.below(writes.len() as u64) as usize,
                rng.below(writes.len() as u64) as usize,
            );
            if a == b {
                return None;
            }
            (
                writes[b].0,
                with_header(writes[b].2, writes[a].2.header_revision()),
            )
        }
        Mutation::RevisionBackwards => {
            let mut candidates = Vec::new();
            for (id, op, response) in answered(history) {
                let before = answered(history).filter(|(_, a, _)| a.returned_at < op.called_at);
                if let Some(highest) = before.map(|(_, _, r)| r.header_revision()).max() {
                    candidates.push((id, with_header(response, highest - 1)));
                }
            }
            choose(candidates, rng)?
        }
        Mutation::StaleCompare => {
            let mut candidates = Vec::new();
            for (id, op, response) in answered(history) {
                let (
                    basalt_check::Request::CasPut {
                        compare: basalt_check::Compare::ModRevision(expected),
                        ..
                    },
                    true,
                ) = (&op.request, response.wrote())
                else {
                    continue;
                };
                // Only when the write it compared against was acknowledged.
                let acknowledged =
                    acknowledged_writes().any(|(_, _, r)| r.header_revision() == *expected);
                if acknowledged && *expected > 1 {
                    candidates.push((id, response.clone()));
                }
            }
            let (id, response) = choose(candidates, rng)?;
            let request = &mut mutated.ops[id.0].request;
            if let basalt_check::Request::CasPut {
                compare: basalt_check::Compare::ModRevision(expected),
                ..
            } = request
            {
                let old: i64 = *expected;
                *expected = old - 1 - rng.below(old as u64 - 1) as i64;
            }
            (id, response)
        }
        Mutation::ModRevisionOffByOne => {
            let (id, _, g) = {
                let all: Vec<_> = gets().filter(|(_, _, g)| g.value.is_some()).collect();
                if all.is_empty() {
                    return None;
                }
                *rng.pick(&all)
            };
            let delta = if rng.chance(0.5) { 1 } else { -1 };
            let response = basalt_check::GetResponse {
                mod_revision: g.mod_revision + delta,
                ..g.clone()
            };
            (id, Response::Get(response))
        }
        Mutation::OtherValueOfKey => {
            let mut candidates = Vec::new();
            for (id, op, g) in gets() {
                for (_, w, r) in acknowledged_writes().filter(|(_, w, _)| w.key() == op.key()) {
                    if let Some(value) = w
                        .request
                        .written_value()
                        .filter(|v| Some(*v) != g.value.as_ref())
                    {
                        let response = basalt_check::GetResponse {
                            value: Some(value.clone()),
                            mod_revision: r.header_revision(),
                            header_revision: g.header_revision.max(r.header_revision()),
                        };
                        candidates.push((id, Response::Get(response)));
                    }
                }
            }
            choose(candidates, rng)?
        }
        Mutation::RevisionUpByOne => {
            let writes: Vec<_> = acknowledged_writes()
                .map(|(id, _, r)| (id, with_header(r, r.header_revision() + 1)))
                .collect();
            choose(writes, rng)?
        }
        Mutation::DeleteCountFlipped => {
            let deletes: Vec<_> = answered(history)
                .filter_map(|(id, _, r)| match r {
                    Response::Delete(d) => Some((
                        id,
                        Response::delete(1 - d.deleted, d.header_revision + 1 - 2 * d.deleted),
                    )),
                    _ => None,
                })
                .collect();
            choose(deletes, rng)?
        }
    };
    set_response(&mut mutated, id, response);
    Some(mutated)
}

fn caught(history: &History) -> (bool, Report) {
    let report = check_linearizability(history, &Limits::default()).expect("valid");
    assert_ne!(
        report.verdict(),
        Verdict::Unknown,
        "small histories are decided:\n{report}"
    );
    (report.verdict() == Verdict::Violated, report)
}

#[test]
fn mutations_that_are_always_wrong_are_always_caught() {
    let mut rng = Seeded::new(7);
    let mut tried = [0usize; ALWAYS_CAUGHT.len()];
    for seed in 0..300 {
        let simulated = simulate(&config(seed, 60, 2, 4, 0.15, seed % 3 != 0));
        for (index, &mutation) in ALWAYS_CAUGHT.iter().enumerate() {
            let Some(mutated) = mutate(&simulated, mutation, &mut rng) else {
                continue;
            };
            tried[index] += 1;
            let (caught, report) = caught(&mutated);
            assert!(
                caught,
                "seed {seed}: {mutation:?} was not caught:\n{report}"
            );
        }
    }
    for (mutation, tried) in ALWAYS_CAUGHT.iter().zip(tried) {
        assert!(tried >= 50, "{mutation:?} applied only {tried} times");
    }
}

#[test]
fn most_other_mutations_are_caught() {
    let mut rng = Seeded::new(11);
    for mutation in SOMETIMES_CAUGHT {
        let (mut tried, mut hits) = (0, 0);
        for seed in 0..200 {
            let simulated = simulate(&config(seed, 60, 2, 4, 0.15, true));
            let Some(mutated) = mutate(&simulated, mutation, &mut rng) else {
                continue;
            };
            tried += 1;
            hits += usize::from(caught(&mutated).0);
        }
        println!("{mutation:?}: caught {hits} of {tried}");
        assert!(tried >= 50, "{mutation:?} applied only {tried} times");
        // Legal mutations exist (a read of a concurrent write's value), so
        // not all; these kinds were caught 93-100% when this was written.
        assert!(
            hits * 100 >= tried * 85,
            "{mutation:?}: caught only {hits} of {tried}"
        );
    }
}

#[test]
fn watch_mutations_are_caught() {
    let mut rng = Seeded::new(5);
    let mut tried = [0usize; 4];
    for seed in 0..200 {
        let simulated = simulate(&Config {
            seed,
            ops: 80,
            keys: 2,
            watchers: 2,
            ..Config::default()
        });
        let acknowledged: std::collections::HashSet<i64> = simulated
            .history
            .ops
            .iter()
            .filter_map(|op| op.written_revision())
            .collect();
        let watcher = &simulated.watchers[0];
        // Responses with an acknowledged put event, not the stream's last.
        let mutable = |e: &basalt_check::Event| {
            acknowledged.contains(&e.revision()) && e.kind == basalt_check::EventKind::Put
        };
        let inner: Vec<usize> = (0..watcher.responses.len().saturating_sub(1))
            .filter(|&r| watcher.responses[r].events.iter().any(mutable))
            .collect();
        if inner.is_empty() {
            continue;
        }
        let r = *rng.pick(&inner);
        let e = watcher.responses[r]
            .events
            .iter()
            .position(mutable)
            .unwrap();
        let expectations = [
            ("drop", ViolationKind::WatchMissingEvent),
            ("duplicate", ViolationKind::WatchDuplicateEvent),
            ("swap", ViolationKind::WatchOutOfOrder),
            ("wrong value", ViolationKind::WatchEventConflict),
        ];
        for (index, (how, kind)) in expectations.into_iter().enumerate() {
            let mut watchers = simulated.watchers.clone();
            let responses = &mut watchers[0].responses;
            match how {
                "drop" => {
                    responses[r].events.remove(e);
                }
                "duplicate" => {
                    let event = responses[r].events[e].clone();
                    responses[r + 1].events.insert(0, event);
                    responses[r + 1].header_revision = responses[r + 1]
                        .header_revision
                        .max(responses[r].header_revision);
                }
                "swap" => {
                    let Some(next) =
                        (r + 1..responses.len()).find(|&n| !responses[n].events.is_empty())
                    else {
                        continue;
                    };
                    responses.swap(r, next);
                }
                _ => {
                    responses[r].events[e].kv.value = "tampered".into();
                }
            }
            tried[index] += 1;
            let report = check_watches(&simulated.history, &watchers).unwrap();
            assert!(
                report.has(kind),
                "seed {seed}: {how} not caught as {kind:?}:\n{report}"
            );
        }
    }
    assert!(tried.iter().all(|&t| t >= 50), "too few applied: {tried:?}");
}

/// ~10k operations over 50 keys from 8 clients, with lost outcomes: must
/// finish quickly (not asserted; the time is printed).
#[test]
fn ten_thousand_operations_check_quickly() {
    let config = Config {
        seed: 42,
        ops: 10_000,
        keys: 50,
        clients: 8,
        indeterminate: 0.1,
        failed: 0.02,
        watchers: 4,
        ..Config::default()
    };
    let simulated = simulate(&config);
    let started = Instant::now();
    let report = check_linearizability(&simulated.history, &Limits::default()).unwrap();
    let kv = started.elapsed();
    assert!(report.is_ok(), "{report}");
    let started = Instant::now();
    let watches = check_watches(&simulated.history, &simulated.watchers).unwrap();
    assert!(watches.is_ok(), "{watches}");
    println!(
        "10k ops / 50 keys / 8 clients: linearizability {:.3}s ({} states), watches {:.3}s ({} events)",
        kv.as_secs_f64(),
        report.stats.states_explored,
        started.elapsed().as_secs_f64(),
        watches.stats.events
    );
}

/// The same with a third of the outcomes lost, as under partitions.
#[test]
fn ten_thousand_operations_with_many_lost_outcomes_check_quickly() {
    let config = Config {
        seed: 44,
        ops: 10_000,
        keys: 50,
        clients: 16,
        indeterminate: 0.3,
        failed: 0.05,
        watchers: 4,
        ..Config::default()
    };
    let simulated = simulate(&config);
    let started = Instant::now();
    let report = check_linearizability(&simulated.history, &Limits::default()).unwrap();
    assert!(report.is_ok(), "{report}");
    println!(
        "10k ops / 50 keys / 16 clients / 30% lost: linearizability {:.3}s ({} states)",
        started.elapsed().as_secs_f64(),
        report.stats.states_explored
    );
}

/// The same on one hot key: the search is per key, so this is its worst.
#[test]
fn ten_thousand_operations_on_one_key_check() {
    let config = Config {
        seed: 43,
        ops: 10_000,
        keys: 1,
        clients: 8,
        indeterminate: 0.1,
        ..Config::default()
    };
    let simulated = simulate(&config);
    let started = Instant::now();
    let report = check_linearizability(&simulated.history, &Limits::default()).unwrap();
    assert!(report.is_ok(), "{report}");
    println!(
        "10k ops / 1 key / 8 clients: linearizability {:.3}s ({} states)",
        started.elapsed().as_secs_f64(),
        report.stats.states_explored
    );
}
