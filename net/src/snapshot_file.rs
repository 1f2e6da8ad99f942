//! The byte layout of a snapshot as Maintenance.Snapshot streams it (and as
//! `etcdctl snapshot save` stores it).
//!
//! etcdctl only accepts a stream whose length is a multiple of 512 plus 32
//! (a page-aligned bbolt file followed by its SHA-256). basalt's store
//! snapshot is not page-aligned, so it is framed:
//!
//! ```text
//! [store snapshot][zero padding][store snapshot length: u64 LE][SHA-256 of all before]
//! ```
//!
//! with the padding chosen so the part before the hash is a multiple of 512.

use sha2::{Digest, Sha256};

use crate::error::Error;

const ALIGN: usize = 512;
const HASH_LEN: usize = 32;
const LEN_FIELD: usize = 8;

/// Frames a store snapshot for streaming.
pub fn wrap(store_snapshot: Vec<u8>) -> Vec<u8> {
    let len = store_snapshot.len();
    let body = (len + LEN_FIELD).div_ceil(ALIGN) * ALIGN;
    let mut out = store_snapshot;
    out.resize(body - LEN_FIELD, 0);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

/// The store snapshot inside a file written by `etcdctl snapshot save`
/// from basalt, after checking its length and hash.
pub fn unwrap(file: &[u8]) -> Result<&[u8], Error> {
    let bad = |why: &str| Error::SnapshotFile(why.to_owned());
    if file.len() < ALIGN + HASH_LEN || file.len() % ALIGN != HASH_LEN {
        return Err(bad("length is not a multiple of 512 plus a 32-byte hash"));
    }
    let (body, hash) = file.split_at(file.len() - HASH_LEN);
    if Sha256::digest(body).as_slice() != hash {
        return Err(bad("SHA-256 does not match: the file is damaged"));
    }
    let mut len = [0u8; LEN_FIELD];
    len.copy_from_slice(&body[body.len() - LEN_FIELD..]);
    let len = u64::from_le_bytes(len);
    if len > (body.len() - LEN_FIELD) as u64 {
        return Err(bad("store snapshot length exceeds the file"));
    }
    Ok(&body[..len as usize])
}

/// Restores a snapshot file into a new `data_dir` (which must not hold a
/// member yet), as `etcdctl snapshot restore` does for etcd. The server
/// started on it then continues from the snapshot's revision.
pub fn restore(file: &std::path::Path, data_dir: &std::path::Path) -> Result<(), Error> {
    let member = data_dir.join("member");
    if member.exists() {
        return Err(Error::SnapshotFile(format!(
            "{} already exists; restore into a new --data-dir",
            member.display()
        )));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| Error::io(format!("reading snapshot {}", file.display()), e))?;
    let mut store = unwrap(&bytes)?;
    basalt_engine::mvcc::Store::restore_snapshot(
        &mut store,
        &crate::sequencer::store_dir(data_dir),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_length_is_what_etcdctl_expects_and_round_trips() {
        for n in [0usize, 1, 503, 504, 505, 512, 4096, 10_000] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let w = wrap(data.clone());
            assert_eq!(w.len() % 512, 32, "n={n}");
            assert_eq!(unwrap(&w).unwrap(), &data[..]);
        }
    }

    #[test]
    fn damage_is_detected() {
        let mut w = wrap(vec![7; 100]);
        w[3] ^= 1;
        assert!(unwrap(&w).is_err());
        assert!(unwrap(&w[..w.len() - 1]).is_err());
        assert!(unwrap(&[]).is_err());
    }
}
