//! A basalt read view as an etcd snapshot: the bbolt database etcd would
//! hold for the same data, then the SHA-256 of it (what etcd's
//! Maintenance.Snapshot streams and `etcdctl snapshot save` stores).

use std::io::Write;

use sha2::{Digest, Sha256};

use super::bbolt::{self, BucketSource, BucketSpec, Plan};
use super::error::EtcdFmtError;
use super::proto::{KeyValue, Lease};
use super::schema;
use crate::mvcc::{HistoryVersion, ReadView, Revision};

/// Bytes of the trailer after the database.
pub const TRAILER_LEN: usize = 32;

/// What a snapshot records beside the view's data.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMeta {
    /// Raft term of the view's applied index.
    pub term: u64,
    /// The cluster's members (etcd's `members` bucket; `etcdctl snapshot
    /// restore` replaces them with the ones it is given).
    pub members: Vec<SnapshotMember>,
    /// The auth store (etcd's `auth`, `authUsers`, `authRoles` buckets).
    pub auth: SnapshotAuth,
}

/// The auth store as etcd's buckets hold it. Users and roles are the
/// caller's encodings of etcd's `authpb.User` and `authpb.Role` (this
/// crate does not read them), keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotAuth {
    pub enabled: bool,
    /// The auth revision (etcd's `authRevision`; 1 in a new etcd).
    pub revision: u64,
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
    pub roles: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A member as etcd's `members` bucket records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl SnapshotMember {
    /// etcd's entry: the id in hex, and the member as etcd's JSON.
    fn entry(&self) -> (Vec<u8>, Vec<u8>) {
        let list = |urls: &[String]| {
            let quoted: Vec<String> = urls.iter().map(|u| json_string(u)).collect();
            format!("[{}]", quoted.join(","))
        };
        let mut json = format!(
            "{{\"id\":{},\"peerURLs\":{}",
            self.id,
            list(&self.peer_urls)
        );
        if self.is_learner {
            json.push_str(",\"isLearner\":true");
        }
        json.push_str(&format!(
            ",\"name\":{},\"clientURLs\":{}}}",
            json_string(&self.name),
            list(&self.client_urls)
        ));
        (format!("{:x}", self.id).into_bytes(), json.into_bytes())
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An etcd snapshot of one pinned view, planned (its length known) before
/// a byte is written.
pub struct EtcdSnapshot {
    view: ReadView,
    meta: SnapshotMeta,
    plan: Plan,
}

impl EtcdSnapshot {
    /// Lays the file out (reads the whole view once, writes nothing).
    pub fn plan(view: ReadView, meta: SnapshotMeta) -> Result<EtcdSnapshot, EtcdFmtError> {
        let plan = with_buckets(&view, &meta, |buckets| bbolt::plan(buckets))?;
        Ok(EtcdSnapshot { view, meta, plan })
    }

    /// Bytes [`EtcdSnapshot::write`] will write, trailer included.
    pub fn file_len(&self) -> u64 {
        self.plan.file_len() + TRAILER_LEN as u64
    }

    /// Streams the database, then its SHA-256.
    pub fn write(&self, out: &mut dyn Write) -> Result<(), EtcdFmtError> {
        let mut hashed = Hashing {
            out,
            hash: Sha256::new(),
        };
        with_buckets(&self.view, &self.meta, |buckets| {
            bbolt::write(buckets, self.plan, &mut hashed)
        })?;
        let Hashing { out, hash } = hashed;
        out.write_all(&hash.finalize())
            .and_then(|()| out.flush())
            .map_err(EtcdFmtError::stream)
    }
}

struct Hashing<'w> {
    out: &'w mut dyn Write,
    hash: Sha256,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The `key` bucket: every retained version in revision order.
struct KeyBucket<'v>(&'v ReadView);

impl BucketSource for KeyBucket<'_> {
    fn for_each(&self, f: &mut bbolt::writer::EntrySink<'_>) -> Result<(), EtcdFmtError> {
        let mut value = Vec::new();
        self.0.for_each_version(0..=i64::MAX, &mut |rev, version| {
            value.clear();
            let tombstone = matches!(version, HistoryVersion::Tombstone { .. });
            encode_version(rev, version, &mut value);
            f(&schema::revision_key(rev.main, rev.sub, tombstone), &value)
        })
    }
}

/// A version as etcd stores it in the `key` bucket: a put's whole
/// `KeyValue`, or a tombstone's key alone.
pub(super) fn encode_version(rev: Revision, version: HistoryVersion<'_>, out: &mut Vec<u8>) {
    let kv = match version {
        HistoryVersion::Put {
            key,
            value,
            create_revision,
            version,
            lease,
        } => KeyValue {
            key,
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        },
        HistoryVersion::Tombstone { key } => KeyValue {
            key,
            ..KeyValue::default()
        },
    };
    kv.encode(out);
}

fn with_buckets<T>(
    view: &ReadView,
    meta: &SnapshotMeta,
    f: impl FnOnce(&[BucketSpec<'_>]) -> Result<T, EtcdFmtError>,
) -> Result<T, EtcdFmtError> {
    let mut leases: Vec<(Vec<u8>, Vec<u8>)> = view
        .lease_ttls()?
        .into_iter()
        .map(|(id, ttl)| {
            let mut v = Vec::new();
            Lease {
                id,
                ttl,
                remaining_ttl: 0,
            }
            .encode(&mut v);
            ((id as u64).to_be_bytes().to_vec(), v)
        })
        .collect();
    leases.sort();
    let mut meta_entries = vec![(
        schema::CONSISTENT_INDEX.to_vec(),
        view.applied_index().to_be_bytes().to_vec(),
    )];
    let compacted = view.compact_revision();
    if compacted > 0 {
        let rev = schema::revision_key(compacted, 0, false);
        meta_entries.push((schema::FINISHED_COMPACT.to_vec(), rev.clone()));
        meta_entries.push((schema::SCHEDULED_COMPACT.to_vec(), rev));
    }
    meta_entries.push((schema::TERM.to_vec(), meta.term.to_be_bytes().to_vec()));
    let cluster = vec![(
        schema::CLUSTER_VERSION.to_vec(),
        schema::WRITTEN_CLUSTER_VERSION.to_vec(),
    )];
    let mut members: Vec<(Vec<u8>, Vec<u8>)> =
        meta.members.iter().map(SnapshotMember::entry).collect();
    members.sort();
    // etcd records the auth store's revision from its first start on, and
    // whether auth is on once it was ever switched.
    let mut auth = Vec::new();
    if meta.auth.enabled || meta.auth.revision > 1 {
        auth.push((
            schema::AUTH_ENABLED.to_vec(),
            vec![u8::from(meta.auth.enabled)],
        ));
    }
    auth.push((
        schema::AUTH_REVISION.to_vec(),
        meta.auth.revision.max(1).to_be_bytes().to_vec(),
    ));
    let mut users = meta.auth.users.clone();
    users.sort();
    let mut roles = meta.auth.roles.clone();
    roles.sort();
    let empty: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let keys = KeyBucket(view);
    let buckets: [BucketSpec<'_>; 10] = [
        (schema::ALARM, &empty),
        (schema::AUTH, &auth),
        (schema::AUTH_ROLES, &roles),
        (schema::AUTH_USERS, &users),
        (schema::CLUSTER, &cluster),
        (schema::KEY, &keys),
        (schema::LEASE, &leases),
        (schema::MEMBERS, &members),
        (schema::MEMBERS_REMOVED, &empty),
        (schema::META, &meta_entries),
    ];
    f(&buckets)
}
