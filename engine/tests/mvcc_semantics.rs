//! Targeted checks of etcd's MVCC rules on `engine::mvcc::Store`.
//! Expected values follow etcd 3.4 (checked against /usr/bin/etcd where noted).

use basalt_engine::mvcc::*;

struct T {
    _dir: tempfile::TempDir,
    store: Store,
    index: u64,
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        T {
            _dir: dir,
            store,
            index: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Result<Applied, MvccError> {
        self.index += 1;
        self.store.apply(self.index, &op)
    }

    fn put(&mut self, key: &str, value: &str) -> Applied {
        self.apply(put_op(key, value, 0)).unwrap()
    }

    fn del(&mut self, key: &str, end: &str) -> Applied {
        self.apply(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: true,
        }))
        .unwrap()
    }

    fn get(&self, key: &str, end: &str, rev: i64) -> Result<RangeResponse, MvccError> {
        self.store.range(&RangeRequest {
            key: key.into(),
            range_end: end.into(),
            revision: rev,
            ..Default::default()
        })
    }

    fn reopen(&mut self) {
        self.store.checkpoint().unwrap();
        let dir = self._dir.path().to_path_buf();
        self.store = Store::open(&dir, StoreOptions::default()).unwrap();
        assert_eq!(self.store.applied_index(), self.index);
    }
}

fn put_op(key: &str, value: &str, lease: i64) -> Op {
    Op::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        prev_kv: true,
        ..Default::default()
    })
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[test]
fn fresh_store_is_at_revision_1_and_puts_bump_it() {
    let mut t = T::new();
    assert_eq!(t.store.current_revision(), 1);
    let a = t.put("foo", "bar");
    assert_eq!(a.revision, 2);
    let kv = &t.get("foo", "", 0).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    let a = t.put("foo", "baz");
    assert_eq!(a.revision, 3);
    assert_eq!(
        a.response,
        OpResponse::Put(PutResponse {
            prev_kv: Some(kv.clone())
        })
    );
    let kv = &t.get("foo", "", 0).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[test]
fn delete_ends_a_generation_and_put_starts_a_new_one() {
    let mut t = T::new();
    t.put("k", "1"); // 2
    t.put("k", "2"); // 3
    let d = t.del("k", "");
    assert_eq!(d.revision, 4);
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.events[0].kind, EventKind::Delete);
    assert_eq!(d.events[0].kv.mod_revision, 4);
    assert_eq!(d.events[0].prev_kv.as_ref().unwrap().version, 2);
    assert_eq!(t.get("k", "", 0).unwrap().count, 0);
    t.put("k", "3"); // 5
    let kv = &t.get("k", "", 0).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // history stays readable
    assert_eq!(t.get("k", "", 3).unwrap().kvs[0].value, b"2");
    assert_eq!(t.get("k", "", 4).unwrap().kvs.len(), 0);
    assert_eq!(t.get("k", "", 1).unwrap().kvs.len(), 0);
}

#[test]
fn no_op_writes_do_not_bump_the_revision() {
    let mut t = T::new();
    t.put("a", "1");
    let d = t.del("zzz", "");
    assert_eq!(d.revision, 2);
    assert_eq!(
        d.response,
        OpResponse::DeleteRange(DeleteRangeResponse::default())
    );
    let tx = t
        .apply(Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Range(RangeRequest {
                key: "a".into(),
                ..Default::default()
            })],
            failure: vec![],
        }))
        .unwrap();
    assert_eq!(tx.revision, 2);
    assert!(tx.events.is_empty());
    assert_eq!(t.store.current_revision(), 2);
}

#[test]
fn txn_ops_share_one_revision_and_see_their_own_writes() {
    let mut t = T::new();
    t.put("a", "0"); // 2
    let tx = t
        .apply(Op::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Value("0".into()),
                key: "a".into(),
                range_end: vec![],
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: "b".into(),
                    value: "1".into(),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: "c".into(),
                    value: "1".into(),
                    ..Default::default()
                }),
                RequestOp::Range(RangeRequest {
                    key: "a".into(),
                    range_end: "z".into(),
                    ..Default::default()
                }),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        }))
        .unwrap();
    assert_eq!(tx.revision, 3);
    assert_eq!(tx.events.len(), 3);
    assert!(tx.events.iter().all(|e| e.kv.mod_revision == 3));
    let OpResponse::Txn(resp) = tx.response else {
        panic!()
    };
    assert!(resp.succeeded);
    let ResponseOp::Range(r) = &resp.responses[2] else {
        panic!()
    };
    assert_eq!(keys(r), ["a", "b", "c"]);
    assert_eq!(keys(&t.get("a", "z", 0).unwrap()), ["b", "c"]);
    // the changes are at (3,0), (3,1), (3,2): watch history keeps their order
    let evs = t.store.events_from(b"a", b"z", 3, 100).unwrap();
    let order: Vec<_> = evs.iter().map(|e| (e.kind, e.kv.key.clone())).collect();
    assert_eq!(
        order,
        [
            (EventKind::Put, b"b".to_vec()),
            (EventKind::Put, b"c".to_vec()),
            (EventKind::Delete, b"a".to_vec())
        ]
    );
}

#[test]
fn compare_on_missing_key_sees_zeroes_but_value_compare_fails() {
    let mut t = T::new();
    let cmp = |target, result| {
        Op::Txn(TxnRequest {
            compare: vec![Compare {
                result,
                target,
                key: "missing".into(),
                range_end: vec![],
            }],
            success: vec![],
            failure: vec![],
        })
    };
    let ok = |a: Applied| {
        matches!(
            a.response,
            OpResponse::Txn(TxnResponse {
                succeeded: true,
                ..
            })
        )
    };
    assert!(ok(t
        .apply(cmp(CompareTarget::Version(0), CompareResult::Equal))
        .unwrap()));
    assert!(ok(t
        .apply(cmp(CompareTarget::Create(0), CompareResult::Equal))
        .unwrap()));
    assert!(ok(t
        .apply(cmp(CompareTarget::Mod(0), CompareResult::Equal))
        .unwrap()));
    assert!(ok(t
        .apply(cmp(CompareTarget::Lease(0), CompareResult::Equal))
        .unwrap()));
    assert!(!ok(t
        .apply(cmp(CompareTarget::Value(vec![]), CompareResult::Equal))
        .unwrap()));
    assert!(!ok(t
        .apply(cmp(CompareTarget::Value(vec![]), CompareResult::NotEqual))
        .unwrap()));
}

#[test]
fn compare_over_a_range_needs_every_key() {
    let mut t = T::new();
    t.put("a1", "x");
    t.put("a2", "x");
    t.put("a2", "y");
    let txn = |v: i64| {
        Op::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Less,
                target: CompareTarget::Version(v),
                key: "a".into(),
                range_end: "b".into(),
            }],
            success: vec![],
            failure: vec![],
        })
    };
    let succeeded = |a: Applied| match a.response {
        OpResponse::Txn(r) => r.succeeded,
        _ => panic!(),
    };
    assert!(!succeeded(t.apply(txn(2)).unwrap()));
    assert!(succeeded(t.apply(txn(3)).unwrap()));
}

#[test]
fn range_limit_count_more_and_sorting() {
    let mut t = T::new();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "0")] {
        t.put(k, v);
    }
    t.put("b", "1b"); // b: version 2
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "\0".into(),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".into(), "b".into()], true, 4)
    );
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "\0".into(),
            limit: 4,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "\0".into(),
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            limit: 3,
            keys_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(keys(&r), ["a", "c", "b"]);
    assert!(r.more && r.count == 4 && r.kvs.iter().all(|kv| kv.value.is_empty()));
    // sort target other than key with order NONE sorts ascending
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "e".into(),
            sort_target: SortTarget::Version,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(keys(&r), ["a", "c", "d", "b"]);
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "e".into(),
            count_only: true,
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 4));
}

#[test]
fn revision_filters_prune_after_counting() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("b", "1"); // 3
    t.put("c", "1"); // 4
    t.put("a", "2"); // 5
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            min_mod_revision: 4,
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    // etcd: count is before the filters; more is after them
    assert_eq!((keys(&r), r.more, r.count), (vec!["a".into()], true, 3));
    let r = t
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            max_create_revision: 3,
            min_create_revision: 3,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["b".into()], false, 3));
}

#[test]
fn range_end_forms() {
    let mut t = T::new();
    for k in ["", "a", "a\0", "ab", "b"] {
        if !k.is_empty() {
            t.put(k, "v");
        }
    }
    assert_eq!(keys(&t.get("a", "", 0).unwrap()), ["a"]);
    assert_eq!(keys(&t.get("a", "\0", 0).unwrap()), ["a", "a\0", "ab", "b"]);
    assert_eq!(
        keys(&t.get("\0", "\0", 0).unwrap()),
        ["a", "a\0", "ab", "b"]
    );
    assert_eq!(keys(&t.get("a\0", "b", 0).unwrap()), ["a\0", "ab"]);
    assert_eq!(t.get("b", "a", 0).unwrap().count, 0);
    assert_eq!(t.get("b", "b", 0).unwrap().count, 0);
}

#[test]
fn future_and_compacted_revisions() {
    let mut t = T::new();
    for i in 0..5 {
        t.put("k", &i.to_string()); // revs 2..=6
    }
    assert!(matches!(t.get("k", "", 7), Err(MvccError::FutureRevision)));
    assert!(matches!(
        t.apply(Op::Compact { revision: 7 }),
        Err(MvccError::FutureRevision)
    ));
    let c = t.apply(Op::Compact { revision: 4 }).unwrap();
    assert_eq!(c.revision, 6);
    assert_eq!(t.store.compact_revision(), 4);
    assert!(matches!(
        t.get("k", "", 3),
        Err(MvccError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    // the compact revision itself is still readable (etcd: rev < compactRev fails)
    assert_eq!(t.get("k", "", 4).unwrap().kvs[0].value, b"2");
    assert_eq!(t.get("k", "", 5).unwrap().kvs[0].value, b"3");
    assert!(matches!(
        t.apply(Op::Compact { revision: 4 }),
        Err(MvccError::Compacted { .. })
    ));
    assert!(matches!(
        t.apply(Op::Compact { revision: 3 }),
        Err(MvccError::Compacted { .. })
    ));
    assert!(matches!(
        t.store.events_from(b"k", b"", 3, 10),
        Err(MvccError::Compacted { .. })
    ));
    t.reopen();
    assert_eq!(t.store.compact_revision(), 4);
    assert!(matches!(
        t.get("k", "", 3),
        Err(MvccError::Compacted { .. })
    ));
    assert_eq!(t.get("k", "", 4).unwrap().kvs[0].value, b"2");
}

#[test]
fn compaction_drops_deleted_keys_and_keeps_the_latest_live_version() {
    let mut t = T::new();
    t.put("gone", "1"); // 2
    t.del("gone", ""); // 3
    t.put("kept", "1"); // 4
    t.put("kept", "2"); // 5
    t.put("later", "1"); // 6
    t.apply(Op::Compact { revision: 5 }).unwrap();
    let evs = t.store.events_from(b"\0", b"\0", 5, 100).unwrap();
    let revs: Vec<i64> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [5, 6]);
    assert_eq!(t.get("kept", "", 5).unwrap().kvs[0].version, 2);
    assert_eq!(t.get("\0", "\0", 5).unwrap().count, 1);
    assert_eq!(t.get("\0", "\0", 0).unwrap().count, 2);
}

#[test]
fn put_errors_change_nothing() {
    let mut t = T::new();
    t.put("a", "1");
    let hash = t.store.hash().unwrap();
    let ignore = Op::Put(PutRequest {
        key: "missing".into(),
        ignore_value: true,
        ..Default::default()
    });
    assert!(matches!(t.apply(ignore), Err(MvccError::KeyNotFound)));
    assert!(matches!(
        t.apply(put_op("a", "2", 99)),
        Err(MvccError::LeaseNotFound(99))
    ));
    // a txn whose second op fails leaves the first undone
    let txn = Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: "b".into(),
                value: "1".into(),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: "c".into(),
                value: "1".into(),
                lease: 7,
                ..Default::default()
            }),
        ],
        failure: vec![],
    });
    assert!(matches!(t.apply(txn), Err(MvccError::LeaseNotFound(7))));
    assert_eq!(t.store.current_revision(), 2);
    assert_eq!(t.store.hash().unwrap(), hash);
    assert!(matches!(
        t.store.apply(1, &put_op("x", "y", 0)),
        Err(MvccError::StaleIndex { .. })
    ));
}

#[test]
fn ignore_value_and_ignore_lease_keep_the_old_ones() {
    let mut t = T::new();
    t.apply(Op::LeaseGrant { id: 5, ttl: 10 }).unwrap();
    t.apply(put_op("k", "v", 5)).unwrap();
    t.apply(Op::Put(PutRequest {
        key: "k".into(),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    }))
    .unwrap();
    let kv = &t.get("k", "", 0).unwrap().kvs[0];
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v"[..], 5, 2)
    );
}

#[test]
fn leases_attach_move_and_revoke_in_one_revision() {
    let mut t = T::new();
    t.apply(Op::LeaseGrant { id: 1, ttl: 30 }).unwrap();
    t.apply(Op::LeaseGrant { id: 2, ttl: 60 }).unwrap();
    assert!(matches!(
        t.apply(Op::LeaseGrant { id: 1, ttl: 5 }),
        Err(MvccError::LeaseExists(1))
    ));
    assert_eq!(t.store.current_revision(), 1);
    t.apply(put_op("a", "1", 1)).unwrap(); // 2
    t.apply(put_op("b", "1", 1)).unwrap(); // 3
    t.apply(put_op("c", "1", 1)).unwrap(); // 4
    t.apply(put_op("c", "2", 2)).unwrap(); // 5: moves c to lease 2
    t.apply(put_op("b", "2", 0)).unwrap(); // 6: detaches b
    assert_eq!(t.store.lease(1).unwrap().unwrap().keys, [b"a".to_vec()]);
    assert_eq!(t.store.lease(2).unwrap().unwrap().keys, [b"c".to_vec()]);
    t.reopen();
    assert_eq!(t.store.leases().unwrap().len(), 2);
    t.apply(put_op("d", "1", 2)).unwrap(); // 7
    let r = t.apply(Op::LeaseRevoke { id: 2 }).unwrap();
    assert_eq!(r.revision, 8);
    assert_eq!(r.events.len(), 2);
    assert!(r
        .events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 8));
    assert_eq!(keys(&t.get("a", "z", 0).unwrap()), ["a", "b"]);
    assert!(t.store.lease(2).unwrap().is_none());
    assert!(matches!(
        t.apply(Op::LeaseRevoke { id: 2 }),
        Err(MvccError::LeaseNotFound(2))
    ));
    // a lease with no keys: revoke does not bump the revision
    t.apply(Op::LeaseGrant { id: 3, ttl: 1 }).unwrap();
    assert_eq!(t.apply(Op::LeaseRevoke { id: 3 }).unwrap().revision, 8);
}

#[test]
fn events_from_fills_prev_kv_and_respects_max_without_splitting_a_revision() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    t.apply(Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: "b".into(),
                value: "1".into(),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: "c".into(),
                value: "1".into(),
                ..Default::default()
            }),
        ],
        failure: vec![],
    }))
    .unwrap(); // 4
    t.del("a", ""); // 5
    let evs = t.store.events_from(b"a", b"\0", 3, 2).unwrap();
    assert_eq!(evs.len(), 3, "revision 4 is not split");
    assert_eq!(evs[0].prev_kv.as_ref().unwrap().value, b"1");
    let evs = t.store.events_from(b"a", b"", 0, 100).unwrap();
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2].kind, EventKind::Delete);
    assert_eq!(evs[2].prev_kv.as_ref().unwrap().value, b"2");
}

#[test]
fn hash_kv_matches_for_same_history_and_rejects_bad_revisions() {
    let mut a = T::new();
    let mut b = T::new();
    for t in [&mut a, &mut b] {
        t.put("x", "1");
        t.put("y", "2");
    }
    b.reopen();
    assert_eq!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
    assert_eq!(a.store.hash().unwrap(), b.store.hash().unwrap());
    a.put("x", "3");
    assert_ne!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
    assert_eq!(a.store.hash_kv(3).unwrap(), b.store.hash_kv(3).unwrap());
    assert!(matches!(a.store.hash_kv(9), Err(MvccError::FutureRevision)));
}

#[test]
fn snapshot_round_trip_and_corruption_is_detected() {
    let mut t = T::new();
    t.apply(Op::LeaseGrant { id: 9, ttl: 10 }).unwrap();
    t.apply(put_op("a", "1", 9)).unwrap();
    t.put("b", "2");
    t.del("b", "");
    let mut stream = Vec::new();
    t.store.write_snapshot(&mut stream).unwrap();

    let dir = tempfile::tempdir().unwrap();
    Store::restore_snapshot(&mut stream.as_slice(), dir.path()).unwrap();
    let restored = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(restored.applied_index(), t.index);
    assert_eq!(restored.current_revision(), t.store.current_revision());
    assert_eq!(restored.hash().unwrap(), t.store.hash().unwrap());
    assert_eq!(restored.lease(9).unwrap().unwrap().keys, [b"a".to_vec()]);

    for at in [0, 20, stream.len() / 2, stream.len() - 1] {
        let mut bad = stream.clone();
        bad[at] ^= 0x40;
        let dir = tempfile::tempdir().unwrap();
        let err = Store::restore_snapshot(&mut bad.as_slice(), dir.path()).unwrap_err();
        assert!(matches!(err, MvccError::Corrupt(_)), "flip at {at}: {err}");
        assert!(!dir.path().join(TREE_FILE).exists());
    }
    let dir = tempfile::tempdir().unwrap();
    let short = &stream[..stream.len() - 3];
    assert!(matches!(
        Store::restore_snapshot(&mut &short[..], dir.path()),
        Err(MvccError::Corrupt(_))
    ));
}

#[test]
fn checkpoint_and_reopen_keep_everything() {
    let mut t = T::new();
    t.put("a", "1");
    t.store.checkpoint().unwrap();
    t.put("a", "2");
    t.put("b", "1");
    t.del("b", "");
    let before = t.store.hash().unwrap();
    t.reopen();
    assert_eq!(t.store.hash().unwrap(), before);
    assert_eq!(t.store.current_revision(), 5);
    assert_eq!(t.get("a", "", 2).unwrap().kvs[0].value, b"1");
    t.store.defragment().unwrap();
    assert_eq!(t.store.hash().unwrap(), before);
    assert!(t.store.db_size() >= t.store.db_size_in_use());
}

#[test]
fn online_defragment_keeps_writes_made_during_the_copy() {
    let mut t = T::new();
    for i in 0..200 {
        t.put(&format!("k{i:03}"), &"x".repeat(200));
        t.store.checkpoint().unwrap(); // each commit leaves dead pages behind
    }
    t.del("k", "l");
    t.apply(Op::Compact {
        revision: t.store.current_revision(),
    })
    .unwrap();
    t.store.checkpoint().unwrap();
    let before = t.store.db_size();
    let job = t.store.begin_defragment().unwrap();
    let mut copy = std::thread::spawn(move || job.build())
        .join()
        .unwrap()
        .unwrap();
    t.put("during", "1");
    t.store.checkpoint().unwrap();
    assert!(t.store.defragment_backlog() > 0);
    t.store.defragment_catch_up(&mut copy).unwrap();
    assert_eq!(t.store.defragment_backlog(), 0);
    t.put("during", "2");
    let hash = t.store.hash().unwrap();
    t.store.finish_defragment(copy).unwrap();
    assert!(
        t.store.db_size() < before,
        "{} !< {before}",
        t.store.db_size()
    );
    assert_eq!(t.store.hash().unwrap(), hash);
    t.reopen();
    assert_eq!(t.store.hash().unwrap(), hash);
    assert_eq!(t.get("during", "", 0).unwrap().kvs[0].version, 2);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let mut t = T::new();
    let nested = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: "a".into(),
            range_end: vec![],
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: "b".into(),
            value: "nested-success".into(),
            ..Default::default()
        })],
        failure: vec![RequestOp::Put(PutRequest {
            key: "b".into(),
            value: "nested-failure".into(),
            ..Default::default()
        })],
    };
    let outer = Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: "a".into(),
                value: "1".into(),
                ..Default::default()
            }),
            RequestOp::Txn(nested),
        ],
        failure: vec![],
    });
    let applied = t.apply(outer).unwrap();
    assert_eq!(applied.revision, 2);
    // etcd decides every branch up front: "a" had version 0 before the txn
    assert_eq!(t.get("b", "", 0).unwrap().kvs[0].value, b"nested-success");
    let OpResponse::Txn(resp) = applied.response else {
        panic!()
    };
    let ResponseOp::Txn(inner) = &resp.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
}

#[test]
fn damaged_tree_files_give_errors_not_panics() {
    let mut t = T::new();
    for i in 0..300 {
        t.put(&format!("key{i:04}"), &"v".repeat(100));
    }
    t.store.checkpoint().unwrap();
    // Node pages of that commit follow the two meta pages, in the index tree
    // and in the shard tree. A second commit on top means open() verifies
    // only the newer pages, so damage to these must surface on reads
    // (damage to the newest commit instead makes the tree fall back to the
    // previous commit, by design).
    let dir = t._dir.path().to_path_buf();
    let files = [TREE_FILE.to_string(), shard_file(0)];
    let committed: Vec<usize> = files
        .iter()
        .map(|f| {
            let tree = basalt_engine::btree::Tree::open(&dir.join(f), Default::default()).unwrap();
            tree.committed_bytes() as usize
        })
        .collect();
    t.put("last", "x");
    t.store.checkpoint().unwrap();
    let T {
        _dir: tempdir,
        store,
        ..
    } = t;
    drop(store);
    for (file, end) in files.iter().zip(committed) {
        let path = dir.join(file);
        let clean = std::fs::read(&path).unwrap();
        let nodes = 2 * 4096..end;
        let (mut errors, mut tries) = (0, 0);
        let step = nodes.len() / 40 + 1;
        for at in nodes.step_by(step) {
            tries += 1;
            let mut bad = clean.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&path, &bad).unwrap();
            // Either the damage is in dead space (all reads work), or some
            // call reports it; nothing may panic.
            let outcome = Store::open(&dir, StoreOptions::default()).and_then(|s| {
                s.range(&RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                })?;
                s.verify()
            });
            if outcome.is_err() {
                errors += 1;
            }
        }
        // Flips in a page's unused tail are harmless only if the page
        // checksum skips it; most flips must be caught.
        assert!(
            errors * 2 > tries,
            "{file}: only {errors} of {tries} flips detected"
        );
        std::fs::write(&path, &clean).unwrap();
    }
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    store.verify().unwrap();
    assert_eq!(store.current_revision(), 302);
    drop(tempdir);
}

/// Re-encodes a snapshot stream without the entries `drop` selects, with a
/// correct trailer and checksum.
fn rewrite_snapshot(stream: &[u8], drop: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let header = 16 + 4 + 8;
    let mut out = stream[..header].to_vec();
    let mut at = header;
    let mut count = 0u64;
    loop {
        let klen = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap());
        if klen == u32::MAX {
            break;
        }
        let vlen = u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        let end = at + 8 + klen as usize + vlen;
        let key = &stream[at + 8..at + 8 + klen as usize];
        if !drop(key) {
            out.extend_from_slice(&stream[at..end]);
            count += 1;
        }
        at = end;
    }
    out.extend_from_slice(&u32::MAX.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn restore_refuses_an_intact_but_inconsistent_snapshot() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("b", "2");
    let mut stream = Vec::new();
    t.store.write_snapshot(&mut stream).unwrap();
    // the rewriter itself round-trips
    let same = rewrite_snapshot(&stream, |_| false);
    assert_eq!(same, stream);
    // drop the live-index entry of "a": checksum fine, store inconsistent
    let bad = rewrite_snapshot(&stream, |k| k == b"la");
    let dir = tempfile::tempdir().unwrap();
    let err = Store::restore_snapshot(&mut bad.as_slice(), dir.path()).unwrap_err();
    assert!(matches!(err, MvccError::Corrupt(_)), "{err}");
    assert!(!dir.path().join(TREE_FILE).exists());
}

#[test]
fn read_txn_answers_like_apply_and_refuses_writes() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("b", "2");
    let read_only = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(b"1".to_vec()),
            key: b"a".to_vec(),
            range_end: vec![],
        }],
        success: vec![RequestOp::Range(RangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            ..Default::default()
        })],
        failure: vec![],
    };
    let fast = t.store.read_txn(&read_only).expect("read-only txn");
    let revision = t.store.current_revision();
    let applied = t.apply(Op::Txn(read_only)).expect("through apply");
    assert_eq!(applied.response, OpResponse::Txn(fast));
    assert_eq!(applied.revision, revision, "a read-only txn bumps nothing");

    let writes = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![RequestOp::Put(PutRequest {
                key: b"c".to_vec(),
                value: b"3".to_vec(),
                ..Default::default()
            })],
        })],
        failure: vec![],
    };
    assert!(matches!(
        t.store.read_txn(&writes),
        Err(MvccError::InvalidRequest(_))
    ));
    assert_eq!(t.store.current_revision(), revision);
}
