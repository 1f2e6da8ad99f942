//! etcd's `HashKV`, computed the way etcd computes it over its `key`
//! bucket, so `etcdctl endpoint hashkv` prints the same number for an etcd
//! and a basalt holding the same history (e.g. restored from its snapshot).
//!
//! etcd hashes, with CRC-32C (Castagnoli), the bucket name `key` and then,
//! in revision order, each revision key and its encoded `mvccpb.KeyValue`
//! up to the revision asked for; of the versions at or below the compact
//! revision it hashes only those a compaction at the asked revision would
//! keep: a key's newest version at that revision, if it is a put (unless
//! no key has one, when it skips nothing).

use std::collections::HashSet;

use super::schema;
use crate::mvcc::{HistoryVersion, MvccError, RangeRequest, ReadView};

/// What etcd's HashKV answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    pub compact_revision: i64,
    /// The revision hashed up to (the current one when 0 was asked).
    pub hash_revision: i64,
}

/// etcd's HashKV of `view` at `revision` (0 = the view's current one).
/// Reads every version up to it: run it off latency-critical executors.
pub fn hash_kv(view: &ReadView, revision: i64) -> Result<HashKv, MvccError> {
    let (current, compacted) = (view.current_revision(), view.compact_revision());
    if revision > 0 && revision <= compacted {
        return Err(MvccError::Compacted {
            requested: revision,
            compacted,
        });
    }
    if revision > current {
        return Err(MvccError::FutureRevision);
    }
    let upto = if revision == 0 { current } else { revision };
    // Versions at or below the compaction are each their key's newest put
    // there; one is kept at `upto` unless its key changed since.
    let mut superseded = HashSet::new();
    if compacted > 0 {
        view.for_each_changed_key(compacted + 1..=upto, &mut |k| {
            superseded.insert(k.to_vec());
        })?;
    }
    let any_kept = view
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: upto,
            count_only: true,
            ..Default::default()
        })?
        .count
        > 0;
    let mut crc = Crc32c::new();
    crc.update(schema::KEY);
    let mut value = Vec::new();
    view.for_each_version(0..=upto, &mut |rev, version| {
        let key = version.key();
        if rev.main <= compacted && any_kept && superseded.contains(key) {
            return Ok::<(), MvccError>(());
        }
        value.clear();
        let tombstone = matches!(version, HistoryVersion::Tombstone { .. });
        super::export::encode_version(rev, version, &mut value);
        crc.update(&schema::revision_key(rev.main, rev.sub, tombstone));
        crc.update(&value);
        Ok(())
    })?;
    Ok(HashKv {
        hash: crc.finish(),
        compact_revision: compacted,
        hash_revision: upto,
    })
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Go's
/// `crc32.MakeTable(crc32.Castagnoli)` computes it.
pub struct Crc32c(u32);

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

impl Crc32c {
    pub fn new() -> Crc32c {
        Crc32c(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    pub fn finish(&self) -> u32 {
        !self.0
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdfmt::proto::KeyValue;

    #[test]
    fn crc32c_matches_the_check_value() {
        let mut c = Crc32c::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xE306_9283);
        assert_eq!(Crc32c::new().finish(), 0);
    }

    #[test]
    fn a_compacted_version_counts_only_until_its_key_changes_again() {
        use crate::mvcc::{Op, PutRequest, Store, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let put = |k: &str, v: &str| {
            Op::Put(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
        };
        s.apply(1, &put("a", "1")).unwrap(); // rev 2
        s.apply(2, &put("b", "1")).unwrap(); // rev 3
        s.apply(3, &Op::Compact { revision: 3 }).unwrap();
        s.apply(4, &put("a", "2")).unwrap(); // rev 4: a@2 no longer kept
        let entry =
            |crc: &mut Crc32c, main: i64, key: &[u8], value: &[u8], create: i64, ver: i64| {
                let mut v = Vec::new();
                KeyValue {
                    key,
                    create_revision: create,
                    mod_revision: main,
                    version: ver,
                    value,
                    lease: 0,
                }
                .encode(&mut v);
                crc.update(&schema::revision_key(main, 0, false));
                crc.update(&v);
            };
        let mut want = Crc32c::new();
        want.update(b"key");
        entry(&mut want, 3, b"b", b"1", 3, 1);
        entry(&mut want, 4, b"a", b"2", 2, 2);
        let got = hash_kv(&s.read_view(), 0).unwrap();
        assert_eq!(got.hash, want.finish());
        assert_eq!((got.compact_revision, got.hash_revision), (3, 4));
        assert!(matches!(
            hash_kv(&s.read_view(), 3),
            Err(MvccError::Compacted { .. })
        ));
        assert!(matches!(
            hash_kv(&s.read_view(), 5),
            Err(MvccError::FutureRevision)
        ));
    }
}
