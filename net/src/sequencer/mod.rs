//! The sequencer: this member's replicated state machine on one executor.
//!
//! It runs the member's Raft node ([`crate::node::Driver`]) over the WAL
//! and owns the engine's [`Store`]. A write is validated and encoded by the
//! connection that received it, then proposed here; one pass of the Ready
//! loop ([`Sequencer::run_node`]) persists every entry Raft hands out with
//! one fdatasync (the group commit), sends the messages, applies the
//! committed entries to the store in log order and answers the clients
//! waiting for them (by request id). Everything applied is checkpointed
//! into the store's B+tree every `snapshot_count` entries or
//! `checkpoint_interval`, with the member metadata Raft needs to re-enter
//! there; only then is the log compacted. Reads are not served here: after
//! each applied batch the sequencer publishes a read view of the store
//! ([`PublishedViews`]) and every executor answers Range and read-only Txn
//! from it on its own core (after a ReadIndex round unless this member is
//! the only voter).
//!
//! Invariants: log index `i` is applied only after `i - 1`; an entry is
//! answered only after it is durable on a quorum, applied here, and
//! published in a read view; an entry that fails in `apply` (compacted
//! revision, missing lease, …) changed nothing and fails again identically
//! on every member and on replay.

mod alarms;
mod client;
mod command;
mod corruption;
mod defrag;
mod initial_check;
mod log_entry;
mod membership;
mod read_txn;
mod shard_commits;
mod views;

pub use client::{serve_mesh, Envelope, SequencerClient, SequencerMesh, MESH_CHANNEL_CAPACITY};
pub use command::{Command, Reply, StatusInfo};
pub use log_entry::{LogEntry, Request as LogRequest};
pub use read_txn::{is_read_only, ReadOnlyTxn};
pub use shard_commits::{serve as serve_shard_commits, ShardWorker, ShardWorkers};
pub use views::{Published, PublishedViews};

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use basalt_engine::mvcc::{self as m, Event, Store, StoreOptions};
use basalt_engine::wal::{Wal, WalOptions};
use basalt_raft::{ConfChange, EntryType};

use self::alarms::{AlarmFile, AlarmSet};
use crate::error::Error;
use crate::grpc::{Shutdown, Status};
use crate::lease::LeaseEvent;
use crate::member::{ClusterInfo, MemberInfo};
use crate::node::{Driver, MemberMeta, NodeTiming};
use crate::peer::{PeerAnswer, PeerQuery, PeerSink, Transport};
use crate::proto::etcdserverpb as pb;

/// A checkpoint slower than this is logged at info level.
const SLOW_CHECKPOINT: Duration = Duration::from_millis(20);
/// Least time between two automatic defragmentations unless the space to
/// reclaim reached the size the last one left (the first may run at once).
const AUTO_DEFRAG_MIN_INTERVAL: Duration = Duration::from_secs(300);
/// How long a stop waits for proposals in flight to apply.
const STOP_DRAIN: Duration = Duration::from_secs(2);
/// Entries a member with peers keeps in its log behind its checkpoint, so
/// a follower a little behind catches up from the log; one further behind
/// is sent a snapshot of the store (etcd's default for
/// `--experimental-snapshot-catchup-entries`).
pub const DEFAULT_CATCHUP_ENTRIES: u64 = 5_000;

/// Where things live under `--data-dir` (etcd keeps `member/wal` and
/// `member/snap` there; we keep the WAL and the store's tree).
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

pub fn store_dir(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("store")
}

fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

/// Where snapshots received from a leader are written before installing
/// (etcd's `member/snap`).
pub fn snap_dir(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("snap")
}

#[derive(Debug, Clone)]
pub struct SequencerConfig {
    pub data_dir: PathBuf,
    /// Where the WAL lives (`--wal-dir`, else [`wal_dir`] of `data_dir`).
    pub wal_dir: PathBuf,
    /// The cluster `--initial-cluster` describes (used by a new member;
    /// a restarted one keeps the membership its data dir records).
    pub cluster: ClusterInfo,
    /// `--heartbeat-interval`, `--election-timeout`.
    pub timing: NodeTiming,
    /// `--quota-backend-bytes`; writes fail with NOSPACE past it.
    pub quota_backend_bytes: u64,
    /// `--snapshot-count`: checkpoint after this many applied entries.
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`: log kept for followers.
    pub catchup_entries: u64,
    /// Checkpoint at least this often while there is something to save.
    pub checkpoint_interval: Duration,
    /// `--max-request-bytes`: largest encoded write request.
    pub max_request_bytes: usize,
    pub wal: WalOptions,
    /// Shard trees for a new store (one per executor); an existing store
    /// keeps the count it was created with.
    pub shards: usize,
    /// Where read views are published for every executor.
    pub views: PublishedViews,
    /// The executors that commit the shard trees at a checkpoint.
    pub shard_workers: ShardWorkers,
    /// The watch hubs of the other executors, fed each applied batch.
    pub event_feeds: crate::watch::EventFeeds,
    /// Set once this member's log failed and it stopped serving (what the
    /// process reports and exits on).
    pub failed: std::sync::Arc<std::sync::OnceLock<String>>,
    /// `--initial-cluster-state existing`: the membership a new member
    /// learned from the cluster it joins (`cluster` then holds its id and
    /// the members), or why it could not; `None` founds a new cluster.
    pub join: Option<Result<basalt_raft::ConfState, String>>,
    /// `--experimental-corrupt-check-time`: how often the leader checks
    /// that every member's HashKV agrees; `None` = never (etcd's default).
    pub corrupt_check_interval: Option<Duration>,
    /// This member's auth tokens: simple tokens applied from the log are
    /// assigned there.
    pub tokens: Option<std::sync::Arc<crate::auth::Tokens>>,
    /// `--experimental-initial-corrupt-check`.
    pub initial_corrupt_check: bool,
    /// `--pre-vote`.
    pub pre_vote: bool,
}

/// Called with every applied revision's events, in revision order (the
/// hook the watch service subscribes to).
pub type EventListener = Box<dyn FnMut(i64, &[Event])>;

/// Called with every lease change applied (the lessor subscribes).
pub type LeaseListener = Box<dyn FnMut(LeaseEvent)>;

pub struct Sequencer {
    cfg: SequencerConfig,
    store: RefCell<Store>,
    /// `None` once closed by [`Sequencer::stop`].
    wal: RefCell<Option<Rc<Wal>>>,
    /// This member's Raft node.
    driver: Driver,
    /// The data dir held this member's state before this start.
    restarted: bool,
    /// The membership and position as of the last applied entry; staged
    /// into the store whenever it changes.
    meta: RefCell<MemberMeta>,
    stopping: Cell<bool>,
    /// Set once the WAL failed: nothing more can be made durable.
    poisoned: RefCell<Option<String>>,
    alarms: RefCell<AlarmSet>,
    alarm_file: AlarmFile,
    since_checkpoint: Cell<u64>,
    listeners: RefCell<Vec<EventListener>>,
    lease_listeners: RefCell<Vec<LeaseListener>>,
    writer_done: Shutdown,
    /// Held by the one defragmentation running.
    defrag_lock: glommio::sync::Semaphore,
    /// One store checkpoint at a time; defragment steps take it too (the
    /// store refuses them while a checkpoint task holds its trees).
    checkpoint_lock: glommio::sync::Semaphore,
    /// A background checkpoint was spawned and has not finished.
    checkpoint_spawned: Cell<bool>,
    /// Latencies of WAL syncs and store checkpoints, for `/metrics`.
    disk: Rc<crate::metrics::DiskMetrics>,
    /// The peer transport, once started.
    transport: RefCell<Option<Rc<Transport>>>,
    /// A NOSPACE alarm raised here still has to go through the log.
    nospace_to_publish: Cell<bool>,
    /// Fired once this member's attributes are applied (etcd serves
    /// clients only from then on).
    published: Shutdown,
    /// The last snapshot received from a leader: its index and file.
    received_snapshot: RefCell<Option<(u64, PathBuf)>>,
    /// (log index, revision) of corruption checks applied, whose HashKV
    /// this member still has to compute and report.
    hash_checks: RefCell<Vec<(u64, i64)>>,
    /// Corruption check rounds awaiting reports (judged by the leader).
    hash_rounds: RefCell<corruption::Rounds>,
    /// Members the leader found corrupt, whose alarm is still to propose.
    corrupt_to_raise: RefCell<Vec<u64>>,
    /// The last leader this member knew of, and how often it changed.
    last_leader: Cell<u64>,
    leader_changes: Cell<u64>,
    /// Proposals that failed for want of a leader or in time.
    proposals_failed: Cell<u64>,
    /// Answers other members' questions (the lessor, once attached).
    query_answerer: RefCell<Option<QueryAnswerer>>,
    /// What `/metrics` counts of this member's work.
    counters: Counters,
}

/// etcd's counters of a member's applies, reads and membership, kept where
/// the work happens (this executor) and read by a scrape.
#[derive(Debug)]
pub struct Counters {
    /// Puts and delete-ranges applied, transactions' included
    /// (`etcd_mvcc_put_total`, `etcd_mvcc_delete_total`).
    pub puts: Cell<u64>,
    pub deletes: Cell<u64>,
    /// Entries whose apply took longer than [`SLOW_APPLY`]
    /// (`etcd_server_slow_apply_total`).
    pub slow_applies: Cell<u64>,
    /// Leases granted and revoked as applied, and the granted TTLs
    /// (`etcd_debugging_lease_*`).
    pub leases_granted: Cell<u64>,
    pub leases_revoked: Cell<u64>,
    /// Keepalives this member renewed as leader, leases it expired.
    pub leases_renewed: Cell<u64>,
    pub leases_expired: Cell<u64>,
    pub lease_ttls: crate::metrics::Histogram,
    /// ReadIndex rounds that failed, or took longer than [`SLOW_READ_INDEX`].
    pub read_indexes_failed: Cell<u64>,
    pub slow_read_indexes: Cell<u64>,
    /// A snapshot from the leader is being installed.
    pub installing_snapshot: Cell<bool>,
    /// Learners this member promoted as leader.
    pub learners_promoted: Cell<u64>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            puts: Cell::new(0),
            deletes: Cell::new(0),
            slow_applies: Cell::new(0),
            leases_granted: Cell::new(0),
            leases_revoked: Cell::new(0),
            leases_renewed: Cell::new(0),
            leases_expired: Cell::new(0),
            lease_ttls: crate::metrics::Histogram::new(&crate::metrics::LEASE_TTL_BUCKETS),
            read_indexes_failed: Cell::new(0),
            slow_read_indexes: Cell::new(0),
            installing_snapshot: Cell::new(false),
            learners_promoted: Cell::new(0),
        }
    }
}

/// etcd warns of (and counts) an apply slower than this.
const SLOW_APPLY: Duration = Duration::from_millis(100);
/// etcd counts a ReadIndex that needs longer than this as slow (its retry
/// interval).
const SLOW_READ_INDEX: Duration = Duration::from_millis(500);

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Answers a [`PeerQuery`] from another member.
pub type QueryAnswerer = Box<dyn Fn(&PeerQuery) -> PeerAnswer>;

/// What `/metrics` reports of this member's Raft.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftMetrics {
    pub has_leader: bool,
    pub is_leader: bool,
    pub is_learner: bool,
    pub leader_changes: u64,
    pub proposals_failed: u64,
    pub proposals_pending: u64,
}

impl PeerSink for Sequencer {
    fn deliver(&self, batch: Vec<basalt_raft::Message>) {
        self.driver.receive(batch);
    }
    fn unreachable(&self, peer: u64) {
        self.driver.report_unreachable(peer);
    }
    fn snapshot_sent(&self, peer: u64, ok: bool) {
        self.driver.report_snapshot(peer, ok);
    }
    fn snapshot_image(&self) -> Option<(basalt_engine::mvcc::ReadView, Vec<u8>)> {
        // The view and the metadata of the same applied index.
        let view = self.store.borrow().read_view();
        let alarms = self.alarms.borrow().iter().copied().collect::<Vec<_>>();
        Some((view, self.meta.borrow().encode_with_alarms(alarms)))
    }
    fn snapshot_dir(&self) -> PathBuf {
        snap_dir(&self.cfg.data_dir)
    }
    fn removed(&self) {
        let _ = self
            .cfg
            .failed
            .set("the member has been permanently removed from the cluster".into());
    }
    fn answer(&self, query: PeerQuery) -> crate::peer::Answering {
        if let PeerQuery::HashKv { revision } = query {
            // On a blocking thread: it reads every version up to revision.
            let view = self.store.borrow().read_view();
            return Box::pin(async move {
                let current = view.current_revision();
                let hashed = glommio::executor()
                    .spawn_blocking(move || basalt_engine::etcdfmt::hash_kv(&view, revision))
                    .await;
                match hashed {
                    Ok(h) => PeerAnswer::HashKv {
                        revision: current,
                        compact_revision: h.compact_revision,
                        hash: h.hash,
                    },
                    Err(e) => PeerAnswer::Failed {
                        message: Status::from(e).message,
                    },
                }
            });
        }
        let answer = match &*self.query_answerer.borrow() {
            Some(answer) => answer(&query),
            None => PeerAnswer::NotLeader,
        };
        Box::pin(async move { answer })
    }
    fn join_reply(&self, peer_urls: &[String]) -> crate::peer::HelloReply {
        membership::join_reply(&self.meta.borrow(), peer_urls)
    }
    fn snapshot_received(&self, path: PathBuf, message: basalt_raft::Message) {
        let index = message.snapshot.as_ref().map_or(0, |s| s.metadata.index);
        if let Some((_, old)) = self.received_snapshot.replace(Some((index, path))) {
            let _ = std::fs::remove_file(old);
        }
        self.driver.receive(vec![message]);
    }
}

impl Sequencer {
    /// Opens the store and the WAL, enters Raft at the store's checkpoint
    /// (founding the cluster if this member is new) and applies what was
    /// committed after that checkpoint, so the member serves its whole
    /// state from its first request. A sole voter elects itself at once.
    pub async fn open(cfg: SequencerConfig) -> Result<Rc<Sequencer>, Error> {
        let mut store = Store::open(
            &store_dir(&cfg.data_dir),
            StoreOptions {
                shards: cfg.shards,
                ..StoreOptions::default()
            },
        )?;
        if store.shards() != cfg.shards {
            tracing::info!(
                shards = store.shards(),
                executors = cfg.shards,
                "the store keeps the shard count it was created with"
            );
        }
        // Recovery keeps only the log's index in memory; entries are read
        // back from the segments when Raft asks for them.
        let wal_opts = WalOptions {
            materialize_recovered: false,
            ..cfg.wal.clone()
        };
        let (wal, recovered) = Wal::open(&cfg.wal_dir, wal_opts)
            .await
            .map_err(|e| Error::Wal(e.to_string()))?;
        if recovered.torn_tail_cut {
            tracing::warn!("WAL had a torn tail (an unacknowledged write); it was cut");
        }
        let wal = Rc::new(wal);
        // A snapshot received but not installed before a stop is of no use:
        // Raft asks the leader again.
        let _ = std::fs::remove_dir_all(snap_dir(&cfg.data_dir));
        let entered = crate::node::enter(
            &mut store,
            wal.clone(),
            recovered.hard_state,
            &cfg.cluster,
            cfg.join.as_ref(),
            cfg.timing,
            cfg.pre_vote,
        )
        .await?;
        let alarm_file = AlarmFile::new(&member_dir(&cfg.data_dir));
        let alarms = alarm_file.load()?;
        if !alarms.is_empty() {
            tracing::warn!(?alarms, "alarms active since before the restart");
        }
        let seq = Rc::new(Sequencer {
            cfg,
            store: RefCell::new(store),
            wal: RefCell::new(Some(wal)),
            driver: entered.driver,
            restarted: entered.restarted,
            meta: RefCell::new(entered.meta),
            stopping: Cell::new(false),
            poisoned: RefCell::new(None),
            alarms: RefCell::new(alarms),
            alarm_file,
            since_checkpoint: Cell::new(0),
            listeners: RefCell::new(Vec::new()),
            lease_listeners: RefCell::new(Vec::new()),
            writer_done: Shutdown::new(),
            defrag_lock: glommio::sync::Semaphore::new(1),
            checkpoint_lock: glommio::sync::Semaphore::new(1),
            checkpoint_spawned: Cell::new(false),
            disk: Rc::default(),
            transport: RefCell::new(None),
            nospace_to_publish: Cell::new(false),
            published: Shutdown::new(),
            received_snapshot: RefCell::new(None),
            hash_checks: RefCell::new(Vec::new()),
            hash_rounds: RefCell::new(corruption::Rounds::default()),
            corrupt_to_raise: RefCell::new(Vec::new()),
            last_leader: Cell::new(0),
            leader_changes: Cell::new(0),
            proposals_failed: Cell::new(0),
            query_answerer: RefCell::new(None),
            counters: Counters::default(),
        });
        seq.catch_up_at_open().await?;
        let status = seq.driver.status();
        tracing::info!(
            applied_index = seq.store.borrow().last_applied(),
            revision = seq.store.borrow().current_revision(),
            shards = seq.store.borrow().shards(),
            term = status.term,
            member_id = format!("{:x}", status.id),
            voters = status.voters,
            "sequencer recovered"
        );
        seq.check_quota_alarm();
        seq.publish();
        Ok(seq)
    }

    /// Applies what this member's log holds committed (a sole voter: all
    /// of it, once it has elected itself) before serving anything.
    async fn catch_up_at_open(&self) -> Result<(), Error> {
        let log = self.driver.log().clone();
        let sole_voter = self.driver.status().voters == 1
            && self.meta.borrow().conf_state.voters == [self.driver.status().id];
        if sole_voter {
            self.driver.campaign();
        }
        // A sole voter commits its whole log with its first entry as
        // leader; others apply what they know to be committed.
        let target = if sole_voter {
            log.wal().last_index() + 1
        } else {
            log.hard_state().commit
        };
        while self.store.borrow().last_applied() < target {
            if !self.pass().await? {
                break;
            }
        }
        Ok(())
    }

    /// Publishes the store as it is now for reads on every executor; after
    /// each applied batch (before its answers), and after a checkpoint or a
    /// defragmentation step so the views stop holding the files and writes
    /// those replaced.
    fn publish(&self) {
        let status = self.driver.status();
        let view = self.store.borrow().read_view();
        self.cfg.views.publish(Published {
            reads_are_local: status.reads_are_local() && view.applied_index() >= status.committed,
            has_leader: status.leader != 0,
            is_learner: status.is_learner,
            view,
            cluster_id: self.meta.borrow().cluster_id,
            member_id: status.id,
            raft_term: status.term,
            auth: self.meta.borrow().auth.clone(),
        });
    }

    /// Spawns the Ready loop, the Raft clock and the checkpoint task on the
    /// current executor.
    pub fn start(self: &Rc<Self>) {
        glommio::spawn_local(self.clone().run_node()).detach();
        glommio::spawn_local(self.clone().publish_attributes()).detach();
        glommio::spawn_local(self.clone().run_clock()).detach();
        glommio::spawn_local(self.clone().run_checkpointer()).detach();
        if let Some(every) = self.cfg.corrupt_check_interval {
            glommio::spawn_local(self.clone().run_corruption_checker(every)).detach();
        }
    }

    /// Resolves once this member's name and client URLs are applied: as
    /// etcd, a member serves clients from then on (a member that starts
    /// without a quorum waits for one).
    pub async fn wait_published(&self) {
        self.published.wait().await
    }

    /// `--heartbeat-interval` and `--election-timeout`.
    pub fn timing(&self) -> NodeTiming {
        self.cfg.timing
    }

    /// This member's Raft node.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// Starts the peer transport to the other members and makes it the
    /// driver's outbox; serve the streams peers open with
    /// [`Transport::serve_inbound`].
    pub fn start_peers(self: &Rc<Self>) -> Rc<Transport> {
        let cluster = self.cluster();
        let peers = cluster
            .members
            .iter()
            .filter(|m| m.id != cluster.local.id)
            .map(|m| (m.id, m.peer_urls.clone()))
            .collect();
        let sink: Rc<dyn PeerSink> = self.clone();
        let transport = Transport::new(
            cluster.local.id,
            cluster.cluster_id,
            peers,
            Rc::downgrade(&sink),
        );
        self.driver.set_outbox(transport.clone());
        glommio::spawn_local(Transport::probe_peers(Rc::downgrade(&transport))).detach();
        *self.transport.borrow_mut() = Some(transport.clone());
        self.refresh_peers();
        transport
    }

    /// What clients see of the cluster: the membership as applied, with
    /// this member and its cluster id.
    /// This member's client URLs are the ones it was started with (etcd
    /// publishes them anew at every start).
    pub fn cluster(&self) -> ClusterInfo {
        let meta = self.meta.borrow();
        let own_urls = &self.cfg.cluster.local.client_urls;
        let mut members = meta.members.clone();
        // etcd lists members by id.
        members.sort_by_key(|m| m.id);
        for m in members.iter_mut() {
            m.is_learner = meta.conf_state.learners.contains(&m.id);
            if m.id == meta.member_id {
                m.client_urls = own_urls.clone();
            }
        }
        let local = members
            .iter()
            .find(|m| m.id == meta.member_id)
            .cloned()
            .unwrap_or_else(|| MemberInfo {
                id: meta.member_id,
                ..self.cfg.cluster.local.clone()
            });
        ClusterInfo {
            cluster_id: meta.cluster_id,
            local,
            members,
        }
    }

    /// Where this sequencer publishes its read views.
    pub fn views(&self) -> PublishedViews {
        self.cfg.views.clone()
    }

    /// Registers a listener for applied events (watch).
    pub fn subscribe(&self, listener: EventListener) {
        self.listeners.borrow_mut().push(listener);
    }

    /// Registers a listener for applied lease changes (the lessor).
    pub fn subscribe_leases(&self, listener: LeaseListener) {
        self.lease_listeners.borrow_mut().push(listener);
    }

    /// Sets who answers other members' questions (the lessor).
    pub fn answer_queries_with(&self, answerer: QueryAnswerer) {
        *self.query_answerer.borrow_mut() = Some(answerer);
    }

    /// Asks the leader `query` and waits for its answer, through leader
    /// changes, within the request timeout (etcd's follower retries its
    /// forwarded lease calls the same way). `None`: this member leads.
    pub async fn ask_leader(&self, query: PeerQuery) -> Result<Option<PeerAnswer>, Error> {
        let deadline = std::time::Instant::now() + self.cfg.timing.request_timeout();
        loop {
            let status = self.driver.status();
            if status.role == basalt_raft::StateRole::Leader {
                return Ok(None);
            }
            let transport = self.transport.borrow().clone();
            if status.leader != basalt_raft::NO_NODE {
                let Some(transport) = transport else {
                    return Err(Error::NoLeader);
                };
                let wait = deadline.saturating_duration_since(std::time::Instant::now());
                match transport.ask(status.leader, query.clone(), wait).await {
                    Ok(PeerAnswer::NotLeader) => {}
                    Ok(answer) => return Ok(Some(answer)),
                    Err(e) => tracing::debug!(
                        leader = format!("{:x}", status.leader),
                        error = %e,
                        "cannot ask the leader"
                    ),
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(if status.leader == basalt_raft::NO_NODE {
                    Error::NoLeader
                } else {
                    Error::Timeout
                });
            }
            glommio::timer::sleep(self.cfg.timing.heartbeat).await;
        }
    }

    /// The store, for read-only use by services on this executor (watch
    /// catch-up, lease lookups). Never hold the borrow across an await.
    pub fn store(&self) -> std::cell::Ref<'_, Store> {
        self.store.borrow()
    }

    pub fn header(&self) -> pb::ResponseHeader {
        let status = self.driver.status();
        pb::ResponseHeader {
            cluster_id: self.meta.borrow().cluster_id,
            member_id: status.id,
            revision: self.store.borrow().current_revision(),
            raft_term: status.term,
        }
    }

    /// Executes one command. Writes wait for durability and apply.
    pub async fn execute(&self, cmd: Command) -> Result<Reply, Status> {
        match cmd {
            Command::Propose(entry) => self.propose(entry).await,
            Command::ReadIndex => {
                self.read_index().await?;
                Ok(Reply::Done(self.header()))
            }
            Command::Status => Ok(Reply::Status(self.status())),
            Command::Hash => {
                let hash = self.store.borrow().hash()?;
                Ok(Reply::Hash {
                    hash,
                    header: self.header(),
                })
            }
            Command::Defragment => {
                self.defragment().await?;
                Ok(Reply::Done(self.header()))
            }
            Command::Alarm(req) => self.alarm_request(req).await,
            Command::Leases => {
                let leases = self.store.borrow().leases()?;
                Ok(Reply::Leases(leases, self.header()))
            }
            Command::Members => Ok(Reply::Members(self.cluster(), self.header())),
            Command::MemberAdd {
                peer_urls,
                is_learner,
            } => self.member_add(peer_urls, is_learner).await,
            Command::MemberRemove { id } => self.member_remove(id).await,
            Command::MemberUpdate { id, peer_urls } => self.member_update(id, peer_urls).await,
            Command::MemberPromote { id } => self.member_promote(id).await,
            Command::MoveLeader { target } => {
                self.move_leader(target).await?;
                Ok(Reply::Done(self.header()))
            }
            Command::Lease { id } => {
                let lease = self.store.borrow().lease(id)?;
                Ok(Reply::Lease(lease, self.header()))
            }
        }
    }

    async fn propose(&self, entry: LogEntry) -> Result<Reply, Status> {
        if self.stopping.get() {
            return Err(Error::Stopped.into());
        }
        if let Some(why) = self.poisoned.borrow().as_ref() {
            return Err(Error::Wal(why.clone()).into());
        }
        let cost = entry.quota_cost();
        if cost > 0 {
            let over = self.quota_size() + cost > self.cfg.quota_backend_bytes;
            if over {
                self.raise_nospace();
            }
            if self.nospace() {
                return Err(Error::NoSpace.into());
            }
        }
        if entry.is_store_op() && self.corrupt() {
            return Err(Error::Corrupt.into());
        }
        let op = if entry.is_store_op() {
            Some(entry.op()?)
        } else {
            None
        };
        let rx = self.driver.propose(entry, op, self.cfg.max_request_bytes)?;
        let result = rx.await.unwrap_or_else(|_| Err(Error::Stopped.into()));
        if let Err(e) = &result {
            // Not a client's mistake: the proposal did not make it.
            if e.code == crate::grpc::Code::Unavailable {
                self.proposals_failed.set(self.proposals_failed.get() + 1);
            }
        }
        result
    }

    /// (peer, bytes sent, bytes received, messages not sent) per peer.
    pub fn peer_stats(&self) -> Vec<crate::metrics::PeerStats> {
        self.transport
            .borrow()
            .as_ref()
            .map(|t| t.peer_stats())
            .unwrap_or_default()
    }

    /// This member's Raft as `/metrics` reports it.
    pub fn raft_metrics(&self) -> RaftMetrics {
        let status = self.driver.status();
        RaftMetrics {
            has_leader: status.leader != 0,
            is_leader: status.role == basalt_raft::StateRole::Leader,
            is_learner: status.is_learner,
            leader_changes: self.leader_changes.get(),
            proposals_failed: self.proposals_failed.get(),
            proposals_pending: self.driver.waiting_proposals() as u64,
        }
    }

    /// Resolves once this member has applied everything committed when it
    /// was called (a ReadIndex round, shared by every read waiting for
    /// one); then the latest read view answers a linearizable read.
    pub async fn read_index(&self) -> Result<(), Status> {
        if let Some(why) = self.poisoned.borrow().as_ref() {
            return Err(Error::Wal(why.clone()).into());
        }
        let started = std::time::Instant::now();
        let done = match self.driver.read_index() {
            Ok(rx) => rx.await.unwrap_or_else(|_| Err(Error::Stopped.into())),
            Err(e) => Err(e.into()),
        };
        if done.is_err() {
            bump(&self.counters.read_indexes_failed);
        } else if started.elapsed() > SLOW_READ_INDEX {
            bump(&self.counters.slow_read_indexes);
        }
        done
    }

    /// Hands leadership to `target` and waits until it leads (etcd's
    /// MoveLeader: only the leader may, to a voter, within the request
    /// timeout).
    pub async fn move_leader(&self, target: u64) -> Result<(), Error> {
        let status = self.driver.status();
        if status.role != basalt_raft::StateRole::Leader {
            return Err(Error::NotLeader);
        }
        if target == status.id {
            return Ok(());
        }
        if !self.meta.borrow().conf_state.voters.contains(&target) {
            return Err(Error::BadLeaderTransferee);
        }
        let deadline = std::time::Instant::now() + self.cfg.timing.request_timeout();
        self.driver.transfer_leader(target);
        loop {
            glommio::timer::sleep(self.cfg.timing.heartbeat).await;
            let now = self.driver.status();
            if now.leader == target {
                tracing::info!(to = format!("{target:x}"), "leadership moved");
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::LeaderTransferTimeout);
            }
            if now.role == basalt_raft::StateRole::Leader && now.term == status.term {
                // Raft drops a transfer it could not start (the target
                // lagging, say): ask again.
                self.driver.transfer_leader(target);
            }
        }
    }

    /// A leader about to stop hands leadership to its most caught-up
    /// follower first (etcd does on SIGTERM), so the cluster does not wait
    /// out an election timeout. Bounded by one election timeout.
    async fn hand_over_leadership(&self) {
        let status = self.driver.status();
        if status.role != basalt_raft::StateRole::Leader || status.voters < 2 {
            return;
        }
        let Some(best) = self.driver.most_caught_up_voter() else {
            return;
        };
        let timing = self.cfg.timing;
        let moved =
            futures_lite::future::or(async { self.move_leader(best).await.is_ok() }, async {
                glommio::timer::sleep(timing.election_timeout).await;
                false
            })
            .await;
        if moved {
            tracing::info!(
                to = format!("{best:x}"),
                "leadership handed over before stopping"
            );
        } else {
            tracing::warn!("could not hand leadership over before stopping");
        }
    }

    /// Stops taking writes, lets the writer finish what is queued, and
    /// checkpoints everything applied.
    /// Closes the WAL too, releasing its directory lock even while other
    /// tasks still hold the sequencer.
    pub async fn stop(&self) -> Result<(), Error> {
        self.hand_over_leadership().await;
        self.stopping.set(true);
        self.driver.wake();
        self.writer_done.wait().await;
        let checkpointed = self.checkpoint().await;
        self.cfg.shard_workers.close();
        checkpointed?;
        let Some(wal) = self.wal.borrow_mut().take() else {
            return Ok(());
        };
        // Raft's log shares the WAL: close it for every owner at once,
        // releasing its directory lock now.
        wal.close_shared()
            .await
            .map_err(|e| Error::Wal(e.to_string()))
    }

    /// The Ready loop: one pass per wake-up, until stopped (after the
    /// proposals in flight applied, bounded by [`STOP_DRAIN`]).
    async fn run_node(self: Rc<Self>) {
        let mut drain_deadline = None;
        loop {
            if self.stopping.get() {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| std::time::Instant::now() + STOP_DRAIN);
                if self.driver.waiting_proposals() == 0 || std::time::Instant::now() > deadline {
                    break;
                }
            }
            match self.pass().await {
                Ok(true) => {}
                Ok(false) => {
                    if self.stopping.get() {
                        // Waiting for proposals in flight: wake on the clock.
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    } else {
                        self.driver.wait().await;
                    }
                }
                Err(e) => {
                    let why = format!("the raft log failed, refusing requests until restart: {e}");
                    tracing::error!("{why}");
                    *self.poisoned.borrow_mut() = Some(why.clone());
                    let _ = self.cfg.failed.set(why.clone());
                    self.driver.fail_all(Error::Wal(why));
                    break;
                }
            }
            self.maybe_checkpoint();
            self.publish_alarms();
            self.report_hashes();
            self.raise_corrupt_alarms();
        }
        self.driver.fail_all(Error::Stopped);
        if let Some(t) = self.transport.borrow_mut().take() {
            t.stop();
        }
        self.writer_done.fire();
    }

    /// One pass of the Ready loop; false when Raft had nothing to do.
    /// Persist (one fdatasync), send, apply, answer reads, advance.
    async fn pass(&self) -> Result<bool, Error> {
        let Some(mut rd) = self.driver.take_ready() else {
            return self.log_failure().map(|()| false);
        };
        // What Raft produced may rest on a log read that failed: stop
        // before persisting, sending or applying any of it.
        self.log_failure()?;
        if let Some(ss) = rd.soft_state {
            if ss.leader_id != 0 && ss.leader_id != self.last_leader.get() {
                self.last_leader.set(ss.leader_id);
                self.leader_changes.set(self.leader_changes.get() + 1);
            }
            tracing::info!(
                leader = format!("{:x}", ss.leader_id),
                role = ?ss.role,
                term = self.driver.status().term,
                "raft role changed"
            );
        }
        if let Some(snapshot) = rd.snapshot.take() {
            self.install_snapshot(snapshot).await?;
        }
        let early = self.driver.sends_before_persist(&rd);
        if early {
            self.driver.send(std::mem::take(&mut rd.messages));
        }
        // Committed entries this member persisted in earlier passes are
        // applied (and their clients answered) before this pass's fsync,
        // as etcd applies in parallel with its WAL save: committed, they
        // are durable on a quorum and here. Committed entries among this
        // Ready's own entries wait for the fsync (a sole voter commits
        // what it has not persisted yet).
        let mut committed = std::mem::take(&mut rd.committed_entries);
        let durable_below = rd.entries.first().map_or(u64::MAX, |e| e.index);
        let after_persist =
            committed.split_off(committed.partition_point(|e| e.index < durable_below));
        let applied_any = !committed.is_empty() || !after_persist.is_empty();
        if !committed.is_empty() {
            self.apply_committed(committed);
        }
        let sync_started = std::time::Instant::now();
        let wrote = !rd.entries.is_empty() || rd.must_sync;
        self.driver.persist(&mut rd).await?;
        if wrote {
            self.disk.wal_fsync.observe(sync_started.elapsed());
        }
        if !early {
            self.driver.send(std::mem::take(&mut rd.messages));
        }
        if !after_persist.is_empty() {
            self.apply_committed(after_persist);
        } else if !applied_any && rd.soft_state.is_some() {
            // Role or leader changed: headers and the local-read flag.
            self.publish();
        }
        let applied = self.store.borrow().last_applied();
        self.driver
            .read_states(std::mem::take(&mut rd.read_states), applied);
        self.driver.advance();
        Ok(true)
    }

    /// Installs a snapshot Raft accepted from the leader: the store received
    /// with it replaces ours (its applied index is at or past the
    /// snapshot's; later entries up to it are skipped), the log restarts
    /// after the snapshot, the membership is the leader's, and every
    /// watcher gets the events between our old revision and the new one.
    async fn install_snapshot(&self, snapshot: basalt_raft::Snapshot) -> Result<(), Error> {
        self.counters.installing_snapshot.set(true);
        let installed = self.install_snapshot_file(snapshot).await;
        self.counters.installing_snapshot.set(false);
        installed
    }

    async fn install_snapshot_file(&self, snapshot: basalt_raft::Snapshot) -> Result<(), Error> {
        let index = snapshot.metadata.index;
        let path = match self.received_snapshot.borrow_mut().take() {
            Some((i, path)) if i == index => path,
            other => {
                return Err(Error::Wal(format!(
                    "raft installs the snapshot at {index}, but the file received is for {:?}",
                    other.map(|(i, _)| i)
                )))
            }
        };
        let mut meta = MemberMeta::decode(&snapshot.data)?;
        let alarms = MemberMeta::decode_alarms(&snapshot.data)?;
        meta.member_id = self.driver.status().id;
        let _defrag = self
            .defrag_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Stopped)?;
        let _checkpoint = self
            .checkpoint_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Stopped)?;
        let old_revision = self.store.borrow().current_revision();
        let dir = store_dir(&self.cfg.data_dir);
        let shards = self.store.borrow().shards();
        let (file, into) = (path.clone(), dir.clone());
        glommio::executor()
            .spawn_blocking(move || -> Result<(), Error> {
                let mut input = std::fs::File::open(&file)
                    .map_err(|e| Error::io(format!("opening {}", file.display()), e))?;
                Store::restore_snapshot(&mut input, &into)?;
                Ok(())
            })
            .await?;
        let store = Store::open(
            &dir,
            StoreOptions {
                shards,
                ..StoreOptions::default()
            },
        )?;
        let applied = store.last_applied();
        drop(std::mem::replace(&mut *self.store.borrow_mut(), store));
        self.since_checkpoint.set(0);
        // The store received carries no member metadata (it is not part of
        // the logical state): record it with a checkpoint at once, before
        // the log moves, so a crash now restarts as this member of this
        // cluster.
        *self.meta.borrow_mut() = meta;
        self.stage_meta();
        self.store.borrow_mut().checkpoint()?;
        self.driver.log().apply_snapshot(snapshot.metadata).await?;
        let _ = std::fs::remove_file(&path);
        // The alarms the skipped entries raised or disarmed: the leader's.
        let alarms: AlarmSet = alarms.into_iter().collect();
        if *self.alarms.borrow() != alarms {
            tracing::info!(?alarms, "alarms from the leader's snapshot");
            *self.alarms.borrow_mut() = alarms;
            self.save_alarms();
        }
        tracing::info!(
            snapshot_index = index,
            applied_index = applied,
            revision = self.store.borrow().current_revision(),
            "installed a snapshot from the leader"
        );
        self.publish();
        self.feed_events_since(old_revision);
        Ok(())
    }

    /// Hands the watchers every event after `revision` the store holds (a
    /// snapshot installed moved the store past them), in bounded batches.
    /// Events the leader compacted away cannot be: the watchers are then
    /// told the store jumped to its current revision, and each one still
    /// behind is canceled with the compact revision (etcd's answer).
    fn feed_events_since(&self, revision: i64) {
        const BATCH: usize = 10_000;
        let mut next = revision + 1;
        loop {
            let events = match self.store.borrow().events_from(&[0], &[0], next, BATCH) {
                Ok(events) => events,
                Err(e) => {
                    let current = self.store.borrow().current_revision();
                    tracing::info!(from = next, to = current, reason = %e, "the events a snapshot skipped are gone: watchers behind it are canceled");
                    for l in self.listeners.borrow_mut().iter_mut() {
                        l(current, &[]);
                    }
                    if !self.cfg.event_feeds.is_empty() {
                        self.cfg
                            .event_feeds
                            .send(&std::sync::Arc::new(vec![(current, Vec::new())]));
                    }
                    return;
                }
            };
            if events.is_empty() {
                return;
            }
            let mut batch: Vec<(i64, Vec<Event>)> = Vec::new();
            for e in events {
                let rev = e.kv.mod_revision;
                match batch.last_mut() {
                    Some((r, evs)) if *r == rev => evs.push(e),
                    _ => batch.push((rev, vec![e])),
                }
            }
            next = batch.last().map_or(next, |(r, _)| r + 1);
            for (rev, evs) in &batch {
                for l in self.listeners.borrow_mut().iter_mut() {
                    l(*rev, evs);
                }
            }
            if !self.cfg.event_feeds.is_empty() {
                self.cfg.event_feeds.send(&std::sync::Arc::new(batch));
            }
        }
    }

    fn log_failure(&self) -> Result<(), Error> {
        match self.driver.log().failure() {
            Some(why) => Err(Error::Wal(why)),
            None => Ok(()),
        }
    }

    /// Whether the member stopped serving because its log failed, and why.
    pub fn failure(&self) -> Option<String> {
        self.poisoned.borrow().clone()
    }

    /// Applies a pass's committed entries in log order, publishes the read
    /// view, feeds the watch hubs, then answers the clients of this member.
    fn apply_committed(&self, entries: Vec<basalt_raft::Entry>) {
        let n = entries.len() as u64;
        let mut answers = Vec::new();
        let mut events = Vec::new();
        for e in entries {
            if e.index <= self.store.borrow().last_applied() {
                // In the store a snapshot installed already.
                continue;
            }
            match e.entry_type {
                EntryType::Normal if e.data.is_empty() => self.store.borrow_mut().skip(e.index),
                EntryType::Normal => match LogEntry::decode_from(&e.data) {
                    Ok(entry) if !entry.is_store_op() => {
                        self.store.borrow_mut().skip(e.index);
                        let result = self.apply_member_entry(&entry);
                        if let Some((reply, _)) = self.driver.take_waiter(&entry) {
                            answers.push((reply, result));
                        }
                    }
                    Ok(entry) => {
                        let waiter = self.driver.take_waiter(&entry);
                        let (reply, op) = match waiter {
                            Some((reply, op)) => (Some(reply), op),
                            None => (None, None),
                        };
                        let auth = self.meta.borrow().auth.clone();
                        let lease_keys = |id| {
                            let lease = self.store.borrow().lease(id).ok().flatten();
                            lease.map(|l| l.keys).unwrap_or_default()
                        };
                        if let Err(err) = entry.permitted(&auth, lease_keys) {
                            self.store.borrow_mut().skip(e.index);
                            if let Some(reply) = reply {
                                answers.push((reply, Err(err.into())));
                            }
                            continue;
                        }
                        let op = match op.map(Ok).unwrap_or_else(|| entry.op()) {
                            Ok(op) => op,
                            Err(err) => {
                                tracing::error!(index = e.index, error = %err, "undecodable entry skipped");
                                self.store.borrow_mut().skip(e.index);
                                continue;
                            }
                        };
                        let result = self.apply(e.index, &op, &mut events);
                        if let Some(reply) = reply {
                            answers.push((reply, result));
                        }
                    }
                    Err(err) => {
                        tracing::error!(index = e.index, error = %err, "undecodable entry skipped");
                        self.store.borrow_mut().skip(e.index);
                    }
                },
                EntryType::ConfChange => {
                    self.apply_conf_change(e.index, &e.data);
                }
            }
            if e.term != self.meta.borrow().applied_term {
                self.meta.borrow_mut().applied_term = e.term;
                self.stage_meta();
            }
        }
        // Visible to reads on every executor before anyone hears of it,
        // then to the other executors' watchers.
        self.publish();
        if !events.is_empty() {
            self.cfg.event_feeds.send(&std::sync::Arc::new(events));
        }
        for (reply, result) in answers {
            reply.send(result);
        }
        self.check_quota_alarm();
        self.since_checkpoint.set(self.since_checkpoint.get() + n);
    }

    /// Applies an entry addressed to the member rather than the store.
    fn apply_member_entry(&self, entry: &LogEntry) -> Result<Reply, Status> {
        match &entry.request {
            Some(LogRequest::MemberAttributes(a)) => {
                let mut meta = self.meta.borrow_mut();
                let Some(m) = meta.members.iter_mut().find(|m| m.id == a.id) else {
                    return Err(Error::MemberNotFound.into());
                };
                m.name = a.name.clone();
                m.client_urls = a.client_urls.clone();
                drop(meta);
                self.stage_meta();
                Ok(Reply::Done(self.header()))
            }
            Some(LogRequest::Alarm(req)) => Ok(Reply::Alarms(self.alarm(req), self.header())),
            Some(LogRequest::LeaseKeepAlive(k)) => {
                let ttl = self
                    .store
                    .borrow()
                    .lease_ttls()
                    .find(|l| l.0 == k.id)
                    .map_or(0, |l| l.1);
                for l in self.lease_listeners.borrow_mut().iter_mut() {
                    l(LeaseEvent::Renewed(k.id));
                }
                Ok(Reply::Renewed(ttl, self.header()))
            }
            Some(LogRequest::LeaseCheckpoint(cp)) => {
                for c in &cp.checkpoints {
                    for l in self.lease_listeners.borrow_mut().iter_mut() {
                        l(LeaseEvent::Checkpointed {
                            id: c.id,
                            remaining: c.remaining_ttl,
                        });
                    }
                }
                Ok(Reply::Done(self.header()))
            }
            Some(LogRequest::HashCheck(_)) => {
                // Checks replayed at open are history: only live ones count.
                if self.published.is_fired() {
                    let store = self.store.borrow();
                    // The entry's index: member entries are skipped in the
                    // store before they apply.
                    let index = store.last_applied();
                    self.hash_checks
                        .borrow_mut()
                        .push((index, store.current_revision()));
                    self.hash_rounds.borrow_mut().open(index);
                }
                Ok(Reply::Done(self.header()))
            }
            Some(LogRequest::HashReport(r)) => {
                self.hash_reported(r);
                Ok(Reply::Done(self.header()))
            }
            Some(LogRequest::Auth(change)) => {
                let auth = self.meta.borrow().auth.clone();
                entry.permitted(&auth, |_| Vec::new())?;
                let applied = {
                    let mut meta = self.meta.borrow_mut();
                    std::sync::Arc::make_mut(&mut meta.auth).apply(change)
                };
                match applied {
                    Ok(changed) => {
                        if changed {
                            self.stage_meta();
                        }
                        Ok(Reply::Done(self.header()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Some(LogRequest::TokenAssigned(t)) => {
                // Tokens replayed at open are history: only live ones count.
                let current = self
                    .meta
                    .borrow()
                    .auth
                    .users
                    .get(&t.user)
                    .is_some_and(|u| u.password_revision == t.password_revision);
                if !current {
                    return Err(Error::AuthFailed.into());
                }
                if let (true, Some(tokens)) = (self.published.is_fired(), &self.cfg.tokens) {
                    tokens.assign(&t.token, &t.user, t.password_revision);
                }
                Ok(Reply::Done(self.header()))
            }
            Some(LogRequest::MemberUpdate(u)) => {
                let mut meta = self.meta.borrow_mut();
                let Some(m) = meta.members.iter_mut().find(|m| m.id == u.id) else {
                    return Err(Error::MemberNotFound.into());
                };
                m.peer_urls = u.peer_urls.clone();
                drop(meta);
                self.stage_meta();
                self.refresh_peers();
                tracing::info!(member = format!("{:x}", u.id), peer_urls = ?u.peer_urls, "member updated");
                Ok(Reply::MemberChanged(u.id, self.cluster(), self.header()))
            }
            _ => Err(Error::Wal("not a member entry".into()).into()),
        }
    }

    /// Publishes this member's name and client URLs through the log once
    /// a leader is known (etcd publishes its attributes at every start).
    async fn publish_attributes(self: Rc<Self>) {
        let cluster = self.cfg.cluster.clone();
        let entry = LogEntry::new(LogRequest::MemberAttributes(log_entry::MemberAttributes {
            id: self.driver.status().id,
            name: cluster.local.name.clone(),
            client_urls: cluster.local.client_urls.clone(),
        }));
        loop {
            if self.stopping.get() {
                return;
            }
            if self.driver.status().leader != 0 {
                match self.propose(entry.clone()).await {
                    Ok(_) => {
                        tracing::info!("published this member's attributes to the cluster");
                        self.published.fire();
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "publishing attributes failed; retrying"),
                }
            }
            glommio::timer::sleep(Duration::from_millis(500)).await;
        }
    }

    fn apply_conf_change(&self, index: u64, data: &[u8]) {
        self.store.borrow_mut().skip(index);
        let cc = match ConfChange::decode(data) {
            Ok(cc) => cc,
            Err(e) => {
                tracing::error!(index, error = %e, "undecodable membership change skipped");
                return;
            }
        };
        let change = <membership::MemberChange as prost::Message>::decode(cc.context.as_slice())
            .ok()
            .filter(|c| c.id != 0);
        let waiter = change
            .as_ref()
            .and_then(|c| self.driver.take_waiter_by_id(c.proposer, c.request_id));
        match self.driver.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                let mut meta = self.meta.borrow_mut();
                meta.conf_state = cs;
                if let Some(c) = &change {
                    let removed = cc.changes.iter().any(|s| {
                        s.change_type == basalt_raft::ConfChangeType::RemoveNode
                            && s.node_id == c.id
                    });
                    if removed {
                        meta.members.retain(|m| m.id != c.id);
                        if !meta.removed.contains(&c.id) {
                            meta.removed.push(c.id);
                        }
                    } else if !meta.members.iter().any(|m| m.id == c.id) {
                        meta.members.push(MemberInfo {
                            id: c.id,
                            name: String::new(),
                            peer_urls: c.peer_urls.clone(),
                            client_urls: Vec::new(),
                            is_learner: false,
                        });
                    }
                    if removed && c.id == meta.member_id {
                        // etcd stops a removed member; it never serves again.
                        let _ = self
                            .cfg
                            .failed
                            .set("the member has been permanently removed from the cluster".into());
                    }
                }
                drop(meta);
                self.stage_meta();
                self.refresh_peers();
                if let (Some(w), Some(c)) = (waiter, &change) {
                    w.send(Ok(Reply::MemberChanged(
                        c.id,
                        self.cluster(),
                        self.header(),
                    )));
                }
            }
            Err(e) => {
                tracing::error!(index, error = %e, "membership change refused");
                if let Some(w) = waiter {
                    w.send(Err(e.into()));
                }
            }
        }
    }

    /// Points the peer transport at the members as applied.
    fn refresh_peers(&self) {
        let Some(t) = self.transport.borrow().clone() else {
            return;
        };
        let meta = self.meta.borrow();
        t.set_removed(meta.removed.iter().copied().collect());
        t.set_peers(
            meta.members
                .iter()
                .filter(|m| m.id != meta.member_id)
                .map(|m| (m.id, m.peer_urls.clone()))
                .collect(),
        );
    }

    /// Stages the member metadata for the next checkpoint.
    fn stage_meta(&self) {
        let bytes = self.meta.borrow().encode();
        self.store.borrow_mut().stage_member_meta(bytes);
    }

    /// Starts a background checkpoint once `--snapshot-count` entries
    /// applied since the last one.
    fn maybe_checkpoint(self: &Rc<Self>) {
        if self.since_checkpoint.get() >= self.cfg.snapshot_count
            && !self.checkpoint_spawned.replace(true)
        {
            // In the background: the loop goes on with the next pass while
            // the trees are written on other threads.
            let seq = self.clone();
            glommio::spawn_local(async move {
                if let Err(e) = seq.checkpoint().await {
                    tracing::error!(error = %e, "checkpoint failed");
                }
                seq.checkpoint_spawned.set(false);
            })
            .detach();
        }
    }

    /// Raft's clock: one tick per `--heartbeat-interval`.
    async fn run_clock(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(self.cfg.timing.heartbeat).await;
            if self.writer_done.is_fired() {
                return;
            }
            self.driver.tick();
        }
    }

    /// Counts the puts and delete-ranges one applied operation made.
    fn count_writes(&self, response: &m::OpResponse) {
        fn txn(t: &m::TxnResponse, puts: &mut u64, deletes: &mut u64) {
            for r in &t.responses {
                match r {
                    m::ResponseOp::Put(_) => *puts += 1,
                    m::ResponseOp::DeleteRange(_) => *deletes += 1,
                    m::ResponseOp::Txn(inner) => txn(inner, puts, deletes),
                    m::ResponseOp::Range(_) => {}
                }
            }
        }
        let (mut puts, mut deletes) = (0, 0);
        match response {
            m::OpResponse::Put(_) => puts = 1,
            m::OpResponse::DeleteRange(_) => deletes = 1,
            m::OpResponse::Txn(t) => txn(t, &mut puts, &mut deletes),
            _ => {}
        }
        let c = &self.counters;
        c.puts.set(c.puts.get() + puts);
        c.deletes.set(c.deletes.get() + deletes);
    }

    /// This member's counters, for `/metrics`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The WAL's I/O counters (`None` once it is closed).
    pub fn wal_stats(&self) -> Option<basalt_engine::wal::WalStats> {
        self.wal.borrow().as_ref().map(|w| w.stats())
    }

    /// Applies one entry and hands its events to this executor's watch
    /// hook; `fed` collects them for the other executors' hubs.
    fn apply(
        &self,
        index: u64,
        op: &m::Op,
        fed: &mut Vec<(i64, Vec<Event>)>,
    ) -> Result<Reply, Status> {
        let started = std::time::Instant::now();
        let applied = {
            let mut store = self.store.borrow_mut();
            store.apply(index, op)
        };
        let took = started.elapsed();
        if took > SLOW_APPLY {
            bump(&self.counters.slow_applies);
            tracing::warn!(
                index,
                took_ms = took.as_secs_f64() * 1e3,
                expected_ms = SLOW_APPLY.as_millis() as u64,
                "apply request took too long"
            );
        }
        match applied {
            Ok(a) => {
                self.count_writes(&a.response);
                let lease_event = match *op {
                    m::Op::LeaseGrant { id, ttl } => {
                        bump(&self.counters.leases_granted);
                        self.counters.lease_ttls.observe_value(ttl as f64);
                        Some(LeaseEvent::Granted { id, ttl })
                    }
                    m::Op::LeaseRevoke { id } => {
                        bump(&self.counters.leases_revoked);
                        Some(LeaseEvent::Revoked(id))
                    }
                    _ => None,
                };
                if let Some(event) = lease_event {
                    for l in self.lease_listeners.borrow_mut().iter_mut() {
                        l(event);
                    }
                }
                if !a.events.is_empty() {
                    for l in self.listeners.borrow_mut().iter_mut() {
                        l(a.revision, &a.events);
                    }
                    if !self.cfg.event_feeds.is_empty() {
                        fed.push((a.revision, a.events));
                    }
                }
                let mut header = self.header();
                header.revision = a.revision;
                Ok(Reply::Applied(a.response, header))
            }
            Err(e) => {
                let e = Error::from(e);
                if let Error::Storage(s) = &e {
                    tracing::error!(index, error = %s, "apply failed in storage");
                }
                Err(e.into())
            }
        }
    }

    /// The disk latency histograms this sequencer records into.
    pub fn disk_metrics(&self) -> Rc<crate::metrics::DiskMetrics> {
        self.disk.clone()
    }

    /// Makes everything applied durable in the store, then lets the WAL drop
    /// whole segments below it. The tree writes and syncs run on a blocking
    /// thread: this executor keeps appending, applying and answering reads
    /// meanwhile (entries applied during it go to the next checkpoint).
    pub async fn checkpoint(&self) -> Result<(), Error> {
        let _one_at_a_time = self
            .checkpoint_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Stopped)?;
        let entries = self.since_checkpoint.replace(0);
        let task = match self.store.borrow_mut().start_checkpoint() {
            Ok(Some(task)) => task,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.since_checkpoint
                    .set(self.since_checkpoint.get() + entries);
                return Err(e.into());
            }
        };
        let writes = task.writes();
        let started = std::time::Instant::now();
        // Every shard tree at once, each by the executor that owns it;
        // then the index tree.
        let (parts, index) = task.split();
        let committed = self.cfg.shard_workers.run(parts).await;
        let done = glommio::executor()
            .spawn_blocking(move || index.finish(committed))
            .await;
        let took = started.elapsed();
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                // A shard's trees never came back: the store cannot
                // checkpoint again until restarted; the WAL keeps
                // everything meanwhile.
                tracing::error!(error = %e, "checkpoint lost a shard tree");
                return Err(e.into());
            }
        };
        let finished = self.store.borrow_mut().finish_checkpoint(done);
        self.publish();
        if let Err(e) = finished {
            // The frozen writes are pending again; count their entries
            // toward the next attempt.
            self.since_checkpoint
                .set(self.since_checkpoint.get() + entries);
            return Err(e.into());
        }
        let durable = self.store.borrow().applied_index();
        self.disk.backend_commit.observe(took);
        if took > SLOW_CHECKPOINT {
            tracing::info!(
                entries,
                writes,
                took_ms = took.as_secs_f64() * 1e3,
                "slow checkpoint (off the request path)"
            );
        } else {
            tracing::debug!(
                entries,
                writes,
                took_ms = took.as_secs_f64() * 1e3,
                "checkpoint"
            );
        }
        self.compact_log(durable).await
    }

    /// Lets the log go below what the store has made durable, keeping a
    /// catch-up margin for followers when there are any.
    async fn compact_log(&self, durable: u64) -> Result<(), Error> {
        let log = self.driver.log();
        let status = self.driver.status();
        let conf = self.meta.borrow().conf_state.clone();
        let members = conf.voters.len() + conf.learners.len();
        let margin = if members > 1 {
            self.cfg.catchup_entries
        } else {
            0
        };
        let upto = durable
            .saturating_sub(margin)
            .min(log.hard_state().commit)
            .min(status.committed);
        if upto <= log.snapshot_metadata().index {
            return Ok(());
        }
        log.compact(upto, conf).await
    }

    async fn run_checkpointer(self: Rc<Self>) {
        let mut last_auto_defrag = None;
        loop {
            glommio::timer::sleep(self.cfg.checkpoint_interval).await;
            if self.writer_done.is_fired() {
                return;
            }
            if self.since_checkpoint.get() > 0 {
                if let Err(e) = self.checkpoint().await {
                    tracing::error!(error = %e, "periodic checkpoint failed");
                }
            }
            self.maybe_auto_defragment(&mut last_auto_defrag).await;
        }
    }

    /// Defragments on its own once much of the files is free space (after a
    /// large delete and a compaction of the history; page reuse handles
    /// overwrites). `last` is when the previous automatic run ended and the
    /// size it left: another runs only once there is at least that much to
    /// reclaim, or after [`AUTO_DEFRAG_MIN_INTERVAL`]. A copy costs about
    /// the live data, at most the size left, so the copying stays
    /// proportional to the garbage written whatever the load.
    async fn maybe_auto_defragment(&self, last: &mut Option<(std::time::Instant, u64)>) {
        let (size, in_use, wanted) = {
            let store = self.store.borrow();
            (
                store.db_size(),
                store.db_size_in_use(),
                store.wants_defragment(),
            )
        };
        let due = last.is_none_or(|(at, left)| {
            at.elapsed() >= AUTO_DEFRAG_MIN_INTERVAL || size.saturating_sub(in_use) >= left
        });
        if !wanted || !due || self.stopping.get() {
            return;
        }
        tracing::info!(size, in_use, "defragmenting automatically");
        if let Err(e) = self.defragment().await {
            tracing::error!(error = %e, "automatic defragmentation failed");
        }
        *last = Some((std::time::Instant::now(), self.store.borrow().db_size()));
    }

    fn status(&self) -> StatusInfo {
        let store = self.store.borrow();
        let errors = self
            .alarms
            .borrow()
            .iter()
            .map(|(member, alarm)| {
                let name = pb::AlarmType::try_from(*alarm)
                    .map(|a| a.as_str_name())
                    .unwrap_or("UNKNOWN");
                format!("memberID:{member} alarm:{name} ")
            })
            .collect();
        let node = self.driver.status();
        StatusInfo {
            header: self.header(),
            leader: node.leader,
            is_learner: node.is_learner,
            db_size: store.db_size(),
            db_size_in_use: store.db_size_in_use(),
            raft_index: node.committed,
            raft_applied_index: store.last_applied(),
            raft_term: node.term,
            errors,
        }
    }

    /// What the quota is checked against: the committed db size (etcd's
    /// measure) plus what applied entries will add at the next checkpoints
    /// — etcd's backend commits every 100 ms, ours every second or
    /// `--snapshot-count` entries, so the committed size alone would let a
    /// fast fill overshoot the quota by a second's writes.
    fn quota_size(&self) -> u64 {
        let store = self.store.borrow();
        store.db_size() + store.staged_bytes()
    }

    fn nospace(&self) -> bool {
        self.alarms
            .borrow()
            .iter()
            .any(|(_, a)| *a == pb::AlarmType::Nospace as i32)
    }

    /// This member is over its quota: it refuses writes at once, and the
    /// alarm goes through the log (`publish_alarms`) so every member does.
    fn raise_nospace(&self) {
        let inserted = self
            .alarms
            .borrow_mut()
            .insert((self.driver.status().id, pb::AlarmType::Nospace as i32));
        if inserted {
            tracing::warn!(
                quota = self.cfg.quota_backend_bytes,
                "database space exceeded: NOSPACE alarm raised"
            );
            self.save_alarms();
            self.nospace_to_publish.set(true);
        }
    }

    /// Whether a CORRUPT alarm is active (on any member): writes are
    /// refused until it is disarmed.
    fn corrupt(&self) -> bool {
        self.alarms
            .borrow()
            .iter()
            .any(|(_, a)| *a == pb::AlarmType::Corrupt as i32)
    }

    /// The leader's corruption check: every `every`, judges the rounds
    /// still open with the reports they got, then starts a new one.
    async fn run_corruption_checker(self: Rc<Self>, every: Duration) {
        tracing::info!(
            member_id = format!("{:x}", self.driver.status().id),
            interval = ?every,
            "enabled corruption checking"
        );
        loop {
            glommio::timer::sleep(every).await;
            if self.writer_done.is_fired() || self.stopping.get() {
                return;
            }
            let status = self.driver.status();
            if status.role != basalt_raft::StateRole::Leader || status.voters < 2 {
                continue;
            }
            let open = self.hash_rounds.borrow_mut().take_all();
            for (index, reports) in open {
                self.judge_round(index, &reports);
            }
            let check = LogEntry::new(LogRequest::HashCheck(log_entry::HashCheck {}));
            if let Err(e) = self.propose(check).await {
                tracing::warn!(error = %e, "failed to check hash KV");
            }
        }
    }

    /// Computes and proposes this member's HashKV for each check applied
    /// since the last pass, off the executor; the view covers at least the
    /// check's revision.
    fn report_hashes(self: &Rc<Self>) {
        let checks = std::mem::take(&mut *self.hash_checks.borrow_mut());
        for (check_index, revision) in checks {
            let view = self.store.borrow().read_view();
            let seq = self.clone();
            glommio::spawn_local(async move {
                let hashed = glommio::executor()
                    .spawn_blocking(move || basalt_engine::etcdfmt::hash_kv(&view, revision))
                    .await;
                let h = match hashed {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::info!(revision, error = %e, "no hash for the corruption check");
                        return;
                    }
                };
                let report = log_entry::HashReport {
                    member_id: seq.driver.status().id,
                    revision,
                    compact_revision: h.compact_revision,
                    hash: h.hash,
                    check_index,
                };
                if let Err(e) = seq.propose(LogEntry::new(LogRequest::HashReport(report))).await {
                    tracing::warn!(revision, error = %e, "the corruption check report did not reach the cluster");
                }
            })
            .detach();
        }
    }

    /// A member's report applied: the leader judges its round once every
    /// voter reported.
    fn hash_reported(&self, r: &log_entry::HashReport) {
        let voters = self.meta.borrow().conf_state.voters.len();
        let complete = self.hash_rounds.borrow_mut().report(
            r.check_index,
            r.member_id,
            (r.revision, r.compact_revision, r.hash),
            voters,
        );
        if let Some(reports) = complete {
            if self.driver.status().role == basalt_raft::StateRole::Leader {
                self.judge_round(r.check_index, &reports);
            }
        }
    }

    fn judge_round(
        &self,
        check_index: u64,
        reports: &std::collections::BTreeMap<u64, corruption::Report>,
    ) {
        let status = self.driver.status();
        let voters = self.meta.borrow().conf_state.voters.len();
        match corruption::judge(reports, status.id, voters) {
            corruption::Verdict::Unknown => {}
            corruption::Verdict::Consistent { checked } => {
                tracing::info!(
                    check_index,
                    members = checked,
                    "corruption check: hashes agree"
                )
            }
            corruption::Verdict::Corrupt(members) => {
                let hashes: Vec<String> = reports
                    .iter()
                    .map(|(m, (r, c, h))| {
                        format!("{m:x}: hash {h} at revision {r}, compact revision {c}")
                    })
                    .collect();
                tracing::error!(
                    check_index,
                    corrupt = ?members.iter().map(|m| format!("{m:x}")).collect::<Vec<_>>(),
                    ?hashes,
                    "found hash mismatch: raising the CORRUPT alarm"
                );
                self.corrupt_to_raise.borrow_mut().extend(members);
            }
        }
    }

    /// Proposes the CORRUPT alarms the leader's judgement asked for.
    fn raise_corrupt_alarms(self: &Rc<Self>) {
        let members = std::mem::take(&mut *self.corrupt_to_raise.borrow_mut());
        for member_id in members {
            let seq = self.clone();
            glommio::spawn_local(async move {
                let req = pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Activate as i32,
                    member_id,
                    alarm: pb::AlarmType::Corrupt as i32,
                };
                if let Err(e) = seq.propose(LogEntry::new(LogRequest::Alarm(req))).await {
                    tracing::error!(error = %e, member = format!("{member_id:x}"), "the CORRUPT alarm did not reach the cluster");
                }
            })
            .detach();
        }
    }

    /// Proposes this member's NOSPACE alarm to the cluster once raised.
    fn publish_alarms(self: &Rc<Self>) {
        if !self.nospace_to_publish.replace(false) {
            return;
        }
        let seq = self.clone();
        glommio::spawn_local(async move {
            let req = pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: seq.driver.status().id,
                alarm: pb::AlarmType::Nospace as i32,
            };
            if let Err(e) = seq.propose(LogEntry::new(LogRequest::Alarm(req))).await {
                tracing::warn!(error = %e, "the NOSPACE alarm did not reach the cluster; retrying");
                seq.nospace_to_publish.set(true);
            }
        })
        .detach();
    }

    /// etcd's Alarm call: GET answers from this member's alarms; ACTIVATE
    /// and DEACTIVATE go through the log, so every member agrees. An alarm
    /// named for member 0 is kept under member 0, as etcd keeps it.
    async fn alarm_request(&self, req: pb::AlarmRequest) -> Result<Reply, Status> {
        if req.action == pb::alarm_request::AlarmAction::Get as i32 {
            return Ok(Reply::Alarms(self.alarm(&req), self.header()));
        }
        self.propose(LogEntry::new(LogRequest::Alarm(req))).await
    }

    /// Persists the alarm set after a change. A failure leaves the change in
    /// force for this run only; it is logged, as the disk is then failing.
    fn save_alarms(&self) {
        if let Err(e) = self.alarm_file.save(&self.alarms.borrow()) {
            tracing::error!(error = %e, "cannot persist the alarms");
        }
    }

    fn check_quota_alarm(&self) {
        if self.quota_size() > self.cfg.quota_backend_bytes {
            self.raise_nospace();
        }
    }

    /// etcd's Alarm: GET lists (filtered by type unless NONE), ACTIVATE and
    /// DEACTIVATE return the alarm they changed.
    fn alarm(&self, req: &pb::AlarmRequest) -> Vec<pb::AlarmMember> {
        let before = self.alarms.borrow().clone();
        let changed = self.change_alarms(req);
        if *self.alarms.borrow() != before {
            self.save_alarms();
        }
        changed
    }

    fn change_alarms(&self, req: &pb::AlarmRequest) -> Vec<pb::AlarmMember> {
        use pb::alarm_request::AlarmAction;
        let mut alarms = self.alarms.borrow_mut();
        let member = req.member_id;
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => alarms
                .iter()
                .filter(|(_, a)| req.alarm == pb::AlarmType::None as i32 || *a == req.alarm)
                .map(|&(member_id, alarm)| pb::AlarmMember { member_id, alarm })
                .collect(),
            Ok(AlarmAction::Activate) => {
                if req.alarm == pb::AlarmType::None as i32 {
                    return Vec::new();
                }
                alarms.insert((member, req.alarm));
                vec![pb::AlarmMember {
                    member_id: member,
                    alarm: req.alarm,
                }]
            }
            Ok(AlarmAction::Deactivate) => {
                if alarms.remove(&(member, req.alarm)) {
                    vec![pb::AlarmMember {
                        member_id: member,
                        alarm: req.alarm,
                    }]
                } else {
                    Vec::new()
                }
            }
            Err(_) => Vec::new(),
        }
    }
}
