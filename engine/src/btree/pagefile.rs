//! The tree file: positional writes, fdatasync, and a read-only memory map
//! that readers share through an `Arc`.
//!
//! The file only grows (in chunks, so the map is rebuilt rarely) and pages
//! below the committed end are never rewritten, so an old map held by a
//! [`super::Snapshot`] stays valid and consistent after the writer remaps.

use std::fs::{File, OpenOptions};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;

use super::error::BtreeError;

/// Smallest growth step of the file, in pages.
const MIN_GROWTH_PAGES: u64 = 256;
/// Largest growth step: bounds the stall of the commit that pays for it.
const MAX_GROWTH_BYTES: u64 = 8 << 20;

pub(crate) struct PageFile {
    pub path: Arc<PathBuf>,
    file: File,
    map: Arc<MappedFile>,
    len: u64,
    page_size: u64,
}

/// The memory map of the file, and which nodes in it have already passed
/// their checksum. Nodes are immutable once committed, so a node verified
/// once needs no second CRC pass: a point read then costs a few cache lines
/// per level instead of hashing every 4 KiB page on the path.
pub(crate) struct MappedFile {
    bytes: Mmap,
    /// One bit per page, set for the first page of a verified node.
    verified: Box<[AtomicU64]>,
}

impl MappedFile {
    pub(crate) fn is_verified(&self, page: u64) -> bool {
        let (word, bit) = ((page / 64) as usize, page % 64);
        self.verified
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << bit) != 0)
    }

    pub(crate) fn mark_verified(&self, page: u64) {
        let (word, bit) = ((page / 64) as usize, page % 64);
        if let Some(w) = self.verified.get(word) {
            w.fetch_or(1 << bit, Ordering::Relaxed);
        }
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

pub(crate) fn io_err<'p>(
    path: &'p Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> BtreeError + 'p {
    move |source| BtreeError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl PageFile {
    /// Opens (creating if missing) the file at `path`.
    pub(crate) fn open(path: &Path, page_size: u64) -> Result<(PageFile, bool), BtreeError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path, "open"))?;
        if !existed {
            sync_parent_dir(path)?;
        }
        let len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let map = map_file(&file, path, page_size, None)?;
        Ok((
            PageFile {
                path: Arc::new(path.to_path_buf()),
                file,
                map,
                len,
                page_size,
            },
            !existed || len == 0,
        ))
    }

    pub(crate) fn map(&self) -> &Arc<MappedFile> {
        &self.map
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Makes the file at least `needed` bytes long and remaps it if it grew.
    ///
    /// With `prewrite`, the file also gets a chunk past `needed` (1/16 of its
    /// size, 1 to 8 MiB) written with zeros, flushed by the caller's next
    /// fdatasync: later commits then land in blocks already allocated and
    /// written, which makes their fdatasync a pure data flush instead of also
    /// committing the filesystem journal for new blocks (measured: ~5.3 →
    /// ~3.3 ms median per single-key commit on the shared CI disk). The part
    /// up to `needed` is not zeroed: the caller is about to write all of it.
    /// Without `prewrite` (bulk writes that sync once at the end) the file is
    /// just extended.
    pub(crate) fn ensure_len(&mut self, needed: u64, prewrite: bool) -> Result<(), BtreeError> {
        if needed <= self.len {
            return Ok(());
        }
        let page_size = self.page_size;
        let needed = needed.div_ceil(page_size) * page_size;
        let new_len = if prewrite {
            let step = (self.len / 16).clamp(MIN_GROWTH_PAGES * page_size, MAX_GROWTH_BYTES);
            needed + step
        } else {
            needed
        };
        // Never zero what is already on disk past the mapped length (a new
        // file's first meta slot is written before it first grows).
        let on_disk = self
            .file
            .metadata()
            .map_err(io_err(&self.path, "stat"))?
            .len();
        let mut at = needed.max(on_disk);
        if at < new_len {
            let zeros = vec![0u8; (new_len - at).min(1 << 20) as usize];
            while at < new_len {
                let n = (new_len - at).min(zeros.len() as u64) as usize;
                self.write_at(&zeros[..n], at)?;
                at += n as u64;
            }
        }
        if on_disk < new_len {
            // Covers `prewrite == false` and a zero-length tail.
            self.file
                .set_len(new_len)
                .map_err(io_err(&self.path, "grow (set_len)"))?;
        }
        self.len = new_len;
        self.map = map_file(&self.file, &self.path, page_size, Some(&self.map))?;
        Ok(())
    }

    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), BtreeError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(io_err(&self.path, "write"))
    }

    pub(crate) fn sync(&self) -> Result<(), BtreeError> {
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "fdatasync"))
    }
}

/// Maps the whole file; verified marks carry over from the `previous` map.
fn map_file(
    file: &File,
    path: &Path,
    page_size: u64,
    previous: Option<&MappedFile>,
) -> Result<Arc<MappedFile>, BtreeError> {
    // SAFETY: the map is read-only and basalt never rewrites or truncates the
    // committed part of a tree file in place; bytes past the committed end are
    // never handed to readers. Another process modifying the file is outside
    // the contract (the data directory is owned by one server).
    let bytes = unsafe { Mmap::map(file) }.map_err(io_err(path, "mmap"))?;
    let pages = bytes.len() as u64 / page_size;
    let verified: Box<[AtomicU64]> = (0..pages.div_ceil(64) as usize)
        .map(|w| {
            let old = previous.and_then(|p| p.verified.get(w));
            AtomicU64::new(old.map_or(0, |o| o.load(Ordering::Relaxed)))
        })
        .collect();
    Ok(Arc::new(MappedFile { bytes, verified }))
}

/// fsyncs the directory holding `path`, so a created or renamed entry is durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), BtreeError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}
