//! The basalt server: one pinned glommio executor per core, each accepting
//! client connections on the same port (SO_REUSEPORT) and serving gRPC;
//! executor 0 also runs the [`Sequencer`].
//!
//! Reads run on the executor that received them: the store's versions are
//! hash-sharded into one tree file per executor, and after every applied
//! batch the sequencer publishes a read view of all of them
//! ([`crate::sequencer::PublishedViews`]), so a Range or read-only Txn on
//! any core reads every shard file itself and merges them at one revision,
//! with no hop. Writes and the other calls go to the sequencer: directly on
//! executor 0, over a channel mesh from the others (one hop each way).
//! Watch and Lease keep their state on executor 0; a call for them that
//! arrives on another executor is bridged there whole
//! ([`crate::grpc::forwarding_handler`]). Tree writes are all made by the
//! sequencer's checkpoints (on a blocking thread), not yet by the executor
//! owning each shard (see docs/sharding.md).
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let server = basalt_net::server::start(basalt_net::Config::for_test(dir.path())).unwrap();
//! println!("serving etcd's API on {}", server.client_url());
//! server.shutdown().unwrap();
//! ```

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::future;
use glommio::channels::channel_mesh::{MeshBuilder, Role};
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::compactor::AutoCompaction;
use crate::config::{parse_listen_url, Config};
use crate::error::Error;
use crate::grpc::{forwarding_handler, serve_connection, CallForwarder, Limits, Router, Shutdown};
use crate::member::ClusterInfo;
use crate::sequencer::{
    serve_mesh, serve_shard_commits, PublishedViews, Sequencer, SequencerClient, SequencerConfig,
    SequencerMesh, ShardWorker, ShardWorkers, MESH_CHANNEL_CAPACITY,
};
use crate::services::{router, ServiceContext};

/// gRPC framing and metadata allowance on top of `--max-request-bytes`
/// (etcd's `grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Concurrent streams per connection (etcd allows u32::MAX; we bound it).
const MAX_CONCURRENT_STREAMS: u32 = 10_000;

/// A running server. Dropping it without [`ServerHandle::shutdown`] leaves
/// the executors running until the process exits.
pub struct ServerHandle {
    client_addrs: Vec<SocketAddr>,
    metrics_addrs: Vec<SocketAddr>,
    cluster: ClusterInfo,
    stops: Vec<oneshot::Sender<()>>,
    executors: Vec<ExecutorJoinHandle<Result<(), String>>>,
}

impl ServerHandle {
    /// The first bound client address (the real port when 0 was asked).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addrs[0]
    }

    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// Bound `--listen-metrics-urls` addresses, in flag order.
    pub fn metrics_addrs(&self) -> &[SocketAddr] {
        &self.metrics_addrs
    }

    /// `http://ip:port` of [`ServerHandle::client_addr`], for clients.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr())
    }

    pub fn member_id(&self) -> u64 {
        self.cluster.local.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster.cluster_id
    }

    /// Stops accepting, lets in-flight calls finish (bounded by the drain
    /// timeout), checkpoints the store and joins every executor.
    pub fn shutdown(mut self) -> Result<(), Error> {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        let mut first_err = None;
        for h in self.executors.drain(..) {
            let r = match h.join() {
                Ok(r) => r,
                Err(e) => Err(format!("executor failed: {e}")),
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "executor stopped with an error");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(Error::Startup(e)),
        }
    }
}

/// Starts the server and returns once every executor is accepting.
pub fn start(cfg: Config) -> Result<ServerHandle, Error> {
    let cpus = allowed_cpus();
    let cores = if cfg.cores == 0 {
        cpus.len().max(1)
    } else {
        cfg.cores
    };
    let listen: Vec<SocketAddr> = cfg
        .listen_client_urls
        .iter()
        .map(|u| parse_listen_url(u))
        .collect::<Result<_, _>>()?;
    if listen.is_empty() {
        return Err(Error::Config("no --listen-client-urls".into()));
    }
    let mut cluster = ClusterInfo::from_flags(
        &cfg.name,
        &cfg.initial_cluster(),
        &cfg.initial_cluster_token,
        &cfg.initial_advertise_peer_urls,
        &cfg.advertise_client_urls,
    )?;
    // glommio cannot open a relative WAL directory (EBADF); resolve it once.
    let data_dir = std::path::absolute(&cfg.data_dir).map_err(|e| {
        Error::io(
            format!("resolving --data-dir {}", cfg.data_dir.display()),
            e,
        )
    })?;
    let (shard_workers, workers) = ShardWorkers::new(cores);
    let (event_feeds, feeds) = crate::watch::EventFeeds::new(cores);
    let seq_cfg = SequencerConfig {
        data_dir,
        member_id: cluster.local.id,
        cluster_id: cluster.cluster_id,
        quota_backend_bytes: cfg.limits.quota_backend_bytes,
        snapshot_count: cfg.snapshot_count.max(1),
        checkpoint_interval: cfg.checkpoint_interval,
        max_request_bytes: cfg.limits.max_request_bytes,
        wal: cfg.wal.clone(),
        shards: cores,
        views: PublishedViews::default(),
        shard_workers,
        event_feeds,
    };
    let views = seq_cfg.views.clone();
    let metrics_listeners = crate::metrics::bind_listeners(&cfg.listen_metrics_urls)?;
    let metrics_addrs = crate::metrics::local_addrs(&metrics_listeners)?;
    let limits = Limits {
        max_recv_message_bytes: cfg.limits.max_request_bytes + GRPC_OVERHEAD_BYTES,
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
    };
    let mesh: Option<SequencerMesh> =
        (cores > 1).then(|| MeshBuilder::partial(cores, MESH_CHANNEL_CAPACITY));
    let calls = crate::grpc::CallMetrics::new(cores);
    let mut stops = Vec::new();
    let mut executors = Vec::new();
    // Executor 0 first: it opens the store (which may fail) and binds the
    // ports; the others then bind the same, now known, ports.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<SocketAddr>, String>>();
    let mut drained_rxs = Vec::new();
    let mut drained_txs = Vec::new();
    for _ in 1..cores {
        let (tx, rx) = oneshot::channel::<()>();
        drained_txs.push(tx);
        drained_rxs.push(rx);
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    stops.push(stop_tx);
    let exec = Executor {
        id: 0,
        listen: listen.clone(),
        limits,
        drain_timeout: cfg.drain_timeout,
        stop: stop_rx,
        ready: ready_tx.clone(),
        calls: calls.clone(),
        auto_compaction: cfg
            .auto_compaction
            .map(|mode| (mode, cfg.revision_compaction_interval)),
    };
    let (cl, kv) = (cluster.clone(), cfg.limits);
    let mesh0 = mesh.clone();
    let spin = cfg.spin_before_park;
    executors.push(spawn_executor(
        0,
        cpus.first().copied(),
        spin,
        move || async move {
            exec.run_sequencer(seq_cfg, cl, kv, mesh0, drained_rxs, metrics_listeners)
                .await
        },
    )?);
    let bound = match ready_rx.recv() {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => {
            join_all(executors);
            return Err(Error::Startup(e));
        }
        Err(_) => {
            join_all(executors);
            return Err(Error::Startup("executor 0 exited before starting".into()));
        }
    };
    fix_advertised_ports(&mut cluster, &bound);
    let per_executor = drained_txs.into_iter().zip(workers).zip(feeds);
    for (i, ((drained, worker), feed)) in (1..cores).zip(per_executor) {
        let (stop_tx, stop_rx) = oneshot::channel();
        stops.push(stop_tx);
        let exec = Executor {
            id: i,
            listen: bound.clone(),
            limits,
            drain_timeout: cfg.drain_timeout,
            stop: stop_rx,
            ready: ready_tx.clone(),
            calls: calls.clone(),
            auto_compaction: None,
        };
        let links = Links {
            cluster: cluster.clone(),
            kv: cfg.limits,
            views: views.clone(),
            mesh: mesh.clone(),
            drained,
            shard_worker: worker,
            event_feed: feed,
        };
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        executors.push(spawn_executor(i, cpu, spin, move || async move {
            exec.run_forwarder(links).await
        })?);
    }
    for _ in 1..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let h = ServerHandle {
                    client_addrs: bound,
                    metrics_addrs,
                    cluster,
                    stops,
                    executors,
                };
                let _ = h.shutdown();
                return Err(Error::Startup(e));
            }
            Err(_) => return Err(Error::Startup("an executor exited before starting".into())),
        }
    }
    tracing::info!(
        cores,
        spin_before_park = ?spin,
        addrs = ?bound,
        member_id = format!("{:x}", cluster.local.id),
        cluster_id = format!("{:x}", cluster.cluster_id),
        "basalt is serving client requests"
    );
    Ok(ServerHandle {
        client_addrs: bound,
        metrics_addrs,
        cluster,
        stops,
        executors,
    })
}

fn spawn_executor<G, F>(
    id: usize,
    cpu: Option<usize>,
    spin_before_park: Option<Duration>,
    fut: G,
) -> Result<ExecutorJoinHandle<Result<(), String>>, Error>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = Result<(), String>> + 'static,
{
    let placement = match cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let mut builder = LocalExecutorBuilder::new(placement).name(&format!("basalt-{id}"));
    if let Some(spin) = spin_before_park {
        builder = builder.spin_before_park(spin);
    }
    builder.spawn(fut).map_err(|e| {
        Error::io(
            format!("starting executor {id}"),
            std::io::Error::other(e.to_string()),
        )
    })
}

fn join_all(executors: Vec<ExecutorJoinHandle<Result<(), String>>>) {
    for h in executors {
        let _ = h.join();
    }
}

/// Advertised client URLs asking for port 0 get the port actually bound.
fn fix_advertised_ports(cluster: &mut ClusterInfo, bound: &[SocketAddr]) {
    let fix = |urls: &mut Vec<String>| {
        for u in urls.iter_mut() {
            if let Some(prefix) = u.strip_suffix(":0") {
                *u = format!("{prefix}:{}", bound[0].port());
            }
        }
    };
    fix(&mut cluster.local.client_urls);
    for m in &mut cluster.members {
        fix(&mut m.client_urls);
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it, and CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// What an executor other than the sequencer's shares with the rest.
struct Links {
    cluster: ClusterInfo,
    kv: crate::services::KvLimits,
    /// The sequencer's read views (Range, read-only Txn, watch history).
    views: PublishedViews,
    /// To the sequencer (writes, Lease, Maintenance).
    mesh: Option<SequencerMesh>,
    /// Told once this executor's calls are finished.
    drained: oneshot::Sender<()>,
    /// This executor's shard tree commits.
    shard_worker: ShardWorker,
    /// Applied events for this executor's watch hub.
    event_feed: crate::watch::EventFeed,
}

/// What one executor needs to serve clients.
struct Executor {
    id: usize,
    listen: Vec<SocketAddr>,
    limits: Limits,
    drain_timeout: Duration,
    stop: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, String>>,
    /// The server's gRPC call counters (one slot per executor).
    calls: std::sync::Arc<crate::grpc::CallMetrics>,
    /// `--auto-compaction-*` and revision mode's check interval; only the
    /// sequencer's executor runs it.
    auto_compaction: Option<(AutoCompaction, Duration)>,
}

impl Executor {
    async fn run_sequencer(
        self,
        seq_cfg: SequencerConfig,
        cluster: ClusterInfo,
        kv: crate::services::KvLimits,
        mesh: Option<SequencerMesh>,
        drained: Vec<oneshot::Receiver<()>>,
        metrics_listeners: Vec<std::net::TcpListener>,
    ) -> Result<(), String> {
        let seq = match Sequencer::open(seq_cfg).await {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("cannot open the store: {e}");
                let _ = self.ready.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        seq.start();
        let compactor = self
            .auto_compaction
            .map(|(mode, every)| crate::compactor::spawn(seq.clone(), mode, every));
        let metrics = crate::metrics::MetricsServer::start(
            metrics_listeners,
            seq.clone(),
            kv.quota_backend_bytes,
        );
        let Executor {
            id,
            listen,
            limits,
            drain_timeout,
            stop,
            ready,
            calls,
            auto_compaction: _,
        } = self;
        let (serving, bound) = Serving::bind(id, &listen, limits, &ready)?;
        let mut cluster = cluster;
        fix_advertised_ports(&mut cluster, &bound);
        let ctx = Rc::new(ServiceContext {
            sequencer: SequencerClient::Local(seq.clone()),
            views: seq.views(),
            cluster,
            limits: kv,
        });
        let mut methods = router(ctx);
        methods.count_calls(calls.executor(id));
        metrics.attach(&mut methods);
        // Watch and Lease keep their state on this executor.
        crate::watch::attach(
            &mut methods,
            &seq,
            crate::watch::HubConfig {
                max_response_bytes: kv.max_request_bytes,
                ..Default::default()
            },
        );
        crate::lease::attach(&mut methods, &seq, crate::lease::LeaseConfig::default());
        let methods = Rc::new(methods);
        if let Some(mesh) = mesh {
            let (_, receivers) = mesh
                .join(Role::Consumer)
                .await
                .map_err(|_| "cannot join the sequencer mesh".to_string())?;
            serve_mesh(seq.clone(), methods.clone(), receivers);
        }
        serving.run(methods, stop, drain_timeout).await;
        // Dropping the task cancels it: no compaction after shutdown began.
        drop(compactor);
        metrics.stop().await;
        // Forwarded requests must be finished before the sequencer stops.
        for d in drained {
            let _ = d.await;
        }
        let result = seq.stop().await.map_err(|e| e.to_string());
        tracing::info!("sequencer stopped; store checkpointed");
        result
    }

    async fn run_forwarder(self, links: Links) -> Result<(), String> {
        let Links {
            cluster,
            kv,
            views,
            mesh,
            drained,
            shard_worker,
            event_feed,
        } = links;
        // This executor writes its shard trees at every checkpoint, until
        // the sequencer's last one (at shutdown) is done.
        let shard_commits = glommio::spawn_local(serve_shard_commits(shard_worker));
        let mesh = mesh.ok_or_else(|| "forwarder without a mesh".to_string())?;
        let (senders, _) = mesh
            .join(Role::Producer)
            .await
            .map_err(|_| "cannot join the sequencer mesh".to_string())?;
        let client = SequencerClient::Remote(Rc::new(senders));
        let ctx = Rc::new(ServiceContext {
            sequencer: client.clone(),
            views: views.clone(),
            cluster,
            limits: kv,
        });
        let mut methods = router(ctx);
        // Watch streams of this executor's connections are served here.
        let hub = crate::watch::HubConfig {
            max_response_bytes: kv.max_request_bytes,
            ..Default::default()
        };
        crate::watch::attach_fed(&mut methods, event_feed, &views, hub)
            .map_err(|e| format!("cannot serve Watch: {}", e.message))?;
        // Methods served only on the sequencer's executor (Lease) are
        // forwarded there whole.
        let forward: CallForwarder = Rc::new(move |call| {
            let client = client.clone();
            Box::pin(async move { client.forward_call(call).await })
        });
        methods.set_fallback(forwarding_handler(forward));
        methods.count_calls(self.calls.executor(self.id));
        let (serving, _) = Serving::bind(self.id, &self.listen, self.limits, &self.ready)?;
        serving
            .run(Rc::new(methods), self.stop, self.drain_timeout)
            .await;
        let _ = drained.send(());
        shard_commits.await;
        Ok(())
    }
}

/// The accept loops of one executor.
struct Serving {
    id: usize,
    listeners: Vec<TcpListener>,
    limits: Limits,
}

impl Serving {
    fn bind(
        id: usize,
        listen: &[SocketAddr],
        limits: Limits,
        ready: &mpsc::Sender<Result<Vec<SocketAddr>, String>>,
    ) -> Result<(Serving, Vec<SocketAddr>), String> {
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for addr in listen {
            match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l))) {
                Ok((a, l)) => {
                    bound.push(a);
                    listeners.push(l);
                }
                Err(e) => {
                    let msg = format!("cannot listen on {addr}: {e}");
                    let _ = ready.send(Err(msg.clone()));
                    return Err(msg);
                }
            }
        }
        let _ = ready.send(Ok(bound.clone()));
        Ok((
            Serving {
                id,
                listeners,
                limits,
            },
            bound,
        ))
    }

    /// Accepts until `stop`, then waits (bounded) for open connections to
    /// finish their calls.
    async fn run(self, router: Rc<Router>, stop: oneshot::Receiver<()>, drain_timeout: Duration) {
        let shutdown = Rc::new(Shutdown::new());
        let open = Rc::new(Cell::new(0usize));
        let mut loops = Vec::new();
        for listener in self.listeners {
            let (shutdown, open, router) = (shutdown.clone(), open.clone(), router.clone());
            let limits = self.limits;
            let id = self.id;
            loops.push(glommio::spawn_local(async move {
                loop {
                    let next = future::or(async { Some(listener.accept().await) }, async {
                        shutdown.wait().await;
                        None
                    })
                    .await;
                    let stream = match next {
                        None => break,
                        Some(Ok(s)) => s,
                        Some(Err(e)) => {
                            tracing::warn!(executor = id, error = %e, "accept failed");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    open.set(open.get() + 1);
                    let (shutdown, open, router) = (shutdown.clone(), open.clone(), router.clone());
                    glommio::spawn_local(async move {
                        if let Err(e) = serve_connection(stream, router, limits, shutdown).await {
                            tracing::debug!(executor = id, error = %e, "connection ended with an error");
                        }
                        open.set(open.get() - 1);
                    })
                    .detach();
                }
            }));
        }
        let _ = stop.await;
        shutdown.fire();
        for l in loops {
            l.await;
        }
        let deadline = Instant::now() + drain_timeout;
        while open.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        if open.get() > 0 {
            tracing::warn!(
                executor = self.id,
                open = open.get(),
                "closing connections still open after the drain timeout"
            );
        }
    }
}
