//! One page of a Range answered in pages (see `large_range`).

use basalt_engine::mvcc as m;

use crate::proto::mvccpb;
use crate::wire;

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
/// A page is one short synchronous read of a [`m::ReadView`]; the pages of
/// one response all read the same view.
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
    pub fn run(&self, store: &m::ReadView) -> Result<PageOut, m::MvccError> {
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
