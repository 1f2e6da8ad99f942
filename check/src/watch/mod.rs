//! Did every watch keep etcd's watch guarantees, and agree with the KV
//! history?
//!
//! A [`Watcher`] is one Watch request and the responses it received, in
//! order. A watcher that resumed a broken one (on another member, from the
//! last revision it saw + 1) names it in [`Watcher::resumes`]; [`stitch`]
//! joins such chains into one [`Stream`], which is checked as a single
//! watch, so "exactly once across the resume" is the ordinary unique and
//! reliable checks on the joined stream.
//!
//! Per stream ([`stream`]): events in revision order, each (revision, key)
//! once, the events of a revision in one response, none below the start
//! revision or at or below a progress notification's revision, none after a
//! cancel, versions and create revisions that chain, prev_kv equal to the
//! key's previous event.
//!
//! Against everything known ([`delivery`]): every write known to have
//! happened (acknowledged, or seen by a read or by any watcher) on a
//! watched key, at a revision the stream covers, is delivered; events agree
//! with the operation that got their revision, with reads, and with other
//! watchers; an event no acknowledged write explains comes from an
//! indeterminate operation that wrote that change, one event per such
//! operation at most; an operation called after a watcher received
//! revision r does not get a lower revision.
//!
//! The covered revisions run from the stream's start (its start revision,
//! or with 0 the created response's header + 1) to the last revision it saw
//! (the last event's, or a later progress notification's). A history that
//! leaves out writes to watched keys will show events "not in history".

mod delivery;
mod stitch;
mod stream;

use std::fmt;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use self::stitch::{stitch, Stream};
use crate::bytes::Bytes;
use crate::error::Error;
use crate::history::{ClientId, History};
use crate::report::Report;
use crate::revision::{self, Evidence, Fact, KeyWrites, Ledger, Source};

/// A watcher's name in a recording; unique in it.
pub type WatcherId = u64;

/// One Watch request and the responses it received, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watcher {
    pub id: WatcherId,
    #[serde(default)]
    pub client: ClientId,
    pub request: WatchRequest,
    /// The watcher this one resumed, from that one's last revision + 1.
    #[serde(default)]
    pub resumes: Option<WatcherId>,
    #[serde(default)]
    pub responses: Vec<WatchResponse>,
}

/// What a watcher asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub key: Bytes,
    /// etcd's meaning: absent for `key` alone, `"\0"` for every key from
    /// `key` on, otherwise the keys in `[key, range_end)`.
    #[serde(default)]
    pub range_end: Option<Bytes>,
    /// 0: from the revision after the one current at creation.
    #[serde(default)]
    pub start_revision: i64,
    #[serde(default)]
    pub prev_kv: bool,
}

/// One response on a watch stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub header_revision: i64,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    /// Set when canceled because the start revision was compacted.
    #[serde(default)]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    /// When the client received it (the history's clock), if recorded.
    #[serde(default)]
    pub received_at: Option<u64>,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub kv: KeyValue,
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// etcd's mvccpb.KeyValue, less the lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Bytes,
    #[serde(default)]
    pub value: Bytes,
    #[serde(default)]
    pub create_revision: i64,
    pub mod_revision: i64,
    #[serde(default)]
    pub version: i64,
}

impl WatchRequest {
    /// Watches `key` alone, from now.
    pub fn key(key: impl Into<Bytes>) -> Self {
        WatchRequest {
            key: key.into(),
            range_end: None,
            start_revision: 0,
            prev_kv: false,
        }
    }

    /// Watches every key that starts with `prefix`, from now.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let prefix = prefix.into();
        let range_end = prefix_end(prefix.as_slice());
        WatchRequest {
            key: prefix,
            range_end: Some(range_end),
            start_revision: 0,
            prev_kv: false,
        }
    }

    pub fn starting_at(self, start_revision: i64) -> Self {
        WatchRequest {
            start_revision,
            ..self
        }
    }

    pub fn with_prev_kv(self) -> Self {
        WatchRequest {
            prev_kv: true,
            ..self
        }
    }

    /// Whether `key` is watched.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.range_end {
            None => key == self.key.as_slice(),
            Some(end) if end.as_slice() == [0] => key >= self.key.as_slice(),
            Some(end) if end.is_empty() => key == self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && key < end.as_slice(),
        }
    }
}

/// etcd's range end for a prefix: the prefix with its last byte below
/// 0xff incremented, the rest cut; `"\0"` (every key) if there is none.
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes(end);
        }
    }
    Bytes(vec![0])
}

impl WatchResponse {
    /// etcd's progress notification: nothing but a header revision,
    /// promising every event up to it was delivered.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.created && !self.canceled && self.compact_revision == 0
    }
}

impl Event {
    pub fn put(
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        create_revision: i64,
        mod_revision: i64,
        version: i64,
    ) -> Self {
        let kv = KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision,
            mod_revision,
            version,
        };
        Event {
            kind: EventKind::Put,
            kv,
            prev_kv: None,
        }
    }

    pub fn delete(key: impl Into<Bytes>, mod_revision: i64) -> Self {
        let kv = KeyValue {
            key: key.into(),
            mod_revision,
            ..KeyValue::default()
        };
        Event {
            kind: EventKind::Delete,
            kv,
            prev_kv: None,
        }
    }

    pub fn with_prev_kv(self, prev_kv: KeyValue) -> Self {
        Event {
            prev_kv: Some(prev_kv),
            ..self
        }
    }

    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kv = &self.kv;
        match self.kind {
            EventKind::Put => write!(
                f,
                "PUT {} = {} @ {} (create_revision {}, version {})",
                kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.version
            )?,
            EventKind::Delete => write!(f, "DELETE {} @ {}", kv.key, kv.mod_revision)?,
        }
        if let Some(prev) = &self.prev_kv {
            write!(f, ", prev_kv {} @ {}", prev.value, prev.mod_revision)?;
        }
        Ok(())
    }
}

/// Checks every watcher against etcd's watch guarantees and against the
/// KV history (see the module docs).
pub fn check_watches(history: &History, watchers: &[Watcher]) -> Result<Report, Error> {
    let started = Instant::now();
    history.validate()?;
    let streams = stitch(watchers)?;
    let evidence = Evidence::new(history, watchers);
    let mut report = Report::default();
    report.stats.operations = history.ops.len();
    report.stats.keys = history
        .ops
        .iter()
        .map(|op| op.key())
        .collect::<std::collections::HashSet<_>>()
        .len();
    report.stats.watchers = watchers.len();
    report.stats.events = watchers
        .iter()
        .flat_map(|w| &w.responses)
        .map(|r| r.events.len())
        .sum();

    let mut ledger = Ledger::from_history(history);
    add_watch_facts(watchers, &mut ledger);
    ledger.report_conflicts(&evidence, true, &mut report);
    let writes = KeyWrites::new(&ledger);
    for stream in &streams {
        let delivery = stream::check(stream, &evidence, &writes, &mut report);
        delivery::check_reliable(stream, &delivery, &ledger, &evidence, &mut report);
    }
    delivery::check_prev_kv_is_latest(&ledger, &writes, &evidence, &mut report);
    delivery::check_provenance(&ledger, &evidence, &mut report);
    delivery::check_real_time(&evidence, &mut report);
    report.stats.elapsed = started.elapsed();
    Ok(report)
}

/// What every event, and every prev_kv, says a revision wrote.
fn add_watch_facts(watchers: &[Watcher], ledger: &mut Ledger) {
    for (w, watcher) in watchers.iter().enumerate() {
        for (r, response) in watcher.responses.iter().enumerate() {
            for (e, event) in response.events.iter().enumerate() {
                let kv = &event.kv;
                let meta =
                    (event.kind == EventKind::Put).then_some((kv.create_revision, kv.version));
                let change = revision::change_of(event.kind, &kv.value);
                let source = Source::Event {
                    watcher: w,
                    response: r,
                    event: e,
                };
                ledger.add(
                    kv.mod_revision,
                    Fact {
                        key: kv.key.clone(),
                        change,
                        meta,
                        source,
                    },
                );
                if let Some(prev) = &event.prev_kv {
                    let change = revision::change_of(EventKind::Put, &prev.value);
                    let meta = Some((prev.create_revision, prev.version));
                    let source = Source::PrevKv {
                        watcher: w,
                        response: r,
                        event: e,
                    };
                    ledger.add(
                        prev.mod_revision,
                        Fact {
                            key: prev.key.clone(),
                            change,
                            meta,
                            source,
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_etcd() {
        let one = WatchRequest::key("a");
        assert!(one.contains(b"a") && !one.contains(b"ab"));
        let prefix = WatchRequest::prefix("a");
        assert_eq!(prefix.range_end, Some(Bytes::from("b")));
        assert!(prefix.contains(b"a") && prefix.contains(b"az") && !prefix.contains(b"b"));
        let all = WatchRequest {
            range_end: Some(Bytes(vec![0])),
            ..WatchRequest::key(vec![0u8])
        };
        assert!(all.contains(b"anything") && !all.contains(b""));
        assert_eq!(prefix_end(&[b'a', 0xff]), Bytes::from("b"));
        assert_eq!(prefix_end(&[0xff]), Bytes(vec![0]));
    }
}
