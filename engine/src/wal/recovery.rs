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

use super::bounds::Bounds;
use super::entry::Entry;
use super::error::WalError;
use super::record::{self, Record, BATCH_START_BYTES};
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
    /// Retained entries; always exactly the indexes `[base, bounds.next)`
    /// where `base` is the first entry's index.
    entries: VecDeque<Entry>,
}

impl Replay {
    fn apply(&mut self, r: Record, path: &Path, offset: u64) -> Result<(), WalError> {
        let corrupt = |reason: String| WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        if !self.started {
            let Record::LogBounds { first, next } = r else {
                return Err(corrupt("log does not begin with a segment preamble".into()));
            };
            if first > next {
                return Err(corrupt(format!("preamble bounds {first} > {next}")));
            }
            self.bounds.first = first;
            self.bounds.next = next;
            self.started = true;
            return Ok(());
        }
        match r {
            Record::LogBounds { first, next } => {
                if first != self.bounds.first || next != self.bounds.next {
                    return Err(corrupt(format!(
                        "segment preamble says log is [{first}, {next}), replay says [{}, {})",
                        self.bounds.first, self.bounds.next
                    )));
                }
            }
            Record::HardState(hs) => self.bounds.hard_state = hs,
            Record::Entry(e) => {
                if e.index != self.bounds.next {
                    return Err(corrupt(format!(
                        "entry index {} where {} was expected",
                        e.index, self.bounds.next
                    )));
                }
                self.bounds.next += 1;
                self.entries.push_back(e);
            }
            Record::Truncate { from } => {
                if from < self.bounds.first || from >= self.bounds.next {
                    return Err(corrupt(format!(
                        "truncate from {from} outside the log [{}, {})",
                        self.bounds.first, self.bounds.next
                    )));
                }
                self.bounds.truncate(from);
                while self.entries.back().is_some_and(|e| e.index >= from) {
                    self.entries.pop_back();
                }
            }
            Record::Release { below } => {
                self.bounds.release(below);
                while self.entries.front().is_some_and(|e| e.index < below) {
                    self.entries.pop_front();
                }
            }
        }
        Ok(())
    }
}

/// A batch that did not validate, and why.
struct BadBatch {
    offset: u64,
    reason: String,
}

/// Reads and checks the batch at `pos`; returns its records and its size.
fn read_batch(
    data: &[u8],
    pos: u64,
    segment_id: u64,
    expected_seq: Option<u64>,
) -> Result<(u64, Vec<Record>, u64), String> {
    let start = pos as usize;
    let bs = record::decode_batch_start(&data[start..]).map_err(|e| e.to_string())?;
    if bs.segment_id != segment_id {
        return Err(format!(
            "batch belongs to segment {}, not {segment_id}",
            bs.segment_id
        ));
    }
    if let Some(seq) = expected_seq {
        if bs.batch_seq != seq {
            return Err(format!(
                "batch sequence {} where {seq} was expected",
                bs.batch_seq
            ));
        }
    }
    let end = start + bs.batch_bytes as usize;
    if (bs.batch_bytes as usize) < BATCH_START_BYTES || end > data.len() {
        return Err(format!("implausible batch length {}", bs.batch_bytes));
    }
    let mut at = start + BATCH_START_BYTES;
    let mut records = Vec::with_capacity(bs.record_count as usize);
    while at < end {
        let (r, len) =
            record::decode(&data[at..end]).map_err(|e| format!("record at offset {at}: {e}"))?;
        records.push(r);
        at += len;
    }
    if records.len() != bs.record_count as usize {
        return Err(format!(
            "batch holds {} records, its header says {}",
            records.len(),
            bs.record_count
        ));
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
fn dirty_end(data: &[u8], from: u64) -> Option<u64> {
    data[from as usize..]
        .iter()
        .rposition(|&b| b != 0)
        .map(|i| align_up(from + i as u64 + 1))
}

fn read_whole(path: &Path, buf: &mut Vec<u8>) -> Result<(), WalError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| WalError::io("opening segment", path, e))?;
    buf.clear();
    f.read_to_end(buf)
        .map_err(|e| WalError::io("reading segment", path, e))?;
    Ok(())
}

/// Reads one segment and checks its header; returns its data region length.
fn load_segment(id: u64, path: &Path, buf: &mut Vec<u8>) -> Result<u64, WalError> {
    read_whole(path, buf)?;
    let head = &buf[..buf.len().min(BLOCK as usize)];
    let cap = segment::decode_header(head, id).map_err(|reason| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    })?;
    if (buf.len() as u64) < cap {
        return Err(WalError::Corrupt {
            path: path.to_path_buf(),
            offset: buf.len() as u64,
            reason: format!("segment is {} bytes, its header says {cap}", buf.len()),
        });
    }
    Ok(cap)
}

/// Does any segment after `index` hold anything but zeros?
fn later_segments_dirty(
    segments: &[(u64, PathBuf)],
    index: usize,
    buf: &mut Vec<u8>,
) -> Result<bool, WalError> {
    for (id, path) in &segments[index + 1..] {
        let cap = load_segment(*id, path, buf)?;
        if dirty_end(&buf[..cap as usize], BLOCK).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Scans `dir` and rebuilds the log. Must run inside a glommio executor
/// (cutting a torn tail writes through O_DIRECT).
pub(crate) async fn recover(dir: &Path) -> Result<RecoveredLog, WalError> {
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
        entries: VecDeque::new(),
    };
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    let mut metas = Vec::with_capacity(segments.len());
    let mut ends = Vec::with_capacity(segments.len());
    let mut has_batches = Vec::with_capacity(segments.len());
    let mut expected_seq = None;
    let mut torn_tail_cut = false;

    for (i, (id, path)) in segments.iter().enumerate() {
        let cap = load_segment(*id, path, &mut buf)?;
        let data = &buf[..cap as usize];
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
                    for r in records {
                        if let Record::Entry(e) = &r {
                            meta.max_entry_index = Some(e.index);
                        }
                        replay.apply(r, path, pos)?;
                    }
                    any = true;
                    expected_seq = Some(seq + 1);
                    pos = align_up(pos + len);
                }
                Err(reason) => {
                    bad = Some(BadBatch {
                        offset: pos,
                        reason,
                    });
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
            if valid_batch_after(data, bad.offset + BLOCK, *id, expected_seq) {
                return Err(corrupt(format!("{} (valid batches follow)", bad.reason)));
            }
            if let Some(end) = dirty_end(data, bad.offset) {
                if later_segments_dirty(&segments, i, &mut scratch)? {
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
        let have_from = replay
            .entries
            .front()
            .map_or(replay.bounds.next, |e| e.index);
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

    let entries: Vec<Entry> = replay.entries.into();
    tracing::info!(
        dir = %dir.display(),
        segments = metas.len(),
        entries = entries.len(),
        first_index = replay.bounds.first,
        last_index = replay.bounds.next - 1,
        torn_tail_cut,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "wal recovered"
    );
    Ok(RecoveredLog {
        bounds: replay.bounds,
        entries,
        write_pos: ends.get(active).copied().unwrap_or(BLOCK),
        active_has_batches: has_batches.get(active).copied().unwrap_or(false),
        segments: metas,
        spare,
        next_batch_seq: expected_seq.unwrap_or(1),
        torn_tail_cut,
    })
}
