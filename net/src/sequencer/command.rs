//! Requests to the sequencer and its answers. Both are `Send`: a request
//! from a connection on another executor crosses a channel mesh.

use basalt_engine::mvcc as m;

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::wire;

use super::log_entry::LogEntry;
use super::read_txn::ReadOnlyTxn;

pub enum Command {
    /// A read at the sequencer (this first slice serves all reads there).
    Range(m::RangeRequest),
    /// One page of a large Range answered in pages (`services::kv`).
    RangePage(RangePage),
    /// A write: appended to the WAL, then applied in log order.
    Propose(LogEntry),
    /// A txn that writes nothing: evaluated on the applied store, no WAL.
    ReadTxn(ReadOnlyTxn),
    Status,
    Hash,
    HashKv {
        revision: i64,
    },
    Defragment,
    /// The whole store as one snapshot blob.
    Snapshot,
    Alarm(pb::AlarmRequest),
    Leases,
    Lease {
        id: i64,
    },
}

/// A successful answer; each variant carries the header of the response.
pub enum Reply {
    Range(m::RangeResponse, pb::ResponseHeader),
    RangePage(PageOut, pb::ResponseHeader),
    Applied(m::OpResponse, pb::ResponseHeader),
    Status(StatusInfo),
    Hash {
        hash: u32,
        header: pb::ResponseHeader,
    },
    HashKv {
        hash: u32,
        compact_revision: i64,
        hash_revision: i64,
        header: pb::ResponseHeader,
    },
    Done(pb::ResponseHeader),
    Snapshot {
        blob: Vec<u8>,
        header: pb::ResponseHeader,
    },
    Alarms(Vec<pb::AlarmMember>, pb::ResponseHeader),
    Leases(Vec<m::Lease>, pb::ResponseHeader),
    Lease(Option<m::Lease>, pb::ResponseHeader),
}

/// What Maintenance.Status reports.
pub struct StatusInfo {
    pub header: pb::ResponseHeader,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub raft_term: u64,
    pub errors: Vec<String>,
}

/// Keys read from the store by the first step of a page: enough to learn
/// the size of a KeyValue before reading more.
const FIRST_STEP_KEYS: usize = 16;
/// Most keys read from the store in one step of a page, whatever their size.
const MAX_STEP_KEYS: usize = 4096;

/// One page of a Range answered in pages: the keys of the request's range
/// from `request.key` on, in key order, at `request.revision` (0: the
/// current revision, which the first page fixes for the later ones). The
/// mod/create revision filters are applied here, after reading, so the
/// store never scans a whole range for them; `count` comes from the store
/// as etcd counts it (filters ignored).
///
/// A page is one short synchronous read: writes are applied between pages.
#[derive(Debug, Clone)]
pub struct RangePage {
    /// The client's request with `key` moved to where this page starts;
    /// its `limit` and sort fields are ignored (pages are in key order).
    pub request: m::RangeRequest,
    /// Most KeyValues to keep (those passing the filters); >= 1.
    pub keep: u64,
    /// The page ends once the KeyValues it read (kept or filtered out)
    /// encode to this many bytes: a page is short even when the filters
    /// drop most keys.
    pub max_bytes: u64,
    /// Measure the kept KeyValues without returning them (the size pass).
    pub measure_only: bool,
}

/// What one [`RangePage`] found.
#[derive(Debug, Default)]
pub struct PageOut {
    /// The revision read at: the request's, or the current one.
    pub revision: i64,
    /// Keys in the range from the page's first key on, at `revision`.
    pub count: i64,
    /// The kept KeyValues; empty when measuring.
    pub kvs: Vec<mvccpb::KeyValue>,
    pub kept: u64,
    /// Their encoded length as `RangeResponse.kvs` elements.
    pub bytes: u64,
    /// Where the next page starts, or `None` when the range has no more
    /// keys after this page.
    pub next: Option<Vec<u8>>,
}

impl RangePage {
    /// Reads the page from `store`, in steps sized from the KeyValues seen
    /// so far, so a page holds about `max_bytes` whatever the value sizes.
    pub fn run(&self, store: &m::Store) -> Result<PageOut, m::MvccError> {
        let r = &self.request;
        let revision = if r.revision <= 0 {
            store.current_revision()
        } else {
            r.revision
        };
        let mut out = PageOut {
            revision,
            ..PageOut::default()
        };
        let mut step = m::RangeRequest {
            key: r.key.clone(),
            range_end: r.range_end.clone(),
            limit: 0,
            revision,
            sort_order: m::SortOrder::None,
            sort_target: m::SortTarget::Key,
            keys_only: r.keys_only,
            count_only: false,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        };
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let (mut seen, mut seen_bytes) = (0u64, 0u64);
        let mut step_keys = FIRST_STEP_KEYS;
        loop {
            // Without filters every key read is kept: read no more than
            // are wanted (a Kubernetes LIST page of 500 reads 500 values).
            if !filtered {
                let wanted = self.keep.saturating_sub(out.kept).max(1);
                step_keys = step_keys.min(usize::try_from(wanted).unwrap_or(MAX_STEP_KEYS));
            }
            step.limit = step_keys as i64;
            let resp = store.range(&step)?;
            if seen == 0 {
                out.count = resp.count;
            }
            let after_last = resp.kvs.last().map(|kv| key_after(&kv.key));
            for kv in resp.kvs {
                if out.kept >= self.keep || seen_bytes >= self.max_bytes {
                    out.next = Some(kv.key);
                    return Ok(out);
                }
                let keep = passes_filters(r, &kv);
                let kv = wire::key_value(kv);
                let len = wire::range_parts::kv_len(&kv) as u64;
                seen += 1;
                seen_bytes += len;
                if keep {
                    out.kept += 1;
                    out.bytes += len;
                    if !self.measure_only {
                        out.kvs.push(kv);
                    }
                }
            }
            match after_last {
                Some(next) if resp.more => step.key = next,
                _ => return Ok(out),
            }
            if out.kept >= self.keep || seen_bytes >= self.max_bytes {
                out.next = Some(step.key);
                return Ok(out);
            }
            // As many keys as should fill the rest of the page, judging by
            // the average KeyValue so far.
            let average = (seen_bytes / seen.max(1)).max(1);
            let wanted = self.max_bytes.saturating_sub(seen_bytes) / average + 1;
            step_keys = usize::try_from(wanted)
                .unwrap_or(MAX_STEP_KEYS)
                .clamp(FIRST_STEP_KEYS, MAX_STEP_KEYS);
        }
    }
}

/// The smallest key after `key`.
fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// etcd's mod/create revision filters (0: no bound).
fn passes_filters(r: &m::RangeRequest, kv: &m::KeyValue) -> bool {
    (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
        && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
        && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
        && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
}
