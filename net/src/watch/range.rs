//! Which keys a watcher sees, with etcd's `range_end` rules.

/// A watched key range: one key, `[start, end)`, or every key `>= start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    Key(Vec<u8>),
    Range {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// `range_end = "\0"`: every key at or after `start`.
    From(Vec<u8>),
}

/// etcd's `mvcc: watcher range is empty`: `range_end` is not after `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyRange;

impl KeyRange {
    /// Reads a request's `key` / `range_end` pair as etcd does: an empty
    /// `range_end` is the key alone, `"\0"` means from the key onwards, and
    /// anything else must sort after the key.
    pub fn new(key: &[u8], range_end: &[u8]) -> Result<KeyRange, EmptyRange> {
        match range_end {
            [] => Ok(KeyRange::Key(key.to_vec())),
            [0] => Ok(KeyRange::From(key.to_vec())),
            end if key < end => Ok(KeyRange::Range {
                start: key.to_vec(),
                end: end.to_vec(),
            }),
            _ => Err(EmptyRange),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_slice() == key,
            KeyRange::Range { start, end } => start.as_slice() <= key && key < end.as_slice(),
            KeyRange::From(start) => start.as_slice() <= key,
        }
    }

    /// The single key, when this range is one key (the hub indexes those).
    pub fn single_key(&self) -> Option<&[u8]> {
        match self {
            KeyRange::Key(k) => Some(k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_range_end_rules() {
        let one = KeyRange::new(b"a", b"").unwrap();
        assert!(one.contains(b"a"));
        assert!(!one.contains(b"ab"));
        assert_eq!(one.single_key(), Some(&b"a"[..]));

        let prefix = KeyRange::new(b"w/", b"w0").unwrap();
        assert!(prefix.contains(b"w/"));
        assert!(prefix.contains(b"w/zzz"));
        assert!(!prefix.contains(b"w0"));
        assert!(!prefix.contains(b"w"));
        assert_eq!(prefix.single_key(), None);

        let from = KeyRange::new(b"m", b"\0").unwrap();
        assert!(from.contains(b"m"));
        assert!(from.contains(b"\xff\xff"));
        assert!(!from.contains(b"l"));

        let all = KeyRange::new(b"", b"\0").unwrap();
        assert!(all.contains(b""));
        assert!(all.contains(b"anything"));
    }

    #[test]
    fn range_end_not_after_key_is_empty() {
        assert_eq!(KeyRange::new(b"b", b"a"), Err(EmptyRange));
        assert_eq!(KeyRange::new(b"b", b"b"), Err(EmptyRange));
    }
}
