//! Recovery: scan every segment, rebuild the log, cut a torn tail.
//!
//! A batch is the unit of durability: it is acknowledged only after its
//! write and fdatasync completed, and the next batch is written only after
//! that. So after a crash at most the last written batch can be incomplete.
//! A batch that fails validation is therefore accepted as a torn tail, and
//! cut, only if nothing valid follows it anywhere in the log; otherwise it
//! is corruption and the node must not start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use memmap2::Mmap;

use super::bounds::Bounds;
use super::entry::Entry;
use super::error::WalError;
use super::index::LogIndex;
use super::record::{self, RecordRef, BATCH_START_BYTES};
use super::segment::{self, align_up, BLOCK};

/// What the writer needs to know about one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub id: u64,
    pub path: PathBuf,
    /// Size of the file (from its header; older segments may have been
    /// created with other options).
    pub capacity: u64,
    /// Highest entry index ever written to the segment; a segment whose
    /// entries are all below the release point can be deleted.
    pub max_entry_index: Option<u64>,
}

/// The rebuilt log and where writing resumes.
pub(crate) struct RecoveredLog {
    pub bounds: Bounds,
    /// Where every retained entry lies.
    pub index: LogIndex,
    /// The retained entries themselves, if asked for (else empty).
    pub entries: Vec<Entry>,
    /// Retained segments, ascending; the last one is where writing resumes.
    pub segments: Vec<SegmentMeta>,
    /// Offset in the last segment where the next batch goes.
    pub write_pos: u64,
    /// Whether the last segment already holds its preamble.
    pub active_has_batches: bool,
    /// An empty, already prepared segment after the last one, if any.
    pub spare: Option<SegmentMeta>,
    pub next_batch_seq: u64,
    pub torn_tail_cut: bool,
}

/// Rebuilds the log state from the records, applying the same rules as the
/// write path (see `bounds.rs`).
struct Replay {
    bounds: Bounds,
    /// Set by the first segment preamble; records before it are corrupt.
    started: bool,
    /// Locations of the retained entries: always exactly the indexes
    /// `[index.first(), bounds.next)`.
    index: LogIndex,
    /// The retained entries themselves when the caller wants them
    /// (`WalOptions::materialize_recovered`); same indexes as `index`.
    entries: Option<VecDeque<Entry>>,
}

impl Replay {
    fn apply(
        &mut self,
        r: RecordRef<'_>,
        segment: u64,
        at: u64,
        len: usize,
        path: &Path,
        offset: u64,
    ) -> Result<(), WalError> {
        let corrupt = |reason: String| WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        if !self.started {
            let RecordRef::LogBounds { first, next } = r else {
                return Err(corrupt("log does not begin with a segment preamble".into()));
            };
            if first > next {
                return Err(corrupt(format!("preamble bounds {first} > {next}")));
            }
            self.bounds.first = first;
            self.bounds.next = next;
            // Entries `[first, next)` lie in deleted segments (a healthy
            // log releases them first; the check after the scan says).
            self.index.reset(next);
            self.started = true;
            return Ok(());
        }
        match r {
            RecordRef::LogBounds { first, next } => {
                if first != self.bounds.first || next != self.bounds.next {
                    return Err(corrupt(format!(
                        "segment preamble says log is [{first}, {next}), replay says [{}, {})",
                        self.bounds.first, self.bounds.next
                    )));
                }
            }
            RecordRef::HardState(hs) => self.bounds.hard_state = hs,
            RecordRef::Entry(e) => {
                if e.index != self.bounds.next {
                    return Err(corrupt(format!(
                        "entry index {} where {} was expected",
                        e.index, self.bounds.next
                    )));
                }
                self.bounds.next += 1;
                if let Some(entries) = &mut self.entries {
                    entries.push_back(e.to_entry());
                }
            }
            RecordRef::Truncate { from } => {
                if from < self.bounds.first || from >= self.bounds.next {
                    return Err(corrupt(format!(
                        "truncate from {from} outside the log [{}, {})",
                        self.bounds.first, self.bounds.next
                    )));
                }
                self.bounds.truncate(from);
                if let Some(entries) = &mut self.entries {
                    while entries.back().is_some_and(|e| e.index >= from) {
                        entries.pop_back();
                    }
                }
            }
            RecordRef::Release { below } => {
                self.bounds.release(below);
                if let Some(entries) = &mut self.entries {
                    while entries.front().is_some_and(|e| e.index < below) {
                        entries.pop_front();
                    }
                }
            }
        }
        self.index
            .apply(&r, segment, at, len)
            .map_err(|e| corrupt(e.0))
    }
}

/// A batch that did not validate, and why.
struct BadBatch {
    offset: u64,
    reason: String,
    /// A valid batch with the wrong sequence number: batches are missing
    /// (a torn write never produces this), so it is corruption wherever
    /// it is found.
    gap: bool,
}

/// One record of a batch: what it says, where it starts in the segment,
/// and its length.
type Located<'a> = (RecordRef<'a>, u64, usize);

/// Reads and checks the batch at `pos`; returns its records and its size.
fn read_batch(
    data: &[u8],
    pos: u64,
    segment_id: u64,
    expected_seq: Option<u64>,
) -> Result<(u64, Vec<Located<'_>>, u64), BadBatch> {
    let bad = |reason: String| BadBatch {
        offset: pos,
        reason,
        gap: false,
    };
    let start = pos as usize;
    let bs = record::decode_batch_start(&data[start..]).map_err(|e| bad(e.to_string()))?;
    if bs.segment_id != segment_id {
        return Err(bad(format!(
            "batch belongs to segment {}, not {segment_id}",
            bs.segment_id
        )));
    }
    if let Some(seq) = expected_seq {
        if bs.batch_seq != seq {
            return Err(BadBatch {
                gap: true,
                ..bad(format!(
                    "batch sequence {} where {seq} was expected: batches are missing",
                    bs.batch_seq
                ))
            });
        }
    }
    let end = start + bs.batch_bytes as usize;
    if (bs.batch_bytes as usize) < BATCH_START_BYTES || end > data.len() {
        return Err(bad(format!("implausible batch length {}", bs.batch_bytes)));
    }
    let mut at = start + BATCH_START_BYTES;
    // The count is only trusted as far as the bytes could hold records.
    let max_records = bs.batch_bytes as usize / record::HEADER_BYTES;
    let mut records = Vec::with_capacity((bs.record_count as usize).min(max_records));
    while at < end {
        let (r, len) = record::decode_ref(&data[at..end])
            .map_err(|e| bad(format!("record at offset {at}: {e}")))?;
        records.push((r, at as u64, len));
        at += len;
    }
    if records.len() != bs.record_count as usize {
        return Err(bad(format!(
            "batch holds {} records, its header says {}",
            records.len(),
            bs.record_count
        )));
    }
    Ok((bs.batch_seq, records, bs.batch_bytes as u64))
}

/// Is there a valid batch start at any block boundary from `from` on?
fn valid_batch_after(data: &[u8], from: u64, segment_id: u64, min_seq: Option<u64>) -> bool {
    let mut pos = from;
    while pos + BATCH_START_BYTES as u64 <= data.len() as u64 {
        if let Ok(bs) = record::decode_batch_start(&data[pos as usize..]) {
            if bs.segment_id == segment_id && min_seq.is_none_or(|s| bs.batch_seq >= s) {
                return true;
            }
        }
        pos += BLOCK;
    }
    false
}

/// End (block-aligned) of the last non-zero byte at or after `from`.
/// Works block by block from the end, in 8-byte words (the common case is
/// megabytes of zeros).
fn dirty_end(data: &[u8], from: u64) -> Option<u64> {
    let from = from as usize;
    let mut end = data.len();
    while end > from {
        let start = (end - 1) / BLOCK as usize * BLOCK as usize;
        let lo = start.max(from);
        if !is_zero(&data[lo..end]) {
            let i = data[lo..end].iter().rposition(|&b| b != 0).unwrap_or(0);
            return Some(align_up((lo + i + 1) as u64));
        }
        end = lo;
    }
    None
}

fn is_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        acc |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    }
    acc == 0 && words.remainder().iter().all(|&b| b == 0)
}

/// Maps one segment read-only and checks its header. Mapping instead of
/// reading saves a copy of every byte out of the page cache, which was the
/// largest cost of recovery.
fn load_segment(id: u64, path: &Path) -> Result<(Mmap, u64), WalError> {
    let corrupt = |offset: u64, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| WalError::io("opening segment", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| WalError::io("reading metadata of", path, e))?
        .len();
    if len < 2 * BLOCK {
        return Err(corrupt(len, format!("segment is only {len} bytes")));
    }
    // SAFETY: the WAL directory belongs to this process (one WAL per
    // directory); nothing writes the segment while it is mapped: recovery
    // unmaps before cutting a tail, and the writer starts after recovery.
    // Populate: fault the whole segment in at once rather than page by page.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&f) }
        .map_err(|e| WalError::io("mapping segment", path, e))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let cap = segment::decode_header(&map[..BLOCK as usize], id).map_err(|r| corrupt(0, r))?;
    if len < cap {
        return Err(corrupt(
            len,
            format!("segment is {len} bytes, its header says {cap}"),
        ));
    }
    Ok((map, cap))
}

/// Does any segment after `index` hold anything but zeros?
fn later_segments_dirty(segments: &[(u64, PathBuf)], index: usize) -> Result<bool, WalError> {
    for (id, path) in &segments[index + 1..] {
        let (map, cap) = load_segment(*id, path)?;
        if dirty_end(&map[..cap as usize], BLOCK).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Scans `dir` and rebuilds the log; with `materialize`, also returns
/// every retained entry. Must run inside a glommio executor (cutting a
/// torn tail writes through O_DIRECT).
pub(crate) async fn recover(dir: &Path, materialize: bool) -> Result<RecoveredLog, WalError> {
    let started = Instant::now();
    let listing = segment::list(dir)?;
    if !listing.leftovers.is_empty() {
        segment::remove(dir, &listing.leftovers).await?;
    }
    let segments = listing.segments;
    for pair in segments.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(WalError::Corrupt {
                path: pair[1].1.clone(),
                offset: 0,
                reason: format!("segment {} is missing", pair[0].0 + 1),
            });
        }
    }

    let mut replay = Replay {
        bounds: Bounds::fresh(),
        started: false,
        index: LogIndex::new(Bounds::fresh().first),
        entries: materialize.then(VecDeque::new),
    };
    let mut metas = Vec::with_capacity(segments.len());
    let mut ends = Vec::with_capacity(segments.len());
    let mut has_batches = Vec::with_capacity(segments.len());
    let mut expected_seq = None;
    let mut torn_tail_cut = false;

    for (i, (id, path)) in segments.iter().enumerate() {
        let (map, cap) = load_segment(*id, path)?;
        let data = &map[..cap as usize];
        let mut meta = SegmentMeta {
            id: *id,
            path: path.clone(),
            capacity: cap,
            max_entry_index: None,
        };
        let mut any = false;
        let mut pos = BLOCK;
        let mut bad = None;
        while pos + BATCH_START_BYTES as u64 <= cap {
            match read_batch(data, pos, *id, expected_seq) {
                Ok((seq, records, len)) => {
                    for (r, at, len) in records {
                        if let RecordRef::Entry(e) = &r {
                            meta.max_entry_index = Some(e.index);
                        }
                        replay.apply(r, *id, at, len, path, pos)?;
                    }
                    any = true;
                    expected_seq = Some(seq + 1);
                    pos = align_up(pos + len);
                }
                Err(b) => {
                    bad = Some(b);
                    break;
                }
            }
        }
        if let Some(bad) = bad {
            let corrupt = |reason: String| WalError::Corrupt {
                path: path.clone(),
                offset: bad.offset,
                reason,
            };
            if bad.gap {
                return Err(corrupt(bad.reason));
            }
            if valid_batch_after(data, bad.offset + BLOCK, *id, expected_seq) {
                return Err(corrupt(format!("{} (valid batches follow)", bad.reason)));
            }
            if let Some(end) = dirty_end(data, bad.offset) {
                if later_segments_dirty(&segments, i)? {
                    return Err(corrupt(format!(
                        "{} (later segments hold data)",
                        bad.reason
                    )));
                }
                tracing::warn!(
                    segment = %path.display(),
                    offset = bad.offset,
                    bytes = end - bad.offset,
                    reason = %bad.reason,
                    "wal: cutting torn tail"
                );
                // Unmap first: the cut writes the same blocks via O_DIRECT.
                drop(map);
                segment::zero_range(path, bad.offset, end).await?;
                torn_tail_cut = true;
            }
        }
        ends.push(pos);
        has_batches.push(any);
        metas.push(meta);
    }

    if replay.started {
        let missing_from = replay.bounds.first;
        let have_from = replay.index.first();
        debug_assert_eq!(replay.index.next(), replay.bounds.next);
        if have_from != missing_from {
            return Err(WalError::Corrupt {
                path: segments[0].1.clone(),
                offset: 0,
                reason: format!(
                    "entries [{missing_from}, {have_from}) are missing from the retained segments"
                ),
            });
        }
    }

    // Writing resumes in the last segment that holds batches; one empty
    // segment after it is kept as the spare, any further ones are deleted.
    let active = has_batches.iter().rposition(|&b| b).unwrap_or(0);
    let mut spare = None;
    let mut surplus = Vec::new();
    if !metas.is_empty() {
        for (k, meta) in metas.drain(active + 1..).enumerate() {
            if k == 0 {
                spare = Some(meta);
            } else {
                surplus.push(meta.path);
            }
        }
    }
    segment::remove(dir, &surplus).await?;

    let entries: Vec<Entry> = replay.entries.map(Vec::from).unwrap_or_default();
    tracing::info!(
        dir = %dir.display(),
        segments = metas.len(),
        entries = replay.bounds.next - replay.bounds.first,
        first_index = replay.bounds.first,
        last_index = replay.bounds.next - 1,
        torn_tail_cut,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "wal recovered"
    );
    Ok(RecoveredLog {
        bounds: replay.bounds,
        index: replay.index,
        entries,
        write_pos: ends.get(active).copied().unwrap_or(BLOCK),
        active_has_batches: has_batches.get(active).copied().unwrap_or(false),
        segments: metas,
        spare,
        next_batch_seq: expected_seq.unwrap_or(1),
        torn_tail_cut,
    })
}
