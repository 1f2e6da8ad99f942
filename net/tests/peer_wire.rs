//! The peer wire format end to end: every payload kind round-trips through
//! encoder, byte stream and decoder; every corruption of a frame is an
//! error, never a panic; hostile payloads with valid checksums are refused
//! or decoded within their size; property tests feed random and mutated
//! frames to the decoder.

use basalt_net::peer::{
    check_batch, decode_messages, encode_raw_frame, messages_payload_len, Frame, FrameDecoder,
    FrameEncoder, FrameHeader, FrameKind, Hello, HelloReply, PeerAnswer, PeerQuery, PeerWireError,
    RawFrame, Refusal, SnapshotChunk, StreamKind, WireLimits, HEADER_LEN, MAGIC, PROTOCOL_VERSION,
};
use basalt_raft::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
    CAMPAIGN_TRANSFER,
};

const ALL_TYPES: [MessageType; 14] = [
    MessageType::Propose,
    MessageType::Append,
    MessageType::AppendResponse,
    MessageType::Vote,
    MessageType::VoteResponse,
    MessageType::PreVote,
    MessageType::PreVoteResponse,
    MessageType::Heartbeat,
    MessageType::HeartbeatResponse,
    MessageType::Snapshot,
    MessageType::ReadIndex,
    MessageType::ReadIndexResponse,
    MessageType::TransferLeader,
    MessageType::TimeoutNow,
];

fn conf_state() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        voters_outgoing: vec![1, 2, 4],
        learners: vec![5],
        learners_next: vec![4],
        auto_leave: true,
    }
}

fn metadata() -> SnapshotMetadata {
    SnapshotMetadata {
        index: 1_000,
        term: 7,
        conf_state: conf_state(),
    }
}

/// A message of `msg_type` with every field away from its default.
fn full_message(msg_type: MessageType) -> Message {
    Message {
        msg_type,
        to: 2,
        from: 1,
        term: 9,
        log_term: 8,
        index: 1_234,
        entries: vec![
            Entry {
                term: 8,
                index: 1_235,
                entry_type: EntryType::Normal,
                data: b"put k v".to_vec(),
            },
            Entry {
                term: 9,
                index: 1_236,
                entry_type: EntryType::ConfChange,
                data: vec![1, 0, 1, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            Entry {
                term: 9,
                index: 1_237,
                entry_type: EntryType::Normal,
                data: Vec::new(),
            },
        ],
        commit: 1_230,
        snapshot: Some(Snapshot {
            metadata: metadata(),
            data: b"store image".to_vec(),
        }),
        reject: true,
        reject_hint: 1_100,
        context: CAMPAIGN_TRANSFER.to_vec(),
    }
}

/// Every type, each with all fields set and again with the optional parts
/// (context, snapshot, entries, an empty snapshot's conf state) empty.
fn every_message() -> Vec<Message> {
    let mut batch = Vec::new();
    for t in ALL_TYPES {
        batch.push(full_message(t));
        let mut sparse = full_message(t);
        sparse.context.clear();
        sparse.entries.clear();
        sparse.snapshot = Some(Snapshot::default());
        batch.push(sparse);
        let mut bare = Message::new(t, 1, 2);
        bare.term = u64::MAX;
        batch.push(bare);
    }
    batch
}

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: 0xdead_beef_cafe,
        from: 1,
        to: 2,
        stream: StreamKind::Messages,
        name: Some("infra1".to_string()),
        peer_urls: vec![
            "http://10.0.0.1:2380".to_string(),
            "http://[fe80::1]:2380".to_string(),
        ],
        query: None,
    }
}

fn query_hello() -> Hello {
    Hello {
        stream: StreamKind::Query,
        query: Some(PeerQuery::LeaseTimeToLive { id: -7, keys: true }),
        ..hello()
    }
}

fn replies() -> Vec<HelloReply> {
    vec![
        HelloReply::accept(2, PROTOCOL_VERSION, WireLimits::default()),
        HelloReply::Refused(Refusal::ClusterIdMismatch {
            ours: 1,
            theirs: u64::MAX,
        }),
        HelloReply::Refused(Refusal::ReceiverMismatch {
            ours: 3,
            expected: 2,
        }),
        HelloReply::Refused(Refusal::UnknownMember { id: 9 }),
        HelloReply::Answer(PeerAnswer::LeaseTimeToLive {
            ttl: 5,
            granted_ttl: 60,
            keys: vec![b"k".to_vec(), Vec::new()],
        }),
        HelloReply::Answer(PeerAnswer::NotLeader),
        HelloReply::Answer(PeerAnswer::Failed {
            message: "disk".into(),
        }),
        HelloReply::Refused(Refusal::MemberRemoved { id: 4 }),
        HelloReply::Refused(Refusal::VersionUnsupported {
            min: 1,
            max: 1,
            theirs: 7,
        }),
    ]
}

fn encoder() -> FrameEncoder {
    FrameEncoder::new(WireLimits::default())
}

fn decoder() -> FrameDecoder {
    FrameDecoder::new(WireLimits::default())
}

/// A stream of every frame kind, and the frames it should decode to.
fn mixed_stream() -> (Vec<u8>, Vec<Frame>) {
    let mut enc = encoder();
    let mut wire = Vec::new();
    let mut frames = Vec::new();
    enc.hello(&hello(), &mut wire).unwrap();
    frames.push(Frame::Hello(hello()));
    enc.hello(&query_hello(), &mut wire).unwrap();
    frames.push(Frame::Hello(query_hello()));
    for reply in replies() {
        enc.hello_reply(&reply, &mut wire).unwrap();
        frames.push(Frame::HelloReply(reply));
    }
    let batch = every_message();
    assert_eq!(enc.messages(&batch, &mut wire).unwrap(), 1);
    frames.push(Frame::Messages(batch));
    enc.messages(&[full_message(MessageType::Append)], &mut wire)
        .unwrap();
    frames.push(Frame::Messages(vec![full_message(MessageType::Append)]));
    for (seq, data) in [&b"first"[..], b"", b"last"].into_iter().enumerate() {
        let last = seq == 2;
        enc.snapshot_chunk(&metadata(), seq as u64, last, data, &mut wire)
            .unwrap();
        frames.push(Frame::SnapshotChunk(SnapshotChunk {
            metadata: metadata(),
            seq: seq as u64,
            last,
            data: bytes::Bytes::copy_from_slice(data),
        }));
    }
    (wire, frames)
}

/// Feeds `wire` in the given pieces, decoding every frame as it completes.
fn feed(pieces: impl IntoIterator<Item = Vec<u8>>) -> Result<Vec<Frame>, PeerWireError> {
    let mut d = decoder();
    let mut got = Vec::new();
    for piece in pieces {
        d.push(&piece);
        while let Some(raw) = d.next_frame()? {
            got.push(raw.decode()?);
        }
    }
    d.finish()?;
    Ok(got)
}

fn only_frame(wire: &[u8]) -> RawFrame {
    let mut d = decoder();
    d.push(wire);
    let raw = d.next_frame().unwrap().expect("a whole frame");
    assert_eq!(d.next_frame(), Ok(None));
    d.finish().unwrap();
    raw
}

// ---- round trips ---------------------------------------------------------

#[test]
fn every_message_type_round_trips_with_all_fields() {
    let batch = every_message();
    let mut wire = Vec::new();
    assert_eq!(encoder().messages(&batch, &mut wire).unwrap(), 1);
    assert_eq!(wire.len(), HEADER_LEN + messages_payload_len(&batch));
    let raw = only_frame(&wire);
    assert_eq!(raw.kind, FrameKind::Messages);
    assert_eq!(raw.decode().unwrap(), Frame::Messages(batch.clone()));
    // Each message alone, too: no field leans on a neighbour.
    for m in batch {
        let mut wire = Vec::new();
        encoder()
            .messages(std::slice::from_ref(&m), &mut wire)
            .unwrap();
        assert_eq!(
            only_frame(&wire).decode().unwrap(),
            Frame::Messages(vec![m])
        );
    }
}

#[test]
fn decode_messages_into_appends_and_reuses_the_vec() {
    let mut wire = Vec::new();
    let mut enc = encoder();
    enc.messages(&[full_message(MessageType::Vote)], &mut wire)
        .unwrap();
    enc.messages(&[full_message(MessageType::Heartbeat)], &mut wire)
        .unwrap();
    let mut d = decoder();
    d.push(&wire);
    let mut batch = Vec::new();
    while let Some(raw) = d.next_frame().unwrap() {
        raw.decode_messages_into(&mut batch).unwrap();
    }
    assert_eq!(
        batch,
        vec![
            full_message(MessageType::Vote),
            full_message(MessageType::Heartbeat)
        ]
    );
}

#[test]
fn an_empty_batch_writes_no_frame() {
    let mut wire = b"kept".to_vec();
    assert_eq!(encoder().messages(&[], &mut wire).unwrap(), 0);
    assert_eq!(wire, b"kept");
    // An empty batch a peer chose to send anyway is valid and empty.
    let mut payload = Vec::new();
    decode_messages(&0u64.to_le_bytes(), &mut payload).unwrap();
    assert!(payload.is_empty());
}

#[test]
fn hello_round_trips_with_and_without_optional_fields() {
    let mut bare = Hello::new(1, 3, 4, StreamKind::Snapshot);
    bare.peer_urls.clear();
    for h in [hello(), bare] {
        let mut wire = Vec::new();
        encoder().hello(&h, &mut wire).unwrap();
        assert_eq!(only_frame(&wire).decode().unwrap(), Frame::Hello(h));
    }
}

#[test]
fn hello_reply_round_trips_every_refusal() {
    for reply in replies() {
        let mut wire = Vec::new();
        encoder().hello_reply(&reply, &mut wire).unwrap();
        let raw = only_frame(&wire);
        assert_eq!(raw.kind, FrameKind::HelloReply);
        assert_eq!(raw.decode().unwrap(), Frame::HelloReply(reply.clone()));
        if let HelloReply::Refused(r) = reply {
            assert!(!r.to_string().is_empty());
        }
    }
}

#[test]
fn snapshot_chunk_round_trips_and_shares_the_frame_buffer() {
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mut wire = Vec::new();
    encoder()
        .snapshot_chunk(&metadata(), 41, true, &data, &mut wire)
        .unwrap();
    let raw = only_frame(&wire);
    let Frame::SnapshotChunk(chunk) = raw.decode().unwrap() else {
        panic!("not a chunk");
    };
    assert_eq!(chunk.metadata, metadata());
    assert_eq!((chunk.seq, chunk.last), (41, true));
    assert_eq!(chunk.data, data);
    // Zero copy: the chunk's bytes lie inside the received payload.
    let payload = raw.payload.as_ptr_range();
    assert!(payload.contains(&chunk.data.as_ptr()));
}

#[test]
fn snapshot_chunk_data_over_the_limit_is_refused() {
    let limits = WireLimits::new(1 << 20, 10).unwrap();
    let mut wire = b"kept".to_vec();
    let err = FrameEncoder::new(limits)
        .snapshot_chunk(&metadata(), 0, false, &[0; 11], &mut wire)
        .unwrap_err();
    assert_eq!(err, PeerWireError::ChunkTooLarge { len: 11, max: 10 });
    assert_eq!(wire, b"kept");
}

// ---- allocation on the hot path -----------------------------------------

/// Counts allocations made by the current thread, so a test can assert
/// that a code path allocates nothing (other tests run in parallel on
/// other threads and are not counted).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: defers every call to the system allocator unchanged; the counter
// is a const-initialized thread-local Cell, which never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(|n| n.get());
    f();
    ALLOCATIONS.with(|n| n.get()) - before
}

#[test]
fn encoding_a_batch_allocates_nothing_once_warm() {
    // Catches: a per-message allocation on the leader's send path (a
    // mirror struct built per message, a fresh scratch arena per call).
    let batch = every_message();
    let mut enc = encoder();
    let mut out = Vec::new();
    let cold = allocations_in(|| {
        enc.messages(&batch, &mut out).unwrap();
    });
    assert!(cold > 0, "the counter counts");
    let warm = allocations_in(|| {
        for _ in 0..10 {
            out.clear();
            enc.messages(&batch, &mut out).unwrap();
        }
    });
    assert_eq!(warm, 0);
}

// ---- batching under the limit --------------------------------------------

fn append_of(data_len: usize) -> Message {
    let mut m = Message::new(MessageType::Append, 1, 2);
    m.entries.push(Entry {
        term: 1,
        index: 1,
        entry_type: EntryType::Normal,
        data: vec![0x5a; data_len],
    });
    m
}

#[test]
fn a_batch_over_the_limit_is_split_between_messages() {
    let batch: Vec<Message> = (0..10).map(|_| append_of(1_000)).collect();
    let one = messages_payload_len(&batch[..1]);
    // Room for three messages per frame, not four.
    let max = messages_payload_len(&batch[..3]);
    assert!(messages_payload_len(&batch[..4]) > max && one < max);
    let limits = WireLimits::new(max, 1 << 20).unwrap();
    let mut wire = Vec::new();
    assert_eq!(
        FrameEncoder::new(limits)
            .messages(&batch, &mut wire)
            .unwrap(),
        4
    );
    let mut d = FrameDecoder::new(limits);
    d.push(&wire);
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some(raw) = d.next_frame().unwrap() {
        assert!(raw.payload.len() <= max);
        raw.decode_messages_into(&mut got).unwrap();
        frames += 1;
    }
    assert_eq!((frames, got), (4, batch));
}

#[test]
fn a_message_larger_than_any_frame_is_named_and_nothing_is_written() {
    let batch = vec![append_of(10), append_of(10), append_of(5_000)];
    let max = 4_096;
    let limits = WireLimits::new(max, 1 << 20).unwrap();
    let mut wire = b"kept".to_vec();
    let err = FrameEncoder::new(limits)
        .messages(&batch, &mut wire)
        .unwrap_err();
    assert_eq!(
        err,
        PeerWireError::MessageTooLarge {
            index: 2,
            len: messages_payload_len(&batch[2..]),
            max
        }
    );
    assert_eq!(wire, b"kept", "all or nothing");
}

#[test]
fn a_frame_over_the_receivers_limit_is_refused_before_it_is_buffered() {
    let batch = vec![append_of(5_000)];
    let mut wire = Vec::new();
    encoder().messages(&batch, &mut wire).unwrap();
    let small = WireLimits::new(1_000, 1_000).unwrap();
    let mut d = FrameDecoder::new(small);
    d.push(&wire[..HEADER_LEN]);
    assert!(matches!(
        d.next_frame(),
        Err(PeerWireError::FrameTooLarge {
            kind: FrameKind::Messages,
            max: 1_000,
            ..
        })
    ));
}

// ---- check_batch ---------------------------------------------------------

#[test]
fn check_batch_refuses_messages_not_from_the_peer_or_not_to_us() {
    let ok = vec![Message::new(MessageType::Heartbeat, 1, 2); 3];
    assert_eq!(check_batch(1, 2, &ok), Ok(()));
    assert_eq!(check_batch(1, 2, &[]), Ok(()));
    let mut spoofed = ok.clone();
    spoofed[1].from = 3;
    assert_eq!(
        check_batch(1, 2, &spoofed),
        Err(PeerWireError::ForeignMessage {
            index: 1,
            expected_from: 1,
            found_from: 3,
            expected_to: 2,
            found_to: 2
        })
    );
    let mut misrouted = ok;
    misrouted[2].to = 5;
    assert!(matches!(
        check_batch(1, 2, &misrouted),
        Err(PeerWireError::ForeignMessage {
            index: 2,
            found_to: 5,
            ..
        })
    ));
}

// ---- streaming -----------------------------------------------------------

#[test]
fn decoder_fed_byte_by_byte() {
    let (wire, frames) = mixed_stream();
    let got = feed(wire.iter().map(|b| vec![*b])).unwrap();
    assert_eq!(got, frames);
}

#[test]
fn decoder_fed_in_random_splits() {
    let (wire, frames) = mixed_stream();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            // Mostly small reads, sometimes large ones.
            let max = if rng.next() % 4 == 0 { 4_096 } else { 64 };
            let n = (1 + rng.next() as usize % max).min(wire.len() - at);
            pieces.push(wire[at..at + n].to_vec());
            at += n;
        }
        assert_eq!(feed(pieces).unwrap(), frames);
    }
}

#[test]
fn needed_tells_how_much_more_completes_the_frame() {
    let mut wire = Vec::new();
    encoder().messages(&[append_of(1_000)], &mut wire).unwrap();
    let mut d = decoder();
    assert_eq!(d.needed(), HEADER_LEN);
    d.push(&wire[..5]);
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.needed(), HEADER_LEN - 5);
    d.push(&wire[5..HEADER_LEN + 10]);
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.needed(), wire.len() - HEADER_LEN - 10);
    assert_eq!(d.pending(), HEADER_LEN + 10);
    d.push(&wire[HEADER_LEN + 10..]);
    assert!(d.next_frame().unwrap().is_some());
    assert_eq!((d.needed(), d.pending()), (HEADER_LEN, 0));
}

// ---- corruption ----------------------------------------------------------

fn sample_frames() -> Vec<Vec<u8>> {
    let mut enc = encoder();
    let mut out = Vec::new();
    let mut one = |f: &mut dyn FnMut(&mut FrameEncoder, &mut Vec<u8>)| {
        out.clear();
        f(&mut enc, &mut out);
        out.clone()
    };
    vec![
        one(&mut |e, o| e.hello(&hello(), o).unwrap()),
        one(&mut |e, o| e.hello_reply(&replies()[1], o).unwrap()),
        one(&mut |e, o| {
            e.messages(&[full_message(MessageType::Append)], o)
                .map(|_| ())
                .unwrap()
        }),
        one(&mut |e, o| {
            e.snapshot_chunk(&metadata(), 3, false, b"chunk", o)
                .unwrap()
        }),
    ]
}

/// What the decoder makes of `wire` alone: a frame and its decoding, or
/// the first error.
fn decode_all(wire: &[u8]) -> Result<Vec<Frame>, PeerWireError> {
    feed([wire.to_vec()])
}

#[test]
fn every_single_bit_flip_is_an_error() {
    // CRC-32 detects every single-bit error: in the header by its own
    // checksum (or magic/version), in the payload by the payload checksum.
    for wire in sample_frames() {
        for bit in 0..wire.len() * 8 {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = decode_all(&bad).expect_err("a flipped bit went unnoticed");
            let in_header = bit / 8 < HEADER_LEN;
            let expected_class = match err {
                PeerWireError::BadMagic { .. }
                | PeerWireError::UnsupportedVersion { .. }
                | PeerWireError::HeaderChecksum { .. } => in_header,
                PeerWireError::PayloadChecksum { .. } => !in_header,
                _ => false,
            };
            assert!(expected_class, "bit {bit}: unexpected {err:?}");
        }
    }
}

#[test]
fn truncation_at_every_offset_is_an_error_at_end_of_stream() {
    for wire in sample_frames() {
        for cut in 1..wire.len() {
            let mut d = decoder();
            d.push(&wire[..cut]);
            assert_eq!(d.next_frame(), Ok(None), "cut at {cut}");
            assert!(
                matches!(d.finish(), Err(PeerWireError::Truncated { pending, .. }) if pending == cut),
                "cut at {cut}"
            );
        }
    }
}

/// A header with a valid checksum around whatever fields we want.
fn forged_header(kind: u8, flags: u16, len: u32) -> [u8; HEADER_LEN] {
    let mut h = FrameHeader {
        kind: FrameKind::Hello,
        payload_len: len,
        payload_crc: 0,
    }
    .encode();
    h[5] = kind;
    h[6..8].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn forged_headers_are_refused_by_field() {
    let cases: [([u8; HEADER_LEN], PeerWireError); 4] = [
        (
            forged_header(0, 0, 0),
            PeerWireError::UnknownKind { found: 0 },
        ),
        (
            forged_header(5, 0, 0),
            PeerWireError::UnknownKind { found: 5 },
        ),
        (
            forged_header(3, 1, 0),
            PeerWireError::UnknownFlags {
                kind: FrameKind::Messages,
                found: 1,
            },
        ),
        (
            forged_header(1, 0, u32::MAX),
            PeerWireError::FrameTooLarge {
                kind: FrameKind::Hello,
                len: u32::MAX as usize,
                max: basalt_net::peer::MAX_CONTROL_PAYLOAD,
            },
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(decode_all(&header), Err(expected));
    }
}

#[test]
fn wrong_magic_and_version_are_named() {
    let mut wire = sample_frames().remove(0);
    wire[..4].copy_from_slice(b"\x16\x03\x01\x02"); // a TLS ClientHello
    assert_eq!(
        decode_all(&wire),
        Err(PeerWireError::BadMagic {
            expected: MAGIC,
            found: *b"\x16\x03\x01\x02"
        })
    );
    let mut wire = sample_frames().remove(0);
    wire[4] = 0;
    assert_eq!(
        decode_all(&wire),
        Err(PeerWireError::UnsupportedVersion {
            supported: 1,
            found: 0
        })
    );
}

#[test]
fn garbage_is_refused() {
    let mut rng = XorShift(7);
    for len in [1usize, 4, 19, 20, 21, 100, 10_000] {
        for _ in 0..50 {
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let result = decode_all(&junk);
            assert!(result.is_err(), "{len} random bytes decoded: {result:?}");
        }
    }
}

#[test]
fn after_an_error_the_decoder_stays_poisoned() {
    let (wire, _) = mixed_stream();
    let mut d = decoder();
    d.push(b"nope");
    assert!(matches!(
        d.next_frame(),
        Err(PeerWireError::BadMagic { .. })
    ));
    d.push(&wire);
    assert_eq!(d.next_frame(), Err(PeerWireError::Poisoned));
    assert_eq!(d.pending(), 0);
    assert_eq!(d.finish(), Err(PeerWireError::Poisoned));
}

// ---- hostile payloads (valid checksums) ----------------------------------

/// Re-frames `payload` as `kind` with correct checksums: what a hostile
/// peer sends.
fn forged(kind: FrameKind, payload: &[u8]) -> Result<Vec<Frame>, PeerWireError> {
    let mut wire = Vec::new();
    encode_raw_frame(kind, payload, &mut wire).unwrap();
    decode_all(&wire)
}

#[test]
fn a_payload_decoded_as_another_kind_is_refused() {
    // Catches: the same missing exactness check, across kinds (a Hello's
    // bytes validate as some HelloReply).
    for wire in sample_frames() {
        let payload = &wire[HEADER_LEN..];
        let own = FrameKind::from_u8(wire[5]).unwrap();
        for kind in [
            FrameKind::Hello,
            FrameKind::HelloReply,
            FrameKind::Messages,
            FrameKind::SnapshotChunk,
        ] {
            if kind != own {
                assert!(
                    forged(kind, payload).is_err(),
                    "{own:?} payload accepted as {kind:?}"
                );
            }
        }
    }
    let raw = only_frame(&sample_frames()[0]);
    assert_eq!(
        raw.decode_messages_into(&mut Vec::new()),
        Err(PeerWireError::UnexpectedKind {
            expected: FrameKind::Messages,
            found: FrameKind::Hello
        })
    );
}

#[test]
fn truncated_and_empty_payloads_are_refused() {
    // Catches: decoding a payload that merely validates. An rkyv archive
    // does not delimit itself (a prefix whose last bytes look like an
    // empty vector is a valid batch of nothing); a payload must be
    // exactly the archive of what it decodes to.
    for wire in sample_frames() {
        let kind = FrameKind::from_u8(wire[5]).unwrap();
        let payload = &wire[HEADER_LEN..];
        for cut in 0..payload.len() {
            // Cutting the tail removes the root; cutting the head shifts
            // every relative pointer.
            for part in [&payload[..cut], &payload[payload.len() - cut..]] {
                if let Ok(frames) = forged(kind, part) {
                    panic!("{kind:?} payload cut to {cut} decoded: {frames:?}");
                }
            }
        }
    }
}

#[test]
fn single_byte_changes_in_payloads_never_panic_or_amplify() {
    for wire in sample_frames() {
        let kind = FrameKind::from_u8(wire[5]).unwrap();
        let payload = &wire[HEADER_LEN..];
        for at in 0..payload.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff, payload[at] ^ 0x10] {
                let mut bad = payload.to_vec();
                bad[at] = value;
                assert_within_payload(kind, &bad);
            }
        }
    }
}

/// Decodes a forged payload; success is allowed (a changed byte of data is
/// still a valid message) but only if the payload is exactly the archive of
/// what it decoded to: never more values than bytes received.
fn assert_within_payload(kind: FrameKind, payload: &[u8]) {
    if let Ok(frames) = forged(kind, payload) {
        for frame in frames {
            if let Frame::Messages(batch) = frame {
                assert_eq!(messages_payload_len(&batch), payload.len());
            }
        }
    }
}

// ---- property tests ------------------------------------------------------

mod prop {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn message_type() -> impl Strategy<Value = MessageType> {
        (0..ALL_TYPES.len()).prop_map(|i| ALL_TYPES[i])
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(term, index, conf, data)| Entry {
                term,
                index,
                entry_type: if conf {
                    EntryType::ConfChange
                } else {
                    EntryType::Normal
                },
                data,
            })
    }

    fn ids() -> impl Strategy<Value = Vec<u64>> {
        vec(any::<u64>(), 0..5)
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        (
            any::<u64>(),
            any::<u64>(),
            (ids(), ids(), ids(), ids(), any::<bool>()),
            vec(any::<u8>(), 0..32),
        )
            .prop_map(|(index, term, (v, vo, l, ln, auto_leave), data)| Snapshot {
                metadata: SnapshotMetadata {
                    index,
                    term,
                    conf_state: ConfState {
                        voters: v,
                        voters_outgoing: vo,
                        learners: l,
                        learners_next: ln,
                        auto_leave,
                    },
                },
                data,
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            message_type(),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()),
            vec(entry(), 0..4),
            proptest::option::of(snapshot()),
            vec(any::<u8>(), 0..20),
        )
            .prop_map(
                |(
                    msg_type,
                    (to, from, term, log_term),
                    (index, commit, reject_hint, reject),
                    entries,
                    snapshot,
                    context,
                )| Message {
                    msg_type,
                    to,
                    from,
                    term,
                    log_term,
                    index,
                    entries,
                    commit,
                    snapshot,
                    reject,
                    reject_hint,
                    context,
                },
            )
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Flip(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<usize>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
        for m in mutations {
            if bytes.is_empty() {
                return;
            }
            let n = bytes.len();
            match *m {
                Mutation::Set(i, b) => bytes[i % n] = b,
                Mutation::Flip(i, bit) => bytes[i % n] ^= 1 << bit,
                Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
                Mutation::Remove(i) => {
                    bytes.remove(i % n);
                }
                Mutation::Truncate(i) => bytes.truncate(i % n),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn batches_round_trip_through_any_split(
            batch in vec(message(), 0..6),
            splits in vec(1usize..200, 1..20),
        ) {
            let mut wire = Vec::new();
            let frames = encoder().messages(&batch, &mut wire).unwrap();
            prop_assert_eq!(frames, usize::from(!batch.is_empty()));
            prop_assert_eq!(wire.len(), if batch.is_empty() { 0 } else { HEADER_LEN + messages_payload_len(&batch) });
            let mut pieces = Vec::new();
            let mut at = 0;
            for s in splits.iter().cycle() {
                if at >= wire.len() { break; }
                let n = (*s).min(wire.len() - at);
                pieces.push(wire[at..at + n].to_vec());
                at += n;
            }
            let got = feed(pieces).unwrap();
            let expected = if batch.is_empty() { vec![] } else { vec![Frame::Messages(batch)] };
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(junk in vec(any::<u8>(), 0..2_048)) {
            let _ = decode_all(&junk);
            // Behind a valid magic and version, too.
            let mut framed = MAGIC.to_vec();
            framed.push(1);
            framed.extend_from_slice(&junk);
            prop_assert!(decode_all(&framed).is_err() || junk.is_empty());
        }

        #[test]
        fn mutated_frames_are_refused_without_panic(
            batch in vec(message(), 1..4),
            mutations in vec(mutation(), 1..4),
        ) {
            let mut wire = Vec::new();
            encoder().messages(&batch, &mut wire).unwrap();
            let original = wire.clone();
            mutate(&mut wire, &mutations);
            let result = decode_all(&wire);
            if wire.is_empty() {
                // Cut to nothing: an empty stream, which is no error.
                prop_assert_eq!(result, Ok(vec![]));
            } else if wire != original {
                // The checksums see every change a few edits can make
                // (a truncation to a whole shorter frame cannot happen:
                // there is only one frame).
                prop_assert!(result.is_err(), "mutated frame decoded: {:?}", mutations);
            }
        }

        #[test]
        fn hostile_payloads_never_panic_or_amplify(
            batch in vec(message(), 1..4),
            mutations in vec(mutation(), 1..6),
            kind in 1u8..=4,
        ) {
            // The payload is mutated and then framed with valid checksums:
            // only validation stands between these bytes and the decoder.
            let mut wire = Vec::new();
            encoder().messages(&batch, &mut wire).unwrap();
            let mut payload = wire.split_off(HEADER_LEN);
            mutate(&mut payload, &mutations);
            assert_within_payload(FrameKind::from_u8(kind).unwrap(), &payload);
        }

        #[test]
        fn hostile_handshake_and_chunk_payloads_never_panic(
            source in 0usize..4,
            mutations in vec(mutation(), 1..6),
            kind in 1u8..=4,
        ) {
            let mut payload = sample_frames().swap_remove(source).split_off(HEADER_LEN);
            mutate(&mut payload, &mutations);
            assert_within_payload(FrameKind::from_u8(kind).unwrap(), &payload);
        }

        #[test]
        fn random_payloads_behind_valid_checksums_never_panic(
            payload in vec(any::<u8>(), 0..512),
            kind in 1u8..=4,
        ) {
            assert_within_payload(FrameKind::from_u8(kind).unwrap(), &payload);
        }
    }
}

/// A tiny deterministic generator for split points and junk; a failing
/// seed replays exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
