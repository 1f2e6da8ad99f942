//! etcd revisions: `(main, sub)`.
//!
//! `main` is the store revision every client sees (one per write request or
//! transaction); `sub` numbers the effects inside it, so a transaction that
//! puts three keys writes `(r, 0)`, `(r, 1)`, `(r, 2)`. Encoded big-endian so
//! byte order is revision order.

/// A point in the store's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const ENCODED_LEN: usize = 16;

    pub fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// Big-endian bytes. Revisions are never negative, so unsigned order of
    /// the two halves is numeric order.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        debug_assert!(
            self.main >= 0 && self.sub >= 0,
            "negative revision {self:?}"
        );
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        out
    }

    /// Decodes exactly 16 bytes; `None` on a wrong length or a value that
    /// does not fit a non-negative i64.
    pub fn from_bytes(bytes: &[u8]) -> Option<Revision> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let main = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let sub = u64::from_be_bytes(bytes[8..].try_into().ok()?);
        Some(Revision {
            main: i64::try_from(main).ok()?,
            sub: i64::try_from(sub).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let revs = [
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(1, 300),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(i64::MAX, 0),
        ];
        for w in revs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_bytes() < w[1].to_bytes());
        }
        for r in revs {
            assert_eq!(Revision::from_bytes(&r.to_bytes()), Some(r));
        }
    }

    #[test]
    fn rejects_bad_encodings() {
        assert_eq!(Revision::from_bytes(&[0; 15]), None);
        assert_eq!(Revision::from_bytes(&[0xff; 16]), None);
    }
}
