//! Range responses too large to build whole: a LIST of N bytes must not need
//! N bytes of heap on the server (etcd builds it whole, twice over:
//! etcd-io/etcd#12342).
//!
//! A Range in key order (etcd's default, and `ASCEND` by key) is answered
//! in pages at one fixed revision R, each page one short read
//! ([`RangePage`]) of the same read view, pinned for the whole response:
//! 1. the first page fixes R and gives etcd's `count`; a result that fits
//!    in it is answered whole, as before;
//! 2. a size pass reads the rest of the range at R page by page, keeping
//!    only the encoded length of each KeyValue, to learn the message length
//!    that the gRPC prefix needs up front (and `more`, when a limit cut
//!    the result);
//! 3. an encode pass reads the range again at R and writes each page into
//!    HTTP/2 DATA as flow control allows, freeing it before the next.
//!
//! The server's pages all read one view, so they agree even if R is
//! compacted meanwhile (as etcd's one read transaction would). A source
//! whose pages can fail between the two passes (a read error, or in tests
//! a compaction past R) leaves a message that cannot be finished: the call
//! ends with that error's status (for a compacted revision OutOfRange,
//! "etcdserver: mvcc: required revision has been compacted") after the
//! part already sent.

use basalt_engine::mvcc as m;
use bytes::{BufMut, Bytes, BytesMut};

use crate::grpc::{Code, ResponseSink, Status, PREFIX_LEN};
use crate::proto::etcdserverpb as pb;
use crate::wire::range_parts;

use super::page::{PageOut, RangePage};

/// How much each kind of page holds, in encoded bytes of KeyValues.
#[derive(Debug, Clone, Copy)]
pub struct PageSizes {
    /// A result up to this size is answered whole from the first page.
    pub first: u64,
    /// Size-pass pages: read and measured, never held.
    pub measure: u64,
    /// Encode-pass pages: held (as KeyValues, then as bytes) while sent.
    pub encode: u64,
}

impl Default for PageSizes {
    fn default() -> Self {
        PageSizes {
            first: 1 << 20,
            measure: 2 << 20,
            encode: 256 << 10,
        }
    }
}

/// Where pages are read: a pinned read view, or a store in tests.
pub trait PageSource {
    async fn page(&self, page: RangePage) -> Result<(PageOut, pb::ResponseHeader), Status>;
}

/// Where the parts of a streamed message go.
pub trait PartSink {
    async fn part(&mut self, bytes: Bytes) -> Result<(), Status>;
}

impl PartSink for ResponseSink {
    async fn part(&mut self, bytes: Bytes) -> Result<(), Status> {
        self.send_part(bytes).await
    }
}

/// Whether `req` can be answered in pages: a range (not one key) in key
/// order that returns KeyValues. Other sort orders need every key before
/// the first can be sent, and count-only answers are small.
pub fn eligible(req: &m::RangeRequest) -> bool {
    let key_order = req.sort_target == m::SortTarget::Key
        && matches!(req.sort_order, m::SortOrder::None | m::SortOrder::Ascend);
    key_order && !req.range_end.is_empty() && !req.count_only
}

/// Answers an [`eligible`] request: `Some` whole response when it fits in
/// the first page, else `None` once the whole framed message went to
/// `sink` in parts.
pub async fn answer<S: PageSource, P: PartSink>(
    source: &S,
    req: m::RangeRequest,
    sizes: PageSizes,
    sink: &mut P,
) -> Result<Option<pb::RangeResponse>, Status> {
    let limit = u64::try_from(req.limit).ok().filter(|l| *l > 0);
    let wanted = |kept: u64| limit.map_or(u64::MAX, |l| l.saturating_sub(kept));
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let page_at = |key: Vec<u8>, revision: i64, keep: u64, max_bytes: u64, measure_only| {
        let mut request = req.clone();
        request.key = key;
        request.revision = revision;
        RangePage {
            request,
            keep,
            max_bytes,
            measure_only,
        }
    };

    let first_page = page_at(req.key.clone(), req.revision, wanted(0), sizes.first, false);
    let (first, header) = source.page(first_page).await?;
    let (revision, count) = (first.revision, first.count);

    // Size pass.
    let (mut kept, mut bytes, mut cursor) = (first.kept, first.bytes, first.next.clone());
    while wanted(kept) > 0 {
        let Some(key) = cursor.take() else { break };
        let page = page_at(key, revision, wanted(kept), sizes.measure, true);
        let (p, _) = source.page(page).await?;
        (kept, bytes, cursor) = (kept + p.kept, bytes + p.bytes, p.next);
    }
    // `more`: the limit cut the result and another key would have been
    // returned. Without filters every key in the range counts.
    let more = match cursor {
        Some(key) if wanted(kept) == 0 => {
            if filtered {
                any_kept_from(source, &page_at, key, revision, sizes.measure).await?
            } else {
                count > i64::try_from(kept).unwrap_or(i64::MAX)
            }
        }
        _ => false,
    };
    if kept == first.kept {
        return Ok(Some(pb::RangeResponse {
            header: Some(header),
            kvs: first.kvs,
            more,
            count,
        }));
    }

    // Encode pass.
    let body =
        range_parts::header_len(&header) as u64 + bytes + range_parts::tail_len(more, count) as u64;
    let body = u32::try_from(body).map_err(|_| {
        Status::new(
            Code::ResourceExhausted,
            format!(
                "etcdserver: range response of {body} bytes exceeds gRPC's 4 GiB message limit"
            ),
        )
    })?;
    let mut buf = BytesMut::with_capacity(
        PREFIX_LEN + range_parts::header_len(&header) + first.bytes as usize,
    );
    buf.put_u8(0);
    buf.put_u32(body);
    range_parts::encode_header(&header, &mut buf);
    let (mut sent, mut sent_bytes) = (first.kept, first.bytes);
    let mut cursor = first.next;
    encode_kvs(first.kvs, &mut buf);
    sink.part(buf.split().freeze()).await?;
    while sent < kept {
        let Some(key) = cursor.take() else { break };
        let page = page_at(key, revision, kept - sent, sizes.encode, false);
        let (p, _) = source.page(page).await?;
        (sent, sent_bytes, cursor) = (sent + p.kept, sent_bytes + p.bytes, p.next);
        buf.reserve(p.bytes as usize);
        encode_kvs(p.kvs, &mut buf);
        sink.part(buf.split().freeze()).await?;
    }
    if (sent, sent_bytes) != (kept, bytes) {
        // Reads at a fixed revision are stable; this is a bug, and the
        // message cannot be completed with the length already sent.
        return Err(Status::new(
            Code::Internal,
            format!(
                "basalt: range at revision {revision} read {sent} keys / {sent_bytes} bytes, \
                 measured {kept} / {bytes}"
            ),
        ));
    }
    range_parts::encode_tail(more, count, &mut buf);
    sink.part(buf.freeze()).await?;
    Ok(None)
}

/// Whether any key from `key` on passes the request's filters.
async fn any_kept_from<S: PageSource>(
    source: &S,
    page_at: &impl Fn(Vec<u8>, i64, u64, u64, bool) -> RangePage,
    key: Vec<u8>,
    revision: i64,
    max_bytes: u64,
) -> Result<bool, Status> {
    let mut cursor = Some(key);
    while let Some(key) = cursor {
        let (p, _) = source
            .page(page_at(key, revision, 1, max_bytes, true))
            .await?;
        if p.kept > 0 {
            return Ok(true);
        }
        cursor = p.next;
    }
    Ok(false)
}

/// Appends each KeyValue as a `kvs` element, freeing each once written.
fn encode_kvs(kvs: Vec<crate::proto::mvccpb::KeyValue>, buf: &mut BytesMut) {
    for kv in kvs {
        range_parts::encode_kv(&kv, buf);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use futures_lite::future::block_on;

    use super::*;
    use crate::grpc::encode_message;
    use crate::wire;

    /// Pages read straight from a store. `compact_after: (n, revision)`
    /// compacts the store after page n, as a compaction applied between two
    /// pages would: at `revision`, or (0) after one more write at the new
    /// current revision, past the one being read.
    struct StoreSource {
        store: RefCell<m::Store>,
        index: Cell<u64>,
        pages: Cell<usize>,
        compact_after: Option<(usize, i64)>,
    }

    impl StoreSource {
        fn new(dir: &std::path::Path) -> StoreSource {
            let opts = m::StoreOptions {
                shards: 3,
                ..Default::default()
            };
            StoreSource {
                store: RefCell::new(m::Store::open(dir, opts).unwrap()),
                index: Cell::new(0),
                pages: Cell::new(0),
                compact_after: None,
            }
        }

        fn apply(&self, op: m::Op) {
            self.index.set(self.index.get() + 1);
            self.store
                .borrow_mut()
                .apply(self.index.get(), &op)
                .unwrap();
        }

        fn put(&self, key: &str, value_len: usize) {
            let byte = b'a' + (self.index.get() % 26) as u8;
            self.apply(m::Op::Put(m::PutRequest {
                key: key.as_bytes().to_vec(),
                value: vec![byte; value_len],
                ..Default::default()
            }));
        }

        fn header(&self) -> pb::ResponseHeader {
            pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: self.store.borrow().current_revision(),
                raft_term: 3,
            }
        }
    }

    impl PageSource for StoreSource {
        async fn page(&self, page: RangePage) -> Result<(PageOut, pb::ResponseHeader), Status> {
            let out = page.run(&self.store.borrow().read_view())?;
            self.pages.set(self.pages.get() + 1);
            if let Some((after, mut revision)) = self.compact_after {
                if self.pages.get() == after {
                    if revision == 0 {
                        self.put("written/between/pages", 1);
                        revision = self.store.borrow().current_revision();
                    }
                    self.apply(m::Op::Compact { revision });
                }
            }
            Ok((out, self.header()))
        }
    }

    impl PartSink for Vec<u8> {
        async fn part(&mut self, bytes: Bytes) -> Result<(), Status> {
            self.extend_from_slice(&bytes);
            Ok(())
        }
    }

    /// Small pages, so a few hundred keys take many pages of each kind.
    const SMALL: PageSizes = PageSizes {
        first: 3000,
        measure: 5000,
        encode: 2000,
    };

    /// The framed message `answer` produces, and whether it was streamed.
    fn paged(src: &StoreSource, req: &m::RangeRequest, sizes: PageSizes) -> (Vec<u8>, bool) {
        let mut parts = Vec::new();
        match block_on(answer(src, req.clone(), sizes, &mut parts)).unwrap() {
            Some(whole) => {
                assert!(parts.is_empty());
                (encode_message(&whole).to_vec(), false)
            }
            None => (parts, true),
        }
    }

    /// The framed message of the whole-response path.
    fn whole(src: &StoreSource, req: &m::RangeRequest) -> Vec<u8> {
        let resp = src.store.borrow().range(req).unwrap();
        encode_message(&wire::range_response(resp, &src.header())).to_vec()
    }

    /// 400 keys of 0..900-byte values, rewritten and deleted over several
    /// revisions, so filters and past revisions drop keys mid-page.
    fn filled(dir: &std::path::Path) -> StoreSource {
        let src = StoreSource::new(dir);
        for i in 0..400 {
            src.put(&format!("k/{i:04}"), (i * 37) % 900);
        }
        for i in (0..400).step_by(3) {
            src.put(&format!("k/{i:04}"), 100 + i % 50);
        }
        for i in (0..400).step_by(7) {
            src.apply(m::Op::DeleteRange(m::DeleteRangeRequest {
                key: format!("k/{i:04}").into_bytes(),
                ..Default::default()
            }));
        }
        src.put("l", 10);
        src
    }

    fn requests(current: i64) -> Vec<m::RangeRequest> {
        let all = m::RangeRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            ..Default::default()
        };
        let mut out = Vec::new();
        for revision in [0, 300, 450, current] {
            for limit in [0, 1, 37, 150, 399, 400, 1000] {
                for keys_only in [false, true] {
                    let base = m::RangeRequest {
                        revision,
                        limit,
                        keys_only,
                        ..all.clone()
                    };
                    out.push(base.clone());
                    out.push(m::RangeRequest {
                        min_mod_revision: 401,
                        ..base.clone()
                    });
                    out.push(m::RangeRequest {
                        max_create_revision: 200,
                        min_create_revision: 20,
                        ..base.clone()
                    });
                    out.push(m::RangeRequest {
                        max_mod_revision: 150,
                        ..base.clone()
                    });
                    // Keeps nothing at all.
                    out.push(m::RangeRequest {
                        min_mod_revision: current + 5,
                        ..base.clone()
                    });
                }
            }
        }
        // From-key, ASCEND by key, and a range past every key.
        out.push(m::RangeRequest {
            key: b"k/0100".to_vec(),
            range_end: vec![0],
            ..Default::default()
        });
        out.push(m::RangeRequest {
            sort_order: m::SortOrder::Ascend,
            limit: 90,
            ..all.clone()
        });
        out.push(m::RangeRequest {
            key: b"z".to_vec(),
            range_end: vec![0],
            ..Default::default()
        });
        out
    }

    #[test]
    fn pages_give_the_bytes_of_the_whole_response() {
        let dir = tempfile::tempdir().unwrap();
        let src = filled(dir.path());
        let current = src.store.borrow().current_revision();
        let mut streamed = 0;
        for req in requests(current) {
            assert!(eligible(&req));
            let expected = whole(&src, &req);
            for sizes in [SMALL, PageSizes::default()] {
                let (got, was_streamed) = paged(&src, &req, sizes);
                assert!(got == expected, "{req:?} with {sizes:?} differs");
                streamed += usize::from(was_streamed);
            }
        }
        assert!(
            streamed > 100,
            "only {streamed} requests took the paged path"
        );
    }

    #[test]
    fn one_large_value_per_page_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let src = StoreSource::new(dir.path());
        for i in 0..20 {
            src.put(&format!("big/{i:02}"), 10_000 + i);
        }
        let req = m::RangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        };
        let (got, streamed) = paged(&src, &req, SMALL);
        assert!(streamed);
        assert!(got == whole(&src, &req));
    }

    #[test]
    fn a_compaction_past_the_revision_mid_response_ends_it_out_of_range() {
        let req = m::RangeRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            ..Default::default()
        };
        // Page 4 is in the size pass; 60 is in the encode pass (about 40
        // pages measure the range), after parts of the message were sent.
        for (after, sent_before) in [(4, false), (60, true)] {
            let dir = tempfile::tempdir().unwrap();
            let mut src = filled(dir.path());
            src.compact_after = Some((after, 0));
            let mut parts = Vec::new();
            let err = block_on(answer(&src, req.clone(), SMALL, &mut parts)).unwrap_err();
            assert_eq!(err.code, Code::OutOfRange);
            assert_eq!(
                err.message,
                "etcdserver: mvcc: required revision has been compacted"
            );
            assert_eq!(!parts.is_empty(), sent_before, "after page {after}");
        }
        // Compacting at the revision read itself does not disturb it.
        let dir = tempfile::tempdir().unwrap();
        let mut src = filled(dir.path());
        let req = m::RangeRequest {
            revision: 300,
            ..req
        };
        let expected = whole(&src, &req);
        src.compact_after = Some((2, 300));
        assert!(paged(&src, &req, SMALL).0 == expected);
    }

    #[test]
    fn other_orders_and_single_keys_are_not_paged() {
        let base = m::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            ..Default::default()
        };
        assert!(eligible(&base));
        for not in [
            m::RangeRequest {
                range_end: Vec::new(),
                ..base.clone()
            },
            m::RangeRequest {
                count_only: true,
                ..base.clone()
            },
            m::RangeRequest {
                sort_order: m::SortOrder::Descend,
                ..base.clone()
            },
            m::RangeRequest {
                sort_target: m::SortTarget::Mod,
                ..base.clone()
            },
        ] {
            assert!(!eligible(&not), "{not:?}");
        }
    }
}
