//! Shared by the integration tests: short constructors for hand-written
//! histories, and a simulator that records linearizable histories (and
//! watch streams) of a sequential etcd store with random overlaps.

#![allow(dead_code)]

use std::collections::BTreeMap;

use basalt_check::{
    check_linearizability, check_watches, Bytes, Compare, Event, EventKind, History, KeyValue,
    Limits, OpId, Operation, Outcome, Report, Request, Response, WatchRequest, WatchResponse,
    Watcher,
};

// ---- hand-written histories -------------------------------------------

pub fn put(client: u64, call: u64, ret: u64, key: &str, value: &str, revision: i64) -> Operation {
    Operation::new(
        client,
        call,
        ret,
        Request::put(key, value),
        Outcome::Ok(Response::put(revision)),
    )
}

pub fn put_lost(client: u64, call: u64, key: &str, value: &str) -> Operation {
    Operation::new(
        client,
        call,
        call + 1_000_000,
        Request::put(key, value),
        Outcome::Indeterminate,
    )
}

pub fn put_failed(client: u64, call: u64, key: &str, value: &str) -> Operation {
    Operation::new(
        client,
        call,
        call + 1,
        Request::put(key, value),
        Outcome::Failed,
    )
}

pub fn get(
    client: u64,
    call: u64,
    ret: u64,
    key: &str,
    value: Option<&str>,
    mod_revision: i64,
    header: i64,
) -> Operation {
    Operation::new(
        client,
        call,
        ret,
        Request::get(key),
        Outcome::Ok(Response::get(value, mod_revision, header)),
    )
}

pub fn get_lost(client: u64, call: u64, key: &str) -> Operation {
    Operation::new(
        client,
        call,
        call + 1_000_000,
        Request::get(key),
        Outcome::Indeterminate,
    )
}

pub fn delete(client: u64, call: u64, ret: u64, key: &str, deleted: i64, header: i64) -> Operation {
    Operation::new(
        client,
        call,
        ret,
        Request::delete(key),
        Outcome::Ok(Response::delete(deleted, header)),
    )
}

pub fn delete_lost(client: u64, call: u64, key: &str) -> Operation {
    Operation::new(
        client,
        call,
        call + 1_000_000,
        Request::delete(key),
        Outcome::Indeterminate,
    )
}

pub fn cas(
    client: u64,
    call: u64,
    ret: u64,
    key: &str,
    expected: i64,
    value: &str,
    revision: i64,
) -> Operation {
    let request = Request::cas_put(key, expected, value);
    Operation::new(
        client,
        call,
        ret,
        request,
        Outcome::Ok(Response::cas_succeeded(revision)),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn cas_failed(
    client: u64,
    call: u64,
    ret: u64,
    key: &str,
    expected: i64,
    value: &str,
    header: i64,
    current: Option<(&str, i64)>,
) -> Operation {
    let request = Request::cas_put(key, expected, value);
    Operation::new(
        client,
        call,
        ret,
        request,
        Outcome::Ok(Response::cas_failed(header, current)),
    )
}

pub fn cas_lost(client: u64, call: u64, key: &str, expected: i64, value: &str) -> Operation {
    Operation::new(
        client,
        call,
        call + 1_000_000,
        Request::cas_put(key, expected, value),
        Outcome::Indeterminate,
    )
}

pub fn linearizability(ops: Vec<Operation>) -> Report {
    check_linearizability(&History::from(ops), &Limits::default()).expect("a valid history")
}

pub fn watching(ops: Vec<Operation>, watchers: &[Watcher]) -> Report {
    check_watches(&History::from(ops), watchers).expect("a valid recording")
}

pub fn watcher(id: u64, request: WatchRequest, responses: Vec<WatchResponse>) -> Watcher {
    Watcher {
        id,
        client: 0,
        request,
        resumes: None,
        responses,
    }
}

/// A response with these events; its header is the last event's revision.
pub fn events(events: Vec<Event>) -> WatchResponse {
    let header_revision = events.iter().map(Event::revision).max().unwrap_or(0);
    WatchResponse {
        header_revision,
        events,
        ..WatchResponse::default()
    }
}

pub fn progress(header_revision: i64) -> WatchResponse {
    WatchResponse {
        header_revision,
        ..WatchResponse::default()
    }
}

/// Panics with the report unless it is exactly OK.
pub fn assert_ok(report: &Report) {
    assert!(report.is_ok(), "expected OK, got:\n{report}");
}

// ---- the simulator ------------------------------------------------------

/// A small deterministic random source (splitmix64), so a seed replays.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Seeded(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub ops: usize,
    pub keys: usize,
    pub clients: usize,
    /// Chance an operation's outcome is lost (then it took effect or not,
    /// half and half).
    pub indeterminate: f64,
    /// Chance an operation failed before taking effect.
    pub failed: f64,
    /// Values unique per write; otherwise drawn from four.
    pub unique_values: bool,
    /// Longest time from call to return.
    pub max_latency: u64,
    pub watchers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            ops: 200,
            keys: 3,
            clients: 4,
            indeterminate: 0.1,
            failed: 0.05,
            unique_values: true,
            max_latency: 100,
            watchers: 0,
        }
    }
}

/// A write the simulated store applied.
#[derive(Clone, Debug)]
pub struct Applied {
    pub revision: i64,
    pub op: OpId,
    pub at: u64,
    pub event: Event,
}

pub struct Simulated {
    pub history: History,
    pub watchers: Vec<Watcher>,
    /// By revision.
    pub applied: Vec<Applied>,
}

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Answered,
    Failed,
    LostApplied,
    LostNotApplied,
}

#[derive(Clone)]
struct Planned {
    client: u64,
    call: u64,
    ret: u64,
    /// When it takes effect: within [call, ret].
    at: u64,
    key: String,
    kind: u64,
    fate: Fate,
}

/// Runs a sequential etcd store (one revision counter, per-key value,
/// create revision, mod revision, version) and records what clients with
/// overlapping calls would have seen: linearizable by construction.
pub fn simulate(config: &Config) -> Simulated {
    let mut rng = Seeded::new(config.seed);
    let plans = plan(config, &mut rng);
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| (plans[i].at, i));

    let mut store: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut revision = 1i64; // etcd starts at revision 1
    let mut ops: Vec<Option<Operation>> = vec![None; plans.len()];
    let mut applied = Vec::new();
    for (serial, &i) in order.iter().enumerate() {
        let plan = &plans[i];
        let value = match config.unique_values {
            true => format!("c{}-{serial}", plan.client),
            false => format!("v{}", rng.below(4)),
        };
        let current = store.get(&plan.key).cloned();
        let request = match plan.kind {
            0..=3 => Request::get(plan.key.as_str()),
            4..=6 => Request::put(plan.key.as_str(), value.as_str()),
            7 => Request::delete(plan.key.as_str()),
            _ => {
                let now = current.as_ref().map_or(0, |kv| kv.mod_revision);
                let expected = match rng.below(3) {
                    0 => (now - 1 - rng.below(3) as i64).max(0),
                    _ => now,
                };
                Request::cas_put(plan.key.as_str(), expected, value.as_str())
            }
        };
        let takes_effect = matches!(plan.fate, Fate::Answered | Fate::LostApplied);
        let mut response = None;
        if takes_effect {
            let (answer, event) = apply(&mut store, &mut revision, &request, current);
            if let Some(event) = event {
                applied.push(Applied {
                    revision,
                    op: OpId(i),
                    at: plan.at,
                    event,
                });
            }
            response = Some(answer);
        }
        let outcome = match (plan.fate, response) {
            (Fate::Answered, Some(response)) => Outcome::Ok(response),
            (Fate::Failed, _) => Outcome::Failed,
            _ => Outcome::Indeterminate,
        };
        ops[i] = Some(Operation::new(
            plan.client,
            plan.call,
            plan.ret,
            request,
            outcome,
        ));
    }
    let history = History::from(
        ops.into_iter()
            .map(|op| op.expect("every plan ran"))
            .collect::<Vec<_>>(),
    );
    let watchers = watch(config, &mut rng, &applied, revision);
    Simulated {
        history,
        watchers,
        applied,
    }
}

fn plan(config: &Config, rng: &mut Seeded) -> Vec<Planned> {
    let mut free_at: Vec<u64> = (0..config.clients)
        .map(|_| rng.below(config.max_latency))
        .collect();
    let mut plans = Vec::with_capacity(config.ops);
    for _ in 0..config.ops {
        let client = rng.below(config.clients as u64);
        let call = free_at[client as usize] + rng.below(config.max_latency / 4 + 1);
        let ret = call + 1 + rng.below(config.max_latency);
        let at = call + rng.below(ret - call + 1);
        let fate = if rng.chance(config.failed) {
            Fate::Failed
        } else if rng.chance(config.indeterminate) {
            if rng.chance(0.5) {
                Fate::LostApplied
            } else {
                Fate::LostNotApplied
            }
        } else {
            Fate::Answered
        };
        // A client whose call was lost moves on without waiting for it.
        free_at[client as usize] = if fate == Fate::Answered {
            ret
        } else {
            call + 1
        };
        let key = format!("k{:02}", rng.below(config.keys as u64));
        plans.push(Planned {
            client,
            call,
            ret,
            at,
            key,
            kind: rng.below(10),
            fate,
        });
    }
    plans
}

/// Applies `request` to the store; the response, and the event if it wrote.
fn apply(
    store: &mut BTreeMap<String, KeyValue>,
    revision: &mut i64,
    request: &Request,
    current: Option<KeyValue>,
) -> (Response, Option<Event>) {
    let key_text = |key: &Bytes| String::from_utf8(key.0.clone()).expect("text keys");
    let mut write = |key: &Bytes, value: &Bytes, store: &mut BTreeMap<String, KeyValue>| {
        *revision += 1;
        let kv = match &current {
            Some(old) => KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: old.create_revision,
                mod_revision: *revision,
                version: old.version + 1,
            },
            None => KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: *revision,
                mod_revision: *revision,
                version: 1,
            },
        };
        store.insert(key_text(key), kv.clone());
        let prev_kv = current.clone();
        Event {
            kind: EventKind::Put,
            kv,
            prev_kv,
        }
    };
    match request {
        Request::Get { .. } => {
            let response = match &current {
                Some(kv) => Response::Get(basalt_check::GetResponse {
                    value: Some(kv.value.clone()),
                    mod_revision: kv.mod_revision,
                    header_revision: *revision,
                }),
                None => Response::get(None, 0, *revision),
            };
            (response, None)
        }
        Request::Put { key, value } => {
            let event = write(key, value, store);
            (Response::put(*revision), Some(event))
        }
        Request::Delete { key } => match &current {
            Some(old) => {
                *revision += 1;
                store.remove(&key_text(key));
                let event = Event::delete(key.clone(), *revision).with_prev_kv(old.clone());
                (Response::delete(1, *revision), Some(event))
            }
            None => (Response::delete(0, *revision), None),
        },
        Request::CasPut {
            key,
            compare,
            value,
        } => {
            let holds = match compare {
                Compare::ModRevision(expected) => {
                    current.as_ref().map_or(0, |kv| kv.mod_revision) == *expected
                }
                Compare::Value(expected) => {
                    current.as_ref().is_some_and(|kv| kv.value == *expected)
                }
            };
            if holds {
                let event = write(key, value, store);
                (Response::cas_succeeded(*revision), Some(event))
            } else {
                let current = current.map(|kv| basalt_check::Current {
                    value: kv.value,
                    mod_revision: kv.mod_revision,
                });
                let response = basalt_check::CasPutResponse {
                    succeeded: false,
                    header_revision: *revision,
                    current,
                };
                (Response::CasPut(response), None)
            }
        }
    }
}

/// Watchers that saw every applied write on their keys from their start
/// revision, a few revisions per response, with occasional progress
/// notifications; received after the write took effect.
fn watch(
    config: &Config,
    rng: &mut Seeded,
    applied: &[Applied],
    last_revision: i64,
) -> Vec<Watcher> {
    let mut watchers = Vec::new();
    for id in 0..config.watchers as u64 {
        let request = match rng.below(2) {
            0 => WatchRequest::prefix("k"),
            _ => WatchRequest::key(format!("k{:02}", rng.below(config.keys as u64))),
        };
        let start = 1 + rng.below(last_revision.max(1) as u64 / 2 + 1) as i64;
        let mut responses = Vec::new();
        let request = if rng.chance(0.3) {
            // From now, created when the store was at start - 1.
            let created = WatchResponse {
                header_revision: start - 1,
                created: true,
                ..WatchResponse::default()
            };
            responses.push(created);
            request.with_prev_kv()
        } else {
            request.starting_at(start).with_prev_kv()
        };
        let mut pending: Vec<Event> = Vec::new();
        let mut received = 0u64;
        for write in applied.iter().filter(|w| w.revision >= start) {
            if !request.contains(write.event.kv.key.as_slice()) {
                continue;
            }
            pending.push(write.event.clone());
            received = received.max(write.at + 1 + rng.below(config.max_latency));
            if rng.chance(0.5) {
                let mut response = events(std::mem::take(&mut pending));
                response.received_at = Some(received);
                responses.push(response);
                if rng.chance(0.1) {
                    let mut notify = progress(write.revision);
                    notify.received_at = Some(received);
                    responses.push(notify);
                }
            }
        }
        if !pending.is_empty() {
            let mut response = events(pending);
            response.received_at = Some(received);
            responses.push(response);
        }
        let watcher = Watcher {
            id,
            client: 100 + id,
            request,
            resumes: None,
            responses,
        };
        watchers.extend(break_and_resume(watcher, rng));
    }
    watchers
}

/// Half the time, breaks the stream after a random response and resumes it
/// as a new watcher from the last revision seen + 1, as a client does after
/// losing its member.
fn break_and_resume(mut watcher: Watcher, rng: &mut Seeded) -> Vec<Watcher> {
    let with_events: Vec<usize> = (0..watcher.responses.len())
        .filter(|&r| !watcher.responses[r].events.is_empty())
        .collect();
    if with_events.len() < 2 || rng.chance(0.5) {
        return vec![watcher];
    }
    let cut = with_events[rng.below(with_events.len() as u64 - 1) as usize] + 1;
    let rest = watcher.responses.split_off(cut);
    let last_seen = watcher.responses.iter().map(|r| match r.events.last() {
        Some(event) => event.revision(),
        None => r.header_revision,
    });
    let resume_at = last_seen.max().expect("kept a response with events") + 1;
    let resumed = Watcher {
        id: watcher.id + 1000,
        client: watcher.client,
        request: watcher.request.clone().starting_at(resume_at),
        resumes: Some(watcher.id),
        responses: rest,
    };
    vec![watcher, resumed]
}
