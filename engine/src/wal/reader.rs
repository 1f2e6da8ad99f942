//! Reading entries back from the segment files, for Raft (a leader sends
//! old entries to a lagging follower) and for replay after a restart.
//!
//! Reads are plain `pread`s on a buffered, read-only `std::fs::File`, while
//! the writer writes the same files with O_DIRECT. That is coherent on
//! Linux because (1) only ranges whose batch has completed its write and
//! fdatasync are ever indexed, hence read; (2) a direct write invalidates
//! the page-cache pages over the range it wrote once it completes, so a
//! page cached earlier (the zeros of a fresh segment, seen by recovery's
//! mmap or by a neighbouring read) cannot hide the new bytes; and (3) no
//! block is written twice once it holds a batch: batches start on fresh
//! 4 KiB blocks and a segment is never rewritten. Reads are synchronous
//! (Raft's `Storage` trait is), which costs the executor microseconds when
//! the pages are cached — the usual case for the recent entries a follower
//! lacks — and a disk read when they are not.
//!
//! Every record read is checked again (CRC, index, term, length): bytes
//! are trusted at both ends of the disk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::entry::Entry;
use super::error::WalError;
use super::index::{Loc, LogIndex};
use super::record::{self, RecordRef, ENTRY_RECORD_OVERHEAD};
use super::segment;

/// Largest single `pread`: a run of entries is read in one call up to this
/// size, longer runs in several.
const MAX_READ_BYTES: u64 = 1 << 20;
/// Entries of consecutive batches are separated by padding and a batch
/// start; a run spans such a gap (reading it is cheaper than another
/// syscall) when it is at most this long.
const MAX_GAP_BYTES: u64 = 2 * segment::BLOCK;

/// Open read handles on the segment files, and a reusable read buffer.
pub(crate) struct SegmentReader {
    dir: PathBuf,
    /// `(segment id, file)`, few entries (one per retained segment).
    files: Vec<(u64, File)>,
    buf: Vec<u8>,
}

impl SegmentReader {
    pub fn new(dir: &Path) -> Self {
        SegmentReader {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Closes the handles of segments that were deleted.
    pub fn forget_below(&mut self, segment: u64) {
        self.files.retain(|(id, _)| *id >= segment);
    }

    /// Reads entries `lo..hi` (all indexed) into `out`, stopping once
    /// their data exceeds `max_bytes` but always returning at least one.
    pub fn read(
        &mut self,
        index: &LogIndex,
        lo: u64,
        hi: u64,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), WalError> {
        let hi = lo + count_within(index, lo, hi, max_bytes)?;
        let mut i = lo;
        while i < hi {
            let first = loc(index, i)?;
            let mut end = first.offset as u64 + first.len as u64;
            let mut j = i + 1;
            while j < hi {
                let l = loc(index, j)?;
                let start = l.offset as u64;
                if l.segment != first.segment
                    || start < end
                    || start - end > MAX_GAP_BYTES
                    || start + l.len as u64 - first.offset as u64 > MAX_READ_BYTES
                {
                    break;
                }
                end = start + l.len as u64;
                j += 1;
            }
            self.read_run(index, i, j, first, end, out)?;
            i = j;
        }
        Ok(())
    }

    /// Reads entries `i..j`, which lie in one segment within
    /// `[first.offset, end)`, with one `pread`.
    fn read_run(
        &mut self,
        index: &LogIndex,
        i: u64,
        j: u64,
        first: Loc,
        end: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), WalError> {
        let base = first.offset as u64;
        let len = (end - base) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len, 0);
        let dir = &self.dir;
        let read = file_for(&mut self.files, dir, first.segment)
            .and_then(|f| {
                f.read_exact_at(&mut buf, base).map_err(|e| {
                    WalError::io(
                        "reading segment",
                        segment::segment_path(dir, first.segment),
                        e,
                    )
                })
            })
            .and_then(|()| {
                for k in i..j {
                    let l = loc(index, k)?;
                    let at = (l.offset as u64 - base) as usize;
                    let want_term = index.term(k).unwrap_or(0);
                    out.push(self.decode(&buf[at..at + l.len as usize], k, want_term, l)?);
                }
                Ok(())
            });
        self.buf = buf;
        read
    }

    /// Checks one record read back against what the index says it is.
    fn decode(&self, bytes: &[u8], index: u64, term: u64, l: Loc) -> Result<Entry, WalError> {
        let corrupt = |reason: String| WalError::Corrupt {
            path: segment::segment_path(&self.dir, l.segment),
            offset: l.offset as u64,
            reason,
        };
        let (r, len) = record::decode_ref(bytes)
            .map_err(|e| corrupt(format!("reading back entry {index}: {e}")))?;
        match r {
            RecordRef::Entry(e) if e.index == index && e.term == term && len == bytes.len() => {
                Ok(e.to_entry())
            }
            RecordRef::Entry(e) => Err(corrupt(format!(
                "read back entry {} (term {}, {len} bytes) where the index has entry {index} \
                 (term {term}, {} bytes)",
                e.index,
                e.term,
                bytes.len()
            ))),
            _ => Err(corrupt(format!(
                "read back a non-entry record where entry {index} should be"
            ))),
        }
    }
}

/// The open read handle of `segment`, opened on first use.
fn file_for<'a>(
    files: &'a mut Vec<(u64, File)>,
    dir: &Path,
    segment: u64,
) -> Result<&'a File, WalError> {
    let at = match files.iter().position(|(id, _)| *id == segment) {
        Some(at) => at,
        None => {
            let path = segment::segment_path(dir, segment);
            let f = File::open(&path)
                .map_err(|e| WalError::io("opening segment for reading", &path, e))?;
            files.push((segment, f));
            files.len() - 1
        }
    };
    Ok(&files[at].1)
}

fn loc(index: &LogIndex, i: u64) -> Result<Loc, WalError> {
    index.loc(i).ok_or(WalError::Unavailable {
        index: i,
        last_index: index.next() - 1,
    })
}

/// How many entries from `lo` (at most `hi - lo`, at least one) fit in
/// `max_bytes` of data, from the record lengths in the index.
fn count_within(index: &LogIndex, lo: u64, hi: u64, max_bytes: u64) -> Result<u64, WalError> {
    let mut total = 0u64;
    let mut n = 0;
    while lo + n < hi {
        let l = loc(index, lo + n)?;
        total += (l.len as u64).saturating_sub(ENTRY_RECORD_OVERHEAD as u64);
        if n > 0 && total > max_bytes {
            break;
        }
        n += 1;
    }
    Ok(n)
}
