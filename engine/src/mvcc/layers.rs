//! Reads through the not-yet-checkpointed writes.
//!
//! Applying an entry must not cost a B+tree commit (the WAL already made it
//! durable), so the store stages tree writes in memory and writes them to the
//! tree in one batch at `checkpoint()`. Reads see three layers, newest first:
//! `scratch` (the entry being applied; dropped if it fails, so a failed op
//! changes nothing), `pending` (applied since the last checkpoint) and the
//! durable tree. While a checkpoint runs on another thread, the writes it is
//! committing sit between `pending` and the tree as `frozen`: the tree view
//! stays the one pinned before, so reads never wait for the commit. A `None`
//! in an overlay is a removal.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use super::backend::{BackendView, ScanIter};
use super::error::MvccError;
use super::keyspace::{KeyBounds, LIVE};

/// Tree writes of the entry being applied: `Some(value)` = insert, `None`
/// = remove.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Tree writes applied since the last checkpoint (pending) or being
/// committed by one (frozen), as [`Overlay`]. A persistent map: a clone is
/// O(1) and shares structure, so a [`super::ReadView`] of the store can be
/// taken after every applied batch and read on other threads while the
/// store goes on writing (each later write copies only its path).
/// Keys and values are shared slices, so the nodes a write copies (those
/// a view still shares) are copied without copying their bytes.
pub type Staging = imbl::OrdMap<Shared, Option<Shared>>;

/// Bytes shared between the staging maps and the read views that hold them.
pub type Shared = Arc<[u8]>;

/// Moves one applied entry's writes into `staging`, newest winning.
pub fn stage(staging: &mut Staging, writes: Overlay) {
    for (k, v) in writes {
        staging.insert(Shared::from(k), v.map(Shared::from));
    }
}

/// A tree write: `(key, Some(value))` inserts, `(key, None)` removes.
pub type Write<'w> = (&'w [u8], Option<&'w [u8]>);

/// The writes of an [`Overlay`] in key order.
pub fn overlay_writes(o: &Overlay) -> impl Iterator<Item = Write<'_>> + Clone + '_ {
    o.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
}

/// The writes of a [`Staging`] in key order.
pub fn staging_writes(s: &Staging) -> impl Iterator<Item = Write<'_>> + Clone + '_ {
    s.iter().map(|(k, v)| (&**k, v.as_deref()))
}

/// For each live-space tree key an overlay writes: whether the layer below
/// the overlay has it, and whether it is present after the overlay. Lets
/// `count` correct the tree's count without a tree lookup per key.
/// Persistent for the same reason as [`Staging`].
pub type LivePresence = imbl::OrdMap<Shared, (bool, bool)>;

/// Presence of the live keys of `frozen` (pinned view → after frozen) and
/// of `pending` (after frozen → now). Kept apart so a finished checkpoint
/// only drops the first map instead of rebasing the second; the deltas of
/// the two still add up to view → now for every key.
#[derive(Clone, Copy)]
pub struct Presence<'a> {
    pub frozen: &'a LivePresence,
    pub pending: &'a LivePresence,
}

impl Presence<'_> {
    /// Whether the key is live after `pending`, if either map knows.
    pub fn now(&self, key: &[u8]) -> Option<bool> {
        self.pending
            .get(key)
            .or_else(|| self.frozen.get(key))
            .map(|&(_, now)| now)
    }
}

/// Everything under the entry being applied: the pinned tree view and the
/// writes not in it yet.
#[derive(Clone, Copy)]
pub struct Staged<'a> {
    pub base: &'a BackendView,
    /// Being committed by a checkpoint task (empty when none runs).
    pub frozen: &'a Staging,
    /// Applied since the last checkpoint started.
    pub pending: &'a Staging,
    /// Covers every live-space key of `pending` and `frozen` (see `count`).
    pub presence: Presence<'a>,
}

/// The layers as one ordered map.
pub struct Layered<'a> {
    pub base: &'a BackendView,
    pub frozen: &'a Staging,
    pub pending: &'a Staging,
    pub scratch: &'a Overlay,
    /// Covers every pending and frozen key of the live space (see `count`);
    /// `None` makes `count` look them up in the tree instead.
    pub presence: Option<Presence<'a>>,
}

impl<'a> Staged<'a> {
    /// These layers with `scratch` on top.
    pub fn with_scratch(self, scratch: &'a Overlay) -> Layered<'a> {
        Layered {
            base: self.base,
            frozen: self.frozen,
            pending: self.pending,
            scratch,
            presence: Some(self.presence),
        }
    }
}

/// False when `BTreeMap::range` would panic or the bounds hold nothing.
pub fn bounds_nonempty(bounds: &KeyBounds) -> bool {
    match bounds {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s < e,
        _ => true,
    }
}

/// Whether `bounds` select only live-space keys (what `presence` covers).
fn within_live_space(bounds: &KeyBounds) -> bool {
    let live = |k: &Vec<u8>| k.first() == Some(&LIVE);
    match bounds {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e)) => live(s) && live(e),
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) => {
            live(s) && (live(e) || e.as_slice() == [LIVE + 1])
        }
        _ => false,
    }
}

fn as_slices(bounds: &KeyBounds) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        bounds.0.as_ref().map(|v| v.as_slice()),
        bounds.1.as_ref().map(|v| v.as_slice()),
    )
}

fn overlay_range<'o>(
    overlay: &'o Overlay,
    bounds: &KeyBounds,
) -> std::collections::btree_map::Range<'o, Vec<u8>, Option<Vec<u8>>> {
    if bounds_nonempty(bounds) {
        overlay.range::<[u8], _>(as_slices(bounds))
    } else {
        // An empty map's full range: nothing, without the inverted-range panic.
        static EMPTY: Overlay = BTreeMap::new();
        EMPTY.range::<[u8], _>(..)
    }
}

type OverlayIter<'o> = Box<dyn DoubleEndedIterator<Item = Write<'o>> + 'o>;

fn staging_range<'o>(staging: &'o Staging, bounds: &KeyBounds) -> OverlayIter<'o> {
    if staging.is_empty() || !bounds_nonempty(bounds) {
        Box::new(std::iter::empty())
    } else {
        Box::new(
            staging
                .range::<_, [u8]>(as_slices(bounds))
                .map(|(k, v)| (&**k, v.as_deref())),
        )
    }
}

fn scratch_range<'o>(overlay: &'o Overlay, bounds: &KeyBounds) -> OverlayIter<'o> {
    Box::new(overlay_range(overlay, bounds).map(|(k, v)| (k.as_slice(), v.as_deref())))
}

impl<'a> Layered<'a> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        if let Some(v) = self.scratch.get(key) {
            return Ok(v.clone());
        }
        for staged in [self.pending, self.frozen] {
            if let Some(v) = staged.get(key) {
                return Ok(v.as_deref().map(<[u8]>::to_vec));
            }
        }
        self.base.get(key)
    }

    /// Ascending entries within `bounds`, newest layer winning.
    pub fn scan(&self, bounds: &KeyBounds) -> Merge<'a> {
        self.merge(bounds, true)
    }

    /// Descending entries within `bounds`, newest layer winning.
    pub fn scan_rev(&self, bounds: &KeyBounds) -> Merge<'a> {
        self.merge(bounds, false)
    }

    fn merge(&self, bounds: &KeyBounds, forward: bool) -> Merge<'a> {
        let base = if !bounds_nonempty(bounds) {
            self.base.scan_empty()
        } else if forward {
            self.base.scan(bounds)
        } else {
            self.base.scan_rev(bounds)
        };
        let scratch = scratch_range(self.scratch, bounds);
        let scratch: OverlayIter<'a> = if forward {
            scratch
        } else {
            Box::new(scratch.rev())
        };
        let staged = |s: &'a Staging| -> OverlayIter<'a> {
            let range = staging_range(s, bounds);
            if forward {
                range
            } else {
                Box::new(range.rev())
            }
        };
        Merge {
            base: base.peekable(),
            overlays: [
                scratch.peekable(),
                staged(self.pending).peekable(),
                staged(self.frozen).peekable(),
            ],
            forward,
        }
    }

    /// Number of entries within `bounds`: the tree's O(log n) count, corrected
    /// for the overlay entries inside the bounds. Within the live space, with
    /// `presence` set, the pending correction costs no tree lookups.
    pub fn count(&self, bounds: &KeyBounds) -> Result<u64, MvccError> {
        if !bounds_nonempty(bounds) {
            return Ok(0);
        }
        let mut n = self.base.count(bounds)? as i64;
        if let Some(presence) = self.presence.filter(|_| within_live_space(bounds)) {
            for map in [presence.frozen, presence.pending] {
                for (_, &(below, now)) in map.range::<_, [u8]>(as_slices(bounds)) {
                    n += i64::from(now) - i64::from(below);
                }
            }
            for (k, v) in scratch_range(self.scratch, bounds) {
                let staged = self.pending.get(k).or_else(|| self.frozen.get(k));
                let before = match (presence.now(k), staged) {
                    (Some(now), _) => now,
                    (None, Some(p)) => p.is_some(),
                    (None, None) => self.base.get(k)?.is_some(),
                };
                n += i64::from(v.is_some()) - i64::from(before);
            }
            return u64::try_from(n).map_err(|_| {
                MvccError::Corrupt("overlay removes more keys than the tree holds".into())
            });
        }
        let mut adjust = |key: &[u8], present: bool| -> Result<(), MvccError> {
            match (self.base.get(key)?.is_some(), present) {
                (false, true) => n += 1,
                (true, false) => n -= 1,
                _ => {}
            }
            Ok(())
        };
        for (k, v) in staging_range(self.frozen, bounds) {
            if !self.scratch.contains_key(k) && !self.pending.contains_key(k) {
                adjust(k, v.is_some())?;
            }
        }
        for (k, v) in staging_range(self.pending, bounds) {
            if !self.scratch.contains_key(k) {
                adjust(k, v.is_some())?;
            }
        }
        for (k, v) in scratch_range(self.scratch, bounds) {
            adjust(k, v.is_some())?;
        }
        if n < 0 {
            return Err(MvccError::Corrupt(
                "overlay removes more keys than the tree holds".into(),
            ));
        }
        Ok(n as u64)
    }
}

/// Merge of the tree scan and the overlays, all sorted in one direction;
/// see [`Layered::scan`].
pub struct Merge<'a> {
    base: Peekable<ScanIter<'a>>,
    /// Newest first: scratch, pending, frozen.
    overlays: [Peekable<OverlayIter<'a>>; 3],
    /// Ascending when true: take the smallest key next, else the largest.
    forward: bool,
}

impl Iterator for Merge<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), MvccError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if matches!(self.base.peek(), Some(Err(_))) {
                return self.base.next();
            }
            let b = match self.base.peek() {
                Some(Ok((k, _))) => Some(k.as_slice()),
                _ => None,
            };
            let [scratch, pending, frozen] = &mut self.overlays;
            let keys = [
                b,
                scratch.peek().map(|(k, _)| *k),
                pending.peek().map(|(k, _)| *k),
                frozen.peek().map(|(k, _)| *k),
            ];
            let present = keys.into_iter().flatten();
            let min = if self.forward {
                present.min()
            } else {
                present.max()
            }?;
            let take = keys.map(|k| k == Some(min));
            let from_base = if take[0] { self.base.next() } else { None };
            // The newest overlay holding the key decides; older ones skip it.
            let mut top = None;
            for (overlay, &t) in self.overlays.iter_mut().zip(&take[1..]) {
                if t {
                    let item = overlay.next();
                    top = top.or(item);
                }
            }
            match top {
                Some((k, Some(v))) => return Some(Ok((k.to_vec(), v.to_vec()))),
                Some((_, None)) => continue,
                None => match from_base {
                    Some(item) => return Some(item),
                    None => continue,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::TreeOptions;
    use crate::mvcc::backend::Backend;

    fn overlay(entries: &[(&str, Option<&str>)]) -> Overlay {
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn newest_layer_wins_in_both_directions_and_counts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = Backend::open(dir.path(), TreeOptions::default(), 1).unwrap();
        backend
            .commit(
                overlay_writes(&overlay(&[
                    ("a", Some("base")),
                    ("b", Some("base")),
                    ("c", Some("base")),
                    ("d", Some("base")),
                ])),
                1,
            )
            .unwrap();
        let base = backend.view();
        let mut pending = Staging::new();
        stage(
            &mut pending,
            overlay(&[("b", None), ("c", Some("pending")), ("e", Some("pending"))]),
        );
        let scratch = overlay(&[
            ("a", None),
            ("b", Some("scratch")),
            ("e", None),
            ("f", Some("scratch")),
        ]);
        // Under pending: "c" is overridden, "d" removed, "g" added, "e"'s
        // removal here is overridden by pending's insert.
        let mut frozen = Staging::new();
        stage(
            &mut frozen,
            overlay(&[
                ("c", Some("frozen")),
                ("d", None),
                ("e", None),
                ("g", Some("frozen")),
            ]),
        );
        let view = Layered {
            base: &base,
            frozen: &frozen,
            pending: &pending,
            scratch: &scratch,
            presence: None,
        };
        // The layout record sits below every logical space.
        let all = crate::mvcc::keyspace::logical_bounds();
        let fwd: Vec<(String, String)> = view
            .scan(&all)
            .map(|r| {
                let (k, v) = r.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect();
        let want = [
            ("b", "scratch"),
            ("c", "pending"),
            ("f", "scratch"),
            ("g", "frozen"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(fwd, want);
        let mut rev: Vec<(String, String)> = view
            .scan_rev(&all)
            .map(|r| {
                let (k, v) = r.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect();
        rev.reverse();
        assert_eq!(rev, want);
        assert_eq!(view.count(&all).unwrap(), 4);
        let some = (
            Bound::Included(b"b".to_vec()),
            Bound::Excluded(b"e".to_vec()),
        );
        assert_eq!(view.count(&some).unwrap(), 2);
        assert_eq!(view.get(b"d").unwrap(), None);
        assert_eq!(view.get(b"g").unwrap(), Some(b"frozen".to_vec()));
        assert_eq!(view.get(b"a").unwrap(), None);
        assert_eq!(view.get(b"c").unwrap(), Some(b"pending".to_vec()));
        let inverted = (
            Bound::Included(b"z".to_vec()),
            Bound::Excluded(b"a".to_vec()),
        );
        assert_eq!(view.scan(&inverted).count(), 0);
        assert_eq!(view.count(&inverted).unwrap(), 0);
    }
}
