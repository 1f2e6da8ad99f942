//! The store as a revision-ordered history, out and in: what other stores
//! (etcd's bbolt file, see `crate::etcdfmt`) keep, in their terms.
//!
//! Out: [`ReadView::for_each_version`] visits every retained version in
//! revision order, as etcd's `key` bucket holds them, and
//! [`ReadView::lease_ttls`] lists the leases.
//!
//! In: [`Store::restore_history`] builds a new store from leases, then
//! versions in ascending revision order, then the revisions; it derives
//! everything basalt keeps beside the versions (live keys, the change log,
//! lease attachments, meta) so the result passes [`Store::verify`]. It
//! stages like [`Store::restore_snapshot`]: nothing replaces the store in
//! `dir` until the whole history was read and the store verified.
//!
//! ```
//! use basalt_engine::mvcc::{HistoryVersion, Revision, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! Store::restore_history(dir.path(), &StoreOptions::default(), 7, |h| {
//!     h.lease(5, 60)?;
//!     h.version(Revision::new(2, 0), HistoryVersion::Put {
//!         key: b"k", value: b"v", create_revision: 2, version: 1, lease: 5,
//!     })?;
//!     h.revisions(2, 0)
//! })
//! .unwrap();
//! let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
//! assert_eq!(store.current_revision(), 2);
//! assert_eq!(store.lease(5).unwrap().unwrap().keys, vec![b"k".to_vec()]);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, RangeInclusive};
use std::path::Path;

use super::backend::Backend;
use super::error::MvccError;
use super::keyspace::{
    attached_key, change_key, encode_i64, hex, lease_key, live_key, parse_change_key,
    parse_lease_key, space_bounds, version_key, KeyBounds, LiveRecord, VersionRecord, CHANGE,
    LEASE, META_COMPACT_REVISION, META_CURRENT_REVISION,
};
use super::layers::{overlay_writes, Overlay};
use super::revision::Revision;
use super::store::{Store, StoreOptions};
use super::view::ReadView;

/// Tree writes per commit while importing, so memory stays bounded.
const IMPORT_BATCH: usize = 64 * 1024;

/// One version of a key, as a history holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryVersion<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
        create_revision: i64,
        version: i64,
        lease: i64,
    },
    /// The key's deletion (ends its generation).
    Tombstone { key: &'a [u8] },
}

impl HistoryVersion<'_> {
    pub fn key(&self) -> &[u8] {
        match self {
            HistoryVersion::Put { key, .. } | HistoryVersion::Tombstone { key } => key,
        }
    }
}

/// Tree-key bounds of the change log entries with main revision in `mains`.
fn change_bounds(mains: &RangeInclusive<i64>) -> KeyBounds {
    let (from, to) = (*mains.start(), *mains.end());
    if from > to || to < 0 {
        return (Bound::Excluded(vec![CHANGE]), Bound::Excluded(vec![CHANGE]));
    }
    (
        Bound::Included(change_key(Revision::new(from.max(0), 0))),
        Bound::Included(change_key(Revision::new(to, i64::MAX))),
    )
}

impl ReadView {
    /// Visits every version the view retains with a main revision in
    /// `mains`, in ascending revision order (the change log), each once.
    pub fn for_each_version<E: From<MvccError>>(
        &self,
        mains: RangeInclusive<i64>,
        f: &mut dyn FnMut(Revision, HistoryVersion<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let view = self.layered();
        for item in view.scan(&change_bounds(&mains)) {
            let (tree_key, key) = item?;
            let rev = parse_change_key(&tree_key)?;
            let record = view.get(&version_key(&key, rev))?.ok_or_else(|| {
                MvccError::Corrupt(format!(
                    "change log names {rev:?} of {}, which has no version",
                    hex(&key)
                ))
            })?;
            let decoded = VersionRecord::decode(&record)?;
            let version = match &decoded {
                VersionRecord::Tombstone => HistoryVersion::Tombstone { key: &key },
                VersionRecord::Put {
                    create_revision,
                    version,
                    lease,
                    value,
                } => HistoryVersion::Put {
                    key: &key,
                    value,
                    create_revision: *create_revision,
                    version: *version,
                    lease: *lease,
                },
            };
            f(rev, version)?;
        }
        Ok(())
    }

    /// The key of every version with a main revision in `mains`, in
    /// revision order (reads only the change log).
    pub fn for_each_changed_key(
        &self,
        mains: RangeInclusive<i64>,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MvccError> {
        let view = self.layered();
        for item in view.scan(&change_bounds(&mains)) {
            let (_, key) = item?;
            f(&key);
        }
        Ok(())
    }

    /// Every lease as (id, TTL in seconds), by id.
    pub fn lease_ttls(&self) -> Result<Vec<(i64, i64)>, MvccError> {
        let view = self.layered();
        let mut out = Vec::new();
        for item in view.scan(&space_bounds(LEASE)) {
            let (k, v) = item?;
            out.push((
                parse_lease_key(&k)?,
                super::keyspace::decode_i64(&v, "lease ttl")?,
            ));
        }
        Ok(out)
    }
}

/// What [`Store::restore_history`] built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    pub versions: u64,
    pub leases: u64,
    /// Live keys naming a lease the history does not hold; they are kept
    /// without a lease (etcd keeps them unattached).
    pub keys_without_their_lease: u64,
}

/// Feeds a new store; see [`Store::restore_history`].
pub struct HistoryImport {
    backend: Backend,
    batch: Overlay,
    /// Each key's newest put, while its newest version is a put.
    live: HashMap<Vec<u8>, LiveRecord>,
    leases: BTreeMap<i64, i64>,
    last: Option<Revision>,
    revisions: Option<(i64, i64)>,
    summary: ImportSummary,
}

fn bad_history(what: String) -> MvccError {
    MvccError::Corrupt(format!("history: {what}"))
}

impl HistoryImport {
    /// A lease with its TTL (seconds); every lease comes before the first
    /// version, so puts can be checked against them.
    pub fn lease(&mut self, id: i64, ttl: i64) -> Result<(), MvccError> {
        if self.last.is_some() {
            return Err(MvccError::InvalidRequest(
                "history: leases must come before versions".into(),
            ));
        }
        if id == 0 {
            return Err(bad_history("lease id 0 (means \"no lease\")".into()));
        }
        if self.leases.insert(id, ttl).is_some() {
            return Err(bad_history(format!("lease {id:#x} given twice")));
        }
        self.summary.leases += 1;
        Ok(())
    }

    /// The next version, in strictly ascending revision order.
    pub fn version(&mut self, rev: Revision, v: HistoryVersion<'_>) -> Result<(), MvccError> {
        if rev.main < 1 || rev.sub < 0 {
            return Err(bad_history(format!("revision {rev:?} is not positive")));
        }
        if let Some(last) = self.last.filter(|last| *last >= rev) {
            return Err(bad_history(format!(
                "revision {rev:?} comes after {last:?} (out of order)"
            )));
        }
        self.last = Some(rev);
        let key = v.key();
        if key.is_empty() {
            return Err(bad_history(format!("revision {rev:?} has an empty key")));
        }
        let record = match v {
            HistoryVersion::Tombstone { .. } => {
                self.live.remove(key);
                VersionRecord::Tombstone
            }
            HistoryVersion::Put {
                value,
                create_revision,
                version,
                lease,
                ..
            } => {
                if create_revision < 1 || create_revision > rev.main || version < 1 {
                    return Err(bad_history(format!(
                        "revision {rev:?} of {}: create revision {create_revision}, \
                         version {version} are impossible",
                        hex(key)
                    )));
                }
                self.live.insert(
                    key.to_vec(),
                    LiveRecord {
                        create_revision,
                        modified: rev,
                        version,
                        lease,
                    },
                );
                VersionRecord::Put {
                    create_revision,
                    version,
                    lease,
                    value: value.to_vec(),
                }
            }
        };
        self.batch
            .insert(version_key(key, rev), Some(record.encode()));
        self.batch.insert(change_key(rev), Some(key.to_vec()));
        self.summary.versions += 1;
        if self.batch.len() >= IMPORT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// The store's current and compact revisions (after the last version).
    pub fn revisions(&mut self, current: i64, compacted: i64) -> Result<(), MvccError> {
        let newest = self.last.map_or(0, |r| r.main);
        if current < 1 || current < newest || compacted < 0 || compacted > current {
            return Err(bad_history(format!(
                "current revision {current}, compact revision {compacted} \
                 with versions up to {newest}"
            )));
        }
        self.revisions = Some((current, compacted));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MvccError> {
        // user_meta 0: only the last commit records the applied index.
        self.backend.commit(overlay_writes(&self.batch), 0)?;
        self.batch.clear();
        Ok(())
    }

    /// A live key naming a lease the history lacks (etcd keeps such a key
    /// unattached; a history that revoked the lease would have deleted it)
    /// is kept without a lease: its newest version is rewritten to say so.
    /// Older versions keep the lease they had.
    fn detach(&mut self, key: &[u8], record: &mut LiveRecord) -> Result<(), MvccError> {
        let tree_key = version_key(key, record.modified);
        let stored =
            match self.batch.get(&tree_key) {
                Some(Some(bytes)) => bytes.clone(),
                _ => self.backend.view().get(&tree_key)?.ok_or_else(|| {
                    bad_history(format!("newest version of {} vanished", hex(key)))
                })?,
            };
        let VersionRecord::Put {
            create_revision,
            version,
            value,
            ..
        } = VersionRecord::decode(&stored)?
        else {
            return Err(bad_history(format!(
                "newest version of {} is no put",
                hex(key)
            )));
        };
        let rewritten = VersionRecord::Put {
            create_revision,
            version,
            lease: 0,
            value,
        };
        self.batch.insert(tree_key, Some(rewritten.encode()));
        record.lease = 0;
        self.summary.keys_without_their_lease += 1;
        Ok(())
    }

    fn finish(mut self, dir: &Path, applied: u64) -> Result<ImportSummary, MvccError> {
        let (current, compacted) = self
            .revisions
            .ok_or_else(|| MvccError::InvalidRequest("history: revisions never given".into()))?;
        let live = std::mem::take(&mut self.live);
        for (key, mut record) in live {
            if record.lease != 0 && !self.leases.contains_key(&record.lease) {
                self.detach(&key, &mut record)?;
            }
            if record.lease != 0 {
                self.batch
                    .insert(attached_key(record.lease, &key), Some(Vec::new()));
            }
            self.batch.insert(live_key(&key), Some(record.encode()));
            if self.batch.len() >= IMPORT_BATCH {
                self.flush()?;
            }
        }
        for (&id, &ttl) in &self.leases {
            self.batch.insert(lease_key(id), Some(encode_i64(ttl)));
        }
        self.batch
            .insert(META_CURRENT_REVISION.to_vec(), Some(encode_i64(current)));
        if compacted > 0 {
            self.batch
                .insert(META_COMPACT_REVISION.to_vec(), Some(encode_i64(compacted)));
        }
        self.backend.commit(overlay_writes(&self.batch), applied)?;
        let summary = self.summary;
        Store::from_backend(dir, self.backend)?.verify()?;
        Ok(summary)
    }
}

impl Store {
    /// Builds the store in `dir` (which must not be open) from a history
    /// `fill` gives: leases first, then versions in revision order, then
    /// [`HistoryImport::revisions`]. The new store has applied index
    /// `applied` and `opts.shards` shards. On any error the store in `dir`
    /// is left as it was.
    pub fn restore_history<E: From<MvccError>>(
        dir: &Path,
        opts: &StoreOptions,
        applied: u64,
        fill: impl FnOnce(&mut HistoryImport) -> Result<(), E>,
    ) -> Result<ImportSummary, E> {
        let mut summary = ImportSummary::default();
        super::snapshot::restore_staged(dir, opts, |staging| -> Result<(), E> {
            let mut import = HistoryImport {
                backend: Backend::open(staging, opts.tree, opts.shards)?,
                batch: Overlay::new(),
                live: HashMap::new(),
                leases: BTreeMap::new(),
                last: None,
                revisions: None,
                summary: ImportSummary::default(),
            };
            fill(&mut import)?;
            summary = import.finish(staging, applied)?;
            Ok(())
        })?;
        Ok(summary)
    }
}
