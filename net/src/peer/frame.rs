//! Frames: how bytes on a peer connection are cut into checksummed units.
//!
//! Every frame is a fixed 20-byte header and a payload; [`FrameHeader`]
//! gives the byte layout.
//!
//! The header has its own checksum so that a damaged length is caught before
//! the decoder waits for (or reserves room for) a payload that never comes;
//! the header checksum covers the payload checksum, so the whole frame is
//! covered. Magic and version sit first and never move, so a peer speaking
//! another frame version is named as such rather than as corruption.
//!
//! Invariants of [`FrameDecoder`]: it reserves memory for a payload only
//! after the header's checksum matches and its length is within the limit
//! for its kind; it returns a frame only after the payload's checksum
//! matches; after its first error it returns [`PeerWireError::Poisoned`]
//! forever and buffers nothing more; it never panics on any input.

use bytes::{Buf, Bytes, BytesMut};

use super::error::PeerWireError;
use super::limits::{WireLimits, MAX_FRAME_BYTES};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"BSLP";
/// Version of the header layout (see [`FrameHeader`]). Payload layouts are versioned
/// separately, by [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION) in the
/// handshake.
pub const FRAME_VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 20;

/// What a frame's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// The first frame on every connection, from the member that dialed.
    Hello = 1,
    /// The answer to a `Hello`: accepted, or refused with a reason.
    HelloReply = 2,
    /// A batch of Raft messages.
    Messages = 3,
    /// A piece of a store snapshot, on a connection of its own.
    SnapshotChunk = 4,
}

impl FrameKind {
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::HelloReply),
            3 => Some(FrameKind::Messages),
            4 => Some(FrameKind::SnapshotChunk),
            _ => None,
        }
    }
}

/// A frame header that passed every check.
///
/// Every frame is this 20-byte header and a payload. Integers are
/// little-endian; checksums are CRC-32 (IEEE, as `crc32fast` computes it).
///
/// ```text
/// offset  size  field
///      0     4  magic            b"BSLP"
///      4     1  frame version    FRAME_VERSION (1)
///      5     1  kind             1 Hello, 2 HelloReply, 3 Messages, 4 SnapshotChunk
///      6     2  flags            none defined; must be 0
///      8     4  payload length   <= the limit for the kind (WireLimits)
///     12     4  payload crc      CRC-32 of the payload bytes
///     16     4  header crc       CRC-32 of bytes 0..16
///     20     -  payload          an rkyv archive (see the module docs)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub payload_len: u32,
    pub payload_crc: u32,
}

impl FrameHeader {
    /// The header of a frame carrying `payload`.
    pub fn for_payload(kind: FrameKind, payload: &[u8]) -> Result<FrameHeader, PeerWireError> {
        if payload.len() > MAX_FRAME_BYTES {
            return Err(PeerWireError::FrameTooLarge {
                kind,
                len: payload.len(),
                max: MAX_FRAME_BYTES,
            });
        }
        Ok(FrameHeader {
            kind,
            // Fits: MAX_FRAME_BYTES is far below u32::MAX.
            payload_len: payload.len() as u32,
            payload_crc: crc32fast::hash(payload),
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = FRAME_VERSION;
        h[5] = self.kind as u8;
        // h[6..8]: flags, none defined.
        h[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[0..16]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Checks a received header, in the order that names a problem best:
    /// magic (is this a basalt peer at all), version, checksum, then the
    /// fields the checksum vouches for.
    pub fn decode(h: &[u8; HEADER_LEN], limits: &WireLimits) -> Result<FrameHeader, PeerWireError> {
        check_magic_and_version(h)?;
        let expected = u32_at(h, 16);
        let found = crc32fast::hash(&h[0..16]);
        if expected != found {
            return Err(PeerWireError::HeaderChecksum { expected, found });
        }
        let kind = FrameKind::from_u8(h[5]).ok_or(PeerWireError::UnknownKind { found: h[5] })?;
        let flags = u16::from_le_bytes([h[6], h[7]]);
        if flags != 0 {
            return Err(PeerWireError::UnknownFlags { kind, found: flags });
        }
        let payload_len = u32_at(h, 8);
        let max = limits.payload_limit(kind);
        if payload_len as usize > max {
            return Err(PeerWireError::FrameTooLarge {
                kind,
                len: payload_len as usize,
                max,
            });
        }
        Ok(FrameHeader {
            kind,
            payload_len,
            payload_crc: u32_at(h, 12),
        })
    }
}

/// Checks as much of magic and version as `prefix` holds, so a stranger
/// (an HTTP client, a TLS hello) is refused after four bytes, not twenty.
fn check_magic_and_version(prefix: &[u8]) -> Result<(), PeerWireError> {
    if prefix.len() >= MAGIC.len() && prefix[..MAGIC.len()] != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(&prefix[..MAGIC.len()]);
        return Err(PeerWireError::BadMagic {
            expected: MAGIC,
            found,
        });
    }
    match prefix.get(4) {
        Some(&version) if version != FRAME_VERSION => Err(PeerWireError::UnsupportedVersion {
            supported: FRAME_VERSION,
            found: version,
        }),
        _ => Ok(()),
    }
}

fn u32_at(h: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// Appends a whole frame carrying `payload` to `out`. The payload is not
/// checked against any [`WireLimits`]; the typed encoders in
/// [`FrameEncoder`](super::FrameEncoder) are what members use.
pub fn encode_raw_frame(
    kind: FrameKind,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), PeerWireError> {
    let header = FrameHeader::for_payload(kind, payload)?;
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reserves a header's room at the end of `out`; the payload is written
/// after it and [`finish_frame`] fills the header in.
pub(crate) fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    start
}

/// Completes the frame begun at `start`, or removes it from `out` if its
/// payload exceeds `limit`.
pub(crate) fn finish_frame(
    out: &mut Vec<u8>,
    start: usize,
    kind: FrameKind,
    limit: usize,
) -> Result<(), PeerWireError> {
    let payload_start = start + HEADER_LEN;
    let len = out.len() - payload_start;
    if len > limit.min(MAX_FRAME_BYTES) {
        out.truncate(start);
        return Err(PeerWireError::FrameTooLarge {
            kind,
            len,
            max: limit.min(MAX_FRAME_BYTES),
        });
    }
    let header = FrameHeader::for_payload(kind, &out[payload_start..])?;
    out[start..payload_start].copy_from_slice(&header.encode());
    Ok(())
}

/// A frame whose header and payload checksums matched; its payload is not
/// yet validated (see [`RawFrame::decode`](super::RawFrame::decode)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

/// Cuts a byte stream into frames as it arrives.
///
/// ```
/// use basalt_net::peer::{encode_raw_frame, FrameDecoder, FrameKind, WireLimits};
///
/// let mut wire = Vec::new();
/// encode_raw_frame(FrameKind::Messages, b"payload", &mut wire).unwrap();
/// let mut decoder = FrameDecoder::new(WireLimits::default());
/// let (first, rest) = wire.split_at(7);
/// decoder.push(first);
/// assert_eq!(decoder.next_frame().unwrap(), None);
/// decoder.push(rest);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!((frame.kind, &frame.payload[..]), (FrameKind::Messages, &b"payload"[..]));
/// assert!(decoder.finish().is_ok());
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes not yet returned; when `header` is set, the header's
    /// own bytes have already been taken off the front.
    buf: BytesMut,
    limits: WireLimits,
    header: Option<FrameHeader>,
    poisoned: bool,
}

impl FrameDecoder {
    pub fn new(limits: WireLimits) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            limits,
            header: None,
            poisoned: false,
        }
    }

    pub fn limits(&self) -> WireLimits {
        self.limits
    }

    /// Appends bytes read from the connection. Call [`next_frame`] until it
    /// returns `Ok(None)` after each push: the buffer then never holds more
    /// than one incomplete frame plus the last read. After an error the
    /// bytes are dropped.
    ///
    /// [`next_frame`]: FrameDecoder::next_frame
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.poisoned {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the
    /// first thing wrong with the stream.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, PeerWireError> {
        if self.poisoned {
            return Err(PeerWireError::Poisoned);
        }
        let result = self.step();
        if result.is_err() {
            self.poisoned = true;
            self.buf = BytesMut::new();
            self.header = None;
        }
        result
    }

    fn step(&mut self) -> Result<Option<RawFrame>, PeerWireError> {
        let header = match self.header {
            Some(header) => header,
            None => {
                let Some(bytes) = self.buf.get(..HEADER_LEN) else {
                    check_magic_and_version(&self.buf)?;
                    return Ok(None);
                };
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(bytes);
                let header = FrameHeader::decode(&h, &self.limits)?;
                self.buf.advance(HEADER_LEN);
                self.header = Some(header);
                header
            }
        };
        let len = header.payload_len as usize;
        if self.buf.len() < len {
            // `len` is within the kind's limit: the header checksum and
            // limit check above vouch for it.
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        self.header = None;
        let payload = self.buf.split_to(len).freeze();
        let found = crc32fast::hash(&payload);
        if found != header.payload_crc {
            return Err(PeerWireError::PayloadChecksum {
                kind: header.kind,
                expected: header.payload_crc,
                found,
            });
        }
        Ok(Some(RawFrame {
            kind: header.kind,
            payload,
        }))
    }

    /// Bytes received and not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() + if self.header.is_some() { HEADER_LEN } else { 0 }
    }

    /// Bytes that must still arrive before [`next_frame`] can return the
    /// frame in progress (0 if it may return one now). A reader can size
    /// its next read with it, capped at what it is willing to read at once.
    ///
    /// [`next_frame`]: FrameDecoder::next_frame
    pub fn needed(&self) -> usize {
        match self.header {
            Some(header) => (header.payload_len as usize).saturating_sub(self.buf.len()),
            None => HEADER_LEN.saturating_sub(self.buf.len()),
        }
    }

    /// Call at end of stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), PeerWireError> {
        if self.poisoned {
            return Err(PeerWireError::Poisoned);
        }
        match self.pending() {
            0 => Ok(()),
            pending => Err(PeerWireError::Truncated {
                pending,
                needed: self.needed().max(1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_raw_frame(kind, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn header_layout_is_fixed() {
        let wire = frame(FrameKind::SnapshotChunk, b"abc");
        assert_eq!(&wire[0..4], b"BSLP");
        assert_eq!(wire[4], FRAME_VERSION);
        assert_eq!(wire[5], 4);
        assert_eq!(&wire[6..8], &[0, 0]);
        assert_eq!(&wire[8..12], &3u32.to_le_bytes());
        assert_eq!(&wire[12..16], &crc32fast::hash(b"abc").to_le_bytes());
        assert_eq!(&wire[16..20], &crc32fast::hash(&wire[0..16]).to_le_bytes());
        assert_eq!(&wire[20..], b"abc");
    }

    #[test]
    fn a_stranger_is_refused_after_four_bytes() {
        // Catches: waiting for a whole header before looking at the magic.
        let mut d = FrameDecoder::new(WireLimits::default());
        d.push(b"GET ");
        assert_eq!(
            d.next_frame(),
            Err(PeerWireError::BadMagic {
                expected: MAGIC,
                found: *b"GET "
            })
        );
        assert_eq!(d.next_frame(), Err(PeerWireError::Poisoned));
        d.push(b"more");
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_newer_peer_is_named_by_its_version() {
        let mut wire = frame(FrameKind::Hello, b"");
        wire[4] = 2;
        let mut d = FrameDecoder::new(WireLimits::default());
        d.push(&wire[..5]);
        assert_eq!(
            d.next_frame(),
            Err(PeerWireError::UnsupportedVersion {
                supported: 1,
                found: 2
            })
        );
    }

    #[test]
    fn oversize_length_is_refused_before_any_reservation() {
        // A valid header (checksum and all) announcing more than the limit.
        let limits = WireLimits::new(100, 100).unwrap();
        let mut h = FrameHeader {
            kind: FrameKind::Messages,
            payload_len: 101,
            payload_crc: 0,
        }
        .encode();
        let mut d = FrameDecoder::new(limits);
        d.push(&h);
        assert_eq!(
            d.next_frame(),
            Err(PeerWireError::FrameTooLarge {
                kind: FrameKind::Messages,
                len: 101,
                max: 100
            })
        );
        // At the limit it waits for the payload, having reserved only that.
        h = FrameHeader {
            kind: FrameKind::Messages,
            payload_len: 100,
            payload_crc: 0,
        }
        .encode();
        let mut d = FrameDecoder::new(limits);
        d.push(&h);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.needed(), 100);
        assert!(d.buf.capacity() < 100 + 2 * HEADER_LEN + 64);
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let mut d = FrameDecoder::new(WireLimits::default());
        d.push(&frame(FrameKind::HelloReply, b""));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::HelloReply);
        assert!(f.payload.is_empty());
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn finish_reports_a_stream_cut_inside_a_frame() {
        let wire = frame(FrameKind::Messages, b"0123456789");
        let mut d = FrameDecoder::new(WireLimits::default());
        d.push(&wire[..25]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(PeerWireError::Truncated {
                pending: 25,
                needed: 5
            })
        );
    }

    #[test]
    fn finish_frame_drops_an_oversize_frame_whole() {
        let mut out = b"keep".to_vec();
        let start = begin_frame(&mut out);
        out.extend_from_slice(&[7; 11]);
        assert_eq!(
            finish_frame(&mut out, start, FrameKind::Messages, 10),
            Err(PeerWireError::FrameTooLarge {
                kind: FrameKind::Messages,
                len: 11,
                max: 10
            })
        );
        assert_eq!(out, b"keep");
    }
}
