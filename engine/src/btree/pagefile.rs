//! The tree file: positional writes, fdatasync, and a read-only memory map
//! that readers share through an `Arc`.
//!
//! The file only grows (in chunks, so the map is rebuilt rarely) and pages
//! below the committed end are never rewritten, so an old map held by a
//! [`super::Snapshot`] stays valid and consistent after the writer remaps.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::error::BtreeError;

/// Smallest growth step of the file, in pages.
const MIN_GROWTH_PAGES: u64 = 256;

pub(crate) struct PageFile {
    pub path: Arc<PathBuf>,
    file: File,
    map: Arc<Mmap>,
    len: u64,
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
    pub(crate) fn open(path: &Path) -> Result<(PageFile, bool), BtreeError> {
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
        let map = map_file(&file, path)?;
        Ok((
            PageFile {
                path: Arc::new(path.to_path_buf()),
                file,
                map,
                len,
            },
            !existed || len == 0,
        ))
    }

    pub(crate) fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Makes the file at least `needed` bytes long (growing by a chunk
    /// proportional to its size) and remaps it if it grew.
    pub(crate) fn ensure_len(&mut self, needed: u64, page_size: u64) -> Result<(), BtreeError> {
        if needed <= self.len {
            return Ok(());
        }
        let step = (self.len / 8).max(MIN_GROWTH_PAGES * page_size);
        let new_len = needed.max(self.len + step).div_ceil(page_size) * page_size;
        self.file
            .set_len(new_len)
            .map_err(io_err(&self.path, "grow (set_len)"))?;
        self.len = new_len;
        self.map = map_file(&self.file, &self.path)?;
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

fn map_file(file: &File, path: &Path) -> Result<Arc<Mmap>, BtreeError> {
    // SAFETY: the map is read-only and basalt never rewrites or truncates the
    // committed part of a tree file in place; bytes past the committed end are
    // never handed to readers. Another process modifying the file is outside
    // the contract (the data directory is owned by one server).
    let map = unsafe { Mmap::map(file) }.map_err(io_err(path, "mmap"))?;
    Ok(Arc::new(map))
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
