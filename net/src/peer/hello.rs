//! The handshake: who is calling, for which cluster, and what they carry.
//!
//! The member that dials sends one [`Hello`]; the member that answers sends
//! one [`HelloReply`] and, if it refused, closes the connection. Only after
//! `Accepted` do `Messages` or `SnapshotChunk` frames follow, in the
//! direction and of the kind the hello's [`StreamKind`] named. A `Join` or
//! `Query` hello is a question: the reply is the answer, then both close.

use std::fmt;

use basalt_raft::{NodeId, NO_NODE};
use rkyv::{Archive, Deserialize, Serialize};

use super::limits::WireLimits;

/// Version of every payload layout (the handshake's, Raft messages',
/// snapshot chunks'). rkyv archives are not self-describing, so any change
/// to a mirrored field is a new version.
/// Version 2 added [`Hello::query`].
pub const PROTOCOL_VERSION: u16 = 2;
/// Oldest payload version this member still reads.
pub const MIN_PROTOCOL_VERSION: u16 = 2;

/// What the connection will carry after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub enum StreamKind {
    /// `Messages` frames from the dialer to the answerer.
    Messages,
    /// `SnapshotChunk` frames from the dialer to the answerer, then close.
    Snapshot,
    /// A new member asks who it is in the cluster (`--initial-cluster-state
    /// existing`): its hello names no cluster or member, only its peer
    /// URLs; the answer is [`HelloReply::Joined`] or a refusal, then close.
    Join,
    /// A member asks another one question ([`Hello::query`]); the answer
    /// is [`HelloReply::Answer`] or a refusal, then close.
    Query,
}

/// A question one member asks another over the peer port (etcd asks these
/// over its peer HTTP handlers).
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum PeerQuery {
    /// A follower's LeaseTimeToLive, asked of the leader: only the leader
    /// runs the leases' clocks (keepalives reach it, not the followers),
    /// so etcd forwards this call (`/leases/internal`).
    LeaseTimeToLive { id: i64, keys: bool },
    /// etcd's HashKV at `revision` (0: the answerer's current one), asked
    /// of every peer by a restarted member before it serves clients
    /// (`--experimental-initial-corrupt-check`).
    HashKv { revision: i64 },
    /// Are you there? Answered at once with [`PeerAnswer::Pong`]: every
    /// member times one to each peer now and then, etcd's
    /// `etcd_network_peer_round_trip_time_seconds`.
    Ping,
}

/// The answer to a [`PeerQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// `ttl` is -1 for a lease the leader does not know.
    LeaseTimeToLive {
        ttl: i64,
        granted_ttl: i64,
        keys: Vec<Vec<u8>>,
    },
    /// The member asked is not the one that can answer (no longer the
    /// leader, say): ask again once the cluster settles.
    NotLeader,
    /// etcd's HashKV: `revision` is the answerer's current revision (the
    /// response header's), `hash` covers up to the revision asked.
    HashKv {
        revision: i64,
        compact_revision: i64,
        hash: u32,
    },
    /// The answer to [`PeerQuery::Ping`].
    Pong,
    /// The member could not answer: etcd's error message (a revision
    /// compacted or in the future, a store read that failed).
    Failed { message: String },
}

/// The dialer's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Hello {
    /// Highest payload version the dialer speaks.
    pub protocol_version: u16,
    /// etcd's cluster id (from `--initial-cluster-token` and the members).
    pub cluster_id: u64,
    /// The dialer's member id.
    pub from: NodeId,
    /// The member id the dialer believes it reached.
    pub to: NodeId,
    pub stream: StreamKind,
    /// The dialer's `--name`, for logs.
    pub name: Option<String>,
    /// The dialer's advertised peer URLs, for logs and membership checks.
    pub peer_urls: Vec<String>,
    /// The question of a [`StreamKind::Query`] hello.
    pub query: Option<PeerQuery>,
}

impl Hello {
    /// A hello at this member's [`PROTOCOL_VERSION`], without name or URLs.
    pub fn new(cluster_id: u64, from: NodeId, to: NodeId, stream: StreamKind) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            from,
            to,
            stream,
            name: None,
            peer_urls: Vec::new(),
            query: None,
        }
    }

    /// The refusal this hello earns from member `local` of `cluster_id` on
    /// version, cluster and addressee alone; whether `from` is a current
    /// member is the caller's to check (`UnknownMember`, `MemberRemoved`).
    ///
    /// A dialer newer than us is accepted: the reply names our version,
    /// and the dialer closes if it no longer speaks it.
    pub fn check(&self, cluster_id: u64, local: NodeId) -> Result<(), Refusal> {
        if self.protocol_version < MIN_PROTOCOL_VERSION {
            return Err(Refusal::VersionUnsupported {
                min: MIN_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
                theirs: self.protocol_version,
            });
        }
        if self.cluster_id != cluster_id {
            return Err(Refusal::ClusterIdMismatch {
                ours: cluster_id,
                theirs: self.cluster_id,
            });
        }
        if self.to != local {
            return Err(Refusal::ReceiverMismatch {
                ours: local,
                expected: self.to,
            });
        }
        if self.from == NO_NODE || self.from == local {
            return Err(Refusal::UnknownMember { id: self.from });
        }
        Ok(())
    }
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted {
        /// Payload version both ends use from now on: the lower of the two.
        /// A dialer that cannot speak it closes the connection.
        protocol_version: u16,
        /// The answering member's id.
        member_id: NodeId,
        /// The answerer's limits; the dialer frames with
        /// [`WireLimits::min`] of these and its own.
        max_messages_payload: u32,
        max_snapshot_chunk_data: u32,
    },
    Refused(Refusal),
    /// The answer to a [`StreamKind::Join`] hello: the member the dialer's
    /// peer URLs belong to, and the cluster it joins.
    Joined(JoinedCluster),
    /// The answer to a [`StreamKind::Query`] hello.
    Answer(PeerAnswer),
}

/// What a joining member learns from a member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct JoinedCluster {
    pub cluster_id: u64,
    /// The joining member's id (given when it was added).
    pub member_id: NodeId,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct JoinedMember {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl HelloReply {
    /// Acceptance by member `member_id` of a hello at `their_version`.
    pub fn accept(member_id: NodeId, their_version: u16, limits: WireLimits) -> HelloReply {
        HelloReply::Accepted {
            protocol_version: their_version.min(PROTOCOL_VERSION),
            member_id,
            // Fit: WireLimits keeps both under MAX_FRAME_BYTES.
            max_messages_payload: limits.max_messages_payload() as u32,
            max_snapshot_chunk_data: limits.max_snapshot_chunk_data() as u32,
        }
    }

    /// The limits an `Accepted` reply announced, if they are valid ones.
    pub fn peer_limits(&self) -> Option<WireLimits> {
        match *self {
            HelloReply::Accepted {
                max_messages_payload,
                max_snapshot_chunk_data,
                ..
            } => WireLimits::new(
                max_messages_payload as usize,
                max_snapshot_chunk_data as usize,
            )
            .ok(),
            HelloReply::Refused(_) | HelloReply::Joined(_) | HelloReply::Answer(_) => None,
        }
    }
}

/// Why a member refused a connection. Each names what the dialer needs to
/// fix or report.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Refusal {
    /// The members were started with different `--initial-cluster-token`s
    /// or member lists.
    ClusterIdMismatch { ours: u64, theirs: u64 },
    /// The hello was meant for member `expected`; this is member `ours`
    /// (a stale peer URL after a member was replaced).
    ReceiverMismatch { ours: NodeId, expected: NodeId },
    /// The dialer's id is not in this member's membership.
    UnknownMember { id: NodeId },
    /// The dialer was a member and has been removed; it must not rejoin.
    MemberRemoved { id: NodeId },
    /// The dialer's version is older than this member still reads; this
    /// member reads `min..=max`.
    VersionUnsupported { min: u16, max: u16, theirs: u16 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ClusterIdMismatch { ours, theirs } => {
                write!(f, "cluster id mismatch: ours {ours:x}, theirs {theirs:x}")
            }
            Refusal::ReceiverMismatch { ours, expected } => {
                write!(f, "this is member {ours:x}, not {expected:x}")
            }
            Refusal::UnknownMember { id } => write!(f, "member {id:x} is not in the cluster"),
            Refusal::MemberRemoved { id } => {
                write!(f, "member {id:x} was removed from the cluster")
            }
            Refusal::VersionUnsupported { min, max, theirs } => write!(
                f,
                "peer protocol version {theirs} unsupported (this member reads {min}..={max})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_first_problem() {
        let ok = Hello::new(7, 1, 2, StreamKind::Messages);
        assert_eq!(ok.check(7, 2), Ok(()));
        let previous = Hello {
            protocol_version: 1,
            ..ok.clone()
        };
        assert!(matches!(
            previous.check(7, 2),
            Err(Refusal::VersionUnsupported { theirs: 1, .. })
        ));
        assert_eq!(
            ok.check(8, 2),
            Err(Refusal::ClusterIdMismatch { ours: 8, theirs: 7 })
        );
        assert_eq!(
            ok.check(7, 3),
            Err(Refusal::ReceiverMismatch {
                ours: 3,
                expected: 2
            })
        );
        let old = Hello {
            protocol_version: 0,
            ..ok.clone()
        };
        assert_eq!(
            old.check(7, 2),
            Err(Refusal::VersionUnsupported {
                min: MIN_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
                theirs: 0
            })
        );
        let nobody = Hello {
            from: 0,
            ..ok.clone()
        };
        assert_eq!(nobody.check(7, 2), Err(Refusal::UnknownMember { id: 0 }));
        let myself = Hello { from: 2, ..ok };
        assert_eq!(myself.check(7, 2), Err(Refusal::UnknownMember { id: 2 }));
    }

    #[test]
    fn accept_settles_on_the_lower_version_and_announces_limits() {
        let limits = WireLimits::new(1000, 500).unwrap();
        let reply = HelloReply::accept(2, PROTOCOL_VERSION + 5, limits);
        assert_eq!(
            reply,
            HelloReply::Accepted {
                protocol_version: PROTOCOL_VERSION,
                member_id: 2,
                max_messages_payload: 1000,
                max_snapshot_chunk_data: 500
            }
        );
        assert_eq!(reply.peer_limits(), Some(limits));
        let zero = HelloReply::Accepted {
            protocol_version: 1,
            member_id: 2,
            max_messages_payload: 0,
            max_snapshot_chunk_data: 500,
        };
        assert_eq!(zero.peer_limits(), None);
    }
}
