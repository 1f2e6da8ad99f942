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

/// Counts the payload bytes a conversion copies out against the payload's
/// size. bytecheck already refuses archives whose parts overlap, so a valid
/// archive never overdraws; the count makes "a payload of n bytes never
/// decodes into much more than n bytes of values" hold by construction, not
/// by trust in a dependency.
pub(crate) struct CopyBudget {
    kind: FrameKind,
    payload: usize,
    claimed: usize,
}

impl CopyBudget {
    pub(crate) fn new(kind: FrameKind, payload: usize) -> CopyBudget {
        CopyBudget {
            kind,
            payload,
            claimed: 0,
        }
    }

    fn take(&mut self, items: usize, item_len: usize) -> Result<(), PeerWireError> {
        self.claimed = self.claimed.saturating_add(items.saturating_mul(item_len));
        if self.claimed > self.payload {
            return Err(PeerWireError::PayloadOverclaimed {
                kind: self.kind,
                claimed: self.claimed,
                payload: self.payload,
            });
        }
        Ok(())
    }
}

/// Appends the messages of a validated batch to `out`.
pub(crate) fn messages_from_archived(
    batch: &ArchivedBatch,
    budget: &mut CopyBudget,
    out: &mut Vec<Message>,
) -> Result<(), PeerWireError> {
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
