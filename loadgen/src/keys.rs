//! Keys and values the etcd-benchmark workloads write: fixed-size keys
//! drawn from a key space (random or sequential), like etcd's
//! `tools/benchmark`, made of a prefix and zero-padded decimal digits so the
//! whole space is one contiguous range.

/// A key space of `size` keys.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: Vec<u8>,
    width: usize,
    size: u64,
    sequential: bool,
}

impl KeySpace {
    /// Keys of about `key_size` bytes: `prefix` then at least as many
    /// digits as the largest index needs.
    pub fn new(prefix: &str, key_size: usize, size: u64, sequential: bool) -> Self {
        let size = size.max(1);
        let digits = (size - 1).to_string().len();
        Self {
            prefix: prefix.as_bytes().to_vec(),
            width: key_size.saturating_sub(prefix.len()).max(digits),
            size,
            sequential,
        }
    }

    /// Number of keys in the space.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The key with index `index` (taken modulo the space).
    pub fn nth(&self, index: u64) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(
            format!("{:0width$}", index % self.size, width = self.width).as_bytes(),
        );
        key
    }

    /// The key for request `ticket`: the ticket-th key when sequential,
    /// otherwise a uniformly random one.
    pub fn pick(&self, ticket: u64, rng: &mut fastrand::Rng) -> Vec<u8> {
        let index = if self.sequential {
            ticket
        } else {
            rng.u64(0..self.size)
        };
        self.nth(index)
    }

    /// `[start, end)` covering every key of the space.
    pub fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let mut start = self.prefix.clone();
        start.push(b'0');
        let mut end = self.prefix.clone();
        end.push(b'9' + 1);
        (start, end)
    }
}

/// The end of the range holding every key that starts with `prefix`
/// (etcd's rule: increment the last byte that is not 0xff; all 0xff or
/// empty means "to the end of the keyspace", `\0`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `size` random printable bytes (random so compression cannot flatter a
/// server; printable so a person can read a dump).
pub fn random_value(size: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    (0..size).map(|_| rng.alphanumeric() as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_requested_size_and_stay_in_bounds() {
        let ks = KeySpace::new("b/", 8, 1000, true);
        assert_eq!(ks.nth(7), b"b/000007");
        assert_eq!(ks.nth(1007), b"b/000007");
        let (start, end) = ks.bounds();
        let mut rng = fastrand::Rng::with_seed(1);
        for t in 0..100 {
            let k = ks.pick(t, &mut rng);
            assert_eq!(k.len(), 8);
            assert!(k >= start && k < end);
        }
    }

    #[test]
    fn wide_spaces_grow_the_key() {
        let ks = KeySpace::new("", 2, 1000, false);
        assert_eq!(ks.nth(999), b"999");
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
