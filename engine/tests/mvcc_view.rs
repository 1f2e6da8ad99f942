//! Read views: taken at any point (during a checkpoint task, after it,
//! across a defragmentation), read later on other threads while the store
//! goes on applying, they answer exactly what the store answered when they
//! were taken.

use std::sync::mpsc;

use basalt_engine::mvcc::*;

fn opts(shards: usize) -> StoreOptions {
    StoreOptions {
        shards,
        ..StoreOptions::default()
    }
}

fn ops(n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| match i % 40 {
            0 => Op::LeaseGrant {
                id: 1 + i as i64,
                ttl: 10,
            },
            9 => Op::DeleteRange(DeleteRangeRequest {
                key: format!("k{:03}", (i * 7) % 250).into_bytes(),
                range_end: format!("k{:03}", (i * 7) % 250 + 3).into_bytes(),
                prev_kv: true,
            }),
            21 => Op::Put(PutRequest {
                key: format!("leased{i}").into_bytes(),
                value: b"x".to_vec(),
                lease: 1 + (i - 21) as i64,
                ..Default::default()
            }),
            33 if i > 400 => Op::Compact {
                revision: i as i64 / 2,
            },
            _ => Op::Put(PutRequest {
                key: format!("k{:03}", (i * 13) % 250).into_bytes(),
                value: vec![i as u8; 64 + i % 200],
                ..Default::default()
            }),
        })
        .collect()
}

/// The reads each view is checked with: whole keyspace now, a prefix with a
/// limit (exact count, `more`), keys at an older revision, a read-only txn
/// (and, in the answers, the recent events of a prefix).
fn probes(rev: i64) -> (Vec<RangeRequest>, TxnRequest) {
    let ranges = vec![
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        },
        RangeRequest {
            key: b"k1".to_vec(),
            range_end: b"k2".to_vec(),
            limit: 7,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            ..Default::default()
        },
        RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            revision: (rev - 30).max(1),
            count_only: true,
            ..Default::default()
        },
    ];
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"k100".to_vec(),
            range_end: vec![],
            target: CompareTarget::Version(2),
            result: CompareResult::Greater,
        }],
        success: vec![RequestOp::Range(RangeRequest {
            key: b"k0".to_vec(),
            range_end: b"k1".to_vec(),
            ..Default::default()
        })],
        failure: vec![RequestOp::Range(RangeRequest {
            key: b"leased".to_vec(),
            range_end: b"leasee".to_vec(),
            keys_only: true,
            ..Default::default()
        })],
    };
    (ranges, txn)
}

type Answers = (
    Vec<Result<RangeResponse, String>>,
    Result<TxnResponse, String>,
    Result<Vec<Event>, String>,
);

fn answers_of_store(store: &Store) -> Answers {
    let (ranges, txn) = probes(store.current_revision());
    (
        ranges
            .iter()
            .map(|r| store.range(r).map_err(|e| e.to_string()))
            .collect(),
        store.read_txn(&txn).map_err(|e| e.to_string()),
        store
            .events_from(b"k", b"l", store.current_revision() - 40, 50)
            .map_err(|e| e.to_string()),
    )
}

fn answers_of_view(view: &ReadView) -> Answers {
    let (ranges, txn) = probes(view.current_revision());
    (
        ranges
            .iter()
            .map(|r| view.range(r).map_err(|e| e.to_string()))
            .collect(),
        view.read_txn(&txn).map_err(|e| e.to_string()),
        view.events_from(b"k", b"l", view.current_revision() - 40, 50)
            .map_err(|e| e.to_string()),
    )
}

#[test]
fn views_read_on_other_threads_answer_as_the_store_did_when_taken() {
    for shards in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), opts(shards)).unwrap();
        // A reader thread checks every view it is sent while the store
        // goes on applying, checkpointing and defragmenting.
        let (tx, rx) = mpsc::channel::<(ReadView, Answers, u64)>();
        let reader = std::thread::spawn(move || {
            let mut checked = Vec::new();
            for (view, want, index) in rx {
                assert_eq!(view.applied_index(), index);
                assert_eq!(answers_of_view(&view), want, "view at index {index}");
                checked.push((view, want));
            }
            // Read them all once more, long after they were taken.
            for (view, want) in &checked {
                assert_eq!(&answers_of_view(view), want);
            }
            checked.len()
        });
        let work = ops(1500);
        let mut task = None;
        for (i, op) in work.iter().enumerate() {
            let index = i as u64 + 1;
            let _ = store.apply(index, op);
            if index % 37 == 0 {
                tx.send((store.read_view(), answers_of_store(&store), index))
                    .unwrap();
            }
            match index % 250 {
                // A task runs on a thread across the next 100 entries.
                50 => {
                    let t = store.start_checkpoint().unwrap().unwrap();
                    task = Some(std::thread::spawn(move || t.run()));
                }
                150 => {
                    let done = task.take().unwrap().join().unwrap();
                    store.finish_checkpoint(done).unwrap();
                }
                200 if index == 700 => store.defragment().unwrap(),
                _ => {}
            }
        }
        drop(tx);
        let checked = reader.join().unwrap();
        assert_eq!(checked, 1500 / 37);
        store.verify().unwrap();
    }
}

#[test]
fn a_view_survives_the_store_that_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), opts(2)).unwrap();
    for (i, op) in ops(300).iter().enumerate() {
        let _ = store.apply(i as u64 + 1, op);
    }
    store.checkpoint().unwrap();
    store.apply(301, &ops(2)[1]).unwrap();
    let want = answers_of_store(&store);
    let view = store.read_view();
    drop(store);
    assert_eq!(answers_of_view(&view), want);
}

#[test]
fn views_cross_threads() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<ReadView>();
}
