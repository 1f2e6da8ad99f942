//! Watch workloads.
//!
//! `watch`: creates `--streams × --watchers-per-stream` watchers over
//! `--watched-key-total` keys (creation latency is `watch-create`), then one
//! putter writes the watched keys in turn and every event is timed from its
//! put (`watch-event`).
//!
//! `watch-latency`: every watcher watches one key; the putter writes it at
//! `--put-rate`.
//!
//! Both check what the watchers see: each value carries the put's sequence
//! number, so a watcher must see its key's puts in order (sequence and
//! revision increasing) and, once the putter is done, all of them, once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{StreamArgs, WatchArgs, WatchLatencyArgs};
use crate::connection::Connection;
use crate::error::{LoadgenError, Result};
use crate::keys::{random_value, KeySpace};
use crate::pacing::Pacer;
use crate::report::Recorder;
use crate::run::{gather, Bounds, Phase, Run, Tally};

/// How long watchers may take to deliver the last events after the last put.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the putter and the watchers share.
struct Shared {
    keys: KeySpace,
    /// Send time of each put, by sequence number.
    sent: Mutex<Vec<Instant>>,
    /// Successful puts per key.
    puts_per_key: Vec<AtomicU64>,
    /// Events seen per watcher.
    seen: Vec<AtomicU64>,
    watchers_per_stream: usize,
    prevkv: bool,
}

impl Shared {
    fn key_of_watcher(&self, watcher: usize) -> u64 {
        watcher as u64 % self.keys.size()
    }
}

/// `watch`.
pub async fn watch(run: &Run, args: &WatchArgs) -> Result<(Recorder, Duration)> {
    if args.watched_key_total == 0 {
        return Err(LoadgenError::InvalidArgs(
            "--watched-key-total must be at least 1".into(),
        ));
    }
    let prefix = format!("watch/{:016x}/", fastrand::u64(..));
    let keys = KeySpace::new(&prefix, args.key_size, args.watched_key_total, true);
    drive(run, &args.streams, keys).await
}

/// `watch-latency`.
pub async fn watch_latency(run: &Run, args: &WatchLatencyArgs) -> Result<(Recorder, Duration)> {
    let prefix = format!("watch-latency/{:016x}/", fastrand::u64(..));
    let keys = KeySpace::new(&prefix, 0, 1, true);
    drive(run, &args.streams, keys).await
}

async fn drive(run: &Run, args: &StreamArgs, keys: KeySpace) -> Result<(Recorder, Duration)> {
    if args.streams == 0 || args.watchers_per_stream == 0 {
        return Err(LoadgenError::InvalidArgs(
            "--streams and --watchers-per-stream must be at least 1".into(),
        ));
    }
    let watchers = args.streams * args.watchers_per_stream;
    let shared = Arc::new(Shared {
        puts_per_key: (0..keys.size()).map(|_| AtomicU64::new(0)).collect(),
        keys,
        sent: Mutex::new(Vec::new()),
        seen: (0..watchers).map(|_| AtomicU64::new(0)).collect(),
        watchers_per_stream: args.watchers_per_stream,
        prevkv: args.prevkv,
    });
    let phase = Arc::new(run.phase_with(Bounds {
        total: None,
        rate: None,
        duration: run.bounds.duration,
    }));

    let (ready_tx, mut ready_rx) = mpsc::channel(args.streams);
    let mut tasks = Vec::new();
    for stream in 0..args.streams {
        let conn = run.conn(stream).clone();
        let tally = run.tally(&phase);
        tasks.push(tokio::spawn(stream_task(
            conn,
            stream,
            shared.clone(),
            phase.clone(),
            tally,
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < args.streams {
        tokio::select! {
            r = ready_rx.recv() => match r {
                Some(()) => ready += 1,
                None => break,
            },
            _ = phase.shutdown.wait() => break,
        }
    }

    let total = args.put_total.min(run.bounds.total.unwrap_or(u64::MAX));
    let rate = run
        .bounds
        .rate
        .or((args.put_rate > 0.0).then_some(args.put_rate));
    let pacer = Pacer::new(
        Some(total),
        rate,
        run.bounds.duration,
        phase.shutdown.clone(),
    );
    let mut tally = run.tally(&phase);
    putter(
        run.conn(0).clone(),
        &shared,
        &phase,
        &pacer,
        args.val_size,
        &mut tally,
    )
    .await;

    // Let the watchers catch up with the last put, then stop them.
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while !phase.shutdown.is_triggered() && Instant::now() < drain_until {
        let behind = (0..watchers).any(|w| {
            let key = shared.key_of_watcher(w) as usize;
            shared.seen[w].load(Ordering::Acquire)
                < shared.puts_per_key[key].load(Ordering::Acquire)
        });
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = phase.finish();
    let mut rec = gather(tasks, &run.incidents).await;
    // Counting after the streams are gone: a watcher that saw fewer events
    // than its key got puts has a gap; more means duplicates.
    if !run.interrupt.is_triggered() {
        for w in 0..watchers {
            let key = shared.key_of_watcher(w) as usize;
            let want = shared.puts_per_key[key].load(Ordering::Acquire);
            let got = shared.seen[w].load(Ordering::Acquire);
            if got != want {
                tally.violation(
                    "watch-event",
                    format!("watcher {w} saw {got} events for {want} puts to its key"),
                );
            }
        }
    }
    rec.merge(tally.rec);
    Ok((rec, elapsed))
}

/// Puts one key after another, each value carrying its sequence number.
async fn putter(
    conn: Connection,
    shared: &Shared,
    phase: &Phase,
    pacer: &Pacer,
    val_size: usize,
    tally: &mut Tally,
) {
    let mut kv = conn.kv();
    let mut value = random_value(val_size.max(8), &mut fastrand::Rng::new());
    while let Some(seq) = pacer.next().await {
        let key_index = seq % shared.keys.size();
        let key = shared.keys.nth(key_index);
        value[..8].copy_from_slice(&seq.to_be_bytes());
        {
            let mut sent = shared.sent.lock().unwrap_or_else(|p| p.into_inner());
            debug_assert_eq!(sent.len() as u64, seq);
            sent.push(Instant::now());
        }
        let floor = conn.floor();
        let Some(outcome) = phase.timed(kv.put(key, value.as_slice(), None)).await else {
            break;
        };
        if tally
            .settle("put", &conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            })
            .is_some()
        {
            shared.puts_per_key[key_index as usize].fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Per-watcher order state.
#[derive(Default)]
struct Order {
    last_revision: i64,
    last_seq: Option<u64>,
}

/// Tells the driver a stream is done creating its watchers, exactly once:
/// when the last one is created, or when the task ends without getting
/// there (so the driver never waits for a stream that failed).
struct Readiness(Option<mpsc::Sender<()>>);

impl Readiness {
    fn signal(&mut self) {
        if let Some(tx) = self.0.take() {
            // Capacity is one slot per stream, so this cannot be full.
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.signal();
    }
}

async fn stream_task(
    conn: Connection,
    stream: usize,
    shared: Arc<Shared>,
    phase: Arc<Phase>,
    mut tally: Tally,
    ready: mpsc::Sender<()>,
) -> Recorder {
    let mut ready = Readiness(Some(ready));
    tally.rec.declare("watch-create");
    tally.rec.declare("watch-event");
    let first = stream * shared.watchers_per_stream;
    let options = |watcher: usize| {
        let mut o = WatchOptions::new();
        if shared.prevkv {
            o = o.with_prev_key();
        }
        (shared.keys.nth(shared.key_of_watcher(watcher)), o)
    };
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let (key, opts) = options(first);
    pending.push_back(Instant::now());
    let mut client = conn.watch();
    let Some((created, _)) = phase.timed(client.watch(key, Some(opts))).await else {
        return tally.rec;
    };
    let mut ws = match created {
        Ok(ws) => ws,
        Err(e) => {
            tally.fail("watch-create", e);
            return tally.rec;
        }
    };
    for w in first + 1..first + shared.watchers_per_stream {
        let (key, opts) = options(w);
        pending.push_back(Instant::now());
        if let Err(e) = ws.watch(key, Some(opts)).await {
            tally.fail("watch-create", e);
            return tally.rec;
        }
    }
    // Created responses come in creation order; the server picks the ids.
    let mut ids: HashMap<i64, usize> = HashMap::new();
    let mut order: Vec<Order> = (0..shared.watchers_per_stream)
        .map(|_| Order::default())
        .collect();
    let mut created_count = 0;
    loop {
        let message = tokio::select! {
            m = ws.message() => m,
            _ = phase.shutdown.wait() => break,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                tally.fail(
                    "watch-event",
                    format!("stream {stream} closed by the server"),
                );
                break;
            }
            Err(e) => {
                tally.fail("watch-event", e);
                break;
            }
        };
        let now = Instant::now();
        if resp.created() {
            if let Some(at) = pending.pop_front() {
                tally.ok("watch-create", now - at);
            }
            ids.insert(resp.watch_id(), created_count);
            created_count += 1;
            if created_count == shared.watchers_per_stream {
                ready.signal();
            }
        }
        if resp.canceled() {
            tally.fail(
                "watch-event",
                format!(
                    "stream {stream}: watch {} canceled: {}",
                    resp.watch_id(),
                    resp.cancel_reason()
                ),
            );
            continue;
        }
        if resp.events().is_empty() {
            continue;
        }
        let Some(&local) = ids.get(&resp.watch_id()) else {
            tally.violation(
                "watch-event",
                format!(
                    "stream {stream}: events for unknown watch {}",
                    resp.watch_id()
                ),
            );
            continue;
        };
        let (watcher, Some(state)) = (first + local, order.get_mut(local)) else {
            tally.violation(
                "watch-event",
                format!("stream {stream}: more watchers created than asked for"),
            );
            continue;
        };
        for event in resp.events() {
            check_event(&shared, &mut tally, state, watcher, event, now);
        }
    }
    tally.rec
}

fn check_event(
    shared: &Shared,
    tally: &mut Tally,
    order: &mut Order,
    watcher: usize,
    event: &etcd_client::Event,
    now: Instant,
) {
    let Some(kv) = event.kv() else {
        tally.violation(
            "watch-event",
            format!("watcher {watcher}: event without a key-value"),
        );
        return;
    };
    if event.event_type() != EventType::Put || kv.value().len() < 8 {
        tally.violation(
            "watch-event",
            format!("watcher {watcher}: unexpected event on {:?}", kv.key_str()),
        );
        return;
    }
    let seq = u64::from_be_bytes(kv.value()[..8].try_into().expect("length checked"));
    let sent = shared
        .sent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(seq as usize)
        .copied();
    match sent {
        Some(at) => tally.ok("watch-event", now.saturating_duration_since(at)),
        None => tally.violation(
            "watch-event",
            format!("watcher {watcher}: event for put {seq} never sent"),
        ),
    }
    shared.seen[watcher].fetch_add(1, Ordering::AcqRel);
    if kv.mod_revision() <= order.last_revision {
        tally.violation(
            "watch-event",
            format!(
                "watcher {watcher}: revision {} after {}",
                kv.mod_revision(),
                order.last_revision
            ),
        );
    }
    if order.last_seq.is_some_and(|last| seq <= last) {
        tally.violation(
            "watch-event",
            format!(
                "watcher {watcher}: put {seq} after put {:?}",
                order.last_seq
            ),
        );
    }
    let expected_next = order
        .last_seq
        .map_or(shared.key_of_watcher(watcher), |l| l + shared.keys.size());
    if seq > expected_next {
        tally.violation(
            "watch-event",
            format!("watcher {watcher}: gap, put {seq} arrived while put {expected_next} was due"),
        );
    }
    order.last_revision = kv.mod_revision();
    order.last_seq = Some(seq);
    if shared.prevkv && kv.version() > 1 {
        match event.prev_kv() {
            Some(prev) if prev.mod_revision() < kv.mod_revision() => {}
            Some(prev) => tally.violation(
                "watch-event",
                format!(
                    "watcher {watcher}: prev_kv revision {} not before {}",
                    prev.mod_revision(),
                    kv.mod_revision()
                ),
            ),
            None => tally.violation(
                "watch-event",
                format!("watcher {watcher}: prev_kv missing on an update"),
            ),
        }
    }
}
