//! The users, roles and switch of etcd's auth store, and the log entry that
//! changes them. [`AuthState::apply`] follows etcd's `auth/store.go` rule
//! by rule (checks, their order, their errors); a change that fails
//! changes nothing and fails again identically on every member and on
//! replay, since it depends on nothing but the state and the entry.

use std::collections::BTreeMap;

use prost::Message;

use crate::error::Error;
use crate::proto::authpb;
use crate::proto::etcdserverpb as pb;

/// The user and the role that may do anything (etcd's `rootUser`,
/// `rootRole`).
pub const ROOT: &str = "root";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// bcrypt hash; empty for a `--no-password` user.
    pub password_hash: String,
    pub no_password: bool,
    /// Sorted, as etcd keeps them.
    pub roles: Vec<String>,
    /// The auth revision at which the password was last set: a simple
    /// token issued before it is no longer valid (etcd invalidates a
    /// user's tokens when the password changes or the user is deleted).
    pub password_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// Sorted by key, as etcd keeps them.
    pub perms: Vec<authpb::Permission>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthState {
    pub enabled: bool,
    /// Bumped by every change that changed something (etcd's auth
    /// revision, reported by AuthStatus).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

/// One change of the auth state, as a log entry. Field numbers are
/// basalt's on-disk format: never reuse one.
#[derive(Clone, PartialEq, Message)]
pub struct AuthChange {
    #[prost(oneof = "Change", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub change: Option<Change>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Change {
    #[prost(message, tag = "1")]
    Enable(pb::AuthEnableRequest),
    #[prost(message, tag = "2")]
    Disable(pb::AuthDisableRequest),
    /// `password` always empty: the hash is in `hashedPassword`.
    #[prost(message, tag = "3")]
    UserAdd(pb::AuthUserAddRequest),
    #[prost(message, tag = "4")]
    UserDelete(pb::AuthUserDeleteRequest),
    /// `password` always empty: the hash is in `hashedPassword`.
    #[prost(message, tag = "5")]
    UserChangePassword(pb::AuthUserChangePasswordRequest),
    #[prost(message, tag = "6")]
    UserGrantRole(pb::AuthUserGrantRoleRequest),
    #[prost(message, tag = "7")]
    UserRevokeRole(pb::AuthUserRevokeRoleRequest),
    #[prost(message, tag = "8")]
    RoleAdd(pb::AuthRoleAddRequest),
    #[prost(message, tag = "9")]
    RoleDelete(pb::AuthRoleDeleteRequest),
    #[prost(message, tag = "10")]
    RoleGrantPermission(pb::AuthRoleGrantPermissionRequest),
    #[prost(message, tag = "11")]
    RoleRevokePermission(pb::AuthRoleRevokePermissionRequest),
}

/// A simple token Authenticate issued, for every member to accept (etcd's
/// `InternalAuthenticateRequest`). Field numbers are basalt's on-disk
/// format: never reuse one.
#[derive(Clone, PartialEq, Message)]
pub struct TokenAssigned {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(string, tag = "2")]
    pub token: String,
    /// Of the password checked: a token for an older one is not assigned.
    #[prost(uint64, tag = "3")]
    pub password_revision: u64,
}

impl AuthChange {
    pub fn new(change: Change) -> AuthChange {
        AuthChange {
            change: Some(change),
        }
    }

    /// A user with a password already hashed.
    pub fn user_add(name: &str, hash: &str) -> AuthChange {
        AuthChange::new(Change::UserAdd(pb::AuthUserAddRequest {
            name: name.into(),
            hashed_password: hash.into(),
            ..Default::default()
        }))
    }
}

impl AuthState {
    /// Applies one change; `Ok(true)` when it changed the state (and the
    /// revision), `Ok(false)` for etcd's silent no-ops (enabling auth that
    /// is on, granting a role the user has).
    pub fn apply(&mut self, change: &AuthChange) -> Result<bool, Error> {
        let Some(change) = &change.change else {
            return Err(Error::Wal("auth entry without a change".into()));
        };
        let changed = match change {
            Change::Enable(_) => self.enable()?,
            Change::Disable(_) => std::mem::replace(&mut self.enabled, false),
            Change::UserAdd(r) => self.user_add(r)?,
            Change::UserDelete(r) => {
                if self.enabled && r.name == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.users.remove(&r.name).ok_or(Error::UserNotFound)?;
                true
            }
            Change::UserChangePassword(r) => {
                let revision = self.revision + 1;
                let user = self.users.get_mut(&r.name).ok_or(Error::UserNotFound)?;
                user.password_hash = r.hashed_password.clone();
                user.password_revision = revision;
                true
            }
            Change::UserGrantRole(r) => self.grant_role(&r.user, &r.role)?,
            Change::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                let user = self.users.get_mut(&r.name).ok_or(Error::UserNotFound)?;
                let at = user
                    .roles
                    .iter()
                    .position(|x| *x == r.role)
                    .ok_or(Error::RoleNotGranted)?;
                user.roles.remove(at);
                true
            }
            Change::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(Error::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(Error::RoleAlreadyExist);
                }
                self.roles.insert(r.name.clone(), Role::default());
                true
            }
            Change::RoleDelete(r) => {
                if self.enabled && r.role == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.roles.remove(&r.role).ok_or(Error::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.retain(|x| *x != r.role);
                }
                true
            }
            Change::RoleGrantPermission(r) => {
                let role = self.roles.get_mut(&r.name).ok_or(Error::RoleNotFound)?;
                let perm = r.perm.clone().unwrap_or_default();
                match role
                    .perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => {
                        let at = role.perms.partition_point(|p| p.key <= perm.key);
                        role.perms.insert(at, perm);
                    }
                }
                true
            }
            Change::RoleRevokePermission(r) => {
                let role = self.roles.get_mut(&r.role).ok_or(Error::RoleNotFound)?;
                let at = role
                    .perms
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(Error::PermissionNotGranted)?;
                role.perms.remove(at);
                true
            }
        };
        if changed {
            self.revision += 1;
        }
        Ok(changed)
    }

    fn enable(&mut self) -> Result<bool, Error> {
        if self.enabled {
            return Ok(false);
        }
        let root = self.users.get(ROOT).ok_or(Error::RootUserNotExist)?;
        if !root.roles.iter().any(|r| r == ROOT) {
            return Err(Error::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(true)
    }

    fn user_add(&mut self, r: &pb::AuthUserAddRequest) -> Result<bool, Error> {
        if r.name.is_empty() {
            return Err(Error::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(Error::UserAlreadyExist);
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        self.users.insert(
            r.name.clone(),
            User {
                password_hash: r.hashed_password.clone(),
                no_password,
                roles: Vec::new(),
                password_revision: self.revision + 1,
            },
        );
        Ok(true)
    }

    fn grant_role(&mut self, name: &str, role: &str) -> Result<bool, Error> {
        // etcd lets the root role be granted before it exists.
        if role != ROOT && !self.roles.contains_key(role) {
            if !self.users.contains_key(name) {
                return Err(Error::UserNotFound);
            }
            return Err(Error::RoleNotFound);
        }
        let user = self.users.get_mut(name).ok_or(Error::UserNotFound)?;
        match user.roles.binary_search_by(|x| x.as_str().cmp(role)) {
            Ok(_) => Ok(false),
            Err(at) => {
                user.roles.insert(at, role.to_string());
                Ok(true)
            }
        }
    }

    /// Whether `user` holds the root role (etcd's `hasRootRole`).
    pub fn is_root(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    /// etcd's `IsAdminPermitted`: anyone while auth is off, else a user
    /// with the root role.
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let user = user.filter(|u| !u.is_empty()).ok_or(Error::UserEmpty)?;
        if !self.users.contains_key(user) {
            return Err(Error::UserNotFound);
        }
        if !self.is_root(user) {
            return Err(Error::PermissionDenied);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        self.record().encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<AuthState, Error> {
        let r = Record::decode(bytes)
            .map_err(|e| Error::Wal(format!("undecodable auth state: {e}")))?;
        Ok(AuthState::from_record(r))
    }

    fn record(&self) -> Record {
        Record {
            enabled: self.enabled,
            revision: self.revision,
            users: self
                .users
                .iter()
                .map(|(name, u)| UserRecord {
                    name: name.clone(),
                    password_hash: u.password_hash.clone(),
                    no_password: u.no_password,
                    roles: u.roles.clone(),
                    password_revision: u.password_revision,
                })
                .collect(),
            roles: self
                .roles
                .iter()
                .map(|(name, r)| RoleRecord {
                    name: name.clone(),
                    perms: r.perms.clone(),
                })
                .collect(),
        }
    }

    fn from_record(r: Record) -> AuthState {
        AuthState {
            enabled: r.enabled,
            revision: r.revision,
            users: r
                .users
                .into_iter()
                .map(|u| {
                    (
                        u.name,
                        User {
                            password_hash: u.password_hash,
                            no_password: u.no_password,
                            roles: u.roles,
                            password_revision: u.password_revision,
                        },
                    )
                })
                .collect(),
            roles: r
                .roles
                .into_iter()
                .map(|r| (r.name, Role { perms: r.perms }))
                .collect(),
        }
    }
}

/// The state on disk (in the member metadata). Field numbers are basalt's
/// format: never reuse one.
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(bool, tag = "1")]
    enabled: bool,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(message, repeated, tag = "3")]
    users: Vec<UserRecord>,
    #[prost(message, repeated, tag = "4")]
    roles: Vec<RoleRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct UserRecord {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    password_hash: String,
    #[prost(bool, tag = "3")]
    no_password: bool,
    #[prost(string, repeated, tag = "4")]
    roles: Vec<String>,
    #[prost(uint64, tag = "5")]
    password_revision: u64,
}

#[derive(Clone, PartialEq, Message)]
struct RoleRecord {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    perms: Vec<authpb::Permission>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: &str, role: &str) -> AuthChange {
        AuthChange::new(Change::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
    }

    fn role_add(name: &str) -> AuthChange {
        AuthChange::new(Change::RoleAdd(pb::AuthRoleAddRequest {
            name: name.into(),
        }))
    }

    fn perm(role: &str, key: &[u8], end: &[u8], t: authpb::permission::Type) -> AuthChange {
        AuthChange::new(Change::RoleGrantPermission(
            pb::AuthRoleGrantPermissionRequest {
                name: role.into(),
                perm: Some(authpb::Permission {
                    perm_type: t as i32,
                    key: key.to_vec(),
                    range_end: end.to_vec(),
                }),
            },
        ))
    }

    #[test]
    fn enable_needs_root_with_root_role_as_etcd() {
        let mut s = AuthState::default();
        let enable = AuthChange::new(Change::Enable(pb::AuthEnableRequest {}));
        assert!(matches!(s.apply(&enable), Err(Error::RootUserNotExist)));
        s.apply(&AuthChange::user_add(ROOT, "h")).unwrap();
        assert!(matches!(s.apply(&enable), Err(Error::RootRoleNotExist)));
        // The root role may be granted before it exists.
        assert!(s.apply(&grant(ROOT, ROOT)).unwrap());
        assert!(
            !s.apply(&grant(ROOT, ROOT)).unwrap(),
            "granted twice: no-op"
        );
        assert!(s.apply(&enable).unwrap());
        assert!(!s.apply(&enable).unwrap(), "enabled twice: no-op");
        assert_eq!(s.revision, 3);
        let delete_root = AuthChange::new(Change::UserDelete(pb::AuthUserDeleteRequest {
            name: ROOT.into(),
        }));
        assert!(matches!(s.apply(&delete_root), Err(Error::InvalidAuthMgmt)));
        assert_eq!(s.revision, 3, "a failed change leaves the revision");
    }

    #[test]
    fn users_and_roles_follow_etcds_rules() {
        let mut s = AuthState::default();
        assert!(matches!(
            s.apply(&AuthChange::user_add("", "h")),
            Err(Error::UserEmpty)
        ));
        s.apply(&AuthChange::user_add("u", "h")).unwrap();
        assert!(matches!(
            s.apply(&AuthChange::user_add("u", "h")),
            Err(Error::UserAlreadyExist)
        ));
        assert!(matches!(
            s.apply(&grant("u", "r")),
            Err(Error::RoleNotFound)
        ));
        assert!(matches!(
            s.apply(&grant("x", "r")),
            Err(Error::UserNotFound)
        ));
        s.apply(&role_add("r")).unwrap();
        assert!(matches!(
            s.apply(&role_add("r")),
            Err(Error::RoleAlreadyExist)
        ));
        s.apply(&role_add("a")).unwrap();
        s.apply(&grant("u", "r")).unwrap();
        s.apply(&grant("u", "a")).unwrap();
        assert_eq!(s.users["u"].roles, ["a", "r"], "kept sorted");
        use authpb::permission::Type;
        s.apply(&perm("r", b"z", b"", Type::Read)).unwrap();
        s.apply(&perm("r", b"b", b"c", Type::Read)).unwrap();
        s.apply(&perm("r", b"b", b"c", Type::Write)).unwrap();
        let keys: Vec<_> = s.roles["r"].perms.iter().map(|p| p.key.clone()).collect();
        assert_eq!(keys, [b"b".to_vec(), b"z".to_vec()], "sorted, replaced");
        assert_eq!(s.roles["r"].perms[0].perm_type, Type::Write as i32);
        let revoke = |key: &[u8]| {
            AuthChange::new(Change::RoleRevokePermission(
                pb::AuthRoleRevokePermissionRequest {
                    role: "r".into(),
                    key: key.to_vec(),
                    range_end: Vec::new(),
                },
            ))
        };
        assert!(matches!(
            s.apply(&revoke(b"b")),
            Err(Error::PermissionNotGranted)
        ));
        s.apply(&revoke(b"z")).unwrap();
        s.apply(&AuthChange::new(Change::RoleDelete(
            pb::AuthRoleDeleteRequest { role: "r".into() },
        )))
        .unwrap();
        assert_eq!(s.users["u"].roles, ["a"], "a deleted role leaves its users");
        let revoke_role = AuthChange::new(Change::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        }));
        assert!(matches!(s.apply(&revoke_role), Err(Error::RoleNotGranted)));
        let back = AuthState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        assert!(AuthState::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn admin_is_root_once_enabled() {
        let mut s = AuthState::default();
        assert!(s.check_admin(None).is_ok());
        s.apply(&AuthChange::user_add(ROOT, "h")).unwrap();
        s.apply(&AuthChange::user_add("u", "h")).unwrap();
        s.apply(&grant(ROOT, ROOT)).unwrap();
        s.apply(&AuthChange::new(Change::Enable(pb::AuthEnableRequest {})))
            .unwrap();
        assert!(matches!(s.check_admin(None), Err(Error::UserEmpty)));
        assert!(matches!(
            s.check_admin(Some("u")),
            Err(Error::PermissionDenied)
        ));
        assert!(matches!(s.check_admin(Some("x")), Err(Error::UserNotFound)));
        assert!(s.check_admin(Some(ROOT)).is_ok());
    }
}

/// The auth store in etcd's snapshot buckets, and back (issue 15: a
/// snapshot of etcd restores in basalt with its users and roles, and one
/// of basalt in etcd).
impl AuthState {
    pub fn to_etcd(&self) -> basalt_engine::etcdfmt::SnapshotAuth {
        basalt_engine::etcdfmt::SnapshotAuth {
            enabled: self.enabled,
            revision: self.revision,
            users: self
                .users
                .iter()
                .map(|(name, u)| {
                    let user = authpb::User {
                        name: name.clone().into_bytes(),
                        password: u.password_hash.clone().into_bytes(),
                        roles: u.roles.clone(),
                        options: u
                            .no_password
                            .then_some(authpb::UserAddOptions { no_password: true }),
                    };
                    (name.clone().into_bytes(), user.encode_to_vec())
                })
                .collect(),
            roles: self
                .roles
                .iter()
                .map(|(name, r)| {
                    let role = authpb::Role {
                        name: name.clone().into_bytes(),
                        key_permission: r.perms.clone(),
                    };
                    (name.clone().into_bytes(), role.encode_to_vec())
                })
                .collect(),
        }
    }

    pub fn from_etcd(s: &basalt_engine::etcdfmt::SnapshotAuth) -> Result<AuthState, Error> {
        let bad = |what: &str, e: prost::DecodeError| {
            Error::SnapshotFile(format!("undecodable {what} in the auth buckets: {e}"))
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut state = AuthState {
            enabled: s.enabled,
            revision: s.revision,
            ..AuthState::default()
        };
        for (_, v) in &s.users {
            let u = authpb::User::decode(v.as_slice()).map_err(|e| bad("user", e))?;
            let mut roles = u.roles;
            roles.sort();
            state.users.insert(
                text(&u.name),
                User {
                    password_hash: text(&u.password),
                    no_password: u.options.is_some_and(|o| o.no_password),
                    roles,
                    password_revision: 0,
                },
            );
        }
        for (_, v) in &s.roles {
            let r = authpb::Role::decode(v.as_slice()).map_err(|e| bad("role", e))?;
            let mut perms = r.key_permission;
            perms.sort_by(|a, b| a.key.cmp(&b.key));
            state.roles.insert(text(&r.name), Role { perms });
        }
        Ok(state)
    }
}

#[cfg(test)]
mod etcd_tests {
    use super::*;

    #[test]
    fn etcd_buckets_round_trip() {
        let mut s = AuthState::default();
        s.apply(&AuthChange::user_add(ROOT, "$2a$10$x")).unwrap();
        s.apply(&AuthChange::new(Change::UserGrantRole(
            pb::AuthUserGrantRoleRequest {
                user: ROOT.into(),
                role: ROOT.into(),
            },
        )))
        .unwrap();
        s.apply(&AuthChange::new(Change::RoleAdd(pb::AuthRoleAddRequest {
            name: "r".into(),
        })))
        .unwrap();
        s.apply(&AuthChange::new(Change::Enable(pb::AuthEnableRequest {})))
            .unwrap();
        let mut back = AuthState::from_etcd(&s.to_etcd()).unwrap();
        for u in back.users.values_mut() {
            u.password_revision = 0;
        }
        let mut want = s.clone();
        for u in want.users.values_mut() {
            u.password_revision = 0;
        }
        assert_eq!(back, want);
    }
}
