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
use super::keyspace::KeyBounds;

/// Staged tree writes: `Some(value)` = insert, `None` = remove.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The three layers as one ordered map.
pub struct Layered<'a> {
    pub base: &'a BackendView,
    pub pending: &'a Overlay,
    pub scratch: &'a Overlay,
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
        let empty = !bounds_nonempty(bounds);
        Merge {
            base: if empty {
                self.base.scan_empty()
            } else {
                self.base.scan(bounds)
            }
            .peekable(),
            pending: overlay_range(self.pending, bounds).peekable(),
            scratch: overlay_range(self.scratch, bounds).peekable(),
        }
    }

    /// Number of entries within `bounds`: the tree's O(log n) count, corrected
    /// for the overlay entries inside the bounds.
    pub fn count(&self, bounds: &KeyBounds) -> Result<u64, MvccError> {
        if !bounds_nonempty(bounds) {
            return Ok(0);
        }
        let mut n = self.base.count(bounds)? as i64;
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

type OverlayIter<'o> = Peekable<std::collections::btree_map::Range<'o, Vec<u8>, Option<Vec<u8>>>>;

/// Three-way merge of ascending sources; see [`Layered::scan`].
pub struct Merge<'a> {
    base: Peekable<ScanIter<'a>>,
    pending: OverlayIter<'a>,
    scratch: OverlayIter<'a>,
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
            let min = [b, p, s].into_iter().flatten().min()?;
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
