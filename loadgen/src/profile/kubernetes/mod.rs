//! `--profile kubernetes`: what kube-apiserver sends to etcd
//! (shared/reference/kubernetes-traffic.md).
//!
//! 1. Load: a synthetic cluster scaled by `--nodes` is created with the
//!    apiserver's create Txns (events under reused TTL leases). Not reported.
//! 2. Watch-cache fill: one paged LIST (pages of 10,000) per resource
//!    (`list-watchcache`), then one watch per resource from that revision + 1
//!    with prev_kv, progress_notify and require-leader, with RequestProgress
//!    on a timer (`watch-progress`).
//! 3. Traffic: the actors of [`traffic::actors`] at their rates, and the
//!    apiserver's compaction every `--compact-interval` (default 5 min,
//!    divided by `--speedup`).
//! 4. Drain: writes stop; every write of ours must reach its watch
//!    (`watch-event` latency from the write's send); one that does not is a
//!    gap.

mod cluster;
mod traffic;
mod watchers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{DeleteOptions, GetOptions};
use tokio::time::Instant;

use self::cluster::{create_txn, written, Written};
use self::traffic::{act, actors, compactor, Clients, Cluster};
use self::watchers::{progress_is_ordered, watch, WatchSpec};
use super::listing::{list, ListFailure, ListSpec};
use crate::cli::KubernetesArgs;
use crate::error::{LoadgenError, Result};
use crate::keys::prefix_end;
use crate::report::Recorder;
use crate::run::{gather, Bounds, Run};
use crate::shutdown::Shutdown;

/// Everything the apiserver stores lives under this prefix.
const REGISTRY: &str = "/registry/";

/// Without `--duration` or `--total` the traffic phase lasts this long.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// Page size of the watch-cache fill.
const WATCH_CACHE_PAGE: i64 = 10_000;

/// The apiserver's compaction period.
const COMPACT_EVERY: Duration = Duration::from_secs(300);

/// RequestProgress period per watch (est.: the apiserver sends one every
/// 100 ms only while a consistent read waits).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How long the watches may take to deliver the last writes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the profile.
pub async fn run(
    run: &Run,
    args: &KubernetesArgs,
    compact: Option<Duration>,
) -> Result<(Recorder, Duration)> {
    if args.nodes == 0 || !(args.speedup.is_finite() && args.speedup > 0.0) {
        return Err(LoadgenError::InvalidArgs(
            "--nodes must be ≥ 1 and --speedup > 0".into(),
        ));
    }
    let cluster = Arc::new(Cluster::new(args.nodes, args.pod_size, args.event_ttl));
    prepare(run, args.clean).await?;
    load(run, &cluster, args.nodes).await?;
    if run.interrupt.is_triggered() {
        return Ok((Recorder::new(), Duration::ZERO));
    }

    let duration = match (run.bounds.duration, run.bounds.total) {
        (None, None) => Some(DEFAULT_DURATION),
        (d, _) => d,
    };
    let phase = Arc::new(run.phase_with(Bounds {
        duration,
        ..run.bounds
    }));
    let watch_stop = Shutdown::new();
    watch_stop.follow(&run.interrupt);

    let trust_progress = trust_progress(run).await;
    // Watch-cache fill, then the watches.
    let mut fill = run.tally(&phase);
    fill.rec.declare("list-watchcache");
    let mut watches = Vec::new();
    for (i, resource) in cluster.resources.iter().enumerate() {
        let conn = run.conn(i).clone();
        let end = prefix_end(resource.prefix.as_bytes());
        let spec = ListSpec {
            start: resource.prefix.as_bytes(),
            end: &end,
            page: WATCH_CACHE_PAGE,
            op: "list-watchcache",
        };
        let began = Instant::now();
        let listing = match list(&mut conn.kv(), &conn, &phase, &mut fill, &spec).await {
            Ok(listing) => listing,
            Err(ListFailure::Stopped) => break,
            Err(ListFailure::Expired) => {
                fill.fail("list-watchcache", "revision compacted during the fill");
                continue;
            }
            Err(ListFailure::Failed) => continue,
        };
        fill.ok("list-watchcache", began.elapsed());
        fill.rec.add_bytes(listing.bytes);
        let spec = WatchSpec {
            name: resource.name,
            start: resource.prefix.as_bytes().to_vec(),
            end,
            list_revision: listing.revision,
            progress_every: PROGRESS_EVERY,
            trust_progress,
        };
        watches.push(tokio::spawn(watch(
            conn,
            spec,
            cluster.ledgers[i].clone(),
            watch_stop.clone(),
            run.tally(&phase),
        )));
    }

    // Traffic.
    let mut tasks = Vec::new();
    let mut next_conn = 0usize;
    for actor in actors(&cluster, args.nodes, args.speedup, run.conns.len().max(1)) {
        if actor.rate <= 0.0 {
            continue;
        }
        let local = Arc::new(crate::pacing::Pacer::new(
            None,
            Some(actor.rate),
            None,
            phase.shutdown.clone(),
        ));
        // Enough workers that the rate holds with ~50 ms responses.
        let workers = ((actor.rate * 0.05).ceil() as usize).clamp(1, 32);
        for _ in 0..workers {
            let clients = Clients::new(run.conn(next_conn).clone());
            next_conn += 1;
            let (cluster, phase, local, actor) =
                (cluster.clone(), phase.clone(), local.clone(), actor.clone());
            let mut tally = run.tally(&phase);
            tally.rec.declare(&actor.op);
            tasks.push(tokio::spawn(async move {
                let mut clients = clients;
                let mut rng = fastrand::Rng::new();
                while let Some(ticket) = local.next().await {
                    if phase.pacer.next().await.is_none() {
                        break;
                    }
                    if !act(
                        &cluster,
                        &actor,
                        ticket,
                        &mut clients,
                        &phase,
                        &mut tally,
                        &mut rng,
                    )
                    .await
                    {
                        break;
                    }
                }
                tally.rec
            }));
        }
    }
    let every = compact.unwrap_or(COMPACT_EVERY.div_f64(args.speedup));
    let compaction = tokio::spawn(compactor(
        Clients::new(run.conn(next_conn).clone()),
        every,
        phase.clone(),
        run.tally(&phase),
    ));
    // The actors stop at the deadline, at --total, or on Ctrl-C; the
    // compactor runs until the phase ends.
    let mut rec = gather(tasks, &run.incidents).await;
    let elapsed = phase.finish();
    rec.merge(gather(vec![compaction], &run.incidents).await);

    // Drain: every write of ours must reach its watch.
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while !run.interrupt.is_triggered()
        && Instant::now() < drain_until
        && cluster.ledgers.iter().any(|l| !l.unpaired().is_empty())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch_stop.trigger();
    rec.merge(gather(watches, &run.incidents).await);
    rec.merge(fill.rec);
    if !run.interrupt.is_triggered() {
        let mut check = run.tally(&phase);
        for (resource, ledger) in cluster.resources.iter().zip(&cluster.ledgers) {
            let missing = ledger.unpaired();
            if let Some(first) = missing.first() {
                check.violation(
                    "watch-event",
                    format!(
                        "{}: {} writes never reached the watch (first at revision {first})",
                        resource.name,
                        missing.len()
                    ),
                );
            }
        }
        rec.merge(check.rec);
    }
    Ok((rec, elapsed))
}

/// Whether to hold progress notifications to "every event up to here was
/// delivered", from the version the server reports (as kube-apiserver
/// decides). A server without Maintenance.Status is held to it.
async fn trust_progress(run: &Run) -> bool {
    let Ok(status) = run.conn(0).client().maintenance_client().status().await else {
        return true;
    };
    let trusted = progress_is_ordered(status.version());
    if !trusted {
        eprintln!(
            "kubernetes: server version {} may send progress notifications ahead of events \
             (fixed in etcd 3.4.25 and 3.5.8); like kube-apiserver, not relying on them",
            status.version()
        );
    }
    trusted
}

/// Refuses to run over someone's data unless told to clear it.
async fn prepare(run: &Run, clean: bool) -> Result<()> {
    let mut kv = run.conn(0).kv();
    let end = prefix_end(REGISTRY.as_bytes());
    let existing = kv
        .get(
            REGISTRY,
            Some(GetOptions::new().with_range(end.clone()).with_count_only()),
        )
        .await
        .map_err(|source| LoadgenError::Setup {
            phase: "counting existing /registry/ keys".into(),
            source,
        })?
        .count();
    if existing == 0 {
        return Ok(());
    }
    if !clean {
        return Err(LoadgenError::Dirty(format!(
            "the endpoint already holds {existing} keys under {REGISTRY}; \
             pass --clean to delete them, or use a fresh server"
        )));
    }
    kv.delete(REGISTRY, Some(DeleteOptions::new().with_range(end)))
        .await
        .map_err(|source| LoadgenError::Setup {
            phase: "deleting /registry/".into(),
            source,
        })?;
    Ok(())
}

/// Creates the synthetic cluster with the apiserver's create Txns.
async fn load(run: &Run, cluster: &Arc<Cluster>, nodes: u64) -> Result<()> {
    let counts: Vec<u64> = cluster
        .resources
        .iter()
        .map(|r| r.population(nodes))
        .collect();
    let total: u64 = counts.iter().sum();
    let bytes: u64 = cluster
        .resources
        .iter()
        .zip(&counts)
        .map(|(r, n)| r.size as u64 * n)
        .sum();
    eprintln!(
        "kubernetes: loading {nodes} nodes: {total} objects, {:.1} MB",
        bytes as f64 / 1e6
    );
    let phase = Arc::new(run.phase_with(Bounds {
        total: Some(total),
        rate: None,
        duration: None,
    }));
    let counts = Arc::new(counts);
    let next = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for i in 0..run.clients.max(16) {
        let clients = Clients::new(run.conn(i).clone());
        let (cluster, counts, next, phase) =
            (cluster.clone(), counts.clone(), next.clone(), phase.clone());
        let mut tally = run.tally(&phase);
        loaders.push(tokio::spawn(async move {
            let mut c = clients;
            loop {
                if phase.shutdown.is_triggered() {
                    return Ok(());
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                // Object n of the flattened population: resource by resource.
                let mut rest = n;
                let Some(res) = counts.iter().position(|&count| {
                    if rest < count {
                        true
                    } else {
                        rest -= count;
                        false
                    }
                }) else {
                    return Ok(());
                };
                let r = &cluster.resources[res];
                let lease = if r.leased {
                    match cluster
                        .event_leases
                        .lease(&mut c.leases, &c.conn, &mut tally)
                        .await
                    {
                        Some(id) => Some(id),
                        None => return Err(format!("granting a lease for {}", r.name)),
                    }
                } else {
                    None
                };
                let key = r.key(cluster.objects[res].next_id(), cluster.namespaces);
                let body = cluster.bodies[res].make(n);
                let resp =
                    c.kv.txn(create_txn(&key, body, lease))
                        .await
                        .map_err(|e| format!("creating {}: {e}", String::from_utf8_lossy(&key)))?;
                match written(&resp) {
                    Written::Done(rev) => cluster.objects[res].insert(key, rev),
                    Written::Conflict(_) => {
                        return Err(format!("{} already exists", String::from_utf8_lossy(&key)))
                    }
                }
                phase.progress.inc(1);
            }
        }));
    }
    let mut failure = None;
    for loader in loaders {
        match loader.await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failure = failure.or(Some(message)),
            Err(e) => failure = failure.or(Some(format!("a loading task died: {e}"))),
        }
    }
    let took = phase.finish();
    if let Some(message) = failure {
        return Err(LoadgenError::Load(message));
    }
    eprintln!("kubernetes: loaded in {:.1} s", took.as_secs_f64());
    Ok(())
}
