//! The whole store as one self-describing stream, and restore from it.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "BASALT-MVCC-SNAP" | format u32 | applied index u64
//! { key len u32 | value len u32 | key | value }*      ascending tree keys
//! end marker u32 = 0xFFFF_FFFF | entry count u64 | CRC32 of all bytes before it
//! ```
//!
//! The stream carries the store's logical entries (pending writes merged),
//! so a snapshot needs no checkpoint first and is independent of page layout.
//! Restore writes into a temporary tree and renames it into place only after
//! the CRC matched, so a bad stream never replaces a good store.

use std::io::{Read, Write};
use std::path::Path;

use crate::btree::TreeOptions;

use super::backend::Backend;
use super::error::MvccError;
use super::layers::Overlay;
use super::store::{Store, TREE_FILE};

const MAGIC: &[u8; 16] = b"BASALT-MVCC-SNAP";
const FORMAT: u32 = 1;
const END: u32 = u32::MAX;
/// Larger than any key or value etcd accepts (requests are <= 1.5 MiB by
/// default, configurable); bounds allocation on a corrupt length.
const MAX_FIELD_BYTES: u32 = 256 << 20;
/// Entries restored per tree commit, so memory stays bounded.
const RESTORE_BATCH: usize = 64 * 1024;

struct CrcWriter<'w> {
    out: &'w mut dyn Write,
    crc: crc32fast::Hasher,
}

impl CrcWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), MvccError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).map_err(stream_error)
    }
}

fn stream_error(source: std::io::Error) -> MvccError {
    MvccError::Io {
        path: "<snapshot stream>".into(),
        source,
    }
}

impl Store {
    /// Writes the whole state (keys, history, leases, meta, applied index).
    pub fn write_snapshot(&self, out: &mut dyn Write) -> Result<(), MvccError> {
        let mut w = CrcWriter {
            out,
            crc: crc32fast::Hasher::new(),
        };
        w.put(MAGIC)?;
        w.put(&FORMAT.to_le_bytes())?;
        w.put(&self.last_applied().to_le_bytes())?;
        let mut entries = 0u64;
        self.for_each_entry(|k, v| {
            let (klen, vlen) = match (u32::try_from(k.len()), u32::try_from(v.len())) {
                (Ok(kl), Ok(vl)) if kl <= MAX_FIELD_BYTES && vl <= MAX_FIELD_BYTES => (kl, vl),
                _ => {
                    return Err(MvccError::InvalidRequest(format!(
                        "entry of {} + {} bytes exceeds the snapshot field limit",
                        k.len(),
                        v.len()
                    )))
                }
            };
            w.put(&klen.to_le_bytes())?;
            w.put(&vlen.to_le_bytes())?;
            w.put(k)?;
            w.put(v)?;
            entries += 1;
            Ok(())
        })?;
        w.put(&END.to_le_bytes())?;
        w.put(&entries.to_le_bytes())?;
        let crc = w.crc.clone().finalize();
        w.out.write_all(&crc.to_le_bytes()).map_err(stream_error)?;
        w.out.flush().map_err(stream_error)
    }

    /// Replaces the store in `dir` with the one in `input` (the store must
    /// not be open). Verifies the stream fully before anything is replaced.
    pub fn restore_snapshot(input: &mut dyn Read, dir: &Path) -> Result<(), MvccError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MvccError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let target = dir.join(TREE_FILE);
        let temp = dir.join(format!("{TREE_FILE}.restoring"));
        if temp.exists() {
            std::fs::remove_file(&temp).map_err(io(&temp))?;
        }
        let result = restore_into(input, &temp);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, &target).map_err(io(&target))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }
}

struct CrcReader<'r> {
    input: &'r mut dyn Read,
    crc: crc32fast::Hasher,
}

impl CrcReader<'_> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>, MvccError> {
        let mut buf = vec![0u8; n];
        self.input.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                MvccError::Corrupt("snapshot stream ends early".into())
            } else {
                stream_error(e)
            }
        })?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, MvccError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, MvccError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Loads the stream into a fresh tree at `path`. Batches are committed with
/// user_meta 0; only the last commit, after the CRC matched, records the
/// snapshot's applied index (a half-restored file is never renamed anyway).
fn restore_into(input: &mut dyn Read, path: &Path) -> Result<(), MvccError> {
    let mut r = CrcReader {
        input,
        crc: crc32fast::Hasher::new(),
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(MvccError::Corrupt(
            "not a basalt MVCC snapshot (bad magic)".into(),
        ));
    }
    let format = r.u32()?;
    if format != FORMAT {
        return Err(MvccError::Corrupt(format!(
            "snapshot format {format}, this build reads {FORMAT}"
        )));
    }
    let applied = r.u64()?;
    let mut backend = Backend::open(path, TreeOptions::default())?;
    let mut batch = Overlay::new();
    let mut entries = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let klen = r.u32()?;
        if klen == END {
            break;
        }
        let vlen = r.u32()?;
        if klen > MAX_FIELD_BYTES || vlen > MAX_FIELD_BYTES {
            return Err(MvccError::Corrupt(format!(
                "snapshot entry {entries} claims {klen} + {vlen} bytes"
            )));
        }
        let key = r.take(klen as usize)?;
        let value = r.take(vlen as usize)?;
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(MvccError::Corrupt(format!(
                "snapshot entry {entries} is out of order"
            )));
        }
        last_key = Some(key.clone());
        batch.insert(key, Some(value));
        entries += 1;
        if batch.len() >= RESTORE_BATCH {
            backend.commit(&batch, 0)?;
            batch.clear();
        }
    }
    let count = r.u64()?;
    let expected = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    r.input.read_exact(&mut crc).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            MvccError::Corrupt("snapshot stream ends before its checksum".into())
        } else {
            stream_error(e)
        }
    })?;
    let found = u32::from_le_bytes(crc);
    if found != expected {
        return Err(MvccError::Corrupt(format!(
            "snapshot checksum mismatch: stream says {found:#010x}, content hashes to {expected:#010x}"
        )));
    }
    if count != entries {
        return Err(MvccError::Corrupt(format!(
            "snapshot holds {entries} entries, trailer says {count}"
        )));
    }
    backend.commit(&batch, applied)?;
    // The checksum proves the bytes arrived intact; this proves they make a
    // consistent store (e.g. not one written by an incompatible version).
    let dir = path.parent().unwrap_or(Path::new("."));
    Store::from_backend(dir, backend)?.verify()
}
