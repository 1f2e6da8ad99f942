//! Facts about revisions that one key's search cannot see.
//!
//! etcd's revision is a logical clock shared by every key: each write gets
//! a revision of its own, and the revisions follow the real-time order of
//! operations. So across all keys: two acknowledged writes never share a
//! revision; an operation called after another returned never gets a lower
//! revision (a write: never one not higher); and everything seen of one
//! revision (the write that got it, reads of the key at that mod_revision,
//! watch events, prev_kv) tells the same story: one key, one value.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::bytes::Bytes;
use crate::history::{History, OpId, Outcome, Request, Response};
use crate::report::{offset, Report, ViolationKind};
use crate::watch::{EventKind, Watcher};

/// Where a [`Fact`] was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The acknowledged write that got the revision.
    Write(OpId),
    /// A get, or a failed compare-and-put, that saw the key at this
    /// mod_revision.
    Read(OpId),
    /// An event: indices into the watchers, their responses, its events.
    Event {
        watcher: usize,
        response: usize,
        event: usize,
    },
    /// The prev_kv of that event.
    PrevKv {
        watcher: usize,
        response: usize,
        event: usize,
    },
}

impl Source {
    pub(crate) fn is_watch(self) -> bool {
        matches!(self, Source::Event { .. } | Source::PrevKv { .. })
    }

    pub(crate) fn is_write(self) -> bool {
        matches!(self, Source::Write(_))
    }
}

/// What one revision did to a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Change {
    Put(Bytes),
    Delete,
}

impl Change {
    pub(crate) fn describe(&self, key: &Bytes) -> String {
        match self {
            Change::Put(value) => format!("put {key} = {value}"),
            Change::Delete => format!("delete {key}"),
        }
    }
}

/// One source's account of one revision.
#[derive(Clone, Debug)]
pub(crate) struct Fact {
    pub key: Bytes,
    pub change: Change,
    /// (create_revision, version), when a watch tells them.
    pub meta: Option<(i64, i64)>,
    pub source: Source,
}

impl Fact {
    fn disagrees(&self, other: &Fact) -> bool {
        let meta_differs = matches!((self.meta, other.meta), (Some(a), Some(b)) if a != b);
        self.key != other.key || self.change != other.change || meta_differs
    }
}

/// Every fact seen, by revision.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub by_revision: BTreeMap<i64, Vec<Fact>>,
}

impl Ledger {
    /// The facts the operations tell: acknowledged writes and what reads saw.
    pub(crate) fn from_history(history: &History) -> Self {
        let mut ledger = Ledger::default();
        for (id, op) in history.iter() {
            let Some(response) = op.response() else {
                continue;
            };
            let key = op.key().clone();
            let (revision, change, source) = match (&op.request, response) {
                (Request::Put { value, .. } | Request::CasPut { value, .. }, r) if r.wrote() => (
                    r.header_revision(),
                    Change::Put(value.clone()),
                    Source::Write(id),
                ),
                (Request::Delete { .. }, r) if r.wrote() => {
                    (r.header_revision(), Change::Delete, Source::Write(id))
                }
                (_, Response::Get(get)) => match &get.value {
                    Some(value) => (
                        get.mod_revision,
                        Change::Put(value.clone()),
                        Source::Read(id),
                    ),
                    None => continue,
                },
                (_, Response::CasPut(cas)) => match &cas.current {
                    Some(current) => (
                        current.mod_revision,
                        Change::Put(current.value.clone()),
                        Source::Read(id),
                    ),
                    None => continue,
                },
                _ => continue,
            };
            ledger.add(
                revision,
                Fact {
                    key,
                    change,
                    meta: None,
                    source,
                },
            );
        }
        ledger
    }

    pub(crate) fn add(&mut self, revision: i64, fact: Fact) {
        self.by_revision.entry(revision).or_default().push(fact);
    }

    /// Reports facts of one revision that disagree. With `watch_only`,
    /// only disagreements a watch takes part in (the KV check reports the
    /// others).
    pub(crate) fn report_conflicts(
        &self,
        evidence: &Evidence<'_>,
        watch_only: bool,
        report: &mut Report,
    ) {
        for (&revision, facts) in &self.by_revision {
            // Acknowledged writes first: they are the reference.
            let reference = facts
                .iter()
                .find(|f| f.source.is_write())
                .unwrap_or(&facts[0]);
            for fact in facts {
                let both_writes = fact.source.is_write() && reference.source.is_write();
                if both_writes || !fact.disagrees(reference) {
                    continue;
                }
                let watch = fact.source.is_watch() || reference.source.is_watch();
                if watch_only && !watch {
                    continue;
                }
                let kind = match (fact.source, reference.source) {
                    (Source::PrevKv { .. }, _) | (_, Source::PrevKv { .. }) => {
                        ViolationKind::WatchPrevKvWrong
                    }
                    _ if watch => ViolationKind::WatchEventConflict,
                    _ => ViolationKind::RevisionConflict,
                };
                let detail = format!(
                    "revision {revision}: two accounts disagree\n  {}\n  {}",
                    evidence.fact(revision, reference),
                    evidence.fact(revision, fact)
                );
                report.violation(
                    kind,
                    Some(&fact.key),
                    evidence.ops_of(&[reference.source, fact.source]),
                    detail,
                );
            }
        }
    }
}

/// The revisions known to have written each key.
pub(crate) struct KeyWrites<'a> {
    by_key: HashMap<&'a Bytes, BTreeSet<i64>>,
}

impl<'a> KeyWrites<'a> {
    pub(crate) fn new(ledger: &'a Ledger) -> Self {
        let mut by_key: HashMap<&Bytes, BTreeSet<i64>> = HashMap::new();
        for (&revision, facts) in &ledger.by_revision {
            for fact in facts {
                by_key.entry(&fact.key).or_default().insert(revision);
            }
        }
        KeyWrites { by_key }
    }

    /// The first revision strictly between `after` and `before` known to
    /// have written `key`.
    pub(crate) fn first_between(&self, key: &Bytes, after: i64, before: i64) -> Option<i64> {
        if before <= after + 1 {
            return None;
        }
        self.by_key
            .get(key)?
            .range(after + 1..before)
            .next()
            .copied()
    }

    pub(crate) fn any_between(&self, key: &Bytes, after: i64, before: i64) -> bool {
        self.first_between(key, after, before).is_some()
    }
}

/// What reports need to name operations and events.
pub(crate) struct Evidence<'a> {
    pub history: &'a History,
    pub watchers: &'a [Watcher],
    pub origin: u64,
}

impl<'a> Evidence<'a> {
    pub(crate) fn new(history: &'a History, watchers: &'a [Watcher]) -> Self {
        let watched = watchers
            .iter()
            .flat_map(|w| &w.responses)
            .filter_map(|r| r.received_at);
        let origin = history
            .ops
            .iter()
            .map(|op| op.called_at)
            .chain(watched)
            .min()
            .unwrap_or(0);
        Evidence {
            history,
            watchers,
            origin,
        }
    }

    pub(crate) fn op(&self, id: OpId) -> String {
        self.history.op(id).describe(id, self.origin)
    }

    pub(crate) fn ops_of(&self, sources: &[Source]) -> Vec<OpId> {
        sources
            .iter()
            .filter_map(|source| match *source {
                Source::Write(id) | Source::Read(id) => Some(id),
                Source::Event { .. } | Source::PrevKv { .. } => None,
            })
            .collect()
    }

    /// `watcher 3, response 5, event 0 (received at +1.2ms)`.
    pub(crate) fn event_position(&self, watcher: usize, response: usize, event: usize) -> String {
        let w = &self.watchers[watcher];
        let received = match w.responses[response].received_at {
            Some(at) => format!(" (received at {})", offset(at, self.origin)),
            None => String::new(),
        };
        format!(
            "watcher {}, response {response}, event {event}{received}",
            w.id
        )
    }

    pub(crate) fn fact(&self, revision: i64, fact: &Fact) -> String {
        let change = fact.change.describe(&fact.key);
        let meta = match fact.meta {
            Some((create, version)) => format!(" (create_revision {create}, version {version})"),
            None => String::new(),
        };
        match fact.source {
            Source::Write(id) => format!("{change} got it: {}", self.op(id)),
            Source::Read(id) => format!(
                "{change} per a read of mod_revision {revision}: {}",
                self.op(id)
            ),
            Source::Event {
                watcher,
                response,
                event,
            } => {
                format!(
                    "{change}{meta} per {}",
                    self.event_position(watcher, response, event)
                )
            }
            Source::PrevKv {
                watcher,
                response,
                event,
            } => {
                format!(
                    "{change}{meta} per the prev_kv of {}",
                    self.event_position(watcher, response, event)
                )
            }
        }
    }
}

/// Reports acknowledged writes that share a revision.
pub(crate) fn check_unique(history: &History, evidence: &Evidence<'_>, report: &mut Report) {
    let mut first: HashMap<i64, OpId> = HashMap::new();
    for (id, op) in history.iter() {
        let Some(revision) = op.written_revision() else {
            continue;
        };
        if let Some(&earlier) = first.get(&revision) {
            let detail = format!(
                "two acknowledged writes got revision {revision}\n  {}\n  {}",
                evidence.op(earlier),
                evidence.op(id)
            );
            report.violation(
                ViolationKind::DuplicateRevision,
                Some(op.key()),
                vec![earlier, id],
                detail,
            );
        } else {
            first.insert(revision, id);
        }
    }
}

/// The revisions acknowledged writes got, on any key.
pub(crate) fn acknowledged(history: &History) -> HashSet<i64> {
    history
        .ops
        .iter()
        .filter_map(|op| op.written_revision())
        .collect()
}

/// Reports an operation whose revision is lower than one returned before
/// it was called (for a write: not higher).
pub(crate) fn check_real_time(history: &History, evidence: &Evidence<'_>, report: &mut Report) {
    let returned = Seen::new(
        history
            .iter()
            .filter_map(|(id, op)| Some((op.returned_at, op.response()?.header_revision(), id.0))),
    );
    for (id, op) in history.iter() {
        let Some(response) = op.response() else {
            continue;
        };
        let Some((highest, by)) = returned.highest_before(op.called_at) else {
            continue;
        };
        let revision = response.header_revision();
        let behind = revision < highest || (response.wrote() && revision == highest);
        if behind {
            let by = OpId(by);
            let detail = format!(
                "{} returned revision {highest}, then {} was called and got revision {revision}{}\n  {}\n  {}",
                by,
                id,
                if response.wrote() { " for a write" } else { "" },
                evidence.op(by),
                evidence.op(id)
            );
            report.violation(
                ViolationKind::RevisionWentBackwards,
                Some(op.key()),
                vec![by, id],
                detail,
            );
        }
    }
}

/// Revisions seen at known times, for "the highest revision seen before t".
pub(crate) struct Seen {
    /// (time, revision, who) by time.
    points: Vec<(u64, i64, usize)>,
    /// Per point: the highest (revision, who) up to it.
    highest: Vec<(i64, usize)>,
}

impl Seen {
    pub(crate) fn new(points: impl Iterator<Item = (u64, i64, usize)>) -> Self {
        let mut points: Vec<_> = points.collect();
        points.sort_unstable();
        let mut highest = Vec::with_capacity(points.len());
        let mut best: Option<(i64, usize)> = None;
        for &(_, revision, who) in &points {
            if best.is_none_or(|(top, _)| revision > top) {
                best = Some((revision, who));
            }
            highest.push(best.expect("set above"));
        }
        Seen { points, highest }
    }

    /// The highest revision seen strictly before `time`, and who saw it.
    pub(crate) fn highest_before(&self, time: u64) -> Option<(i64, usize)> {
        let count = self.points.partition_point(|&(at, _, _)| at < time);
        count.checked_sub(1).map(|last| self.highest[last])
    }
}

/// The change a watch event makes.
pub(crate) fn change_of(kind: EventKind, value: &Bytes) -> Change {
    match kind {
        EventKind::Put => Change::Put(value.clone()),
        EventKind::Delete => Change::Delete,
    }
}

/// Indeterminate operations by the change they would make: the
/// candidates for a revision no acknowledged write got.
pub(crate) struct PossibleWriters {
    by_change: HashMap<(Bytes, Change), Vec<OpId>>,
}

impl PossibleWriters {
    pub(crate) fn new(history: &History) -> Self {
        let mut by_change: HashMap<(Bytes, Change), Vec<OpId>> = HashMap::new();
        for (id, op) in history
            .iter()
            .filter(|(_, op)| op.outcome == Outcome::Indeterminate)
        {
            let change = match &op.request {
                Request::Put { value, .. } | Request::CasPut { value, .. } => {
                    Change::Put(value.clone())
                }
                Request::Delete { .. } => Change::Delete,
                Request::Get { .. } => continue,
            };
            by_change
                .entry((op.key().clone(), change))
                .or_default()
                .push(id);
        }
        PossibleWriters { by_change }
    }

    /// The indeterminate operations that could have made `change` to `key`.
    pub(crate) fn of(&self, key: &Bytes, change: &Change) -> &[OpId] {
        self.by_change
            .get(&(key.clone(), change.clone()))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_before_is_strict_in_time() {
        let seen = Seen::new([(10, 5, 0), (20, 3, 1), (30, 9, 2)].into_iter());
        assert_eq!(seen.highest_before(10), None);
        assert_eq!(seen.highest_before(11), Some((5, 0)));
        assert_eq!(seen.highest_before(25), Some((5, 0)));
        assert_eq!(seen.highest_before(31), Some((9, 2)));
    }
}
