//! An exclusive lock on the WAL directory, so two processes (or two `Wal`s
//! in one process) never write the same log: their batches would interleave
//! and recovery would refuse the result.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::WalError;

const LOCK_FILE: &str = "LOCK";

/// Held for as long as the WAL is open; the kernel drops the lock when the
/// file is closed, including when the process dies.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| WalError::io("opening lock file", &path, e))?;
        // SAFETY: flock on a valid descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(WalError::Locked(dir.to_path_buf()));
            }
            return Err(WalError::io("locking", &path, err));
        }
        Ok(DirLock { _file: file })
    }
}
