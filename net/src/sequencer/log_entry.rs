//! What one WAL entry holds: the client's write request as etcd's own
//! protobuf message inside a small envelope (our counterpart of etcd's
//! `InternalRaftRequest`). Replaying an entry decodes it and applies the
//! same engine [`Op`] the live path applied, so recovery is deterministic.

use basalt_engine::mvcc::Op;
use prost::Message;

use crate::error::Error;
use crate::proto::etcdserverpb as pb;
use crate::wire;

/// The envelope. Field numbers are basalt's on-disk format: never reuse one.
/// Entries written before members replicated carry no ids (both 0).
#[derive(Clone, PartialEq, Message)]
pub struct LogEntry {
    #[prost(
        oneof = "Request",
        tags = "1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 19"
    )]
    pub request: Option<Request>,
    /// The member that proposed the entry: only it has a client waiting.
    #[prost(uint64, tag = "7")]
    pub member_id: u64,
    /// Names the waiting client among the proposer's requests.
    #[prost(uint64, tag = "8")]
    pub request_id: u64,
    /// The user the request was made as, once auth is on (etcd's
    /// `RequestHeader.username`): permissions are checked again where the
    /// entry applies. Empty: no user.
    #[prost(string, tag = "17")]
    pub user: String,
    /// The auth revision the user's credentials carry.
    #[prost(uint64, tag = "18")]
    pub auth_revision: u64,
}

/// A member's name and client URLs, published through the log when it
/// starts (etcd's attribute publication), so every member lists them.
#[derive(Clone, PartialEq, Message)]
pub struct MemberAttributes {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "1")]
    Put(pb::PutRequest),
    #[prost(message, tag = "2")]
    DeleteRange(pb::DeleteRangeRequest),
    #[prost(message, tag = "3")]
    Txn(pb::TxnRequest),
    #[prost(message, tag = "4")]
    Compaction(pb::CompactionRequest),
    /// `id` is always the final, server-chosen lease id.
    #[prost(message, tag = "5")]
    LeaseGrant(pb::LeaseGrantRequest),
    #[prost(message, tag = "6")]
    LeaseRevoke(pb::LeaseRevokeRequest),
    /// Not a store operation: the member table.
    #[prost(message, tag = "9")]
    MemberAttributes(MemberAttributes),
    /// Not a store operation: a keepalive received by a follower, carried
    /// to the leader's lessor (and every member's) through the log.
    #[prost(message, tag = "10")]
    LeaseKeepAlive(pb::LeaseKeepAliveRequest),
    /// Not a store operation: an alarm raised or disarmed, for every member
    /// (`member_id` is always filled in by the proposer).
    #[prost(message, tag = "11")]
    Alarm(pb::AlarmRequest),
    /// Not a store operation: leases' remaining TTLs recorded by the
    /// leader, for whichever member leads next (etcd's lease checkpoint).
    #[prost(message, tag = "12")]
    LeaseCheckpoint(pb::LeaseCheckpointRequest),
    /// Not a store operation: the leader asks every member for its HashKV
    /// at the revision where the entry applies (the corruption check).
    #[prost(message, tag = "13")]
    HashCheck(HashCheck),
    /// Not a store operation: a member's answer to a [`Request::HashCheck`].
    #[prost(message, tag = "14")]
    HashReport(HashReport),
    /// Not a store operation: a member's new peer URLs (MemberUpdate).
    #[prost(message, tag = "15")]
    MemberUpdate(super::membership::MemberUpdate),
    /// Not a store operation: a change of users, roles or the auth switch,
    /// applied to the member metadata on every member.
    #[prost(message, tag = "16")]
    Auth(crate::auth::AuthChange),
    /// Not a store operation: a simple token Authenticate issued, which
    /// every member accepts from then on.
    #[prost(message, tag = "19")]
    TokenAssigned(crate::auth::TokenAssigned),
}

/// A corruption check round (see `sequencer::corruption`).
#[derive(Clone, PartialEq, Message)]
pub struct HashCheck {}

/// A member's HashKV for a corruption check round.
#[derive(Clone, PartialEq, Message)]
pub struct HashReport {
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// The member's revision where the check applied, which the hash covers.
    #[prost(int64, tag = "2")]
    pub revision: i64,
    #[prost(int64, tag = "3")]
    pub compact_revision: i64,
    #[prost(uint32, tag = "4")]
    pub hash: u32,
    /// The log index of the check answered.
    #[prost(uint64, tag = "5")]
    pub check_index: u64,
}

impl LogEntry {
    pub fn new(request: Request) -> LogEntry {
        LogEntry {
            request: Some(request),
            member_id: 0,
            request_id: 0,
            user: String::new(),
            auth_revision: 0,
        }
    }

    /// This entry, made by `caller` (nothing changes while auth is off).
    pub fn by(mut self, caller: &crate::auth::Caller) -> LogEntry {
        if let Some((user, revision)) = &caller.user {
            self.user = user.clone();
            self.auth_revision = *revision;
        }
        self
    }

    /// This entry, written by the server on a caller's behalf after it
    /// checked the caller's rights itself (Lock, Election): applied with
    /// root's rights, which no auth change can take away while auth is on.
    pub fn on_behalf(mut self) -> LogEntry {
        self.user = crate::auth::ROOT.to_string();
        self.auth_revision = u64::MAX;
        self
    }

    /// Whether the entry's user may make it, by the auth state where it
    /// applies: KV writes per key, every compare and operation of a txn,
    /// root for auth changes. A put to a lease needs write permission on
    /// the keys already attached to it (`lease_keys`): a user who could
    /// not revoke the lease may not attach to it (etcd's
    /// `checkLeasePuts`).
    pub fn permitted(
        &self,
        state: &std::sync::Arc<crate::auth::AuthState>,
        lease_keys: impl Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        if !state.enabled {
            return Ok(());
        }
        let caller = crate::auth::Caller::of_entry(&self.user, self.auth_revision, state);
        match &self.request {
            Some(Request::Put(r)) => {
                caller.put(r)?;
                if r.lease != 0 {
                    for key in lease_keys(r.lease) {
                        caller.check(&key, &[], crate::auth::Access::Write)?;
                    }
                }
                Ok(())
            }
            Some(Request::DeleteRange(r)) => caller.delete_range(r),
            Some(Request::Txn(t)) => caller.txn(t),
            Some(Request::Auth(_)) => caller.check_admin(),
            _ => Ok(()),
        }
    }

    /// Whether the entry changes the store (else the member applies it:
    /// [`Request::MemberAttributes`], [`Request::LeaseKeepAlive`], …).
    pub fn is_store_op(&self) -> bool {
        !matches!(
            self.request,
            Some(Request::MemberAttributes(_))
                | Some(Request::LeaseKeepAlive(_))
                | Some(Request::Alarm(_))
                | Some(Request::LeaseCheckpoint(_))
                | Some(Request::HashCheck(_))
                | Some(Request::HashReport(_))
                | Some(Request::MemberUpdate(_))
                | Some(Request::Auth(_))
                | Some(Request::TokenAssigned(_))
        )
    }

    /// The engine operation this entry applies.
    pub fn op(&self) -> Result<Op, Error> {
        Ok(match &self.request {
            Some(Request::Put(r)) => Op::Put(wire::put_request(r)),
            Some(Request::DeleteRange(r)) => Op::DeleteRange(wire::delete_request(r)),
            Some(Request::Txn(r)) => Op::Txn(wire::txn_request(r)?),
            Some(Request::Compaction(r)) => Op::Compact {
                revision: r.revision,
            },
            Some(Request::LeaseGrant(r)) => Op::LeaseGrant {
                id: r.id,
                ttl: r.ttl,
            },
            Some(Request::LeaseRevoke(r)) => Op::LeaseRevoke { id: r.id },
            Some(Request::MemberAttributes(_))
            | Some(Request::LeaseKeepAlive(_))
            | Some(Request::Alarm(_))
            | Some(Request::LeaseCheckpoint(_))
            | Some(Request::HashCheck(_))
            | Some(Request::HashReport(_))
            | Some(Request::MemberUpdate(_))
            | Some(Request::Auth(_))
            | Some(Request::TokenAssigned(_)) => {
                return Err(Error::Wal("log entry is not a store operation".into()))
            }
            None => return Err(Error::Wal("log entry without a request".into())),
        })
    }

    pub fn decode_from(data: &[u8]) -> Result<LogEntry, Error> {
        LogEntry::decode(data).map_err(|e| Error::Wal(format!("undecodable log entry: {e}")))
    }

    /// Bytes that etcd's quota accounting charges for this request (its
    /// `quota.go`: key + value + 256 per put, 64 per lease); 0 for requests
    /// that free space.
    pub fn quota_cost(&self) -> u64 {
        const KV_OVERHEAD: u64 = 256;
        const LEASE_OVERHEAD: u64 = 64;
        fn txn_cost(t: &pb::TxnRequest) -> u64 {
            t.success
                .iter()
                .chain(&t.failure)
                .map(|op| match &op.request {
                    Some(pb::request_op::Request::RequestPut(p)) => {
                        (p.key.len() + p.value.len()) as u64 + KV_OVERHEAD
                    }
                    Some(pb::request_op::Request::RequestTxn(t)) => txn_cost(t),
                    _ => 0,
                })
                .sum()
        }
        match &self.request {
            Some(Request::Put(p)) => (p.key.len() + p.value.len()) as u64 + KV_OVERHEAD,
            Some(Request::Txn(t)) => txn_cost(t),
            Some(Request::LeaseGrant(_)) => LEASE_OVERHEAD,
            _ => 0,
        }
    }

    /// Whether a NOSPACE alarm blocks this request: etcd still allows
    /// deletes, compaction and lease revokes so space can be freed.
    pub fn blocked_by_nospace(&self) -> bool {
        self.quota_cost() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_converts() {
        let e = LogEntry::new(Request::Put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 5,
            ..Default::default()
        }));
        let back = LogEntry::decode_from(&e.encode_to_vec()).unwrap();
        assert_eq!(back, e);
        match back.op().unwrap() {
            Op::Put(p) => assert_eq!((p.key, p.lease), (b"k".to_vec(), 5)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.quota_cost(), 258);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(LogEntry::decode_from(&[0xff, 0xff, 0xff]).is_err());
        assert!(LogEntry::default().op().is_err());
    }
}
