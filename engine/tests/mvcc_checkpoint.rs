//! Checkpoints split into start / run (on another thread) / finish: the
//! store keeps applying and reading while the commit runs, a crash between
//! run and finish loses nothing, a failed task leaves the store usable.

use std::path::Path;

use basalt_engine::mvcc::*;

fn opts(shards: usize) -> StoreOptions {
    StoreOptions {
        shards,
        ..StoreOptions::default()
    }
}

fn put(key: String, value: usize) -> Op {
    Op::Put(PutRequest {
        key: key.into_bytes(),
        value: vec![value as u8; 256],
        prev_kv: true,
        ..Default::default()
    })
}

fn all(store: &Store, revision: i64) -> RangeResponse {
    store
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        })
        .unwrap()
}

/// The ops of the tests: puts over 300 keys, some deletes and a lease.
fn ops(n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| match i % 50 {
            0 => Op::LeaseGrant {
                id: 1 + i as i64,
                ttl: 10,
            },
            7 => Op::DeleteRange(DeleteRangeRequest {
                key: format!("k{:03}", i % 300).into_bytes(),
                range_end: vec![],
                prev_kv: true,
            }),
            13 => Op::Put(PutRequest {
                key: format!("leased{i}").into_bytes(),
                value: b"x".to_vec(),
                lease: 1 + (i - 13) as i64,
                ..Default::default()
            }),
            _ => put(format!("k{:03}", i % 300), i),
        })
        .collect()
}

fn reference(dir: &Path, shards: usize, ops: &[Op]) -> Store {
    let mut store = Store::open(dir, opts(shards)).unwrap();
    for (i, op) in ops.iter().enumerate() {
        let _ = store.apply(i as u64 + 1, op);
    }
    store
}

#[test]
fn apply_range_and_events_go_on_while_a_task_runs_on_another_thread() {
    for shards in [1, 4] {
        let work = ops(3000);
        let (first, second) = work.split_at(2000);
        let dir = tempfile::tempdir().unwrap();
        let mut store = reference(dir.path(), shards, first);
        let frozen_rev = store.current_revision();
        let before = all(&store, 0);
        let task = store.start_checkpoint().unwrap().expect("writes pending");
        assert_eq!(task.index(), first.len() as u64);
        assert!(task.writes() > 2000);
        assert!(matches!(
            store.start_checkpoint(),
            Err(MvccError::CheckpointInFlight)
        ));
        assert!(matches!(
            store.begin_defragment(),
            Err(MvccError::CheckpointInFlight)
        ));
        let worker = std::thread::spawn(move || task.run());
        // The frozen state reads the same while the commit runs.
        assert_eq!(all(&store, 0), before);
        let mut overlapped = 0;
        for (i, op) in second.iter().enumerate() {
            let _ = store.apply((first.len() + i + 1) as u64, op);
            if i % 100 == 0 {
                assert_eq!(all(&store, frozen_rev), before);
                let events = store.events_from(b"\0", b"\0", frozen_rev, usize::MAX);
                assert!(!events.unwrap().is_empty());
                if !worker.is_finished() {
                    overlapped += 1;
                }
            }
        }
        let done = worker.join().unwrap();
        assert!(done.is_ok());
        assert_eq!(store.applied_index(), 0, "advances only at finish");
        store.finish_checkpoint(done).unwrap();
        assert_eq!(store.applied_index(), first.len() as u64);
        store.verify().unwrap();
        assert_eq!(all(&store, frozen_rev), before);

        let ref_dir = tempfile::tempdir().unwrap();
        let never = reference(ref_dir.path(), shards, &work);
        assert_eq!(store.hash().unwrap(), never.hash().unwrap());
        assert_eq!(all(&store, 0), all(&never, 0));
        assert_eq!(
            store.events_from(b"\0", b"\0", 1, usize::MAX).unwrap(),
            never.events_from(b"\0", b"\0", 1, usize::MAX).unwrap()
        );
        assert_eq!(store.leases().unwrap(), never.leases().unwrap());
        store.checkpoint().unwrap();
        drop(store);
        let store = Store::open(dir.path(), opts(shards)).unwrap();
        assert_eq!(store.applied_index(), work.len() as u64);
        assert_eq!(store.hash().unwrap(), never.hash().unwrap());
        // Not an assertion on timing (that would be flaky), just a hint
        // in the output of how much the two actually overlapped.
        eprintln!("{shards} shards: {overlapped} read rounds while the task ran");
    }
}

#[test]
fn a_crash_between_run_and_finish_keeps_what_the_task_committed() {
    let work = ops(1200);
    let (first, second) = work.split_at(800);
    let dir = tempfile::tempdir().unwrap();
    let mut store = reference(dir.path(), 4, first);
    let task = store.start_checkpoint().unwrap().unwrap();
    let done = std::thread::spawn(move || task.run()).join().unwrap();
    assert!(done.is_ok());
    for (i, op) in second.iter().enumerate() {
        let _ = store.apply((first.len() + i + 1) as u64, op);
    }
    drop((done, store)); // the crash: never finished
    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.applied_index(), first.len() as u64);
    store.verify().unwrap();
    let ref_dir = tempfile::tempdir().unwrap();
    assert_eq!(
        store.hash().unwrap(),
        reference(ref_dir.path(), 4, first).hash().unwrap()
    );
    for (i, op) in second.iter().enumerate() {
        let _ = store.apply((first.len() + i + 1) as u64, op);
    }
    let never_dir = tempfile::tempdir().unwrap();
    assert_eq!(
        store.hash().unwrap(),
        reference(never_dir.path(), 4, &work).hash().unwrap()
    );
}

#[test]
fn a_failed_task_leaves_the_store_usable_and_reopen_recovers() {
    let work = ops(900);
    let (first, second) = work.split_at(600);
    let dir = tempfile::tempdir().unwrap();
    let mut store = reference(dir.path(), 4, first);
    let before = all(&store, 0);
    let mut task = store.start_checkpoint().unwrap().unwrap();
    task.fail_before_index_commit();
    let done = task.run();
    assert!(!done.is_ok());
    let err = store.finish_checkpoint(done).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(store.applied_index(), 0);
    // Everything applied is still visible, and applying goes on.
    assert_eq!(all(&store, 0), before);
    store.verify().unwrap();
    for (i, op) in second.iter().enumerate() {
        let _ = store.apply((first.len() + i + 1) as u64, op);
    }
    let never_dir = tempfile::tempdir().unwrap();
    let never = reference(never_dir.path(), 4, &work);
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
    // Shards were committed without the index: writing them again would
    // overwrite their rollback point, so the store asks for a reopen.
    let err = store.checkpoint().unwrap_err();
    assert!(matches!(err, MvccError::CheckpointTorn { .. }), "{err}");
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
    drop(store);
    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.applied_index(), 0);
    store.verify().unwrap();
    for (i, op) in work.iter().enumerate() {
        let _ = store.apply(i as u64 + 1, op);
    }
    store.checkpoint().unwrap();
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
}

#[test]
fn nothing_pending_means_no_task_and_finish_checks_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), opts(2)).unwrap();
    assert!(store.start_checkpoint().unwrap().is_none());
    store.apply(1, &put("a".into(), 1)).unwrap();
    let task = store.start_checkpoint().unwrap().unwrap();
    let done = task.run();
    store.finish_checkpoint(done).unwrap();
    assert!(store.start_checkpoint().unwrap().is_none());
    assert_eq!(store.applied_index(), 1);

    // A result from another store is refused.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Store::open(other_dir.path(), opts(2)).unwrap();
    other.apply(1, &put("b".into(), 1)).unwrap();
    let foreign = other.start_checkpoint().unwrap().unwrap().run();
    assert!(store.finish_checkpoint(foreign).is_err());
    assert_eq!(store.applied_index(), 1);
}

#[test]
fn tasks_and_results_cross_threads() {
    fn send_static<T: Send + 'static>() {}
    send_static::<CheckpointTask>();
    send_static::<CheckpointDone>();
    send_static::<ShardCommit>();
    send_static::<ShardCommitted>();
    send_static::<IndexCommit>();
    send_static::<DefragJob>();
}

#[test]
fn a_split_checkpoint_commits_every_shard_on_its_own_thread() {
    let work = ops(2400);
    let (first, second) = work.split_at(1600);
    let dir = tempfile::tempdir().unwrap();
    let mut store = reference(dir.path(), 4, first);
    let (parts, index) = store.start_checkpoint().unwrap().unwrap().split();
    assert_eq!(
        parts.iter().map(ShardCommit::shard).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    // Every shard at once, while the store goes on applying.
    let threads: Vec<_> = parts
        .into_iter()
        .rev()
        .map(|part| std::thread::spawn(move || part.run()))
        .collect();
    for (i, op) in second.iter().enumerate() {
        let _ = store.apply((first.len() + i + 1) as u64, op);
    }
    let committed = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let done = index.finish(committed).unwrap();
    assert!(done.is_ok());
    store.finish_checkpoint(done).unwrap();
    assert_eq!(store.applied_index(), first.len() as u64);
    store.verify().unwrap();
    let ref_dir = tempfile::tempdir().unwrap();
    let never = reference(ref_dir.path(), 4, &work);
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
    drop(store);
    // What the split committed, and the WAL's rest replayed, is the state.
    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.applied_index(), first.len() as u64);
    for (i, op) in second.iter().enumerate() {
        let _ = store.apply((first.len() + i + 1) as u64, op);
    }
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
    store.verify().unwrap();
}

#[test]
fn a_split_checkpoint_missing_a_part_keeps_the_trees_until_reopen() {
    let work = ops(400);
    let dir = tempfile::tempdir().unwrap();
    let mut store = reference(dir.path(), 2, &work);
    let (mut parts, index) = store.start_checkpoint().unwrap().unwrap().split();
    let lost = parts.pop().unwrap();
    let committed = parts.into_iter().map(ShardCommit::run).collect();
    assert!(matches!(
        index.finish(committed),
        Err(MvccError::InvalidRequest(_))
    ));
    drop(lost);
    assert!(matches!(
        store.start_checkpoint(),
        Err(MvccError::CheckpointInFlight)
    ));
    drop(store);
    // Nothing was lost that the WAL does not have: reopen and replay.
    let mut store = Store::open(dir.path(), opts(2)).unwrap();
    for (i, op) in work.iter().enumerate().skip(store.applied_index() as usize) {
        let _ = store.apply(i as u64 + 1, op);
    }
    let ref_dir = tempfile::tempdir().unwrap();
    let never = reference(ref_dir.path(), 2, &work);
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
    store.verify().unwrap();
}

#[test]
fn staged_bytes_count_what_the_next_checkpoints_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), opts(2)).unwrap();
    assert_eq!(store.staged_bytes(), 0);
    store.apply(1, &put("a".into(), 1)).unwrap();
    let one = store.staged_bytes();
    assert!(one > 256, "a 256-byte value staged only {one} bytes");
    // A failed entry stages nothing.
    let missing_lease = Op::Put(PutRequest {
        key: b"b".to_vec(),
        value: vec![0; 1000],
        lease: 42,
        ..Default::default()
    });
    assert!(store.apply(2, &missing_lease).is_err());
    assert_eq!(store.staged_bytes(), one);
    let task = store.start_checkpoint().unwrap().unwrap();
    store.apply(3, &put("c".into(), 3)).unwrap();
    let both = store.staged_bytes();
    assert!(both > one, "frozen and pending both count");
    // A failed commit keeps everything staged; a good one clears what it
    // committed.
    let mut failing = task;
    failing.fail_before_index_commit();
    assert!(store.finish_checkpoint(failing.run()).is_err());
    assert_eq!(store.staged_bytes(), both);
    drop(store);
    let mut store = Store::open(dir.path(), opts(2)).unwrap();
    for (i, op) in [(1, put("a".into(), 1)), (3, put("c".into(), 3))] {
        store.apply(i, &op).unwrap();
    }
    let before = store.db_size();
    store.checkpoint().unwrap();
    assert_eq!(store.staged_bytes(), 0);
    assert!(store.db_size() > before);
}

/// Member metadata is durable with the checkpoint after it was staged
/// (with that checkpoint's applied index), survives a reopen, and stays out
/// of the logical state: hashes and ranges do not see it.
#[test]
fn member_meta_is_durable_with_the_next_checkpoint_and_outside_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), opts(2)).unwrap();
    for (i, op) in ops(20).iter().enumerate() {
        let _ = store.apply(i as u64 + 1, op);
    }
    let hash_before = store.hash().unwrap();
    store.stage_member_meta(b"term 3, voters [1]".to_vec());
    assert_eq!(
        store.durable_member_meta().unwrap(),
        None,
        "not before a checkpoint"
    );
    assert_eq!(store.hash().unwrap(), hash_before);
    store.skip(22);
    store.checkpoint().unwrap();
    assert_eq!(store.applied_index(), 22, "skip counts as applied");
    assert_eq!(
        store.durable_member_meta().unwrap().as_deref(),
        Some(&b"term 3, voters [1]"[..])
    );
    let range = all(&store, 0);
    drop(store);
    let store = Store::open(dir.path(), opts(2)).unwrap();
    assert_eq!(store.applied_index(), 22);
    assert_eq!(
        store.durable_member_meta().unwrap().as_deref(),
        Some(&b"term 3, voters [1]"[..])
    );
    assert_eq!(store.hash().unwrap(), hash_before);
    assert_eq!(all(&store, 0), range);
}

/// A read view writes the same snapshot stream as its store did when the
/// view was taken, whatever the store applies and checkpoints afterwards,
/// and a store restored from it has the view's state and applied index.
#[test]
fn a_view_writes_its_stores_snapshot_of_that_moment() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a"), opts(2)).unwrap();
    let all_ops = ops(120);
    for (i, op) in all_ops[..80].iter().enumerate() {
        let _ = store.apply(i as u64 + 1, op);
    }
    store.checkpoint().unwrap();
    for (i, op) in all_ops[80..100].iter().enumerate() {
        let _ = store.apply(i as u64 + 81, op);
    }
    let mut from_store = Vec::new();
    store.write_snapshot(&mut from_store).unwrap();
    let view = store.read_view();
    let range = all(&store, 0);
    for (i, op) in all_ops[100..].iter().enumerate() {
        let _ = store.apply(i as u64 + 101, op);
    }
    store.checkpoint().unwrap();
    let mut from_view = Vec::new();
    view.write_snapshot(&mut from_view).unwrap();
    assert_eq!(from_view, from_store);
    let restored = dir.path().join("b");
    Store::restore_snapshot(&mut from_view.as_slice(), &restored).unwrap();
    let back = Store::open(&restored, opts(2)).unwrap();
    assert_eq!(back.applied_index(), 100);
    assert_eq!(all(&back, 0), range);
}
