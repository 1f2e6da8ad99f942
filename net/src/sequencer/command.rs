//! Requests to the sequencer and its answers. Both are `Send`: a request
//! from a connection on another executor crosses a channel mesh. Range and
//! read-only Txn are not among them: every executor answers those from
//! the published read view (`views`).

use basalt_engine::mvcc as m;

use crate::proto::etcdserverpb as pb;

use super::log_entry::LogEntry;

pub enum Command {
    /// A write: appended to the WAL, then applied in log order.
    Propose(LogEntry),
    /// Waits until this member applied everything committed when asked
    /// (a ReadIndex round), for a linearizable read; answers `Done`.
    ReadIndex,
    Status,
    Hash,
    Defragment,
    Alarm(pb::AlarmRequest),
    Leases,
    Lease {
        id: i64,
    },
    /// The members as applied, with the raft term for the header.
    Members,
    /// Hands leadership to a voter (etcd's MoveLeader); answers `Done`
    /// once it leads.
    MoveLeader {
        target: u64,
    },
    /// etcd's MemberAdd: answers `MemberChanged` with the new member.
    MemberAdd {
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    MemberRemove {
        id: u64,
    },
    MemberUpdate {
        id: u64,
        peer_urls: Vec<String>,
    },
    MemberPromote {
        id: u64,
    },
}

/// A successful answer; each variant carries the header of the response.
pub enum Reply {
    Applied(m::OpResponse, pb::ResponseHeader),
    Status(StatusInfo),
    Hash {
        hash: u32,
        header: pb::ResponseHeader,
    },
    Done(pb::ResponseHeader),
    /// A keepalive went through the log: the lease's TTL, 0 if it is gone.
    Renewed(i64, pb::ResponseHeader),
    Alarms(Vec<pb::AlarmMember>, pb::ResponseHeader),
    Leases(Vec<m::Lease>, pb::ResponseHeader),
    Members(crate::member::ClusterInfo, pb::ResponseHeader),
    /// A membership change applied: the member it was about, and the
    /// members after it.
    MemberChanged(u64, crate::member::ClusterInfo, pb::ResponseHeader),
    Lease(Option<m::Lease>, pb::ResponseHeader),
}

/// What Maintenance.Status reports.
pub struct StatusInfo {
    pub header: pb::ResponseHeader,
    /// The leader this member knows of (0: none).
    pub leader: u64,
    pub is_learner: bool,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub raft_term: u64,
    pub errors: Vec<String>,
}
