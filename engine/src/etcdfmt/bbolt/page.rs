//! bbolt's on-disk structures, as its file format documents them and real
//! etcd files show them (all integers little-endian, as written on amd64).
//!
//! ```text
//! page header (16):  id u64 | flags u16 | count u16 | overflow u32
//! meta (pages 0, 1): magic u32 | version u32 | page size u32 | flags u32
//!                    | root bucket { root page u64, sequence u64 }
//!                    | freelist page u64 | high water mark u64 | txid u64
//!                    | checksum u64 (FNV-1a 64 of the 56 bytes before it)
//! branch element (16): pos u32 | key size u32 | child page u64
//! leaf element (16):   flags u32 | pos u32 | key size u32 | value size u32
//! ```
//!
//! An element's `pos` counts from the element's own first byte to its key
//! (a value follows its key). A page spans `1 + overflow` pages. A leaf
//! element with flag 1 is a bucket: its value is `{ root page u64,
//! sequence u64 }`, and when the root is 0 the bucket is *inline*: a leaf
//! page (header included) follows in the value itself.

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// The page size basalt writes (etcd on amd64 writes the OS page size).
pub const PAGE_SIZE: usize = 4096;
/// Smallest and largest page sizes a file may declare and be read.
pub const MIN_PAGE_SIZE: usize = 512;
pub const MAX_PAGE_SIZE: usize = 64 * 1024;

pub const HEADER: usize = 16;
pub const ELEMENT: usize = 16;
pub const META_LEN: usize = 64;
/// Bytes of a bucket value before an inline page.
pub const BUCKET_HEADER: usize = 16;

pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a bucket.
pub const LEAF_BUCKET: u32 = 0x01;
/// The freelist field when the freelist is not stored (etcd sets bbolt's
/// NoFreelistSync: every page no bucket reaches is free).
pub const NO_FREELIST: u64 = u64::MAX;

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl Header {
    /// `b` holds at least [`HEADER`] bytes.
    pub fn read(b: &[u8]) -> Header {
        Header {
            id: u64_at(b, 0),
            flags: u16_at(b, 8),
            count: u16_at(b, 10),
            overflow: u32_at(b, 12),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.overflow.to_le_bytes());
    }
}

/// The meta page body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub root: u64,
    pub freelist: u64,
    /// Pages in use: every page id is below it.
    pub high_water: u64,
    pub txid: u64,
}

/// FNV-1a, 64 bits (bbolt's meta checksum).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Meta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut m = [0u8; META_LEN];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        // flags (12..16) and the root bucket's sequence (24..32) stay 0
        m[16..24].copy_from_slice(&self.root.to_le_bytes());
        m[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        m[40..48].copy_from_slice(&self.high_water.to_le_bytes());
        m[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&m[..56]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
        m
    }

    /// Decodes a meta body; the reason it is not one otherwise.
    pub fn decode(m: &[u8]) -> Result<Meta, String> {
        if m.len() < META_LEN {
            return Err(format!("{} bytes, a meta needs {META_LEN}", m.len()));
        }
        let magic = u32_at(m, 0);
        if magic != MAGIC {
            return Err(format!("magic {magic:#010x}, bbolt's is {MAGIC:#010x}"));
        }
        let version = u32_at(m, 4);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this reader knows {VERSION}"
            ));
        }
        let sum = u64_at(m, 56);
        let expected = fnv1a64(&m[..56]);
        if sum != expected {
            return Err(format!(
                "checksum {sum:#018x}, content hashes to {expected:#018x}"
            ));
        }
        Ok(Meta {
            page_size: u32_at(m, 8),
            root: u64_at(m, 16),
            freelist: u64_at(m, 32),
            high_water: u64_at(m, 40),
            txid: u64_at(m, 48),
        })
    }
}

/// Names a page type for messages.
pub fn type_name(flags: u16) -> String {
    match flags {
        FLAG_BRANCH => "branch".into(),
        FLAG_LEAF => "leaf".into(),
        FLAG_META => "meta".into(),
        FLAG_FREELIST => "freelist".into(),
        other => format!("unknown (flags {other:#06x})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_damage_is_caught() {
        let meta = Meta {
            page_size: 4096,
            root: 9,
            freelist: NO_FREELIST,
            high_water: 10,
            txid: 3,
        };
        let bytes = meta.encode();
        assert_eq!(Meta::decode(&bytes), Ok(meta));
        for at in [0, 4, 8, 16, 40, 56] {
            let mut bad = bytes;
            bad[at] ^= 1;
            assert!(Meta::decode(&bad).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
