//! The two meta slots: pages 0 and 1 of the file. Commit `t` writes slot
//! `t % 2`, so the previous commit's slot is never touched while a new one is
//! written; on open the newest slot whose checksum and commit pages verify wins.
//!
//! A commit appends its nodes at `[commit_start, page_count)` and writes its
//! meta slot, then issues a single fdatasync. If the machine dies before that
//! sync completes, any subset of those writes may have reached the disk, so
//! the meta carries a digest over the checksums of exactly the nodes of its
//! commit: the slot counts only if every one of them is present and intact.

use super::page::{read_u32, read_u64};

const MAGIC: &[u8; 8] = b"BASALTBT";
const FORMAT_VERSION: u32 = 1;
/// Encoded length of a meta slot; the rest of the slot's page stays zero.
pub(crate) const META_LEN: usize = 84;
/// Pages 0 and 1 hold the meta slots; nodes start at page 2.
pub(crate) const FIRST_NODE_PAGE: u64 = 2;

/// One commit's description of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    /// Commit id, strictly increasing.
    pub txn: u64,
    /// Root node page, or 0 for an empty tree.
    pub root: u64,
    /// Keys in the tree.
    pub key_count: u64,
    /// Pages in use at the end of this commit (file may be longer).
    pub page_count: u64,
    /// First page this commit appended.
    pub commit_start: u64,
    /// Pages reachable from `root` (node pages only, meta slots excluded).
    pub live_pages: u64,
    /// Caller's value, e.g. the applied Raft index.
    pub user_meta: u64,
    /// CRC32 over the little-endian checksums of this commit's nodes in order.
    pub commit_digest: u32,
}

impl Meta {
    pub(crate) fn empty(page_size: u32) -> Meta {
        Meta {
            page_size,
            txn: 0,
            root: 0,
            key_count: 0,
            page_count: FIRST_NODE_PAGE,
            commit_start: FIRST_NODE_PAGE,
            live_pages: 0,
            user_meta: 0,
            commit_digest: crc32fast::hash(&[]),
        }
    }

    /// Byte offset of the slot this commit is written to.
    pub(crate) fn slot_offset(&self) -> u64 {
        (self.txn % 2) * u64::from(self.page_size)
    }

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
        b[72..76].copy_from_slice(&self.commit_digest.to_le_bytes());
        let crc = crc32fast::hash(&b[..80]);
        b[80..84].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a slot; the error says why the slot does not count.
    pub(crate) fn decode(b: &[u8]) -> Result<Meta, String> {
        if b.len() < META_LEN {
            return Err(format!("slot truncated to {} bytes", b.len()));
        }
        if b.iter().take(META_LEN).all(|&x| x == 0) {
            return Err("slot is empty".to_string());
        }
        let stored = read_u32(b, 80);
        let computed = crc32fast::hash(&b[..80]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        if &b[0..8] != MAGIC {
            return Err("not a basalt b+tree file (bad magic)".to_string());
        }
        let version = read_u32(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        let m = Meta {
            page_size: read_u32(b, 12),
            txn: read_u64(b, 16),
            root: read_u64(b, 24),
            key_count: read_u64(b, 32),
            page_count: read_u64(b, 40),
            commit_start: read_u64(b, 48),
            live_pages: read_u64(b, 56),
            user_meta: read_u64(b, 64),
            commit_digest: read_u32(b, 72),
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
            page_size: 4096,
            txn: 7,
            root: 9,
            key_count: 100,
            page_count: 12,
            commit_start: 9,
            live_pages: 5,
            user_meta: 42,
            commit_digest: 0xdead_beef,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        b[33] ^= 0x10;
        assert!(Meta::decode(&b).unwrap_err().contains("checksum"));
    }
}
