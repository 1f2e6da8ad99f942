//! The tree file: positional writes, fdatasync, and a read-only memory map
//! that readers share through an `Arc`.
//!
//! The file only grows (in chunks, so the map is rebuilt rarely) and a page
//! below the committed end is rewritten only once no snapshot can reach it
//! (`freelist.rs`), so an old map held by a [`super::Snapshot`] stays valid
//! and consistent after the writer remaps.
//!
//! Two slow kernel operations of a compaction's switch are kept off the
//! writer's path here ([`PageFile::took_over`]): the directory fsync that
//! makes the rename durable runs on its own thread and the file's next
//! [`PageFile::sync`] waits for it (no commit to the renamed file is
//! acknowledged before its name is durable), and the replaced file is freed
//! by a thread of its own, in truncation steps, once its name is durably
//! gone and no snapshot maps it any more: the last close of an unlinked file
//! makes the filesystem free all its blocks at once, which took 70–260 ms
//! for 170 MiB on ext4, on the writer's thread or holding up its commits.
//! Every map of one file in this process shares that decision (keyed by
//! device and inode), so no snapshot, of any open, reads a cut file. A
//! reader of the file through a descriptor of its own (another process, a
//! backup tool) is outside that contract and sees it shrink to nothing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use memmap2::{Mmap, MmapOptions};

use super::error::BtreeError;
use super::freelist::Pins;

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
    /// A directory fsync started by [`PageFile::took_over`], which the next
    /// [`PageFile::sync`] must see complete.
    pending_name_sync: Option<PendingDirSync>,
}

/// A directory fsync running on its own thread, which reports its result
/// here before it goes on to drop the replaced file.
struct PendingDirSync {
    dir: PathBuf,
    done: mpsc::Receiver<std::io::Result<()>>,
}

/// The memory map of the file, and which nodes in it have already passed
/// their checksum. Nodes are immutable once committed, so a node verified
/// once needs no second CRC pass: a point read then costs a few cache lines
/// per level instead of hashing every 4 KiB page on the path.
pub(crate) struct MappedFile {
    /// The mapping this view reads, shared with the views made after it
    /// while the file still fits (see [`map_file`]).
    region: Arc<Region>,
    /// Bytes of the file this view covers: the file's length when it was
    /// made. Nothing past it is handed out (past the file's end a mapping
    /// faults with SIGBUS).
    len: usize,
    /// Shared by every map of this file in the process: a growth remaps and
    /// older maps live on in snapshots, and a reopen maps it again while
    /// snapshots of the earlier open may still read it.
    retirement: Arc<Retirement>,
}

/// A read-only mapping that reserves address space past the file's end, so
/// the file can grow into it without a new mapping. A new mapping starts
/// with no page tables: when every large commit remapped the file, the next
/// commit's reads of the nodes it changes took a page fault each (14 % of
/// a checkpoint-sized commit's CPU time, measured).
struct Region {
    bytes: Mmap,
    /// One bit per page, set for the first page of a verified node.
    verified: Box<[AtomicU64]>,
}

/// Address space reserved past the file's end by a new mapping: as much as
/// the file holds, at least this much.
const MIN_MAP_HEADROOM_BYTES: u64 = 64 << 20;

/// What happens to a file's blocks once a compaction replaced it and the
/// last map of it is gone. Closing an unlinked 170 MiB file makes ext4 free
/// every block in one go (70–260 ms measured), and a commit that needs the
/// journal meanwhile waited 30–60 ms for it; freeing it in small truncation
/// steps keeps each journal transaction small.
struct Retirement {
    /// (device, inode): the key in [`RETIREMENTS`].
    key: (u64, u64),
    /// Set (by the switch, once the rename is durable) to a descriptor of
    /// the replaced file, so it can be shrunk after every map is gone.
    fd: OnceLock<File>,
    /// Which commits snapshots of this file still read, across opens.
    pins: Arc<Pins>,
}

/// The [`Retirement`] of every file this process maps, so that every map of
/// one file shares one, however many times it was opened.
static RETIREMENTS: Mutex<BTreeMap<(u64, u64), Weak<Retirement>>> = Mutex::new(BTreeMap::new());

impl Retirement {
    fn of(file: &File, path: &Path) -> Result<Arc<Retirement>, BtreeError> {
        let m = file.metadata().map_err(io_err(path, "stat"))?;
        let key = (m.dev(), m.ino());
        // Poisoning cannot leave the map inconsistent (one insert or remove).
        let mut all = RETIREMENTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = all.get(&key).and_then(Weak::upgrade) {
            return Ok(r);
        }
        let r = Arc::new(Retirement {
            key,
            fd: OnceLock::new(),
            pins: Arc::default(),
        });
        all.insert(key, Arc::downgrade(&r));
        Ok(r)
    }
}

impl Drop for Retirement {
    fn drop(&mut self) {
        {
            let mut all = RETIREMENTS.lock().unwrap_or_else(|e| e.into_inner());
            // A new open of a reused inode may have put its own entry here.
            if all.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                all.remove(&self.key);
            }
        }
        // Armed only for a file renamed over: nobody can map it again.
        if let Some(file) = self.fd.take() {
            free_in_background(file);
        }
    }
}

/// Truncation step of a replaced file: a few MiB of blocks per journal
/// transaction.
const FREE_STEP_BYTES: u64 = 4 << 20;
/// Pause between steps, so commits get the journal in between.
const FREE_STEP_PAUSE: Duration = Duration::from_millis(5);

/// Shrinks `file` to nothing in steps on a thread of its own, then closes
/// it. Without a thread, it is closed here and the kernel frees it at once.
fn free_in_background(file: File) {
    let spawned = std::thread::Builder::new()
        .name("basalt-btree-free".into())
        .spawn(move || {
            let Ok(mut len) = file.metadata().map(|m| m.len()) else {
                return;
            };
            while len > 0 {
                len = len.saturating_sub(FREE_STEP_BYTES);
                // On error the close below frees the rest at once.
                if file.set_len(len).is_err() {
                    return;
                }
                std::thread::sleep(FREE_STEP_PAUSE);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to free a replaced tree file; freed inline");
    }
}

impl MappedFile {
    pub(crate) fn is_verified(&self, page: u64) -> bool {
        let (word, bit) = ((page / 64) as usize, page % 64);
        self.region
            .verified
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << bit) != 0)
    }

    pub(crate) fn mark_verified(&self, page: u64) {
        let (word, bit) = ((page / 64) as usize, page % 64);
        if let Some(w) = self.region.verified.get(word) {
            w.fetch_or(1 << bit, Ordering::Relaxed);
        }
    }

    /// Forgets that the node at `page` was verified: the page is about to be
    /// reused, and the node written there must pass its checksum afresh.
    pub(crate) fn clear_verified(&self, page: u64) {
        let (word, bit) = ((page / 64) as usize, page % 64);
        if let Some(w) = self.region.verified.get(word) {
            w.fetch_and(!(1 << bit), Ordering::Relaxed);
        }
    }

    /// The read pins of this file (shared by every map of it).
    pub(crate) fn pins(&self) -> &Arc<Pins> {
        &self.retirement.pins
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.region.bytes[..self.len]
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
        let map = map_file(&file, path, page_size, len, None)?;
        Ok((
            PageFile {
                path: Arc::new(path.to_path_buf()),
                file,
                map,
                len,
                page_size,
                pending_name_sync: None,
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
        self.map = map_file(&self.file, &self.path, page_size, new_len, Some(&self.map))?;
        Ok(())
    }

    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), BtreeError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(io_err(&self.path, "write"))
    }

    /// Makes everything written so far durable, including the file's name
    /// if a rename is still being synced ([`PageFile::took_over`]).
    pub(crate) fn sync(&mut self) -> Result<(), BtreeError> {
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "fdatasync"))?;
        self.wait_for_name()
    }

    /// Called after a rename gave this file `replaced`'s path. One thread
    /// fsyncs the directory, then drops `replaced`, armed to be freed in
    /// steps once no snapshot maps it ([`Retirement`]). Until
    /// [`PageFile::sync`] returns, a power loss may bring the old name back,
    /// so a caller must not acknowledge data written to this file before
    /// that; the sync waits for the directory fsync only, not for the free.
    /// Falls back to a synchronous fsync when no thread can be started.
    pub(crate) fn took_over(&mut self, replaced: PageFile) -> Result<(), BtreeError> {
        // A rename of `replaced` itself still being synced (two switches with
        // no commit between) is covered by this later fsync of the same
        // directory. This file has no sync pending (a copy is freshly
        // built), but one would be waited for and its error reported, only
        // after this rename's sync is under way so the next commit still
        // waits for one.
        let earlier = self.wait_for_name();
        let dir = parent_dir(&self.path).to_path_buf();
        let (report, done) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("basalt-btree-switch".into())
            .spawn({
                let dir = dir.clone();
                move || {
                    let synced = File::open(&dir).and_then(|d| d.sync_all());
                    // Shrinking the old file before its name is durably gone
                    // could, after a power loss, bring back a cut file under
                    // the tree's name: arm the gradual free only now.
                    if synced.is_ok() {
                        if let Ok(fd) = replaced.file.try_clone() {
                            let _ = replaced.map.retirement.fd.set(fd);
                        }
                    }
                    // The receiver is gone only if the tree was dropped.
                    let _ = report.send(synced);
                    // The free starts when the last map of it is gone: here,
                    // or when a reader drops its last snapshot of it.
                    drop(replaced);
                }
            });
        match spawned {
            Ok(_) => {
                self.pending_name_sync = Some(PendingDirSync { dir, done });
                earlier
            }
            Err(_) => earlier.and(sync_parent_dir(&self.path)),
        }
    }

    fn wait_for_name(&mut self) -> Result<(), BtreeError> {
        let Some(PendingDirSync { dir, done }) = self.pending_name_sync.take() else {
            return Ok(());
        };
        let result = done.recv().unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the directory sync thread ended without a result",
            ))
        });
        result.map_err(io_err(&dir, "fsync directory"))
    }

    /// Asks the kernel to start writing `len` bytes at `offset` to disk,
    /// without waiting: a bulk writer calls this as it goes so its data
    /// reaches the disk in a steady stream instead of one burst that queues
    /// ahead of every other file's fdatasync.
    pub(crate) fn start_writeback(&self, offset: u64, len: u64) -> Result<(), BtreeError> {
        self.sync_range(offset, len, libc::SYNC_FILE_RANGE_WRITE)
    }

    /// Waits until `len` bytes at `offset` are written out (started by
    /// [`PageFile::start_writeback`] or not): bounds how much unwritten data
    /// a bulk writer leaves in the page cache. Not a durability point (no
    /// metadata, no disk cache flush): [`PageFile::sync`] still is.
    pub(crate) fn wait_writeback(&self, offset: u64, len: u64) -> Result<(), BtreeError> {
        self.sync_range(
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    fn sync_range(&self, offset: u64, len: u64, flags: libc::c_uint) -> Result<(), BtreeError> {
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(BtreeError::Io {
                path: self.path.to_path_buf(),
                op: "sync_file_range",
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        };
        // SAFETY: plain syscall on a file descriptor this struct owns; no
        // memory is passed.
        let rc = unsafe { libc::sync_file_range(self.file.as_raw_fd(), off, n, flags) };
        if rc != 0 {
            return Err(BtreeError::Io {
                path: self.path.to_path_buf(),
                op: "sync_file_range",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// A view of the whole file (`len` bytes): in `previous`'s mapping if the
/// file still fits it, else in a new mapping reserving headroom past the
/// end, into which verified marks carry over.
fn map_file(
    file: &File,
    path: &Path,
    page_size: u64,
    len: u64,
    previous: Option<&MappedFile>,
) -> Result<Arc<MappedFile>, BtreeError> {
    let too_large = || BtreeError::Io {
        path: path.to_path_buf(),
        op: "mmap",
        source: std::io::Error::other(format!("{len} bytes do not fit the address space")),
    };
    let view_len = usize::try_from(len).map_err(|_| too_large())?;
    let region = match previous {
        Some(p) if p.region.bytes.len() >= view_len => p.region.clone(),
        _ => {
            let reserve = len
                .checked_add(len.max(MIN_MAP_HEADROOM_BYTES))
                .map(|r| r.div_ceil(page_size) * page_size)
                .and_then(|r| usize::try_from(r).ok())
                .ok_or_else(too_large)?;
            // SAFETY: the map is read-only and basalt never truncates the
            // committed part of a tree file, and rewrites a page in place only
            // once no snapshot can reach it (`freelist.rs`, pinned); bytes
            // past the committed end are never handed to readers, nor is
            // anything past the file's length (`MappedFile::len`), where the
            // reservation would fault. Another process modifying the file is
            // outside the contract (the data directory is owned by one
            // server).
            let bytes = unsafe { MmapOptions::new().len(reserve).map(file) }
                .map_err(io_err(path, "mmap"))?;
            let pages = reserve as u64 / page_size;
            let verified: Box<[AtomicU64]> = (0..pages.div_ceil(64) as usize)
                .map(|w| {
                    let old = previous.and_then(|p| p.region.verified.get(w));
                    AtomicU64::new(old.map_or(0, |o| o.load(Ordering::Relaxed)))
                })
                .collect();
            Arc::new(Region { bytes, verified })
        }
    };
    let retirement = match previous {
        Some(p) => p.retirement.clone(),
        None => Retirement::of(file, path)?,
    };
    Ok(Arc::new(MappedFile {
        region,
        len: view_len,
        retirement,
    }))
}

/// fsyncs the directory holding `path`, so a created or renamed entry is durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), BtreeError> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PageFile {
        pub(crate) fn name_sync_pending(&self) -> bool {
            self.pending_name_sync.is_some()
        }
    }

    #[test]
    fn sync_waits_for_the_name_sync_and_the_old_file_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (path, new_path) = (dir.path().join("f"), dir.path().join("f.new"));
        let (mut old, _) = PageFile::open(&path, 1024).unwrap();
        old.ensure_len(4096, false).unwrap();
        old.write_at(&[7; 4096], 0).unwrap();
        let reader = old.map().clone();
        let (mut new, _) = PageFile::open(&new_path, 1024).unwrap();
        std::fs::rename(&new_path, &path).unwrap();
        new.took_over(old).unwrap();
        assert!(new.name_sync_pending());
        new.write_at(&[1; 1024], 0).unwrap();
        new.sync().unwrap();
        assert!(!new.name_sync_pending());
        // A reader holding the replaced file's map keeps reading it (now
        // unlinked); dropping it hands the unmap to another thread.
        assert!(reader.iter().all(|&b| b == 7));
        drop(reader);
    }

    #[test]
    fn replaced_file_is_freed_only_after_its_last_map_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, new_path) = (dir.path().join("f"), dir.path().join("f.new"));
        let (mut old, _) = PageFile::open(&path, 1024).unwrap();
        old.ensure_len(64 << 10, false).unwrap();
        old.write_at(&[7; 64 << 10], 0).unwrap();
        let before_growth = old.map().clone();
        // A growth remaps: the older map lives on in a reader.
        old.ensure_len(12 << 20, false).unwrap();
        let observer = File::open(&path).unwrap();
        let (mut new, _) = PageFile::open(&new_path, 1024).unwrap();
        std::fs::rename(&new_path, &path).unwrap();
        new.took_over(old).unwrap();
        new.sync().unwrap();
        // The switch thread dropped its file and newest map; the reader's
        // older map must keep every byte readable (a cut would SIGBUS).
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(observer.metadata().unwrap().len(), 12 << 20);
        assert!(before_growth.iter().all(|&b| b == 7));
        drop(before_growth);
        let start = std::time::Instant::now();
        while observer.metadata().unwrap().len() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the replaced file was never freed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn replaced_file_is_not_cut_under_a_reader_of_an_earlier_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, new_path) = (dir.path().join("f"), dir.path().join("f.new"));
        let (mut first_open, _) = PageFile::open(&path, 1024).unwrap();
        first_open.ensure_len(8192, false).unwrap();
        first_open.write_at(&[7; 8192], 0).unwrap();
        // A snapshot of the first open outlives it, across a reopen.
        let reader = first_open.map().clone();
        drop(first_open);
        let (mut reopened, _) = PageFile::open(&path, 1024).unwrap();
        reopened.ensure_len(8 << 20, false).unwrap();
        let observer = File::open(&path).unwrap();
        let (mut new, _) = PageFile::open(&new_path, 1024).unwrap();
        std::fs::rename(&new_path, &path).unwrap();
        new.took_over(reopened).unwrap();
        new.sync().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(observer.metadata().unwrap().len(), 8 << 20);
        assert!(reader[..8192].iter().all(|&b| b == 7));
        drop(reader);
        let start = std::time::Instant::now();
        while observer.metadata().unwrap().len() > 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "never freed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn growth_within_the_reservation_keeps_the_mapping_and_shows_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = PageFile::open(&dir.path().join("f"), 4096).unwrap();
        f.ensure_len(8192, false).unwrap();
        let first = f.map().clone();
        assert_eq!(first.len(), 8192, "a view never shows past the file's end");
        f.write_at(&[9; 4096], 8192).unwrap();
        f.ensure_len(3 * 4096, true).unwrap();
        let grown = f.map().clone();
        assert!(Arc::ptr_eq(&first.region, &grown.region), "no remap");
        assert_eq!(grown.len() as u64, f.len());
        assert_eq!(grown[8192..12288], [9; 4096]);
        assert_eq!(first.len(), 8192, "older views keep their length");
        // Verified marks are shared by views of one mapping.
        first.mark_verified(2);
        assert!(grown.is_verified(2));
        // Past the reservation the file gets a new mapping, marks carried.
        let past = first.region.bytes.len() as u64 + 4096;
        f.ensure_len(past, false).unwrap();
        let remapped = f.map().clone();
        assert!(!Arc::ptr_eq(&first.region, &remapped.region));
        assert!(remapped.is_verified(2));
        assert_eq!(remapped.len() as u64, past);
        assert_eq!(remapped[8192..12288], [9; 4096]);
    }
}
