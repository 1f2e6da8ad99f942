//! The apiserver's watches (one per resource, from its list revision + 1,
//! with prev_kv, progress_notify and require-leader, RequestProgress on a
//! timer) and the ledger that checks they deliver every write of ours.
//!
//! The ledger pairs each write's revision (noted by the writer when its
//! response arrives) with the event carrying it (noted by the watcher);
//! whichever side comes second records the latency from the write's send
//! to the event. A write still unpaired after the drain is a gap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::report::Recorder;
use crate::run::Tally;
use crate::shutdown::Shutdown;

/// How long a RequestProgress may go unanswered (the apiserver's timeout).
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(3);

/// Events not ours (lease expiries) are forgotten after this long.
const FOREIGN_EVENT_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    sent: Option<Instant>,
    received: Option<Instant>,
}

/// Writes of one resource waiting for their watch event.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Mutex<HashMap<i64, Entry>>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write sent at `sent` was applied at `revision`.
    pub fn wrote(&self, revision: i64, sent: Instant, tally: &mut Tally) {
        let mut entries = self.lock();
        let entry = entries.entry(revision).or_default();
        match entry.received {
            Some(received) => {
                tally.ok("watch-event", received.saturating_duration_since(sent));
                entries.remove(&revision);
            }
            None => entry.sent = Some(sent),
        }
    }

    /// The watcher received the event of `revision` at `received`.
    fn received(&self, revision: i64, received: Instant, tally: &mut Tally) {
        let mut entries = self.lock();
        let entry = entries.entry(revision).or_default();
        if let Some(sent) = entry.sent {
            tally.ok("watch-event", received.saturating_duration_since(sent));
            entries.remove(&revision);
        } else if entry.received.is_some() {
            tally.violation(
                "watch-event",
                format!("event of revision {revision} delivered twice"),
            );
        } else {
            entry.received = Some(received);
        }
        if entries.len() > 4096 && revision % 1024 == 0 {
            let now = Instant::now();
            entries.retain(|_, e| {
                e.sent.is_some()
                    || e.received
                        .is_some_and(|r| now.duration_since(r) < FOREIGN_EVENT_TTL)
            });
        }
    }

    /// Writes whose event has not arrived.
    pub fn unpaired(&self) -> Vec<i64> {
        let mut revs: Vec<i64> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.sent.is_some())
            .map(|(r, _)| *r)
            .collect();
        revs.sort_unstable();
        revs
    }
}

/// One resource's watch.
pub struct WatchSpec {
    pub name: &'static str,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// The list revision; the watch starts at the next one.
    pub list_revision: i64,
    pub progress_every: Duration,
    /// Whether a progress notification at revision P promises that every
    /// event up to P was delivered (see [`progress_is_ordered`]).
    pub trust_progress: bool,
}

/// Whether the server's progress notifications can be trusted to follow
/// the events they cover. etcd before 3.4.25 and 3.5.8 could send a
/// requested progress response ahead of events still queued for the
/// stream (etcd-io/etcd#15220), and
/// kube-apiserver stops relying on progress notifications (consistent
/// reads from its cache) below those versions; loadgen does the same.
/// A version it cannot parse (another server) is held to the guarantee.
pub fn progress_is_ordered(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(3)), Some(Ok(4)), Some(Ok(patch))) => patch >= 25,
        (Some(Ok(3)), Some(Ok(5)), Some(Ok(patch))) => patch >= 8,
        (Some(Ok(major)), Some(Ok(minor)), _) if (major, minor) < (3, 4) => false,
        _ => true,
    }
}

/// Runs one watch until `stop` fires. Ops: `watch-event` (latency, order
/// and gap violations) and `watch-progress` (RequestProgress round trips).
pub async fn watch(
    conn: Connection,
    spec: WatchSpec,
    ledger: std::sync::Arc<Ledger>,
    stop: Shutdown,
    mut tally: Tally,
) -> Recorder {
    tally.rec.declare("watch-event");
    tally.rec.declare("watch-progress");
    let options = WatchOptions::new()
        .with_range(spec.end.clone())
        .with_start_revision(spec.list_revision + 1)
        .with_prev_key()
        .with_progress_notify();
    let mut client = conn.watch();
    let created = tokio::select! {
        c = client.watch(spec.start.clone(), Some(options)) => c,
        _ = stop.wait() => return tally.rec,
    };
    let (mut sender, mut stream) = match created {
        Ok(ws) => ws.split(),
        Err(e) => {
            tally.fail("watch-event", format!("{}: {e}", spec.name));
            return tally.rec;
        }
    };
    let mut ticker = tokio::time::interval(spec.progress_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress_sent: Option<Instant> = None;
    // Events up to this revision have all been delivered (from progress
    // notifications); a later event at or below it breaks the guarantee.
    let mut delivered_through = spec.list_revision;
    let mut last_event: Option<(i64, Vec<u8>)> = None;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = ticker.tick() => {
                match progress_sent {
                    Some(at) if at.elapsed() > PROGRESS_TIMEOUT => {
                        tally.fail("watch-progress", format!("{}: no progress response in {PROGRESS_TIMEOUT:?}", spec.name));
                        progress_sent = None;
                    }
                    Some(_) => {}
                    None => {
                        if let Err(e) = sender.request_progress().await {
                            tally.fail("watch-progress", format!("{}: {e}", spec.name));
                        } else {
                            progress_sent = Some(Instant::now());
                        }
                    }
                }
                continue;
            }
            _ = stop.wait() => break,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                tally.fail(
                    "watch-event",
                    format!("{}: watch stream closed by the server", spec.name),
                );
                break;
            }
            Err(e) => {
                tally.fail("watch-event", format!("{}: {e}", spec.name));
                break;
            }
        };
        let now = Instant::now();
        if resp.canceled() {
            tally.fail(
                "watch-event",
                format!(
                    "{}: watch canceled (compact revision {}): {}",
                    spec.name,
                    resp.compact_revision(),
                    resp.cancel_reason()
                ),
            );
            break;
        }
        if resp.created() {
            continue;
        }
        if resp.events().is_empty() {
            let revision = resp.header().map_or(0, |h| h.revision());
            if let Some(at) = progress_sent.take() {
                tally.ok("watch-progress", now - at);
            }
            if spec.trust_progress {
                delivered_through = delivered_through.max(revision);
            }
            continue;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else {
                tally.violation(
                    "watch-event",
                    format!("{}: event without a key-value", spec.name),
                );
                continue;
            };
            let revision = kv.mod_revision();
            if revision <= delivered_through {
                tally.violation(
                    "watch-event",
                    format!(
                        "{}: event at {revision} after progress through {delivered_through}",
                        spec.name
                    ),
                );
            }
            if let Some((last_rev, last_key)) = &last_event {
                if revision < *last_rev
                    || (revision == *last_rev && kv.key() == last_key.as_slice())
                {
                    tally.violation(
                        "watch-event",
                        format!(
                            "{}: event at {revision} after event at {last_rev}",
                            spec.name
                        ),
                    );
                }
            }
            if event.event_type() == EventType::Put && kv.version() > 1 && event.prev_kv().is_none()
            {
                tally.violation(
                    "watch-event",
                    format!("{}: update at {revision} without prev_kv", spec.name),
                );
            }
            last_event = Some((revision, kv.key().to_vec()));
            ledger.received(revision, now, &mut tally);
        }
    }
    tally.rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::Incidents;
    use std::sync::Arc;

    fn tally() -> (Tally, Arc<Incidents>) {
        let incidents = Arc::new(Incidents::new());
        (
            Tally::new(incidents.clone(), indicatif::ProgressBar::hidden()),
            incidents,
        )
    }

    #[test]
    fn progress_trust_follows_the_apiserver() {
        assert!(!progress_is_ordered("3.4.23"));
        assert!(progress_is_ordered("3.4.25"));
        assert!(!progress_is_ordered("3.5.1"));
        assert!(progress_is_ordered("3.5.8"));
        assert!(progress_is_ordered("3.6.0"));
        assert!(!progress_is_ordered("3.3.27"));
        assert!(progress_is_ordered("basalt 0.1.0"));
        assert!(progress_is_ordered(""));
    }

    #[test]
    fn pairs_in_either_order_and_finds_gaps() {
        let ledger = Ledger::default();
        let (mut t, incidents) = tally();
        let t0 = Instant::now();
        ledger.wrote(10, t0, &mut t);
        ledger.received(10, t0 + Duration::from_millis(3), &mut t);
        ledger.received(11, t0 + Duration::from_millis(4), &mut t);
        ledger.wrote(11, t0, &mut t);
        ledger.wrote(12, t0, &mut t);
        assert_eq!(t.rec.ops()["watch-event"].count(), 2);
        assert_eq!(ledger.unpaired(), vec![12]);
        ledger.received(13, t0, &mut t);
        ledger.received(13, t0, &mut t);
        assert_eq!(incidents.violations(), 1);
    }
}
