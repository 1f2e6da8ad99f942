//! Reading the history: ranges at any retained revision, the current state
//! of a key, and the change log for watch catch-up.

use std::cmp::Ordering;
use std::ops::Bound;

use super::error::MvccError;
use super::keyspace::{
    change_key, live_bounds, live_key, parse_change_key, parse_version_key, version_bounds,
    version_key, version_prefix, LiveRecord, UserRange, VersionRecord, CHANGE,
};
use super::layers::Layered;
use super::revision::Revision;
use super::types::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget,
};

/// The key's state at the view's current revision, if it is live.
pub fn live(view: &Layered<'_>, key: &[u8]) -> Result<Option<LiveRecord>, MvccError> {
    view.get(&live_key(key))?
        .map(|bytes| LiveRecord::decode(&bytes))
        .transpose()
}

fn kv_from(key: Vec<u8>, rev: Revision, record: VersionRecord) -> Option<KeyValue> {
    match record {
        VersionRecord::Put {
            create_revision,
            version,
            lease,
            value,
        } => Some(KeyValue {
            key,
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        }),
        VersionRecord::Tombstone => None,
    }
}

/// The full KeyValue of a live key, whose record must exist.
pub fn live_kv(view: &Layered<'_>, key: &[u8], live: &LiveRecord) -> Result<KeyValue, MvccError> {
    let bytes = view.get(&version_key(key, live.modified))?.ok_or_else(|| {
        MvccError::Corrupt(format!(
            "live key {:?} has no version record at {:?}",
            String::from_utf8_lossy(key),
            live.modified
        ))
    })?;
    kv_from(key.to_vec(), live.modified, VersionRecord::decode(&bytes)?).ok_or_else(|| {
        MvccError::Corrupt(format!(
            "live key {:?} points at a tombstone",
            String::from_utf8_lossy(key)
        ))
    })
}

/// Every live key of `range` at the view's current revision, ascending,
/// with its live record.
pub fn live_in(
    view: &Layered<'_>,
    range: UserRange<'_>,
    limit: Option<usize>,
) -> Result<Vec<(LiveRecord, KeyValue)>, MvccError> {
    collect_live(view.scan(&live_bounds(range)), view, limit)
}

/// As [`live_in`], descending.
fn live_in_rev(
    view: &Layered<'_>,
    range: UserRange<'_>,
    limit: Option<usize>,
) -> Result<Vec<(LiveRecord, KeyValue)>, MvccError> {
    collect_live(view.scan_rev(&live_bounds(range)), view, limit)
}

fn collect_live(
    entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), MvccError>>,
    view: &Layered<'_>,
    limit: Option<usize>,
) -> Result<Vec<(LiveRecord, KeyValue)>, MvccError> {
    let mut out = Vec::new();
    for item in entries {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let (tree_key, bytes) = item?;
        let record = LiveRecord::decode(&bytes)?;
        let kv = live_kv(view, &tree_key[1..], &record)?;
        out.push((record, kv));
    }
    Ok(out)
}

/// Keys of `range` visible at a past revision `rev`: for each key its newest
/// version <= rev, unless that is a tombstone. Returns (first `limit` kvs,
/// total count); with `count_only` no kvs are built. With `stop_when_full`
/// the scan ends once `limit` kvs are found and the count is meaningless.
fn visible_at(
    view: &Layered<'_>,
    range: UserRange<'_>,
    rev: i64,
    limit: Option<usize>,
    count_only: bool,
    stop_when_full: bool,
) -> Result<(Vec<KeyValue>, i64), MvccError> {
    let mut kvs = Vec::new();
    let mut count = 0i64;
    // The newest version <= rev of the key being scanned.
    let mut candidate: Option<(Vec<u8>, Revision, Vec<u8>)> = None;
    let mut settle = |c: Option<(Vec<u8>, Revision, Vec<u8>)>,
                      kvs: &mut Vec<KeyValue>|
     -> Result<(), MvccError> {
        if let Some((key, r, bytes)) = c {
            let record = VersionRecord::decode(&bytes)?;
            if matches!(record, VersionRecord::Put { .. }) {
                count += 1;
                if !count_only && limit.is_none_or(|l| kvs.len() < l) {
                    kvs.extend(kv_from(key, r, record));
                }
            }
        }
        Ok(())
    };
    for item in view.scan(&version_bounds(range)) {
        let (tree_key, bytes) = item?;
        let (key, r) = parse_version_key(&tree_key)?;
        let same_key = candidate.as_ref().is_some_and(|(k, _, _)| *k == key);
        if !same_key {
            settle(candidate.take(), &mut kvs)?;
            if stop_when_full && limit.is_some_and(|l| kvs.len() >= l) {
                return Ok((kvs, count));
            }
        }
        if r.main <= rev {
            candidate = Some((key, r, bytes));
        } else if !same_key {
            // A key first written after `rev`: nothing visible yet.
            candidate = None;
        }
    }
    settle(candidate.take(), &mut kvs)?;
    Ok((kvs, count))
}

/// Whether `key` had a live version at `rev`.
fn live_at(view: &Layered<'_>, key: &[u8], rev: i64) -> Result<bool, MvccError> {
    let bounds = (
        Bound::Included(version_prefix(key)),
        Bound::Included(version_key(key, Revision::new(rev, i64::MAX))),
    );
    match view.scan_rev(&bounds).next() {
        None => Ok(false),
        Some(item) => {
            let (_, bytes) = item?;
            Ok(matches!(
                VersionRecord::decode(&bytes)?,
                VersionRecord::Put { .. }
            ))
        }
    }
}

/// The number of keys of `range` live at the past revision `rev`, from the
/// O(log n) count of the live keys now corrected by the keys changed since
/// `rev`. `None` when more changes than keys in the range happened since
/// (then scanning the range is cheaper).
fn count_at(view: &Layered<'_>, range: UserRange<'_>, rev: i64) -> Result<Option<i64>, MvccError> {
    /// Below this many changes the delta is always worth it.
    const MIN_BUDGET: u64 = 1024;
    let now = view.count(&live_bounds(range))?;
    let budget = now.max(MIN_BUDGET);
    let since = (
        Bound::Included(change_key(Revision::new(rev + 1, 0))),
        Bound::Excluded(vec![CHANGE + 1]),
    );
    let mut changed = std::collections::BTreeSet::new();
    for (seen, item) in view.scan(&since).enumerate() {
        if seen as u64 >= budget {
            return Ok(None);
        }
        let (_, key) = item?;
        if range.contains(&key) {
            changed.insert(key);
        }
    }
    let mut count = now as i64;
    for key in changed {
        count += i64::from(live_at(view, &key, rev)?) - i64::from(live(view, &key)?.is_some());
    }
    Ok(Some(count))
}

/// etcd's Range: `current` is the view's revision, `compacted` the compact
/// revision.
pub fn range(
    view: &Layered<'_>,
    current: i64,
    compacted: i64,
    req: &RangeRequest,
) -> Result<RangeResponse, MvccError> {
    if req.revision > current {
        return Err(MvccError::FutureRevision);
    }
    let rev = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if rev < compacted {
        return Err(MvccError::Compacted {
            requested: rev,
            compacted,
        });
    }
    let range = UserRange::new(&req.key, &req.range_end);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // As etcd: sorting or filtering needs every key; otherwise one more than
    // the limit tells whether there are `more`. Sorting by key is the scan
    // order (or its reverse at the current revision), so it needs no more
    // than that: etcd would return the same keys after reading them all.
    let by_key_descending =
        req.sort_target == SortTarget::Key && req.sort_order == SortOrder::Descend;
    let scan_order_suffices = match req.sort_order {
        SortOrder::None => true,
        SortOrder::Ascend => req.sort_target == SortTarget::Key,
        SortOrder::Descend => by_key_descending && rev == current,
    };
    let fetch = if !scan_order_suffices || filtered || req.limit <= 0 {
        None
    } else {
        usize::try_from(req.limit)
            .ok()
            .and_then(|l| l.checked_add(1))
    };

    let (mut kvs, count) = if rev == current && range.is_single() {
        // The common single-key get: one live-index lookup, no count or scan.
        match live(view, &req.key)? {
            Some(record) if !req.count_only => (vec![live_kv(view, &req.key, &record)?], 1),
            Some(_) => (Vec::new(), 1),
            None => (Vec::new(), 0),
        }
    } else if rev == current {
        let count = view.count(&live_bounds(range))? as i64;
        let kvs = if req.count_only {
            Vec::new()
        } else if by_key_descending {
            live_in_rev(view, range, fetch)?
                .into_iter()
                .map(|(_, kv)| kv)
                .collect()
        } else {
            live_in(view, range, fetch)?
                .into_iter()
                .map(|(_, kv)| kv)
                .collect()
        };
        (kvs, count)
    } else if req.count_only || fetch.is_some() {
        // Paging at a past revision (e.g. a Kubernetes LIST continuation):
        // count from the changes since `rev` instead of scanning the range.
        match count_at(view, range, rev)? {
            Some(count) if req.count_only => (Vec::new(), count),
            Some(count) => (visible_at(view, range, rev, fetch, false, true)?.0, count),
            None => visible_at(view, range, rev, fetch, req.count_only, false)?,
        }
    } else {
        visible_at(view, range, rev, fetch, req.count_only, false)?
    };

    // etcd prunes after counting: `count` ignores these filters.
    kvs.retain(|kv| {
        (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
    });

    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
            match req.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }

    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(RangeResponse { kvs, more, count })
}

/// The version of `key` just before `before`, unless absent or deleted.
pub fn prev_kv(
    view: &Layered<'_>,
    key: &[u8],
    before: Revision,
) -> Result<Option<KeyValue>, MvccError> {
    let bounds = (
        Bound::Included(version_prefix(key)),
        Bound::Excluded(version_key(key, before)),
    );
    match view.scan_rev(&bounds).next() {
        None => Ok(None),
        Some(item) => {
            let (tree_key, bytes) = item?;
            let (_, rev) = parse_version_key(&tree_key)?;
            Ok(kv_from(key.to_vec(), rev, VersionRecord::decode(&bytes)?))
        }
    }
}

/// Changes to keys in `range` at revisions >= `start`, ascending, with
/// prev_kv. Stops after `max` events but never inside a revision, so a
/// caller can resume at the last event's revision + 1.
pub fn events_from(
    view: &Layered<'_>,
    range: UserRange<'_>,
    start: i64,
    max: usize,
) -> Result<Vec<Event>, MvccError> {
    let mut events: Vec<Event> = Vec::new();
    if max == 0 {
        return Ok(events);
    }
    let bounds = (
        Bound::Included(change_key(Revision::new(start.max(0), 0))),
        Bound::Excluded(vec![CHANGE + 1]),
    );
    for item in view.scan(&bounds) {
        let (tree_key, key) = item?;
        let rev = parse_change_key(&tree_key)?;
        if let Some(last) = events.last() {
            if events.len() >= max && last.kv.mod_revision != rev.main {
                break;
            }
        }
        if !range.contains(&key) {
            continue;
        }
        let bytes = view.get(&version_key(&key, rev))?.ok_or_else(|| {
            MvccError::Corrupt(format!(
                "change log names {:?} at {rev:?} but no version exists",
                String::from_utf8_lossy(&key)
            ))
        })?;
        let prev = prev_kv(view, &key, rev)?;
        let event = match kv_from(key.clone(), rev, VersionRecord::decode(&bytes)?) {
            Some(kv) => Event {
                kind: EventKind::Put,
                kv,
                prev_kv: prev,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    mod_revision: rev.main,
                    ..KeyValue::default()
                },
                prev_kv: prev,
            },
        };
        events.push(event);
    }
    Ok(events)
}
