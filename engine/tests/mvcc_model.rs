//! Property test: `Store` against a plain in-memory model of etcd's MVCC
//! rules, over random sequences of puts, deletes, txns, compactions, lease
//! grants/revokes, reads at old revisions, checkpoints (inline, or split into
//! start / run / finish with other steps in between, sometimes failing
//! between the shard and index commits), reopens and crashes (drop without
//! checkpoint, then replay the log tail as the server would).
//!
//! `PROPTEST_CASES` raises the case count for longer runs.

use std::collections::BTreeMap;

use basalt_engine::mvcc::*;
use proptest::prelude::*;

const KEYS: [&[u8]; 6] = [b"a", b"a\0", b"ab", b"b", b"c", b"\xff"];

#[derive(Debug, Clone, PartialEq)]
struct MVal {
    value: Vec<u8>,
    lease: i64,
    create: i64,
    version: i64,
}

/// (main, sub, state after the change: None = tombstone)
type Versions = Vec<(i64, i64, Option<MVal>)>;

#[derive(Default, Clone)]
struct Model {
    current: i64,
    compacted: i64,
    history: BTreeMap<Vec<u8>, Versions>,
    leases: BTreeMap<i64, i64>,
}

fn kv(key: &[u8], main: i64, v: &MVal) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: v.create,
        mod_revision: main,
        version: v.version,
        value: v.value.clone(),
        lease: v.lease,
    }
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl Model {
    fn new() -> Model {
        Model {
            current: 1,
            ..Model::default()
        }
    }

    fn at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let versions = self.history.get(key)?;
        let (main, _, v) = versions.iter().rev().find(|(m, _, _)| *m <= rev)?;
        v.as_ref().map(|v| kv(key, *main, v))
    }

    fn visible(&self, start: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.history
            .keys()
            .filter(|k| in_range(k, start, end))
            .filter_map(|k| self.at(k, rev))
            .collect()
    }

    fn range(&self, req: &RangeRequest, view_rev: i64) -> Result<RangeResponse, MvccError> {
        if req.revision > view_rev {
            return Err(MvccError::FutureRevision);
        }
        let rev = if req.revision <= 0 {
            view_rev
        } else {
            req.revision
        };
        if rev < self.compacted {
            return Err(MvccError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        let mut kvs = self.visible(&req.key, &req.range_end, rev);
        if req.sort_order == SortOrder::Descend {
            kvs.reverse();
        }
        let count = kvs.len() as i64;
        if req.count_only {
            kvs.clear();
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse { kvs, more, count })
    }

    fn write(
        &mut self,
        main: i64,
        sub: &mut i64,
        key: &[u8],
        v: Option<MVal>,
        events: &mut Vec<Event>,
    ) {
        let prev = self.at(key, i64::MAX);
        let event = match &v {
            Some(val) => Event {
                kind: EventKind::Put,
                kv: kv(key, main, val),
                prev_kv: prev,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.to_vec(),
                    mod_revision: main,
                    ..Default::default()
                },
                prev_kv: prev,
            },
        };
        events.push(event);
        self.history
            .entry(key.to_vec())
            .or_default()
            .push((main, *sub, v));
        *sub += 1;
    }

    fn put(
        &mut self,
        main: i64,
        sub: &mut i64,
        req: &PutRequest,
        events: &mut Vec<Event>,
    ) -> Result<PutResponse, MvccError> {
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(MvccError::LeaseNotFound(req.lease));
        }
        let prev = self.at(&req.key, i64::MAX);
        let (create, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (main, 1),
        };
        let v = MVal {
            value: req.value.clone(),
            lease: req.lease,
            create,
            version,
        };
        self.write(main, sub, &req.key, Some(v), events);
        Ok(PutResponse {
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete(
        &mut self,
        main: i64,
        sub: &mut i64,
        req: &DeleteRangeRequest,
        events: &mut Vec<Event>,
    ) -> DeleteRangeResponse {
        let victims = self.visible(&req.key, &req.range_end, i64::MAX);
        for v in &victims {
            self.write(main, sub, &v.key, None, events);
        }
        DeleteRangeResponse {
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv { victims } else { vec![] },
        }
    }

    /// Applies one op; on error restores the model as it was.
    fn apply(&mut self, op: &Op) -> Result<Applied, MvccError> {
        let saved = self.clone();
        let result = self.apply_inner(op);
        if result.is_err() {
            *self = saved;
        }
        result
    }

    fn apply_inner(&mut self, op: &Op) -> Result<Applied, MvccError> {
        let main = self.current + 1;
        let mut sub = 0;
        let mut events = Vec::new();
        let response = match op {
            Op::Put(req) => OpResponse::Put(self.put(main, &mut sub, req, &mut events)?),
            Op::DeleteRange(req) => {
                OpResponse::DeleteRange(self.delete(main, &mut sub, req, &mut events))
            }
            Op::Txn(txn) => {
                let succeeded = txn.compare.iter().all(|c| {
                    let cur = self.at(&c.key, i64::MAX);
                    match (&c.target, &cur) {
                        (CompareTarget::Value(_), None) => false,
                        (CompareTarget::Version(n), _) => {
                            let ver = cur.as_ref().map_or(0, |kv| kv.version);
                            match c.result {
                                CompareResult::Equal => ver == *n,
                                CompareResult::Greater => ver > *n,
                                CompareResult::Less => ver < *n,
                                CompareResult::NotEqual => ver != *n,
                            }
                        }
                        (CompareTarget::Value(v), Some(kv)) => kv.value == *v,
                        _ => unreachable!("model only generates version/value equality"),
                    }
                });
                let ops = if succeeded {
                    &txn.success
                } else {
                    &txn.failure
                };
                let mut responses = Vec::new();
                for op in ops {
                    responses.push(match op {
                        RequestOp::Put(p) => {
                            ResponseOp::Put(self.put(main, &mut sub, p, &mut events)?)
                        }
                        RequestOp::DeleteRange(d) => {
                            ResponseOp::DeleteRange(self.delete(main, &mut sub, d, &mut events))
                        }
                        RequestOp::Range(r) => {
                            let view = if sub > 0 { main } else { self.current };
                            ResponseOp::Range(self.range(r, view)?)
                        }
                        RequestOp::Txn(_) => unreachable!("model generates flat txns"),
                    });
                }
                OpResponse::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
            Op::Compact { revision } => {
                if *revision <= self.compacted {
                    return Err(MvccError::Compacted {
                        requested: *revision,
                        compacted: self.compacted,
                    });
                }
                if *revision > self.current {
                    return Err(MvccError::FutureRevision);
                }
                for versions in self.history.values_mut() {
                    let upto = versions.iter().filter(|(m, _, _)| m <= revision).count();
                    let keep_last = upto > 0 && versions[upto - 1].2.is_some();
                    let drop = if keep_last { upto - 1 } else { upto };
                    versions.drain(..drop);
                }
                self.history.retain(|_, v| !v.is_empty());
                self.compacted = *revision;
                OpResponse::Compact
            }
            Op::LeaseGrant { id, ttl } => {
                if self.leases.contains_key(id) {
                    return Err(MvccError::LeaseExists(*id));
                }
                self.leases.insert(*id, *ttl);
                OpResponse::LeaseGrant
            }
            Op::LeaseRevoke { id } => {
                if self.leases.remove(id).is_none() {
                    return Err(MvccError::LeaseNotFound(*id));
                }
                let keys: Vec<Vec<u8>> = self
                    .visible(b"\0", b"\0", i64::MAX)
                    .into_iter()
                    .filter(|kv| kv.lease == *id)
                    .map(|kv| kv.key)
                    .collect();
                for k in keys {
                    self.write(main, &mut sub, &k, None, &mut events);
                }
                OpResponse::LeaseRevoke
            }
        };
        if sub > 0 {
            self.current = main;
        }
        Ok(Applied {
            revision: self.current,
            response,
            events,
        })
    }

    fn events_from(&self, start: i64) -> Vec<Event> {
        let mut all = Vec::new();
        for (key, versions) in &self.history {
            for (i, (main, sub, v)) in versions.iter().enumerate() {
                if *main < start {
                    continue;
                }
                let prev = i
                    .checked_sub(1)
                    .and_then(|p| versions[p].2.as_ref().map(|pv| kv(key, versions[p].0, pv)));
                let event = match v {
                    Some(val) => Event {
                        kind: EventKind::Put,
                        kv: kv(key, *main, val),
                        prev_kv: prev,
                    },
                    None => Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            mod_revision: *main,
                            ..Default::default()
                        },
                        prev_kv: prev,
                    },
                };
                all.push(((*main, *sub), event));
            }
        }
        all.sort_by_key(|(r, _)| *r);
        all.into_iter().map(|(_, e)| e).collect()
    }

    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.visible(b"\0", b"\0", i64::MAX)
            .into_iter()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect()
    }
}

#[derive(Debug, Clone)]
enum TOp {
    Put { key: usize, value: u8 },
    Delete { key: usize },
    Range { key: usize, all: bool },
}

#[derive(Debug, Clone)]
enum Step {
    Put {
        key: usize,
        value: u8,
        lease: i64,
    },
    Delete {
        key: usize,
        end: Option<usize>,
    },
    Txn {
        key: usize,
        version: i64,
        success: Vec<TOp>,
        failure: Vec<TOp>,
    },
    Compact {
        back: i64,
    },
    Grant {
        id: i64,
    },
    Revoke {
        id: i64,
    },
    Range {
        key: usize,
        end: Option<usize>,
        back: i64,
        limit: i64,
        count_only: bool,
        keys_only: bool,
        descend: bool,
    },
    Events {
        back: i64,
    },
    Checkpoint,
    /// Start a checkpoint task (if none is out).
    CheckpointStart,
    /// Run the task started, failing before the index commit if `fail`.
    CheckpointRun {
        fail: bool,
    },
    /// Give a run task back to the store.
    CheckpointFinish,
    Reopen,
    Crash,
}

fn top() -> impl Strategy<Value = TOp> {
    prop_oneof![
        (0..KEYS.len(), any::<u8>()).prop_map(|(key, value)| TOp::Put { key, value }),
        (0..KEYS.len()).prop_map(|key| TOp::Delete { key }),
        (0..KEYS.len(), any::<bool>()).prop_map(|(key, all)| TOp::Range { key, all }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS.len();
    let end = prop::option::of(0..=KEYS.len());
    prop_oneof![
        8 => (key.clone(), any::<u8>(), 0i64..4).prop_map(|(key, value, lease)| Step::Put { key, value, lease }),
        3 => (key.clone(), end.clone()).prop_map(|(key, end)| Step::Delete { key, end }),
        3 => (key.clone(), 0i64..3, prop::collection::vec(top(), 0..4), prop::collection::vec(top(), 0..3))
            .prop_map(|(key, version, success, failure)| Step::Txn { key, version, success, failure }),
        1 => (-1i64..6).prop_map(|back| Step::Compact { back }),
        1 => (1i64..4).prop_map(|id| Step::Grant { id }),
        1 => (1i64..4).prop_map(|id| Step::Revoke { id }),
        4 => (key, end, -1i64..8, 0i64..4, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(key, end, back, limit, count_only, keys_only, descend)| Step::Range { key, end, back, limit, count_only, keys_only, descend }),
        1 => (0i64..8).prop_map(|back| Step::Events { back }),
        1 => Just(Step::Checkpoint),
        2 => Just(Step::CheckpointStart),
        2 => prop::bool::weighted(0.2).prop_map(|fail| Step::CheckpointRun { fail }),
        2 => Just(Step::CheckpointFinish),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
    ]
}

fn end_of(end: Option<usize>) -> Vec<u8> {
    match end {
        None => vec![],
        Some(i) if i == KEYS.len() => vec![0],
        Some(i) => KEYS[i].to_vec(),
    }
}

fn tops(ops: &[TOp]) -> Vec<RequestOp> {
    // etcd refuses txns that write one key twice; keep the first write per key.
    let mut written = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for op in ops {
        match op {
            TOp::Put { key, value } => {
                if written.insert(*key) {
                    out.push(RequestOp::Put(PutRequest {
                        key: KEYS[*key].to_vec(),
                        value: vec![*value],
                        prev_kv: true,
                        ..Default::default()
                    }))
                }
            }
            TOp::Delete { key } => {
                if written.insert(*key) {
                    out.push(RequestOp::DeleteRange(DeleteRangeRequest {
                        key: KEYS[*key].to_vec(),
                        range_end: vec![],
                        prev_kv: true,
                    }))
                }
            }
            TOp::Range { key, all } => out.push(RequestOp::Range(RangeRequest {
                key: KEYS[*key].to_vec(),
                range_end: if *all { vec![0] } else { vec![] },
                ..Default::default()
            })),
        }
    }
    out
}

/// Errors compare by kind (messages may differ).
fn same<T: PartialEq + std::fmt::Debug>(
    a: &Result<T, MvccError>,
    b: &Result<T, MvccError>,
) -> Result<(), TestCaseError> {
    match (a, b) {
        (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
        (Err(x), Err(y)) => prop_assert_eq!(
            std::mem::discriminant(x),
            std::mem::discriminant(y),
            "{} vs {}",
            x,
            y
        ),
        _ => prop_assert!(false, "store {:?} vs model {:?}", a, b),
    }
    Ok(())
}

fn torn(e: &MvccError) -> bool {
    matches!(e, MvccError::CheckpointTorn { .. })
}

/// Runs `steps` against the model and a store with `shards` shard trees.
fn run(steps: Vec<Step>, shards: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        shards,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), opts.clone()).unwrap();
    prop_assert_eq!(store.shards(), shards);
    let mut model = Model::new();
    let mut index = 0u64;
    // Ops since the last checkpoint: what the WAL would replay after a crash.
    let mut tail: Vec<(u64, Op)> = Vec::new();
    // A checkpoint split over steps: started, then run (with its index).
    let mut task: Option<CheckpointTask> = None;
    let mut done: Option<(u64, CheckpointDone)> = None;
    // Drops the store and what is in flight, reopens, replays the tail.
    let crash = |store: Store,
                 task: &mut Option<CheckpointTask>,
                 done: &mut Option<(u64, CheckpointDone)>,
                 tail: &mut Vec<(u64, Op)>|
     -> Store {
        drop((task.take(), done.take(), store));
        let mut store = Store::open(dir.path(), opts.clone()).unwrap();
        // A task that ran but was not finished may have made more durable.
        tail.retain(|(i, _)| *i > store.applied_index());
        for (i, op) in tail.iter() {
            let _ = store.apply(*i, op);
        }
        store
    };
    for step in steps {
        let op = match step.clone() {
            Step::Put { key, value, lease } => Some(Op::Put(PutRequest {
                key: KEYS[key].to_vec(),
                value: vec![value],
                lease,
                prev_kv: true,
                ..Default::default()
            })),
            Step::Delete { key, end } => Some(Op::DeleteRange(DeleteRangeRequest {
                key: KEYS[key].to_vec(),
                range_end: end_of(end),
                prev_kv: true,
            })),
            Step::Txn {
                key,
                version,
                success,
                failure,
            } => Some(Op::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(version),
                    key: KEYS[key].to_vec(),
                    range_end: vec![],
                }],
                success: tops(&success),
                failure: tops(&failure),
            })),
            Step::Compact { back } => Some(Op::Compact {
                revision: model.current - back,
            }),
            Step::Grant { id } => Some(Op::LeaseGrant { id, ttl: id * 10 }),
            Step::Revoke { id } => Some(Op::LeaseRevoke { id }),
            Step::Range {
                key,
                end,
                back,
                limit,
                count_only,
                keys_only,
                descend,
            } => {
                let req = RangeRequest {
                    key: KEYS[key].to_vec(),
                    range_end: end_of(end),
                    revision: if back == 0 {
                        0
                    } else {
                        model.current - back + 1
                    },
                    limit,
                    count_only,
                    keys_only,
                    sort_order: if descend {
                        SortOrder::Descend
                    } else {
                        SortOrder::None
                    },
                    ..Default::default()
                };
                same(&store.range(&req), &model.range(&req, model.current))?;
                None
            }
            Step::Events { back } => {
                let start = (model.current - back).max(model.compacted).max(1);
                let got = store.events_from(b"\0", b"\0", start, usize::MAX).unwrap();
                prop_assert_eq!(got, model.events_from(start));
                None
            }
            Step::Checkpoint | Step::Reopen => {
                // Settle a split checkpoint first. A store that asks for a
                // reopen (a checkpoint failed between its trees and the
                // retry would write the same shard) gets one: a restart.
                if let Some(t) = task.take() {
                    done = Some((t.index(), t.run()));
                }
                if let Some((_, d)) = done.take() {
                    // Its error (injected, or torn) was checked at the run.
                    let _ = store.finish_checkpoint(d);
                }
                if let Err(e) = store.checkpoint() {
                    prop_assert!(torn(&e), "{}", e);
                    store = crash(store, &mut task, &mut done, &mut tail);
                    store.checkpoint().unwrap();
                }
                prop_assert_eq!(store.applied_index(), index);
                tail.clear();
                if matches!(step, Step::Reopen) {
                    drop(store);
                    store = Store::open(dir.path(), opts.clone()).unwrap();
                }
                None
            }
            Step::CheckpointStart => {
                if task.is_some() || done.is_some() {
                    prop_assert!(matches!(
                        store.start_checkpoint(),
                        Err(MvccError::CheckpointInFlight)
                    ));
                } else {
                    task = store.start_checkpoint().unwrap();
                    if let Some(t) = &task {
                        prop_assert_eq!(t.index(), index);
                    }
                }
                None
            }
            Step::CheckpointRun { fail } => {
                if let Some(mut t) = task.take() {
                    if fail {
                        t.fail_before_index_commit();
                    }
                    let at = t.index();
                    // On another thread, as the server runs it.
                    let d = std::thread::spawn(move || t.run()).join().unwrap();
                    match d.error() {
                        None => prop_assert!(!fail),
                        Some(e) => prop_assert!(fail || torn(e), "{}", e),
                    }
                    done = Some((at, d));
                }
                None
            }
            Step::CheckpointFinish => {
                if let Some((at, d)) = done.take() {
                    let ok = d.is_ok();
                    let before = store.applied_index();
                    match store.finish_checkpoint(d) {
                        Ok(()) => {
                            prop_assert!(ok);
                            prop_assert_eq!(store.applied_index(), at);
                            tail.retain(|(i, _)| *i > at);
                        }
                        // The store goes on serving (checked below); its
                        // writes stay pending for the next checkpoint.
                        Err(e) => {
                            prop_assert!(!ok, "{}", e);
                            prop_assert_eq!(store.applied_index(), before);
                        }
                    }
                }
                None
            }
            Step::Crash => {
                store = crash(store, &mut task, &mut done, &mut tail);
                None
            }
        };
        if let Some(op) = op {
            index += 1;
            let got = store.apply(index, &op);
            let want = model.apply(&op);
            same(&got, &want)?;
            tail.push((index, op));
        }
        if let Err(e) = store.verify() {
            prop_assert!(false, "integrity: {}", e);
        }
        prop_assert_eq!(store.current_revision(), model.current);
        prop_assert_eq!(store.compact_revision(), model.compacted);
        let leases: Vec<(i64, i64, Vec<Vec<u8>>)> = store
            .leases()
            .unwrap()
            .into_iter()
            .map(|l| (l.id, l.ttl, l.keys))
            .collect();
        let want: Vec<(i64, i64, Vec<Vec<u8>>)> = model
            .leases
            .iter()
            .map(|(&id, &ttl)| (id, ttl, model.lease_keys(id)))
            .collect();
        prop_assert_eq!(leases, want);
    }
    // Everything ever retained is readable and equal at every revision.
    for rev in model.compacted.max(1)..=model.current {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        };
        same(&store.range(&req), &model.range(&req, model.current))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]
    #[test]
    fn store_matches_model_one_shard(steps in prop::collection::vec(step(), 1..80)) {
        run(steps, 1)?;
    }

    #[test]
    fn store_matches_model_four_shards(steps in prop::collection::vec(step(), 1..80)) {
        run(steps, 4)?;
    }
}
