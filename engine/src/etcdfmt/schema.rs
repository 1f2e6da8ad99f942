//! etcd's database layout (the buckets of an etcd 3.4/3.5 `db` file and
//! the encodings of their keys).
//!
//! | bucket            | key                               | value                         |
//! |-------------------|-----------------------------------|-------------------------------|
//! | `key`             | revision: main u64 BE `_` sub u64 BE, then `t` if a tombstone | `mvccpb.KeyValue` |
//! | `meta`            | `consistent_index`, `term`        | u64 BE                        |
//! |                   | `scheduledCompactRev`, `finishedCompactRev` | revision (17 bytes) |
//! | `lease`           | lease id u64 BE                   | `leasepb.Lease`               |
//! | `cluster`         | `clusterVersion`                  | e.g. `3.4.0`                  |
//! | `members`, `members_removed`, `alarm`, `auth`, `authUsers`, `authRoles` | | |

pub const KEY: &[u8] = b"key";
pub const META: &[u8] = b"meta";
pub const LEASE: &[u8] = b"lease";
pub const CLUSTER: &[u8] = b"cluster";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const ALARM: &[u8] = b"alarm";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const AUTH_ROLES: &[u8] = b"authRoles";

/// Every bucket etcd 3.4 and 3.5 create, sorted (the order bbolt keeps).
pub const BUCKETS: [&[u8]; 10] = [
    ALARM,
    AUTH,
    AUTH_ROLES,
    AUTH_USERS,
    CLUSTER,
    KEY,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    META,
];

pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const TERM: &[u8] = b"term";
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
/// etcd 3.5: the Raft membership as JSON (membership is not restored).
pub const CONF_STATE: &[u8] = b"confState";
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";
/// etcd 3.5: a downgrade in progress (cluster state, not restored).
pub const DOWNGRADE: &[u8] = b"downgrade";
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
pub const AUTH_REVISION: &[u8] = b"authRevision";

/// The cluster version a basalt snapshot names: the oldest etcd whose
/// tools and server read it.
pub const WRITTEN_CLUSTER_VERSION: &[u8] = b"3.4.0";

pub const REVISION_LEN: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

/// etcd's revision key: (main, sub), marked if the version is a tombstone.
pub fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(REVISION_LEN + 1);
    out.extend_from_slice(&(main as u64).to_be_bytes());
    out.push(b'_');
    out.extend_from_slice(&(sub as u64).to_be_bytes());
    if tombstone {
        out.push(TOMBSTONE_MARK);
    }
    out
}

/// (main, sub, tombstone) of a revision key.
pub fn parse_revision_key(key: &[u8]) -> Option<(i64, i64, bool)> {
    let tombstone = match key.len() {
        REVISION_LEN => false,
        n if n == REVISION_LEN + 1 && key[REVISION_LEN] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = i64::try_from(u64::from_be_bytes(key[..8].try_into().ok()?)).ok()?;
    let sub = i64::try_from(u64::from_be_bytes(key[9..17].try_into().ok()?)).ok()?;
    Some((main, sub, tombstone))
}

pub fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_round_trip_and_sort_by_revision() {
        let a = revision_key(2, 0, false);
        let b = revision_key(2, 1, true);
        let c = revision_key(256, 0, false);
        assert!(a < b && b < c);
        assert_eq!(parse_revision_key(&b), Some((2, 1, true)));
        assert_eq!(parse_revision_key(&c), Some((256, 0, false)));
        assert_eq!(parse_revision_key(&a[..16]), None);
        let mut bad = a.clone();
        bad.push(b'x');
        assert_eq!(parse_revision_key(&bad), None);
    }

    #[test]
    fn bucket_list_is_sorted() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
