//! etcd's authentication and role-based access control.
//!
//! [`AuthState`] is replicated state: every change (AuthEnable, UserAdd,
//! RoleGrantPermission, …) is a [`AuthChange`] entry of the Raft log,
//! applied in log order on every member by the sequencer, recorded with
//! each checkpoint in the member metadata and carried by snapshots. Each
//! applied change that does something bumps the auth revision, as etcd's
//! `authStore.commitRevision`. Passwords are hashed with bcrypt before a
//! change is proposed: the clear text never reaches the log.
//!
//! [`Tokens`] issues and checks the tokens clients send in the `token`
//! metadata: etcd's `simple` tokens (this member's, expiring after
//! `--auth-token-ttl` without use) or `jwt` tokens (signed, valid on any
//! member holding the key). [`perm`] decides whether a user may read or
//! write a key or a range, as etcd's `isOpPermitted`.
//!
//! ```
//! use basalt_net::auth::{AuthState, Access};
//! use basalt_net::proto::etcdserverpb as pb;
//!
//! let mut s = AuthState::default();
//! s.apply(&basalt_net::auth::AuthChange::user_add("alice", "$2b$…")).unwrap();
//! assert_eq!(s.revision, 1);
//! assert!(s.check("alice", b"k", b"", Access::Read).is_err());
//! # let _ = pb::AuthEnableRequest {};
//! ```

mod caller;
pub mod perm;
mod state;
mod token;

pub use caller::Caller;
pub use perm::Access;
pub use state::{AuthChange, AuthState, Change, Role, TokenAssigned, User, ROOT};
pub use token::{TokenConfig, Tokens, DEFAULT_BCRYPT_COST, DEFAULT_TOKEN_TTL};
