//! Plain Rust mirrors of etcd's `mvccpb` / `etcdserverpb` KV messages.
//!
//! The engine never sees protobuf: `net` converts its prost types to and from
//! these. Field meanings and defaults follow etcd exactly (a zero `revision`
//! means "current", a zero `limit` means "no limit", an empty `range_end`
//! means "this key only", a `range_end` of `"\0"` means "every key >= key").

/// One version of a key, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the put that started this key's current generation.
    pub create_revision: i64,
    /// Revision of the last change to this key.
    pub mod_revision: i64,
    /// Number of puts in this generation (1 after the first put; 0 = absent).
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease the key is attached to; 0 = none.
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change, as etcd's `mvccpb.Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Delete`: the key, with `mod_revision` = the deletion revision and
    /// every other field zero (what etcd sends).
    pub kv: KeyValue,
    /// The key's previous version, if it had one.
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 = no limit.
    pub limit: i64,
    /// 0 = current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// Each filter is ignored when 0.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// Number of keys in the range (after the revision filters), ignoring `limit`.
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// What a `Compare` looks at, with the operand to compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// A guard of a transaction. On a missing key, version/create/mod/lease read
/// as 0; a `Value` compare on a missing key is false (etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// True when no branch, nested ones included, has a Put or DeleteRange:
    /// such a txn changes nothing whichever branch it takes.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| match op {
            RequestOp::Range(_) => true,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
            RequestOp::Txn(inner) => inner.is_read_only(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// A lease as the store keeps it: its granted TTL (seconds) and attached keys
/// (ascending). Remaining-time bookkeeping is the server's job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

/// One WAL entry's effect on the state machine, applied in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// Drop history no read at `revision` or later needs.
    Compact {
        revision: i64,
    },
    /// `id` must be non-zero: the server picks an id before proposing.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Deletes every attached key in one revision.
    LeaseRevoke {
        id: i64,
    },
}

/// What applying one `Op` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Store revision after the op (the response header's revision). Equal
    /// to the previous revision when the op changed no key.
    pub revision: i64,
    pub response: OpResponse,
    /// Key changes, in order (all share `revision`); empty if none.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    LeaseGrant,
    LeaseRevoke,
}
