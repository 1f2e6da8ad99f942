//! etcd's Auth service as a server with authentication disabled answers
//! it: AuthStatus says disabled, Authenticate fails as etcd's does.
//! Enabling auth is not supported yet.

use std::rc::Rc;

use crate::error::Error;
use crate::grpc::{unary, Code, Router, Status};
use crate::proto::etcdserverpb as pb;

use super::ServiceContext;

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Auth/AuthStatus",
        unary(move |_: pb::AuthStatusRequest, _| {
            let header = c.empty_header();
            async move {
                Ok(pb::AuthStatusResponse {
                    header: Some(header),
                    enabled: false,
                    auth_revision: 0,
                })
            }
        }),
    );
    r.add(
        "/etcdserverpb.Auth/Authenticate",
        unary(|_: pb::AuthenticateRequest, _| async {
            Err::<pb::AuthenticateResponse, Status>(Error::AuthNotEnabled.into())
        }),
    );
    r.add(
        "/etcdserverpb.Auth/AuthEnable",
        unary(|_: pb::AuthEnableRequest, _| async {
            Err::<pb::AuthEnableResponse, Status>(Status::new(
                Code::Unimplemented,
                "basalt: authentication is not supported yet",
            ))
        }),
    );
    // Disabling auth that is off is a no-op success in etcd.
    let c = ctx.clone();
    r.add(
        "/etcdserverpb.Auth/AuthDisable",
        unary(move |_: pb::AuthDisableRequest, _| {
            let header = c.empty_header();
            async move {
                Ok(pb::AuthDisableResponse {
                    header: Some(header),
                })
            }
        }),
    );
}
