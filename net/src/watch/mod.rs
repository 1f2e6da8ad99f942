//! etcd's Watch service.
//!
//! [`Hub`] keeps every watcher of the sequencer's executor and the
//! responses queued for each stream; the sequencer hands it each applied
//! revision ([`Hub::publish`]), and lagging or historical watchers catch up
//! from the store ([`Hub::catch_up`]) so a slow client never slows writes.
//! [`register`] serves `/etcdserverpb.Watch/Watch` on top of it.
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

mod fragment;
mod hub;
mod range;
mod service;
mod wiring;

pub use fragment::fragments;
pub use hub::{
    History, Hub, HubConfig, Outgoing, StreamId, DEFAULT_PROGRESS_INTERVAL, INVALID_WATCH_ID,
    MAX_STREAM_BACKLOG,
};
pub use range::{EmptyRange, KeyRange};
pub use service::{register, run_progress_notifier, HistorySource, WATCH_METHOD};
pub use wiring::attach;
