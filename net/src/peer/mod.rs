//! Peer wire format (WIP).
mod error;
mod frame;
mod hello;
mod limits;
mod raft_archive;
mod snapshot_chunk;
mod wire;

pub use error::PeerWireError;
pub use frame::{
    encode_raw_frame, FrameDecoder, FrameHeader, FrameKind, RawFrame, FRAME_VERSION, HEADER_LEN,
    MAGIC,
};
pub use hello::{Hello, HelloReply, Refusal, StreamKind, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
pub use limits::{
    WireLimits, DEFAULT_MAX_MESSAGES_PAYLOAD, DEFAULT_MAX_SNAPSHOT_CHUNK_DATA, MAX_CONTROL_PAYLOAD,
    MAX_FRAME_BYTES, SNAPSHOT_CHUNK_OVERHEAD,
};
pub use snapshot_chunk::SnapshotChunk;
pub use wire::{check_batch, decode_messages, messages_payload_len, Frame, FrameEncoder};
