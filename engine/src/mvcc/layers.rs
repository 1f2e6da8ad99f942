//! Reads through the not-yet-checkpointed writes.
//!
//! Applying an entry must not cost a B+tree commit (the WAL already made it
//! durable), so the store stages tree writes in memory and writes them to the
//! tree in one batch at `checkpoint()`. Reads see three layers, newest first:
//! `scratch` (the entry being applied; dropped if it fails, so a failed op
//! changes nothing), `pending` (applied since the last checkpoint) and the
//! durable tree. A `None` in an overlay is a removal.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use super::backend::{BackendView, ScanIter};
use super::error::MvccError;
use super::keyspace::{KeyBounds, LIVE};

/// Staged tree writes: `Some(value)` = insert, `None` = remove.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// For each live-space tree key written since the last checkpoint: whether
/// the durable tree has it, and whether it is present now. Lets `count`
/// correct the tree's count without a tree lookup per pending key.
pub type LivePresence = BTreeMap<Vec<u8>, (bool, bool)>;

/// The three layers as one ordered map.
pub struct Layered<'a> {
    pub base: &'a BackendView,
    pub pending: &'a Overlay,
    pub scratch: &'a Overlay,
    /// Covers every pending key of the live space (see `count`); `None`
    /// makes `count` look pending keys up in the tree instead.
    pub presence: Option<&'a LivePresence>,
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

impl<'a> Layered<'a> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        if let Some(v) = self.scratch.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
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
        let overlay = |o: &'a Overlay| -> Peekable<OverlayIter<'a>> {
            let range = overlay_range(o, bounds);
            if forward {
                (Box::new(range) as OverlayIter<'a>).peekable()
            } else {
                (Box::new(range.rev()) as OverlayIter<'a>).peekable()
            }
        };
        Merge {
            base: base.peekable(),
            pending: overlay(self.pending),
            scratch: overlay(self.scratch),
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
            for (_, &(in_base, now)) in presence.range::<[u8], _>(as_slices(bounds)) {
                n += i64::from(now) - i64::from(in_base);
            }
            for (k, v) in overlay_range(self.scratch, bounds) {
                let before = match (presence.get(k), self.pending.get(k)) {
                    (Some(&(_, now)), _) => now,
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
        for (k, v) in overlay_range(self.pending, bounds) {
            if !self.scratch.contains_key(k) {
                adjust(k, v.is_some())?;
            }
        }
        for (k, v) in overlay_range(self.scratch, bounds) {
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

type OverlayIter<'o> = Box<dyn Iterator<Item = (&'o Vec<u8>, &'o Option<Vec<u8>>)> + 'o>;

/// Three-way merge of sources sorted in one direction; see [`Layered::scan`].
pub struct Merge<'a> {
    base: Peekable<ScanIter<'a>>,
    pending: Peekable<OverlayIter<'a>>,
    scratch: Peekable<OverlayIter<'a>>,
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
            let p = self.pending.peek().map(|(k, _)| k.as_slice());
            let s = self.scratch.peek().map(|(k, _)| k.as_slice());
            let keys = [b, p, s].into_iter().flatten();
            let min = if self.forward { keys.min() } else { keys.max() }?;
            let (take_b, take_p, take_s) = (b == Some(min), p == Some(min), s == Some(min));
            let from_base = if take_b { self.base.next() } else { None };
            let from_pending = if take_p { self.pending.next() } else { None };
            let from_scratch = if take_s { self.scratch.next() } else { None };
            let top = match (from_scratch, from_pending) {
                (Some((k, v)), _) | (None, Some((k, v))) => Some((k, v)),
                (None, None) => None,
            };
            match top {
                Some((k, Some(v))) => return Some(Ok((k.clone(), v.clone()))),
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
                &overlay(&[
                    ("a", Some("base")),
                    ("b", Some("base")),
                    ("c", Some("base")),
                    ("d", Some("base")),
                ]),
                1,
            )
            .unwrap();
        let base = backend.view();
        let pending = overlay(&[("b", None), ("c", Some("pending")), ("e", Some("pending"))]);
        let scratch = overlay(&[
            ("a", None),
            ("b", Some("scratch")),
            ("e", None),
            ("f", Some("scratch")),
        ]);
        let view = Layered {
            base: &base,
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
            ("d", "base"),
            ("f", "scratch"),
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
        assert_eq!(view.count(&some).unwrap(), 3);
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
