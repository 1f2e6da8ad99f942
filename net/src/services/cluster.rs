//! etcd's Cluster service: MemberList from the membership as applied (with
//! the client URLs members published); MemberAdd, MemberRemove,
//! MemberUpdate and MemberPromote through the log, with etcd's checks and
//! errors (see `sequencer::membership`). Headers carry no revision, as
//! etcd's cluster server fills only cluster id, member id and raft term.

use std::rc::Rc;

use crate::grpc::{unary, Code, Router, Status};
use crate::member::{ClusterInfo, MemberInfo};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{Command, Reply};

use super::ServiceContext;

fn header(h: pb::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision: 0, ..h })
}

fn members(cluster: &ClusterInfo) -> Vec<pb::Member> {
    cluster.members.iter().map(member).collect()
}

/// A membership change's answer: the member it was about, the header, and
/// the members after it.
type Changed = (
    Option<pb::Member>,
    Option<pb::ResponseHeader>,
    Vec<pb::Member>,
);

fn changed(reply: Reply) -> Result<Changed, Status> {
    match reply {
        Reply::MemberChanged(id, cluster, h) => Ok((
            cluster.members.iter().find(|m| m.id == id).map(member),
            header(h),
            members(&cluster),
        )),
        _ => Err(Status::new(
            Code::Internal,
            "unexpected reply to a membership change",
        )),
    }
}

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Cluster/MemberList",
        unary(move |req: pb::MemberListRequest, _| {
            let c = c.clone();
            async move {
                // etcd 3.5's linearizable list waits for a ReadIndex round.
                if req.linearizable {
                    c.sequencer.call(Command::ReadIndex).await?;
                }
                match c.sequencer.call(Command::Members).await? {
                    Reply::Members(cluster, h) => Ok(pb::MemberListResponse {
                        header: header(h),
                        members: members(&cluster),
                    }),
                    _ => Err(Status::new(
                        Code::Internal,
                        "unexpected reply to MemberList",
                    )),
                }
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Cluster/MemberAdd",
        unary(move |req: pb::MemberAddRequest, _| {
            let c = c.clone();
            async move {
                let cmd = Command::MemberAdd {
                    peer_urls: req.peer_ur_ls,
                    is_learner: req.is_learner,
                };
                let (member, header, members) = changed(c.sequencer.call(cmd).await?)?;
                Ok(pb::MemberAddResponse {
                    header,
                    member,
                    members,
                })
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Cluster/MemberRemove",
        unary(move |req: pb::MemberRemoveRequest, _| {
            let c = c.clone();
            async move {
                let cmd = Command::MemberRemove { id: req.id };
                let (_, header, members) = changed(c.sequencer.call(cmd).await?)?;
                Ok(pb::MemberRemoveResponse { header, members })
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Cluster/MemberUpdate",
        unary(move |req: pb::MemberUpdateRequest, _| {
            let c = c.clone();
            async move {
                let cmd = Command::MemberUpdate {
                    id: req.id,
                    peer_urls: req.peer_ur_ls,
                };
                let (_, header, members) = changed(c.sequencer.call(cmd).await?)?;
                Ok(pb::MemberUpdateResponse { header, members })
            }
        }),
    );
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Cluster/MemberPromote",
        unary(move |req: pb::MemberPromoteRequest, _| {
            let c = c.clone();
            async move {
                let cmd = Command::MemberPromote { id: req.id };
                let (_, header, members) = changed(c.sequencer.call(cmd).await?)?;
                Ok(pb::MemberPromoteResponse { header, members })
            }
        }),
    );
}

fn member(m: &MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}
