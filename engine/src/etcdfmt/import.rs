//! An etcd snapshot file into a basalt store, as `etcdctl snapshot restore`
//! does for etcd: the trailer is checked, then the database read and
//! checked bucket by bucket while the store is built beside the old one
//! (see [`Store::restore_history`]); nothing replaces it unless all of it
//! was read and the new store verified.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::bbolt::{bucket_of, Bucket, Db};
use super::error::EtcdFmtError;
use super::export::TRAILER_LEN;
use super::proto::{KeyValue, Lease};
use super::schema;
use crate::mvcc::{HistoryImport, HistoryVersion, ImportSummary, Revision, Store, StoreOptions};

/// The trailer's alignment rule: etcd's tools take a file whose length is
/// 32 past a multiple of 512 to end with a SHA-256.
const TRAILER_ALIGN: usize = 512;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore a file without a trailer, or whose trailer does not match
    /// (etcd's `--skip-hash-check`).
    pub skip_hash_check: bool,
    pub store: StoreOptions,
}

/// What a restore found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub summary: ImportSummary,
    pub revision: i64,
    pub compact_revision: i64,
    /// The file had a trailer and it matched.
    pub hash_verified: bool,
    /// The auth store the snapshot holds, for the caller to decode.
    pub auth: super::SnapshotAuth,
}

/// Whether `head` (the file's first bytes) starts a bbolt database.
pub fn is_etcd_db(head: &[u8]) -> bool {
    head.len() >= 20 && super::bbolt::page::u32_at(head, 16) == super::bbolt::page::MAGIC
}

/// Restores the etcd snapshot `file` into the store at `store_dir` (which
/// must not be open).
pub fn restore(
    file: &Path,
    store_dir: &Path,
    opts: &RestoreOptions,
) -> Result<Restored, EtcdFmtError> {
    let io = |source| EtcdFmtError::Io {
        path: file.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(file).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(EtcdFmtError::NotASnapshot(format!(
            "{} is empty",
            file.display()
        )));
    }
    // SAFETY: the map is read-only and only read while `f` is open here; a
    // snapshot file is not written while it is being restored (as with
    // etcdctl, which maps it the same way through bbolt).
    let map = unsafe { memmap2::MmapOptions::new().map(&f) }.map_err(io)?;
    restore_bytes(&map, store_dir, opts)
}

/// [`restore`] of a snapshot already in memory.
pub fn restore_bytes(
    bytes: &[u8],
    store_dir: &Path,
    opts: &RestoreOptions,
) -> Result<Restored, EtcdFmtError> {
    let (db_bytes, trailer) = split_trailer(bytes);
    // The meta pages first: a file that is no database at all, or is cut
    // short, says so rather than failing its hash.
    let db = Db::open(db_bytes)?;
    let hash_verified = check_trailer(db_bytes, trailer, opts.skip_hash_check)?;
    let buckets = top_level(&db)?;
    let meta = read_meta(&db, buckets.get(schema::META).copied())?;
    let auth = read_auth(&db, &buckets)?;
    let key = *buckets
        .get(schema::KEY)
        .ok_or_else(|| EtcdFmtError::Malformed {
            place: "root bucket".into(),
            what: "no \"key\" bucket".into(),
        })?;
    let mut newest = 0i64;
    let applied = meta.consistent_index.max(1);
    let summary = Store::restore_history::<EtcdFmtError>(store_dir, &opts.store, applied, |h| {
        if let Some(&leases) = buckets.get(schema::LEASE) {
            read_leases(&db, leases, h)?;
        }
        read_versions(&db, key, h, &mut newest)?;
        let compacted = meta.compacted();
        let current = newest.max(compacted).max(1);
        Ok(h.revisions(current, compacted)?)
    })?;
    let compacted = meta.compacted();
    Ok(Restored {
        summary,
        revision: newest.max(compacted).max(1),
        compact_revision: compacted,
        hash_verified,
        auth,
    })
}

/// The database part of `bytes`: all of it, or all but a trailer when the
/// length says one follows (etcd's rule).
fn split_trailer(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    if bytes.len() % TRAILER_ALIGN == TRAILER_LEN {
        let (db, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        (db, Some(trailer))
    } else {
        (bytes, None)
    }
}

/// Checks the trailer (unless told not to); whether it was verified.
fn check_trailer(db: &[u8], trailer: Option<&[u8]>, skip: bool) -> Result<bool, EtcdFmtError> {
    match trailer {
        _ if skip => Ok(false),
        None => Err(EtcdFmtError::Unsupported(format!(
            "the file ({} bytes) has no SHA-256 trailer, so its integrity cannot be checked; \
             a db file copied from a data dir restores with --skip-hash-check",
            db.len()
        ))),
        Some(trailer) => {
            let found = Sha256::digest(db);
            if found.as_slice() != trailer {
                return Err(EtcdFmtError::HashMismatch {
                    expected: hex(trailer),
                    found: hex(&found),
                });
            }
            Ok(true)
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn top_level<'f>(db: &Db<'f>) -> Result<BTreeMap<&'f [u8], Bucket<'f>>, EtcdFmtError> {
    let mut out = BTreeMap::new();
    db.for_each(db.root(), &mut |e| {
        let name = String::from_utf8_lossy(e.key).into_owned();
        if !e.is_bucket {
            return Err(EtcdFmtError::Malformed {
                place: "root bucket".into(),
                what: format!("{name:?} is a plain key; etcd keeps only buckets there"),
            });
        }
        if !schema::BUCKETS.contains(&e.key) {
            return Err(EtcdFmtError::Unsupported(format!(
                "bucket {name:?} is not one etcd 3.4 or 3.5 writes (a newer etcd, or \
                 not an etcd database)"
            )));
        }
        out.insert(e.key, bucket_of(e.key, e.value)?);
        Ok(())
    })?;
    Ok(out)
}

/// Plain entries of a bucket (a nested bucket is an error).
fn entries<'f>(
    db: &Db<'f>,
    name: &[u8],
    bucket: Bucket<'f>,
    f: &mut dyn FnMut(&'f [u8], &'f [u8]) -> Result<(), EtcdFmtError>,
) -> Result<(), EtcdFmtError> {
    db.for_each(bucket, &mut |e| {
        if e.is_bucket {
            return Err(EtcdFmtError::Unsupported(format!(
                "bucket {:?} holds a nested bucket {:?}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(e.key)
            )));
        }
        f(e.key, e.value)
    })
}

#[derive(Default)]
struct MetaBucket {
    consistent_index: u64,
    scheduled_compact: i64,
    finished_compact: i64,
}

impl MetaBucket {
    /// etcd finishes a scheduled compaction when it starts; basalt reads
    /// nothing below the scheduled revision either.
    fn compacted(&self) -> i64 {
        self.scheduled_compact.max(self.finished_compact)
    }
}

fn read_meta<'f>(db: &Db<'f>, bucket: Option<Bucket<'f>>) -> Result<MetaBucket, EtcdFmtError> {
    let mut meta = MetaBucket::default();
    let Some(bucket) = bucket else {
        return Ok(meta);
    };
    entries(db, schema::META, bucket, &mut |k, v| {
        let bad = |what: &str| EtcdFmtError::Malformed {
            place: format!("meta bucket, key {:?}", String::from_utf8_lossy(k)),
            what: format!("{what} ({} bytes)", v.len()),
        };
        match k {
            _ if k == schema::CONSISTENT_INDEX => {
                meta.consistent_index = schema::u64_value(v).ok_or_else(|| bad("not a u64"))?;
            }
            _ if k == schema::SCHEDULED_COMPACT || k == schema::FINISHED_COMPACT => {
                let (main, _, _) =
                    schema::parse_revision_key(v).ok_or_else(|| bad("not a revision"))?;
                if k == schema::SCHEDULED_COMPACT {
                    meta.scheduled_compact = main;
                } else {
                    meta.finished_compact = main;
                }
            }
            // Raft state of the old cluster: the restored member starts its own.
            _ if k == schema::TERM || k == schema::CONF_STATE => {}
            _ => {
                return Err(EtcdFmtError::Unsupported(format!(
                    "meta key {:?} is not one etcd 3.4 or 3.5 writes (a newer etcd?)",
                    String::from_utf8_lossy(k)
                )))
            }
        }
        Ok(())
    })?;
    Ok(meta)
}

/// The auth store: users and roles as etcd encoded them, and the switch.
fn read_auth<'f>(
    db: &Db<'f>,
    buckets: &BTreeMap<&'f [u8], Bucket<'f>>,
) -> Result<super::SnapshotAuth, EtcdFmtError> {
    let mut auth = super::SnapshotAuth::default();
    let read = |name: &[u8], into: &mut Vec<(Vec<u8>, Vec<u8>)>| {
        if let Some(&b) = buckets.get(name) {
            entries(db, name, b, &mut |k, v| {
                into.push((k.to_vec(), v.to_vec()));
                Ok(())
            })?;
        }
        Ok::<(), EtcdFmtError>(())
    };
    read(schema::AUTH_USERS, &mut auth.users)?;
    read(schema::AUTH_ROLES, &mut auth.roles)?;
    if let Some(&b) = buckets.get(schema::AUTH) {
        entries(db, schema::AUTH, b, &mut |k, v| {
            if k == schema::AUTH_ENABLED {
                auth.enabled = v.first() == Some(&1);
            } else if k == schema::AUTH_REVISION {
                auth.revision = schema::u64_value(v).ok_or_else(|| EtcdFmtError::Malformed {
                    place: "auth bucket, authRevision".into(),
                    what: format!("a revision is 8 bytes, not {}", v.len()),
                })?;
            }
            Ok(())
        })?;
    }
    Ok(auth)
}

fn read_leases<'f>(
    db: &Db<'f>,
    bucket: Bucket<'f>,
    h: &mut HistoryImport,
) -> Result<(), EtcdFmtError> {
    entries(db, schema::LEASE, bucket, &mut |k, v| {
        let place = || format!("lease bucket, key {}", hex(k));
        let id = schema::u64_value(k).ok_or_else(|| EtcdFmtError::Malformed {
            place: place(),
            what: format!("a lease key is 8 bytes, not {}", k.len()),
        })? as i64;
        let lease = Lease::decode(v).map_err(|what| EtcdFmtError::Malformed {
            place: place(),
            what,
        })?;
        if lease.id != id {
            return Err(EtcdFmtError::Malformed {
                place: place(),
                what: format!("the value names lease {:#x}", lease.id),
            });
        }
        h.lease(id, lease.ttl)?;
        Ok(())
    })
}

fn read_versions<'f>(
    db: &Db<'f>,
    bucket: Bucket<'f>,
    h: &mut HistoryImport,
    newest: &mut i64,
) -> Result<(), EtcdFmtError> {
    entries(db, schema::KEY, bucket, &mut |k, v| {
        let place = || format!("key bucket, revision key {}", hex(k));
        let (main, sub, tombstone) =
            schema::parse_revision_key(k).ok_or_else(|| EtcdFmtError::Malformed {
                place: place(),
                what: "not a revision (8 bytes, '_', 8 bytes, optional 't')".into(),
            })?;
        let kv = KeyValue::decode(v).map_err(|what| EtcdFmtError::Malformed {
            place: place(),
            what,
        })?;
        let version = if tombstone {
            HistoryVersion::Tombstone { key: kv.key }
        } else {
            if kv.mod_revision != main {
                return Err(EtcdFmtError::Malformed {
                    place: place(),
                    what: format!("the value's mod_revision is {}", kv.mod_revision),
                });
            }
            HistoryVersion::Put {
                key: kv.key,
                value: kv.value,
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            }
        };
        h.version(Revision::new(main, sub), version)?;
        *newest = main;
        Ok(())
    })
}
