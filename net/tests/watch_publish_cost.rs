//! What publishing one applied revision costs the apply loop with many
//! watchers registered. A measurement, not a timed assertion: it runs only
//! with `BASALT_WATCH_COST=1` and prints its numbers.
//!
//! `BASALT_WATCH_COST=1 cargo test -p basalt-net --release --test watch_publish_cost -- --nocapture`

use std::time::Instant;

use basalt_engine::mvcc::{Event, EventKind, KeyValue, MvccError};
use basalt_net::proto::etcdserverpb as pb;
use basalt_net::watch::{History, Hub, HubConfig};

struct NoHistory(i64);

impl History for NoHistory {
    fn current_revision(&self) -> i64 {
        self.0
    }
    fn compact_revision(&self) -> i64 {
        0
    }
    fn events_from(&self, _: &[u8], _: &[u8], _: i64, _: usize) -> Result<Vec<Event>, MvccError> {
        Ok(Vec::new())
    }
}

fn put(key: String, rev: i64) -> Event {
    Event {
        kind: EventKind::Put,
        kv: KeyValue {
            key: key.into_bytes(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: vec![b'v'; 100],
            lease: 0,
        },
        prev_kv: None,
    }
}

#[test]
fn publish_cost_with_many_watchers() {
    if std::env::var_os("BASALT_WATCH_COST").is_none() {
        eprintln!("skipped: set BASALT_WATCH_COST=1 to measure");
        return;
    }
    const STREAMS: usize = 100;
    const KEY_WATCHERS_PER_STREAM: usize = 100;
    const PREFIX_WATCHERS: usize = 10;
    const REVISIONS: i64 = 20_000;
    let mut hub = Hub::new(HubConfig::default(), pb::ResponseHeader::default());
    let history = NoHistory(1);
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let sid = hub.open_stream();
        streams.push(sid);
        for w in 0..KEY_WATCHERS_PER_STREAM {
            let req = pb::WatchCreateRequest {
                key: format!("/registry/pods/ns{s}/pod{w}").into_bytes(),
                ..Default::default()
            };
            hub.create(sid, &req, &history);
        }
    }
    for p in 0..PREFIX_WATCHERS {
        let req = pb::WatchCreateRequest {
            key: format!("/registry/kind{p}/").into_bytes(),
            range_end: format!("/registry/kind{p}0").into_bytes(),
            ..Default::default()
        };
        hub.create(streams[0], &req, &history);
    }
    let drain = |hub: &mut Hub| {
        for &sid in &streams {
            while hub.pop(sid).is_some() {}
        }
    };
    drain(&mut hub);
    // Half the writes hit one watched key, half touch keys nobody watches.
    let started = Instant::now();
    for rev in 2..2 + REVISIONS {
        let key = if rev % 2 == 0 {
            format!("/registry/pods/ns{}/pod{}", rev % 100, rev % 97)
        } else {
            format!("/registry/events/e{rev}")
        };
        hub.publish(rev, &[put(key, rev)]);
        if rev % 64 == 0 {
            drain(&mut hub);
        }
    }
    let per = started.elapsed() / REVISIONS as u32;
    eprintln!(
        "publish with {} watchers on {STREAMS} streams: {per:?} per revision ({REVISIONS} revisions)",
        hub.watcher_count()
    );
}
