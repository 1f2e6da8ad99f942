//! The peer transport's wire format: how members' bytes are framed, and
//! what the frames carry. Pure code: the socket side feeds bytes in and
//! writes bytes out.
//!
//! A connection is opened by the member that has something to send. It
//! sends a [`Hello`] (cluster id, its member id, the member it believes it
//! reached, what the stream will carry); the other member answers with a
//! [`HelloReply`], accepting or refusing with a [`Refusal`]. After
//! acceptance the dialer sends `Messages` frames (batches of Raft
//! messages) or, on a connection of its own, `SnapshotChunk` frames.
//!
//! ```
//! use basalt_net::peer::{check_batch, Frame, FrameDecoder, FrameEncoder, Hello, HelloReply,
//!     StreamKind, WireLimits};
//! use basalt_raft::{Message, MessageType};
//!
//! let limits = WireLimits::default();
//! let (cluster, leader, follower) = (0xc1, 1, 2);
//! let (mut leader_enc, mut leader_dec) = (FrameEncoder::new(limits), FrameDecoder::new(limits));
//! let (mut follower_enc, mut follower_dec) = (FrameEncoder::new(limits), FrameDecoder::new(limits));
//! let (mut to_follower, mut to_leader) = (Vec::new(), Vec::new());
//!
//! // The leader dials and says who it is.
//! let hello = Hello::new(cluster, leader, follower, StreamKind::Messages);
//! leader_enc.hello(&hello, &mut to_follower).unwrap();
//!
//! // The follower cuts the stream into frames as bytes arrive, checks the
//! // hello (and, not shown, that `hello.from` is a current member), answers.
//! follower_dec.push(&to_follower);
//! to_follower.clear();
//! let Frame::Hello(hello) = follower_dec.next_frame().unwrap().unwrap().decode().unwrap() else {
//!     panic!("a connection opens with a hello");
//! };
//! assert_eq!(hello.check(cluster, follower), Ok(()));
//! let reply = HelloReply::accept(follower, hello.protocol_version, limits);
//! follower_enc.hello_reply(&reply, &mut to_leader).unwrap();
//!
//! // Accepted: the leader frames with both members' limits, and sends.
//! leader_dec.push(&to_leader);
//! let Frame::HelloReply(reply) = leader_dec.next_frame().unwrap().unwrap().decode().unwrap() else {
//!     panic!("a hello is answered");
//! };
//! leader_enc.set_limits(limits.min(reply.peer_limits().expect("accepted")));
//! let heartbeat = Message::new(MessageType::Heartbeat, leader, follower);
//! leader_enc.messages(&[heartbeat.clone()], &mut to_follower).unwrap();
//!
//! follower_dec.push(&to_follower);
//! let mut batch = Vec::new();
//! while let Some(frame) = follower_dec.next_frame().unwrap() {
//!     frame.decode_messages_into(&mut batch).unwrap();
//! }
//! check_batch(hello.from, follower, &batch).unwrap();
//! assert_eq!(batch, vec![heartbeat]);
//! ```
//!
//! Layers, each a file: `frame.rs` cuts bytes into checksummed frames
//! ([`FrameDecoder`]; the byte layout is on [`FrameHeader`]); `wire.rs` builds and checks
//! payloads, which are rkyv archives validated with bytecheck before use;
//! `raft_archive.rs` mirrors `basalt-raft`'s types for rkyv; `hello.rs` is
//! the handshake; `snapshot_chunk.rs` the snapshot stream; `limits.rs` the
//! size limits.
//!
//! Trust: nothing a peer sends is believed before it is checked. A length
//! is believed (and memory reserved for it) only after the header checksum
//! matches and the length is within the limit for the frame's kind; a
//! payload is read only after its checksum matches and bytecheck validated
//! it (checksums catch damage, validation catches malice: a hostile peer
//! computes valid checksums); a decoded payload never holds more bytes of
//! values than it had bytes, and is exactly the archive of what it decodes
//! to (`PayloadSizeMismatch`); and [`check_batch`]
//! refuses messages not from the handshaken peer or not to us. No input
//! makes any of this panic.
//!
//! For the socket side:
//! - read in chunks of `min(decoder.needed().max(16 KiB), 1 MiB)` (or a
//!   fixed 64 KiB buffer), [`FrameDecoder::push`] each read and call
//!   [`FrameDecoder::next_frame`] until `Ok(None)`; at end of stream call
//!   [`FrameDecoder::finish`]. A connection buffers at most one frame:
//!   [`WireLimits::max_payload`] + [`HEADER_LEN`] plus one read.
//! - any [`PeerWireError`] from a peer's bytes means: log, close, let the
//!   peer reconnect. The decoder is poisoned after its first error.
//! - keep one [`FrameEncoder`] and one output `Vec<u8>` per connection and
//!   clear (not drop) the `Vec` after each write: encoding then allocates
//!   nothing in steady state. After the handshake, `set_limits` to ours
//!   [`WireLimits::min`] the peer's ([`HelloReply::peer_limits`]).

mod error;
mod frame;
mod hello;
mod limits;
mod raft_archive;
mod snapshot_chunk;
mod transport;
mod wire;

mod join;
pub use error::PeerWireError;
pub use frame::{
    encode_raw_frame, FrameDecoder, FrameHeader, FrameKind, RawFrame, FRAME_VERSION, HEADER_LEN,
    MAGIC,
};
pub use hello::{
    Hello, HelloReply, JoinedCluster, JoinedMember, PeerAnswer, PeerQuery, Refusal, StreamKind,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
pub use join::discover;
pub use limits::{
    WireLimits, DEFAULT_MAX_MESSAGES_PAYLOAD, DEFAULT_MAX_SNAPSHOT_CHUNK_DATA, MAX_CONTROL_PAYLOAD,
    MAX_FRAME_BYTES, SNAPSHOT_CHUNK_OVERHEAD,
};
pub use snapshot_chunk::SnapshotChunk;
pub use transport::{Answering, PeerSink, Transport, MAX_QUEUED_MESSAGES};
pub use wire::{check_batch, decode_messages, messages_payload_len, Frame, FrameEncoder};
