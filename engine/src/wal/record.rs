//! Record framing: how one logical record is laid out on disk.
//!
//! Every record is a 16-byte header followed by its payload:
//!
//! ```text
//! 0..4    crc32 (crc32fast) of bytes 4..16 of the header and of the payload
//! 4..8    payload length, u32 little-endian
//! 8       record kind (never 0, so a zero-filled block is never a record)
//! 9..16   reserved, zero
//! ```
//!
//! Records of one batch are packed back to back after a `BatchStart` record
//! that opens the batch at a 4 KiB boundary; the batch is zero-padded to the
//! next boundary (see `batch.rs`). All integers are little-endian.

use super::entry::{Entry, EntryKind, HardState};

/// Size of a record header.
pub(crate) const HEADER_BYTES: usize = 16;
/// Fixed part of an entry payload: term, index, kind.
const ENTRY_FIXED_BYTES: usize = 17;
/// Payload of a batch start record.
pub(crate) const BATCH_START_PAYLOAD_BYTES: usize = 24;
/// Total size of a batch start record.
pub(crate) const BATCH_START_BYTES: usize = HEADER_BYTES + BATCH_START_PAYLOAD_BYTES;

const KIND_BATCH_START: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_HARD_STATE: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_RELEASE: u8 = 5;
const KIND_LOG_BOUNDS: u8 = 6;

/// A decoded record other than a batch start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// Entries are encoded straight from `&Entry` (`encode_entry`) and
    /// decoded as `RecordRef`; the owned form exists for tests.
    #[cfg(test)]
    Entry(Entry),
    HardState(HardState),
    /// Entries with index >= `from` are dropped (Raft conflict).
    Truncate {
        from: u64,
    },
    /// Entries with index < `below` are no longer needed.
    Release {
        below: u64,
    },
    /// Written first in every segment: the log's bounds when the segment was
    /// started, so older segments can be deleted without losing them.
    LogBounds {
        first: u64,
        next: u64,
    },
}

/// The record that opens every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchStart {
    /// Segment the batch was written to: a block copied from another
    /// segment is never mistaken for this one's.
    pub segment_id: u64,
    /// Global batch counter, +1 per batch across segments.
    pub batch_seq: u64,
    /// Bytes from the start of this record to the end of the batch's last
    /// record (padding excluded).
    pub batch_bytes: u32,
    /// Records that follow this one in the batch.
    pub record_count: u32,
}

/// Why bytes could not be read as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The header is all zeros: nothing was ever written here.
    Zero,
    /// The buffer ends before the record does.
    Truncated,
    /// The checksum does not match.
    BadCrc { stored: u32, computed: u32 },
    /// Checksum fine but the content makes no sense (unknown kind, wrong
    /// payload size).
    Malformed(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Zero => write!(f, "zero-filled record header"),
            FrameError::Truncated => write!(f, "record runs past the end of its batch"),
            FrameError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            FrameError::Malformed(what) => write!(f, "malformed record: {what}"),
        }
    }
}

/// Encoded size of an entry record.
pub(crate) fn entry_record_bytes(data_len: usize) -> usize {
    ENTRY_RECORD_OVERHEAD + data_len
}

/// Bytes of an entry record besides its data.
pub(crate) const ENTRY_RECORD_OVERHEAD: usize = HEADER_BYTES + ENTRY_FIXED_BYTES;

/// Encoded size of a non-entry record.
pub(crate) fn record_bytes(record: &Record) -> usize {
    HEADER_BYTES
        + match record {
            #[cfg(test)]
            Record::Entry(e) => ENTRY_FIXED_BYTES + e.data.len(),
            Record::HardState(_) => 24,
            Record::Truncate { .. } | Record::Release { .. } => 8,
            Record::LogBounds { .. } => 16,
        }
}

/// Appends one framed record to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        #[cfg(test)]
        Record::Entry(e) => encode_entry(e, out),
        Record::HardState(hs) => {
            let mut p = [0u8; 24];
            p[0..8].copy_from_slice(&hs.term.to_le_bytes());
            p[8..16].copy_from_slice(&hs.vote.to_le_bytes());
            p[16..24].copy_from_slice(&hs.commit.to_le_bytes());
            encode_raw(KIND_HARD_STATE, &[&p], out);
        }
        Record::Truncate { from } => encode_raw(KIND_TRUNCATE, &[&from.to_le_bytes()], out),
        Record::Release { below } => encode_raw(KIND_RELEASE, &[&below.to_le_bytes()], out),
        Record::LogBounds { first, next } => encode_raw(
            KIND_LOG_BOUNDS,
            &[&first.to_le_bytes(), &next.to_le_bytes()],
            out,
        ),
    }
}

/// Appends one framed entry record to `out` (the hot path: no clone of data).
pub(crate) fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    let mut fixed = [0u8; ENTRY_FIXED_BYTES];
    fixed[0..8].copy_from_slice(&e.term.to_le_bytes());
    fixed[8..16].copy_from_slice(&e.index.to_le_bytes());
    fixed[16] = e.kind.to_byte();
    encode_raw(KIND_ENTRY, &[&fixed, &e.data], out);
}

/// Writes a batch start record into the first `BATCH_START_BYTES` of `out`.
pub(crate) fn encode_batch_start(bs: &BatchStart, out: &mut [u8]) {
    let mut p = [0u8; BATCH_START_PAYLOAD_BYTES];
    p[0..8].copy_from_slice(&bs.segment_id.to_le_bytes());
    p[8..16].copy_from_slice(&bs.batch_seq.to_le_bytes());
    p[16..20].copy_from_slice(&bs.batch_bytes.to_le_bytes());
    p[20..24].copy_from_slice(&bs.record_count.to_le_bytes());
    let header = header(KIND_BATCH_START, &[&p]);
    out[..HEADER_BYTES].copy_from_slice(&header);
    out[HEADER_BYTES..BATCH_START_BYTES].copy_from_slice(&p);
}

fn header(kind: u8, parts: &[&[u8]]) -> [u8; HEADER_BYTES] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = [0u8; HEADER_BYTES];
    // Callers bound payloads by the segment size, far below 4 GiB.
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8] = kind;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[4..]);
    for p in parts {
        crc.update(p);
    }
    h[0..4].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

fn encode_raw(kind: u8, parts: &[&[u8]], out: &mut Vec<u8>) {
    let h = header(kind, parts);
    out.extend_from_slice(&h);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// A checked frame: its kind byte, payload, and total length.
struct Frame<'a> {
    kind: u8,
    payload: &'a [u8],
    len: usize,
}

fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    if buf.len() < HEADER_BYTES {
        return Err(if buf.iter().all(|&b| b == 0) {
            FrameError::Zero
        } else {
            FrameError::Truncated
        });
    }
    let h = &buf[..HEADER_BYTES];
    if h.iter().all(|&b| b == 0) {
        return Err(FrameError::Zero);
    }
    let stored = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let end = HEADER_BYTES
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or(FrameError::Truncated)?;
    let payload = &buf[HEADER_BYTES..end];
    // Header tail and payload are contiguous: one pass (the streaming
    // hasher is slow on the 12-byte piece alone).
    let computed = crc32fast::hash(&buf[4..end]);
    if stored != computed {
        return Err(FrameError::BadCrc { stored, computed });
    }
    if h[9..].iter().any(|&b| b != 0) {
        return Err(FrameError::Malformed("reserved header bytes are not zero"));
    }
    Ok(Frame {
        kind: h[8],
        payload,
        len: end,
    })
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Reads a batch start record at the beginning of `buf`.
pub(crate) fn decode_batch_start(buf: &[u8]) -> Result<BatchStart, FrameError> {
    let f = decode_frame(buf)?;
    if f.kind != KIND_BATCH_START {
        return Err(FrameError::Malformed("expected a batch start record"));
    }
    if f.payload.len() != BATCH_START_PAYLOAD_BYTES {
        return Err(FrameError::Malformed(
            "batch start payload has the wrong size",
        ));
    }
    let p = f.payload;
    Ok(BatchStart {
        segment_id: u64_at(p, 0),
        batch_seq: u64_at(p, 8),
        batch_bytes: u32_at(p, 16),
        record_count: u32_at(p, 20),
    })
}

/// A decoded record that borrows its payload from the buffer it was read
/// from: recovery and the read path look at every entry but keep (or copy)
/// only what they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordRef<'a> {
    Entry(EntryRef<'a>),
    HardState(HardState),
    Truncate { from: u64 },
    Release { below: u64 },
    LogBounds { first: u64, next: u64 },
}

/// An entry record whose data still lies in the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryRef<'a> {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: &'a [u8],
}

impl EntryRef<'_> {
    pub fn to_entry(self) -> Entry {
        Entry {
            term: self.term,
            index: self.index,
            kind: self.kind,
            data: self.data.to_vec(),
        }
    }
}

#[cfg(test)]
impl RecordRef<'_> {
    pub fn to_record(self) -> Record {
        match self {
            RecordRef::Entry(e) => Record::Entry(e.to_entry()),
            RecordRef::HardState(hs) => Record::HardState(hs),
            RecordRef::Truncate { from } => Record::Truncate { from },
            RecordRef::Release { below } => Record::Release { below },
            RecordRef::LogBounds { first, next } => Record::LogBounds { first, next },
        }
    }
}

/// Reads one record at the beginning of `buf`; returns it and its length.
#[cfg(test)]
pub(crate) fn decode(buf: &[u8]) -> Result<(Record, usize), FrameError> {
    let (r, len) = decode_ref(buf)?;
    Ok((r.to_record(), len))
}

/// Like `decode`, without copying an entry's data.
pub(crate) fn decode_ref(buf: &[u8]) -> Result<(RecordRef<'_>, usize), FrameError> {
    let f = decode_frame(buf)?;
    Ok((parse_payload(f.kind, f.payload)?, f.len))
}

/// Walks records this process has just encoded (a batch it wrote), without
/// checking checksums again: `f` gets each record, its offset in `buf` and
/// its length. Bytes that do not parse are a bug in the encoder.
pub(crate) fn walk_trusted<E>(
    buf: &[u8],
    mut f: impl FnMut(RecordRef<'_>, usize, usize) -> Result<(), E>,
) -> Result<Result<(), E>, FrameError> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < HEADER_BYTES {
            return Err(FrameError::Truncated);
        }
        let len = u32_at(rest, 4) as usize;
        let end = HEADER_BYTES + len;
        if end > rest.len() {
            return Err(FrameError::Truncated);
        }
        if let Err(e) = f(parse_payload(rest[8], &rest[HEADER_BYTES..end])?, at, end) {
            return Ok(Err(e));
        }
        at += end;
    }
    Ok(Ok(()))
}

fn parse_payload(kind: u8, p: &[u8]) -> Result<RecordRef<'_>, FrameError> {
    let fixed = |n: usize, what: &'static str| {
        if p.len() == n {
            Ok(())
        } else {
            Err(FrameError::Malformed(what))
        }
    };
    let record = match kind {
        KIND_ENTRY => {
            if p.len() < ENTRY_FIXED_BYTES {
                return Err(FrameError::Malformed("entry payload too short"));
            }
            let kind =
                EntryKind::from_byte(p[16]).ok_or(FrameError::Malformed("unknown entry kind"))?;
            RecordRef::Entry(EntryRef {
                term: u64_at(p, 0),
                index: u64_at(p, 8),
                kind,
                data: &p[ENTRY_FIXED_BYTES..],
            })
        }
        KIND_HARD_STATE => {
            fixed(24, "hard state payload has the wrong size")?;
            RecordRef::HardState(HardState {
                term: u64_at(p, 0),
                vote: u64_at(p, 8),
                commit: u64_at(p, 16),
            })
        }
        KIND_TRUNCATE => {
            fixed(8, "truncate payload has the wrong size")?;
            RecordRef::Truncate { from: u64_at(p, 0) }
        }
        KIND_RELEASE => {
            fixed(8, "release payload has the wrong size")?;
            RecordRef::Release {
                below: u64_at(p, 0),
            }
        }
        KIND_LOG_BOUNDS => {
            fixed(16, "log bounds payload has the wrong size")?;
            RecordRef::LogBounds {
                first: u64_at(p, 0),
                next: u64_at(p, 8),
            }
        }
        KIND_BATCH_START => return Err(FrameError::Malformed("batch start inside a batch")),
        _ => return Err(FrameError::Malformed("unknown record kind")),
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Record> {
        vec![
            Record::Entry(Entry {
                term: 3,
                index: 42,
                kind: EntryKind::ConfChange,
                data: b"hello".to_vec(),
            }),
            Record::Entry(Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: Vec::new(),
            }),
            Record::HardState(HardState {
                term: 7,
                vote: 2,
                commit: 40,
            }),
            Record::Truncate { from: 9 },
            Record::Release { below: 5 },
            Record::LogBounds { first: 5, next: 10 },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for r in all_kinds() {
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            assert_eq!(buf.len(), record_bytes(&r));
            let (back, len) = decode(&buf).unwrap();
            assert_eq!(back, r);
            assert_eq!(len, buf.len());
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&all_kinds()[0], &mut buf);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zeros_and_short_buffers() {
        assert_eq!(decode(&[0u8; 64]).unwrap_err(), FrameError::Zero);
        let mut buf = Vec::new();
        encode(&Record::Truncate { from: 1 }, &mut buf);
        assert_eq!(
            decode(&buf[..buf.len() - 1]).unwrap_err(),
            FrameError::Truncated
        );
    }

    #[test]
    fn batch_start_round_trips_and_is_not_a_record() {
        let bs = BatchStart {
            segment_id: 3,
            batch_seq: 99,
            batch_bytes: 1234,
            record_count: 7,
        };
        let mut buf = [0u8; BATCH_START_BYTES];
        encode_batch_start(&bs, &mut buf);
        assert_eq!(decode_batch_start(&buf).unwrap(), bs);
        assert!(matches!(decode(&buf), Err(FrameError::Malformed(_))));
        let mut entry = Vec::new();
        encode(&Record::Truncate { from: 1 }, &mut entry);
        assert!(matches!(
            decode_batch_start(&entry),
            Err(FrameError::Malformed(_))
        ));
    }
}
