//! etcd's Cluster service for a single member: MemberList from the
//! configured identity; membership changes are not supported yet.

use std::rc::Rc;

use crate::grpc::{unary, Code, Router, Status};
use crate::member::MemberInfo;
use crate::proto::etcdserverpb as pb;

use super::ServiceContext;

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Cluster/MemberList",
        unary(move |_: pb::MemberListRequest, _| {
            let c = c.clone();
            async move {
                // The membership as applied (with the client URLs members
                // published), and etcd's raft_term in the header.
                match c.sequencer.call(crate::sequencer::Command::Members).await? {
                    crate::sequencer::Reply::Members(cluster, header) => {
                        Ok(pb::MemberListResponse {
                            header: Some(pb::ResponseHeader {
                                revision: 0,
                                ..header
                            }),
                            members: cluster.members.iter().map(member).collect(),
                        })
                    }
                    _ => Err(Status::new(
                        Code::Internal,
                        "unexpected reply to MemberList",
                    )),
                }
            }
        }),
    );
    for method in ["MemberAdd", "MemberRemove", "MemberUpdate", "MemberPromote"] {
        r.add(
            &format!("/etcdserverpb.Cluster/{method}"),
            Rc::new(
                move |_: crate::grpc::Metadata,
                      _: crate::grpc::RequestStream,
                      _: crate::grpc::ResponseSink| {
                    Box::pin(async move {
                        Err(Status::new(
                            Code::Unimplemented,
                            format!("basalt: {method} is not supported yet (single member)"),
                        ))
                    }) as crate::grpc::HandlerFuture
                },
            ),
        );
    }
}

fn member(m: &MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: false,
    }
}
