//! Who makes a call, and whether they may, once auth is on: the user a
//! `token` in the call's metadata names (or, under `--client-cert-auth`,
//! the CN of the client certificate when there is no token), checked as
//! etcd checks each request (`auth/store.go` `isOpPermitted`,
//! `etcdserver/apply_auth.go`): per key or range for KV, on every compare
//! and every operation of every branch for Txn, root for the rest.
//!
//! With auth off every call is allowed and a token is ignored.

use std::sync::Arc;

use super::{Access, AuthState};
use crate::error::Error;
use crate::grpc::{Code, Metadata, Status};
use crate::proto::etcdserverpb as pb;

/// The metadata key etcd's clients send their token under.
const TOKEN: &str = "token";
/// The key etcd's gRPC gateway uses.
const TOKEN_GATEWAY: &str = "authorization";

pub struct Caller {
    pub state: Arc<AuthState>,
    /// The user and the auth revision the call's credentials carry.
    pub user: Option<(String, u64)>,
}

impl Caller {
    /// The caller of a call with `meta`, against `state`; a token that is
    /// no longer (or never was) valid is etcd's `invalid auth token`.
    pub fn of(
        meta: &Metadata,
        state: &Arc<AuthState>,
        tokens: &super::Tokens,
    ) -> Result<Caller, Error> {
        let mut caller = Caller {
            state: state.clone(),
            user: None,
        };
        if !state.enabled {
            return Ok(caller);
        }
        let token = meta.get(TOKEN).or_else(|| meta.get(TOKEN_GATEWAY));
        if let Some(token) = token {
            caller.user = Some(tokens.verify(token, state)?);
        } else if let Some(cn) = meta.client_cn() {
            caller.user = Some((cn.to_string(), state.revision));
        }
        Ok(caller)
    }

    /// The caller a log entry was proposed for, judged again by the auth
    /// state where the entry applies (etcd's `authApplierV3`): a change
    /// of users or roles committed in between counts.
    pub fn of_entry(user: &str, auth_revision: u64, state: &Arc<AuthState>) -> Caller {
        Caller {
            state: state.clone(),
            user: (!user.is_empty()).then(|| (user.to_string(), auth_revision)),
        }
    }

    fn user(&self) -> Result<&str, Error> {
        let (user, revision) = self.user.as_ref().ok_or(Error::UserEmpty)?;
        if *revision < self.state.revision {
            return Err(Error::AuthOldRevision);
        }
        Ok(user)
    }

    /// May the caller access `[key, range_end)`?
    pub fn check(&self, key: &[u8], range_end: &[u8], access: Access) -> Result<(), Error> {
        if !self.state.enabled {
            return Ok(());
        }
        let user = self.user()?;
        self.state.check(user, key, range_end, access)
    }

    /// Root only (etcd's `IsAdminPermitted`).
    pub fn check_admin(&self) -> Result<(), Error> {
        if !self.state.enabled {
            return Ok(());
        }
        self.state
            .check_admin(self.user.as_ref().map(|(u, _)| u.as_str()))
    }

    /// Root only, refused as etcd's Maintenance refuses (Defragment,
    /// Hash, HashKV, Snapshot, MoveLeader): the auth package's own error,
    /// not converted to a gRPC code (`Unknown`, `auth: …`).
    pub fn check_maintenance(&self) -> Result<(), Status> {
        self.check_admin().map_err(|e| {
            let text = e.to_string();
            let bare = text.strip_prefix("etcdserver: ").unwrap_or(&text);
            Status::new(Code::Unknown, format!("auth: {bare}"))
        })
    }

    /// The user's own name, when they ask about themselves.
    pub fn name(&self) -> Option<&str> {
        self.user.as_ref().map(|(u, _)| u.as_str())
    }

    pub fn range(&self, r: &pb::RangeRequest) -> Result<(), Error> {
        self.check(&r.key, &r.range_end, Access::Read)
    }

    /// etcd's `checkPutPermitted` (without the lease's other keys).
    pub fn put(&self, r: &pb::PutRequest) -> Result<(), Error> {
        self.check(&r.key, &[], Access::Write)?;
        if r.prev_kv {
            self.check(&r.key, &[], Access::Read)?;
        }
        Ok(())
    }

    pub fn delete_range(&self, r: &pb::DeleteRangeRequest) -> Result<(), Error> {
        self.check(&r.key, &r.range_end, Access::Write)?;
        if r.prev_kv {
            self.check(&r.key, &r.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// etcd's `checkTxnReqsPermission`: read on every compare, then every
    /// operation of both branches, nested txns included.
    pub fn txn(&self, t: &pb::TxnRequest) -> Result<(), Error> {
        if !self.state.enabled {
            return Ok(());
        }
        for c in &t.compare {
            self.check(&c.key, &c.range_end, Access::Read)?;
        }
        use pb::request_op::Request;
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestRange(r)) => self.range(r)?,
                Some(Request::RequestPut(r)) => self.put(r)?,
                Some(Request::RequestDeleteRange(r)) => self.delete_range(r)?,
                Some(Request::RequestTxn(t)) => self.txn(t)?,
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthChange, Change, TokenConfig, Tokens, ROOT};
    use crate::proto::authpb;

    fn enabled() -> AuthState {
        let mut s = AuthState::default();
        for c in [
            AuthChange::user_add(ROOT, "h"),
            AuthChange::user_add("u", "h"),
            AuthChange::new(Change::RoleAdd(pb::AuthRoleAddRequest { name: "r".into() })),
            AuthChange::new(Change::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: ROOT.into(),
                role: ROOT.into(),
            })),
            AuthChange::new(Change::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: "u".into(),
                role: "r".into(),
            })),
            AuthChange::new(Change::RoleGrantPermission(
                pb::AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(authpb::Permission {
                        perm_type: authpb::permission::Type::Readwrite as i32,
                        key: b"a".to_vec(),
                        range_end: b"b".to_vec(),
                    }),
                },
            )),
            AuthChange::new(Change::Enable(pb::AuthEnableRequest {})),
        ] {
            s.apply(&c).unwrap();
        }
        s
    }

    fn meta(token: Option<&str>) -> Metadata {
        let mut headers = http::HeaderMap::new();
        if let Some(t) = token {
            headers.insert(TOKEN, t.parse().unwrap());
        }
        Metadata {
            path: "/etcdserverpb.KV/Txn".into(),
            headers,
            deadline: None,
        }
    }

    fn put(key: &[u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn txn_is_checked_on_every_branch_and_compare() {
        let state = Arc::new(enabled());
        let tokens = Tokens::new(&TokenConfig::default()).unwrap();
        let t = tokens.issue(&state, "u").unwrap();
        let c = Caller::of(&meta(Some(&t)), &state, &tokens).unwrap();
        let ok = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"a1".to_vec(),
                ..Default::default()
            }],
            success: vec![put(b"a2")],
            failure: vec![put(b"a3")],
        };
        assert!(c.txn(&ok).is_ok());
        let mut bad_failure = ok.clone();
        bad_failure.failure.push(put(b"z"));
        assert!(matches!(c.txn(&bad_failure), Err(Error::PermissionDenied)));
        let mut bad_compare = ok.clone();
        bad_compare.compare[0].key = b"z".to_vec();
        assert!(matches!(c.txn(&bad_compare), Err(Error::PermissionDenied)));
        let mut nested = ok.clone();
        nested.success.push(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(bad_failure)),
        });
        assert!(matches!(c.txn(&nested), Err(Error::PermissionDenied)));
        assert!(matches!(c.check_admin(), Err(Error::PermissionDenied)));
    }

    #[test]
    fn no_token_is_an_empty_user_and_a_bad_one_invalid() {
        let state = Arc::new(enabled());
        let tokens = Tokens::new(&TokenConfig::default()).unwrap();
        let anonymous = Caller::of(&meta(None), &state, &tokens).unwrap();
        assert!(matches!(
            anonymous.check(b"a", b"", Access::Read),
            Err(Error::UserEmpty)
        ));
        assert!(matches!(
            Caller::of(&meta(Some("x.1")), &state, &tokens),
            Err(Error::InvalidAuthToken)
        ));
        let off = Arc::new(AuthState::default());
        let c = Caller::of(&meta(Some("x.1")), &off, &tokens).unwrap();
        assert!(c.check(b"z", b"", Access::Write).is_ok(), "auth off");
        let e = anonymous.check_maintenance().unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::Unknown, "auth: user name is empty")
        );
    }
}
