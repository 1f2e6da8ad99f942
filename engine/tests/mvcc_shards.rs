//! The store split over an index tree and shard trees: crash between the
//! shard commits and the index commit, the recorded shard count, snapshot
//! streams independent of the layout, restores that die half-way, stores
//! from before sharding, and defragmentation over every tree.

use std::ops::Bound;
use std::path::Path;

use basalt_engine::btree::{Tree, TreeOptions};
use basalt_engine::mvcc::*;

fn opts(shards: usize) -> StoreOptions {
    StoreOptions {
        shards,
        ..StoreOptions::default()
    }
}

/// A deterministic mix of puts, deletes, txns, leases and a compaction over
/// enough keys that every one of 4 shards gets some.
fn ops(n: usize, seed: u64) -> Vec<Op> {
    let mut x = seed;
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("key{:02}", next(40)).into_bytes();
        let op = match next(12) {
            0 => Op::DeleteRange(DeleteRangeRequest {
                key,
                range_end: vec![],
                prev_kv: true,
            }),
            1 => Op::DeleteRange(DeleteRangeRequest {
                key: b"key1".to_vec(),
                range_end: b"key2".to_vec(),
                prev_kv: false,
            }),
            2 => Op::LeaseGrant {
                id: 1 + next(3) as i64,
                ttl: 30,
            },
            3 => Op::LeaseRevoke {
                id: 1 + next(3) as i64,
            },
            4 if i > 20 => Op::Compact {
                revision: (i / 2) as i64,
            },
            5 => Op::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::Version(0),
                    key: key.clone(),
                    range_end: vec![],
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: b"txn".to_vec(),
                    ..Default::default()
                })],
                failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key,
                    range_end: vec![],
                    prev_kv: false,
                })],
            }),
            _ => Op::Put(PutRequest {
                key,
                value: format!("v{i}").into_bytes(),
                lease: if next(4) == 0 { 1 + next(3) as i64 } else { 0 },
                ..Default::default()
            }),
        };
        out.push(op);
    }
    out
}

/// Applies `ops` with log indexes `first..`; client errors are part of it.
fn apply_all(store: &mut Store, first: u64, ops: &[Op]) {
    for (i, op) in ops.iter().enumerate() {
        let _ = store.apply(first + i as u64, op);
    }
}

fn store_with(dir: &Path, shards: usize, ops: &[Op]) -> Store {
    let mut store = Store::open(dir, opts(shards)).unwrap();
    apply_all(&mut store, 1, ops);
    store
}

fn all_keys(store: &Store) -> RangeResponse {
    store
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .unwrap()
}

fn newest_user_meta(path: &Path) -> u64 {
    Tree::open(path, TreeOptions::default())
        .unwrap()
        .user_meta()
}

#[test]
fn crash_between_shard_commits_and_index_commit_rolls_shards_back() {
    let all = ops(400, 7);
    let (early, late) = all.split_at(250);
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), 4, early);
    store.checkpoint().unwrap();
    let c1 = store.applied_index();
    assert_eq!(c1, early.len() as u64);
    let index_at_c1 = std::fs::read(dir.path().join(TREE_FILE)).unwrap();
    apply_all(&mut store, c1 + 1, late);
    store.checkpoint().unwrap();
    let c2 = store.applied_index();
    drop(store);
    // The crash: every shard commit of the last checkpoint landed, the
    // index commit did not.
    std::fs::write(dir.path().join(TREE_FILE), &index_at_c1).unwrap();
    let ahead = (0..4)
        .filter(|&i| newest_user_meta(&dir.path().join(shard_file(i))) == c2)
        .count();
    assert!(ahead >= 2, "only {ahead} shards were written after {c1}");

    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.applied_index(), c1);
    store.verify().unwrap();
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = store_with(reference_dir.path(), 4, early);
    assert_eq!(store.hash().unwrap(), reference.hash().unwrap());
    assert_eq!(all_keys(&store), all_keys(&reference));

    // Replay the WAL from C + 1: the same state as a store that never crashed.
    apply_all(&mut store, c1 + 1, late);
    let never_dir = tempfile::tempdir().unwrap();
    let never = store_with(never_dir.path(), 4, &all);
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
    assert_eq!(store.hash_kv(0).unwrap(), never.hash_kv(0).unwrap());
    store.checkpoint().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.applied_index(), c2);
    store.verify().unwrap();
    assert_eq!(store.hash().unwrap(), never.hash().unwrap());
}

#[test]
fn a_shard_two_commits_ahead_of_the_index_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let put = |v: &str| {
        Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: v.into(),
            ..Default::default()
        })
    };
    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    store.apply(1, &put("1")).unwrap();
    store.checkpoint().unwrap();
    let index_at_1 = std::fs::read(dir.path().join(TREE_FILE)).unwrap();
    store.apply(2, &put("2")).unwrap();
    store.checkpoint().unwrap();
    store.apply(3, &put("3")).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    std::fs::write(dir.path().join(TREE_FILE), &index_at_1).unwrap();
    let err = Store::open(dir.path(), opts(4))
        .err()
        .expect("must not open");
    let shard = shard_file(shard_of_user_key(b"k", 4));
    assert!(err.to_string().contains(&shard), "{err}");
}

#[test]
fn reopening_uses_the_recorded_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), 4, &ops(100, 3));
    assert_eq!((store.shards(), store.requested_shards()), (4, 4));
    store.checkpoint().unwrap();
    let hash = store.hash().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts(2)).unwrap();
    assert_eq!((store.shards(), store.requested_shards()), (4, 2));
    assert_eq!(store.hash().unwrap(), hash);
    store.verify().unwrap();
    // The count was recorded at creation, before any checkpoint.
    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path(), opts(3)).unwrap());
    assert_eq!(Store::open(fresh.path(), opts(1)).unwrap().shards(), 3);
    assert!(Store::open(tempfile::tempdir().unwrap().path(), opts(0)).is_err());
    assert!(Store::open(tempfile::tempdir().unwrap().path(), opts(MAX_SHARDS + 1)).is_err());
}

#[test]
fn a_missing_shard_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), 4, &ops(60, 9));
    store.checkpoint().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join(shard_file(2))).unwrap();
    let err = Store::open(dir.path(), opts(4))
        .err()
        .expect("must not open");
    assert!(err.to_string().contains(&shard_file(2)), "{err}");
    assert!(!dir.path().join(shard_file(2)).exists());
}

#[test]
fn snapshot_stream_is_the_same_for_any_shard_count_and_restores_into_any() {
    let all = ops(300, 11);
    let (d1, d4) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut one = store_with(d1.path(), 1, &all);
    let four = store_with(d4.path(), 4, &all);
    one.checkpoint().unwrap(); // durable or pending, the stream is the same
    let (mut s1, mut s4) = (Vec::new(), Vec::new());
    one.write_snapshot(&mut s1).unwrap();
    four.write_snapshot(&mut s4).unwrap();
    assert!(s1 == s4, "streams differ");
    assert_eq!(one.hash().unwrap(), four.hash().unwrap());
    assert_eq!(one.hash_kv(0).unwrap(), four.hash_kv(0).unwrap());

    // Into an empty dir with 4 shards, and over the 1-shard store (keeps 1).
    let target = tempfile::tempdir().unwrap();
    Store::restore_snapshot_with(&mut s1.as_slice(), target.path(), &opts(4)).unwrap();
    let restored = Store::open(target.path(), StoreOptions::default()).unwrap();
    assert_eq!(restored.shards(), 4);
    assert_eq!(restored.hash().unwrap(), four.hash().unwrap());
    assert_eq!(restored.applied_index(), all.len() as u64);
    restored.verify().unwrap();
    drop(restored);
    drop(one);
    Store::restore_snapshot(&mut s4.as_slice(), d1.path()).unwrap();
    let restored = Store::open(d1.path(), opts(4)).unwrap();
    assert_eq!(restored.shards(), 1);
    assert_eq!(restored.hash().unwrap(), four.hash().unwrap());
    drop(restored);
    // From 4 shards to 2: the shard files the new layout lacks are gone.
    Store::restore_snapshot_with(&mut s4.as_slice(), target.path(), &opts(2)).unwrap();
    assert!(!target.path().join(shard_file(2)).exists());
    assert!(!target.path().join(shard_file(3)).exists());
    let restored = Store::open(target.path(), StoreOptions::default()).unwrap();
    assert_eq!(restored.shards(), 2);
    assert_eq!(restored.hash().unwrap(), four.hash().unwrap());
}

/// Moves the files of the store in `from` into `to`'s staging directory,
/// as a restore that died after marking its files ready leaves them.
fn stage(from: &Path, to: &Path, shards: usize, ready: bool) {
    let staging = to.join("mvcc.restoring");
    std::fs::create_dir_all(&staging).unwrap();
    let names = std::iter::once(TREE_FILE.to_string()).chain((0..shards).map(shard_file));
    for name in names {
        std::fs::rename(from.join(&name), staging.join(&name)).unwrap();
    }
    if ready {
        std::fs::write(to.join("mvcc.restore-ready"), shards.to_string()).unwrap();
    }
}

#[test]
fn a_restore_that_died_is_finished_if_marked_ready_else_discarded() {
    let old_ops = ops(50, 1);
    let new_ops = ops(120, 2);
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut old = store_with(old_dir.path(), 4, &old_ops);
    old.checkpoint().unwrap();
    let old_hash = old.hash().unwrap();
    drop(old);

    let mut new = store_with(new_dir.path(), 2, &new_ops);
    new.checkpoint().unwrap();
    let new_hash = new.hash().unwrap();
    drop(new);
    stage(new_dir.path(), old_dir.path(), 2, false);
    let store = Store::open(old_dir.path(), opts(4)).unwrap();
    assert_eq!(store.hash().unwrap(), old_hash);
    assert!(!old_dir.path().join("mvcc.restoring").exists());
    drop(store);

    let mut new = store_with(new_dir.path(), 2, &new_ops);
    new.checkpoint().unwrap();
    drop(new);
    stage(new_dir.path(), old_dir.path(), 2, true);
    // Half of the renames already happened before the crash.
    std::fs::rename(
        old_dir.path().join("mvcc.restoring").join(shard_file(1)),
        old_dir.path().join(shard_file(1)),
    )
    .unwrap();
    let store = Store::open(old_dir.path(), opts(4)).unwrap();
    assert_eq!(store.shards(), 2);
    assert_eq!(store.hash().unwrap(), new_hash);
    assert_eq!(store.applied_index(), new_ops.len() as u64);
    store.verify().unwrap();
    assert!(!old_dir.path().join(shard_file(3)).exists());
    assert!(!old_dir.path().join("mvcc.restore-ready").exists());
}

#[test]
fn a_store_from_before_sharding_opens_with_versions_in_the_index() {
    let all = ops(150, 5);
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), 1, &all);
    store.checkpoint().unwrap();
    let hash = store.hash().unwrap();
    drop(store);
    // Rebuild the one-file layout: every entry in mvcc.btree, no layout
    // record, no shard file.
    let shard_path = dir.path().join(shard_file(0));
    let index_path = dir.path().join(TREE_FILE);
    let legacy_path = dir.path().join("legacy");
    let mut legacy = Tree::open(&legacy_path, TreeOptions::default()).unwrap();
    let mut batch = legacy.write();
    for path in [&shard_path, &index_path] {
        let tree = Tree::open(path, TreeOptions::default()).unwrap();
        for item in tree
            .read()
            .range(Bound::Included(&[1u8][..]), Bound::Unbounded)
        {
            let (k, v) = item.unwrap();
            batch.insert(&k, &v).unwrap();
        }
    }
    batch.commit(all.len() as u64).unwrap();
    drop(legacy);
    std::fs::rename(&legacy_path, &index_path).unwrap();
    std::fs::remove_file(&shard_path).unwrap();

    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.shards(), 0);
    assert_eq!(store.hash().unwrap(), hash);
    store.verify().unwrap();
    store
        .apply(
            all.len() as u64 + 1,
            &Op::Put(PutRequest {
                key: b"after".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
        )
        .unwrap();
    store.checkpoint().unwrap();
    assert!(!shard_path.exists());
}

#[test]
fn defragment_covers_every_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), opts(4)).unwrap();
    let mut index = 0;
    let mut put = |store: &mut Store, k: String| {
        index += 1;
        store
            .apply(
                index,
                &Op::Put(PutRequest {
                    key: k.into_bytes(),
                    value: vec![7; 300],
                    ..Default::default()
                }),
            )
            .unwrap();
    };
    // Each checkpoint leaves dead pages in the shard it wrote and in the
    // index; enough of them that every file outgrows its first 1 MiB chunk.
    // A read view held meanwhile keeps them from being reused.
    let pinned = store.read_view();
    for i in 0..600 {
        put(&mut store, format!("k{i:03}"));
        store.checkpoint().unwrap();
    }
    drop(pinned);
    let before = store.db_size();
    let shard_bytes = |dir: &Path| -> Vec<u64> {
        (0..4)
            .map(|i| std::fs::metadata(dir.join(shard_file(i))).unwrap().len())
            .collect()
    };
    let shards_before = shard_bytes(dir.path());
    let job = store.begin_defragment().unwrap();
    let mut copy = std::thread::spawn(move || job.build())
        .join()
        .unwrap()
        .unwrap();
    for i in 0..20 {
        put(&mut store, format!("during{i}"));
    }
    store.checkpoint().unwrap();
    assert!(store.defragment_backlog() >= 20 * 2);
    store.defragment_catch_up(&mut copy).unwrap();
    assert_eq!(store.defragment_backlog(), 0);
    put(&mut store, "last".into());
    let hash = store.hash().unwrap();
    store.finish_defragment(copy).unwrap();
    assert!(store.db_size() < before, "{} !< {before}", store.db_size());
    assert_eq!(store.hash().unwrap(), hash);
    let shards_after = shard_bytes(dir.path());
    for (i, (after, before)) in shards_after.iter().zip(&shards_before).enumerate() {
        assert!(after < before, "{}: {after} !< {before}", shard_file(i));
    }
    drop(store);
    let store = Store::open(dir.path(), opts(4)).unwrap();
    assert_eq!(store.hash().unwrap(), hash);
    store.verify().unwrap();
}
