//! Snapshot chunks: a store snapshot streamed to a member too far behind.
//!
//! A store snapshot (the image behind Raft's `Snapshot` message) can be far
//! larger than any frame, so it travels on a connection of its own as a
//! sequence of chunks numbered from 0, the last one flagged. Every chunk
//! repeats the snapshot's metadata so the receiver can check that all of
//! them belong to the same snapshot. A received chunk's data is a slice of
//! the frame's payload: it reaches the disk without another copy.

use std::mem::size_of;

use basalt_raft::SnapshotMetadata;
use bytes::Bytes;
use rkyv::with::InlineAsBox;
use rkyv::{Archive, Serialize};

use super::error::PeerWireError;
use super::frame::FrameKind;
use super::raft_archive::{
    snapshot_metadata_from_archived, ByRef, CopyBudget, SnapshotMetadataDef,
};

/// One received piece of a store snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Index, term and membership of the snapshot this chunk belongs to.
    pub metadata: SnapshotMetadata,
    /// Position of this chunk in the stream, from 0.
    pub seq: u64,
    /// True on the stream's final chunk.
    pub last: bool,
    /// The chunk's bytes, sharing the received frame's buffer.
    pub data: Bytes,
}

/// The archived layout of a chunk, serialized from borrowed parts.
#[derive(Archive, Serialize)]
#[rkyv(archived = ArchivedChunk)]
pub(crate) struct ChunkOut<'a> {
    #[rkyv(with = ByRef<SnapshotMetadataDef>)]
    pub(crate) metadata: &'a SnapshotMetadata,
    pub(crate) seq: u64,
    pub(crate) last: bool,
    #[rkyv(with = InlineAsBox)]
    pub(crate) data: &'a [u8],
}

/// Validates a `SnapshotChunk` payload and takes it apart.
pub(crate) fn decode_snapshot_chunk(payload: &Bytes) -> Result<SnapshotChunk, PeerWireError> {
    let kind = FrameKind::SnapshotChunk;
    let chunk =
        rkyv::api::low::access::<ArchivedChunk, rkyv::rancor::Error>(payload).map_err(|e| {
            PeerWireError::InvalidPayload {
                kind,
                reason: e.to_string(),
            }
        })?;
    let mut budget = CopyBudget::new(kind, payload.len());
    budget.take(1, size_of::<ArchivedChunk>())?;
    let metadata = snapshot_metadata_from_archived(&chunk.metadata, &mut budget)?;
    let data: &[u8] = chunk.data.get();
    budget.take(data.len(), 1)?;
    budget.finish()?;
    // Validation proved `data` lies inside `payload`; find where without
    // trusting that proof with a panic.
    let start = (data.as_ptr() as usize).wrapping_sub(payload.as_ptr() as usize);
    let data = start
        .checked_add(data.len())
        .filter(|&end| end <= payload.len())
        .map(|end| payload.slice(start..end))
        .ok_or_else(|| PeerWireError::InvalidPayload {
            kind,
            reason: "chunk data outside the payload".to_string(),
        })?;
    Ok(SnapshotChunk {
        metadata,
        seq: chunk.seq.to_native(),
        last: chunk.last,
        data,
    })
}
