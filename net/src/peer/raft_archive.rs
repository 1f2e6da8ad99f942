//! The rkyv layout of Raft's types, and the way back from it.
//!
//! `basalt-raft` stays free of codec dependencies, so its types are archived
//! through rkyv's remote derives: each `*Def` below mirrors one Raft type
//! field for field, and serializing reads the Raft value in place (no copy
//! into a mirror struct first). Reading goes the other way by hand: the
//! archived view is validated by bytecheck first, then converted, so the
//! conversion can count what it allocates against the payload it came from.
//!
//! The archived layout is the wire format: any change to a field here, its
//! order or its type, is a new [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).

use std::marker::PhantomData;

use std::mem::size_of;

use basalt_raft::{ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata};
use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, Map, SerializeWith, With};
use rkyv::{Archive, Archived, Place, Serialize};

use super::error::PeerWireError;
use super::frame::FrameKind;

// The `*Def` types are never built: they exist for their derives, which
// implement `ArchiveWith<RaftType>` on them.

#[derive(Archive, Serialize)]
#[rkyv(remote = MessageType, archived = ArchivedMessageType)]
#[allow(dead_code)]
pub(crate) enum MessageTypeDef {
    Propose,
    Append,
    AppendResponse,
    Vote,
    VoteResponse,
    PreVote,
    PreVoteResponse,
    Heartbeat,
    HeartbeatResponse,
    Snapshot,
    ReadIndex,
    ReadIndexResponse,
    TransferLeader,
    TimeoutNow,
}

#[derive(Archive, Serialize)]
#[rkyv(remote = EntryType, archived = ArchivedEntryType)]
#[allow(dead_code)]
pub(crate) enum EntryTypeDef {
    Normal,
    ConfChange,
}

#[derive(Archive, Serialize)]
#[rkyv(remote = Entry, archived = ArchivedEntry)]
#[allow(dead_code)]
pub(crate) struct EntryDef {
    term: u64,
    index: u64,
    #[rkyv(with = EntryTypeDef)]
    entry_type: EntryType,
    data: Vec<u8>,
}

#[derive(Archive, Serialize)]
#[rkyv(remote = ConfState, archived = ArchivedConfState)]
#[allow(dead_code)]
pub(crate) struct ConfStateDef {
    voters: Vec<u64>,
    voters_outgoing: Vec<u64>,
    learners: Vec<u64>,
    learners_next: Vec<u64>,
    auto_leave: bool,
}

#[derive(Archive, Serialize)]
#[rkyv(remote = SnapshotMetadata, archived = ArchivedSnapshotMetadata)]
#[allow(dead_code)]
pub(crate) struct SnapshotMetadataDef {
    index: u64,
    term: u64,
    #[rkyv(with = ConfStateDef)]
    conf_state: ConfState,
}

#[derive(Archive, Serialize)]
#[rkyv(remote = Snapshot, archived = ArchivedSnapshot)]
#[allow(dead_code)]
pub(crate) struct SnapshotDef {
    #[rkyv(with = SnapshotMetadataDef)]
    metadata: SnapshotMetadata,
    data: Vec<u8>,
}

#[derive(Archive, Serialize)]
#[rkyv(remote = Message, archived = ArchivedMessage)]
#[allow(dead_code)]
pub(crate) struct MessageDef {
    #[rkyv(with = MessageTypeDef)]
    msg_type: MessageType,
    to: u64,
    from: u64,
    term: u64,
    log_term: u64,
    index: u64,
    #[rkyv(with = Map<EntryDef>)]
    entries: Vec<Entry>,
    commit: u64,
    #[rkyv(with = Map<SnapshotDef>)]
    snapshot: Option<Snapshot>,
    reject: bool,
    reject_hint: u64,
    context: Vec<u8>,
}

/// The root of a `Messages` payload: the batch, archived as a vector of
/// messages, serialized straight from the caller's slice.
pub(crate) struct BatchOut<'a>(pub(crate) &'a [Message]);

/// What a `Messages` payload holds, once validated.
pub(crate) type ArchivedBatch = ArchivedVec<ArchivedMessage>;

impl Archive for BatchOut<'_> {
    type Archived = ArchivedBatch;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out)
    }
}

impl<S> Serialize<S> for BatchOut<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    MessageDef: SerializeWith<Message, S>,
{
    fn serialize(&self, s: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedVec::<ArchivedMessage>::serialize_from_iter::<With<Message, MessageDef>, _, _>(
            self.0.iter().map(With::<Message, MessageDef>::cast),
            s,
        )
    }
}

/// Archives a borrowed value with the wrapper `W` for the value's type, so a
/// frame can be built from references without cloning into a struct first.
pub(crate) struct ByRef<W>(PhantomData<W>);

impl<'a, T, W: ArchiveWith<T>> ArchiveWith<&'a T> for ByRef<W> {
    type Archived = W::Archived;
    type Resolver = W::Resolver;

    fn resolve_with(field: &&'a T, resolver: Self::Resolver, out: Place<Self::Archived>) {
        W::resolve_with(*field, resolver, out)
    }
}

impl<'a, T, W, S> SerializeWith<&'a T, S> for ByRef<W>
where
    W: SerializeWith<T, S>,
    S: Fallible + ?Sized,
{
    fn serialize_with(field: &&'a T, s: &mut S) -> Result<Self::Resolver, S::Error> {
        W::serialize_with(*field, s)
    }
}

// `archived_len` is exact only if nothing in an archive is padded.
const _: () = assert!(std::mem::align_of::<ArchivedMessage>() == 1);
const _: () = assert!(std::mem::align_of::<ArchivedBatch>() == 1);

/// Payload bytes a batch's root takes besides its messages.
pub(crate) const BATCH_ROOT_LEN: usize = size_of::<ArchivedBatch>();

/// Payload bytes `m` takes in a batch. The archive is unaligned (rkyv's
/// `unaligned` feature), so there is no padding and this is exact, not an
/// estimate: the encoder splits batches by it before serializing.
pub(crate) fn archived_len(m: &Message) -> usize {
    let entries: usize = m
        .entries
        .iter()
        .map(|e| size_of::<ArchivedEntry>() + e.data.len())
        .sum();
    let snapshot = m.snapshot.as_ref().map_or(0, |s| {
        let cs = &s.metadata.conf_state;
        let ids =
            cs.voters.len() + cs.voters_outgoing.len() + cs.learners.len() + cs.learners_next.len();
        ids * size_of::<Archived<u64>>() + s.data.len()
    });
    size_of::<ArchivedMessage>() + entries + m.context.len() + snapshot
}

/// Accounts for a payload's bytes as a conversion reads them: every
/// archived part is charged its exact size (there is no padding), before
/// anything is allocated for it.
///
/// Two promises follow. A payload of n bytes never decodes into values of
/// more than n archived bytes, whatever rkyv's validation lets through
/// (bytecheck already refuses overlapping parts; this holds by construction
/// rather than by trust in a dependency). And with [`CopyBudget::finish`],
/// a payload is exactly the archive of what it decodes to: no bytes beside
/// it, so a prefix, a foreign payload or junk that happens to validate is
/// refused instead of decoding to something.
pub(crate) struct CopyBudget {
    kind: FrameKind,
    payload: usize,
    accounted: usize,
}

impl CopyBudget {
    pub(crate) fn new(kind: FrameKind, payload: usize) -> CopyBudget {
        CopyBudget {
            kind,
            payload,
            accounted: 0,
        }
    }

    pub(crate) fn take(&mut self, items: usize, item_len: usize) -> Result<(), PeerWireError> {
        self.accounted = self
            .accounted
            .saturating_add(items.saturating_mul(item_len));
        if self.accounted > self.payload {
            return Err(self.mismatch());
        }
        Ok(())
    }

    /// Checks that every byte of the payload was accounted for.
    pub(crate) fn finish(self) -> Result<(), PeerWireError> {
        if self.accounted != self.payload {
            return Err(self.mismatch());
        }
        Ok(())
    }

    fn mismatch(&self) -> PeerWireError {
        PeerWireError::PayloadSizeMismatch {
            kind: self.kind,
            accounted: self.accounted,
            payload: self.payload,
        }
    }
}

/// Appends the messages of a validated batch to `out`.
pub(crate) fn messages_from_archived(
    batch: &ArchivedBatch,
    budget: &mut CopyBudget,
    out: &mut Vec<Message>,
) -> Result<(), PeerWireError> {
    budget.take(1, BATCH_ROOT_LEN)?;
    budget.take(batch.len(), size_of::<ArchivedMessage>())?;
    out.reserve(batch.len());
    for m in batch.iter() {
        out.push(message_from_archived(m, budget)?);
    }
    Ok(())
}

fn message_from_archived(
    m: &ArchivedMessage,
    budget: &mut CopyBudget,
) -> Result<Message, PeerWireError> {
    budget.take(m.entries.len(), size_of::<ArchivedEntry>())?;
    let mut entries = Vec::with_capacity(m.entries.len());
    for e in m.entries.iter() {
        entries.push(Entry {
            term: e.term.to_native(),
            index: e.index.to_native(),
            entry_type: match e.entry_type {
                ArchivedEntryType::Normal => EntryType::Normal,
                ArchivedEntryType::ConfChange => EntryType::ConfChange,
            },
            data: bytes_from_archived(&e.data, budget)?,
        });
    }
    let snapshot = match m.snapshot.as_ref() {
        None => None,
        Some(s) => Some(Snapshot {
            metadata: snapshot_metadata_from_archived(&s.metadata, budget)?,
            data: bytes_from_archived(&s.data, budget)?,
        }),
    };
    Ok(Message {
        msg_type: message_type_from_archived(&m.msg_type),
        to: m.to.to_native(),
        from: m.from.to_native(),
        term: m.term.to_native(),
        log_term: m.log_term.to_native(),
        index: m.index.to_native(),
        entries,
        commit: m.commit.to_native(),
        snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint.to_native(),
        context: bytes_from_archived(&m.context, budget)?,
    })
}

fn message_type_from_archived(t: &ArchivedMessageType) -> MessageType {
    match t {
        ArchivedMessageType::Propose => MessageType::Propose,
        ArchivedMessageType::Append => MessageType::Append,
        ArchivedMessageType::AppendResponse => MessageType::AppendResponse,
        ArchivedMessageType::Vote => MessageType::Vote,
        ArchivedMessageType::VoteResponse => MessageType::VoteResponse,
        ArchivedMessageType::PreVote => MessageType::PreVote,
        ArchivedMessageType::PreVoteResponse => MessageType::PreVoteResponse,
        ArchivedMessageType::Heartbeat => MessageType::Heartbeat,
        ArchivedMessageType::HeartbeatResponse => MessageType::HeartbeatResponse,
        ArchivedMessageType::Snapshot => MessageType::Snapshot,
        ArchivedMessageType::ReadIndex => MessageType::ReadIndex,
        ArchivedMessageType::ReadIndexResponse => MessageType::ReadIndexResponse,
        ArchivedMessageType::TransferLeader => MessageType::TransferLeader,
        ArchivedMessageType::TimeoutNow => MessageType::TimeoutNow,
    }
}

pub(crate) fn snapshot_metadata_from_archived(
    m: &ArchivedSnapshotMetadata,
    budget: &mut CopyBudget,
) -> Result<SnapshotMetadata, PeerWireError> {
    let cs = &m.conf_state;
    Ok(SnapshotMetadata {
        index: m.index.to_native(),
        term: m.term.to_native(),
        conf_state: ConfState {
            voters: ids_from_archived(&cs.voters, budget)?,
            voters_outgoing: ids_from_archived(&cs.voters_outgoing, budget)?,
            learners: ids_from_archived(&cs.learners, budget)?,
            learners_next: ids_from_archived(&cs.learners_next, budget)?,
            auto_leave: cs.auto_leave,
        },
    })
}

fn ids_from_archived(
    ids: &ArchivedVec<Archived<u64>>,
    budget: &mut CopyBudget,
) -> Result<Vec<u64>, PeerWireError> {
    budget.take(ids.len(), size_of::<Archived<u64>>())?;
    Ok(ids.iter().map(|id| id.to_native()).collect())
}

fn bytes_from_archived(
    bytes: &ArchivedVec<u8>,
    budget: &mut CopyBudget,
) -> Result<Vec<u8>, PeerWireError> {
    budget.take(bytes.len(), 1)?;
    Ok(bytes.as_slice().to_vec())
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;
    use crate::peer::{decode_messages, FrameEncoder, WireLimits, HEADER_LEN};

    fn payload(batch: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameEncoder::new(WireLimits::default())
            .messages(batch, &mut out)
            .unwrap();
        out.split_off(HEADER_LEN)
    }

    fn assert_invalid(payload: &[u8]) {
        let mut out = Vec::new();
        match decode_messages(payload, &mut out) {
            Err(PeerWireError::InvalidPayload { kind, .. }) => {
                assert_eq!(kind, FrameKind::Messages)
            }
            other => panic!("expected InvalidPayload, got {other:?}"),
        }
        assert!(out.is_empty());
    }

    #[test]
    fn out_of_range_tags_are_refused() {
        // Catches: converting enums, bools or option tags without
        // validating them (an archived enum with a bad tag is UB to read).
        let bare = payload(&[Message::new(MessageType::Heartbeat, 1, 2)]);
        // One message with nothing out of line: it starts the payload.
        for (at, bad) in [
            (offset_of!(ArchivedMessage, msg_type), 14u8),
            (offset_of!(ArchivedMessage, msg_type), 0xff),
            (offset_of!(ArchivedMessage, reject), 2),
            (offset_of!(ArchivedMessage, snapshot), 2),
        ] {
            let mut p = bare.clone();
            p[at] = bad;
            assert_invalid(&p);
        }
        let mut with_entry = Message::new(MessageType::Append, 1, 2);
        with_entry.entries.push(Entry::default());
        let mut p = payload(&[with_entry]);
        // The entry has no data, so it is the first thing written.
        p[offset_of!(ArchivedEntry, entry_type)] = 2;
        assert_invalid(&p);
    }

    #[test]
    fn lengths_past_the_payload_are_refused() {
        // Catches: trusting an archived vector's length (a peer claiming
        // four billion entries must not make us allocate for them).
        let mut m = Message::new(MessageType::Append, 1, 2);
        m.context = vec![7; 3];
        let p = payload(&[m]);
        let len_at = p.len() - BATCH_ROOT_LEN - size_of::<ArchivedMessage>()
            + offset_of!(ArchivedMessage, context)
            + 4;
        assert_eq!(&p[len_at..len_at + 4], &3u32.to_le_bytes());
        for bad in [4u32, 1 << 20, u32::MAX] {
            let mut p = p.clone();
            p[len_at..len_at + 4].copy_from_slice(&bad.to_le_bytes());
            assert_invalid(&p);
        }
        let root_len_at = p.len() - 4;
        let mut p = p.clone();
        p[root_len_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_invalid(&p);
    }

    #[test]
    fn the_copy_budget_must_come_out_even() {
        let mut budget = CopyBudget::new(FrameKind::Messages, 100);
        assert!(budget.take(10, 9).is_ok());
        assert!(budget.take(1, 10).is_ok());
        assert_eq!(
            budget.take(1, 1),
            Err(PeerWireError::PayloadSizeMismatch {
                kind: FrameKind::Messages,
                accounted: 101,
                payload: 100
            })
        );
        let mut budget = CopyBudget::new(FrameKind::Messages, 100);
        assert!(budget.take(usize::MAX, usize::MAX).is_err());
        let mut budget = CopyBudget::new(FrameKind::Messages, 100);
        budget.take(99, 1).unwrap();
        assert_eq!(
            budget.finish(),
            Err(PeerWireError::PayloadSizeMismatch {
                kind: FrameKind::Messages,
                accounted: 99,
                payload: 100
            })
        );
    }
}
