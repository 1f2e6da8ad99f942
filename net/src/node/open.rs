//! Entering Raft at start: a new member founds its cluster from the
//! `--initial-cluster` flags; a restarted one re-enters at its last
//! checkpoint from what that checkpoint recorded ([`MemberMeta`]), and the
//! flags are ignored, as etcd ignores them once a data dir exists. A data
//! dir written before members replicated (no member metadata) is migrated:
//! it was a single member, so it becomes a one-voter cluster of itself.

use std::rc::Rc;
use std::time::Duration;

use basalt_engine::mvcc::Store;
use basalt_engine::wal::{self, Wal};
use basalt_raft::{ConfState, RawNode, SnapshotMetadata, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};

use super::driver::{Driver, SharedLog};
use super::meta::MemberMeta;
use crate::error::Error;
use crate::member::{ClusterInfo, MemberInfo};
use crate::raftlog::WalStorage;

/// Committed entries handed to the applier in one pass, at most (bounds
/// the memory of a long catch-up or of the replay after a restart).
const MAX_APPLY_BYTES_PER_PASS: u64 = 64 << 20;
/// Entries in one append message (etcd's 1 MiB `MaxSizePerMsg`).
const MAX_APPEND_BYTES: u64 = 1 << 20;
/// Appends in flight to one follower (etcd: 4096 / 8).
const MAX_INFLIGHT_APPENDS: usize = 512;
/// Payload a leader holds appended but not applied before it refuses
/// proposals (etcd's `MaxUncommittedEntriesSize`, 1 GiB).
const MAX_UNCOMMITTED_BYTES: u64 = 1 << 30;

/// Raft timing and limits from etcd's flags.
#[derive(Debug, Clone, Copy)]
pub struct NodeTiming {
    /// `--heartbeat-interval`: one Raft tick.
    pub heartbeat: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
}

impl Default for NodeTiming {
    fn default() -> NodeTiming {
        NodeTiming {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
        }
    }
}

impl NodeTiming {
    /// Ticks of an election timeout.
    pub fn election_ticks(&self) -> usize {
        let hb = self.heartbeat.as_millis().max(1);
        ((self.election_timeout.as_millis() / hb) as usize).max(2)
    }

    /// etcd's request timeout: 5 s plus twice the election timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }
}

/// The member as it enters Raft.
pub struct Entered {
    pub driver: Driver,
    pub meta: MemberMeta,
    /// This member's id (from the data dir once one exists).
    pub member_id: u64,
    /// The data dir held this member's state already (etcd's
    /// "member initialized"): not a new or joining member.
    pub restarted: bool,
}

/// Opens Raft over `wal` for the `store` as checkpointed. `flags` is the
/// cluster `--initial-cluster` describes; it is used only by a new member.
pub async fn enter(
    store: &mut Store,
    wal: Rc<Wal>,
    recovered: wal::HardState,
    flags: &ClusterInfo,
    join: Option<&Result<ConfState, String>>,
    timing: NodeTiming,
    pre_vote: bool,
) -> Result<Entered, Error> {
    let durable = store
        .durable_member_meta()?
        .map(|b| MemberMeta::decode(&b))
        .transpose()?;
    let restarted = durable.is_some();
    let (meta, bootstrapped) = match durable {
        Some(meta) => (meta, false),
        None if is_empty(store, &wal) => match join {
            None => (found(store, flags)?, true),
            Some(Ok(conf_state)) => (joined(store, flags, conf_state), false),
            Some(Err(why)) => return Err(Error::Config(why.clone())),
        },
        None => (migrate(store, &wal, recovered, flags)?, false),
    };
    let member_id = meta_member_id(&meta, flags)?;
    let cs = &meta.conf_state;
    let member = [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ]
    .iter()
    .any(|ids| ids.contains(&member_id));
    if !member {
        return Err(Error::Config(
            "the member has been permanently removed from the cluster; the data-dir used by \
             this member must be removed"
                .into(),
        ));
    }
    let applied = store.applied_index();
    let snapshot = log_start(&wal, applied, &meta);
    let storage = if bootstrapped {
        WalStorage::bootstrap(wal, &meta.conf_state.voters).await?
    } else {
        // A store restored from a snapshot, or checkpointed past a log the
        // last run had not yet moved: the log restarts after it.
        if wal.last_index() < applied {
            wal.release_below(applied + 1)
                .await
                .map_err(|e| Error::Wal(e.to_string()))?;
        }
        let last = wal.last_readable_index().max(applied);
        let hs = wal::HardState {
            commit: recovered.commit.clamp(applied, last),
            ..recovered
        };
        WalStorage::new(wal, hs, snapshot)?
    };
    let log = Rc::new(storage);
    let mut cfg = basalt_raft::Config::new(member_id);
    cfg.election_tick = timing.election_ticks();
    cfg.heartbeat_tick = 1;
    cfg.pre_vote = pre_vote;
    cfg.applied = applied.max(log.snapshot_metadata().index);
    cfg.max_committed_size_per_ready = MAX_APPLY_BYTES_PER_PASS;
    cfg.max_size_per_msg = MAX_APPEND_BYTES;
    cfg.max_inflight_msgs = MAX_INFLIGHT_APPENDS;
    cfg.max_uncommitted_entries_size = MAX_UNCOMMITTED_BYTES;
    // Each start draws its own election timeouts.
    cfg.seed = member_id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let node = RawNode::new(cfg, SharedLog(log.clone()))
        .map_err(|e| Error::Wal(format!("starting raft: {e}")))?;
    let driver = Driver::new(node, log, timing.request_timeout());
    Ok(Entered {
        driver,
        meta,
        member_id,
        restarted,
    })
}

/// Where Raft's log starts after a restart: as far back as the WAL still
/// holds entries (the catch-up margin the last run kept for followers),
/// not at the checkpoint, so a follower behind the checkpoint still
/// catches up from the log. The membership is the one at `applied`: no
/// entry at or below `applied` is applied again.
fn log_start(wal: &Wal, applied: u64, meta: &MemberMeta) -> SnapshotMetadata {
    let at_checkpoint = SnapshotMetadata {
        index: applied,
        term: meta.applied_term,
        conf_state: meta.conf_state.clone(),
    };
    let first = wal.first_index();
    if first == 0 || first >= applied || wal.last_readable_index() < applied {
        return at_checkpoint;
    }
    match wal.term(first) {
        Ok(term) => SnapshotMetadata {
            index: first,
            term,
            conf_state: meta.conf_state.clone(),
        },
        Err(_) => at_checkpoint,
    }
}

/// Nothing was ever written: a new member.
fn is_empty(store: &Store, wal: &Wal) -> bool {
    store.applied_index() == 0 && wal.last_index() == 0 && wal.first_index() == 1
}

/// A new member founds the cluster `--initial-cluster` describes: the
/// membership is made durable in the store first (at the bootstrap index),
/// then the log starts after it. A crash in between leaves a store the
/// next start re-enters from, over an empty log.
fn found(store: &mut Store, flags: &ClusterInfo) -> Result<MemberMeta, Error> {
    let mut voters: Vec<u64> = flags.members.iter().map(|m| m.id).collect();
    voters.sort_unstable();
    let meta = MemberMeta {
        applied_term: BOOTSTRAP_TERM,
        cluster_id: flags.cluster_id,
        member_id: flags.local.id,
        conf_state: ConfState {
            voters,
            ..ConfState::default()
        },
        members: flags.members.clone(),
        removed: Vec::new(),
        auth: Default::default(),
    };
    store.stage_member_meta(meta.encode());
    store.skip(BOOTSTRAP_INDEX);
    store.checkpoint()?;
    tracing::info!(
        member_id = format!("{:x}", meta.member_id),
        cluster_id = format!("{:x}", meta.cluster_id),
        members = flags.members.len(),
        "founding a new cluster"
    );
    Ok(meta)
}

/// A new member joining a running cluster (`--initial-cluster-state
/// existing`) starts from the membership it learned, with an empty store
/// and log: the leader finds its log empty and sends it a snapshot of the
/// store, whose metadata then takes over.
fn joined(store: &mut Store, flags: &ClusterInfo, conf_state: &ConfState) -> MemberMeta {
    let meta = MemberMeta {
        applied_term: 0,
        cluster_id: flags.cluster_id,
        member_id: flags.local.id,
        conf_state: conf_state.clone(),
        members: flags.members.clone(),
        removed: Vec::new(),
        auth: Default::default(),
    };
    store.stage_member_meta(meta.encode());
    tracing::info!(
        member_id = format!("{:x}", meta.member_id),
        cluster_id = format!("{:x}", meta.cluster_id),
        voters = ?conf_state.voters,
        learners = ?conf_state.learners,
        "joining a running cluster: waiting for the leader's snapshot"
    );
    meta
}

/// A data dir from before members replicated, or restored from an etcdctl
/// snapshot: one member, a cluster of itself. Its term at the applied
/// index is the log's if the log still holds that entry, else the last
/// term it recorded (only a member's own log could ever be compared
/// with it, and there is none other).
fn migrate(
    store: &mut Store,
    wal: &Wal,
    recovered: wal::HardState,
    flags: &ClusterInfo,
) -> Result<MemberMeta, Error> {
    if flags.members.len() > 1 {
        return Err(Error::Config(format!(
            "the data dir holds a single-member store written before members replicated; \
             it cannot found a {}-member cluster. Start it with --initial-cluster naming \
             only this member, and add members later",
            flags.members.len()
        )));
    }
    let applied = store.applied_index();
    let applied_term = if applied == 0 {
        0
    } else {
        wal.term(applied).unwrap_or(recovered.term)
    };
    let local = MemberInfo {
        client_urls: flags.local.client_urls.clone(),
        ..flags.local.clone()
    };
    let meta = MemberMeta {
        applied_term,
        cluster_id: flags.cluster_id,
        member_id: local.id,
        conf_state: ConfState {
            voters: vec![local.id],
            ..ConfState::default()
        },
        members: vec![local],
        removed: Vec::new(),
        auth: Default::default(),
    };
    store.stage_member_meta(meta.encode());
    tracing::info!(
        applied_index = applied,
        applied_term,
        "data dir from before replication: entering raft as a cluster of this one member"
    );
    Ok(meta)
}

/// The id of the member the data dir belongs to; the flags' id if they
/// derive another (different peer URLs or token) is only warned about, as
/// etcd keeps the id of its data dir.
fn meta_member_id(meta: &MemberMeta, flags: &ClusterInfo) -> Result<u64, Error> {
    let id = meta.member_id;
    if id == 0 {
        return Err(Error::Wal("member metadata without a member id".into()));
    }
    if id != flags.local.id {
        tracing::warn!(
            data_dir_member = format!("{id:x}"),
            flags_member = format!("{:x}", flags.local.id),
            "the flags describe another member than the data dir holds; the data dir wins"
        );
    }
    Ok(id)
}
