//! Paged LISTs the way kube-apiserver does them: the first page at the
//! newest revision, every next page from the last key + `\0` at that same
//! revision, until `more` is false. Each page is checked against the first:
//! a LIST at one revision is one snapshot, so the pages must agree.

use etcd_client::{GetOptions, KvClient};

use crate::connection::Connection;
use crate::run::{Phase, Tally};

/// The message etcd gives when a revision is below the compaction point.
pub const COMPACTED: &str = "required revision has been compacted";

/// A completed LIST.
#[derive(Clone, Copy, Debug, Default)]
pub struct Listing {
    /// Keys returned over all pages.
    pub keys: u64,
    /// Key and value bytes returned.
    pub bytes: u64,
    /// The revision all pages were read at.
    pub revision: i64,
    /// Pages requested.
    pub pages: u64,
}

/// How a LIST ended if it did not complete.
#[derive(Debug)]
pub enum ListFailure {
    /// The phase ended mid-list.
    Stopped,
    /// The list revision was compacted between pages (the apiserver answers
    /// 410 Gone and its client starts over).
    Expired,
    /// A request failed or a page broke a check; already tallied.
    Failed,
}

/// What to LIST.
#[derive(Clone, Debug)]
pub struct ListSpec<'a> {
    pub start: &'a [u8],
    pub end: &'a [u8],
    /// Page size (`limit`); 0 reads the whole range in one response.
    pub page: i64,
    /// Name of the operation in the report (failures and violations).
    pub op: &'a str,
}

/// Runs one paged LIST. Failures and violations are tallied under
/// `spec.op`; the caller records the latency of a completed list.
pub async fn list(
    kv: &mut KvClient,
    conn: &Connection,
    phase: &Phase,
    tally: &mut Tally,
    spec: &ListSpec<'_>,
) -> Result<Listing, ListFailure> {
    let mut out = Listing::default();
    let mut start = spec.start.to_vec();
    let mut first_count: Option<i64> = None;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let mut options = GetOptions::new().with_range(spec.end).with_limit(spec.page);
        if out.revision > 0 {
            options = options.with_revision(out.revision);
        }
        let floor = conn.floor();
        let Some((result, _)) = phase.timed(kv.get(start.clone(), Some(options))).await else {
            return Err(ListFailure::Stopped);
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) if out.revision > 0 && e.to_string().contains(COMPACTED) => {
                return Err(ListFailure::Expired)
            }
            Err(e) => {
                tally.fail(spec.op, e);
                return Err(ListFailure::Failed);
            }
        };
        out.pages += 1;
        let Some(header_rev) = resp.header().map(|h| h.revision()) else {
            tally.violation(spec.op, "response has no header");
            return Err(ListFailure::Failed);
        };
        tally.check_revision(spec.op, conn, floor, header_rev);
        if out.revision == 0 {
            out.revision = header_rev;
        }
        // `count` covers the whole rest of the range at the list revision,
        // whatever the limit (kube-apiserver derives `remainingItemCount`
        // from it), so every page's count is the first count minus the keys
        // already returned.
        let expected = first_count.map(|c| c - out.keys as i64);
        match expected {
            Some(want) if resp.count() != want => {
                tally.violation(
                    spec.op,
                    format!(
                        "page {} at revision {}: count {} but {} keys remain",
                        out.pages,
                        out.revision,
                        resp.count(),
                        want
                    ),
                );
                return Err(ListFailure::Failed);
            }
            Some(_) => {}
            None => first_count = Some(resp.count()),
        }
        for kv in resp.kvs() {
            if last_key.as_deref().is_some_and(|last| kv.key() <= last) {
                tally.violation(spec.op, format!("keys out of order at page {}", out.pages));
                return Err(ListFailure::Failed);
            }
            if kv.mod_revision() > out.revision {
                tally.violation(
                    spec.op,
                    format!(
                        "key modified at {} in a list at revision {}",
                        kv.mod_revision(),
                        out.revision
                    ),
                );
                return Err(ListFailure::Failed);
            }
            out.bytes += (kv.key().len() + kv.value().len()) as u64;
            last_key = Some(kv.key().to_vec());
        }
        out.keys += resp.kvs().len() as u64;
        if !resp.more() {
            break;
        }
        let Some(last) = &last_key else {
            tally.violation(spec.op, "`more` is set on an empty page");
            return Err(ListFailure::Failed);
        };
        start = last.clone();
        start.push(0);
    }
    let total = first_count.unwrap_or(0);
    if out.keys as i64 != total {
        tally.violation(
            spec.op,
            format!(
                "list at revision {} returned {} keys, count said {}",
                out.revision, out.keys, total
            ),
        );
        return Err(ListFailure::Failed);
    }
    Ok(out)
}
