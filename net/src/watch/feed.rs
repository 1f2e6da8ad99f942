//! Watch on every executor: each one keeps a [`Hub`] for the watch streams
//! of its own connections, so matching events to watchers and encoding
//! them is spread over the cores instead of all done by the sequencer's.
//!
//! The sequencer sends each applied batch's events, in revision order, to
//! every other executor ([`EventFeeds::send`], one message per executor per
//! batch), after publishing the batch's read view. An executor's hub
//! publishes them to its synced watchers and catches lagging or historical
//! watchers up from the latest read view. The hub's idea of the current
//! revision is the last revision it was fed, never the view's (which may
//! be ahead): a created response, a progress notification or a
//! `RequestProgress` answer then never claims a revision whose events this
//! hub has not yet handed out; a catch-up that reads past it moves the
//! watcher past it, and the fed revisions it already has are skipped.
//!
//! An executor with no open watch stream is not sent anything (a message
//! would wake its core for nothing on every write). A stream that opens
//! there first moves the hub to the latest view: every batch not sent was
//! published in a view before the sequencer saw no stream open, so that
//! view holds it.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use basalt_engine::mvcc::{Event, MvccError};
use futures_channel::mpsc;
use futures_lite::StreamExt;

use crate::grpc::{Handler, HandlerFuture, Metadata, RequestStream, ResponseSink, Router};
use crate::sequencer::{Published, PublishedViews};

use super::hub::{History, Hub, HubConfig};
use super::service::{register, run_progress_notifier, HistorySource, WATCH_METHOD};

/// One applied batch's events: `(revision, events of that revision)`,
/// ascending, only revisions that have events — or a revision with none:
/// the store jumped there without its events (see `Hub::publish`).
pub type EventBatch = Arc<Vec<(i64, Vec<Event>)>>;

/// The sequencer's side: one sender per executor other than its own, with
/// that executor's count of open watch streams.
#[derive(Clone, Default)]
pub struct EventFeeds(Vec<(mpsc::UnboundedSender<EventBatch>, Arc<AtomicUsize>)>);

/// What one executor's hub is fed from.
pub struct EventFeed {
    batches: mpsc::UnboundedReceiver<EventBatch>,
    /// Watch streams open on this executor.
    streams: Arc<AtomicUsize>,
}

impl std::fmt::Debug for EventFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventFeeds({} executors)", self.0.len())
    }
}

impl EventFeeds {
    /// Feeds for executors `1..executors`: `feeds[i - 1]` is executor i's.
    pub fn new(executors: usize) -> (EventFeeds, Vec<EventFeed>) {
        let (senders, feeds) = (1..executors.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded();
                let streams = Arc::new(AtomicUsize::new(0));
                let feed = EventFeed {
                    batches: rx,
                    streams: streams.clone(),
                };
                ((tx, streams), feed)
            })
            .unzip();
        (EventFeeds(senders), feeds)
    }

    /// Whether anything listens (more than one executor).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands `batch` to the hub of every executor with a watch stream
    /// open. Call it after publishing the batch's view. An executor that
    /// stopped is skipped.
    pub fn send(&self, batch: &EventBatch) {
        for (tx, streams) in &self.0 {
            if streams.load(Ordering::SeqCst) > 0 {
                let _ = tx.unbounded_send(batch.clone());
            }
        }
    }
}

/// History as this executor's hub sees it: the latest read view, up to the
/// last revision fed to the hub.
struct FedHistory {
    view: Arc<Published>,
    fed: i64,
}

impl History for FedHistory {
    fn current_revision(&self) -> i64 {
        self.fed
    }

    fn compact_revision(&self) -> i64 {
        self.view.view.compact_revision()
    }

    fn events_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max: usize,
    ) -> Result<Vec<Event>, MvccError> {
        self.view
            .view
            .events_from(key, range_end, start_revision, max)
    }
}

/// Serves Watch on an executor other than the sequencer's: a hub of its
/// own, fed by `feed`, catching up from `views`. Call it once per such
/// executor; the hub lives as long as `router` does. Fails only if no view
/// was published yet (the sequencer opens the store before any other
/// executor starts).
pub fn attach_fed(
    router: &mut Router,
    feed: EventFeed,
    views: &PublishedViews,
    cfg: HubConfig,
) -> Result<Rc<RefCell<Hub>>, crate::grpc::Status> {
    let view = views.latest()?;
    let mut header = view.header();
    header.revision = 0;
    let hub = Rc::new(RefCell::new(Hub::new(cfg, header)));
    let fed = view.view.current_revision();
    let history = Rc::new(RefCell::new(FedHistory { view, fed }));
    let source: Rc<dyn HistorySource> = history.clone();
    register(router, hub.clone(), source.clone());
    let inner = router.route(WATCH_METHOD)?;
    router.add(
        WATCH_METHOD,
        Rc::new(CountedStreams {
            inner,
            streams: feed.streams.clone(),
            views: views.clone(),
            history: Rc::downgrade(&history),
        }),
    );
    let weak_source: Weak<dyn HistorySource> = Rc::downgrade(&source);
    glommio::spawn_local(run_progress_notifier(Rc::downgrade(&hub), weak_source)).detach();
    glommio::spawn_local(run_feed(
        feed,
        views.clone(),
        Rc::downgrade(&hub),
        Rc::downgrade(&history),
    ))
    .detach();
    Ok(hub)
}

/// Publishes every fed batch to the hub, after moving its history to the
/// newest view (published before the batch was sent, so it holds it).
async fn run_feed(
    feed: EventFeed,
    views: PublishedViews,
    hub: Weak<RefCell<Hub>>,
    history: Weak<RefCell<FedHistory>>,
) {
    let mut batches = feed.batches;
    while let Some(batch) = batches.next().await {
        let (Some(hub), Some(history)) = (hub.upgrade(), history.upgrade()) else {
            return;
        };
        let mut history = history.borrow_mut();
        if let Ok(view) = views.latest() {
            history.view = view;
        }
        let mut hub = hub.borrow_mut();
        for (revision, events) in batch.iter() {
            // Revisions from before this hub started were for no watcher.
            if *revision > history.fed {
                hub.publish(*revision, events);
                history.fed = *revision;
            }
        }
    }
}

/// The Watch handler of an executor with a fed hub, counting its open
/// streams for [`EventFeeds::send`].
struct CountedStreams {
    inner: Rc<dyn Handler>,
    streams: Arc<AtomicUsize>,
    views: PublishedViews,
    history: Weak<RefCell<FedHistory>>,
}

/// Counts one open stream until dropped.
struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handler for CountedStreams {
    fn call(
        &self,
        meta: Metadata,
        requests: RequestStream,
        responses: ResponseSink,
    ) -> HandlerFuture {
        let open = OpenStream(self.streams.clone());
        if self.streams.fetch_add(1, Ordering::SeqCst) == 0 {
            // Batches may have been skipped while no stream was open: they
            // are all in the latest view (published before each skip).
            if let (Some(history), Ok(view)) = (self.history.upgrade(), self.views.latest()) {
                let mut history = history.borrow_mut();
                history.fed = history.fed.max(view.view.current_revision());
                history.view = view;
            }
        }
        let call = self.inner.call(meta, requests, responses);
        Box::pin(async move {
            let _open = open;
            call.await
        })
    }
}
