//! Read-only transactions, evaluated against the applied store without the
//! WAL.
//!
//! A txn with no Put or DeleteRange on either branch, at any depth, changes
//! nothing, so logging it buys nothing but an fdatasync. Evaluated on the
//! latest published read view of the applied store (on whichever executor
//! received it) it stays linearizable: a write becomes visible only when
//! applied, which is after its fdatasync, and everything acknowledged
//! before the txn arrived is in that view (views are published before
//! their writes are answered).
//! The answer is the one the log path gives: compares and ranges see the
//! current revision, the header carries the current revision, and range
//! errors (future or compacted revision) are the same.

use basalt_engine::mvcc::{MvccError, ReadView, TxnRequest, TxnResponse};

use crate::proto::etcdserverpb as pb;

/// A txn that provably writes nothing, so evaluating it cannot meet a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyTxn(TxnRequest);

/// True when no branch of `req`, nested ones included, writes anything;
/// checked on the wire form so a write txn is not converted twice.
pub fn is_read_only(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
            Some(Request::RequestTxn(inner)) => is_read_only(inner),
        })
}

impl ReadOnlyTxn {
    /// `None` when some branch writes.
    pub fn new(req: TxnRequest) -> Option<ReadOnlyTxn> {
        req.is_read_only().then_some(ReadOnlyTxn(req))
    }

    /// Evaluates the txn at the view's current revision, with the engine's
    /// own txn code (the same the log path applies).
    pub fn evaluate(&self, view: &ReadView) -> Result<TxnResponse, MvccError> {
        view.read_txn(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use basalt_engine::mvcc::{
        Compare, CompareResult, CompareTarget, DeleteRangeRequest, Op, OpResponse, PutRequest,
        RangeRequest, RequestOp, Store, StoreOptions,
    };

    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn get(key: &str, range_end: &str, revision: i64) -> RequestOp {
        RequestOp::Range(RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            revision,
            ..Default::default()
        })
    }

    fn cmp(key: &str, range_end: &str, result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            result,
            target,
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    /// A store with history: puts, overwrites, a delete and a compaction.
    fn store_with_history(dir: &std::path::Path) -> (Store, u64) {
        let mut store = Store::open(dir, StoreOptions::default()).unwrap();
        let ops = [
            put("a", "1"),
            put("b", "2"),
            put("c", "3"),
            put("a", "1b"),
            Op::DeleteRange(DeleteRangeRequest {
                key: "c".into(),
                ..Default::default()
            }),
            Op::Compact { revision: 3 },
            put("d", "4"),
        ];
        for (i, op) in ops.iter().enumerate() {
            store.apply(i as u64 + 1, op).unwrap();
        }
        (store, ops.len() as u64)
    }

    fn txns() -> Vec<TxnRequest> {
        use CompareResult::*;
        use CompareTarget::*;
        let nested = TxnRequest {
            compare: vec![cmp("b", "", Equal, Version(1))],
            success: vec![get("b", "", 0)],
            failure: vec![get("a", "", 0)],
        };
        vec![
            TxnRequest::default(),
            TxnRequest {
                compare: vec![cmp("a", "", Equal, Value(b"1b".to_vec()))],
                success: vec![get("a", "", 0), get("", "\0", 0)],
                failure: vec![get("b", "", 0)],
            },
            TxnRequest {
                compare: vec![cmp("a", "z", Greater, Mod(1))],
                success: vec![RequestOp::Txn(nested.clone()), get("a", "", 4)],
                failure: vec![],
            },
            // A missing key compares as zero, but fails a value compare.
            TxnRequest {
                compare: vec![cmp("c", "", Equal, Create(0))],
                success: vec![get("c", "", 0)],
                failure: vec![],
            },
            TxnRequest {
                compare: vec![cmp("c", "", Equal, Value(vec![]))],
                success: vec![],
                failure: vec![RequestOp::Txn(nested), get("a", "c", 0)],
            },
            TxnRequest {
                compare: vec![
                    cmp("a", "", Less, Version(5)),
                    cmp("b", "", NotEqual, Lease(0)),
                ],
                success: vec![get("a", "", 0)],
                failure: vec![get("b", "", 0)],
            },
            // Errors: a compacted and a future revision.
            TxnRequest {
                compare: vec![],
                success: vec![get("a", "", 0), get("a", "", 2)],
                failure: vec![],
            },
            TxnRequest {
                compare: vec![],
                success: vec![get("a", "", 100)],
                failure: vec![],
            },
        ]
    }

    #[test]
    fn evaluation_matches_applying_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut index) = store_with_history(dir.path());
        for txn in txns() {
            let read = ReadOnlyTxn::new(txn.clone()).expect("read-only");
            let fast = read.evaluate(&store.read_view());
            let revision = store.current_revision();
            index += 1;
            let logged = store.apply(index, &Op::Txn(txn.clone()));
            match (fast, logged) {
                (Ok(fast), Ok(applied)) => {
                    assert_eq!(OpResponse::Txn(fast), applied.response, "{txn:?}");
                    assert_eq!(
                        applied.revision, revision,
                        "read-only txn kept the revision"
                    );
                }
                (Err(fast), Err(logged)) => {
                    assert_eq!(fast.to_string(), logged.to_string(), "{txn:?}")
                }
                (fast, logged) => panic!("{txn:?}: fast path {fast:?} vs log {logged:?}"),
            }
        }
    }

    #[test]
    fn a_write_at_any_depth_is_not_read_only() {
        let write = RequestOp::Put(PutRequest {
            key: "k".into(),
            ..Default::default()
        });
        let deep = TxnRequest {
            failure: vec![RequestOp::Txn(TxnRequest {
                success: vec![get("a", "", 0), write],
                ..Default::default()
            })],
            ..Default::default()
        };
        assert!(ReadOnlyTxn::new(deep).is_none());
        let delete = TxnRequest {
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::default())],
            ..Default::default()
        };
        assert!(ReadOnlyTxn::new(delete).is_none());

        use pb::request_op::Request;
        let op = |r: Request| pb::RequestOp { request: Some(r) };
        let wire_deep = pb::TxnRequest {
            success: vec![op(Request::RequestTxn(pb::TxnRequest {
                failure: vec![op(Request::RequestDeleteRange(Default::default()))],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert!(!is_read_only(&wire_deep));
        let wire_reads = pb::TxnRequest {
            success: vec![op(Request::RequestTxn(pb::TxnRequest {
                failure: vec![op(Request::RequestRange(Default::default()))],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert!(is_read_only(&wire_reads));
    }
}
