//! Applying one log entry: etcd's put / delete / txn / compact / lease rules.
//!
//! Every change of one entry gets the same main revision (`current + 1`) and
//! the next sub revision; an entry that changes no key leaves the revision
//! alone. All tree writes go to the scratch overlay, which the store keeps
//! only if the whole entry succeeded.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::error::MvccError;
use super::keyspace::{
    attached_bounds, attached_key, change_key, encode_i64, lease_key, live_key, parse_attached_key,
    parse_change_key, parse_version_key, version_key, version_prefix, LiveRecord, UserRange,
    VersionRecord, META_COMPACT_REVISION, META_CURRENT_REVISION,
};
use super::layers::{Layered, Overlay, Staged};
use super::read;
use super::revision::Revision;
use super::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, Op, OpResponse, PutRequest, PutResponse, RangeRequest, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};

/// A change to the in-memory lease table, made only if the entry succeeds.
pub enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked { id: i64 },
}

/// What the store must update in memory after a successful entry.
pub struct Outcome {
    pub response: OpResponse,
    pub events: Vec<Event>,
    /// Revision after the entry.
    pub revision: i64,
    pub compacted: Option<i64>,
    pub lease: Option<LeaseChange>,
}

pub struct Applier<'s> {
    pub staged: Staged<'s>,
    pub scratch: &'s mut Overlay,
    pub leases: &'s BTreeMap<i64, i64>,
    /// Revision before this entry.
    pub current: i64,
    pub compacted: i64,
    /// Changes made so far; each takes sub revision `subs`.
    subs: i64,
    events: Vec<Event>,
}

/// Which branch each transaction on the path takes, decided against the
/// state before the entry (etcd evaluates nested compares up front too).
struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

impl<'s> Applier<'s> {
    pub fn new(
        staged: Staged<'s>,
        scratch: &'s mut Overlay,
        leases: &'s BTreeMap<i64, i64>,
        current: i64,
        compacted: i64,
    ) -> Applier<'s> {
        Applier {
            staged,
            scratch,
            leases,
            current,
            compacted,
            subs: 0,
            events: Vec::new(),
        }
    }

    fn view(&self) -> Layered<'_> {
        self.staged.with_scratch(self.scratch)
    }

    /// The revision this entry's changes get.
    fn main(&self) -> i64 {
        self.current + 1
    }

    /// The revision reads inside the entry see: includes its own changes.
    fn read_revision(&self) -> i64 {
        if self.subs > 0 {
            self.main()
        } else {
            self.current
        }
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision::new(self.main(), self.subs);
        self.subs += 1;
        rev
    }

    fn write(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.scratch.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.scratch.insert(key, None);
    }

    pub fn apply(mut self, op: &Op) -> Result<Outcome, MvccError> {
        let mut compacted = None;
        let mut lease = None;
        let response = match op {
            Op::Put(req) => OpResponse::Put(self.put(req, false)?),
            Op::DeleteRange(req) => OpResponse::DeleteRange(self.delete_range(req)?),
            Op::Txn(req) => OpResponse::Txn(self.txn(req)?),
            Op::Compact { revision } => {
                self.compact(*revision)?;
                compacted = Some(*revision);
                OpResponse::Compact
            }
            Op::LeaseGrant { id, ttl } => {
                self.lease_grant(*id, *ttl)?;
                lease = Some(LeaseChange::Granted { id: *id, ttl: *ttl });
                OpResponse::LeaseGrant
            }
            Op::LeaseRevoke { id } => {
                self.lease_revoke(*id)?;
                lease = Some(LeaseChange::Revoked { id: *id });
                OpResponse::LeaseRevoke
            }
        };
        let revision = self.read_revision();
        if self.subs > 0 {
            self.write(META_CURRENT_REVISION.to_vec(), encode_i64(revision));
        }
        Ok(Outcome {
            response,
            events: self.events,
            revision,
            compacted,
            lease,
        })
    }

    /// Evaluates a txn that writes nothing with the very code `apply` runs,
    /// so the answer is the one the log path would give.
    pub fn read_txn(mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        debug_assert!(req.is_read_only());
        let response = self.txn(req)?;
        debug_assert!(self.subs == 0 && self.scratch.is_empty());
        Ok(response)
    }

    fn check_lease(&self, id: i64) -> Result<(), MvccError> {
        if id != 0 && !self.leases.contains_key(&id) {
            return Err(MvccError::LeaseNotFound(id));
        }
        Ok(())
    }

    /// etcd's put. `in_txn` only changes which error wins when both apply
    /// (etcd checks the lease first for a plain put, the key first in a txn).
    fn put(&mut self, req: &PutRequest, in_txn: bool) -> Result<PutResponse, MvccError> {
        check_sizes(&req.key, &req.value)?;
        let needs_prev = req.ignore_value || req.ignore_lease;
        if !in_txn {
            self.check_lease(req.lease)?;
        }
        let live = read::live(&self.view(), &req.key)?;
        if needs_prev && live.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if in_txn {
            self.check_lease(req.lease)?;
        }
        let prev = match &live {
            Some(record) => Some(read::live_kv(&self.view(), &req.key, record)?),
            None => None,
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };

        let rev = self.next_revision();
        let (create_revision, version) = match &live {
            Some(l) => (l.create_revision, l.version + 1),
            None => (rev.main, 1),
        };
        let record = VersionRecord::Put {
            create_revision,
            version,
            lease,
            value: value.clone(),
        };
        self.write(version_key(&req.key, rev), record.encode());
        self.write(change_key(rev), req.key.clone());
        let live_record = LiveRecord {
            create_revision,
            modified: rev,
            version,
            lease,
        };
        self.write(live_key(&req.key), live_record.encode());
        let old_lease = live.map_or(0, |l| l.lease);
        if old_lease != 0 && old_lease != lease {
            self.remove(attached_key(old_lease, &req.key));
        }
        if lease != 0 {
            self.write(attached_key(lease, &req.key), Vec::new());
        }
        self.events.push(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: req.key.clone(),
                create_revision,
                mod_revision: rev.main,
                version,
                value,
                lease,
            },
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// Writes a tombstone for one live key.
    fn delete_key(&mut self, record: &LiveRecord, prev: KeyValue) {
        let rev = self.next_revision();
        self.write(
            version_key(&prev.key, rev),
            VersionRecord::Tombstone.encode(),
        );
        self.write(change_key(rev), prev.key.clone());
        self.remove(live_key(&prev.key));
        if record.lease != 0 {
            self.remove(attached_key(record.lease, &prev.key));
        }
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: prev.key.clone(),
                mod_revision: rev.main,
                ..KeyValue::default()
            },
            prev_kv: Some(prev),
        });
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        let range = UserRange::new(&req.key, &req.range_end);
        let victims = read::live_in(&self.view(), range, None)?;
        let deleted = victims.len() as i64;
        let mut prev_kvs = Vec::new();
        for (record, kv) in victims {
            if req.prev_kv {
                prev_kvs.push(kv.clone());
            }
            self.delete_key(&record, kv);
        }
        Ok(DeleteRangeResponse { deleted, prev_kvs })
    }

    fn range(&self, req: &RangeRequest) -> Result<super::types::RangeResponse, MvccError> {
        read::range(&self.view(), self.read_revision(), self.compacted, req)
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let path = self.decide(req)?;
        self.check_path(req, &path)?;
        self.run_path(req, &path)
    }

    fn decide(&self, req: &TxnRequest) -> Result<TxnPath, MvccError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = Vec::new();
        for op in ops {
            if let RequestOp::Txn(inner) = op {
                nested.push(self.decide(inner)?);
            }
        }
        Ok(TxnPath { succeeded, nested })
    }

    /// etcd's applyCompare: every key in the range must satisfy it; a missing
    /// key compares as all-zero, except that a value compare on it fails.
    fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        let range = UserRange::new(&c.key, &c.range_end);
        let kvs = read::live_in(&self.view(), range, None)?;
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|(_, kv)| compare_kv(c, kv)))
    }

    /// etcd's checkRequests: refuse the whole txn before any write when an op
    /// on the chosen path would fail against the pre-txn state.
    fn check_path(&self, req: &TxnRequest, path: &TxnPath) -> Result<(), MvccError> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match op {
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease)
                        && read::live(&self.view(), &p.key)?.is_none()
                    {
                        return Err(MvccError::KeyNotFound);
                    }
                    self.check_lease(p.lease)?;
                }
                RequestOp::Range(r) => {
                    if r.revision > self.current {
                        return Err(MvccError::FutureRevision);
                    }
                    if r.revision > 0 && r.revision < self.compacted {
                        return Err(MvccError::Compacted {
                            requested: r.revision,
                            compacted: self.compacted,
                        });
                    }
                }
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(inner) => {
                    let inner_path = nested.next().ok_or_else(|| {
                        MvccError::Corrupt("txn path shorter than the txn".into())
                    })?;
                    self.check_path(inner, inner_path)?;
                }
            }
        }
        Ok(())
    }

    fn run_path(&mut self, req: &TxnRequest, path: &TxnPath) -> Result<TxnResponse, MvccError> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p, true)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
                RequestOp::Txn(inner) => {
                    let inner_path = nested.next().ok_or_else(|| {
                        MvccError::Corrupt("txn path shorter than the txn".into())
                    })?;
                    ResponseOp::Txn(self.run_path(inner, inner_path)?)
                }
            });
        }
        Ok(TxnResponse {
            succeeded: path.succeeded,
            responses,
        })
    }

    /// Keeps, for each key, its newest version <= `rev` unless that is a
    /// tombstone; drops everything older. Only keys changed since the last
    /// compaction can have anything to drop, so only those are visited.
    fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.compacted {
            return Err(MvccError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        if rev > self.current {
            return Err(MvccError::FutureRevision);
        }
        let changed: BTreeSet<Vec<u8>> = {
            let view = self.view();
            let bounds = (
                Bound::Included(change_key(Revision::new(self.compacted + 1, 0))),
                Bound::Included(change_key(Revision::new(rev, i64::MAX))),
            );
            let mut keys = BTreeSet::new();
            for item in view.scan(&bounds) {
                let (tree_key, key) = item?;
                parse_change_key(&tree_key)?;
                keys.insert(key);
            }
            keys
        };
        for key in changed {
            let doomed = {
                let view = self.view();
                let bounds = (
                    Bound::Included(version_prefix(&key)),
                    Bound::Included(version_key(&key, Revision::new(rev, i64::MAX))),
                );
                let mut versions = Vec::new();
                for item in view.scan(&bounds) {
                    let (tree_key, bytes) = item?;
                    let (_, r) = parse_version_key(&tree_key)?;
                    let tombstone = VersionRecord::decode(&bytes)? == VersionRecord::Tombstone;
                    versions.push((r, tombstone));
                }
                // Keep the newest unless it is a tombstone.
                if versions.last().is_some_and(|(_, tomb)| !tomb) {
                    versions.pop();
                }
                versions
            };
            for (r, _) in doomed {
                self.remove(version_key(&key, r));
                self.remove(change_key(r));
            }
        }
        self.write(META_COMPACT_REVISION.to_vec(), encode_i64(rev));
        Ok(())
    }

    fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), MvccError> {
        if id == 0 {
            return Err(MvccError::InvalidRequest(
                "lease id 0 is reserved for \"no lease\"; the server picks an id".into(),
            ));
        }
        if self.leases.contains_key(&id) {
            return Err(MvccError::LeaseExists(id));
        }
        self.write(lease_key(id), encode_i64(ttl));
        Ok(())
    }

    /// Deletes every key attached to the lease, all at one revision.
    fn lease_revoke(&mut self, id: i64) -> Result<(), MvccError> {
        if !self.leases.contains_key(&id) {
            return Err(MvccError::LeaseNotFound(id));
        }
        let keys = {
            let view = self.view();
            let mut keys = Vec::new();
            for item in view.scan(&attached_bounds(id)) {
                let (tree_key, _) = item?;
                keys.push(parse_attached_key(&tree_key)?);
            }
            keys
        };
        for key in keys {
            let record = read::live(&self.view(), &key)?.ok_or_else(|| {
                MvccError::Corrupt(format!(
                    "lease {id:#x} lists {:?}, which is not live",
                    String::from_utf8_lossy(&key)
                ))
            })?;
            let kv = read::live_kv(&self.view(), &key, &record)?;
            self.delete_key(&record, kv);
        }
        self.remove(lease_key(id));
        Ok(())
    }
}

/// Refuses a key or value the tree could not store once escaped and
/// prefixed, so a checkpoint can never fail on data already applied.
fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), MvccError> {
    let tree_key = 2 * key.len() + 1 + 2 + Revision::ENCODED_LEN;
    let record = value.len() + 25;
    if key.is_empty() {
        return Err(MvccError::InvalidRequest("empty key".into()));
    }
    if tree_key > crate::btree::MAX_KEY_BYTES || record > crate::btree::MAX_VALUE_BYTES {
        return Err(MvccError::InvalidRequest(format!(
            "key of {} bytes or value of {} bytes is too large for the store",
            key.len(),
            value.len()
        )));
    }
    Ok(())
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}
