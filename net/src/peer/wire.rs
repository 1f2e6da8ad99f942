//! Payloads: what each frame kind carries, built and checked.
//!
//! Every payload is one rkyv archive (little-endian, unaligned, 32-bit
//! relative pointers: the same bytes on every host). A received payload is
//! validated with bytecheck before anything reads it, then converted into
//! owned values; nothing here uses rkyv's unchecked access.

use basalt_raft::{Message, NodeId, SnapshotMetadata};
use rkyv::rancor;
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::ser::{Positional, Writer};

use super::error::PeerWireError;
use super::frame::{begin_frame, finish_frame, FrameKind, RawFrame};
use super::hello::{Hello, HelloReply};
use super::limits::WireLimits;
use super::raft_archive::{
    archived_len, messages_from_archived, ArchivedBatch, BatchOut, CopyBudget, BATCH_ROOT_LEN,
};
use super::snapshot_chunk::{decode_snapshot_chunk, ChunkOut, SnapshotChunk};

/// A received frame, validated and converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    HelloReply(HelloReply),
    Messages(Vec<Message>),
    SnapshotChunk(SnapshotChunk),
}

impl RawFrame {
    /// Validates the payload for the frame's kind and converts it.
    pub fn decode(&self) -> Result<Frame, PeerWireError> {
        Ok(match self.kind {
            FrameKind::Hello => Frame::Hello(decode_owned::<Hello>(self.kind, &self.payload)?),
            FrameKind::HelloReply => {
                Frame::HelloReply(decode_owned::<HelloReply>(self.kind, &self.payload)?)
            }
            FrameKind::Messages => {
                let mut batch = Vec::new();
                decode_messages(&self.payload, &mut batch)?;
                Frame::Messages(batch)
            }
            FrameKind::SnapshotChunk => Frame::SnapshotChunk(decode_snapshot_chunk(&self.payload)?),
        })
    }

    /// Appends a `Messages` frame's batch to `out`, reusing its capacity.
    pub fn decode_messages_into(&self, out: &mut Vec<Message>) -> Result<(), PeerWireError> {
        if self.kind != FrameKind::Messages {
            return Err(PeerWireError::UnexpectedKind {
                expected: FrameKind::Messages,
                found: self.kind,
            });
        }
        decode_messages(&self.payload, out)
    }
}

/// Validates a `Messages` payload and appends its batch to `out`. On error
/// `out` is left as it was.
pub fn decode_messages(payload: &[u8], out: &mut Vec<Message>) -> Result<(), PeerWireError> {
    let kind = FrameKind::Messages;
    let batch = rkyv::api::low::access::<ArchivedBatch, rancor::Error>(payload)
        .map_err(|e| invalid(kind, e))?;
    let before = out.len();
    let mut budget = CopyBudget::new(kind, payload.len());
    messages_from_archived(batch, &mut budget, out)
        .and_then(|()| budget.finish())
        .inspect_err(|_| out.truncate(before))
}

/// Validates and deserializes a handshake payload, then requires it to be
/// exactly what we would have sent for the value it decodes to. Handshakes
/// are two frames per connection, so the second encoding costs nothing that
/// matters, and it refuses the payloads that validate by accident (another
/// kind's payload, a prefix, trailing bytes).
fn decode_owned<T>(kind: FrameKind, payload: &[u8]) -> Result<T, PeerWireError>
where
    T: rkyv::Archive
        + for<'a, 'b> rkyv::Serialize<
            rkyv::api::low::LowSerializer<PayloadWriter<'a>, ArenaHandle<'b>, rancor::Error>,
        >,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::low::LowValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rancor::Strategy<rkyv::de::pooling::Unpool, rancor::Error>>,
{
    let value =
        rkyv::api::low::from_bytes::<T, rancor::Error>(payload).map_err(|e| invalid(kind, e))?;
    let mut again = Vec::with_capacity(payload.len());
    serialize_into(&value, &mut again, &mut Arena::new()).map_err(|e| PeerWireError::Encode {
        kind,
        reason: e.to_string(),
    })?;
    if again != payload {
        return Err(PeerWireError::PayloadSizeMismatch {
            kind,
            accounted: again.len(),
            payload: payload.len(),
        });
    }
    Ok(value)
}

/// Appends the archive of `value` to `out`, positions counted from where
/// it starts.
fn serialize_into<T>(value: &T, out: &mut Vec<u8>, arena: &mut Arena) -> Result<(), rancor::Error>
where
    T: for<'a, 'b> rkyv::Serialize<
        rkyv::api::low::LowSerializer<PayloadWriter<'a>, ArenaHandle<'b>, rancor::Error>,
    >,
{
    let base = out.len();
    let writer = PayloadWriter { out, base };
    rkyv::api::low::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, writer, arena.acquire())?;
    Ok(())
}

fn invalid(kind: FrameKind, e: rancor::Error) -> PeerWireError {
    PeerWireError::InvalidPayload {
        kind,
        reason: e.to_string(),
    }
}

/// Refuses a batch unless every message in it is from `from` (the peer this
/// connection's handshake named) to `to` (this member): a peer must not
/// speak for another member, and a message for someone else arrived here by
/// mistake. Returns the first offender.
pub fn check_batch(from: NodeId, to: NodeId, batch: &[Message]) -> Result<(), PeerWireError> {
    match batch.iter().position(|m| m.from != from || m.to != to) {
        None => Ok(()),
        Some(index) => Err(PeerWireError::ForeignMessage {
            index,
            expected_from: from,
            found_from: batch[index].from,
            expected_to: to,
            found_to: batch[index].to,
        }),
    }
}

/// Builds frames into a caller's buffer. Keep one per connection: it reuses
/// its serialization scratch space across calls, so encoding a batch
/// allocates nothing once `out` and the scratch have grown to size.
pub struct FrameEncoder {
    arena: Arena,
    limits: WireLimits,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FrameEncoder {
    pub fn new(limits: WireLimits) -> FrameEncoder {
        FrameEncoder {
            arena: Arena::new(),
            limits,
        }
    }

    pub fn limits(&self) -> WireLimits {
        self.limits
    }

    /// Frames sent from now on obey `limits` (after the handshake: ours,
    /// [`WireLimits::min`] the peer's).
    pub fn set_limits(&mut self, limits: WireLimits) {
        self.limits = limits;
    }

    /// Appends a `Hello` frame to `out`.
    pub fn hello(&mut self, hello: &Hello, out: &mut Vec<u8>) -> Result<(), PeerWireError> {
        self.write(FrameKind::Hello, hello, out)
    }

    /// Appends a `HelloReply` frame to `out`.
    pub fn hello_reply(
        &mut self,
        reply: &HelloReply,
        out: &mut Vec<u8>,
    ) -> Result<(), PeerWireError> {
        self.write(FrameKind::HelloReply, reply, out)
    }

    /// Appends `batch` to `out` as as few `Messages` frames as the limit
    /// allows, in order, split between messages; returns how many frames
    /// (0 for an empty batch). All or nothing: on error `out` is as it was,
    /// and [`PeerWireError::MessageTooLarge`] names the message that fits in
    /// no frame.
    pub fn messages(
        &mut self,
        batch: &[Message],
        out: &mut Vec<u8>,
    ) -> Result<usize, PeerWireError> {
        let out_start = out.len();
        let max = self.limits.max_messages_payload();
        let mut frames = 0;
        let mut rest = batch;
        while !rest.is_empty() {
            let mut len = BATCH_ROOT_LEN;
            let fits = rest
                .iter()
                .take_while(|m| {
                    len += archived_len(m);
                    len <= max
                })
                .count();
            if fits == 0 {
                out.truncate(out_start);
                return Err(PeerWireError::MessageTooLarge {
                    index: batch.len() - rest.len(),
                    len: BATCH_ROOT_LEN + archived_len(&rest[0]),
                    max,
                });
            }
            let (now, later) = rest.split_at(fits);
            if let Err(e) = self.write(FrameKind::Messages, &BatchOut(now), out) {
                out.truncate(out_start);
                return Err(e);
            }
            frames += 1;
            rest = later;
        }
        Ok(frames)
    }

    /// Appends chunk `seq` of the snapshot described by `metadata` to `out`.
    pub fn snapshot_chunk(
        &mut self,
        metadata: &SnapshotMetadata,
        seq: u64,
        last: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), PeerWireError> {
        let max = self.limits.max_snapshot_chunk_data();
        if data.len() > max {
            return Err(PeerWireError::ChunkTooLarge {
                len: data.len(),
                max,
            });
        }
        let chunk = ChunkOut {
            metadata,
            seq,
            last,
            data,
        };
        self.write(FrameKind::SnapshotChunk, &chunk, out)
    }

    fn write<T>(
        &mut self,
        kind: FrameKind,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), PeerWireError>
    where
        T: for<'a, 'b> rkyv::Serialize<
            rkyv::api::low::LowSerializer<
                PayloadWriter<'a>,
                rkyv::ser::allocator::ArenaHandle<'b>,
                rancor::Error,
            >,
        >,
    {
        let start = begin_frame(out);
        let payload_start = out.len();
        let writer = PayloadWriter {
            out: &mut *out,
            base: payload_start,
        };
        if let Err(e) = rkyv::api::low::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            value,
            writer,
            self.arena.acquire(),
        ) {
            out.truncate(start);
            return Err(PeerWireError::Encode {
                kind,
                reason: e.to_string(),
            });
        }
        finish_frame(out, start, kind, self.limits.payload_limit(kind))
    }
}

/// Serializes into the tail of a frame buffer. rkyv's positions are
/// relative to the payload's start, so the payload is a self-contained
/// archive whatever precedes it in the buffer.
pub(crate) struct PayloadWriter<'a> {
    out: &'a mut Vec<u8>,
    base: usize,
}

impl Positional for PayloadWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.base
    }
}

impl<E> Writer<E> for PayloadWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Payload bytes a `Messages` frame holding exactly `batch` takes.
pub fn messages_payload_len(batch: &[Message]) -> usize {
    BATCH_ROOT_LEN + batch.iter().map(archived_len).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::FrameDecoder;
    use basalt_raft::{ConfState, Entry, EntryType, MessageType, Snapshot};

    fn append(from: u64, to: u64, data_len: usize) -> Message {
        let mut m = Message::new(MessageType::Append, from, to);
        m.term = 3;
        m.entries = vec![Entry {
            term: 3,
            index: 10,
            entry_type: EntryType::ConfChange,
            data: vec![0xab; data_len],
        }];
        m.context = b"ctx".to_vec();
        m.snapshot = Some(Snapshot {
            metadata: SnapshotMetadata {
                index: 9,
                term: 2,
                conf_state: ConfState {
                    voters: vec![1, 2],
                    voters_outgoing: vec![3],
                    learners: vec![4],
                    learners_next: vec![5, 6],
                    auto_leave: true,
                },
            },
            data: b"snap".to_vec(),
        });
        m
    }

    #[test]
    fn payload_len_is_exact() {
        // Catches: an archived_len that under-counts, which would let the
        // encoder build frames over the limit.
        let batch = vec![append(1, 2, 5), Message::new(MessageType::Heartbeat, 1, 2)];
        let mut out = Vec::new();
        let mut enc = FrameEncoder::new(WireLimits::default());
        assert_eq!(enc.messages(&batch, &mut out).unwrap(), 1);
        assert_eq!(
            out.len() - crate::peer::HEADER_LEN,
            messages_payload_len(&batch)
        );
        let mut d = FrameDecoder::new(WireLimits::default());
        d.push(&out);
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(frame.decode().unwrap(), Frame::Messages(batch));
    }
}
