//! etcd's Auth service. Changes go through the log as
//! [`crate::auth::AuthChange`] entries (passwords hashed first, with
//! bcrypt at `--bcrypt-cost`, off this executor's thread); reads answer
//! from a linearizable read view's auth state. Once auth is on, every call
//! but Authenticate and AuthStatus needs root, except that a user may get
//! themselves and the roles they hold (etcd 3.4's `authApplierV3`).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::{AuthChange, Change};
use crate::error::Error;
use crate::grpc::{unary, Metadata, Router, Status};
use crate::proto::etcdserverpb as pb;
use crate::sequencer::{LogEntry, LogRequest, Published, Reply};

use super::{unexpected, ServiceContext};
use crate::auth::Caller;

/// Registers `path` as a call that reads or changes the auth store: the
/// caller is resolved from a linearizable view, then `f` runs.
fn add<Req, Resp, F, Fut>(r: &mut Router, ctx: &Rc<ServiceContext>, path: &str, f: F)
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    F: Fn(Rc<ServiceContext>, Req, Arc<Published>, Caller) -> Fut + 'static,
    Fut: Future<Output = Result<Resp, Status>> + 'static,
{
    let c = ctx.clone();
    let f = Rc::new(f);
    r.add(
        path,
        unary(move |req: Req, meta: Metadata| {
            let (c, f) = (c.clone(), f.clone());
            async move {
                let published = c.read_view(false).await?;
                let caller = c.caller(&meta, &published)?;
                f(c, req, published, caller).await
            }
        }),
    );
}

/// Proposes one change by `caller` and answers with the header it applied
/// under.
async fn change(
    ctx: &ServiceContext,
    caller: &Caller,
    change: Change,
) -> Result<pb::ResponseHeader, Status> {
    let entry = LogEntry::new(LogRequest::Auth(AuthChange::new(change))).by(caller);
    match ctx.propose(entry).await? {
        Reply::Done(header) => Ok(header),
        _ => Err(unexpected("an auth change")),
    }
}

/// A bcrypt hash of `password` at `cost`, computed off the executor (a
/// hash takes tens of milliseconds at etcd's default cost).
async fn hash(password: String, cost: u32) -> Result<String, Status> {
    glommio::executor()
        .spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| Error::Config(format!("bcrypt: {e}")).into())
}

async fn verify(password: String, hash: String) -> bool {
    glommio::executor()
        .spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
}

pub fn register(r: &mut Router, ctx: &Rc<ServiceContext>) {
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/AuthStatus",
        |_, _: pb::AuthStatusRequest, p, _| async move {
            Ok(pb::AuthStatusResponse {
                header: Some(p.header()),
                enabled: p.auth.enabled,
                auth_revision: p.auth.revision,
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/Authenticate",
        |c, req: pb::AuthenticateRequest, p, _| async move { authenticate(c, req, p).await },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/AuthEnable",
        |c, _: pb::AuthEnableRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::Enable(pb::AuthEnableRequest {})).await?;
            Ok(pb::AuthEnableResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/AuthDisable",
        |c, _: pb::AuthDisableRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::Disable(pb::AuthDisableRequest {})).await?;
            Ok(pb::AuthDisableResponse {
                header: Some(header),
            })
        },
    );
    register_users(r, ctx);
    register_roles(r, ctx);
}

/// etcd's Authenticate: the password checked against the applied state
/// (slowly, off this executor), then a token from this member's issuer.
async fn authenticate(
    c: Rc<ServiceContext>,
    req: pb::AuthenticateRequest,
    p: Arc<Published>,
) -> Result<pb::AuthenticateResponse, Status> {
    if !p.auth.enabled {
        return Err(Error::AuthNotEnabled.into());
    }
    let Some(user) = p.auth.users.get(&req.name).filter(|u| !u.no_password) else {
        tracing::warn!(user = %req.name, "authentication failed: no such user with a password");
        return Err(Error::AuthFailed.into());
    };
    let set_at = user.password_revision;
    if !verify(req.password, user.password_hash.clone()).await {
        tracing::warn!(user = %req.name, "authentication failed: wrong password");
        return Err(Error::AuthFailed.into());
    }
    // The password may have changed while it was checked.
    let now = c.views.latest()?;
    if now.auth.users.get(&req.name).map(|u| u.password_revision) != Some(set_at) {
        return Err(Error::AuthFailed.into());
    }
    if !c.tokens.is_simple() {
        let token = c.tokens.issue(&now.auth, &req.name)?;
        return Ok(pb::AuthenticateResponse {
            header: Some(now.header()),
            token,
        });
    }
    // Through the log, so that every member takes the token.
    let token = c.tokens.new_simple();
    let entry = LogEntry::new(LogRequest::TokenAssigned(crate::auth::TokenAssigned {
        user: req.name,
        token: token.clone(),
        password_revision: set_at,
    }));
    match c.propose(entry).await? {
        Reply::Done(header) => Ok(pb::AuthenticateResponse {
            header: Some(header),
            token,
        }),
        _ => Err(unexpected("Authenticate")),
    }
}

fn register_users(r: &mut Router, ctx: &Rc<ServiceContext>) {
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserAdd",
        |c, mut req: pb::AuthUserAddRequest, _, caller| async move {
            caller.check_admin()?;
            if req.name.is_empty() {
                return Err(Error::UserEmpty.into());
            }
            let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
            let password = std::mem::take(&mut req.password);
            if !no_password && req.hashed_password.is_empty() {
                req.hashed_password = hash(password, c.bcrypt_cost).await?;
            }
            let header = change(&c, &caller, Change::UserAdd(req)).await?;
            Ok(pb::AuthUserAddResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserDelete",
        |c, req: pb::AuthUserDeleteRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::UserDelete(req)).await?;
            Ok(pb::AuthUserDeleteResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserChangePassword",
        |c, mut req: pb::AuthUserChangePasswordRequest, p, caller| async move {
            caller.check_admin()?;
            if !p.auth.users.contains_key(&req.name) {
                return Err(Error::UserNotFound.into());
            }
            let password = std::mem::take(&mut req.password);
            if req.hashed_password.is_empty() {
                req.hashed_password = hash(password, c.bcrypt_cost).await?;
            }
            let header = change(&c, &caller, Change::UserChangePassword(req)).await?;
            Ok(pb::AuthUserChangePasswordResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserGrantRole",
        |c, req: pb::AuthUserGrantRoleRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::UserGrantRole(req)).await?;
            Ok(pb::AuthUserGrantRoleResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserRevokeRole",
        |c, req: pb::AuthUserRevokeRoleRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::UserRevokeRole(req)).await?;
            Ok(pb::AuthUserRevokeRoleResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserGet",
        |_, req: pb::AuthUserGetRequest, p, caller| async move {
            if caller.name() != Some(req.name.as_str()) {
                caller.check_admin()?;
            }
            let user = p.auth.users.get(&req.name).ok_or(Error::UserNotFound)?;
            Ok(pb::AuthUserGetResponse {
                header: Some(p.header()),
                roles: user.roles.clone(),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/UserList",
        |_, _: pb::AuthUserListRequest, p, caller| async move {
            caller.check_admin()?;
            Ok(pb::AuthUserListResponse {
                header: Some(p.header()),
                users: p.auth.users.keys().cloned().collect(),
            })
        },
    );
}

fn register_roles(r: &mut Router, ctx: &Rc<ServiceContext>) {
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/RoleAdd",
        |c, req: pb::AuthRoleAddRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::RoleAdd(req)).await?;
            Ok(pb::AuthRoleAddResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/RoleDelete",
        |c, req: pb::AuthRoleDeleteRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::RoleDelete(req)).await?;
            Ok(pb::AuthRoleDeleteResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/RoleGrantPermission",
        |c, req: pb::AuthRoleGrantPermissionRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::RoleGrantPermission(req)).await?;
            Ok(pb::AuthRoleGrantPermissionResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/RoleRevokePermission",
        |c, req: pb::AuthRoleRevokePermissionRequest, _, caller| async move {
            caller.check_admin()?;
            let header = change(&c, &caller, Change::RoleRevokePermission(req)).await?;
            Ok(pb::AuthRoleRevokePermissionResponse {
                header: Some(header),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/RoleGet",
        |_, req: pb::AuthRoleGetRequest, p, caller| async move {
            let holds = caller
                .name()
                .and_then(|n| p.auth.users.get(n))
                .is_some_and(|u| u.roles.contains(&req.role));
            if !holds {
                caller.check_admin()?;
            }
            let role = p.auth.roles.get(&req.role).ok_or(Error::RoleNotFound)?;
            Ok(pb::AuthRoleGetResponse {
                header: Some(p.header()),
                perm: role.perms.clone(),
            })
        },
    );
    add(
        r,
        ctx,
        "/etcdserverpb.Auth/RoleList",
        |_, _: pb::AuthRoleListRequest, p, caller| async move {
            caller.check_admin()?;
            Ok(pb::AuthRoleListResponse {
                header: Some(p.header()),
                roles: p.auth.roles.keys().cloned().collect(),
            })
        },
    );
}
