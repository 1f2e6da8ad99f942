//! What a member records with every store checkpoint so that a restart
//! re-enters Raft at a consistent point: the term of the applied index,
//! the membership (Raft's `ConfState`) and the members' attributes, and
//! the cluster id. Kept in the store's member metadata slot
//! ([`basalt_engine::mvcc::Store::stage_member_meta`]), so it is durable
//! atomically with the applied index the checkpoint records.

use basalt_raft::ConfState;
use prost::Message;

use std::sync::Arc;

use crate::auth::AuthState;
use crate::error::Error;
use crate::member::MemberInfo;

/// The on-disk record. Field numbers are basalt's format: never reuse one.
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, tag = "1")]
    applied_term: u64,
    #[prost(uint64, tag = "2")]
    cluster_id: u64,
    #[prost(uint64, repeated, tag = "3")]
    voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    learners: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    voters_outgoing: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    learners_next: Vec<u64>,
    #[prost(bool, tag = "7")]
    auto_leave: bool,
    #[prost(message, repeated, tag = "8")]
    members: Vec<MemberRecord>,
    /// The member this data dir belongs to.
    #[prost(uint64, tag = "9")]
    member_id: u64,
    /// The cluster's active alarms: only in the image a leader sends with
    /// a snapshot (a member keeps its own in `member/alarms`).
    #[prost(message, repeated, tag = "10")]
    alarms: Vec<AlarmRecord>,
    /// Members removed from the cluster: they may never rejoin.
    #[prost(uint64, repeated, tag = "11")]
    removed: Vec<u64>,
    /// The auth store ([`crate::auth::AuthState`]'s own encoding).
    #[prost(bytes = "vec", optional, tag = "12")]
    auth: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct AlarmRecord {
    #[prost(uint64, tag = "1")]
    member_id: u64,
    /// `AlarmType` as its protobuf number.
    #[prost(int32, tag = "2")]
    alarm: i32,
}

#[derive(Clone, PartialEq, Message)]
struct MemberRecord {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, repeated, tag = "3")]
    peer_urls: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    client_urls: Vec<String>,
}

/// A member's Raft position and cluster, as of one applied index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMeta {
    /// Term of the entry at the applied index.
    pub applied_term: u64,
    pub cluster_id: u64,
    /// The member this data dir belongs to.
    pub member_id: u64,
    pub conf_state: ConfState,
    /// Every member of the cluster with its name and URLs.
    pub members: Vec<MemberInfo>,
    /// Members removed from the cluster (their peers refuse them).
    pub removed: Vec<u64>,
    /// Users, roles and whether auth is on: replicated state, applied from
    /// the log like the members (shared with the read views it is
    /// published in; changed copy-on-write).
    pub auth: Arc<AuthState>,
}

impl MemberMeta {
    pub fn encode(&self) -> Vec<u8> {
        self.record().encode_to_vec()
    }

    /// The metadata a leader sends with a snapshot of its store: this plus
    /// the cluster's active alarms, which the snapshot's entries no longer
    /// carry.
    pub fn encode_with_alarms(&self, alarms: impl IntoIterator<Item = (u64, i32)>) -> Vec<u8> {
        let mut r = self.record();
        r.alarms = alarms
            .into_iter()
            .map(|(member_id, alarm)| AlarmRecord { member_id, alarm })
            .collect();
        r.encode_to_vec()
    }

    /// The alarms in metadata from [`MemberMeta::encode_with_alarms`].
    pub fn decode_alarms(bytes: &[u8]) -> Result<Vec<(u64, i32)>, Error> {
        let r = Record::decode(bytes)
            .map_err(|e| Error::Wal(format!("undecodable member metadata in the store: {e}")))?;
        Ok(r.alarms
            .into_iter()
            .map(|a| (a.member_id, a.alarm))
            .collect())
    }

    fn record(&self) -> Record {
        let cs = &self.conf_state;
        Record {
            applied_term: self.applied_term,
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            voters_outgoing: cs.voters_outgoing.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
            members: self
                .members
                .iter()
                .map(|m| MemberRecord {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                })
                .collect(),
            alarms: Vec::new(),
            removed: self.removed.clone(),
            auth: (*self.auth != AuthState::default()).then(|| self.auth.encode()),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<MemberMeta, Error> {
        let r = Record::decode(bytes)
            .map_err(|e| Error::Wal(format!("undecodable member metadata in the store: {e}")))?;
        if r.voters.is_empty() && r.voters_outgoing.is_empty() {
            return Err(Error::Wal(
                "member metadata in the store names no voter".into(),
            ));
        }
        Ok(MemberMeta {
            applied_term: r.applied_term,
            cluster_id: r.cluster_id,
            member_id: r.member_id,
            conf_state: ConfState {
                voters: r.voters,
                learners: r.learners,
                voters_outgoing: r.voters_outgoing,
                learners_next: r.learners_next,
                auto_leave: r.auto_leave,
            },
            members: r
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.id,
                    name: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                    is_learner: false,
                })
                .collect(),
            removed: r.removed,
            auth: Arc::new(match &r.auth {
                Some(bytes) => AuthState::decode(bytes)?,
                None => AuthState::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let meta = MemberMeta {
            applied_term: 7,
            cluster_id: 0xabc,
            member_id: 1,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                ..ConfState::default()
            },
            members: vec![MemberInfo {
                id: 1,
                name: "m1".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                client_urls: vec!["http://127.0.0.1:2379".into()],
                is_learner: false,
            }],
            removed: vec![9],
            auth: Arc::new(AuthState {
                enabled: true,
                revision: 4,
                ..AuthState::default()
            }),
        };
        assert_eq!(MemberMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(MemberMeta::decode(&[0xff, 0xff]).is_err());
        assert!(MemberMeta::decode(&[]).is_err(), "no voters");
    }
}
