//! How big a frame may be, per kind.
//!
//! A decoder trusts a header's length only after the header checksum
//! matches and the length is within the limit for the frame's kind; only
//! then does it reserve room for the payload. So a peer can make us buffer
//! at most one limit's worth of bytes per connection.

use super::error::PeerWireError;
use super::frame::FrameKind;

/// Ceiling for every configurable payload limit. rkyv's relative pointers
/// are 32-bit; staying far below 2 GiB keeps every offset arithmetic in an
/// archive (and every reservation a peer can cause) small.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Default largest `Messages` payload. etcd bounds a peer message by
/// `--max-request-bytes` (1.5 MiB) plus overhead per entry, and Raft's
/// `max_size_per_msg` bounds appends; a batch of many messages needs more.
pub const DEFAULT_MAX_MESSAGES_PAYLOAD: usize = 16 << 20;

/// Default largest data in one snapshot chunk (what etcd's gRPC snapshot
/// stream sends per message is 32 KiB; a peer stream wants fewer, larger
/// frames).
pub const DEFAULT_MAX_SNAPSHOT_CHUNK_DATA: usize = 1 << 20;

/// Room in a snapshot chunk frame beyond its data: the snapshot's metadata
/// (a conf state of up to ~8,000 member ids) and the archive's fixed fields.
pub const SNAPSHOT_CHUNK_OVERHEAD: usize = 64 << 10;

/// Largest `Hello` or `HelloReply` payload: a name and a few peer URLs.
pub const MAX_CONTROL_PAYLOAD: usize = 64 << 10;

/// Payload limits for one connection. Both ends should agree: a member
/// announces its own in [`HelloReply::Accepted`](super::HelloReply), and a
/// sender frames with [`WireLimits::min`] of its own and the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    max_messages_payload: usize,
    max_snapshot_chunk_data: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_messages_payload: DEFAULT_MAX_MESSAGES_PAYLOAD,
            max_snapshot_chunk_data: DEFAULT_MAX_SNAPSHOT_CHUNK_DATA,
        }
    }
}

impl WireLimits {
    /// Limits with the given `Messages` payload and snapshot chunk data
    /// sizes, each in `1..=MAX_FRAME_BYTES` (a chunk's frame also needs
    /// [`SNAPSHOT_CHUNK_OVERHEAD`] under the ceiling).
    pub fn new(
        max_messages_payload: usize,
        max_snapshot_chunk_data: usize,
    ) -> Result<WireLimits, PeerWireError> {
        check_range(
            "max_messages_payload",
            max_messages_payload,
            MAX_FRAME_BYTES,
        )?;
        check_range(
            "max_snapshot_chunk_data",
            max_snapshot_chunk_data,
            MAX_FRAME_BYTES - SNAPSHOT_CHUNK_OVERHEAD,
        )?;
        Ok(WireLimits {
            max_messages_payload,
            max_snapshot_chunk_data,
        })
    }

    pub fn max_messages_payload(&self) -> usize {
        self.max_messages_payload
    }

    pub fn max_snapshot_chunk_data(&self) -> usize {
        self.max_snapshot_chunk_data
    }

    /// The stricter of two members' limits: what a sender may use towards a
    /// peer that announced `other`.
    pub fn min(self, other: WireLimits) -> WireLimits {
        WireLimits {
            max_messages_payload: self.max_messages_payload.min(other.max_messages_payload),
            max_snapshot_chunk_data: self
                .max_snapshot_chunk_data
                .min(other.max_snapshot_chunk_data),
        }
    }

    /// Largest payload a frame of `kind` may carry.
    pub fn payload_limit(&self, kind: FrameKind) -> usize {
        match kind {
            FrameKind::Hello | FrameKind::HelloReply => MAX_CONTROL_PAYLOAD,
            FrameKind::Messages => self.max_messages_payload,
            FrameKind::SnapshotChunk => self.max_snapshot_chunk_data + SNAPSHOT_CHUNK_OVERHEAD,
        }
    }

    /// Largest payload any frame may carry under these limits.
    pub fn max_payload(&self) -> usize {
        [
            FrameKind::Hello,
            FrameKind::HelloReply,
            FrameKind::Messages,
            FrameKind::SnapshotChunk,
        ]
        .into_iter()
        .map(|kind| self.payload_limit(kind))
        .max()
        .unwrap_or(MAX_FRAME_BYTES)
    }
}

fn check_range(name: &'static str, value: usize, max: usize) -> Result<(), PeerWireError> {
    if value == 0 || value > max {
        return Err(PeerWireError::LimitOutOfRange { name, value, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_at_construction() {
        assert!(WireLimits::new(1, 1).is_ok());
        assert!(
            WireLimits::new(MAX_FRAME_BYTES, MAX_FRAME_BYTES - SNAPSHOT_CHUNK_OVERHEAD).is_ok()
        );
        assert_eq!(
            WireLimits::new(0, 1),
            Err(PeerWireError::LimitOutOfRange {
                name: "max_messages_payload",
                value: 0,
                max: MAX_FRAME_BYTES
            })
        );
        assert!(WireLimits::new(MAX_FRAME_BYTES + 1, 1).is_err());
        assert!(WireLimits::new(1, MAX_FRAME_BYTES).is_err());
    }

    #[test]
    fn every_kind_stays_under_the_ceiling() {
        let widest =
            WireLimits::new(MAX_FRAME_BYTES, MAX_FRAME_BYTES - SNAPSHOT_CHUNK_OVERHEAD).unwrap();
        assert_eq!(widest.max_payload(), MAX_FRAME_BYTES);
        assert_eq!(
            WireLimits::default().max_payload(),
            DEFAULT_MAX_MESSAGES_PAYLOAD
        );
    }

    #[test]
    fn min_takes_the_stricter_of_each() {
        let a = WireLimits::new(10, 200).unwrap();
        let b = WireLimits::new(100, 20).unwrap();
        assert_eq!(a.min(b), WireLimits::new(10, 20).unwrap());
    }
}
