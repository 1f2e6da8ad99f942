//! Which tree file holds a tree key.
//!
//! A store is one **index tree** (`mvcc.btree`: the spaces `l`, `r`, `L`,
//! `a`, `m` — what the sequencer needs to evaluate and order requests) and
//! `n` **shard trees** (`shard-000.btree`, …) holding the `v` space, the
//! versions. A version goes to the shard picked by a fixed hash (64-bit
//! FNV-1a) of its *user* key, so every version of one key is in one shard
//! and a per-key read touches one file. The hash must never change: it is
//! part of the on-disk format (a store's count is fixed at creation).
//!
//! ```text
//! v esc("a") rev  ──fnv1a("a") % n──▶ shard-00k.btree
//! l "a" / r rev / L id / a id "a" / m name ──▶ mvcc.btree
//! ```

use std::ops::Bound;

use super::keyspace::{KeyBounds, VERSION};

/// File name of the index tree inside the store's directory.
pub const INDEX_FILE: &str = "mvcc.btree";

/// Upper limit on shard trees: more files than cores gains nothing, and it
/// bounds the number of open maps.
pub const MAX_SHARDS: usize = 256;

/// File name of shard tree `i`.
pub fn shard_file(i: usize) -> String {
    format!("shard-{i:03}.btree")
}

/// The shard index in a shard file name, if it is one.
pub fn parse_shard_file(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("shard-")?.strip_suffix(".btree")?;
    if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The shard a user key's versions live in, of `shards` (>= 1).
pub fn shard_of_user_key(key: &[u8], shards: usize) -> usize {
    let mut h = FNV_OFFSET;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    (h % shards as u64) as usize
}

/// For a `v` tree key (or a bound that starts like one): the FNV-1a hash of
/// the user key and the length of the tree-key prefix naming it (`v`,
/// escaped key, terminator). `None` if the key is not in the `v` space or
/// the escaped user key is not complete (a bound between keys).
fn version_user_key(tree_key: &[u8]) -> Option<(u64, usize)> {
    if tree_key.first() != Some(&VERSION) {
        return None;
    }
    let mut h = FNV_OFFSET;
    let mut i = 1;
    loop {
        let b = *tree_key.get(i)?;
        if b == 0 {
            match tree_key.get(i + 1)? {
                0xFF => {}
                0x01 => return Some((h, i + 2)),
                _ => return None,
            }
            i += 1;
        }
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        i += 1;
    }
}

/// Where a tree key is stored: `None` = the index tree, `Some(i)` = shard
/// tree `i`. With no shard trees (a store from before sharding) everything
/// is in the index tree.
pub fn route(tree_key: &[u8], shards: usize) -> Option<usize> {
    if shards == 0 || tree_key.first() != Some(&VERSION) {
        return None;
    }
    // A malformed version key still needs one home; the index tree is where
    // integrity checks will find and report it.
    version_user_key(tree_key).map(|(h, _)| (h % shards as u64) as usize)
}

/// Which trees a scan over `bounds` has to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub index: bool,
    pub shards: ShardTargets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardTargets {
    None,
    One(usize),
    All,
}

/// The trees whose keys can fall within `bounds`. Errs on the side of
/// reading a tree that turns out to hold nothing there.
pub fn targets(bounds: &KeyBounds, shards: usize) -> Targets {
    if shards == 0 {
        return Targets {
            index: true,
            shards: ShardTargets::None,
        };
    }
    let space_start = [VERSION];
    let space_end = [VERSION + 1];
    let below = |b: &Bound<Vec<u8>>, edge: &[u8]| match b {
        Bound::Unbounded => true,
        Bound::Included(k) | Bound::Excluded(k) => k.as_slice() < edge,
    };
    let above = |b: &Bound<Vec<u8>>, edge: &[u8]| match b {
        Bound::Unbounded => true,
        Bound::Included(k) => k.as_slice() >= edge,
        Bound::Excluded(k) => k.as_slice() > edge,
    };
    let touches_versions = below(&bounds.0, &space_end) && above(&bounds.1, &space_start);
    let touches_index = below(&bounds.0, &space_start) || above(&bounds.1, &space_end);
    let shard_targets = if !touches_versions {
        ShardTargets::None
    } else {
        match (bound_key(&bounds.0), bound_key(&bounds.1)) {
            (Some(s), Some(e)) => match (version_user_key(s), version_user_key(e)) {
                (Some((h, n)), Some((_, m))) if n == m && s[..n] == e[..m] => {
                    ShardTargets::One((h % shards as u64) as usize)
                }
                _ => ShardTargets::All,
            },
            _ => ShardTargets::All,
        }
    };
    Targets {
        index: touches_index,
        shards: shard_targets,
    }
}

fn bound_key(b: &Bound<Vec<u8>>) -> Option<&[u8]> {
    match b {
        Bound::Included(k) | Bound::Excluded(k) => Some(k),
        Bound::Unbounded => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::keyspace::{
        live_key, space_bounds, version_bounds, version_key, version_prefix, UserRange, LIVE,
    };
    use crate::mvcc::revision::Revision;

    #[test]
    fn versions_of_one_key_share_a_shard_and_other_spaces_stay_in_the_index() {
        for key in [&b"a"[..], b"a\0b", b"", b"\0\0", b"zz\xff"] {
            let want = shard_of_user_key(key, 4);
            for main in [1, 7, 1 << 40] {
                let tk = version_key(key, Revision { main, sub: 3 });
                assert_eq!(route(&tk, 4), Some(want), "{key:?}");
                assert_eq!(route(&tk, 0), None);
            }
            assert_eq!(route(&live_key(key), 4), None);
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a 64 test vectors: the shard of a key is part of the format.
        assert_eq!(
            shard_of_user_key(b"", u64::MAX as usize),
            0xcbf2_9ce4_8422_2325
        );
        assert_eq!(
            shard_of_user_key(b"a", u64::MAX as usize),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(
            shard_of_user_key(b"foobar", u64::MAX as usize),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn scan_targets() {
        let single = version_bounds(UserRange::new(b"k\0", b""));
        assert_eq!(
            targets(&single, 4),
            Targets {
                index: false,
                shards: ShardTargets::One(shard_of_user_key(b"k\0", 4))
            }
        );
        // A key's history up to a revision, as reads and compaction scan it.
        let history = (
            Bound::Included(version_prefix(b"a\0b")),
            Bound::Excluded(version_key(b"a\0b", Revision { main: 9, sub: 0 })),
        );
        assert_eq!(
            targets(&history, 4).shards,
            ShardTargets::One(shard_of_user_key(b"a\0b", 4))
        );
        let range = version_bounds(UserRange::new(b"a", b"b"));
        assert_eq!(
            targets(&range, 4),
            Targets {
                index: false,
                shards: ShardTargets::All
            }
        );
        assert_eq!(
            targets(&space_bounds(LIVE), 4),
            Targets {
                index: true,
                shards: ShardTargets::None
            }
        );
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(
            targets(&all, 4),
            Targets {
                index: true,
                shards: ShardTargets::All
            }
        );
        assert_eq!(
            targets(&all, 0),
            Targets {
                index: true,
                shards: ShardTargets::None
            }
        );
    }

    #[test]
    fn shard_file_names_round_trip() {
        assert_eq!(parse_shard_file(&shard_file(7)), Some(7));
        assert_eq!(parse_shard_file("shard-7.btree"), None);
        assert_eq!(parse_shard_file(INDEX_FILE), None);
    }
}
