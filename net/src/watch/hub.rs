//! The watch hub: every watch stream of the sequencer's executor, its
//! watchers, and the responses queued for each stream.
//!
//! Watchers are either *synced* (they have every event up to the store's
//! current revision; [`Hub::publish`] hands them each new revision as it is
//! applied) or *unsynced* (they still need history; [`Hub::catch_up`] reads
//! it from the store in bounded steps). A watcher starts unsynced when its
//! start revision is in the past, and becomes unsynced again when its
//! buffer of queued responses is full: publishing never waits for a slow
//! client, the watcher just falls back to reading history once the client
//! drains its stream (etcd's unsynced set; etcd-io/etcd#18109).
//!
//! Invariant: every revision below a watcher's `next_rev` that concerned it
//! has been queued for it, and none at or above it. Publish only delivers
//! revision `next_rev` or later (a future start revision waits there) and
//! sets `next_rev` to the revision at which it gives up on a full buffer;
//! catch-up reads history from `next_rev`. So switching between the two
//! never loses or repeats a revision. Publish looks only at the watchers
//! the [`WatcherIndex`] names for the changed keys. Everything
//! here runs on one executor without awaiting, so no revision can be applied
//! between reading history up to the current revision and marking the
//! watcher synced.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use basalt_engine::mvcc::{Event, EventKind, MvccError, Store};

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::wire;

use super::range::KeyRange;

/// Identifies one Watch call (gRPC stream) within the hub.
pub type StreamId = u64;

/// etcd's `clientv3.InvalidWatchID`: the id of responses that belong to no
/// watcher (a failed create, a `RequestProgress` answer).
pub const INVALID_WATCH_ID: i64 = -1;

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// Responses a stream may have queued before its client's further
/// requests wait (etcd blocks its reader on a full control channel too):
/// a client that sends creates without reading answers cannot grow the
/// queue without bound.
pub const MAX_STREAM_BACKLOG: usize = 4096;

/// etcd's error texts for a create request it refuses (sent as the
/// `cancel_reason` of a created-and-canceled response).
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How often watchers that asked for `progress_notify` get an empty
    /// response carrying the current revision, if they got nothing else.
    pub progress_interval: Duration,
    /// Responses one watcher may have queued before it stops receiving live
    /// events and is caught up from history instead.
    pub watcher_buffer: usize,
    /// Most events read from history in one catch-up step of one watcher
    /// (a revision is never split, so a step may read more).
    pub catch_up_events: usize,
    /// `--max-request-bytes`: a watcher that asked for `fragment` gets
    /// responses larger than this split into several.
    pub max_response_bytes: usize,
    /// Whether a stream's caller may create a watcher (auth); `None`:
    /// everyone may.
    pub authorize: Option<WatchAuthorizer>,
}

/// Decides, from a stream's metadata, whether a watcher may be created;
/// `Err` is the reason it is created canceled (etcd checks read permission
/// on the range once, at creation).
#[derive(Clone)]
pub struct WatchAuthorizer(pub std::rc::Rc<AuthorizeWatch>);

/// See [`WatchAuthorizer`].
pub type AuthorizeWatch =
    dyn Fn(&crate::grpc::Metadata, &pb::WatchCreateRequest) -> Result<(), String>;

impl std::fmt::Debug for WatchAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchAuthorizer")
    }
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            // etcd's per-stream channel holds 128 responses.
            watcher_buffer: 128,
            // etcd's watchBatchMaxRevs is 1000 revisions per catch-up batch.
            catch_up_events: 1000,
            max_response_bytes: 3 * 512 * 1024,
            authorize: None,
        }
    }
}

/// Where catch-up reads history: the MVCC store, or a fake in tests.
pub trait History {
    fn current_revision(&self) -> i64;
    fn compact_revision(&self) -> i64;
    /// Events in `[key, range_end)` from `start_revision`, ascending, at most
    /// about `max` without splitting a revision; `Compacted` if that history
    /// is gone.
    fn events_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max: usize,
    ) -> Result<Vec<Event>, MvccError>;
}

impl History for Store {
    fn current_revision(&self) -> i64 {
        Store::current_revision(self)
    }

    fn compact_revision(&self) -> i64 {
        Store::compact_revision(self)
    }

    fn events_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max: usize,
    ) -> Result<Vec<Event>, MvccError> {
        Store::events_from(self, key, range_end, start_revision, max)
    }
}

/// A response waiting in a stream's outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub response: pb::WatchResponse,
    /// Split into fragments if larger than `max_response_bytes`.
    pub fragment: bool,
    /// Counts against this watcher's buffer until taken.
    buffered_for: Option<i64>,
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    next_rev: i64,
    queued: usize,
    /// Got events since the last progress tick (etcd notifies idle ones only).
    active: bool,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        let filtered = match e.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.range.contains(&e.kv.key)
    }

    fn to_pb(&self, e: &Event) -> mvccpb::Event {
        let mut e = e.clone();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        wire::event(e)
    }
}

#[derive(Default)]
struct Stream {
    watchers: BTreeMap<i64, Watcher>,
    /// Ids of watchers that still need history.
    unsynced: BTreeSet<i64>,
    next_auto_id: i64,
    outbox: VecDeque<Outgoing>,
    waker: Option<Waker>,
    /// The request reader, waiting for the outbox to shrink.
    room_waker: Option<Waker>,
    /// A `RequestProgress` waits until every watcher is synced, so the
    /// revision it reports really has been delivered to all of them.
    progress_requested: bool,
    /// Watchers were moved to catch-up with nothing to send (a jump): the
    /// stream's task must run a catch-up step before waiting again.
    catch_up_due: bool,
}

impl Stream {
    fn push(&mut self, out: Outgoing) {
        if let Some(id) = out.buffered_for {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.queued += 1;
            }
        }
        self.outbox.push_back(out);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Which watchers a changed key may concern, so publishing a revision
/// touches only those: single-key watchers by key, range watchers all
/// (they are few: prefixes of resource kinds, not one per object).
#[derive(Default)]
struct WatcherIndex {
    by_key: HashMap<Vec<u8>, Vec<(StreamId, i64)>>,
    ranges: BTreeSet<(StreamId, i64)>,
}

impl WatcherIndex {
    fn add(&mut self, sid: StreamId, id: i64, range: &KeyRange) {
        match range.single_key() {
            Some(k) => self.by_key.entry(k.to_vec()).or_default().push((sid, id)),
            None => {
                self.ranges.insert((sid, id));
            }
        }
    }

    fn remove(&mut self, sid: StreamId, id: i64, range: &KeyRange) {
        match range.single_key() {
            Some(k) => {
                if let Some(v) = self.by_key.get_mut(k) {
                    v.retain(|&w| w != (sid, id));
                    if v.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
            None => {
                self.ranges.remove(&(sid, id));
            }
        }
    }

    /// Watchers that may want some of `events`, each once, ordered.
    fn candidates(&self, events: &[Event]) -> BTreeSet<(StreamId, i64)> {
        let mut out = self.ranges.clone();
        for e in events {
            if let Some(v) = self.by_key.get(&e.kv.key) {
                out.extend(v.iter().copied());
            }
        }
        out
    }
}

/// All watch streams of one executor. `!Send`; shared as
/// `Rc<RefCell<Hub>>` by the Watch handler's calls and the sequencer's
/// apply hook, never borrowed across an await.
pub struct Hub {
    cfg: HubConfig,
    /// cluster_id, member_id and raft_term of every response header.
    header: pb::ResponseHeader,
    streams: HashMap<StreamId, Stream>,
    index: WatcherIndex,
    next_stream: StreamId,
}

impl Hub {
    pub fn new(cfg: HubConfig, header: pb::ResponseHeader) -> Hub {
        Hub {
            cfg,
            header,
            streams: HashMap::new(),
            index: WatcherIndex::default(),
            next_stream: 0,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Updates the term reported in headers (after an election).
    pub fn set_raft_term(&mut self, term: u64) {
        self.header.raft_term = term;
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..self.header
        })
    }

    pub fn open_stream(&mut self) -> StreamId {
        let id = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(id, Stream::default());
        id
    }

    /// Drops a stream, its watchers and whatever it had not sent.
    pub fn close_stream(&mut self, sid: StreamId) {
        if let Some(stream) = self.streams.remove(&sid) {
            for (id, w) in stream.watchers {
                self.index.remove(sid, id, &w.range);
            }
        }
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn watcher_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    /// Whether watcher `watch_id` of stream `sid` is caught up.
    pub fn is_synced(&self, sid: StreamId, watch_id: i64) -> Option<bool> {
        let s = self.streams.get(&sid)?;
        s.watchers
            .contains_key(&watch_id)
            .then(|| !s.unsynced.contains(&watch_id))
    }

    /// Handles one client message. Messages without a request are ignored,
    /// as etcd does.
    pub fn handle(&mut self, sid: StreamId, req: pb::WatchRequest, history: &dyn History) {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(sid, &c, history),
            Some(RequestUnion::CancelRequest(c)) => self.cancel(sid, c.watch_id, history),
            Some(RequestUnion::ProgressRequest(_)) => self.request_progress(sid, history),
            None => {}
        }
    }

    /// Queues the answer to a create request that was refused before it
    /// reached the hub: created and canceled at once, with `reason`.
    pub fn refuse(&mut self, sid: StreamId, reason: String, history: &dyn History) {
        let header = self.header(history.current_revision());
        let Some(stream) = self.streams.get_mut(&sid) else {
            return;
        };
        stream.push(Outgoing {
            response: pb::WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            },
            fragment: false,
            buffered_for: None,
        });
    }

    /// Registers a watcher and queues its created response; one with a past
    /// start revision is caught up at once.
    pub fn create(&mut self, sid: StreamId, req: &pb::WatchCreateRequest, history: &dyn History) {
        let current = history.current_revision();
        let created = self.add_watcher(sid, req, current);
        let header = self.header(current);
        let Some(stream) = self.streams.get_mut(&sid) else {
            return;
        };
        let response = match created {
            Ok(id) => pb::WatchResponse {
                header,
                watch_id: id,
                created: true,
                ..Default::default()
            },
            Err(reason) => pb::WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..Default::default()
            },
        };
        stream.push(Outgoing {
            response,
            fragment: false,
            buffered_for: None,
        });
        if !stream.unsynced.is_empty() {
            self.catch_up(sid, history);
        }
    }

    fn add_watcher(
        &mut self,
        sid: StreamId,
        req: &pb::WatchCreateRequest,
        current: i64,
    ) -> Result<i64, &'static str> {
        use pb::watch_create_request::FilterType;
        let stream = self.streams.get_mut(&sid).ok_or("watch stream closed")?;
        // etcd reads an empty key as "\0", the smallest key there is.
        let key = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        let range = KeyRange::new(&key, &req.range_end).map_err(|_| ERR_EMPTY_RANGE)?;
        // 0 asks the server to choose; etcd picks the lowest free id at or
        // above the last one it chose.
        let id = if req.watch_id == 0 {
            while stream.watchers.contains_key(&stream.next_auto_id) {
                stream.next_auto_id += 1;
            }
            stream.next_auto_id += 1;
            stream.next_auto_id - 1
        } else if stream.watchers.contains_key(&req.watch_id) {
            return Err(ERR_DUPLICATE_ID);
        } else {
            req.watch_id
        };
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        // Start 0 means "after now"; a future start waits among the synced.
        let from_history = req.start_revision != 0 && req.start_revision <= current;
        let next_rev = if from_history {
            req.start_revision
        } else {
            req.start_revision.max(current + 1)
        };
        self.index.add(sid, id, &range);
        stream.watchers.insert(
            id,
            Watcher {
                key,
                range_end: req.range_end.clone(),
                range,
                no_put: has(FilterType::Noput),
                no_delete: has(FilterType::Nodelete),
                prev_kv: req.prev_kv,
                progress_notify: req.progress_notify,
                fragment: req.fragment,
                next_rev,
                queued: 0,
                active: false,
            },
        );
        if from_history {
            stream.unsynced.insert(id);
        }
        Ok(id)
    }

    /// Removes a watcher and queues its canceled response; responses it had
    /// not yet sent are dropped. An unknown id gets no answer (as in etcd).
    pub fn cancel(&mut self, sid: StreamId, watch_id: i64, history: &dyn History) {
        let header = self.header(history.current_revision());
        let Some(stream) = self.streams.get_mut(&sid) else {
            return;
        };
        let Some(w) = stream.watchers.remove(&watch_id) else {
            return;
        };
        self.index.remove(sid, watch_id, &w.range);
        stream.unsynced.remove(&watch_id);
        stream.outbox.retain(|o| o.buffered_for != Some(watch_id));
        stream.push(Outgoing {
            response: pb::WatchResponse {
                header,
                watch_id,
                canceled: true,
                ..Default::default()
            },
            fragment: false,
            buffered_for: None,
        });
        self.answer_progress_request(sid, history);
    }

    /// `RequestProgress`: a response with watch id -1 and the current
    /// revision, once every watcher of the stream has been given everything
    /// up to it.
    pub fn request_progress(&mut self, sid: StreamId, history: &dyn History) {
        if let Some(stream) = self.streams.get_mut(&sid) {
            stream.progress_requested = true;
        }
        self.answer_progress_request(sid, history);
    }

    fn answer_progress_request(&mut self, sid: StreamId, history: &dyn History) {
        let header = self.header(history.current_revision());
        let Some(stream) = self.streams.get_mut(&sid) else {
            return;
        };
        if stream.progress_requested && stream.unsynced.is_empty() {
            stream.progress_requested = false;
            stream.push(Outgoing {
                response: pb::WatchResponse {
                    header,
                    watch_id: INVALID_WATCH_ID,
                    ..Default::default()
                },
                fragment: false,
                buffered_for: None,
            });
        }
    }

    /// Hands revision `revision`'s events (all of one applied entry) to
    /// every synced watcher they concern: one response per watcher. Never
    /// blocks; a watcher with a full buffer is moved to catch-up.
    ///
    /// No events means the store jumped to `revision` without its events
    /// being fed (a snapshot from the leader installed over history that
    /// the leader had compacted): every watcher not yet past it catches up
    /// from history, which cancels it with the compact revision if its
    /// events are gone, as etcd does.
    pub fn publish(&mut self, revision: i64, events: &[Event]) {
        if events.is_empty() {
            self.jump(revision);
            return;
        }
        let header = self.header(revision);
        let candidates = self.index.candidates(events);
        for (sid, id) in candidates {
            let Some(stream) = self.streams.get_mut(&sid) else {
                continue;
            };
            let Some(w) = stream.watchers.get_mut(&id) else {
                continue;
            };
            if w.next_rev > revision || stream.unsynced.contains(&id) {
                continue;
            }
            let evs: Vec<mvccpb::Event> = events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.to_pb(e))
                .collect();
            if evs.is_empty() {
                continue;
            }
            if w.queued >= self.cfg.watcher_buffer {
                // Catch-up starts at this revision: everything before it
                // that concerned the watcher was delivered.
                w.next_rev = revision;
                stream.unsynced.insert(id);
                continue;
            }
            w.next_rev = revision + 1;
            w.active = true;
            let fragment = w.fragment;
            stream.push(Outgoing {
                response: pb::WatchResponse {
                    header,
                    watch_id: id,
                    events: evs,
                    ..Default::default()
                },
                fragment,
                buffered_for: Some(id),
            });
        }
    }

    /// Moves every watcher at or behind `revision` to catch-up, and wakes
    /// its stream to run it.
    fn jump(&mut self, revision: i64) {
        let mut woken = Vec::new();
        for (sid, stream) in self.streams.iter_mut() {
            let behind: Vec<i64> = stream
                .watchers
                .iter()
                .filter(|(_, w)| w.next_rev <= revision)
                .map(|(id, _)| *id)
                .collect();
            if !behind.is_empty() {
                stream.unsynced.extend(behind);
                stream.catch_up_due = true;
                woken.push(*sid);
            }
        }
        for sid in woken {
            self.wake(sid);
        }
    }

    /// One bounded step of history catch-up for every unsynced watcher of
    /// `sid` that has buffer room. Returns whether more steps are needed
    /// right away (some watcher is behind and has room).
    pub fn catch_up(&mut self, sid: StreamId, history: &dyn History) -> bool {
        let current = history.current_revision();
        let header = self.header(current);
        let compacted_header = self.header(0);
        let Some(stream) = self.streams.get_mut(&sid) else {
            return false;
        };
        if stream.unsynced.is_empty() {
            return false;
        }
        let mut more = false;
        let ids: Vec<i64> = stream.unsynced.iter().copied().collect();
        for id in ids {
            let Some(w) = stream.watchers.get_mut(&id) else {
                stream.unsynced.remove(&id);
                continue;
            };
            if w.queued >= self.cfg.watcher_buffer {
                continue;
            }
            if w.next_rev > current {
                stream.unsynced.remove(&id);
                continue;
            }
            let events = match history.events_from(
                &w.key,
                &w.range_end,
                w.next_rev,
                self.cfg.catch_up_events,
            ) {
                Ok(events) => events,
                Err(e) => {
                    let response = match e {
                        // etcd's answer: canceled, with the compact revision
                        // and a header at revision 0.
                        MvccError::Compacted { compacted, .. } => pb::WatchResponse {
                            header: compacted_header,
                            watch_id: id,
                            canceled: true,
                            compact_revision: compacted,
                            ..Default::default()
                        },
                        other => pb::WatchResponse {
                            header,
                            watch_id: id,
                            canceled: true,
                            cancel_reason: other.to_string(),
                            ..Default::default()
                        },
                    };
                    if let Some(w) = stream.watchers.remove(&id) {
                        self.index.remove(sid, id, &w.range);
                    }
                    stream.unsynced.remove(&id);
                    stream.push(Outgoing {
                        response,
                        fragment: false,
                        buffered_for: None,
                    });
                    continue;
                }
            };
            let Some(last) = events.last().map(|e| e.kv.mod_revision) else {
                w.next_rev = current + 1;
                stream.unsynced.remove(&id);
                continue;
            };
            let evs: Vec<mvccpb::Event> = events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.to_pb(e))
                .collect();
            w.next_rev = last + 1;
            let fragment = w.fragment;
            if w.next_rev > current {
                stream.unsynced.remove(&id);
            } else {
                more = true;
            }
            if !evs.is_empty() {
                w.active = true;
                stream.push(Outgoing {
                    response: pb::WatchResponse {
                        header,
                        watch_id: id,
                        events: evs,
                        ..Default::default()
                    },
                    fragment,
                    buffered_for: Some(id),
                });
            }
        }
        self.answer_progress_request(sid, history);
        more
    }

    /// Whether some watcher of `sid` still needs history.
    pub fn has_unsynced(&self, sid: StreamId) -> bool {
        self.streams
            .get(&sid)
            .is_some_and(|s| !s.unsynced.is_empty())
    }

    /// Wakes the task waiting in [`Hub::poll_pop`] for `sid`.
    pub fn wake(&mut self, sid: StreamId) {
        if let Some(w) = self.streams.get_mut(&sid).and_then(|s| s.waker.take()) {
            w.wake();
        }
    }

    /// Whether `sid`'s task must run a catch-up step before it waits for
    /// responses (then cleared).
    pub fn take_catch_up_due(&mut self, sid: StreamId) -> bool {
        self.streams
            .get_mut(&sid)
            .is_some_and(|s| std::mem::take(&mut s.catch_up_due))
    }

    /// Takes the next response of `sid`, if any.
    pub fn pop(&mut self, sid: StreamId) -> Option<Outgoing> {
        let stream = self.streams.get_mut(&sid)?;
        let out = stream.outbox.pop_front()?;
        if stream.outbox.len() < MAX_STREAM_BACKLOG {
            if let Some(w) = stream.room_waker.take() {
                w.wake();
            }
        }
        if let Some(id) = out.buffered_for {
            if let Some(w) = stream.watchers.get_mut(&id) {
                w.queued -= 1;
            }
        }
        Some(out)
    }

    /// Like [`Hub::pop`], registering `cx` to be woken when a response is
    /// queued. `Ready(None)` once the stream is gone.
    pub fn poll_pop(&mut self, sid: StreamId, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        let Some(stream) = self.streams.get_mut(&sid) else {
            return Poll::Ready(None);
        };
        if stream.outbox.is_empty() {
            stream.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(self.pop(sid))
    }

    /// Ready once stream `sid` has room for the answers to another request
    /// (or is gone); otherwise registers `cx` to be woken as it drains.
    pub fn poll_room(&mut self, sid: StreamId, cx: &mut Context<'_>) -> Poll<()> {
        match self.streams.get_mut(&sid) {
            Some(stream) if stream.outbox.len() >= MAX_STREAM_BACKLOG => {
                stream.room_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// The periodic progress notification: every synced watcher that asked
    /// for it and got no events since the last tick gets an empty response
    /// with the current revision.
    pub fn progress_tick(&mut self, history: &dyn History) {
        let header = self.header(history.current_revision());
        for stream in self.streams.values_mut() {
            let mut queued = Vec::new();
            for (&id, w) in stream.watchers.iter_mut() {
                let idle = !std::mem::replace(&mut w.active, false);
                if w.progress_notify && idle && !stream.unsynced.contains(&id) {
                    queued.push(Outgoing {
                        response: pb::WatchResponse {
                            header,
                            watch_id: id,
                            ..Default::default()
                        },
                        fragment: false,
                        buffered_for: None,
                    });
                }
            }
            for out in queued {
                stream.push(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_engine::mvcc::KeyValue;

    /// History kept as a plain list of events, one revision per event
    /// unless a test publishes several at once.
    #[derive(Default)]
    struct FakeHistory {
        events: Vec<Event>,
        current: i64,
        compacted: i64,
    }

    impl History for FakeHistory {
        fn current_revision(&self) -> i64 {
            self.current
        }
        fn compact_revision(&self) -> i64 {
            self.compacted
        }
        fn events_from(
            &self,
            key: &[u8],
            range_end: &[u8],
            start: i64,
            max: usize,
        ) -> Result<Vec<Event>, MvccError> {
            if start < self.compacted {
                return Err(MvccError::Compacted {
                    requested: start,
                    compacted: self.compacted,
                });
            }
            let range = KeyRange::new(key, range_end).unwrap();
            let mut out: Vec<Event> = Vec::new();
            for e in &self.events {
                if e.kv.mod_revision < start || !range.contains(&e.kv.key) {
                    continue;
                }
                if out.len() >= max && out.last().unwrap().kv.mod_revision != e.kv.mod_revision {
                    break;
                }
                out.push(e.clone());
            }
            Ok(out)
        }
    }

    impl FakeHistory {
        /// Applies one revision of puts and returns its events for publish.
        fn put(&mut self, keys: &[&str]) -> (i64, Vec<Event>) {
            self.current += 1;
            let rev = self.current;
            let evs: Vec<Event> = keys
                .iter()
                .map(|k| Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: k.as_bytes().to_vec(),
                        create_revision: rev,
                        mod_revision: rev,
                        version: 1,
                        value: b"v".to_vec(),
                        lease: 0,
                    },
                    prev_kv: Some(KeyValue {
                        key: k.as_bytes().to_vec(),
                        ..Default::default()
                    }),
                })
                .collect();
            self.events.extend(evs.iter().cloned());
            (rev, evs)
        }

        fn delete(&mut self, key: &str) -> (i64, Vec<Event>) {
            self.current += 1;
            let e = Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.as_bytes().to_vec(),
                    mod_revision: self.current,
                    ..Default::default()
                },
                prev_kv: None,
            };
            self.events.push(e.clone());
            (self.current, vec![e])
        }
    }

    fn hub() -> Hub {
        Hub::new(
            HubConfig::default(),
            pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 0,
                raft_term: 3,
            },
        )
    }

    fn create(key: &str, end: &str, start: i64) -> pb::WatchCreateRequest {
        pb::WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
            start_revision: start,
            ..Default::default()
        }
    }

    fn drain(h: &mut Hub, sid: StreamId) -> Vec<pb::WatchResponse> {
        std::iter::from_fn(|| h.pop(sid))
            .map(|o| o.response)
            .collect()
    }

    /// (watch id, revisions of the events) of each event response.
    fn event_revs(resps: &[pb::WatchResponse]) -> Vec<(i64, Vec<i64>)> {
        resps
            .iter()
            .filter(|r| !r.events.is_empty())
            .map(|r| {
                (
                    r.watch_id,
                    r.events
                        .iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn created_then_live_events_for_matching_keys_only() {
        let mut h = hub();
        let mut hist = FakeHistory {
            current: 1,
            ..Default::default()
        };
        let sid = h.open_stream();
        h.create(sid, &create("w/", "w0", 0), &hist);
        let r = drain(&mut h, sid);
        assert_eq!(r.len(), 1);
        assert!(r[0].created && !r[0].canceled);
        assert_eq!(r[0].watch_id, 0);
        assert_eq!(r[0].header.as_ref().unwrap().revision, 1);
        assert_eq!(r[0].header.as_ref().unwrap().raft_term, 3);

        let (rev, evs) = hist.put(&["w/a", "x", "w/b"]);
        h.publish(rev, &evs);
        let r = drain(&mut h, sid);
        assert_eq!(r.len(), 1, "one revision, one response");
        assert_eq!(r[0].header.as_ref().unwrap().revision, rev);
        let keys: Vec<_> = r[0]
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().key.clone())
            .collect();
        assert_eq!(keys, vec![b"w/a".to_vec(), b"w/b".to_vec()]);
        assert!(r[0].events[0].prev_kv.is_none(), "prev_kv not asked for");

        let (rev, evs) = hist.put(&["x"]);
        h.publish(rev, &evs);
        assert!(drain(&mut h, sid).is_empty());
    }

    #[test]
    fn history_then_live_without_gap_or_duplicate() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        for _ in 0..5 {
            hist.put(&["k"]);
        }
        let sid = h.open_stream();
        let mut req = create("k", "", 2);
        req.prev_kv = true;
        h.create(sid, &req, &hist);
        assert_eq!(h.is_synced(sid, 0), Some(true));
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        let r = drain(&mut h, sid);
        assert!(r[0].created);
        assert_eq!(r[0].header.as_ref().unwrap().revision, 5);
        assert_eq!(event_revs(&r), vec![(0, vec![2, 3, 4, 5]), (0, vec![6])]);
        assert!(r[1].events[0].prev_kv.is_some(), "prev_kv asked for");
    }

    #[test]
    fn catch_up_in_steps_interleaved_with_publish() {
        let mut h = Hub::new(
            HubConfig {
                catch_up_events: 2,
                ..Default::default()
            },
            pb::ResponseHeader::default(),
        );
        let mut hist = FakeHistory::default();
        for _ in 0..7 {
            hist.put(&["k"]);
        }
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 1), &hist);
        assert_eq!(h.is_synced(sid, 0), Some(false));
        // Revisions applied while the watcher is still behind are read
        // from history later, never published to it twice.
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        while h.catch_up(sid, &hist) {}
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        let revs: Vec<i64> = event_revs(&drain(&mut h, sid))
            .into_iter()
            .flat_map(|(_, r)| r)
            .collect();
        assert_eq!(revs, (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn slow_watcher_falls_back_to_history_and_misses_nothing() {
        let mut h = Hub::new(
            HubConfig {
                watcher_buffer: 2,
                catch_up_events: 3,
                ..Default::default()
            },
            pb::ResponseHeader::default(),
        );
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 0), &hist);
        h.pop(sid);
        for _ in 0..10 {
            let (rev, evs) = hist.put(&["k"]);
            h.publish(rev, &evs);
        }
        assert_eq!(h.is_synced(sid, 0), Some(false), "buffer of 2 overflowed");
        let mut revs = Vec::new();
        loop {
            h.catch_up(sid, &hist);
            let Some(out) = h.pop(sid) else { break };
            revs.extend(
                out.response
                    .events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision),
            );
            // Writes keep coming while the client reads slowly.
            if hist.current < 15 {
                let (rev, evs) = hist.put(&["k"]);
                h.publish(rev, &evs);
            }
        }
        assert_eq!(revs, (1..=15).collect::<Vec<_>>());
        assert_eq!(h.is_synced(sid, 0), Some(true));
    }

    #[test]
    fn compacted_start_is_created_then_canceled_with_compact_revision() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        for _ in 0..4 {
            hist.put(&["k"]);
        }
        hist.compacted = 3;
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 2), &hist);
        let r = drain(&mut h, sid);
        assert_eq!(r.len(), 2);
        assert!(r[0].created && !r[0].canceled);
        assert_eq!(r[0].header.as_ref().unwrap().revision, 4);
        assert!(r[1].canceled && !r[1].created);
        assert_eq!((r[1].watch_id, r[1].compact_revision), (0, 3));
        assert_eq!(r[1].header.as_ref().unwrap().revision, 0);
        assert_eq!(h.watcher_count(), 0);

        // At the compact revision itself history is still there. Auto ids
        // are not reused within a stream.
        h.create(sid, &create("k", "", 3), &hist);
        assert_eq!(event_revs(&drain(&mut h, sid)), vec![(1, vec![3, 4])]);
    }

    #[test]
    fn a_jump_over_compacted_history_cancels_the_watchers_behind_it() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        hist.put(&["k"]);
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 0), &hist); // next revision 2
        h.create(sid, &create("j", "", 0), &hist);
        let other = h.open_stream();
        h.create(other, &create("k", "", 9), &hist); // waits for 9
        drain(&mut h, sid);
        drain(&mut h, other);
        // A snapshot moved the store from 1 to 6, compacted at 4, events
        // not fed: the jump.
        for _ in 0..5 {
            hist.put(&["k"]);
        }
        hist.compacted = 4;
        h.publish(6, &[]);
        assert!(h.take_catch_up_due(sid), "its task must run a catch-up");
        assert!(!h.take_catch_up_due(sid), "once");
        assert!(!h.take_catch_up_due(other), "nothing behind there");
        assert!(!h.catch_up(sid, &hist));
        let r = drain(&mut h, sid);
        assert_eq!(r.len(), 2, "{r:?}");
        for (resp, id) in r.iter().zip([0, 1]) {
            assert!(resp.canceled);
            assert_eq!((resp.watch_id, resp.compact_revision), (id, 4));
        }
        assert!(!h.catch_up(other, &hist));
        assert!(drain(&mut h, other).is_empty(), "not behind: untouched");
        // Without compaction the jump is a catch-up from history.
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 0), &hist); // next revision 7
        drain(&mut h, sid);
        hist.put(&["k"]);
        hist.put(&["k"]);
        h.publish(8, &[]);
        h.catch_up(sid, &hist);
        assert_eq!(event_revs(&drain(&mut h, sid)), vec![(0, vec![7, 8])]);
    }

    #[test]
    fn filters_drop_puts_or_deletes() {
        use pb::watch_create_request::FilterType;
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        let mut no_put = create("k", "", 0);
        no_put.filters = vec![FilterType::Noput as i32];
        let mut no_del = create("k", "", 0);
        no_del.filters = vec![FilterType::Nodelete as i32];
        h.create(sid, &no_put, &hist);
        h.create(sid, &no_del, &hist);
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        let (rev, evs) = hist.delete("k");
        h.publish(rev, &evs);
        assert_eq!(
            event_revs(&drain(&mut h, sid)),
            vec![(1, vec![1]), (0, vec![2])]
        );
    }

    #[test]
    fn ids_auto_from_zero_and_client_chosen_with_duplicate_error() {
        let mut h = hub();
        let hist = FakeHistory::default();
        let sid = h.open_stream();
        let mut chosen = create("k", "", 0);
        chosen.watch_id = 1;
        h.create(sid, &chosen, &hist);
        h.create(sid, &create("k", "", 0), &hist);
        h.create(sid, &create("k", "", 0), &hist);
        h.create(sid, &chosen, &hist);
        h.create(sid, &create("b", "a", 0), &hist);
        let r = drain(&mut h, sid);
        let ids: Vec<i64> = r.iter().map(|r| r.watch_id).collect();
        assert_eq!(ids, vec![1, 0, 2, -1, -1]);
        assert!(r[3].created && r[3].canceled);
        assert_eq!(r[3].cancel_reason, ERR_DUPLICATE_ID);
        assert_eq!(r[4].cancel_reason, ERR_EMPTY_RANGE);
        // Ids are per stream.
        let other = h.open_stream();
        h.create(other, &create("k", "", 0), &hist);
        assert_eq!(drain(&mut h, other)[0].watch_id, 0);
    }

    #[test]
    fn cancel_answers_and_drops_unsent_events() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 0), &hist);
        h.create(sid, &create("k", "", 0), &hist);
        drain(&mut h, sid);
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        h.cancel(sid, 0, &hist);
        h.cancel(sid, 42, &hist);
        let r = drain(&mut h, sid);
        assert_eq!(event_revs(&r), vec![(1, vec![1])]);
        let canceled: Vec<_> = r.iter().filter(|r| r.canceled).collect();
        assert_eq!(canceled.len(), 1, "unknown id gets no answer");
        assert_eq!(canceled[0].watch_id, 0);
        assert_eq!(canceled[0].header.as_ref().unwrap().revision, 1);
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        assert_eq!(event_revs(&drain(&mut h, sid)), vec![(1, vec![2])]);
    }

    #[test]
    fn request_progress_waits_for_catch_up() {
        let mut h = Hub::new(
            HubConfig {
                catch_up_events: 1,
                ..Default::default()
            },
            pb::ResponseHeader::default(),
        );
        let mut hist = FakeHistory::default();
        for _ in 0..3 {
            hist.put(&["k"]);
        }
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 1), &hist);
        h.request_progress(sid, &hist);
        let r = drain(&mut h, sid);
        assert!(
            r.iter().all(|r| r.watch_id != INVALID_WATCH_ID),
            "still behind"
        );
        while h.catch_up(sid, &hist) {}
        let r = drain(&mut h, sid);
        let last = r.last().unwrap();
        assert_eq!(last.watch_id, INVALID_WATCH_ID);
        assert!(!last.created && !last.canceled && last.events.is_empty());
        assert_eq!(last.header.as_ref().unwrap().revision, 3);

        h.request_progress(sid, &hist);
        assert_eq!(drain(&mut h, sid).len(), 1, "synced: answered at once");
    }

    #[test]
    fn progress_tick_notifies_idle_watchers_that_asked() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        let mut notify = create("k", "", 0);
        notify.progress_notify = true;
        h.create(sid, &notify, &hist);
        h.create(sid, &create("k", "", 0), &hist);
        drain(&mut h, sid);
        h.progress_tick(&hist);
        let r = drain(&mut h, sid);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].watch_id, r[0].events.len()), (0, 0));
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        drain(&mut h, sid);
        h.progress_tick(&hist);
        assert!(drain(&mut h, sid).is_empty(), "had events since last tick");
        h.progress_tick(&hist);
        assert_eq!(drain(&mut h, sid)[0].header.as_ref().unwrap().revision, 1);
    }

    #[test]
    fn future_start_revision_skips_earlier_revisions() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 3), &hist);
        for _ in 0..4 {
            let (rev, evs) = hist.put(&["k"]);
            h.publish(rev, &evs);
        }
        assert_eq!(
            event_revs(&drain(&mut h, sid)),
            vec![(0, vec![3]), (0, vec![4])]
        );
    }

    #[test]
    fn overflow_after_untouched_revisions_catches_up_exactly() {
        let mut h = Hub::new(
            HubConfig {
                watcher_buffer: 1,
                ..Default::default()
            },
            pb::ResponseHeader::default(),
        );
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 0), &hist);
        h.pop(sid);
        let mut want = Vec::new();
        for i in 0..20 {
            let key = if i % 3 == 0 { "k" } else { "other" };
            let (rev, evs) = hist.put(&[key]);
            h.publish(rev, &evs);
            if key == "k" {
                want.push(rev);
            }
        }
        assert_eq!(h.is_synced(sid, 0), Some(false));
        let mut got = Vec::new();
        loop {
            h.catch_up(sid, &hist);
            let Some(out) = h.pop(sid) else { break };
            got.extend(
                out.response
                    .events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision),
            );
        }
        assert_eq!(got, want);
    }

    #[test]
    fn index_follows_watchers_in_and_out() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let a = h.open_stream();
        let b = h.open_stream();
        h.create(a, &create("k", "", 0), &hist);
        h.create(a, &create("p/", "p0", 0), &hist);
        h.create(b, &create("k", "", 0), &hist);
        assert_eq!(h.index.by_key[&b"k".to_vec()].len(), 2);
        assert_eq!(h.index.ranges.len(), 1);
        drain(&mut h, a);
        drain(&mut h, b);
        let (rev, evs) = hist.put(&["k", "p/x", "q"]);
        h.publish(rev, &evs);
        assert_eq!(
            event_revs(&drain(&mut h, a)),
            vec![(0, vec![1]), (1, vec![1])]
        );
        assert_eq!(event_revs(&drain(&mut h, b)), vec![(0, vec![1])]);
        h.cancel(a, 0, &hist);
        h.close_stream(a);
        assert!(h.index.ranges.is_empty());
        assert_eq!(h.index.by_key[&b"k".to_vec()], vec![(b, 0)]);
        h.close_stream(b);
        assert!(h.index.by_key.is_empty());
    }

    #[test]
    fn a_full_backlog_holds_back_further_requests() {
        let mut h = hub();
        let hist = FakeHistory::default();
        let sid = h.open_stream();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..MAX_STREAM_BACKLOG {
            assert!(h.poll_room(sid, &mut cx).is_ready());
            h.create(sid, &create("k", "", 0), &hist);
        }
        assert!(h.poll_room(sid, &mut cx).is_pending());
        h.pop(sid);
        assert!(h.poll_room(sid, &mut cx).is_ready());
    }

    #[test]
    fn empty_key_means_the_smallest_key() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        h.create(sid, &create("", "\0", 0), &hist);
        drain(&mut h, sid);
        let (rev, evs) = hist.put(&["a", "\u{0}"]);
        h.publish(rev, &evs);
        assert_eq!(event_revs(&drain(&mut h, sid)), vec![(0, vec![1, 1])]);
    }

    #[test]
    fn closed_stream_forgets_everything() {
        let mut h = hub();
        let mut hist = FakeHistory::default();
        let sid = h.open_stream();
        h.create(sid, &create("k", "", 0), &hist);
        h.close_stream(sid);
        let (rev, evs) = hist.put(&["k"]);
        h.publish(rev, &evs);
        assert_eq!((h.stream_count(), h.watcher_count()), (0, 0));
        assert!(h.pop(sid).is_none());
    }
}
