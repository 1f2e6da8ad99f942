//! The MVCC store: the state machine the sequencer applies log entries to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::btree::TreeOptions;

use super::apply::{Applier, LeaseChange};
use super::backend::{Backend, BackendView};
use super::checkpoint::Retired;
use super::error::MvccError;
use super::keyspace::{
    attached_bounds, decode_i64, logical_bounds, parse_attached_key, parse_lease_key,
    parse_version_key, space_bounds, LEASE, LIVE, MEMBER_META, META_COMPACT_REVISION,
    META_CURRENT_REVISION, VERSION,
};
use super::layers::{stage, Layered, LivePresence, Overlay, Presence, Shared, Staged, Staging};
use super::read;
use super::types::{
    Applied, Event, Lease, Op, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use super::view::ReadView;

/// File name of the store's index tree inside its directory (the shard
/// trees are `shard-000.btree`, …).
pub const TREE_FILE: &str = super::shard::INDEX_FILE;

/// An empty etcd reports revision 1; the first write gets revision 2.
const INITIAL_REVISION: i64 = 1;

/// Options of [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Layout of the tree files (page size); fixed when a file is created.
    pub tree: TreeOptions,
    /// Shard trees holding the key versions, 1..=256. Fixed when the store
    /// is created: reopening uses the recorded count whatever is asked
    /// ([`Store::shards`] vs [`Store::requested_shards`] tells the caller).
    pub shards: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            tree: TreeOptions::default(),
            shards: 1,
        }
    }
}

/// etcd's MVCC key-value state plus leases, single-threaded.
///
/// `apply` makes an entry's effects visible at once; they become durable in
/// the trees at the next checkpoint, which records the entry's index so
/// recovery replays the WAL from `applied_index() + 1`. A checkpoint's
/// commit can run on another thread (see `checkpoint`) while this store
/// keeps applying and serving reads from a view pinned before it.
pub struct Store {
    pub(super) dir: PathBuf,
    /// The tree writers; `None` while a checkpoint task has them.
    pub(super) backend: Option<Backend>,
    /// What reads see of the trees: their last commit this store installed.
    pub(super) view: BackendView,
    /// Index recorded by the commit `view` shows.
    pub(super) durable: u64,
    /// Writes a checkpoint task is committing (empty when none runs).
    pub(super) frozen: Staging,
    /// Index the running checkpoint task records; `None` when none runs.
    pub(super) frozen_index: Option<u64>,
    /// Tree writes applied since the last checkpoint started.
    pub(super) pending: Staging,
    /// Presence of the live-space keys of `pending`: after `frozen` vs now.
    pub(super) presence: LivePresence,
    /// Presence of the live-space keys of `frozen`: in `view` vs after it.
    pub(super) frozen_presence: LivePresence,
    /// A finished checkpoint's leftovers, handed to the next task to free
    /// on its thread rather than on this one.
    pub(super) retired: Option<Retired>,
    /// Tree writes of the entry being applied; empty between entries.
    pub(super) scratch: Overlay,
    current: i64,
    compacted: i64,
    /// Index of the last entry passed to `apply`.
    pub(super) last_applied: u64,
    /// Lease id → granted TTL. Attached keys live in the tree.
    leases: BTreeMap<i64, i64>,
    pub(super) shards: usize,
    requested_shards: usize,
    /// (file, live) bytes of the trees as of the last installed commit.
    pub(super) sizes: (u64, u64),
    /// Key and value bytes of the tree writes in `pending`.
    pub(super) pending_bytes: u64,
    /// The same for `frozen`.
    pub(super) frozen_bytes: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MvccError + '_ {
    move |source| MvccError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, MvccError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        super::snapshot::finish_staged_restore(dir)?;
        let backend = Backend::open(dir, opts.tree, opts.shards)?;
        Store::from_backend(dir, backend)
    }

    /// Loads the in-memory state (meta, lease table) of an opened tree.
    pub(super) fn from_backend(dir: &Path, backend: Backend) -> Result<Store, MvccError> {
        let view = backend.view();
        let meta = |name: &[u8], default: i64| -> Result<i64, MvccError> {
            match view.get(name)? {
                Some(bytes) => decode_i64(&bytes, &String::from_utf8_lossy(name)),
                None => Ok(default),
            }
        };
        let current = meta(META_CURRENT_REVISION, INITIAL_REVISION)?;
        let compacted = meta(META_COMPACT_REVISION, 0)?;
        if current < INITIAL_REVISION || compacted < 0 || compacted > current {
            return Err(MvccError::Corrupt(format!(
                "store meta out of range: current revision {current}, compact revision {compacted}"
            )));
        }
        let mut leases = BTreeMap::new();
        for item in view.scan(&space_bounds(LEASE)) {
            let (key, ttl) = item?;
            leases.insert(parse_lease_key(&key)?, decode_i64(&ttl, "lease ttl")?);
        }
        let last_applied = backend.user_meta();
        Ok(Store {
            dir: dir.to_path_buf(),
            view,
            durable: last_applied,
            frozen: Staging::new(),
            frozen_index: None,
            pending: Staging::new(),
            presence: LivePresence::new(),
            frozen_presence: LivePresence::new(),
            retired: None,
            scratch: Overlay::new(),
            current,
            compacted,
            last_applied,
            leases,
            shards: backend.shard_count(),
            requested_shards: backend.requested_shards(),
            sizes: (backend.used_bytes(), backend.live_bytes()),
            pending_bytes: 0,
            frozen_bytes: 0,
            backend: Some(backend),
        })
    }

    /// The tree writers, unless a checkpoint task has them.
    pub(super) fn backend_mut(&mut self) -> Result<&mut Backend, MvccError> {
        self.backend.as_mut().ok_or(MvccError::CheckpointInFlight)
    }

    /// Makes reads see the trees' last commits (after a commit or a switch
    /// of files this store made itself).
    pub(super) fn refresh_view(&mut self) {
        if let Some(backend) = &self.backend {
            self.view = backend.view();
            self.sizes = (backend.used_bytes(), backend.live_bytes());
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shard trees in use: the count recorded when the store was created
    /// (0 for a store from before sharding, whose versions share the index
    /// tree).
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The count `StoreOptions::shards` asked for; differs from
    /// [`Store::shards`] when an existing store was opened with another.
    pub fn requested_shards(&self) -> usize {
        self.requested_shards
    }

    /// Last WAL index whose effects are durable in the tree.
    pub fn applied_index(&self) -> u64 {
        self.durable
    }

    /// Last WAL index applied (durable or not).
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    pub fn current_revision(&self) -> i64 {
        self.current
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    fn staged(&self) -> Staged<'_> {
        Staged {
            base: &self.view,
            frozen: &self.frozen,
            pending: &self.pending,
            presence: Presence {
                frozen: &self.frozen_presence,
                pending: &self.presence,
            },
        }
    }

    fn layered(&self) -> Layered<'_> {
        self.staged().with_scratch(&self.scratch)
    }

    /// etcd's Range; `revision` 0 reads the current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        read::range(&self.layered(), self.current, self.compacted, req)
    }

    /// Answers a txn that writes nothing (see [`TxnRequest::is_read_only`])
    /// at the current revision, without logging it or changing anything:
    /// the same response `apply` would give, for the server's read path.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.read_view().read_txn(req)
    }

    /// The store as it is now, for reading on any thread while this store
    /// goes on applying (see [`ReadView`]). O(1): shares structure.
    pub fn read_view(&self) -> ReadView {
        debug_assert!(self.scratch.is_empty());
        ReadView {
            base: self.view.clone(),
            frozen: self.frozen.clone(),
            pending: self.pending.clone(),
            frozen_presence: self.frozen_presence.clone(),
            presence: self.presence.clone(),
            current: self.current,
            compacted: self.compacted,
            applied: self.last_applied,
        }
    }

    /// Applies one committed log entry. On error nothing changed except that
    /// the entry counts as applied (it is a client error, answered as such).
    pub fn apply(&mut self, index: u64, op: &Op) -> Result<Applied, MvccError> {
        if index <= self.last_applied {
            return Err(MvccError::StaleIndex {
                index,
                applied: self.last_applied,
            });
        }
        debug_assert!(self.scratch.is_empty());
        let staged = Staged {
            base: &self.view,
            frozen: &self.frozen,
            pending: &self.pending,
            presence: Presence {
                frozen: &self.frozen_presence,
                pending: &self.presence,
            },
        };
        let applier = Applier::new(
            staged,
            &mut self.scratch,
            &self.leases,
            self.current,
            self.compacted,
        );
        let result = applier.apply(op);
        self.last_applied = index;
        let outcome = match result.and_then(|o| Ok((o, self.presence_updates()?))) {
            Ok((outcome, presence)) => {
                self.presence.extend(presence);
                outcome
            }
            Err(e) => {
                self.scratch.clear();
                return Err(e);
            }
        };
        debug_assert!(outcome.revision >= self.current);
        self.current = outcome.revision;
        if let Some(rev) = outcome.compacted {
            self.compacted = rev;
        }
        match outcome.lease {
            Some(LeaseChange::Granted { id, ttl }) => {
                self.leases.insert(id, ttl);
            }
            Some(LeaseChange::Revoked { id }) => {
                self.leases.remove(&id);
            }
            None => {}
        }
        let scratch = std::mem::take(&mut self.scratch);
        self.pending_bytes += scratch
            .iter()
            .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
            .sum::<u64>();
        stage(&mut self.pending, scratch);
        Ok(Applied {
            revision: outcome.revision,
            response: outcome.response,
            events: outcome.events,
        })
    }

    /// The presence entries the scratch writes to the live space change.
    fn presence_updates(&self) -> Result<LivePresence, MvccError> {
        let mut out = LivePresence::new();
        let (start, end) = space_bounds(LIVE);
        let bounds = (
            start.as_ref().map(Vec::as_slice),
            end.as_ref().map(Vec::as_slice),
        );
        for (k, v) in self.scratch.range::<[u8], _>(bounds) {
            // Relative to the state after `frozen`, like the whole map.
            let k = k.as_slice();
            let in_base = match (self.presence.get(k), self.frozen_presence.get(k)) {
                (Some(&(in_base, _)), _) => in_base,
                (None, Some(&(_, after_frozen))) => after_frozen,
                (None, None) => self.view.get(k)?.is_some(),
            };
            out.insert(Shared::from(k), (in_base, v.is_some()));
        }
        Ok(out)
    }

    /// Changes in `[key, range_end)` (etcd range rules) at revisions >=
    /// `start_revision`, ascending, with prev_kv; at most about `max` (never
    /// splitting a revision). `Compacted` if history before the start is gone.
    pub fn events_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max: usize,
    ) -> Result<Vec<Event>, MvccError> {
        self.read_view()
            .events_from(key, range_end, start_revision, max)
    }

    fn lease_keys(&self, view: &Layered<'_>, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
        view.scan(&attached_bounds(id))
            .map(|item| item.and_then(|(k, _)| parse_attached_key(&k)))
            .collect()
    }

    /// Every lease with its attached keys.
    pub fn leases(&self) -> Result<Vec<Lease>, MvccError> {
        let view = self.layered();
        self.leases
            .iter()
            .map(|(&id, &ttl)| {
                Ok(Lease {
                    id,
                    ttl,
                    keys: self.lease_keys(&view, id)?,
                })
            })
            .collect()
    }

    pub fn lease(&self, id: i64) -> Result<Option<Lease>, MvccError> {
        let Some(&ttl) = self.leases.get(&id) else {
            return Ok(None);
        };
        let keys = self.lease_keys(&self.layered(), id)?;
        Ok(Some(Lease { id, ttl, keys }))
    }

    /// Records `value` as the member's metadata (opaque to the store: what
    /// the server needs to re-enter Raft at the applied index). Like an
    /// applied entry's writes it becomes durable at the next checkpoint,
    /// atomically with the applied index that checkpoint records; call it
    /// after applying the entry it describes.
    pub fn stage_member_meta(&mut self, value: Vec<u8>) {
        let mut writes = Overlay::new();
        writes.insert(MEMBER_META.to_vec(), Some(value));
        stage(&mut self.pending, writes);
    }

    /// The member metadata of the last finished checkpoint (what a restart
    /// finds), if any was ever recorded.
    pub fn durable_member_meta(&self) -> Result<Option<Vec<u8>>, MvccError> {
        self.view.get(MEMBER_META)
    }

    /// Counts `index` as applied without an operation (a log entry that
    /// carries none for the store: a new leader's empty entry, a
    /// membership change). Indices never go back.
    pub fn skip(&mut self, index: u64) {
        self.last_applied = self.last_applied.max(index);
    }

    /// Lease ids and TTLs only (cheap: no tree read).
    pub fn lease_ttls(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.leases.iter().map(|(&id, &ttl)| (id, ttl))
    }

    /// CRC32 of every key version with main revision <= `revision` (0 =
    /// current), and the compact revision: equal on members that applied
    /// the same log. The server's HashKV is etcd's own hash
    /// (`crate::etcdfmt::hash_kv`); this one checks the engine in tests.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), MvccError> {
        if revision > 0 && revision <= self.compacted {
            return Err(MvccError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > self.current {
            return Err(MvccError::FutureRevision);
        }
        let upto = if revision == 0 {
            self.current
        } else {
            revision
        };
        let view = self.layered();
        let mut hasher = crc32fast::Hasher::new();
        for item in view.scan(&space_bounds(VERSION)) {
            let (k, v) = item?;
            let (_, rev) = parse_version_key(&k)?;
            if rev.main <= upto {
                hasher.update(&k);
                hasher.update(&v);
            }
        }
        Ok((hasher.finalize(), self.compacted))
    }

    /// CRC32 of the whole logical state (keys, history, leases, meta).
    pub fn hash(&self) -> Result<u32, MvccError> {
        let view = self.layered();
        let mut hasher = crc32fast::Hasher::new();
        for item in view.scan(&logical_bounds()) {
            let (k, v) = item?;
            hasher.update(&(k.len() as u32).to_le_bytes());
            hasher.update(&k);
            hasher.update(&(v.len() as u32).to_le_bytes());
            hasher.update(&v);
        }
        Ok(hasher.finalize())
    }

    /// Bytes of the tree files up to the end of their last commits (as of
    /// the last finished checkpoint): etcd's db size, the quota's measure.
    /// Space a file was grown by ahead of need is not counted.
    pub fn db_size(&self) -> u64 {
        self.sizes.0
    }

    /// Key and value bytes written by the entries applied since the last
    /// finished checkpoint: about what the next checkpoints add to
    /// [`Store::db_size`] (page overhead not counted, replaced versions
    /// counted). Lets a quota see writes before they are committed.
    pub fn staged_bytes(&self) -> u64 {
        self.pending_bytes + self.frozen_bytes
    }

    /// Bytes of the tree files that hold live pages.
    pub fn db_size_in_use(&self) -> u64 {
        self.sizes.1
    }

    /// Checkpoints, then rewrites the tree files without their dead pages,
    /// blocking; see `begin_defragment` for the online form.
    pub fn defragment(&mut self) -> Result<(), MvccError> {
        self.checkpoint()?;
        let result = self.backend_mut()?.compact_files();
        self.refresh_view();
        result
    }

    /// Runs `f` on a merged view of the tree and the pending writes.
    pub(super) fn with_view<T>(
        &self,
        f: impl FnOnce(&Layered<'_>) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        f(&self.layered())
    }

    /// Every logical entry, ascending, as the snapshot stream writes it.
    pub(super) fn for_each_entry(
        &self,
        f: &mut super::snapshot::EntryVisitor<'_>,
    ) -> Result<(), MvccError> {
        let view = self.layered();
        for item in view.scan(&logical_bounds()) {
            let (k, v) = item?;
            f(&k, &v)?;
        }
        Ok(())
    }
}
