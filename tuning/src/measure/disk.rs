//! Measured disk latency in the data dir: the durable-write paths a WAL
//! takes, bounded in count and time.
//!
//! Three phases share the time budget equally:
//! 1. **append**: 2300-byte appends, each followed by `fdatasync` — the
//!    test etcd's documentation prescribes with fio (`--bs=2300
//!    --fdatasync=1`), judged by the 10 ms p99 rule;
//! 2. **direct overwrite**: 4 KiB `O_DIRECT` writes overwriting a
//!    pre-written file, each followed by `fdatasync` — basalt's WAL path
//!    (segments are pre-written so syncs carry no metadata);
//! 3. **group commit**: 64 × 4 KiB in one `O_DIRECT` write per
//!    `fdatasync`, which tells how many entries one sync can carry.
//!
//! Everything is written below a scratch directory that is removed
//! afterwards; the data dir is otherwise untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::TuneError;
use crate::measure::latency::LatencySummary;

/// fio's block size in etcd's disk test: a typical WAL entry.
pub const ETCD_TEST_WRITE_BYTES: usize = 2300;
/// The O_DIRECT unit: a filesystem block.
pub const BLOCK_BYTES: usize = 4096;
/// Entries per sync in the group-commit phase.
pub const GROUP_BATCH_ENTRIES: usize = 64;
/// Size of the pre-written file the O_DIRECT phases overwrite.
const DIRECT_FILE_BYTES: usize = 4 << 20;
/// A disk that does not finish one sync this much after the budget has
/// hung; we stop waiting and say so.
const HANG_GRACE: Duration = Duration::from_secs(30);

/// How long and how much the disk test may write.
#[derive(Debug, Clone, Copy)]
pub struct DiskProbeConfig {
    /// Wall time for all three phases together.
    pub budget: Duration,
    /// Upper bound on syncs per phase (fio's 22 MiB of 2300 B ≈ 10,000).
    pub max_syncs: usize,
}

impl Default for DiskProbeConfig {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(2),
            max_syncs: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiskMeasurement {
    /// Phase 1: 2300 B append + fdatasync.
    pub append_fdatasync: Option<LatencySummary>,
    pub o_direct: DirectIoSupport,
    /// Phase 2: 4 KiB O_DIRECT overwrite + fdatasync.
    pub direct_overwrite_fdatasync: Option<LatencySummary>,
    /// Phase 3: 64 × 4 KiB O_DIRECT overwrite + fdatasync.
    pub group_commit: Option<GroupCommit>,
    /// Why a phase has no numbers (an I/O error, a hung sync).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DirectIoSupport {
    pub supported: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupCommit {
    pub entries_per_sync: usize,
    pub bytes_per_sync: usize,
    pub sync: LatencySummary,
    /// Syncs per second one after another (1 / mean latency).
    pub syncs_per_second: f64,
    /// Entries per second when every sync carries a full batch.
    pub entries_per_second: f64,
}

/// Checks that `data_dir` exists, is a directory and is writable, by
/// creating the scratch directory the test writes in.
pub fn create_scratch(data_dir: &Path) -> Result<PathBuf, TuneError> {
    let meta = fs::metadata(data_dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TuneError::DataDirMissing {
            path: data_dir.to_path_buf(),
        },
        _ => TuneError::DataDirNotWritable {
            path: data_dir.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(TuneError::DataDirNotDirectory {
            path: data_dir.to_path_buf(),
        });
    }
    // The pid alone could collide with a scratch left behind by a hung
    // run of an earlier process with the same pid; the clock makes it unique.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let scratch = data_dir.join(format!(".basalt-tune-{}-{nanos:09}", std::process::id()));
    fs::create_dir(&scratch).map_err(|source| TuneError::DataDirNotWritable {
        path: data_dir.to_path_buf(),
        source,
    })?;
    Ok(scratch)
}

/// Runs the three phases in `data_dir`. Fails only when the data dir
/// cannot be used at all; an I/O error or hang during the phases is
/// recorded in the measurement so the rest of the report still prints.
pub fn measure(data_dir: &Path, config: DiskProbeConfig) -> Result<DiskMeasurement, TuneError> {
    let scratch = create_scratch(data_dir)?;
    let (sender, receiver) = mpsc::channel();
    let worker_scratch = scratch.clone();
    // A sync on a failing disk can block for minutes; the worker thread
    // lets us stop waiting without killing the process.
    thread::Builder::new()
        .name("disk-probe".into())
        .spawn(move || {
            let measurement = run_phases(&worker_scratch, config);
            let _ = fs::remove_dir_all(&worker_scratch);
            let _ = sender.send(measurement);
        })
        .map_err(|source| TuneError::DiskIo {
            path: scratch.clone(),
            source,
        })?;
    match receiver.recv_timeout(config.budget + HANG_GRACE) {
        Ok(measurement) => Ok(measurement),
        Err(_) => Ok(DiskMeasurement {
            append_fdatasync: None,
            o_direct: DirectIoSupport {
                supported: false,
                error: Some("not measured".into()),
            },
            direct_overwrite_fdatasync: None,
            group_commit: None,
            error: Some(format!(
                "a write or fdatasync in {} did not return within {:?}; the disk is hung or \
                 extremely slow (the scratch directory is left behind)",
                scratch.display(),
                config.budget + HANG_GRACE
            )),
        }),
    }
}

fn run_phases(scratch: &Path, config: DiskProbeConfig) -> DiskMeasurement {
    let phase = config.budget / 3;
    let mut errors = Vec::new();

    let append_fdatasync = append_phase(&scratch.join("append"), phase, config.max_syncs)
        .map_err(|e| errors.push(format!("append phase: {e}")))
        .ok()
        .flatten();

    let direct_path = scratch.join("direct");
    let (o_direct, direct_file) = match open_direct(&direct_path) {
        Ok(file) => (
            DirectIoSupport {
                supported: true,
                error: None,
            },
            Some(file),
        ),
        Err(e) => (
            DirectIoSupport {
                supported: false,
                error: Some(e.to_string()),
            },
            None,
        ),
    };

    let mut direct_overwrite_fdatasync = None;
    let mut group_commit = None;
    if let Some(file) = direct_file {
        match overwrite_phase(&file, BLOCK_BYTES, phase, config.max_syncs) {
            Ok(summary) => direct_overwrite_fdatasync = summary,
            Err(e) => errors.push(format!("O_DIRECT overwrite phase: {e}")),
        }
        let batch = BLOCK_BYTES * GROUP_BATCH_ENTRIES;
        match overwrite_phase(&file, batch, phase, config.max_syncs) {
            Ok(Some(sync)) => {
                let syncs_per_second = 1e6 / sync.mean_us.max(1.0);
                group_commit = Some(GroupCommit {
                    entries_per_sync: GROUP_BATCH_ENTRIES,
                    bytes_per_sync: batch,
                    sync,
                    syncs_per_second,
                    entries_per_second: syncs_per_second * GROUP_BATCH_ENTRIES as f64,
                });
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("group commit phase: {e}")),
        }
    }

    DiskMeasurement {
        append_fdatasync,
        o_direct,
        direct_overwrite_fdatasync,
        group_commit,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// Appends `ETCD_TEST_WRITE_BYTES` and syncs, until the phase budget or
/// the sync count runs out. At least one sync always runs.
fn append_phase(
    path: &Path,
    budget: Duration,
    max_syncs: usize,
) -> io::Result<Option<LatencySummary>> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let record: Vec<u8> = (0..ETCD_TEST_WRITE_BYTES)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut samples = Vec::with_capacity(max_syncs.min(100_000));
    let start = Instant::now();
    while samples.len() < max_syncs && (samples.is_empty() || start.elapsed() < budget) {
        let t = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    Ok(LatencySummary::from_samples(&mut samples))
}

/// Pre-writes the O_DIRECT file (so overwrites never extend it or touch
/// unwritten extents) and opens it with O_DIRECT, proving with one
/// aligned write that the filesystem accepts direct I/O.
fn open_direct(path: &Path) -> io::Result<File> {
    {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(&vec![0u8; DIRECT_FILE_BYTES])?;
        file.sync_all()?;
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let buffer = AlignedBuffer::new(BLOCK_BYTES);
    file.write_all_at(buffer.as_slice(), 0)?;
    Ok(file)
}

/// Overwrites `unit`-sized aligned chunks in turn, syncing after each.
fn overwrite_phase(
    file: &File,
    unit: usize,
    budget: Duration,
    max_syncs: usize,
) -> io::Result<Option<LatencySummary>> {
    let buffer = AlignedBuffer::new(unit);
    let slots = (DIRECT_FILE_BYTES / unit).max(1);
    let mut samples = Vec::with_capacity(max_syncs.min(100_000));
    let start = Instant::now();
    while samples.len() < max_syncs && (samples.is_empty() || start.elapsed() < budget) {
        let offset = ((samples.len() % slots) * unit) as u64;
        let t = Instant::now();
        file.write_all_at(buffer.as_slice(), offset)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    Ok(LatencySummary::from_samples(&mut samples))
}

/// A zero-filled buffer whose start is aligned to `BLOCK_BYTES`, as
/// O_DIRECT requires; done by over-allocating and slicing, so no unsafe.
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new(len: usize) -> Self {
        let storage = vec![0x5au8; len + BLOCK_BYTES];
        let start = storage.as_ptr().align_offset(BLOCK_BYTES);
        assert!(start < BLOCK_BYTES, "a byte pointer can always be aligned");
        Self {
            storage,
            start,
            len,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned() {
        for len in [BLOCK_BYTES, 3 * BLOCK_BYTES] {
            let buffer = AlignedBuffer::new(len);
            assert_eq!(buffer.as_slice().as_ptr() as usize % BLOCK_BYTES, 0);
            assert_eq!(buffer.as_slice().len(), len);
        }
    }

    #[test]
    fn short_measurement_in_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskProbeConfig {
            budget: Duration::from_millis(150),
            max_syncs: 20,
        };
        let m = measure(dir.path(), config).unwrap();
        let append = m.append_fdatasync.expect("append phase measured");
        assert!(append.samples >= 1 && append.samples <= 20);
        assert!(append.p50_us > 0.0 && append.p99_us >= append.p50_us);
        // Only the data dir's own contents remain: the scratch is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_and_non_directory_data_dirs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            create_scratch(&missing),
            Err(TuneError::DataDirMissing { .. })
        ));
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            create_scratch(&file),
            Err(TuneError::DataDirNotDirectory { .. })
        ));
    }
}
