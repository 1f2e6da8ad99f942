//! The sequencer: the one place where writes are ordered.
//!
//! It owns the engine's [`Store`] and [`Wal`] on one executor. A write is
//! validated and encoded by the connection that received it, then queued
//! here; the writer task takes everything queued as one batch, appends it
//! to the WAL with one fdatasync (group commit), applies it to the store in
//! log order and answers each request with its header revision. Everything
//! applied is checkpointed into the store's B+tree every `snapshot_count`
//! entries or `checkpoint_interval`, and WAL segments below the checkpoint
//! are released. Reads are not served here: after each applied batch the
//! sequencer publishes a read view of the store ([`PublishedViews`]) and
//! every executor answers Range and read-only Txn from it on its own core.
//!
//! Invariants: log index `i` is applied only after `i - 1`; an entry is
//! answered only after it is durable in the WAL, applied, and published in
//! a read view; an entry that
//! fails in `apply` (compacted revision, missing lease, …) changed nothing
//! and fails again identically on replay.

mod alarms;
mod client;
mod command;
mod defrag;
mod log_entry;
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
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use basalt_engine::mvcc::{self as m, Event, Store, StoreOptions};
use basalt_engine::wal::{Entry, EntryKind, HardState, Wal, WalOptions};
use futures_channel::oneshot;
use prost::Message;

use self::alarms::{AlarmFile, AlarmSet};
use crate::error::Error;
use crate::grpc::{Shutdown, Status};
use crate::proto::etcdserverpb as pb;

/// Most proposals waiting for the writer before new ones are refused with
/// etcd's "too many requests" (etcd refuses when apply lags commit by 5000).
const MAX_QUEUED_PROPOSALS: usize = 16_384;
/// A checkpoint slower than this is logged at info level.
const SLOW_CHECKPOINT: Duration = Duration::from_millis(20);

/// Bytes of log entries read back per step of recovery's replay.
const REPLAY_CHUNK_BYTES: u64 = 4 << 20;
/// Most entries appended with one fdatasync.
const MAX_BATCH_ENTRIES: usize = 4096;
/// Most payload bytes appended with one fdatasync.
const MAX_BATCH_BYTES: usize = 4 << 20;

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

#[derive(Debug, Clone)]
pub struct SequencerConfig {
    pub data_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    /// `--quota-backend-bytes`; writes fail with NOSPACE past it.
    pub quota_backend_bytes: u64,
    /// `--snapshot-count`: checkpoint after this many applied entries.
    pub snapshot_count: u64,
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
}

/// Called with every applied revision's events, in revision order (the
/// hook the watch service subscribes to).
pub type EventListener = Box<dyn FnMut(i64, &[Event])>;

struct Proposal {
    entry: Vec<u8>,
    op: m::Op,
    reply: oneshot::Sender<Result<Reply, Status>>,
}

pub struct Sequencer {
    cfg: SequencerConfig,
    store: RefCell<Store>,
    /// `None` once closed by [`Sequencer::stop`].
    wal: RefCell<Option<Rc<Wal>>>,
    term: u64,
    queue: RefCell<VecDeque<Proposal>>,
    work: Doorbell,
    stopping: Cell<bool>,
    /// Set once the WAL failed: nothing more can be made durable.
    poisoned: RefCell<Option<String>>,
    alarms: RefCell<AlarmSet>,
    alarm_file: AlarmFile,
    since_checkpoint: Cell<u64>,
    listeners: RefCell<Vec<EventListener>>,
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
}

/// Wakes the one writer task when work arrives; a ring while the writer is
/// busy is remembered, so no proposal is left waiting.
#[derive(Default)]
struct Doorbell {
    rung: Cell<bool>,
    waiter: RefCell<Option<std::task::Waker>>,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.set(true);
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.rung.replace(false) {
                return std::task::Poll::Ready(());
            }
            *self.waiter.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

impl Sequencer {
    /// Opens the store and the WAL, replays every WAL entry the store has
    /// not yet made durable, and starts a new term (as a restarted etcd
    /// member starts a new election).
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
        // Recovery keeps only the log's index in memory; the entries to
        // replay are read back from the segments a chunk at a time.
        let wal_opts = WalOptions {
            materialize_recovered: false,
            ..cfg.wal.clone()
        };
        let (wal, recovered) = Wal::open(&wal_dir(&cfg.data_dir), wal_opts)
            .await
            .map_err(|e| Error::Wal(e.to_string()))?;
        if recovered.torn_tail_cut {
            tracing::warn!("WAL had a torn tail (an unacknowledged write); it was cut");
        }
        let applied = store.applied_index();
        let last = wal.last_index();
        if last > applied && wal.first_index() > applied + 1 {
            return Err(Error::Wal(format!(
                "WAL starts at index {} but the store has applied only up to {applied}",
                wal.first_index()
            )));
        }
        let mut replayed = 0u64;
        let mut next = applied + 1;
        while next <= last {
            let chunk = wal
                .entries(next, last + 1, REPLAY_CHUNK_BYTES)
                .map_err(|e| Error::Wal(e.to_string()))?;
            let Some(end) = chunk.last().map(|e| e.index) else {
                break;
            };
            for e in chunk {
                if e.kind != EntryKind::Normal {
                    continue;
                }
                let op = LogEntry::decode_from(&e.data)?.op()?;
                // A client error here was a client error the first time too.
                match store.apply(e.index, &op) {
                    Ok(_) => {}
                    Err(err) => match Error::from(err) {
                        Error::Storage(s) => return Err(Error::Storage(s)),
                        _client_error => {}
                    },
                }
                replayed += 1;
            }
            next = end + 1;
            // A long replay checkpoints as it goes, as the server would
            // have: memory stays bounded and progress survives a crash.
            if next - 1 - store.applied_index() >= cfg.snapshot_count {
                store.checkpoint()?;
            }
        }
        if replayed > 0 {
            store.checkpoint()?;
        }
        // A store restored from a snapshot is ahead of an empty log: move
        // the log's start past it so indices keep increasing.
        if wal.last_index() < store.applied_index() {
            wal.release_below(store.applied_index() + 1)
                .await
                .map_err(|e| Error::Wal(e.to_string()))?;
        }
        // etcd's first election moves a new member to term 2.
        let term = (recovered.hard_state.term + 1).max(2);
        wal.save_hard_state(HardState {
            term,
            vote: cfg.member_id,
            commit: wal.last_index(),
        })
        .await
        .map_err(|e| Error::Wal(e.to_string()))?;
        tracing::info!(
            replayed,
            applied_index = store.applied_index(),
            revision = store.current_revision(),
            shards = store.shards(),
            term,
            "sequencer recovered"
        );
        let alarm_file = AlarmFile::new(&member_dir(&cfg.data_dir));
        let alarms = alarm_file.load()?;
        if !alarms.is_empty() {
            tracing::warn!(?alarms, "alarms active since before the restart");
        }
        let seq = Rc::new(Sequencer {
            cfg,
            store: RefCell::new(store),
            wal: RefCell::new(Some(Rc::new(wal))),
            term,
            queue: RefCell::new(VecDeque::new()),
            work: Doorbell::default(),
            stopping: Cell::new(false),
            poisoned: RefCell::new(None),
            alarms: RefCell::new(alarms),
            alarm_file,
            since_checkpoint: Cell::new(0),
            listeners: RefCell::new(Vec::new()),
            writer_done: Shutdown::new(),
            defrag_lock: glommio::sync::Semaphore::new(1),
            checkpoint_lock: glommio::sync::Semaphore::new(1),
            checkpoint_spawned: Cell::new(false),
            disk: Rc::default(),
        });
        seq.check_quota_alarm();
        seq.publish();
        Ok(seq)
    }

    /// Publishes the store as it is now for reads on every executor; after
    /// each applied batch (before its answers), and after a checkpoint or a
    /// defragmentation step so the views stop holding the files and writes
    /// those replaced.
    fn publish(&self) {
        self.cfg.views.publish(Published {
            view: self.store.borrow().read_view(),
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.member_id,
            raft_term: self.term,
        });
    }

    /// Spawns the writer and checkpoint tasks on the current executor.
    pub fn start(self: &Rc<Self>) {
        glommio::spawn_local(self.clone().run_writer()).detach();
        glommio::spawn_local(self.clone().run_checkpointer()).detach();
    }

    /// Where this sequencer publishes its read views.
    pub fn views(&self) -> PublishedViews {
        self.cfg.views.clone()
    }

    /// Registers a listener for applied events (watch).
    pub fn subscribe(&self, listener: EventListener) {
        self.listeners.borrow_mut().push(listener);
    }

    /// The store, for read-only use by services on this executor (watch
    /// catch-up, lease lookups). Never hold the borrow across an await.
    pub fn store(&self) -> std::cell::Ref<'_, Store> {
        self.store.borrow()
    }

    pub fn header(&self) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.member_id,
            revision: self.store.borrow().current_revision(),
            raft_term: self.term,
        }
    }

    /// Executes one command. Writes wait for durability and apply.
    pub async fn execute(&self, cmd: Command) -> Result<Reply, Status> {
        match cmd {
            Command::Propose(entry) => self.propose(entry).await,
            Command::Status => Ok(Reply::Status(self.status())),
            Command::Hash => {
                let hash = self.store.borrow().hash()?;
                Ok(Reply::Hash {
                    hash,
                    header: self.header(),
                })
            }
            Command::HashKv { revision } => {
                let store = self.store.borrow();
                let (hash, compact_revision) = store.hash_kv(revision)?;
                let hash_revision = if revision > 0 {
                    revision
                } else {
                    store.current_revision()
                };
                Ok(Reply::HashKv {
                    hash,
                    compact_revision,
                    hash_revision,
                    header: self.header(),
                })
            }
            Command::Defragment => {
                self.defragment().await?;
                Ok(Reply::Done(self.header()))
            }
            Command::Snapshot => {
                let header = self.header();
                let mut blob = Vec::new();
                self.store.borrow().write_snapshot(&mut blob)?;
                Ok(Reply::Snapshot { blob, header })
            }
            Command::Alarm(req) => Ok(Reply::Alarms(self.alarm(&req), self.header())),
            Command::Leases => {
                let leases = self.store.borrow().leases()?;
                Ok(Reply::Leases(leases, self.header()))
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
        let op = entry.op()?;
        let bytes = entry.encode_to_vec();
        if bytes.len() > self.cfg.max_request_bytes {
            return Err(Error::RequestTooLarge.into());
        }
        if self.queue.borrow().len() >= MAX_QUEUED_PROPOSALS {
            return Err(Error::TooManyRequests.into());
        }
        let (tx, rx) = oneshot::channel();
        self.queue.borrow_mut().push_back(Proposal {
            entry: bytes,
            op,
            reply: tx,
        });
        self.work.ring();
        rx.await.unwrap_or_else(|_| Err(Error::Stopped.into()))
    }

    /// Stops taking writes, lets the writer finish what is queued, and
    /// checkpoints everything applied.
    /// Closes the WAL too, releasing its directory lock even while other
    /// tasks still hold the sequencer.
    pub async fn stop(&self) -> Result<(), Error> {
        self.stopping.set(true);
        self.work.ring();
        self.writer_done.wait().await;
        let checkpointed = self.checkpoint().await;
        self.cfg.shard_workers.close();
        checkpointed?;
        let Some(wal) = self.wal.borrow_mut().take() else {
            return Ok(());
        };
        match Rc::try_unwrap(wal) {
            Ok(wal) => wal.close().await.map_err(|e| Error::Wal(e.to_string())),
            // Only a task between its `wal()` call and its await holds a
            // clone; the writer has finished, so this is a checkpoint racing
            // us. Its drop releases the lock.
            Err(_) => Ok(()),
        }
    }

    async fn run_writer(self: Rc<Self>) {
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                if self.stopping.get() {
                    break;
                }
                self.wait_for_work().await;
                continue;
            }
            self.write_batch(batch).await;
            if self.since_checkpoint.get() >= self.cfg.snapshot_count
                && !self.checkpoint_spawned.replace(true)
            {
                // In the background: the writer goes on with the next batch
                // while the trees are written on another thread.
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
        self.writer_done.fire();
    }

    async fn wait_for_work(&self) {
        if !self.queue.borrow().is_empty() || self.stopping.get() {
            return;
        }
        self.work.wait().await;
    }

    fn take_batch(&self) -> Vec<Proposal> {
        let mut q = self.queue.borrow_mut();
        let mut bytes = 0;
        let mut batch = Vec::new();
        while let Some(p) = q.front() {
            if !batch.is_empty()
                && (batch.len() >= MAX_BATCH_ENTRIES || bytes + p.entry.len() > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += p.entry.len();
            batch.extend(q.pop_front());
        }
        batch
    }

    /// The WAL, unless it was closed.
    fn wal(&self) -> Result<Rc<Wal>, Error> {
        self.wal.borrow().clone().ok_or(Error::Stopped)
    }

    async fn write_batch(&self, batch: Vec<Proposal>) {
        let wal = match self.wal() {
            Ok(w) => w,
            Err(e) => {
                let status = crate::grpc::Status::from(e);
                for p in batch {
                    let _ = p.reply.send(Err(status.clone()));
                }
                return;
            }
        };
        let first = wal.last_index() + 1;
        let mut entries = Vec::with_capacity(batch.len());
        let mut rest = Vec::with_capacity(batch.len());
        for (i, p) in batch.into_iter().enumerate() {
            entries.push(Entry {
                term: self.term,
                index: first + i as u64,
                kind: EntryKind::Normal,
                data: p.entry,
            });
            rest.push((p.op, p.reply));
        }
        let sync_started = std::time::Instant::now();
        if let Err(e) = wal.append(&entries).await {
            let why = format!("WAL append failed, refusing writes until restart: {e}");
            tracing::error!("{why}");
            *self.poisoned.borrow_mut() = Some(why.clone());
            for (_, reply) in rest {
                let _ = reply.send(Err(Error::Wal(why.clone()).into()));
            }
            return;
        }
        self.disk.wal_fsync.observe(sync_started.elapsed());
        let n = entries.len() as u64;
        let mut answers = Vec::with_capacity(rest.len());
        let mut events = Vec::new();
        for (entry, (op, reply)) in entries.iter().zip(rest) {
            answers.push((reply, self.apply(entry.index, &op, &mut events)));
        }
        // Visible to reads on every executor before anyone hears of it,
        // then to the other executors' watchers.
        self.publish();
        if !events.is_empty() {
            self.cfg.event_feeds.send(&std::sync::Arc::new(events));
        }
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
        self.check_quota_alarm();
        self.since_checkpoint.set(self.since_checkpoint.get() + n);
    }

    /// Applies one entry and hands its events to this executor's watch
    /// hook; `fed` collects them for the other executors' hubs.
    fn apply(
        &self,
        index: u64,
        op: &m::Op,
        fed: &mut Vec<(i64, Vec<Event>)>,
    ) -> Result<Reply, Status> {
        let applied = {
            let mut store = self.store.borrow_mut();
            store.apply(index, op)
        };
        match applied {
            Ok(a) => {
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
        let applied = self.store.borrow().applied_index();
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
        self.wal()?
            .release_below(applied + 1)
            .await
            .map_err(|e| Error::Wal(e.to_string()))
    }

    async fn run_checkpointer(self: Rc<Self>) {
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
        }
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
        StatusInfo {
            header: self.header(),
            db_size: store.db_size(),
            db_size_in_use: store.db_size_in_use(),
            raft_index: self.wal.borrow().as_ref().map_or(0, |w| w.last_index()),
            raft_applied_index: store.last_applied(),
            raft_term: self.term,
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

    fn raise_nospace(&self) {
        let inserted = self
            .alarms
            .borrow_mut()
            .insert((self.cfg.member_id, pb::AlarmType::Nospace as i32));
        if inserted {
            tracing::warn!(
                quota = self.cfg.quota_backend_bytes,
                "database space exceeded: NOSPACE alarm raised"
            );
            self.save_alarms();
        }
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
        let member = if req.member_id == 0 {
            self.cfg.member_id
        } else {
            req.member_id
        };
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
