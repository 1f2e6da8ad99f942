//! How the store lays its state out in one ordered byte map (the B+tree).
//!
//! Every tree key starts with a one-byte space tag:
//!
//! | space | tree key                         | value                                   |
//! |-------|----------------------------------|-----------------------------------------|
//! | `v`   | `v` esc(user key) rev(16)        | a [`VersionRecord`] (put or tombstone)  |
//! | `l`   | `l` user key                     | a [`LiveRecord`]: the key's newest put, if not deleted |
//! | `r`   | `r` rev(16)                      | user key (revision-ordered change log)  |
//! | `L`   | `L` lease id(8)                  | TTL (8)                                 |
//! | `a`   | `a` lease id(8) user key         | empty (key attached to lease)           |
//! | `m`   | `m` name                         | store meta (current / compact revision) |
//! | 0x00  | 0x00 `shards`                    | shard count (layout, not logical state) |
//!
//! The `v` space lives in the shard trees, the others in the index tree
//! (see `shard`).
//!
//! `v` orders versions by (user key, revision), so a range read at any
//! revision is one sequential scan. `esc` makes the user key prefix-free
//! while keeping its order (0x00 → 0x00 0xFF, then the terminator 0x00 0x01),
//! so `"a"`'s versions sort before `"a\0"` and `"ab"`.
//! `l` holds exactly the keys live at the current revision: counting a range
//! there is the B+tree's O(log n) count. `r` makes watch catch-up read only
//! the revisions asked for.

use std::ops::Bound;

use super::error::MvccError;
use super::revision::Revision;

pub const VERSION: u8 = b'v';
pub const LIVE: u8 = b'l';
pub const CHANGE: u8 = b'r';
pub const LEASE: u8 = b'L';
pub const ATTACHED: u8 = b'a';

/// Where the store records its layout (the shard count), under tag 0x00,
/// below every space of the logical state: [`logical_bounds`] leaves it
/// out, so hashes and snapshot streams do not depend on the layout.
pub const LAYOUT_SHARDS: &[u8] = b"\0shards";

/// Where a replicated member records what it needs to re-enter Raft at a
/// checkpoint (the term of the applied index, the membership): beside the
/// layout, outside the logical state, so hashes and snapshot streams are
/// equal on members whatever their membership records say.
pub const MEMBER_META: &[u8] = b"\0member";

pub const META_CURRENT_REVISION: &[u8] = b"mcurrent_revision";
pub const META_COMPACT_REVISION: &[u8] = b"mcompact_revision";

/// Owned tree-key bounds, as `Snapshot::range` wants them.
pub type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A user-key range in etcd's form: `end` empty = the single key `start`,
/// `end == "\0"` = every key >= `start`, else `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct UserRange<'a> {
    pub start: &'a [u8],
    pub end: &'a [u8],
}

impl<'a> UserRange<'a> {
    pub fn new(start: &'a [u8], end: &'a [u8]) -> UserRange<'a> {
        UserRange { start, end }
    }

    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    fn is_unbounded(&self) -> bool {
        self.end == [0]
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            key == self.start
        } else if self.is_unbounded() {
            key >= self.start
        } else {
            key >= self.start && key < self.end
        }
    }
}

fn push_escaped(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// `v` esc(key): the prefix every version of `key` starts with.
pub fn version_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 3 + Revision::ENCODED_LEN);
    out.push(VERSION);
    push_escaped(&mut out, key);
    out
}

pub fn version_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = version_prefix(key);
    out.extend_from_slice(&rev.to_bytes());
    out
}

/// Splits a `v` tree key into (user key, revision).
pub fn parse_version_key(tree_key: &[u8]) -> Result<(Vec<u8>, Revision), MvccError> {
    let bad = || MvccError::Corrupt(format!("malformed version key {}", hex(tree_key)));
    if tree_key.first() != Some(&VERSION) || tree_key.len() < 3 + Revision::ENCODED_LEN {
        return Err(bad());
    }
    let (escaped, rev) = tree_key[1..].split_at(tree_key.len() - 1 - Revision::ENCODED_LEN);
    let rev = Revision::from_bytes(rev).ok_or_else(bad)?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    loop {
        match (escaped.get(i), escaped.get(i + 1)) {
            (Some(0), Some(0x01)) if i + 2 == escaped.len() => return Ok((key, rev)),
            (Some(0), Some(0xFF)) => {
                key.push(0);
                i += 2;
            }
            (Some(0), _) | (None, _) => return Err(bad()),
            (Some(&b), _) => {
                key.push(b);
                i += 1;
            }
        }
    }
}

/// Tree-key bounds of every version of every key in `range`.
pub fn version_bounds(range: UserRange<'_>) -> KeyBounds {
    let start = Bound::Included(version_prefix(range.start));
    let end = if range.is_single() {
        let mut p = version_prefix(range.start);
        p.extend_from_slice(&[0xFF; Revision::ENCODED_LEN]);
        Bound::Included(p)
    } else if range.is_unbounded() {
        Bound::Excluded(vec![VERSION + 1])
    } else {
        Bound::Excluded(version_prefix(range.end))
    };
    (start, end)
}

pub fn live_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(LIVE);
    out.extend_from_slice(key);
    out
}

/// Tree-key bounds of the `l` entries of `range`.
pub fn live_bounds(range: UserRange<'_>) -> KeyBounds {
    let start = live_key(range.start);
    let end = if range.is_single() {
        Bound::Included(start.clone())
    } else if range.is_unbounded() {
        Bound::Excluded(vec![LIVE + 1])
    } else {
        Bound::Excluded(live_key(range.end))
    };
    (Bound::Included(start), end)
}

pub fn change_key(rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + Revision::ENCODED_LEN);
    out.push(CHANGE);
    out.extend_from_slice(&rev.to_bytes());
    out
}

pub fn parse_change_key(tree_key: &[u8]) -> Result<Revision, MvccError> {
    match tree_key.split_first() {
        Some((&CHANGE, rev)) => Revision::from_bytes(rev),
        _ => None,
    }
    .ok_or_else(|| MvccError::Corrupt(format!("malformed change key {}", hex(tree_key))))
}

/// Lease ids are i64; flipping the sign bit makes their bytes sort numerically.
fn lease_id_bytes(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

fn lease_id_from(bytes: &[u8]) -> Option<i64> {
    let raw = u64::from_be_bytes(bytes.try_into().ok()?);
    Some((raw ^ (1 << 63)) as i64)
}

pub fn lease_key(id: i64) -> Vec<u8> {
    let mut out = vec![LEASE];
    out.extend_from_slice(&lease_id_bytes(id));
    out
}

pub fn parse_lease_key(tree_key: &[u8]) -> Result<i64, MvccError> {
    match tree_key.split_first() {
        Some((&LEASE, id)) => lease_id_from(id),
        _ => None,
    }
    .ok_or_else(|| MvccError::Corrupt(format!("malformed lease key {}", hex(tree_key))))
}

pub fn attached_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(ATTACHED);
    out.extend_from_slice(&lease_id_bytes(id));
    out.extend_from_slice(key);
    out
}

/// Tree-key bounds of every key attached to lease `id`.
pub fn attached_bounds(id: i64) -> KeyBounds {
    let start = attached_key(id, b"");
    let end = match id.checked_add(1) {
        Some(next) => Bound::Excluded(attached_key(next, b"")),
        None => Bound::Excluded(vec![ATTACHED + 1]),
    };
    (Bound::Included(start), end)
}

/// The user key of an `a` tree key.
pub fn parse_attached_key(tree_key: &[u8]) -> Result<Vec<u8>, MvccError> {
    if tree_key.first() != Some(&ATTACHED) || tree_key.len() < 9 {
        return Err(MvccError::Corrupt(format!(
            "malformed lease attachment key {}",
            hex(tree_key)
        )));
    }
    Ok(tree_key[9..].to_vec())
}

/// Bounds of a whole space.
pub fn space_bounds(tag: u8) -> KeyBounds {
    (Bound::Included(vec![tag]), Bound::Excluded(vec![tag + 1]))
}

/// Every key of the logical state (all spaces, not the layout record).
pub fn logical_bounds() -> KeyBounds {
    (Bound::Included(vec![0x01]), Bound::Unbounded)
}

/// One stored version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRecord {
    Put {
        create_revision: i64,
        version: i64,
        lease: i64,
        value: Vec<u8>,
    },
    Tombstone,
}

const RECORD_PUT: u8 = 1;
const RECORD_TOMBSTONE: u8 = 2;

impl VersionRecord {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            VersionRecord::Tombstone => vec![RECORD_TOMBSTONE],
            VersionRecord::Put {
                create_revision,
                version,
                lease,
                value,
            } => {
                let mut out = Vec::with_capacity(25 + value.len());
                out.push(RECORD_PUT);
                out.extend_from_slice(&create_revision.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&lease.to_be_bytes());
                out.extend_from_slice(value);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<VersionRecord, MvccError> {
        match bytes.split_first() {
            Some((&RECORD_TOMBSTONE, [])) => Ok(VersionRecord::Tombstone),
            Some((&RECORD_PUT, rest)) if rest.len() >= 24 => Ok(VersionRecord::Put {
                create_revision: be_i64(&rest[0..8]),
                version: be_i64(&rest[8..16]),
                lease: be_i64(&rest[16..24]),
                value: rest[24..].to_vec(),
            }),
            _ => Err(MvccError::Corrupt(format!(
                "malformed version record ({} bytes, tag {:?})",
                bytes.len(),
                bytes.first()
            ))),
        }
    }
}

/// A key's state at the current revision, kept while it is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRecord {
    pub create_revision: i64,
    pub modified: Revision,
    pub version: i64,
    pub lease: i64,
}

impl LiveRecord {
    const LEN: usize = 40;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        for n in [
            self.create_revision,
            self.modified.main,
            self.modified.sub,
            self.version,
            self.lease,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LiveRecord, MvccError> {
        if bytes.len() != Self::LEN {
            return Err(MvccError::Corrupt(format!(
                "live record is {} bytes, expected {}",
                bytes.len(),
                Self::LEN
            )));
        }
        Ok(LiveRecord {
            create_revision: be_i64(&bytes[0..8]),
            modified: Revision::new(be_i64(&bytes[8..16]), be_i64(&bytes[16..24])),
            version: be_i64(&bytes[24..32]),
            lease: be_i64(&bytes[32..40]),
        })
    }
}

pub fn encode_i64(n: i64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn decode_i64(bytes: &[u8], what: &str) -> Result<i64, MvccError> {
    if bytes.len() != 8 {
        return Err(MvccError::Corrupt(format!(
            "{what} is {} bytes, expected 8",
            bytes.len()
        )));
    }
    Ok(be_i64(bytes))
}

fn be_i64(bytes: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    i64::from_be_bytes(b)
}

/// Short hex for error messages (first 32 bytes).
pub fn hex(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 32 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_by_user_key_then_revision() {
        let keys: [&[u8]; 6] = [b"", b"\0", b"\0\0", b"a", b"a\0", b"ab"];
        let mut encoded = Vec::new();
        for k in keys {
            for rev in [
                Revision::new(1, 0),
                Revision::new(1, 5),
                Revision::new(300, 0),
            ] {
                encoded.push(version_key(k, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        for k in keys {
            let tk = version_key(k, Revision::new(7, 2));
            assert_eq!(
                parse_version_key(&tk).unwrap(),
                (k.to_vec(), Revision::new(7, 2))
            );
        }
    }

    #[test]
    fn version_bounds_cover_exactly_the_range() {
        let keys: [&[u8]; 5] = [b"a", b"a\0", b"ab", b"b", b"c"];
        let range = UserRange::new(b"a\0", b"b");
        let (start, end) = version_bounds(range);
        for k in keys {
            let tk = version_key(k, Revision::new(3, 1));
            let inside = match (&start, &end) {
                (Bound::Included(s), Bound::Excluded(e)) => tk >= *s && tk < *e,
                _ => unreachable!(),
            };
            assert_eq!(inside, range.contains(k), "key {k:?}");
        }
    }

    #[test]
    fn malformed_keys_and_records_are_errors() {
        assert!(parse_version_key(b"vabc").is_err());
        assert!(parse_version_key(&[b'v', b'a', 0, 7, 0, 1]).is_err());
        assert!(VersionRecord::decode(&[]).is_err());
        assert!(VersionRecord::decode(&[1, 2, 3]).is_err());
        assert!(VersionRecord::decode(&[2, 0]).is_err());
        assert!(LiveRecord::decode(&[0; 39]).is_err());
        assert!(parse_lease_key(b"Lshort").is_err());
    }

    #[test]
    fn lease_ids_sort_numerically() {
        assert!(lease_key(-1) < lease_key(0));
        assert!(lease_key(0) < lease_key(1));
        assert!(lease_key(255) < lease_key(256));
        assert_eq!(parse_lease_key(&lease_key(-42)).unwrap(), -42);
    }
}
