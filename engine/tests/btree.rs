//! Integration tests of the copy-on-write B+tree: contents, snapshots, crash
//! recovery, corruption detection and file compaction.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::Path;

use basalt_engine::btree::{BtreeError, Snapshot, Tree, TreeOptions};

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

const SMALL: TreeOptions = TreeOptions { page_size: 1024 };

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:08}").into_bytes()
}

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn contents(snap: &Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
    snap.range(Bound::Unbounded, Bound::Unbounded)
        .collect::<Result<_, _>>()
        .expect("scan")
}

fn model_contents(m: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn fill(tree: &mut Tree, range: std::ops::Range<u32>, vlen: usize, meta: u64) {
    let mut b = tree.write();
    for i in range {
        b.insert(&key(i), &value(i, vlen)).expect("insert");
    }
    b.commit(meta).expect("commit");
}

#[test]
fn deep_tree_reads_ranges_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    let mut model = BTreeMap::new();
    // Several batches, interleaved (even keys first) so nodes split mid-tree.
    for round in 0..4u32 {
        let mut b = tree.write();
        for i in (0..3000u32).filter(|i| i % 4 == round) {
            assert!(!b.insert(&key(i), &value(i, 20)).unwrap());
            model.insert(key(i), value(i, 20));
        }
        b.commit(u64::from(round)).unwrap();
    }
    tree.check_integrity().unwrap();
    let snap = tree.read();
    assert_eq!(snap.len(), 3000);
    assert_eq!(contents(&snap), model_contents(&model));
    assert_eq!(snap.get(&key(1234)).unwrap(), Some(value(1234, 20)));
    assert_eq!(snap.get(b"key/x").unwrap(), None);
    let (lo, hi) = (key(100), key(2500));
    let bounds = [
        (
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
        ),
        (
            Bound::Excluded(lo.as_slice()),
            Bound::Included(hi.as_slice()),
        ),
        (Bound::Unbounded, Bound::Excluded(hi.as_slice())),
        (Bound::Excluded(lo.as_slice()), Bound::Unbounded),
        (
            Bound::Included(hi.as_slice()),
            Bound::Excluded(lo.as_slice()),
        ),
    ];
    for (s, e) in bounds {
        let inverted = matches!((s, e), (Bound::Included(a), Bound::Excluded(b)) if a > b);
        let want: Vec<_> = if inverted {
            Vec::new() // BTreeMap panics on an inverted range; the tree yields nothing
        } else {
            model
                .range::<[u8], _>((s, e))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let got: Vec<_> = snap.range(s, e).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, want);
        let mut got_rev: Vec<_> = snap.range_rev(s, e).collect::<Result<_, _>>().unwrap();
        got_rev.reverse();
        assert_eq!(got_rev, want);
        assert_eq!(snap.count(s, e).unwrap(), want.len() as u64);
    }
}

#[test]
fn removes_shrink_the_tree_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    fill(&mut tree, 0..2000, 30, 1);
    let full_live = tree.live_bytes();
    let mut b = tree.write();
    assert!(!b.remove(b"absent").unwrap());
    for i in (0..2000).filter(|i| i % 10 != 0) {
        assert!(b.remove(&key(i)).unwrap());
    }
    assert_eq!(b.get(&key(10)).unwrap(), Some(value(10, 30)));
    assert_eq!(b.get(&key(11)).unwrap(), None);
    b.commit(2).unwrap();
    tree.check_integrity().unwrap();
    assert_eq!(tree.len(), 200);
    // 10% of the keys remain; merging keeps nodes at least a quarter full.
    let live = tree.live_bytes();
    assert!(
        live < full_live * 4 / 10,
        "underfull nodes were merged: {live} of {full_live}"
    );
    let mut b = tree.write();
    for i in (0..2000).filter(|i| i % 10 == 0) {
        assert!(b.remove(&key(i)).unwrap());
    }
    b.commit(3).unwrap();
    tree.check_integrity().unwrap();
    assert!(tree.is_empty());
    assert_eq!(tree.live_bytes(), 2 * 1024);
    assert_eq!(contents(&tree.read()), vec![]);
}

#[test]
fn values_larger_than_a_page_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let big = value(7, 1_572_864 + 100); // etcd's 1.5 MiB request limit and a bit
    {
        let mut tree = Tree::open(&path, TreeOptions::default()).unwrap();
        let mut b = tree.write();
        b.insert(b"big", &big).unwrap();
        for i in 0..100 {
            b.insert(&key(i), &value(i, 5000)).unwrap();
        }
        b.commit(5).unwrap();
        tree.check_integrity().unwrap();
    }
    let tree = Tree::open(&path, TreeOptions::default()).unwrap();
    assert_eq!(tree.user_meta(), 5);
    let snap = tree.read();
    assert_eq!(snap.get(b"big").unwrap(), Some(big));
    assert_eq!(snap.get(&key(42)).unwrap(), Some(value(42, 5000)));
    assert_eq!(snap.len(), 101);
}

#[test]
fn snapshot_is_isolated_from_later_commits_and_growth() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    fill(&mut tree, 0..500, 10, 1);
    let old = tree.read();
    let old_contents = contents(&old);
    // Overwrite, delete and grow the file well past its first map.
    let mut b = tree.write();
    for i in 0..250 {
        b.remove(&key(i)).unwrap();
    }
    b.commit(2).unwrap();
    fill(&mut tree, 0..20_000, 100, 3);
    assert_eq!(contents(&old), old_contents);
    assert_eq!(old.count(Bound::Unbounded, Bound::Unbounded).unwrap(), 500);
    assert_eq!(old.user_meta(), 1);
    assert_eq!(tree.read().len(), 20_000);
    // And across a compaction that replaces the file.
    tree.compact_file().unwrap();
    assert_eq!(contents(&old), old_contents);
}

#[test]
fn dropped_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    fill(&mut tree, 0..100, 10, 1);
    {
        let mut b = tree.write();
        b.insert(b"zzz", b"v").unwrap();
        b.remove(&key(1)).unwrap();
    }
    assert_eq!(tree.commit_id(), 1);
    assert_eq!(tree.read().get(b"zzz").unwrap(), None);
    assert_eq!(tree.read().get(&key(1)).unwrap(), Some(value(1, 10)));
    // A commit with no changes writes only the meta (e.g. to advance user_meta).
    let before = tree.committed_bytes();
    tree.write().commit(9).unwrap();
    assert_eq!(tree.committed_bytes(), before);
    assert_eq!(tree.user_meta(), 9);
}

/// Two commits, A then B; returns (bytes after A, bytes after B, A's contents).
fn two_commits(path: &Path) -> (u64, u64, Entries) {
    let mut tree = Tree::open(path, SMALL).unwrap();
    fill(&mut tree, 0..1000, 40, 10);
    let a_end = tree.committed_bytes();
    let a = contents(&tree.read());
    fill(&mut tree, 500..1500, 50, 11);
    let b_end = tree.committed_bytes();
    assert!(b_end > a_end + 8 * 1024);
    (a_end, b_end, a)
}

fn reopen_state(path: &Path) -> (u64, Entries) {
    let tree = Tree::open(path, SMALL).expect("reopen");
    tree.check_integrity().expect("integrity after reopen");
    (tree.user_meta(), contents(&tree.read()))
}

#[test]
fn truncated_commit_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let (a_end, b_end, a) = two_commits(&path);
    for cut in [a_end + 1, (a_end + b_end) / 2, b_end - 1] {
        let copy = dir.path().join(format!("cut{cut}"));
        std::fs::copy(&path, &copy).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert_eq!(reopen_state(&copy), (10, a.clone()), "cut at {cut}");
    }
    // Uncut, commit B is what opens.
    assert_eq!(reopen_state(&path).0, 11);
}

#[test]
fn lost_unsynced_pages_fall_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let (a_end, b_end, a) = two_commits(&path);
    // A crash before B's fdatasync completes may lose any of its pages: here
    // one page in the middle reads back as zeros (the file was preallocated).
    let page = (a_end + b_end) / 2 / 1024 * 1024;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 1024], page).unwrap();
    drop(f);
    assert_eq!(reopen_state(&path), (10, a.clone()));
    // The next commit after the fallback reuses the space and is durable.
    let mut tree = Tree::open(&path, SMALL).unwrap();
    assert_eq!(tree.commit_id(), 1, "fell back to commit A");
    fill(&mut tree, 2000..2100, 10, 12);
    drop(tree);
    let (meta, got) = reopen_state(&path);
    assert_eq!(meta, 12);
    assert_eq!(got.len(), a.len() + 100);
}

#[test]
fn corrupt_newest_meta_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let (_, _, a) = two_commits(&path);
    let tree = Tree::open(&path, SMALL).unwrap();
    let slot = tree.commit_id() % 2;
    drop(tree);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, slot * 1024 + 30).unwrap();
    f.write_all_at(&[byte[0] ^ 0x04], slot * 1024 + 30).unwrap();
    drop(f);
    assert_eq!(reopen_state(&path), (10, a));
}

#[test]
fn both_metas_corrupt_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    two_commits(&path);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xff; 16], 20).unwrap();
    f.write_all_at(&[0xff; 16], 1024 + 20).unwrap();
    drop(f);
    let err = Tree::open(&path, SMALL).err().expect("must not open");
    assert!(matches!(err, BtreeError::NoValidMeta { .. }), "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[test]
fn flipped_bit_in_a_page_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    {
        let mut tree = Tree::open(&path, SMALL).unwrap();
        fill(&mut tree, 0..2000, 40, 1);
        // A later small commit, so the damaged page is not in the newest commit.
        fill(&mut tree, 5000..5001, 1, 2);
    }
    // Flip one bit in every page of the first commit in turn? One is enough:
    // page 5 is a leaf or branch written by commit 1.
    let page = 5u64;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, page * 1024 + 700).unwrap();
    f.write_all_at(&[byte[0] ^ 0x20], page * 1024 + 700)
        .unwrap();
    drop(f);
    let tree = Tree::open(&path, SMALL).unwrap();
    let err = tree.check_integrity().expect_err("damage detected");
    match &err {
        BtreeError::CorruptPage {
            page: p, reason, ..
        } => {
            assert_eq!(*p, page);
            assert!(reason.contains("checksum mismatch"), "{reason}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("page 5 is corrupt"), "{err}");
    // A full scan hits it too, as an error, not a panic or wrong data.
    let scan: Result<Vec<_>, _> = tree
        .read()
        .range(Bound::Unbounded, Bound::Unbounded)
        .collect();
    assert!(matches!(scan, Err(BtreeError::CorruptPage { page: 5, .. })));
}

#[test]
fn compact_file_shrinks_and_keeps_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut tree = Tree::open(&path, SMALL).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..40u32 {
        let mut b = tree.write();
        for i in 0..200u32 {
            let k = key((i * 7919 + round * 13) % 3000);
            if (i + round) % 3 == 0 {
                b.remove(&k).unwrap();
                model.remove(&k);
            } else {
                b.insert(&k, &value(i + round, 60)).unwrap();
                model.insert(k, value(i + round, 60));
            }
        }
        b.commit(u64::from(round)).unwrap();
    }
    let before = tree.committed_bytes();
    assert!(
        tree.live_bytes() < before / 2,
        "mostly garbage before compaction"
    );
    tree.compact_file().unwrap();
    tree.check_integrity().unwrap();
    assert!(tree.committed_bytes() <= tree.live_bytes());
    assert!(
        tree.file_bytes() < before,
        "{} !< {before}",
        tree.file_bytes()
    );
    assert_eq!(contents(&tree.read()), model_contents(&model));
    assert_eq!(tree.user_meta(), 39);
    // The compacted file takes further commits and reopens.
    fill(&mut tree, 10_000..10_010, 5, 40);
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    tree.check_integrity().unwrap();
    assert_eq!(tree.len(), model.len() as u64 + 10);
    assert!(!dir.path().join("t.compact").exists());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut tree = Tree::open(&path, SMALL).unwrap();
    let mut b = tree.write();
    assert!(matches!(
        b.insert(b"", b"v"),
        Err(BtreeError::KeySize { .. })
    ));
    let huge = vec![0u8; basalt_engine::btree::MAX_VALUE_BYTES + 1];
    assert!(matches!(
        b.insert(b"k", &huge),
        Err(BtreeError::ValueTooLarge { .. })
    ));
    b.commit(0).unwrap();
    drop(tree);
    let err = Tree::open(&path, TreeOptions::default())
        .err()
        .expect("page size differs");
    assert!(matches!(
        err,
        BtreeError::PageSizeMismatch {
            expected: 4096,
            found: 1024,
            ..
        }
    ));
    let err = Tree::open(&path, TreeOptions { page_size: 3000 })
        .err()
        .expect("bad options");
    assert!(matches!(err, BtreeError::InvalidOptions(_)));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let err = Tree::open(&junk, SMALL).err().expect("not a tree file");
    assert!(matches!(err, BtreeError::NoValidMeta { .. }), "{err}");
}

#[test]
fn one_large_batch_in_random_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    let mut model = BTreeMap::new();
    let mut b = tree.write();
    // A permutation of 0..20_000 (7919 is prime to 20_000): changed nodes
    // grow past the in-memory split threshold many times within the batch.
    for i in 0..20_000u32 {
        let k = key((i * 7919) % 20_000);
        b.insert(&k, &value(i, 8)).unwrap();
        model.insert(k, value(i, 8));
    }
    for i in (0..20_000u32).step_by(3) {
        assert!(b.remove(&key(i)).unwrap());
        model.remove(&key(i));
    }
    assert_eq!(b.get(&key(1)).unwrap(), model.get(&key(1)).cloned());
    b.commit(1).unwrap();
    tree.check_integrity().unwrap();
    assert_eq!(contents(&tree.read()), model_contents(&model));
}

#[test]
fn online_compaction_keeps_commits_made_during_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut tree = Tree::open(&path, SMALL).unwrap();
    let mut model = BTreeMap::new();
    let write = |tree: &mut Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, round: u32| {
        let mut b = tree.write();
        for i in 0..300u32 {
            let k = key((i * 31 + round * 7) % 2000);
            if i % 4 == 0 {
                b.remove(&k).unwrap();
                model.remove(&k);
            } else {
                b.insert(&k, &value(round, 30)).unwrap();
                model.insert(k, value(round, 30));
            }
        }
        b.commit(u64::from(round)).unwrap();
    };
    for round in 0..20 {
        write(&mut tree, &mut model, round);
    }
    let job = tree.begin_compaction().unwrap();
    let copier = std::thread::spawn(move || job.build());
    for round in 20..25 {
        write(&mut tree, &mut model, round);
    }
    let mut built = copier.join().unwrap().unwrap();
    let backlog = tree.compaction_backlog();
    assert!(backlog > 100);
    // Bounded steps first, as a writer would between its own commits.
    assert_eq!(tree.catch_up_at_most(&mut built, 100).unwrap(), 100);
    assert_eq!(tree.compaction_backlog(), backlog - 100);
    write(&mut tree, &mut model, 25);
    assert!(tree.catch_up(&mut built).unwrap() > 0);
    assert_eq!(tree.compaction_backlog(), 0);
    write(&mut tree, &mut model, 26);
    let old = tree.read();
    let before = (
        tree.commit_id(),
        tree.committed_bytes(),
        tree.reclaimable_bytes(),
    );
    tree.finish_compaction(built).unwrap();
    assert!(tree.commit_id() > before.0);
    // Page reuse keeps the old file near its live size already; the copy
    // still drops what is free in it.
    assert!(tree.committed_bytes() < before.1, "{before:?}");
    assert!(tree.reclaimable_bytes() < before.2, "{before:?}");
    assert_eq!(tree.user_meta(), 26);
    tree.check_integrity().unwrap();
    assert_eq!(contents(&tree.read()), model_contents(&model));
    assert_eq!(contents(&old), model_contents(&model));
    write(&mut tree, &mut model, 27);
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    tree.check_integrity().unwrap();
    assert_eq!(contents(&tree.read()), model_contents(&model));
    assert_eq!(tree.user_meta(), 27);
}

#[test]
fn superseded_compaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    fill(&mut tree, 0..100, 10, 1);
    let first = tree.begin_compaction().unwrap().build().unwrap();
    let second = tree.begin_compaction().unwrap();
    let err = tree.finish_compaction(first).expect_err("superseded");
    assert!(
        matches!(err, BtreeError::CompactionAbandoned { .. }),
        "{err}"
    );
    // The tree is unharmed and a fresh compaction still works.
    drop(second);
    tree.compact_file().unwrap();
    assert_eq!(tree.len(), 100);
    tree.check_integrity().unwrap();
}

#[test]
fn file_cut_before_its_first_growth_opens_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    drop(Tree::open(&path, SMALL).unwrap());
    // A crash while creating: only the first meta slot reached the disk.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let mut tree = Tree::open(&path, SMALL).unwrap();
    assert!(tree.is_empty());
    fill(&mut tree, 0..10, 5, 1);
    drop(tree);
    assert_eq!(reopen_state(&path).1.len(), 10);
}

#[test]
fn snapshots_and_copies_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Snapshot>();
    send::<Tree>();
    send::<basalt_engine::btree::CompactionJob>();
    send::<basalt_engine::btree::CompactedFile>();
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    fill(&mut tree, 0..1000, 10, 1);
    let snap = tree.read();
    let reader = std::thread::spawn(move || snap.count(Bound::Unbounded, Bound::Unbounded));
    fill(&mut tree, 1000..2000, 10, 2);
    assert_eq!(reader.join().unwrap().unwrap(), 1000);
}
