//! Segment files: naming, the header block, and background preparation.
//!
//! A segment is a file `<id as 16 hex digits>.wal` of fixed size. Block 0 is
//! a header naming the segment and its size; the data region starts at
//! block 1. A segment only gets its final name once it is fully zero-filled
//! and synced (it is prepared as `<id>.wal.tmp`, then renamed, then the
//! directory is synced), so every write to the log overwrites blocks that
//! already exist on disk: no O_DIRECT write ever extends a file or lands in
//! an unwritten extent, which would cost metadata work on every fdatasync.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::error::WalError;

/// The unit of every write: O_DIRECT alignment and record-batch padding.
pub(crate) const BLOCK: u64 = 4096;
/// Size of each zero-fill write when preparing a segment.
const ZERO_CHUNK: usize = 1 << 20;
const MAGIC: &[u8; 8] = b"BSLTWAL\0";
const VERSION: u32 = 1;
const SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".wal.tmp";

pub(crate) fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK) * BLOCK
}

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{SUFFIX}"))
}

fn tmp_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{TMP_SUFFIX}"))
}

/// Files found in a WAL directory.
pub(crate) struct Listing {
    /// Finished segments, ascending by id.
    pub segments: Vec<(u64, PathBuf)>,
    /// Half-prepared segments left by a crash; safe to delete.
    pub leftovers: Vec<PathBuf>,
}

/// Lists the WAL files in `dir`; other files are left alone.
pub(crate) fn list(dir: &Path) -> Result<Listing, WalError> {
    let mut listing = Listing {
        segments: Vec::new(),
        leftovers: Vec::new(),
    };
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io("listing", dir, e))?;
    for item in rd {
        let item = item.map_err(|e| WalError::io("listing", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
            if parse_id(stem).is_some() {
                listing.leftovers.push(item.path());
            }
        } else if let Some(stem) = name.strip_suffix(SUFFIX) {
            if let Some(id) = parse_id(stem) {
                listing.segments.push((id, item.path()));
            }
        }
    }
    listing.segments.sort_unstable_by_key(|(id, _)| *id);
    Ok(listing)
}

fn parse_id(stem: &str) -> Option<u64> {
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// The header block's meaningful prefix.
pub(crate) fn encode_header(id: u64, segment_bytes: u64) -> [u8; 36] {
    let mut h = [0u8; 36];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[24..32].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns the segment's size in bytes.
pub(crate) fn decode_header(block: &[u8], id: u64) -> Result<u64, String> {
    if block.len() < 36 {
        return Err("file shorter than its header".into());
    }
    if &block[0..8] != MAGIC {
        return Err("bad magic: not a basalt WAL segment".into());
    }
    let crc = u32::from_le_bytes([block[32], block[33], block[34], block[35]]);
    if crc != crc32fast::hash(&block[0..32]) {
        return Err("segment header crc mismatch".into());
    }
    let version = u32::from_le_bytes([block[8], block[9], block[10], block[11]]);
    if version != VERSION {
        return Err(format!("unsupported segment version {version}"));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&block[16..24]);
    let found = u64::from_le_bytes(b);
    if found != id {
        return Err(format!("header names segment {found}, file name says {id}"));
    }
    b.copy_from_slice(&block[24..32]);
    let bytes = u64::from_le_bytes(b);
    if bytes < 2 * BLOCK || bytes % BLOCK != 0 {
        return Err(format!("implausible segment size {bytes}"));
    }
    Ok(bytes)
}

/// Opens an existing segment for O_DIRECT reads and writes.
pub(crate) async fn open_rw(path: &Path) -> Result<DmaFile, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(|e| WalError::glommio("opening segment", path, e))
}

/// Writes `buf` at `pos`, failing on a short write (on a pre-written file a
/// short O_DIRECT write means the device is failing, not a retryable case).
pub(crate) async fn write_all(
    file: &DmaFile,
    path: &Path,
    buf: Rc<glommio::io::DmaBuffer>,
    pos: u64,
) -> Result<(), WalError> {
    let want = buf.len();
    let n = file
        .write_rc_at(buf, pos)
        .await
        .map_err(|e| WalError::glommio("writing", path, e))?;
    if n != want {
        return Err(WalError::io(
            "writing",
            path,
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write at offset {pos}: {n} of {want} bytes"),
            ),
        ));
    }
    Ok(())
}

/// Overwrites `[from, to)` with zeros and syncs (recovery's tail cut).
pub(crate) async fn zero_range(path: &Path, from: u64, to: u64) -> Result<(), WalError> {
    let file = open_rw(path).await?;
    let zeros = zero_buffer(&file, ZERO_CHUNK);
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(ZERO_CHUNK as u64);
        if n as usize == ZERO_CHUNK {
            write_all(&file, path, zeros.clone(), pos).await?;
        } else {
            write_all(&file, path, zero_buffer(&file, n as usize), pos).await?;
        }
        pos += n;
    }
    file.fdatasync()
        .await
        .map_err(|e| WalError::glommio("fdatasync", path, e))?;
    file.close()
        .await
        .map_err(|e| WalError::glommio("closing", path, e))
}

fn zero_buffer(file: &DmaFile, len: usize) -> Rc<glommio::io::DmaBuffer> {
    let mut buf = file.alloc_dma_buffer(len);
    buf.as_bytes_mut().fill(0);
    Rc::new(buf)
}

/// Syncs a directory so file creations, renames and deletions in it are
/// durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| WalError::glommio("opening directory", dir, e))?;
    d.sync()
        .await
        .map_err(|e| WalError::glommio("syncing directory", dir, e))?;
    d.close()
        .await
        .map_err(|e| WalError::glommio("closing directory", dir, e))
}

/// Creates segment `id`: allocate, write the header and zeros over the whole
/// file, fdatasync, rename to its final name, sync the directory. Returns
/// the segment opened for writing.
///
/// `stop` is asked between steps: once it says yes, preparation ends with
/// `WalError::Closed`, leaving the temporary file for recovery to delete.
/// Callers await that instead of dropping the future: a dropped future's
/// io_uring operations still run, and a late rename of this temporary file
/// would take the name of the same segment prepared by the next `Wal`
/// opened on the directory.
pub(crate) async fn prepare(
    dir: &Path,
    id: u64,
    segment_bytes: u64,
    stop: impl Fn() -> bool,
) -> Result<DmaFile, WalError> {
    let tmp = tmp_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(|e| WalError::glommio("creating segment", &tmp, e))?;
    file.pre_allocate(segment_bytes, false)
        .await
        .map_err(|e| WalError::glommio("allocating segment", &tmp, e))?;

    let zeros = zero_buffer(&file, ZERO_CHUNK);
    let mut first = file.alloc_dma_buffer(ZERO_CHUNK.min(segment_bytes as usize));
    first.as_bytes_mut().fill(0);
    first.as_bytes_mut()[..36].copy_from_slice(&encode_header(id, segment_bytes));
    let mut pos = first.len() as u64;
    write_all(&file, &tmp, Rc::new(first), 0).await?;
    while pos < segment_bytes {
        if stop() {
            return abandon(file, &tmp).await;
        }
        let n = (segment_bytes - pos).min(ZERO_CHUNK as u64);
        let buf = if n as usize == ZERO_CHUNK {
            zeros.clone()
        } else {
            zero_buffer(&file, n as usize)
        };
        write_all(&file, &tmp, buf, pos).await?;
        pos += n;
    }
    file.fdatasync()
        .await
        .map_err(|e| WalError::glommio("fdatasync", &tmp, e))?;
    if stop() {
        return abandon(file, &tmp).await;
    }
    let path = segment_path(dir, id);
    file.rename(&path)
        .await
        .map_err(|e| WalError::glommio("renaming segment", &tmp, e))?;
    sync_dir(dir).await?;
    tracing::debug!(segment = %path.display(), bytes = segment_bytes, "wal segment prepared");
    Ok(file)
}

async fn abandon(file: DmaFile, tmp: &Path) -> Result<DmaFile, WalError> {
    file.close()
        .await
        .map_err(|e| WalError::glommio("closing", tmp, e))?;
    Err(WalError::Closed)
}

/// Deletes finished segments and syncs the directory once.
pub(crate) async fn remove(dir: &Path, paths: &[PathBuf]) -> Result<(), WalError> {
    if paths.is_empty() {
        return Ok(());
    }
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io("deleting segment", p, e)),
        }
    }
    sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(7, 1 << 20);
        let mut block = vec![0u8; BLOCK as usize];
        block[..36].copy_from_slice(&h);
        assert_eq!(decode_header(&block, 7).unwrap(), 1 << 20);
        assert!(decode_header(&block, 8).is_err());
        let mut bad = block.clone();
        bad[20] ^= 1;
        assert!(decode_header(&bad, 7).is_err());
        assert!(decode_header(&[0u8; 10], 7).is_err());
    }

    #[test]
    fn names_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 2), b"").unwrap();
        std::fs::write(segment_path(dir.path(), 1), b"").unwrap();
        std::fs::write(tmp_path(dir.path(), 3), b"").unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), b"").unwrap();
        let l = list(dir.path()).unwrap();
        let ids: Vec<u64> = l.segments.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(l.leftovers.len(), 1);
    }
}
