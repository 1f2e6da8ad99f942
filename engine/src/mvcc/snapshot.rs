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
//! so a snapshot needs no checkpoint first and is independent of page layout
//! and of the shard count: stores with 1 and with 4 shards holding the same
//! state write the same stream.
//!
//! Restore builds the new tree files in a staging directory; only after the
//! CRC matched and the new store verified does it write (and sync) a ready
//! marker, then rename the files into place. A crash before the marker
//! leaves the old store; after it, [`Store::open`] finishes the renames, so
//! a store is never a mix of old and new files.

use std::io::{Read, Write};
use std::path::Path;

use super::backend::{recorded_shards, remove_stale_shard_files, Backend};
use super::error::MvccError;
use super::layers::{overlay_writes, Overlay};
use super::shard::{shard_file, INDEX_FILE, MAX_SHARDS};
use super::store::{Store, StoreOptions};

const MAGIC: &[u8; 16] = b"BASALT-MVCC-SNAP";
const FORMAT: u32 = 1;
const END: u32 = u32::MAX;
/// Larger than any key or value etcd accepts (requests are <= 1.5 MiB by
/// default, configurable); bounds allocation on a corrupt length.
const MAX_FIELD_BYTES: u32 = 256 << 20;
/// Entries restored per tree commit, so memory stays bounded.
const RESTORE_BATCH: usize = 64 * 1024;
/// Directory (inside the store's) where a restore builds the new files.
const STAGING_DIR: &str = "mvcc.restoring";
/// Written, holding the new shard count, once the staged files are complete
/// and synced: from then on the restore is finished even after a crash.
const READY_MARKER: &str = "mvcc.restore-ready";

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
        write_stream(self.last_applied(), out, |f| self.for_each_entry(f))
    }

    /// Replaces the store in `dir` with the one in `input` (the store must
    /// not be open). Verifies the stream fully before anything is replaced.
    /// Keeps the shard count of the store in `dir` (1 if there is none).
    pub fn restore_snapshot(input: &mut dyn Read, dir: &Path) -> Result<(), MvccError> {
        finish_staged_restore(dir)?;
        let shards = recorded_shards(dir).unwrap_or(1).max(1);
        let opts = StoreOptions {
            shards,
            ..StoreOptions::default()
        };
        Store::restore_snapshot_with(input, dir, &opts)
    }

    /// [`Store::restore_snapshot`] into a store laid out as `opts` says
    /// (the shard count of the restored store is `opts.shards`).
    pub fn restore_snapshot_with(
        input: &mut dyn Read,
        dir: &Path,
        opts: &StoreOptions,
    ) -> Result<(), MvccError> {
        restore_staged(dir, opts, |staging| restore_into(input, staging, opts))
    }
}

/// Builds a new store with `build` in a staging directory inside `dir`,
/// then moves it into place (see the module doc); on an error from `build`
/// the staging directory is removed and `dir` keeps its store.
pub(super) fn restore_staged<E: From<MvccError>>(
    dir: &Path,
    opts: &StoreOptions,
    build: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    finish_staged_restore(dir)?;
    let staging = dir.join(STAGING_DIR);
    remove_dir_if_present(&staging)?;
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    if let Err(e) = build(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    sync_dir(&staging)?;
    let marker = dir.join(READY_MARKER);
    std::fs::write(&marker, opts.shards.to_string()).map_err(io(&marker))?;
    std::fs::File::open(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io(&marker))?;
    sync_dir(dir)?;
    Ok(finish_staged_restore(dir)?)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MvccError {
    let path = path.to_path_buf();
    move |source| MvccError::Io { path, source }
}

fn sync_dir(dir: &Path) -> Result<(), MvccError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn remove_dir_if_present(dir: &Path) -> Result<(), MvccError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

/// Completes a restore whose files were staged and marked ready (renames
/// them into place, drops shard files the new layout does not have), or
/// discards one that never got that far. Idempotent: a crash anywhere in
/// here is finished by the next call. Run before the store is opened.
pub(super) fn finish_staged_restore(dir: &Path) -> Result<(), MvccError> {
    let marker = dir.join(READY_MARKER);
    let staging = dir.join(STAGING_DIR);
    let shards = match std::fs::read_to_string(&marker) {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SHARDS).contains(n))
            .ok_or_else(|| {
                MvccError::Corrupt(format!(
                    "restore marker {} holds {text:?}, not a shard count",
                    marker.display()
                ))
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Never marked ready: a restore that died half-way.
            return remove_dir_if_present(&staging);
        }
        Err(e) => return Err(io(&marker)(e)),
    };
    let names = std::iter::once(INDEX_FILE.to_string()).chain((0..shards).map(shard_file));
    for name in names {
        let from = staging.join(&name);
        if from.exists() {
            let to = dir.join(&name);
            std::fs::rename(&from, &to).map_err(io(&to))?;
        }
    }
    remove_stale_shard_files(dir, shards)?;
    sync_dir(dir)?;
    remove_dir_if_present(&staging)?;
    std::fs::remove_file(&marker).map_err(io(&marker))?;
    sync_dir(dir)
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

/// Loads the stream into a fresh store in `dir`. Batches are committed with
/// user_meta 0; only the last commit, after the CRC matched, records the
/// snapshot's applied index (a half-restored store is never used anyway).
fn restore_into(input: &mut dyn Read, dir: &Path, opts: &StoreOptions) -> Result<(), MvccError> {
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
    let mut backend = Backend::open(dir, opts.tree, opts.shards)?;
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
            backend.commit(overlay_writes(&batch), 0)?;
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
    backend.commit(overlay_writes(&batch), applied)?;
    // The checksum proves the bytes arrived intact; this proves they make a
    // consistent store (e.g. not one written by an incompatible version).
    Store::from_backend(dir, backend)?.verify()
}

/// Called with each (key, value) of a state, in key order.
pub(super) type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), MvccError> + 'a;

/// The stream of a state whose entries `each` visits in key order.
fn write_stream(
    applied: u64,
    out: &mut dyn Write,
    each: impl FnOnce(&mut EntryVisitor<'_>) -> Result<(), MvccError>,
) -> Result<(), MvccError> {
    let mut w = CrcWriter {
        out,
        crc: crc32fast::Hasher::new(),
    };
    w.put(MAGIC)?;
    w.put(&FORMAT.to_le_bytes())?;
    w.put(&applied.to_le_bytes())?;
    let mut entries = 0u64;
    each(&mut |k, v| {
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

impl super::view::ReadView {
    /// Writes the state as of this view, in the same stream as
    /// [`Store::write_snapshot`] (a store restored from it has this view's
    /// applied index). Runs on any thread; memory stays bounded by what
    /// `out` buffers.
    pub fn write_snapshot(&self, out: &mut dyn Write) -> Result<(), MvccError> {
        write_stream(self.applied_index(), out, |f| self.for_each_entry(f))
    }
}
