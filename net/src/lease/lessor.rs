//! The lessor: etcd's lease operations on the sequencer's executor.
//!
//! Grants and revokes go through the log (so they are durable, replayed in
//! order, and a revoke's deletions reach watchers); deadlines live in the
//! [`Keeper`]. Expiry is a revoke like any other, proposed by
//! [`Lessor::run_expiry`].

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use basalt_engine::mvcc::Lease;

use crate::error::Error;
use crate::grpc::{Code, Status};
use crate::peer::{PeerAnswer, PeerQuery};
use crate::proto::etcdserverpb as pb;

use super::keeper::Keeper;
use super::ttl::{effective_ttl, min_ttl, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT};

/// A future of the log, borrowing it.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Status>> + 'a>>;

/// What the lessor needs from the sequencer: proposals through the log and
/// reads of the applied lease table. Errors are etcd's statuses (a revoke
/// of an unknown lease fails with NotFound "requested lease not found").
pub trait LeaseLog {
    /// Proposes a grant with its final id and TTL; resolves once applied,
    /// with the header of the response.
    fn propose_grant(&self, id: i64, ttl: i64) -> LogFuture<'_, pb::ResponseHeader>;
    /// Proposes a revoke (deleting the lease's keys in one revision).
    fn propose_revoke(&self, id: i64) -> LogFuture<'_, pb::ResponseHeader>;
    /// The applied lease with its keys.
    fn lease(&self, id: i64) -> Result<Option<Lease>, Status>;
    /// Every applied lease's id and granted TTL.
    fn lease_ttls(&self) -> Vec<(i64, i64)>;
    /// A header at the current revision.
    fn header(&self) -> pb::ResponseHeader;
    /// Whether this member leads: only the leader expires leases, and
    /// keepalives elsewhere go through the log to reach it.
    fn is_leader(&self) -> bool {
        true
    }
    /// Counts a lease renewed by this member as leader, or expired by it
    /// (etcd's `etcd_debugging_lease_renewed_total`,
    /// `etcd_debugging_server_lease_expired_total`).
    fn note_renewed(&self) {}
    fn note_expired(&self) {}
    /// Asks the leader `query` (a follower's LeaseTimeToLive: only the
    /// leader's clocks are renewed by keepalives sent to it). `Ok(None)`:
    /// this member leads after all, answer here.
    fn ask_leader(&self, query: PeerQuery) -> LogFuture<'_, Option<PeerAnswer>> {
        let _ = query;
        Box::pin(async { Ok(None) })
    }
    /// Carries a keepalive received by a follower to every member's
    /// lessor through the log; resolves with the lease's TTL (0: gone).
    fn propose_keepalive(&self, id: i64) -> LogFuture<'_, i64> {
        let _ = id;
        Box::pin(async {
            Err(Status::new(
                Code::Unimplemented,
                "keepalive through the log",
            ))
        })
    }
    /// Records leases' remaining TTLs (id, seconds) in the log, for every
    /// member's lessor (etcd's LeaseCheckpoint request).
    fn propose_checkpoint(&self, checkpoints: Vec<(i64, i64)>) -> LogFuture<'_, ()> {
        let _ = checkpoints;
        Box::pin(async {
            Err(Status::new(
                Code::Unimplemented,
                "lease checkpoints through the log",
            ))
        })
    }
}

/// A lease change applied from the log, on every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    Granted {
        id: i64,
        ttl: i64,
    },
    Revoked(i64),
    Renewed(i64),
    /// The leader recorded the lease's remaining TTL (0: cleared).
    Checkpointed {
        id: i64,
        remaining: i64,
    },
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Shortest TTL granted, in seconds (see [`super::min_ttl`]).
    pub min_ttl: i64,
    /// How often expiry is checked (etcd: every 500 ms).
    pub expiry_tick: Duration,
    /// Most revokes proposed per tick: etcd's leaseRevokeRate of 1000/s, so
    /// that many leases expiring together do not flood the log.
    pub max_revokes_per_tick: usize,
    /// When a failed expiry revoke is tried again.
    pub retry_after: Duration,
    /// How much longer than its remaining TTL every lease lives when this
    /// member becomes leader (etcd: the election timeout), so none dies
    /// while clients find the new leader.
    pub promote_extension: Duration,
    /// How often the leader records long leases' remaining TTLs in the
    /// log (etcd's lease checkpointing, 5 minutes); `None`: off, as etcd's
    /// default, and a new leader gives every lease its full TTL again.
    pub checkpoint_interval: Option<Duration>,
}

/// etcd's lease checkpoint interval.
pub const LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// Most leases in one checkpoint entry (etcd's maxLeaseCheckpointBatchSize).
const MAX_CHECKPOINT_BATCH: usize = 1000;

impl LeaseConfig {
    /// etcd's rules for the given `--heartbeat-interval` and
    /// `--election-timeout`.
    pub fn new(heartbeat: Duration, election_timeout: Duration) -> LeaseConfig {
        LeaseConfig {
            min_ttl: min_ttl(heartbeat, election_timeout),
            expiry_tick: Duration::from_millis(500),
            max_revokes_per_tick: 500,
            retry_after: Duration::from_secs(3),
            promote_extension: election_timeout,
            checkpoint_interval: None,
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> LeaseConfig {
        LeaseConfig::new(DEFAULT_HEARTBEAT, DEFAULT_ELECTION_TIMEOUT)
    }
}

/// Tries at drawing an unused random id before giving up (never reached
/// in practice: ids are 63 random bits).
const ID_ATTEMPTS: usize = 16;

pub struct Lessor {
    log: Rc<dyn LeaseLog>,
    cfg: LeaseConfig,
    keeper: RefCell<Keeper>,
    /// Whether this member led at the last expiry tick.
    leading: Cell<bool>,
    random: RandomState,
    draws: Cell<u64>,
}

impl Lessor {
    /// Starts every lease already in the log with its full TTL from now.
    pub fn new(log: Rc<dyn LeaseLog>, cfg: LeaseConfig) -> Lessor {
        let mut keeper = Keeper::new();
        let now = Instant::now();
        for (id, ttl) in log.lease_ttls() {
            keeper.grant(id, ttl, now);
        }
        // A member leading already (a sole voter) just gave every lease
        // its full TTL: nothing to promote.
        let leading = Cell::new(log.is_leader());
        Lessor {
            log,
            cfg,
            keeper: RefCell::new(keeper),
            leading,
            random: RandomState::new(),
            draws: Cell::new(0),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// A random positive id no live lease has.
    fn fresh_id(&self) -> Option<i64> {
        for _ in 0..ID_ATTEMPTS {
            let n = self.draws.get();
            self.draws.set(n + 1);
            let mut h = self.random.build_hasher();
            h.write_u64(n);
            let id = (h.finish() & i64::MAX as u64) as i64;
            if id != 0 && !self.keeper.borrow().contains(id) {
                return Some(id);
            }
        }
        None
    }

    /// LeaseGrant: etcd's TTL rules, the request's id or a generated one.
    pub async fn grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, Status> {
        let ttl = effective_ttl(req.ttl, self.cfg.min_ttl).ok_or(Error::LeaseTtlTooLarge)?;
        let mut attempts = 0;
        loop {
            let id = if req.id != 0 {
                req.id
            } else {
                self.fresh_id()
                    .ok_or_else(|| Status::new(Code::Internal, "no free lease id"))?
            };
            match self.grant_id(id, ttl).await {
                Ok(header) => {
                    return Ok(pb::LeaseGrantResponse {
                        header: Some(header),
                        id,
                        ttl,
                        error: String::new(),
                    })
                }
                // A generated id that a concurrent grant took first: draw again.
                Err(e) if req.id == 0 && e == Status::from(Error::LeaseExists) => {
                    attempts += 1;
                    if attempts >= ID_ATTEMPTS {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn grant_id(&self, id: i64, ttl: i64) -> Result<pb::ResponseHeader, Status> {
        // The clock starts before the proposal, so a lease whose grant is
        // applied after its caller went away still expires.
        let tracked_before = self.keeper.borrow().contains(id);
        if !tracked_before {
            self.keeper.borrow_mut().grant(id, ttl, Instant::now());
        }
        match self.log.propose_grant(id, ttl).await {
            Ok(header) => {
                let now = Instant::now();
                let mut keeper = self.keeper.borrow_mut();
                keeper.grant(id, ttl, now);
                keeper.schedule_checkpoint(id, now, self.cfg.checkpoint_interval);
                Ok(header)
            }
            Err(e) => {
                if !tracked_before {
                    self.keeper.borrow_mut().forget(id);
                }
                Err(e)
            }
        }
    }

    /// LeaseRevoke: deletes the lease's keys in one revision.
    pub async fn revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, Status> {
        let result = self.log.propose_revoke(req.id).await;
        if result.is_ok() || result.as_ref().err() == Some(&Status::from(Error::LeaseNotFound)) {
            self.keeper.borrow_mut().forget(req.id);
        }
        Ok(pb::LeaseRevokeResponse {
            header: Some(result?),
        })
    }

    /// A lease change applied from the log: every member's keeper follows
    /// the leases (so a new leader expires them from what it saw).
    pub fn applied(&self, event: LeaseEvent) {
        let now = Instant::now();
        let mut keeper = self.keeper.borrow_mut();
        match event {
            LeaseEvent::Granted { id, ttl } => {
                if !keeper.contains(id) {
                    keeper.grant(id, ttl, now);
                    keeper.schedule_checkpoint(id, now, self.cfg.checkpoint_interval);
                }
            }
            LeaseEvent::Revoked(id) => keeper.forget(id),
            LeaseEvent::Renewed(id) => {
                let _ = keeper.renew(id, now);
            }
            LeaseEvent::Checkpointed { id, remaining } => keeper.set_checkpoint(id, remaining),
        }
    }

    /// One LeaseKeepAlive message: the TTL again from now, or TTL 0 for a
    /// lease that does not exist or already expired (what etcd answers).
    /// On a follower it travels through the log to the leader's lessor.
    pub async fn keep_alive(
        &self,
        req: &pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let ttl = if self.log.is_leader() {
            let now = Instant::now();
            let (ttl, had_checkpoint) = {
                let mut keeper = self.keeper.borrow_mut();
                let had_checkpoint = keeper.checkpointed(req.id) > 0;
                let ttl = keeper.renew(req.id, now);
                keeper.schedule_checkpoint(req.id, now, self.cfg.checkpoint_interval);
                (ttl, had_checkpoint)
            };
            if ttl.is_some() {
                self.log.note_renewed();
            }
            // The other members still hold the old remaining TTL: clear it
            // through the log, or a new leader would end the lease early
            // (what etcd 3.5 does on renewal).
            if ttl.is_some() && had_checkpoint && self.cfg.checkpoint_interval.is_some() {
                self.log.propose_checkpoint(vec![(req.id, 0)]).await?;
            }
            ttl.unwrap_or(0)
        } else {
            self.log.propose_keepalive(req.id).await?
        };
        Ok(pb::LeaseKeepAliveResponse {
            header: Some(self.log.header()),
            id: req.id,
            ttl,
        })
    }

    /// LeaseTimeToLive: an unknown lease is not an error but TTL -1. A
    /// follower asks the leader, as etcd does: its own clocks know nothing
    /// of keepalives sent to the leader.
    pub async fn time_to_live(
        &self,
        req: &pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        if self.log.is_leader() {
            return self.local_time_to_live(req);
        }
        let query = PeerQuery::LeaseTimeToLive {
            id: req.id,
            keys: req.keys,
        };
        match self.log.ask_leader(query).await? {
            None => self.local_time_to_live(req),
            Some(PeerAnswer::LeaseTimeToLive {
                ttl,
                granted_ttl,
                keys,
            }) => Ok(pb::LeaseTimeToLiveResponse {
                header: Some(self.log.header()),
                id: req.id,
                ttl,
                granted_ttl: if ttl < 0 { 0 } else { granted_ttl },
                keys,
            }),
            Some(other) => Err(Status::new(
                Code::Internal,
                format!("basalt: the leader answered a lease's TTL with {other:?}"),
            )),
        }
    }

    /// The answer to a member's question, if this member leads.
    pub fn answer(&self, query: &PeerQuery) -> PeerAnswer {
        if !self.log.is_leader() {
            return PeerAnswer::NotLeader;
        }
        match *query {
            PeerQuery::LeaseTimeToLive { id, keys } => {
                match self.local_time_to_live(&pb::LeaseTimeToLiveRequest { id, keys }) {
                    Ok(r) => PeerAnswer::LeaseTimeToLive {
                        ttl: r.ttl,
                        granted_ttl: r.granted_ttl,
                        keys: r.keys,
                    },
                    Err(e) => PeerAnswer::Failed { message: e.message },
                }
            }
            PeerQuery::HashKv { .. } | PeerQuery::Ping => PeerAnswer::Failed {
                message: "basalt: not a lease question".into(),
            },
        }
    }

    /// LeaseTimeToLive from this member's own clocks.
    pub fn local_time_to_live(
        &self,
        req: &pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        let header = Some(self.log.header());
        let Some(lease) = self.log.lease(req.id)? else {
            return Ok(pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            });
        };
        let remaining = self
            .keeper
            .borrow()
            .remaining(req.id, Instant::now())
            .map_or(lease.ttl, |(_, left)| left);
        Ok(pb::LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: remaining,
            granted_ttl: lease.ttl,
            keys: if req.keys { lease.keys } else { Vec::new() },
        })
    }

    /// LeaseLeases: every live lease's id.
    pub fn leases(&self) -> pb::LeaseLeasesResponse {
        pb::LeaseLeasesResponse {
            header: Some(self.log.header()),
            leases: self
                .log
                .lease_ttls()
                .into_iter()
                .map(|(id, _)| pb::LeaseStatus { id })
                .collect(),
        }
    }

    /// Proposes revokes for the leases due at `now` (at most a tick's
    /// worth), all at once so they share a WAL sync. Returns how many were
    /// revoked.
    pub async fn expire(&self, now: Instant) -> usize {
        if !self.log.is_leader() {
            self.leading.set(false);
            return 0;
        }
        if !self.leading.replace(true) {
            self.promote(now);
        }
        self.checkpoint(now).await;
        let due = self
            .keeper
            .borrow_mut()
            .take_expired(now, self.cfg.max_revokes_per_tick);
        if due.is_empty() {
            return 0;
        }
        let results =
            futures_util::future::join_all(due.iter().map(|&id| self.log.propose_revoke(id))).await;
        let not_found = Status::from(Error::LeaseNotFound);
        let mut revoked = 0;
        let mut keeper = self.keeper.borrow_mut();
        for (id, result) in due.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    revoked += 1;
                    keeper.forget(id);
                    self.log.note_expired();
                }
                // Revoked by a client in the meantime.
                Err(e) if e == not_found => keeper.forget(id),
                Err(e) => {
                    tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; will retry");
                    keeper.retry_at(id, Instant::now() + self.cfg.retry_after);
                }
            }
        }
        revoked
    }

    /// This member became leader: every lease lives the election timeout
    /// plus its checkpointed remaining TTL, or its full TTL without a
    /// checkpoint (etcd's promote), so none dies because leadership moved
    /// (the old leader may have renewed it without the log).
    fn promote(&self, now: Instant) {
        let mut keeper = self.keeper.borrow_mut();
        for (id, ttl) in self.log.lease_ttls() {
            if !keeper.contains(id) {
                keeper.grant(id, ttl, now);
            }
        }
        keeper.promote(
            now,
            self.cfg.promote_extension,
            self.cfg.checkpoint_interval,
        );
        tracing::info!(leases = keeper.len(), "lessor promoted: leases extended");
    }

    /// On the leader with checkpointing on: records the remaining TTL of
    /// the leases whose checkpoint is due, one log entry per 1,000.
    async fn checkpoint(&self, now: Instant) {
        let Some(every) = self.cfg.checkpoint_interval else {
            return;
        };
        loop {
            let due = self
                .keeper
                .borrow_mut()
                .take_checkpoints(now, every, MAX_CHECKPOINT_BATCH);
            if due.is_empty() {
                return;
            }
            let n = due.len();
            if let Err(e) = self.log.propose_checkpoint(due).await {
                // The next interval records them again.
                tracing::warn!(error = %e, leases = n, "lease checkpoint failed");
                return;
            }
            if n < MAX_CHECKPOINT_BATCH {
                return;
            }
        }
    }

    /// Revokes expired leases every `expiry_tick` for as long as the lessor
    /// lives. Spawn it on the sequencer's executor.
    pub async fn run_expiry(lessor: Weak<Lessor>) {
        loop {
            let Some(tick) = lessor.upgrade().map(|l| l.cfg.expiry_tick) else {
                return;
            };
            glommio::timer::sleep(tick).await;
            let Some(l) = lessor.upgrade() else {
                return;
            };
            let n = l.expire(Instant::now()).await;
            if n > 0 {
                tracing::debug!(revoked = n, "expired leases revoked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The log as a map of applied leases, with etcd's apply errors.
    #[derive(Default)]
    struct FakeLog {
        leases: RefCell<BTreeMap<i64, Lease>>,
        revision: Cell<i64>,
        fail_revokes: Cell<bool>,
        checkpoints: RefCell<Vec<(i64, i64)>>,
    }

    impl LeaseLog for FakeLog {
        fn propose_grant(&self, id: i64, ttl: i64) -> LogFuture<'_, pb::ResponseHeader> {
            Box::pin(async move {
                let mut leases = self.leases.borrow_mut();
                if leases.contains_key(&id) {
                    return Err(Error::LeaseExists.into());
                }
                leases.insert(
                    id,
                    Lease {
                        id,
                        ttl,
                        keys: vec![b"k".to_vec()],
                    },
                );
                Ok(self.header())
            })
        }
        fn propose_revoke(&self, id: i64) -> LogFuture<'_, pb::ResponseHeader> {
            Box::pin(async move {
                if self.fail_revokes.get() {
                    return Err(Error::Stopped.into());
                }
                self.leases
                    .borrow_mut()
                    .remove(&id)
                    .ok_or(Error::LeaseNotFound)?;
                self.revision.set(self.revision.get() + 1);
                Ok(self.header())
            })
        }
        fn lease(&self, id: i64) -> Result<Option<Lease>, Status> {
            Ok(self.leases.borrow().get(&id).cloned())
        }
        fn lease_ttls(&self) -> Vec<(i64, i64)> {
            self.leases
                .borrow()
                .values()
                .map(|l| (l.id, l.ttl))
                .collect()
        }
        fn header(&self) -> pb::ResponseHeader {
            pb::ResponseHeader {
                revision: self.revision.get(),
                ..Default::default()
            }
        }
        fn propose_checkpoint(&self, checkpoints: Vec<(i64, i64)>) -> LogFuture<'_, ()> {
            self.checkpoints.borrow_mut().extend(checkpoints);
            Box::pin(async { Ok(()) })
        }
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    fn lessor() -> (Rc<FakeLog>, Lessor) {
        let log = Rc::new(FakeLog::default());
        let lessor = Lessor::new(log.clone(), LeaseConfig::default());
        (log, lessor)
    }

    fn grant(l: &Lessor, id: i64, ttl: i64) -> Result<pb::LeaseGrantResponse, Status> {
        block_on(l.grant(pb::LeaseGrantRequest { ttl, id }))
    }

    #[test]
    fn grant_applies_etcd_ttl_rules_and_errors() {
        let (_, l) = lessor();
        assert_eq!(grant(&l, 1000, 60).unwrap().ttl, 60);
        assert_eq!(grant(&l, 3000, -5).unwrap().ttl, 2);
        assert_eq!(grant(&l, 55, 1).unwrap().ttl, 2);
        let e = grant(&l, 1000, 60).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::FailedPrecondition, "etcdserver: lease already exists")
        );
        let e = grant(&l, 3001, 10_000_000_000).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::OutOfRange, "etcdserver: too large lease TTL")
        );
    }

    #[test]
    fn generated_ids_are_positive_and_distinct() {
        let (log, l) = lessor();
        let ids: std::collections::BTreeSet<i64> =
            (0..100).map(|_| grant(&l, 0, 60).unwrap().id).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|&id| id > 0));
        assert_eq!(log.lease_ttls().len(), 100);
    }

    #[test]
    fn keepalive_renews_known_leases_and_answers_unknown_with_zero() {
        let (_, l) = lessor();
        grant(&l, 7, 30).unwrap();
        let r = block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 7 })).unwrap();
        assert_eq!((r.id, r.ttl), (7, 30));
        let r = block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 8 })).unwrap();
        assert_eq!((r.id, r.ttl), (8, 0));
        assert!(r.header.is_some());
    }

    #[test]
    fn time_to_live_with_keys_and_unknown_is_minus_one() {
        let (_, l) = lessor();
        grant(&l, 7, 30).unwrap();
        let r = l
            .local_time_to_live(&pb::LeaseTimeToLiveRequest { id: 7, keys: true })
            .unwrap();
        assert_eq!((r.id, r.granted_ttl, r.keys.len()), (7, 30, 1));
        assert!(r.ttl > 0 && r.ttl <= 30, "remaining {}", r.ttl);
        let r = l
            .local_time_to_live(&pb::LeaseTimeToLiveRequest { id: 7, keys: false })
            .unwrap();
        assert!(r.keys.is_empty());
        let r = l
            .local_time_to_live(&pb::LeaseTimeToLiveRequest {
                id: 4242,
                keys: true,
            })
            .unwrap();
        assert_eq!((r.id, r.ttl, r.granted_ttl), (4242, -1, 0));
    }

    #[test]
    fn revoke_twice_is_not_found_and_leases_lists_ids() {
        let (_, l) = lessor();
        grant(&l, 1, 30).unwrap();
        grant(&l, 2, 30).unwrap();
        let ids: Vec<i64> = l.leases().leases.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![1, 2]);
        block_on(l.revoke(pb::LeaseRevokeRequest { id: 2 })).unwrap();
        let e = block_on(l.revoke(pb::LeaseRevokeRequest { id: 2 })).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        assert_eq!(
            block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 2 }))
                .unwrap()
                .ttl,
            0
        );
    }

    #[test]
    fn expiry_revokes_through_the_log_and_retries_failures() {
        let (log, l) = lessor();
        grant(&l, 1, 5).unwrap();
        grant(&l, 2, 100).unwrap();
        let later = Instant::now() + Duration::from_secs(6);
        log.fail_revokes.set(true);
        assert_eq!(block_on(l.expire(later)), 0);
        assert_eq!(
            block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 1 }))
                .unwrap()
                .ttl,
            0,
            "expired"
        );
        log.fail_revokes.set(false);
        let retry = later + l.config().retry_after;
        assert_eq!(block_on(l.expire(retry)), 1);
        assert_eq!(log.lease_ttls(), vec![(2, 100)]);
        assert_eq!(block_on(l.expire(retry)), 0);
    }

    #[test]
    fn restart_gives_every_lease_its_full_ttl() {
        let log = Rc::new(FakeLog::default());
        block_on(log.propose_grant(9, 40)).unwrap();
        let l = Lessor::new(log.clone(), LeaseConfig::default());
        let r = l
            .local_time_to_live(&pb::LeaseTimeToLiveRequest { id: 9, keys: false })
            .unwrap();
        assert!(r.ttl >= 39 && r.granted_ttl == 40, "{r:?}");
        let almost = Instant::now() + Duration::from_secs(39);
        assert_eq!(block_on(l.expire(almost)), 0);
    }

    #[test]
    fn the_leader_checkpoints_long_leases_and_clears_them_on_renewal() {
        let log = Rc::new(FakeLog::default());
        let cfg = LeaseConfig {
            checkpoint_interval: Some(Duration::from_secs(3)),
            ..LeaseConfig::default()
        };
        let l = Lessor::new(log.clone(), cfg);
        grant(&l, 1, 60).unwrap();
        grant(&l, 2, 2).unwrap();
        assert_eq!(block_on(l.expire(Instant::now())), 0);
        assert!(log.checkpoints.borrow().is_empty(), "none due yet");
        block_on(l.expire(Instant::now() + Duration::from_millis(3100)));
        let recorded = log.checkpoints.borrow_mut().split_off(0);
        assert_eq!(recorded.len(), 1, "only the long lease: {recorded:?}");
        assert_eq!(recorded[0].0, 1);
        assert!((55..=57).contains(&recorded[0].1), "{recorded:?}");
        // Applied back from the log, then renewed: the record is cleared.
        l.applied(LeaseEvent::Checkpointed {
            id: 1,
            remaining: 56,
        });
        block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 1 })).unwrap();
        assert_eq!(*log.checkpoints.borrow(), vec![(1, 0)]);
        // Without a record, a renewal proposes nothing.
        block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 1 })).unwrap();
        assert_eq!(log.checkpoints.borrow().len(), 1);
    }

    #[test]
    fn without_checkpointing_nothing_is_recorded() {
        let (log, l) = lessor();
        grant(&l, 1, 60).unwrap();
        block_on(l.expire(Instant::now() + Duration::from_secs(30)));
        l.applied(LeaseEvent::Checkpointed {
            id: 1,
            remaining: 9,
        });
        block_on(l.keep_alive(&pb::LeaseKeepAliveRequest { id: 1 })).unwrap();
        assert!(log.checkpoints.borrow().is_empty());
    }
}
