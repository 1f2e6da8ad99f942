//! A full consistency check of the store's key spaces, for tests and for
//! operators who suspect damage (it reads everything: O(size)).

use std::collections::{BTreeMap, BTreeSet};

use super::error::MvccError;
use super::keyspace::{
    attached_bounds, live_key, parse_attached_key, parse_change_key, parse_version_key,
    space_bounds, version_key, LiveRecord, VersionRecord, CHANGE, LIVE, VERSION,
};
use super::revision::Revision;
use super::store::Store;

fn broken(what: String) -> MvccError {
    MvccError::Corrupt(format!("integrity: {what}"))
}

impl Store {
    /// Checks the invariants between the key spaces: every live entry points
    /// at the put record it describes and is the key's newest version; every
    /// version has its change-log twin and vice versa; no revision is above
    /// the current one; lease attachments match the live keys' leases; every
    /// key is in the tree file its routing names.
    pub fn verify(&self) -> Result<(), MvccError> {
        self.view.check_placement()?;
        self.with_view(|view| {
            let current = self.current_revision();
            // newest version of each key, and every version's revision
            let mut newest: BTreeMap<Vec<u8>, (Revision, VersionRecord)> = BTreeMap::new();
            let mut versions: BTreeSet<(Revision, Vec<u8>)> = BTreeSet::new();
            for item in view.scan(&space_bounds(VERSION)) {
                let (k, v) = item?;
                let (key, rev) = parse_version_key(&k)?;
                if rev.main > current {
                    return Err(broken(format!("version {rev:?} above current {current}")));
                }
                // Only the metadata is compared: dropping values keeps
                // the check's memory to the keys, not the data.
                let record = match VersionRecord::decode(&v)? {
                    VersionRecord::Put {
                        create_revision,
                        version,
                        lease,
                        ..
                    } => VersionRecord::Put {
                        create_revision,
                        version,
                        lease,
                        value: Vec::new(),
                    },
                    tombstone => tombstone,
                };
                versions.insert((rev, key.clone()));
                newest.insert(key, (rev, record));
            }
            let mut changes = 0usize;
            for item in view.scan(&space_bounds(CHANGE)) {
                let (k, key) = item?;
                let rev = parse_change_key(&k)?;
                if !versions.contains(&(rev, key.clone())) {
                    return Err(broken(format!("change {rev:?} has no version")));
                }
                changes += 1;
            }
            if changes != versions.len() {
                return Err(broken(format!(
                    "{} versions but {changes} change-log entries",
                    versions.len()
                )));
            }
            let mut live_count = 0usize;
            let mut by_lease: BTreeMap<i64, BTreeSet<Vec<u8>>> = BTreeMap::new();
            for item in view.scan(&space_bounds(LIVE)) {
                let (k, v) = item?;
                let key = k[1..].to_vec();
                let live = LiveRecord::decode(&v)?;
                match newest.get(&key) {
                    Some((
                        rev,
                        VersionRecord::Put {
                            create_revision,
                            version,
                            lease,
                            ..
                        },
                    )) if *rev == live.modified
                        && *create_revision == live.create_revision
                        && *version == live.version
                        && *lease == live.lease => {}
                    other => {
                        return Err(broken(format!(
                            "live entry of {:?} is {live:?}, newest version is {other:?}",
                            String::from_utf8_lossy(&key)
                        )))
                    }
                }
                if live.lease != 0 {
                    by_lease.entry(live.lease).or_default().insert(key);
                }
                live_count += 1;
            }
            let newest_puts = newest
                .values()
                .filter(|(_, r)| matches!(r, VersionRecord::Put { .. }))
                .count();
            if live_count != newest_puts {
                return Err(broken(format!(
                    "{live_count} live entries but {newest_puts} keys whose newest version is a put"
                )));
            }
            let mut attached_total = 0usize;
            for (id, _) in self.lease_ttls() {
                let mut keys = BTreeSet::new();
                for item in view.scan(&attached_bounds(id)) {
                    let (k, _) = item?;
                    keys.insert(parse_attached_key(&k)?);
                }
                attached_total += keys.len();
                if keys != by_lease.remove(&id).unwrap_or_default() {
                    return Err(broken(format!(
                        "lease {id:#x} attachments differ from live keys"
                    )));
                }
            }
            if let Some((id, _)) = by_lease.into_iter().next() {
                return Err(broken(format!(
                    "live keys name lease {id:#x}, which does not exist"
                )));
            }
            let attached = view.count(&space_bounds(super::keyspace::ATTACHED))? as usize;
            if attached != attached_total {
                return Err(broken(format!(
                    "{attached} attachments, {attached_total} belong to existing leases"
                )));
            }
            // the live space and the newest versions name the same keys
            for (key, (rev, record)) in &newest {
                let has_live = view.get(&live_key(key))?.is_some();
                let is_put = matches!(record, VersionRecord::Put { .. });
                if has_live != is_put {
                    return Err(broken(format!(
                        "{:?}: newest version {rev:?} is_put={is_put}, live={has_live}",
                        String::from_utf8_lossy(key)
                    )));
                }
                debug_assert!(view.get(&version_key(key, *rev))?.is_some());
            }
            Ok(())
        })
    }
}
