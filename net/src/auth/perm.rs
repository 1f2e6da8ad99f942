//! Whether a user may read or write a key or a range (etcd's
//! `isOpPermitted` with its merged-interval permission cache): the union
//! of the intervals the user's roles grant for the access must cover the
//! whole request. A permission's `range_end` empty is the key alone; `\0`
//! is every key from `key` on; a request's `range_end` `\0` likewise.

use crate::error::Error;
use crate::proto::authpb::permission::Type;

use super::state::AuthState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn granted_by(self, t: i32) -> bool {
        t == Type::Readwrite as i32
            || match self {
                Access::Read => t == Type::Read as i32,
                Access::Write => t == Type::Write as i32,
            }
    }
}

/// The end of an interval: a key (excluded), or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Infinite,
}

/// `[key, end)` as an interval: a single key covers `[key, key\0)`.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    let end = match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            End::Key(next)
        }
        [0] => End::Infinite,
        end => End::Key(end.to_vec()),
    };
    (key.to_vec(), end)
}

impl AuthState {
    /// etcd's check of one key or range for `user` (auth must be on):
    /// root may do anything; others need the range covered.
    pub fn check(
        &self,
        user: &str,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), Error> {
        let Some(u) = self.users.get(user) else {
            return Err(Error::PermissionDenied);
        };
        if self.is_root(user) {
            return Ok(());
        }
        let mut granted: Vec<(Vec<u8>, End)> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter())
            .filter(|p| access.granted_by(p.perm_type))
            .map(|p| interval(&p.key, &p.range_end))
            .collect();
        granted.sort();
        let (start, want) = interval(key, range_end);
        // An empty request range (end before start) asks for nothing, but
        // etcd still wants the start key granted.
        let want = match want {
            End::Key(e) if e <= start => interval(key, &[]).1,
            w => w,
        };
        let mut reached = End::Key(start);
        for (from, to) in granted {
            if reached >= want {
                break;
            }
            if End::Key(from) > reached {
                break;
            }
            if to > reached {
                reached = to;
            }
        }
        if reached >= want {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthChange, Change};
    use crate::proto::authpb;
    use crate::proto::etcdserverpb as pb;

    fn state(perms: &[(&[u8], &[u8], Type)]) -> AuthState {
        let mut s = AuthState::default();
        s.apply(&AuthChange::user_add("u", "h")).unwrap();
        s.apply(&AuthChange::new(Change::RoleAdd(pb::AuthRoleAddRequest {
            name: "r".into(),
        })))
        .unwrap();
        s.apply(&AuthChange::new(Change::UserGrantRole(
            pb::AuthUserGrantRoleRequest {
                user: "u".into(),
                role: "r".into(),
            },
        )))
        .unwrap();
        for (k, e, t) in perms {
            s.apply(&AuthChange::new(Change::RoleGrantPermission(
                pb::AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(authpb::Permission {
                        perm_type: *t as i32,
                        key: k.to_vec(),
                        range_end: e.to_vec(),
                    }),
                },
            )))
            .unwrap();
        }
        s
    }

    #[test]
    fn keys_ranges_prefixes_and_from_key() {
        let s = state(&[
            (b"k", b"", Type::Read),
            (b"a/", b"a0", Type::Readwrite),
            (b"m", b"\0", Type::Write),
        ]);
        let ok = |k: &[u8], e: &[u8], a| s.check("u", k, e, a).is_ok();
        assert!(ok(b"k", b"", Access::Read));
        assert!(!ok(b"k", b"", Access::Write), "read only");
        assert!(!ok(b"k", b"l", Access::Read), "a range beyond the key");
        assert!(!ok(b"k0", b"", Access::Read));
        assert!(ok(b"a/x", b"", Access::Write));
        assert!(ok(b"a/", b"a0", Access::Read), "the whole prefix");
        assert!(!ok(b"a", b"a0", Access::Read), "starts before");
        assert!(ok(b"zzz", b"", Access::Write), "from-key");
        assert!(ok(b"m", b"\0", Access::Write));
        assert!(!ok(b"l", b"\0", Access::Write));
        assert!(!ok(b"m", b"", Access::Read), "write only");
        assert!(
            !ok(b"k", b"", Access::Read) || s.check("nobody", b"k", b"", Access::Read).is_err()
        );
    }

    #[test]
    fn adjacent_grants_cover_a_range_together() {
        let s = state(&[(b"a", b"c", Type::Read), (b"c", b"e", Type::Read)]);
        assert!(s.check("u", b"b", b"d", Access::Read).is_ok());
        assert!(s.check("u", b"a", b"e", Access::Read).is_ok());
        assert!(s.check("u", b"a", b"f", Access::Read).is_err());
        let gap = state(&[(b"a", b"c", Type::Read), (b"d", b"e", Type::Read)]);
        assert!(gap.check("u", b"b", b"d", Access::Read).is_err());
    }
}
