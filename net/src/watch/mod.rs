//! etcd's Watch service.
//!
//! Every executor has a [`Hub`]: the watchers of the watch streams of its
//! connections and the responses queued for each stream. The hub gets each
//! applied revision ([`Hub::publish`]) — straight from the apply hook on
//! the sequencer's executor ([`attach`]), as one message per applied batch
//! on the others ([`attach_fed`]) — and lagging or historical watchers
//! catch up from history ([`Hub::catch_up`]: the store, or the published
//! read view) so a slow client never slows writes. [`register`] serves
//! `/etcdserverpb.Watch/Watch` on top of it.
//!
//! ```
//! use basalt_net::proto::etcdserverpb as pb;
//! use basalt_net::watch::{Hub, HubConfig};
//! # use basalt_engine::mvcc::{Event, MvccError};
//! # struct NoHistory;
//! # impl basalt_net::watch::History for NoHistory {
//! #     fn current_revision(&self) -> i64 { 1 }
//! #     fn compact_revision(&self) -> i64 { 0 }
//! #     fn events_from(&self, _: &[u8], _: &[u8], _: i64, _: usize) -> Result<Vec<Event>, MvccError> { Ok(vec![]) }
//! # }
//! let mut hub = Hub::new(HubConfig::default(), pb::ResponseHeader::default());
//! let stream = hub.open_stream();
//! let create = pb::WatchCreateRequest { key: b"k".to_vec(), ..Default::default() };
//! hub.create(stream, &create, &NoHistory);
//! let created = hub.pop(stream).unwrap().response;
//! assert!(created.created && created.watch_id == 0);
//! ```

mod feed;
mod fragment;
mod hub;
mod range;
mod require_leader;
mod service;
mod wiring;

pub use feed::{attach_fed, EventBatch, EventFeed, EventFeeds};
pub use fragment::fragments;
pub use hub::{
    History, Hub, HubConfig, Outgoing, StreamId, WatchAuthorizer, DEFAULT_PROGRESS_INTERVAL,
    INVALID_WATCH_ID, MAX_STREAM_BACKLOG,
};
pub use range::{EmptyRange, KeyRange};
pub use require_leader::{require_leader, MAX_NO_LEADER_CHECKS};
pub use service::{register, run_progress_notifier, HistorySource, WATCH_METHOD};
pub use wiring::attach;
