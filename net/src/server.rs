//! The basalt server: one pinned glommio executor per core, each serving
//! gRPC on the client connections handed to it; executor 0 also runs the
//! [`Sequencer`].
//!
//! Every listening port is bound once, by this process alone (no
//! SO_REUSEPORT, so a second process on the same address gets "address
//! already in use" instead of half of our connections), with SO_REUSEADDR
//! so a restarted member rebinds at once while old connections sit in
//! TIME_WAIT. Executor 0 accepts on it and deals the connections out to the
//! executors in turn ([`Acceptor`]).
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
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use std::os::fd::{FromRawFd, IntoRawFd};

use futures_channel::mpsc as mpsc_async;
use futures_channel::oneshot;
use futures_lite::{future, StreamExt};
use glommio::channels::channel_mesh::{MeshBuilder, Role};
use glommio::net::{AcceptedTcpStream, TcpListener, TcpStream};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::compactor::AutoCompaction;
use crate::config::{parse_listen_url, Config, InitialClusterState};
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
/// Concurrent streams per connection: `--max-concurrent-streams`, at most
/// this (etcd allows u32::MAX, its default; we bound it).
const MAX_CONCURRENT_STREAMS: u32 = 10_000;

/// A running server. Dropping it without [`ServerHandle::shutdown`] leaves
/// the executors running until the process exits.
pub struct ServerHandle {
    /// Set if the member's log failed and it stopped serving.
    failed: std::sync::Arc<std::sync::OnceLock<String>>,
    client_addrs: Vec<SocketAddr>,
    /// Whether the first client URL is `https`.
    first_client_tls: bool,
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

    /// `http://ip:port` (or `https://`) of [`ServerHandle::client_addr`],
    /// for clients.
    pub fn client_url(&self) -> String {
        let scheme = if self.first_client_tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.client_addr())
    }

    pub fn member_id(&self) -> u64 {
        self.cluster.local.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster.cluster_id
    }

    /// Why the member stopped serving on its own (its log failed), if it
    /// did: the process should stop and report it.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
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
    let client_tls = client_tls(&cfg)?;
    let first_client_tls = cfg
        .listen_client_urls
        .first()
        .is_some_and(|u| crate::tls::is_https(u));
    let client_listeners = listen
        .iter()
        .zip(&cfg.listen_client_urls)
        .map(|(&addr, url)| {
            let tls = crate::tls::is_https(url)
                .then(|| client_tls.clone())
                .flatten();
            Ok((bind_exclusive(addr, "client")?, tls))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let bound = client_listeners
        .iter()
        .map(|(l, _)| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("reading a bound client address", e))?;
    let peer_tls = cfg
        .tls
        .peer_server_config(&cfg.listen_peer_urls, &cfg.data_dir)?;
    let peer_dial = cfg
        .tls
        .peer_client_config(&cfg.listen_peer_urls, &cfg.data_dir)?;
    let join = join_cluster(&cfg, &mut cluster, peer_dial.clone())?;
    let peer_listeners = cfg
        .listen_peer_urls
        .iter()
        .map(|u| {
            let tls = crate::tls::is_https(u).then(|| peer_tls.clone()).flatten();
            Ok((bind_exclusive(parse_listen_url(u)?, "peer")?, tls))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    fix_advertised_ports(&mut cluster, &bound);
    // glommio cannot open a relative WAL directory (EBADF); resolve it once.
    let data_dir = std::path::absolute(&cfg.data_dir).map_err(|e| {
        Error::io(
            format!("resolving --data-dir {}", cfg.data_dir.display()),
            e,
        )
    })?;
    let failed = std::sync::Arc::new(std::sync::OnceLock::new());
    let (shard_workers, workers) = ShardWorkers::new(cores);
    let (event_feeds, feeds) = crate::watch::EventFeeds::new(cores);
    let auth = (
        Arc::new(crate::auth::Tokens::new(&cfg.auth_token)?),
        cfg.bcrypt_cost,
    );
    let wal_dir = match &cfg.wal_dir {
        Some(dir) => std::path::absolute(dir)
            .map_err(|e| Error::io(format!("resolving --wal-dir {}", dir.display()), e))?,
        None => crate::sequencer::wal_dir(&data_dir),
    };
    let seq_cfg = SequencerConfig {
        wal_dir,
        data_dir,
        cluster: cluster.clone(),
        timing: cfg.timing,
        quota_backend_bytes: cfg.limits.quota_backend_bytes,
        snapshot_count: cfg.snapshot_count.max(1),
        catchup_entries: cfg.catchup_entries,
        checkpoint_interval: cfg.checkpoint_interval,
        max_request_bytes: cfg.limits.max_request_bytes,
        wal: cfg.wal.clone(),
        shards: cores,
        views: PublishedViews::default(),
        shard_workers,
        event_feeds,
        failed: failed.clone(),
        corrupt_check_interval: cfg.corrupt_check_interval,
        tokens: Some(auth.0.clone()),
        initial_corrupt_check: cfg.initial_corrupt_check,
        pre_vote: cfg.pre_vote,
        join,
    };
    let views = seq_cfg.views.clone();
    let metrics_listeners =
        crate::metrics::bind_listeners(&cfg.listen_metrics_urls, client_tls.as_ref())?;
    let metrics_addrs = crate::metrics::local_addrs(&metrics_listeners)?;
    let limits = Limits {
        max_recv_message_bytes: cfg.limits.max_request_bytes + GRPC_OVERHEAD_BYTES,
        max_concurrent_streams: cfg.max_concurrent_streams.min(MAX_CONCURRENT_STREAMS),
        keepalive: cfg.grpc_keepalive,
    };
    let mesh: Option<SequencerMesh> =
        (cores > 1).then(|| MeshBuilder::partial(cores, MESH_CHANNEL_CAPACITY));
    let calls = crate::grpc::CallMetrics::new(cores);
    let mut stops = Vec::new();
    let mut executors = Vec::new();
    // Every executor is handed its connections by executor 0's acceptor.
    let (deal_to, mut incoming): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| mpsc_async::channel::<Accepted>(CONNECTION_QUEUE))
        .unzip();
    let acceptor = Acceptor {
        client: client_listeners,
        peer: peer_listeners,
        peer_dial,
        executors: deal_to,
    };
    // Executor 0 first: it opens the store, which may fail. It holds the
    // only sender of its channel, so if it dies before it answers (its
    // io_uring cannot be set up, ...) the wait below ends at once.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<ClusterInfo, String>>();
    let mut drained_rxs = Vec::new();
    let mut drained_txs = Vec::new();
    for _ in 1..cores {
        let (tx, rx) = oneshot::channel::<()>();
        drained_txs.push(tx);
        drained_rxs.push(rx);
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    stops.push(stop_tx);
    let mut incoming = incoming.drain(..);
    let exec = Executor {
        id: 0,
        bound: bound.clone(),
        incoming: incoming.next().expect("one queue per executor"),
        limits,
        drain_timeout: cfg.drain_timeout,
        stop: stop_rx,
        ready: ready_tx,
        calls: calls.clone(),
        auto_compaction: cfg
            .auto_compaction
            .map(|mode| (mode, cfg.revision_compaction_interval)),
        lease_checkpoint_interval: cfg.lease_checkpoint_interval,
        progress_interval: cfg.watch_progress_notify_interval,
        metrics_extensive: cfg.metrics_extensive,
    };
    let kv = cfg.limits;
    let auth0 = auth.clone();
    let mesh0 = mesh.clone();
    let spin = cfg.spin_before_park;
    executors.push(spawn_executor(
        0,
        cpus.first().copied(),
        spin,
        move || async move {
            let links = SequencerLinks {
                kv,
                auth: auth0,
                mesh: mesh0,
                drained: drained_rxs,
                metrics_listeners,
                acceptor,
            };
            exec.run_sequencer(seq_cfg, links).await
        },
    )?);
    // The membership and ids the data dir holds win over the flags.
    let mut cluster = match ready_rx.recv() {
        Ok(Ok(recorded)) => recorded,
        Ok(Err(e)) => {
            join_all(executors);
            return Err(Error::Startup(e));
        }
        Err(_) => {
            let why = exit_reason(executors.pop().expect("executor 0 was spawned"));
            return Err(Error::Startup(format!("executor 0 could not start: {why}")));
        }
    };
    // The other executors answer on a channel of their own, whose sender
    // this thread drops once they are spawned (same reason).
    let (ready_tx, ready_rx) = mpsc::channel::<Result<ClusterInfo, String>>();
    fix_advertised_ports(&mut cluster, &bound);
    let per_executor = drained_txs.into_iter().zip(workers).zip(feeds);
    for (i, (((drained, worker), feed), incoming)) in (1..cores).zip(per_executor.zip(incoming)) {
        let (stop_tx, stop_rx) = oneshot::channel();
        stops.push(stop_tx);
        let exec = Executor {
            id: i,
            bound: bound.clone(),
            incoming,
            limits,
            drain_timeout: cfg.drain_timeout,
            stop: stop_rx,
            ready: ready_tx.clone(),
            calls: calls.clone(),
            auto_compaction: None,
            lease_checkpoint_interval: None,
            progress_interval: cfg.watch_progress_notify_interval,
            metrics_extensive: false,
        };
        let links = Links {
            cluster: cluster.clone(),
            kv: cfg.limits,
            auth: auth.clone(),
            views: views.clone(),
            mesh: mesh.clone(),
            drained,
            shard_worker: worker,
            event_feed: feed,
            election_timeout: cfg.timing.election_timeout,
        };
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        executors.push(spawn_executor(i, cpu, spin, move || async move {
            exec.run_forwarder(links).await
        })?);
    }
    drop(ready_tx);
    for _ in 1..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let h = ServerHandle {
                    failed,
                    client_addrs: bound,
                    first_client_tls,
                    metrics_addrs,
                    cluster,
                    stops,
                    executors,
                };
                let _ = h.shutdown();
                return Err(Error::Startup(e));
            }
            Err(_) => {
                // Some executor died without a word: stop the others; the
                // first error joining them says why.
                let h = ServerHandle {
                    failed,
                    client_addrs: bound,
                    first_client_tls,
                    metrics_addrs,
                    cluster,
                    stops,
                    executors,
                };
                let why = match h.shutdown() {
                    Err(e) => memlock_hint(e.to_string()),
                    Ok(()) => "no reason given".into(),
                };
                return Err(Error::Startup(format!(
                    "an executor could not start: {why}"
                )));
            }
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
        failed,
        client_addrs: bound,
        first_client_tls,
        metrics_addrs,
        cluster,
        stops,
        executors,
    })
}

/// The client listeners' TLS (also serving `https` metrics URLs), if any
/// of them is `https`.
fn client_tls(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, Error> {
    let https_metrics = cfg
        .listen_metrics_urls
        .iter()
        .filter(|u| crate::tls::is_https(u));
    let urls: Vec<String> = cfg
        .listen_client_urls
        .iter()
        .chain(https_metrics)
        .cloned()
        .collect();
    cfg.tls.client_server_config(&urls, &cfg.data_dir)
}

/// `--initial-cluster-state existing`: a new member (no data dir yet) asks
/// the other members of `--initial-cluster` who it is, as etcd fetches the
/// cluster from its peers, and takes the cluster id, its member id and the
/// members from the answer. A member with a data dir ignores the flag, as
/// etcd does; one whose data dir holds no store yet (a join cut short)
/// cannot tell what it joined and says so.
fn join_cluster(
    cfg: &Config,
    cluster: &mut ClusterInfo,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Option<Result<basalt_raft::ConfState, String>>, Error> {
    if cfg.initial_cluster_state != InitialClusterState::Existing {
        return Ok(None);
    }
    if cfg.data_dir.join("member").exists() {
        return Ok(Some(Err(format!(
            "{} holds no store of the cluster this member joined (a join cut short?): \
             remove it and start the member again",
            cfg.data_dir.display()
        ))));
    }
    let others: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.id != cluster.local.id)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let joined =
        crate::peer::discover(&others, &cluster.local.peer_urls, &cluster.local.name, tls)?;
    cluster.cluster_id = joined.cluster_id;
    cluster.local.id = joined.member_id;
    cluster.members = joined
        .members
        .iter()
        .map(|m| {
            if m.id == joined.member_id {
                cluster.local.clone()
            } else {
                crate::member::MemberInfo {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: joined.learners.contains(&m.id),
                }
            }
        })
        .collect();
    Ok(Some(Ok(basalt_raft::ConfState {
        voters: joined.voters,
        learners: joined.learners,
        ..basalt_raft::ConfState::default()
    })))
}

/// Binds `addr` for this process alone: SO_REUSEADDR (as etcd, so a
/// restarted member rebinds at once while the old connections sit in
/// TIME_WAIT) but not SO_REUSEPORT, with which a second process could bind
/// the same port and take half of the connections.
///
/// A process killed a moment ago may still hold its listener for a few
/// milliseconds while the kernel tears its io_uring down (its accept was
/// in flight there): "address in use" is retried for up to
/// [`REBIND_PATIENCE`] before it is final.
fn bind_exclusive(addr: SocketAddr, traffic: &str) -> Result<std::net::TcpListener, Error> {
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match try_bind_exclusive(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => {
                return other.map_err(|e| {
                    Error::io(format!("cannot listen for {traffic} traffic on {addr}"), e)
                })
            }
        }
    }
}

/// How long a taken address is retried (see [`bind_exclusive`]).
const REBIND_PATIENCE: Duration = Duration::from_secs(1);

fn try_bind_exclusive(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
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

/// Why an executor thread that ended did: its error, or glommio's when the
/// executor could not even be built, with what to change when that is the
/// locked-memory limit (io_uring's buffers are locked memory).
fn exit_reason(h: ExecutorJoinHandle<Result<(), String>>) -> String {
    let why = match h.join() {
        Ok(Ok(())) => return "it ended".into(),
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    };
    memlock_hint(why)
}

/// `why`, with what to change when it is the locked-memory limit.
fn memlock_hint(why: String) -> String {
    let memlock = rlimit_memlock();
    if why.contains("MemLock") || why.contains("Cannot allocate memory") || why.contains("ENOMEM") {
        format!(
            "{why} (io_uring needs locked memory: the limit is {memlock}; raise it, e.g. `ulimit -l unlimited` or LimitMEMLOCK=infinity in a systemd unit)"
        )
    } else {
        why
    }
}

/// RLIMIT_MEMLOCK as text, for error messages.
fn rlimit_memlock() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".into();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    }
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
    /// This member's auth tokens and `--bcrypt-cost`.
    auth: (Arc<crate::auth::Tokens>, u32),
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
    /// How often require-leader watches check for a leader.
    election_timeout: Duration,
}

/// What the sequencer's executor runs besides its own connections.
struct SequencerLinks {
    kv: crate::services::KvLimits,
    /// This member's auth tokens and `--bcrypt-cost`.
    auth: (Arc<crate::auth::Tokens>, u32),
    /// From the other executors (writes, Lease, Maintenance).
    mesh: Option<SequencerMesh>,
    /// One per other executor, told when its calls are finished.
    drained: Vec<oneshot::Receiver<()>>,
    metrics_listeners: Vec<crate::metrics::MetricsListener>,
    acceptor: Acceptor,
}

/// What one executor needs to serve clients.
struct Executor {
    id: usize,
    /// The client addresses bound (advertised port 0 becomes the real one).
    bound: Vec<SocketAddr>,
    /// Connections the acceptor dealt to this executor.
    incoming: ConnectionQueue,
    limits: Limits,
    drain_timeout: Duration,
    stop: oneshot::Receiver<()>,
    /// Told once the executor serves (with the cluster it serves).
    ready: mpsc::Sender<Result<ClusterInfo, String>>,
    /// The server's gRPC call counters (one slot per executor).
    calls: std::sync::Arc<crate::grpc::CallMetrics>,
    /// `--auto-compaction-*` and revision mode's check interval; only the
    /// sequencer's executor runs it.
    auto_compaction: Option<(AutoCompaction, Duration)>,
    /// `--experimental-enable-lease-checkpoint`: how often the leader
    /// records remaining lease TTLs in the log.
    lease_checkpoint_interval: Option<Duration>,
    /// `--metrics extensive`.
    metrics_extensive: bool,
    /// `--experimental-watch-progress-notify-interval`.
    progress_interval: Duration,
}

impl Executor {
    async fn run_sequencer(
        self,
        seq_cfg: SequencerConfig,
        links: SequencerLinks,
    ) -> Result<(), String> {
        let SequencerLinks {
            kv,
            auth,
            mesh,
            drained,
            metrics_listeners,
            acceptor,
        } = links;
        if cfg!(debug_assertions) && std::env::var_os("BASALT_TEST_STARTUP_STALL").is_some() {
            // Test hook (debug builds only): a startup that never ends, to
            // show a stop signal still ends the process.
            tracing::warn!("BASALT_TEST_STARTUP_STALL: startup stalls for ever");
            futures_lite::future::pending::<()>().await;
        }
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
            self.metrics_extensive,
        );
        let mut cluster = seq.cluster();
        fix_advertised_ports(&mut cluster, &self.bound);
        let ctx = Rc::new(ServiceContext {
            sequencer: SequencerClient::Local(seq.clone()),
            views: seq.views(),
            cluster: cluster.clone(),
            limits: kv,
            tokens: auth.0.clone(),
            bcrypt_cost: auth.1,
        });
        let mut methods = router(ctx);
        methods.count_calls(self.calls.executor(self.id));
        metrics.attach(&mut methods);
        // Watch and Lease keep their state on this executor.
        crate::watch::attach(
            &mut methods,
            &seq,
            crate::watch::HubConfig {
                max_response_bytes: kv.max_request_bytes,
                progress_interval: self.progress_interval,
                authorize: Some(crate::services::watch_authorizer(
                    seq.views(),
                    auth.0.clone(),
                )),
                ..Default::default()
            },
        );
        let timing = seq.timing();
        crate::watch::require_leader(&mut methods, seq.views(), timing.election_timeout);
        methods.set_gate(crate::services::learner_gate(seq.views()));
        crate::lease::attach(
            &mut methods,
            &seq,
            crate::lease::LeaseConfig {
                checkpoint_interval: self.lease_checkpoint_interval,
                ..crate::lease::LeaseConfig::new(timing.heartbeat, timing.election_timeout)
            },
        );
        crate::services::guard_leases(&mut methods, seq.clone(), auth.0.clone());
        let methods = Rc::new(methods);
        // Before joining the mesh: the other executors start only then.
        let _ = self.ready.send(Ok(cluster));
        if let Some(mesh) = mesh {
            let (_, receivers) = mesh
                .join(Role::Consumer)
                .await
                .map_err(|_| "cannot join the sequencer mesh".to_string())?;
            serve_mesh(seq.clone(), methods.clone(), receivers);
        }
        let shutdown = Rc::new(Shutdown::new());
        let transport = seq.start_peers();
        // Before any task runs, so the first dial already has it.
        transport.set_dial_tls(acceptor.peer_dial.clone());
        let gate = {
            let seq = seq.clone();
            Box::pin(async move {
                // A member whose data disagrees with its peers never
                // serves a client: the process stops (see `failure`).
                if !seq.initial_corruption_check().await {
                    std::future::pending::<()>().await;
                }
                seq.wait_published().await
            }) as Gate
        };
        let accepting = glommio::spawn_local(acceptor.run(shutdown.clone(), transport, gate));
        let serving = Serving {
            id: self.id,
            incoming: self.incoming,
            limits: self.limits,
        };
        serving
            .run(methods, self.stop, self.drain_timeout, shutdown)
            .await;
        accepting.await;
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
            auth,
            views,
            mesh,
            drained,
            shard_worker,
            event_feed,
            election_timeout,
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
        let ctx_cluster = cluster.clone();
        let ctx = Rc::new(ServiceContext {
            sequencer: client.clone(),
            views: views.clone(),
            cluster,
            limits: kv,
            tokens: auth.0.clone(),
            bcrypt_cost: auth.1,
        });
        let mut methods = router(ctx);
        // Watch streams of this executor's connections are served here.
        let hub = crate::watch::HubConfig {
            max_response_bytes: kv.max_request_bytes,
            progress_interval: self.progress_interval,
            authorize: Some(crate::services::watch_authorizer(
                views.clone(),
                auth.0.clone(),
            )),
            ..Default::default()
        };
        crate::watch::attach_fed(&mut methods, event_feed, &views, hub)
            .map_err(|e| format!("cannot serve Watch: {}", e.message))?;
        crate::watch::require_leader(&mut methods, views.clone(), election_timeout);
        methods.set_gate(crate::services::learner_gate(views.clone()));
        // Methods served only on the sequencer's executor (Lease) are
        // forwarded there whole.
        let forward: CallForwarder = Rc::new(move |call| {
            let client = client.clone();
            Box::pin(async move { client.forward_call(call).await })
        });
        methods.set_fallback(forwarding_handler(forward));
        methods.count_calls(self.calls.executor(self.id));
        let _ = self.ready.send(Ok(ctx_cluster));
        let serving = Serving {
            id: self.id,
            incoming: self.incoming,
            limits: self.limits,
        };
        serving
            .run(
                Rc::new(methods),
                self.stop,
                self.drain_timeout,
                Rc::new(Shutdown::new()),
            )
            .await;
        let _ = drained.send(());
        shard_commits.await;
        Ok(())
    }
}

/// Connections accepted by executor 0 for one executor; bounded, so a
/// flood of connections waits in the kernel's backlog, not in our memory.
type ConnectionQueue = mpsc_async::Receiver<Accepted>;

/// A client connection dealt to an executor, with the TLS of the
/// listener that accepted it (the handshake runs on that executor).
struct Accepted {
    stream: std::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Accepted connections queued for one executor before the acceptor waits.
const CONNECTION_QUEUE: usize = 64;
/// Pending connections the kernel keeps per listening socket.
const LISTEN_BACKLOG: i32 = 1024;

/// Accepts on every listening socket of the process (on executor 0) and
/// deals client connections to the executors in turn, so every executor
/// serves a share, and only this process ever accepts on its ports.
struct Acceptor {
    /// `--listen-client-urls`, with their TLS if `https`.
    client: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    /// `--listen-peer-urls`: streams other members open to us, with their
    /// TLS if `https`.
    peer: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    /// TLS for dialling `https` peer URLs.
    peer_dial: Option<Arc<rustls::ClientConfig>>,
    executors: Vec<mpsc_async::Sender<Accepted>>,
}

impl Acceptor {
    /// Accepts until `shutdown` fires; peer streams go to `transport` at
    /// once, client connections wait (in the kernel's backlog) for
    /// `clients_from`: etcd serves clients once its member is published.
    async fn run(
        self,
        shutdown: Rc<Shutdown>,
        transport: Rc<crate::peer::Transport>,
        clients_from: Gate,
    ) {
        let next = Rc::new(Cell::new(0usize));
        let mut loops = Vec::new();
        let gate = Rc::new(Shutdown::new());
        {
            let (gate, shutdown) = (gate.clone(), shutdown.clone());
            loops.push(glommio::spawn_local(async move {
                future::or(clients_from, shutdown.wait()).await;
                gate.fire();
            }));
        }
        for (l, tls) in self.client {
            let gate = gate.clone();
            let shutdown = shutdown.clone();
            let deal = Deal {
                executors: self.executors.clone(),
                next: next.clone(),
            };
            loops.push(glommio::spawn_local(async move {
                if shutdown.unless_fired(gate.wait()).await.is_some() {
                    accept_loop(glommio_listener(l), shutdown, move |s| {
                        deal.clone().give(s, tls.clone())
                    })
                    .await;
                }
            }));
        }
        drop(self.executors);
        for (l, tls) in self.peer {
            let transport = transport.clone();
            loops.push(glommio::spawn_local(accept_loop(
                glommio_listener(l),
                shutdown.clone(),
                move |s| {
                    let stream = s.bind_to_executor();
                    glommio::spawn_local(serve_peer(transport.clone(), stream, tls.clone()))
                        .detach();
                    Box::pin(async {})
                },
            )));
        }
        for l in loops {
            l.await;
        }
    }
}

/// Time a peer has to finish its TLS handshake.
const PEER_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Hands a stream a peer opened to the transport, after the TLS
/// handshake on an `https` peer listener (a refused one is logged, as
/// etcd logs "rejected connection").
async fn serve_peer(
    transport: Rc<crate::peer::Transport>,
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let stream = match tls {
        None => crate::tls::Stream::Plain(tcp),
        Some(config) => {
            let remote = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let _ = tcp.set_read_timeout(Some(PEER_TLS_HANDSHAKE_TIMEOUT));
            match crate::tls::Stream::accept(tcp, config).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        "rejected peer connection from {remote:?} (error {:?})",
                        e.to_string()
                    );
                    return;
                }
            }
        }
    };
    transport.serve_inbound(stream).await
}

fn glommio_listener(l: std::net::TcpListener) -> TcpListener {
    // SAFETY: the fd comes from a bound, listening std listener whose
    // ownership `into_raw_fd` hands over; nothing else closes it.
    unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }
}

type Handoff = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
/// Resolves when client connections may be served.
type Gate = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

async fn accept_loop(
    listener: TcpListener,
    shutdown: Rc<Shutdown>,
    handle: impl Fn(AcceptedTcpStream) -> Handoff,
) {
    loop {
        match shutdown.unless_fired(listener.shared_accept()).await {
            None => break,
            Some(Ok(s)) => handle(s).await,
            Some(Err(e)) => {
                // EMFILE and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The executors' queues and whose turn is next.
#[derive(Clone)]
struct Deal {
    executors: Vec<mpsc_async::Sender<Accepted>>,
    next: Rc<Cell<usize>>,
}

impl Deal {
    fn give(
        mut self,
        accepted: AcceptedTcpStream,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Handoff {
        Box::pin(async move {
            // glommio's AcceptedTcpStream is a bare fd that nothing closes;
            // an owned std stream closes itself wherever it is dropped.
            let stream = match owned_stream(accepted) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand an accepted connection over");
                    return;
                }
            };
            let n = self.executors.len();
            let turn = self.next.get() % n;
            self.next.set((turn + 1) % n);
            let queue = &mut self.executors[turn];
            let ready = std::future::poll_fn(|cx| queue.poll_ready(cx)).await;
            // A stopped executor's queue is closed: the connection is
            // dropped (closed), as it would be during shutdown anyway.
            if ready.is_ok() {
                let _ = queue.start_send(Accepted { stream, tls });
            }
        })
    }
}

/// Moves an accepted connection into an owned std stream (Send, closed on
/// drop) for the executor that will serve it.
fn owned_stream(accepted: AcceptedTcpStream) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
    let here = accepted.bind_to_executor();
    // SAFETY: `here` owns the fd and outlives the borrow; the clone is a
    // new fd (dup) that the returned stream owns.
    let owned: OwnedFd =
        unsafe { BorrowedFd::borrow_raw(here.as_raw_fd()) }.try_clone_to_owned()?;
    Ok(std::net::TcpStream::from(owned))
}

/// The connections one executor serves.
struct Serving {
    id: usize,
    incoming: ConnectionQueue,
    limits: Limits,
}

impl Serving {
    /// Serves the connections dealt to this executor until `stop`, then
    /// fires `shutdown` and waits (bounded) for open connections to finish
    /// their calls.
    async fn run(
        self,
        router: Rc<Router>,
        stop: oneshot::Receiver<()>,
        drain_timeout: Duration,
        shutdown: Rc<Shutdown>,
    ) {
        let Serving {
            id,
            mut incoming,
            limits,
        } = self;
        let open = Rc::new(Cell::new(0usize));
        let receiving = {
            let (shutdown, open) = (shutdown.clone(), open.clone());
            glommio::spawn_local(async move {
                loop {
                    let Some(Some(accepted)) = shutdown.unless_fired(incoming.next()).await else {
                        break;
                    };
                    // SAFETY: the fd is an accepted, connected socket that
                    // `into_raw_fd` hands over; the glommio stream owns it.
                    let stream = unsafe { TcpStream::from_raw_fd(accepted.stream.into_raw_fd()) };
                    let tls = accepted.tls;
                    if let Some(calls) = router.calls() {
                        calls.connection_opened();
                    }
                    open.set(open.get() + 1);
                    let (shutdown, open, router) = (shutdown.clone(), open.clone(), router.clone());
                    glommio::spawn_local(async move {
                        if let Err(e) = serve_connection(stream, tls, router, limits, shutdown).await {
                            tracing::debug!(executor = id, error = %e, "connection ended with an error");
                        }
                        open.set(open.get() - 1);
                    })
                    .detach();
                }
            })
        };
        let _ = stop.await;
        shutdown.fire();
        receiving.await;
        let deadline = Instant::now() + drain_timeout;
        while open.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        if open.get() > 0 {
            tracing::warn!(
                executor = id,
                open = open.get(),
                "closing connections still open after the drain timeout"
            );
        }
    }
}
