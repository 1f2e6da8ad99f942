//! The guarantees a stream keeps against everything else known: reliable
//! delivery, prev_kv that is the key's latest write, events that some
//! recorded operation wrote, and revisions that do not run behind what a
//! watch already showed.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::stream::Delivery;
use super::Stream;
use crate::bytes::Bytes;
use crate::history::OpId;
use crate::report::{offset, Report, ViolationKind};
use crate::revision::{Change, Evidence, Fact, KeyWrites, Ledger, PossibleWriters, Seen, Source};

/// Most missing events one violation lists.
const MAX_LISTED_MISSING: usize = 10;

/// Reliable: every write known to have happened on a watched key, at a
/// revision the stream covers, was delivered.
pub(super) fn check_reliable(
    stream: &Stream,
    delivery: &Delivery,
    ledger: &Ledger,
    evidence: &Evidence<'_>,
    report: &mut Report,
) {
    let request = &evidence.watchers[stream.watchers[0]].request;
    let mut missing = Vec::new();
    let mut count = 0;
    for &(first, last) in &delivery.windows {
        for (&revision, facts) in ledger.by_revision.range(first..=last) {
            let mut keys: HashSet<&Bytes> = HashSet::new();
            for fact in best_first(facts) {
                let key = &fact.key;
                if !request.contains(key.as_slice())
                    || delivery.delivered.contains(&(revision, key.clone()))
                {
                    continue;
                }
                if keys.insert(key) {
                    count += 1;
                    if missing.len() < MAX_LISTED_MISSING {
                        missing.push(format!(
                            "  revision {revision}: {}",
                            evidence.fact(revision, fact)
                        ));
                    }
                }
            }
        }
    }
    if count == 0 {
        return;
    }
    let ids: Vec<String> = stream
        .watchers
        .iter()
        .map(|&w| evidence.watchers[w].id.to_string())
        .collect();
    let windows: Vec<String> = delivery
        .windows
        .iter()
        .map(|(a, b)| format!("{a}..={b}"))
        .collect();
    let mut detail = format!(
        "watcher {} covered revisions {} but missed {count} events known to have happened:\n",
        ids.join(" then "),
        windows.join(", ")
    );
    detail.push_str(&missing.join("\n"));
    if count > missing.len() {
        detail.push_str(&format!("\n  … and {} more", count - missing.len()));
    }
    report.violation(
        ViolationKind::WatchMissingEvent,
        Some(&request.key),
        Vec::new(),
        detail,
    );
}

/// Acknowledged writes first, then reads, then watch events: the best
/// evidence a revision happened.
fn best_first(facts: &[Fact]) -> Vec<&Fact> {
    let mut sorted: Vec<&Fact> = facts.iter().collect();
    sorted.sort_by_key(|fact| match fact.source {
        Source::Write(_) => 0,
        Source::Read(_) => 1,
        Source::Event { .. } => 2,
        Source::PrevKv { .. } => 3,
    });
    sorted
}

/// A prev_kv is the key's latest write before the event: no known write
/// of the key falls between the two.
pub(super) fn check_prev_kv_is_latest(
    ledger: &Ledger,
    writes: &KeyWrites<'_>,
    evidence: &Evidence<'_>,
    report: &mut Report,
) {
    for (&previous, facts) in &ledger.by_revision {
        for fact in facts {
            let Source::PrevKv {
                watcher,
                response,
                event,
            } = fact.source
            else {
                continue;
            };
            let revision = evidence.watchers[watcher].responses[response].events[event].revision();
            let Some(between) = writes.first_between(&fact.key, previous, revision) else {
                continue;
            };
            let witness = ledger.by_revision[&between]
                .iter()
                .find(|f| f.key == fact.key)
                .expect("indexed");
            let detail = format!(
                "{}: its prev_kv is the write at revision {previous}, but the key was written in between:\n  revision {between}: {}",
                evidence.event_position(watcher, response, event),
                evidence.fact(between, witness)
            );
            report.violation(
                ViolationKind::WatchPrevKvWrong,
                Some(&fact.key),
                Vec::new(),
                detail,
            );
        }
    }
}

/// What a set of revisions no acknowledged write got have in common.
#[derive(Default)]
struct Unexplained<'a> {
    revisions: BTreeSet<i64>,
    seen_by_watch: bool,
    first_received: Option<u64>,
    sample: Option<(i64, &'a Fact)>,
}

/// Every event comes from a recorded operation: the acknowledged write
/// that got its revision, called before the event was received; or else an
/// indeterminate operation that made that change, one revision each.
pub(super) fn check_provenance(ledger: &Ledger, evidence: &Evidence<'_>, report: &mut Report) {
    let mut unexplained: HashMap<(&Bytes, &Change), Unexplained<'_>> = HashMap::new();
    for (&revision, facts) in &ledger.by_revision {
        if let Some(write) = facts.iter().find_map(|f| match f.source {
            Source::Write(id) => Some(id),
            _ => None,
        }) {
            received_before_call(revision, facts, write, evidence, report);
            continue;
        }
        for fact in facts {
            let group = unexplained.entry((&fact.key, &fact.change)).or_default();
            group.revisions.insert(revision);
            group.sample.get_or_insert((revision, fact));
            if fact.source.is_watch() {
                group.seen_by_watch = true;
                if let Some(at) = received_at(evidence, fact.source) {
                    group.first_received =
                        Some(group.first_received.map_or(at, |first| first.min(at)));
                }
            }
        }
    }
    let mut groups: Vec<_> = unexplained
        .into_iter()
        .filter(|(_, group)| group.seen_by_watch)
        .collect();
    groups.sort_by_key(|(_, group)| group.revisions.first().copied());
    let possible = PossibleWriters::new(evidence.history);
    for ((key, change), group) in groups {
        let writers = possible.of(key, change);
        let (revision, sample) = group.sample.expect("a group has a fact");
        let seen = evidence.fact(revision, sample);
        let revisions: Vec<String> = group.revisions.iter().map(i64::to_string).collect();
        let why = if writers.is_empty() {
            format!("no recorded operation wrote it (no acknowledged write got revision {revision}, and no indeterminate one made this change)")
        } else if group.revisions.len() > writers.len() {
            format!(
                "it happened at revisions {}, but only {} indeterminate operations made this change: {}",
                revisions.join(", "),
                writers.len(),
                list(writers)
            )
        } else {
            let first_call = writers
                .iter()
                .map(|&id| evidence.history.op(id).called_at)
                .min()
                .expect("not empty");
            match group.first_received {
                Some(at) if at < first_call => format!(
                    "it was received at {}, before any operation that made this change was called ({})",
                    offset(at, evidence.origin),
                    list(writers)
                ),
                _ => continue,
            }
        };
        let detail = format!("revision {revision}: {seen}\n{why}");
        report.violation(
            ViolationKind::WatchEventNotInHistory,
            Some(key),
            writers.to_vec(),
            detail,
        );
    }
}

/// Events of an acknowledged write's revision received before its call.
fn received_before_call(
    revision: i64,
    facts: &[Fact],
    write: OpId,
    evidence: &Evidence<'_>,
    report: &mut Report,
) {
    let called_at = evidence.history.op(write).called_at;
    for fact in facts {
        if received_at(evidence, fact.source).is_none_or(|at| at >= called_at) {
            continue;
        }
        let detail = format!(
            "revision {revision}: {}\nbut the write that got revision {revision} was only called later: {}",
            evidence.fact(revision, fact),
            evidence.op(write)
        );
        report.violation(
            ViolationKind::WatchEventNotInHistory,
            Some(&fact.key),
            vec![write],
            detail,
        );
    }
}

fn received_at(evidence: &Evidence<'_>, source: Source) -> Option<u64> {
    match source {
        Source::Event {
            watcher, response, ..
        }
        | Source::PrevKv {
            watcher, response, ..
        } => evidence.watchers[watcher].responses[response].received_at,
        Source::Write(_) | Source::Read(_) => None,
    }
}

fn list(ops: &[OpId]) -> String {
    ops.iter()
        .map(OpId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An operation called after a watcher received revision r saw the store
/// at r or later: r was committed before the call. (etcd documents no
/// linearizability between watch and KV calls, but a linearizable read
/// after a commit sees it, so this holds for etcd's implementation.)
pub(super) fn check_real_time(evidence: &Evidence<'_>, report: &mut Report) {
    let mut where_seen: Vec<(usize, usize)> = Vec::new();
    let mut points = Vec::new();
    for (w, watcher) in evidence.watchers.iter().enumerate() {
        for (r, response) in watcher.responses.iter().enumerate() {
            let Some(at) = response.received_at else {
                continue;
            };
            let events = response.events.iter().map(|e| e.revision()).max();
            let progress = response
                .is_progress_notify()
                .then_some(response.header_revision);
            let Some(revision) = events.max(progress) else {
                continue;
            };
            points.push((at, revision, where_seen.len()));
            where_seen.push((w, r));
        }
    }
    let seen = Seen::new(points.into_iter());
    for (id, op) in evidence.history.iter() {
        let Some(response) = op.response() else {
            continue;
        };
        let Some((highest, index)) = seen.highest_before(op.called_at) else {
            continue;
        };
        let revision = response.header_revision();
        if revision < highest || (response.wrote() && revision == highest) {
            let (w, r) = where_seen[index];
            let watcher = &evidence.watchers[w];
            let received = watcher.responses[r]
                .received_at
                .expect("only received responses are points");
            let detail = format!(
                "watcher {} had received revision {highest} at {} (response {r}); then {} was called and got revision {revision}\n  {}",
                watcher.id,
                offset(received, evidence.origin),
                id,
                evidence.op(id)
            );
            report.violation(
                ViolationKind::StaleAfterWatch,
                Some(op.key()),
                vec![id],
                detail,
            );
        }
    }
}
