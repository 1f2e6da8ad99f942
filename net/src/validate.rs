//! etcd's stateless request checks (its `v3rpc/key.go`), done before a
//! request reaches the log: they need no store state, and a request that
//! fails them must never be written to the WAL.

use std::collections::HashSet;

use crate::error::Error;
use crate::proto::etcdserverpb as pb;

pub fn range(r: &pb::RangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if pb::range_request::SortOrder::try_from(r.sort_order).is_err()
        || pb::range_request::SortTarget::try_from(r.sort_target).is_err()
    {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

pub fn put(r: &pb::PutRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(r: &pb::DeleteRangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Op count per branch (not in total) against `max_ops`, every nested op,
/// then etcd's rule that one txn may not write a key twice.
pub fn txn(r: &pb::TxnRequest, max_ops: usize) -> Result<(), Error> {
    txn_ops(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// As etcd: a nested txn gets what its parent's largest branch left of
/// the budget, and every compare needs a key.
fn txn_ops(r: &pb::TxnRequest, max_ops: usize) -> Result<(), Error> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        use pb::request_op::Request;
        match &op.request {
            Some(Request::RequestRange(r)) => range(r)?,
            Some(Request::RequestPut(r)) => put(r)?,
            Some(Request::RequestDeleteRange(r)) => delete_range(r)?,
            Some(Request::RequestTxn(r)) => txn_ops(r, max_ops - opc)?,
            None => {}
        }
    }
    Ok(())
}

/// A deleted key interval `[start, end)`; `end = None` is unbounded.
#[derive(Clone)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        let end = match range_end {
            [] => {
                let mut e = key.to_vec();
                e.push(0);
                Some(e)
            }
            [0] => None,
            e => Some(e.to_vec()),
        };
        Interval {
            start: key.to_vec(),
            end,
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// The keys put and ranges deleted by one list of ops, nested txns
/// included; fails on the first key written twice. As in etcd, the two
/// branches of a nested txn may put the same key (only one runs), but a put
/// may not fall in a range deleted at the same or an outer level.
fn check_intervals(ops: &[pb::RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>), Error> {
    use pb::request_op::Request;
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Interval], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::request_op::Request;

    fn put(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn nested(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestTxn(pb::TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }
    fn check(success: Vec<pb::RequestOp>) -> Result<(), Error> {
        txn(
            &pb::TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            },
            128,
        )
    }

    #[test]
    fn duplicate_puts_and_put_in_deleted_range_are_rejected() {
        assert!(check(vec![put("a"), put("b")]).is_ok());
        assert!(matches!(
            check(vec![put("a"), put("a")]),
            Err(Error::DuplicateKey)
        ));
        assert!(matches!(
            check(vec![del("a", "c"), put("b")]),
            Err(Error::DuplicateKey)
        ));
        assert!(matches!(
            check(vec![del("a", "\0"), put("zz")]),
            Err(Error::DuplicateKey)
        ));
        assert!(check(vec![del("a", "c"), put("c")]).is_ok());
        assert!(check(vec![del("a", ""), del("a", "")]).is_ok());
        assert!(matches!(
            check(vec![del("a", ""), put("a")]),
            Err(Error::DuplicateKey)
        ));
    }

    #[test]
    fn nested_branches_may_share_a_key_but_not_with_the_outer_level() {
        assert!(check(vec![nested(vec![put("a")], vec![put("a")])]).is_ok());
        assert!(matches!(
            check(vec![nested(vec![put("a")], vec![]), put("a")]),
            Err(Error::DuplicateKey)
        ));
        assert!(matches!(
            check(vec![del("a", "b"), nested(vec![put("a")], vec![])]),
            Err(Error::DuplicateKey)
        ));
    }

    #[test]
    fn too_many_ops_counts_the_largest_branch() {
        let ops: Vec<_> = (0..3).map(|i| put(&i.to_string())).collect();
        let r = pb::TxnRequest {
            compare: vec![],
            success: ops.clone(),
            failure: ops,
        };
        assert!(txn(&r, 3).is_ok());
        assert!(matches!(txn(&r, 2), Err(Error::TooManyOps)));
    }

    #[test]
    fn nested_txn_gets_the_remaining_budget() {
        let inner = nested(vec![put("x"), put("y")], vec![]);
        let r = pb::TxnRequest {
            compare: vec![],
            success: vec![inner, put("a")],
            failure: vec![],
        };
        assert!(txn(&r, 4).is_ok());
        assert!(matches!(txn(&r, 3), Err(Error::TooManyOps)));
    }

    #[test]
    fn nested_ops_are_validated() {
        assert!(matches!(check(vec![put("")]), Err(Error::EmptyKey)));
        assert!(matches!(
            check(vec![nested(vec![del("", "")], vec![])]),
            Err(Error::EmptyKey)
        ));
    }
}
