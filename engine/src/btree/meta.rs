//! The two meta slots: pages 0 and 1 of the file. Commit `t` writes slot
//! `t % 2`, so the previous commit's slot is never touched while a new one is
//! written; on open the newest slot whose checksum and commit pages verify wins.
//!
//! A commit writes its nodes (into reused free pages and after the committed
//! pages, see `freelist.rs`) and its meta slot, then issues a single
//! fdatasync. If the machine dies before that sync completes, any subset of
//! those writes may have reached the disk, so the meta carries a digest over
//! exactly the nodes of its commit: the slot counts only if every one of them
//! is present and intact.
//!
//! Two versions are read. Version 1 (written before page reuse) appended
//! every node at `[commit_start, page_count)` and digests their checksums in
//! page order. Version 2 (written now) may scatter nodes over reused pages:
//! they are found by walking from the root through nodes stamped with the
//! commit's id (a changed node's ancestors are always rewritten too), and the
//! digest is an order-independent sum over `(page, checksum)` plus their
//! number. Every new meta is written as version 2; a file whose slots still
//! hold version 1 opens as before.

use super::page::{read_u32, read_u64};

const MAGIC: &[u8; 8] = b"BASALTBT";
/// The version every new meta slot is written in.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The appending layout, still read (see the module docs).
pub(crate) const FORMAT_V1: u32 = 1;
const META_LEN_V1: usize = 84;
/// Encoded length of a meta slot (the longest version); the rest of the
/// slot's page stays zero.
pub(crate) const META_LEN: usize = 92;
/// Pages 0 and 1 hold the meta slots; nodes start at page 2.
pub(crate) const FIRST_NODE_PAGE: u64 = 2;

/// One commit's description of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Layout of the commit's digest: [`FORMAT_V1`] or [`FORMAT_VERSION`].
    pub version: u32,
    pub page_size: u32,
    /// Commit id, strictly increasing.
    pub txn: u64,
    /// Root node page, or 0 for an empty tree.
    pub root: u64,
    /// Keys in the tree.
    pub key_count: u64,
    /// Pages in use at the end of this commit (file may be longer).
    pub page_count: u64,
    /// Where this commit started appending (the previous `page_count`).
    pub commit_start: u64,
    /// Pages reachable from `root` (node pages only, meta slots excluded).
    pub live_pages: u64,
    /// Caller's value, e.g. the applied Raft index.
    pub user_meta: u64,
    /// Version 1: CRC32 over the little-endian checksums of this commit's
    /// nodes in page order. Version 2: [`node_digest`] summed over them.
    pub commit_digest: u64,
    /// Version 2: nodes this commit wrote (0 in version 1).
    pub commit_nodes: u64,
}

/// One node's share of a version 2 commit digest: a 64-bit mix of where it
/// is and its checksum, so a node that is missing, stale or misplaced changes
/// the sum whatever order the nodes are found in.
pub(crate) fn node_digest(page: u64, crc: u32) -> u64 {
    // splitmix64's finaliser.
    let mut z = page
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(crc) << 1 | 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Meta {
    pub(crate) fn empty(page_size: u32) -> Meta {
        Meta {
            version: FORMAT_VERSION,
            page_size,
            txn: 0,
            root: 0,
            key_count: 0,
            page_count: FIRST_NODE_PAGE,
            commit_start: FIRST_NODE_PAGE,
            live_pages: 0,
            user_meta: 0,
            commit_digest: 0,
            commit_nodes: 0,
        }
    }

    /// Byte offset of the slot this commit is written to.
    pub(crate) fn slot_offset(&self) -> u64 {
        (self.txn % 2) * u64::from(self.page_size)
    }

    /// Encodes as version 2 (whatever version `self` was read as).
    pub(crate) fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        let fields = [
            self.txn,
            self.root,
            self.key_count,
            self.page_count,
            self.commit_start,
            self.live_pages,
            self.user_meta,
        ];
        for (i, f) in fields.iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&f.to_le_bytes());
        }
        b[72..80].copy_from_slice(&self.commit_digest.to_le_bytes());
        b[80..88].copy_from_slice(&self.commit_nodes.to_le_bytes());
        let crc = crc32fast::hash(&b[..88]);
        b[88..92].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a slot; the error says why the slot does not count.
    pub(crate) fn decode(b: &[u8]) -> Result<Meta, String> {
        if b.len() < META_LEN_V1 {
            return Err(format!("slot truncated to {} bytes", b.len()));
        }
        if b.iter().take(META_LEN).all(|&x| x == 0) {
            return Err("slot is empty".to_string());
        }
        let version = read_u32(b, 8);
        let crc_at = match version {
            FORMAT_V1 => 80,
            FORMAT_VERSION if b.len() >= META_LEN => 88,
            FORMAT_VERSION => return Err(format!("slot truncated to {} bytes", b.len())),
            _ if &b[0..8] != MAGIC => {
                return Err("not a basalt b+tree file (bad magic)".to_string())
            }
            _ => {
                return Err(format!(
                    "format version {version}, this build reads {FORMAT_V1} and {FORMAT_VERSION}"
                ))
            }
        };
        let stored = read_u32(b, crc_at);
        let computed = crc32fast::hash(&b[..crc_at]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        if &b[0..8] != MAGIC {
            return Err("not a basalt b+tree file (bad magic)".to_string());
        }
        let (commit_digest, commit_nodes) = match version {
            FORMAT_V1 => (u64::from(read_u32(b, 72)), 0),
            _ => (read_u64(b, 72), read_u64(b, 80)),
        };
        let m = Meta {
            version,
            page_size: read_u32(b, 12),
            txn: read_u64(b, 16),
            root: read_u64(b, 24),
            key_count: read_u64(b, 32),
            page_count: read_u64(b, 40),
            commit_start: read_u64(b, 48),
            live_pages: read_u64(b, 56),
            user_meta: read_u64(b, 64),
            commit_digest,
            commit_nodes,
        };
        let consistent = m.page_count >= FIRST_NODE_PAGE
            && (FIRST_NODE_PAGE..=m.page_count).contains(&m.commit_start)
            && (m.root == 0 || (FIRST_NODE_PAGE..m.page_count).contains(&m.root))
            && m.live_pages <= m.page_count - FIRST_NODE_PAGE;
        if !consistent {
            return Err(format!("fields are inconsistent: {m:?}"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_flipped_bit() {
        let m = Meta {
            version: FORMAT_VERSION,
            page_size: 4096,
            txn: 7,
            root: 9,
            key_count: 100,
            page_count: 12,
            commit_start: 9,
            live_pages: 5,
            user_meta: 42,
            commit_digest: 0xdead_beef_0bad_f00d,
            commit_nodes: 3,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        b[33] ^= 0x10;
        assert!(Meta::decode(&b).unwrap_err().contains("checksum"));
    }

    /// A version 1 slot (written before page reuse) still decodes, so old
    /// data directories open.
    #[test]
    fn decodes_version_1() {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_V1.to_le_bytes());
        b[12..16].copy_from_slice(&4096u32.to_le_bytes());
        for (i, f) in [7u64, 9, 100, 12, 9, 5, 42].iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&f.to_le_bytes());
        }
        b[72..76].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let crc = crc32fast::hash(&b[..80]);
        b[80..84].copy_from_slice(&crc.to_le_bytes());
        let m = Meta::decode(&b).unwrap();
        assert_eq!(
            (m.version, m.txn, m.root, m.page_count),
            (FORMAT_V1, 7, 9, 12)
        );
        assert_eq!((m.commit_digest, m.commit_nodes), (0xdead_beef, 0));
    }
}
