//! Conversions between etcd's wire messages (prost, [`crate::proto`]) and
//! the engine's plain MVCC types. Requests convert fallibly (an unknown enum
//! value is a client error); responses convert infallibly.

use basalt_engine::mvcc as m;

use crate::error::Error;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;

pub fn range_request(r: &pb::RangeRequest) -> Result<m::RangeRequest, Error> {
    use pb::range_request::{SortOrder, SortTarget};
    let sort_order =
        match SortOrder::try_from(r.sort_order).map_err(|_| Error::InvalidSortOption)? {
            SortOrder::None => m::SortOrder::None,
            SortOrder::Ascend => m::SortOrder::Ascend,
            SortOrder::Descend => m::SortOrder::Descend,
        };
    let sort_target =
        match SortTarget::try_from(r.sort_target).map_err(|_| Error::InvalidSortOption)? {
            SortTarget::Key => m::SortTarget::Key,
            SortTarget::Version => m::SortTarget::Version,
            SortTarget::Create => m::SortTarget::Create,
            SortTarget::Mod => m::SortTarget::Mod,
            SortTarget::Value => m::SortTarget::Value,
        };
    Ok(m::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(r: &pb::PutRequest) -> m::PutRequest {
    m::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_request(r: &pb::DeleteRangeRequest) -> m::DeleteRangeRequest {
    m::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

pub fn txn_request(r: &pb::TxnRequest) -> Result<m::TxnRequest, Error> {
    Ok(m::TxnRequest {
        compare: r.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: r.success.iter().map(request_op).collect::<Result<_, _>>()?,
        failure: r.failure.iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

fn request_op(op: &pb::RequestOp) -> Result<m::RequestOp, Error> {
    use pb::request_op::Request;
    Ok(match &op.request {
        Some(Request::RequestRange(r)) => m::RequestOp::Range(range_request(r)?),
        Some(Request::RequestPut(r)) => m::RequestOp::Put(put_request(r)),
        Some(Request::RequestDeleteRange(r)) => m::RequestOp::DeleteRange(delete_request(r)),
        Some(Request::RequestTxn(r)) => m::RequestOp::Txn(txn_request(r)?),
        // etcd treats an empty op as a no-op range of nothing; an empty key
        // is rejected by validation before we get here.
        None => m::RequestOp::Range(m::RangeRequest::default()),
    })
}

/// etcd reads the union member matching `target` and compares against the
/// zero value when the client left it unset; so do we.
fn compare(c: &pb::Compare) -> Result<m::Compare, Error> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result).map_err(|_| Error::InvalidCompare)? {
        R::Equal => m::CompareResult::Equal,
        R::Greater => m::CompareResult::Greater,
        R::Less => m::CompareResult::Less,
        R::NotEqual => m::CompareResult::NotEqual,
    };
    let u = c.target_union.as_ref();
    let target = match T::try_from(c.target).map_err(|_| Error::InvalidCompare)? {
        T::Version => m::CompareTarget::Version(match u {
            Some(U::Version(v)) => *v,
            _ => 0,
        }),
        T::Create => m::CompareTarget::Create(match u {
            Some(U::CreateRevision(v)) => *v,
            _ => 0,
        }),
        T::Mod => m::CompareTarget::Mod(match u {
            Some(U::ModRevision(v)) => *v,
            _ => 0,
        }),
        T::Value => m::CompareTarget::Value(match u {
            Some(U::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        T::Lease => m::CompareTarget::Lease(match u {
            Some(U::Lease(v)) => *v,
            _ => 0,
        }),
    };
    Ok(m::Compare {
        result,
        target,
        key: c.key.clone(),
        range_end: c.range_end.clone(),
    })
}

pub fn key_value(kv: m::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event(e: m::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            m::EventKind::Put => mvccpb::event::EventType::Put as i32,
            m::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

pub fn range_response(r: m::RangeResponse, header: &pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(*header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A `RangeResponse` written in parts, for a response too large to build
/// whole (see `services::kv`): prost writes a message's fields in field
/// number order, so `header` (1), then every `kvs` (2), then `more` (3) and
/// `count` (4) give bytes identical to encoding the whole message.
pub mod range_parts {
    use bytes::BufMut;
    use prost::encoding::{bool as pbool, int64, message};

    use super::{mvccpb, pb};

    const HEADER: u32 = 1;
    const KVS: u32 = 2;
    const MORE: u32 = 3;
    const COUNT: u32 = 4;

    /// Encoded length of the `header` field.
    pub fn header_len(header: &pb::ResponseHeader) -> usize {
        message::encoded_len(HEADER, header)
    }

    pub fn encode_header(header: &pb::ResponseHeader, buf: &mut impl BufMut) {
        message::encode(HEADER, header, buf);
    }

    /// Encoded length of one element of `kvs`, tag and length included.
    pub fn kv_len(kv: &mvccpb::KeyValue) -> usize {
        message::encoded_len(KVS, kv)
    }

    pub fn encode_kv(kv: &mvccpb::KeyValue, buf: &mut impl BufMut) {
        message::encode(KVS, kv, buf);
    }

    /// Encoded length of `more` and `count` (proto3: absent when zero).
    pub fn tail_len(more: bool, count: i64) -> usize {
        (if more {
            pbool::encoded_len(MORE, &more)
        } else {
            0
        }) + (if count != 0 {
            int64::encoded_len(COUNT, &count)
        } else {
            0
        })
    }

    pub fn encode_tail(more: bool, count: i64, buf: &mut impl BufMut) {
        if more {
            pbool::encode(MORE, &more, buf);
        }
        if count != 0 {
            int64::encode(COUNT, &count, buf);
        }
    }
}

pub fn put_response(r: m::PutResponse, header: &pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(*header),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_response(
    r: m::DeleteRangeResponse,
    header: &pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(*header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// `header` goes on the response. Responses nested in a txn carry only a
/// revision, and etcd's: the txn's starting revision until the txn first
/// changes something, its new revision from then on; a nested txn's own
/// header is empty.
pub fn txn_response(r: m::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    let begin = if changes_anything(&r) {
        header.revision - 1
    } else {
        header.revision
    };
    let mut changed = false;
    txn_response_with(r, Some(*header), begin, &mut changed)
}

fn changes_anything(r: &m::TxnResponse) -> bool {
    r.responses.iter().any(|op| match op {
        m::ResponseOp::Range(_) => false,
        m::ResponseOp::Put(_) => true,
        m::ResponseOp::DeleteRange(d) => d.deleted > 0,
        m::ResponseOp::Txn(t) => changes_anything(t),
    })
}

fn txn_response_with(
    r: m::TxnResponse,
    header: Option<pb::ResponseHeader>,
    begin: i64,
    changed: &mut bool,
) -> pb::TxnResponse {
    use pb::response_op::Response;
    let at = |revision: i64| pb::ResponseHeader {
        revision,
        ..Default::default()
    };
    let mut responses = Vec::with_capacity(r.responses.len());
    for op in r.responses {
        let response = match op {
            m::ResponseOp::Range(r) => {
                Response::ResponseRange(range_response(r, &at(begin + *changed as i64)))
            }
            m::ResponseOp::Put(r) => {
                *changed = true;
                Response::ResponsePut(put_response(r, &at(begin + 1)))
            }
            m::ResponseOp::DeleteRange(r) => {
                *changed |= r.deleted > 0;
                Response::ResponseDeleteRange(delete_response(r, &at(begin + *changed as i64)))
            }
            m::ResponseOp::Txn(r) => Response::ResponseTxn(txn_response_with(
                r,
                Some(pb::ResponseHeader::default()),
                begin,
                changed,
            )),
        };
        responses.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    pb::TxnResponse {
        header,
        succeeded: r.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_op_revisions_follow_the_first_change() {
        let r = m::TxnResponse {
            succeeded: true,
            responses: vec![
                m::ResponseOp::Range(m::RangeResponse::default()),
                m::ResponseOp::DeleteRange(m::DeleteRangeResponse::default()),
                m::ResponseOp::Put(m::PutResponse::default()),
                m::ResponseOp::Txn(m::TxnResponse {
                    succeeded: false,
                    responses: vec![m::ResponseOp::Range(m::RangeResponse::default())],
                }),
            ],
        };
        let header = pb::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 10,
            raft_term: 3,
        };
        let out = txn_response(r, &header);
        assert_eq!(out.header, Some(header));
        use pb::response_op::Response as R;
        let revs: Vec<i64> = out
            .responses
            .iter()
            .map(|op| match op.response.as_ref().unwrap() {
                R::ResponseRange(r) => r.header.unwrap().revision,
                R::ResponseDeleteRange(r) => r.header.unwrap().revision,
                R::ResponsePut(r) => r.header.unwrap().revision,
                R::ResponseTxn(t) => {
                    assert_eq!(t.header, Some(pb::ResponseHeader::default()));
                    match t.responses[0].response.as_ref().unwrap() {
                        R::ResponseRange(r) => r.header.unwrap().revision,
                        _ => unreachable!(),
                    }
                }
            })
            .collect();
        assert_eq!(revs, vec![9, 9, 10, 10]);
    }

    #[test]
    fn range_parts_encode_like_the_whole_message() {
        use prost::Message;
        let header = pb::ResponseHeader {
            cluster_id: 7,
            member_id: 8,
            revision: 300,
            raft_term: 2,
        };
        let kvs: Vec<mvccpb::KeyValue> = (0..5)
            .map(|i| mvccpb::KeyValue {
                key: format!("key/{i}").into_bytes(),
                create_revision: i,
                mod_revision: 100 * i,
                version: i,
                value: vec![b'x'; 200 * i as usize],
                lease: if i == 3 { 99 } else { 0 },
            })
            .collect();
        for (more, count) in [(false, 0), (true, 5), (false, 1 << 40)] {
            let whole = pb::RangeResponse {
                header: Some(header),
                kvs: kvs.clone(),
                more,
                count,
            }
            .encode_to_vec();
            let mut parts = Vec::new();
            range_parts::encode_header(&header, &mut parts);
            for kv in &kvs {
                range_parts::encode_kv(kv, &mut parts);
            }
            range_parts::encode_tail(more, count, &mut parts);
            assert_eq!(parts, whole);
            let lens = range_parts::header_len(&header)
                + kvs.iter().map(range_parts::kv_len).sum::<usize>()
                + range_parts::tail_len(more, count);
            assert_eq!(lens, whole.len());
        }
    }

    #[test]
    fn unknown_sort_order_is_invalid_sort_option() {
        let r = pb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert!(matches!(range_request(&r), Err(Error::InvalidSortOption)));
    }

    #[test]
    fn compare_reads_union_member_of_its_target() {
        let c = pb::Compare {
            result: pb::compare::CompareResult::Greater as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: Some(pb::compare::TargetUnion::ModRevision(7)),
        };
        let m = compare(&c).unwrap();
        assert_eq!(m.target, m::CompareTarget::Mod(7));
        assert_eq!(m.result, m::CompareResult::Greater);
        // Union for another target: etcd compares against zero.
        let c = pb::Compare {
            target: pb::compare::CompareTarget::Version as i32,
            ..c
        };
        assert_eq!(compare(&c).unwrap().target, m::CompareTarget::Version(0));
    }
}
