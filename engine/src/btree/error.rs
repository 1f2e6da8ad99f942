//! The one error type of the B+tree layer.

use std::path::PathBuf;

/// Everything that can go wrong in [`crate::btree`]. Each variant carries what a
/// person needs to act on it: the file, the page, what was expected and found.
#[derive(Debug, thiserror::Error)]
pub enum BtreeError {
    /// An operating-system call on the tree file failed.
    #[error("b+tree file {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A page failed validation (checksum, header, bounds): the file is damaged.
    #[error("b+tree file {path}: page {page} is corrupt: {reason}")]
    CorruptPage {
        path: PathBuf,
        page: u64,
        reason: String,
    },
    /// Neither meta slot holds a valid commit, so the file cannot be opened.
    #[error("b+tree file {path}: no valid meta slot (slot 0: {slot0}; slot 1: {slot1})")]
    NoValidMeta {
        path: PathBuf,
        slot0: String,
        slot1: String,
    },
    /// The file was created with another page size than the one asked for.
    #[error("b+tree file {path}: page size is {found} bytes, options ask for {expected}")]
    PageSizeMismatch {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// Options that cannot work (page size not a power of two, …).
    #[error("invalid b+tree options: {0}")]
    InvalidOptions(String),
    /// A key longer than [`crate::btree::MAX_KEY_BYTES`] or empty.
    #[error("key of {len} bytes is outside 1..={max} bytes")]
    KeySize { len: usize, max: usize },
    /// A value longer than [`crate::btree::MAX_VALUE_BYTES`].
    #[error("value of {len} bytes is larger than the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    /// The compacted file belongs to a compaction that was abandoned or
    /// superseded by a newer one.
    #[error("b+tree file {path}: this compaction was abandoned or superseded")]
    CompactionAbandoned { path: PathBuf },
    /// An earlier fdatasync failed; the kernel may have dropped dirty pages, so
    /// no later write can be trusted until the file is reopened.
    #[error("b+tree file {path} is poisoned by an earlier failed sync; reopen it")]
    Poisoned { path: PathBuf },
}
