//! The guarantees one stream keeps on its own: ordered, unique, atomic,
//! bookmarkable, within its start revision and its cancel, and events that
//! chain (versions, create revisions, prev_kv) as the key's writes do.

use std::collections::{HashMap, HashSet};

use super::{Event, EventKind, KeyValue, Stream, WatchResponse, Watcher};
use crate::bytes::Bytes;
use crate::report::{Report, ViolationKind};
use crate::revision::{Evidence, KeyWrites};

/// What a stream delivered, for the checks against everything known.
pub(super) struct Delivery {
    /// (revision, key) of every event delivered.
    pub delivered: HashSet<(i64, Bytes)>,
    /// Inclusive revision ranges the stream covers: from its start to the
    /// last revision it saw, less what a compaction cut out.
    pub windows: Vec<(i64, i64)>,
}

pub(super) fn check(
    stream: &Stream,
    evidence: &Evidence<'_>,
    writes: &KeyWrites<'_>,
    report: &mut Report,
) -> Delivery {
    let mut walk = Walk {
        evidence,
        writes,
        report,
        delivered: HashSet::new(),
        last: None,
        bookmark: 0,
        previous_by_key: HashMap::new(),
        windows: Vec::new(),
        window_start: None,
        last_seen: 0,
        compacted: false,
    };
    for &watcher in &stream.watchers {
        walk.segment(watcher);
    }
    walk.finish()
}

struct Walk<'a, 'r> {
    evidence: &'a Evidence<'a>,
    writes: &'a KeyWrites<'a>,
    report: &'r mut Report,
    delivered: HashSet<(i64, Bytes)>,
    /// The highest event so far: (revision, watcher, response).
    last: Option<(i64, usize, usize)>,
    /// The highest revision a progress notification declared complete.
    bookmark: i64,
    /// Each key's last event so far.
    previous_by_key: HashMap<Bytes, (EventKind, KeyValue)>,
    windows: Vec<(i64, i64)>,
    window_start: Option<i64>,
    last_seen: i64,
    /// The previous segment ended canceled by a compaction.
    compacted: bool,
}

/// Where an event sits, for reports.
#[derive(Clone, Copy)]
struct At {
    watcher: usize,
    response: usize,
    event: usize,
}

impl Walk<'_, '_> {
    fn segment(&mut self, w: usize) {
        let watcher = &self.evidence.watchers[w];
        let start = start_of(watcher);
        if self.compacted {
            self.close_window();
            self.window_start = start.map(|s| s.covered);
        } else if self.window_start.is_none() {
            self.window_start = start.map(|s| s.covered);
        }
        self.compacted = false;
        let mut canceled_at: Option<usize> = None;
        for (r, response) in watcher.responses.iter().enumerate() {
            if let (Some(canceled), false) = (canceled_at, response.events.is_empty()) {
                let detail = format!(
                    "{} carries events, but response {canceled} canceled the watch",
                    self.evidence.event_position(w, r, 0)
                );
                self.violation(ViolationKind::WatchEventAfterCancel, None, detail);
            }
            self.compaction(r, watcher, response);
            for (e, event) in response.events.iter().enumerate() {
                self.event(
                    At {
                        watcher: w,
                        response: r,
                        event: e,
                    },
                    watcher,
                    response,
                    event,
                    start,
                );
            }
            if response.is_progress_notify() {
                self.bookmark = self.bookmark.max(response.header_revision);
                self.last_seen = self.last_seen.max(response.header_revision);
            }
            if response.canceled {
                canceled_at.get_or_insert(r);
                self.compacted |= response.compact_revision > 0;
            }
        }
    }

    fn finish(mut self) -> Delivery {
        self.close_window();
        Delivery {
            delivered: self.delivered,
            windows: self.windows,
        }
    }

    fn close_window(&mut self) {
        if let Some(start) = self.window_start.take() {
            if start <= self.last_seen {
                self.windows.push((start, self.last_seen));
            }
        }
    }

    /// A compaction cancel is only right for a start revision below it.
    fn compaction(&mut self, r: usize, watcher: &Watcher, response: &WatchResponse) {
        let compacted = response.compact_revision;
        if compacted == 0 {
            return;
        }
        let start = watcher.request.start_revision;
        let wrong = if !response.canceled {
            Some("it sets compact_revision without canceling".to_string())
        } else if start == 0 || start >= compacted {
            Some(format!("it was canceled as compacted at {compacted}, but it starts at revision {start}, which that compaction keeps"))
        } else {
            None
        };
        if let Some(why) = wrong {
            let detail = format!("watcher {}, response {r}: {why}", watcher.id);
            self.violation(ViolationKind::WatchMalformedEvent, None, detail);
        }
    }

    fn event(
        &mut self,
        at: At,
        watcher: &Watcher,
        response: &WatchResponse,
        event: &Event,
        start: Option<Start>,
    ) {
        let revision = event.revision();
        let key = &event.kv.key;
        let here = format!(
            "{}: {event}",
            self.evidence
                .event_position(at.watcher, at.response, at.event)
        );
        self.window_start.get_or_insert(revision);
        if !watcher.request.contains(key.as_slice()) {
            self.violation(
                ViolationKind::WatchMalformedEvent,
                Some(key),
                format!("{here}\nthe key is not watched"),
            );
        }
        if let Some(start) = start.filter(|start| revision < start.lowest) {
            let detail = format!("{here}\nthe watch starts at revision {}", start.covered);
            self.violation(ViolationKind::WatchEventBeforeStart, Some(key), detail);
        }
        if self.delivered.contains(&(revision, key.clone())) {
            let detail = format!("{here}\nthis revision of the key was delivered before");
            self.violation(ViolationKind::WatchDuplicateEvent, Some(key), detail);
            return;
        }
        self.order(at, revision, key, &here);
        if revision <= self.bookmark {
            let detail = format!(
                "{here}\na progress notification had declared revision {} complete",
                self.bookmark
            );
            self.violation(ViolationKind::WatchBookmarkBroken, Some(key), detail);
        }
        if revision > response.header_revision {
            let detail = format!(
                "{here}\nthe response's header revision {} is behind it",
                response.header_revision
            );
            self.violation(ViolationKind::WatchMalformedEvent, Some(key), detail);
        }
        self.content(event, &here);
        self.delivered.insert((revision, key.clone()));
        self.last_seen = self.last_seen.max(revision);
        if self.last.is_none_or(|(last, _, _)| revision >= last) {
            self.last = Some((revision, at.watcher, at.response));
        }
        let previous = self
            .previous_by_key
            .get(key)
            .is_none_or(|(_, kv)| kv.mod_revision < revision);
        if previous {
            self.previous_by_key
                .insert(key.clone(), (event.kind, event.kv.clone()));
        }
    }

    /// Ordered, and atomic: a revision's events in one response.
    fn order(&mut self, at: At, revision: i64, key: &Bytes, here: &str) {
        let Some((last, watcher, response)) = self.last else {
            return;
        };
        if revision < last {
            let detail = format!("{here}\nit comes after an event of revision {last}");
            self.violation(ViolationKind::WatchOutOfOrder, Some(key), detail);
        } else if revision == last && (watcher, response) != (at.watcher, at.response) {
            let detail = format!(
                "{here}\nrevision {revision} already had events in {}",
                self.evidence.event_position(watcher, response, 0)
            );
            self.violation(ViolationKind::WatchSplitRevision, Some(key), detail);
        }
    }

    /// The event agrees with itself and with the key's previous event.
    fn content(&mut self, event: &Event, here: &str) {
        let key = &event.kv.key;
        if event.kind == EventKind::Put {
            if let Some(why) = self.versions_wrong(event) {
                let detail = format!("{here}\n{why}");
                self.violation(ViolationKind::WatchMalformedEvent, Some(key), detail);
            }
        }
        // What prev_kv says is checked against everything known, in
        // `delivery`; here only that it can be a previous write at all.
        if let Some(prev) = &event.prev_kv {
            if prev.key != *key || prev.mod_revision >= event.kv.mod_revision {
                let detail = format!("{here}\nits prev_kv is of another key, or not older");
                self.violation(ViolationKind::WatchPrevKvWrong, Some(key), detail);
            }
        }
    }

    /// Why a put event's version and create revision cannot be right, on
    /// their own or after the key's previous event.
    fn versions_wrong(&self, event: &Event) -> Option<String> {
        let kv = &event.kv;
        if kv.version < 1 || kv.create_revision < 1 || kv.create_revision > kv.mod_revision {
            return Some("its version or create_revision is impossible".into());
        }
        if (kv.version == 1) != (kv.create_revision == kv.mod_revision) {
            return Some("version 1 goes with create_revision == mod_revision, and only it".into());
        }
        // Compared with the key's previous event only if nothing known
        // happened to the key in between: a gap is for the reliability
        // check to report, not a malformed event.
        let (kind, previous) = self.previous_by_key.get(&kv.key)?;
        let adjacent = previous.mod_revision < kv.mod_revision
            && !self
                .writes
                .any_between(&kv.key, previous.mod_revision, kv.mod_revision);
        if !adjacent {
            return None;
        }
        match kind {
            EventKind::Put
                if (kv.create_revision, kv.version)
                    != (previous.create_revision, previous.version + 1) =>
            {
                Some(format!(
                    "the key's previous event (revision {}) had create_revision {}, version {}",
                    previous.mod_revision, previous.create_revision, previous.version
                ))
            }
            EventKind::Delete if kv.version != 1 => Some(format!(
                "the key was deleted at revision {}, so this creates it: version 1",
                previous.mod_revision
            )),
            _ => None,
        }
    }

    fn violation(&mut self, kind: ViolationKind, key: Option<&Bytes>, detail: String) {
        self.report.violation(kind, key, Vec::new(), detail);
    }
}

/// Where a watcher starts, if it can be told.
#[derive(Clone, Copy)]
struct Start {
    /// No event below it may be delivered.
    lowest: i64,
    /// Every known write from it on must be.
    covered: i64,
}

/// A watcher's start: its start revision; or, watching from now (0), the
/// created response's header revision + 1, with an event at the header
/// itself allowed too, since the server may read that header just after a
/// write it already watches.
fn start_of(watcher: &Watcher) -> Option<Start> {
    if watcher.request.start_revision > 0 {
        let start = watcher.request.start_revision;
        return Some(Start {
            lowest: start,
            covered: start,
        });
    }
    let created = watcher.responses.iter().find(|r| r.created)?;
    Some(Start {
        lowest: created.header_revision,
        covered: created.header_revision + 1,
    })
}
