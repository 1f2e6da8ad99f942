//! What can go wrong between two members' bytes.

use super::frame::FrameKind;

/// A frame or payload that cannot be trusted, or a frame we refuse to build.
///
/// Every variant received from a peer means the connection is out of sync
/// or the peer is broken or hostile: log it and close the connection; the
/// peer reconnects and Raft retransmits. None of them is a reason to stop
/// the member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerWireError {
    #[error(
        "bad frame magic: expected {expected:02x?}, found {found:02x?} \
         (not a basalt peer, or the stream lost its framing)"
    )]
    BadMagic { expected: [u8; 4], found: [u8; 4] },

    #[error("unsupported frame version {found}: this member speaks version {supported}")]
    UnsupportedVersion { supported: u8, found: u8 },

    #[error(
        "frame header checksum mismatch: header carries {expected:#010x}, \
         its bytes hash to {found:#010x}"
    )]
    HeaderChecksum { expected: u32, found: u32 },

    #[error("unknown frame kind {found}")]
    UnknownKind { found: u8 },

    #[error("{kind:?} frame carries unknown flags {found:#06x}; none are defined")]
    UnknownFlags { kind: FrameKind, found: u16 },

    #[error("{kind:?} frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        kind: FrameKind,
        len: usize,
        max: usize,
    },

    #[error(
        "{kind:?} frame payload checksum mismatch: header says {expected:#010x}, \
         payload hashes to {found:#010x}"
    )]
    PayloadChecksum {
        kind: FrameKind,
        expected: u32,
        found: u32,
    },

    #[error("stream ended inside a frame: {pending} bytes buffered, {needed} more needed")]
    Truncated { pending: usize, needed: usize },

    #[error("the frame decoder failed earlier; the stream has lost its framing")]
    Poisoned,

    #[error("invalid {kind:?} payload: {reason}")]
    InvalidPayload { kind: FrameKind, reason: String },

    #[error(
        "{kind:?} payload of {payload} bytes is not the archive of what it decodes to \
         ({accounted} bytes accounted for{}); a peer's encoder never pads or overlaps",
        if accounted > payload { " so far" } else { "" }
    )]
    PayloadSizeMismatch {
        kind: FrameKind,
        accounted: usize,
        payload: usize,
    },

    #[error("expected a {expected:?} frame, found {found:?}")]
    UnexpectedKind {
        expected: FrameKind,
        found: FrameKind,
    },

    #[error(
        "message {index} of the batch goes from {found_from} to {found_to}; \
         this connection carries messages from {expected_from} to {expected_to}"
    )]
    ForeignMessage {
        index: usize,
        expected_from: u64,
        found_from: u64,
        expected_to: u64,
        found_to: u64,
    },

    #[error(
        "message {index} of the batch needs up to {len} bytes, more than a frame carries ({max})"
    )]
    MessageTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },

    #[error("snapshot chunk of {len} data bytes exceeds the chunk limit of {max}")]
    ChunkTooLarge { len: usize, max: usize },

    #[error("wire limit {name} = {value} is out of range 1..={max}")]
    LimitOutOfRange {
        name: &'static str,
        value: usize,
        max: usize,
    },

    #[error("could not encode a {kind:?} payload: {reason}")]
    Encode { kind: FrameKind, reason: String },
}
