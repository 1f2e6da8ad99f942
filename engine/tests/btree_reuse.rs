//! Page reuse: the file stays near its live size under overwrites, a pinned
//! snapshot keeps its pages, and a commit torn at any page leaves the last
//! durable commit and the other meta slot's commit intact.
//!
//! Mutations these catch (checked by hand, see docs/benchmarks/space.md):
//! reusing pages a live snapshot reads (`pinned_snapshot_keeps_its_pages`),
//! and reusing pages freed by the previous commit, which the other meta
//! slot's commit still references (`torn_commits_leave_both_slots_intact`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use basalt_engine::btree::{Snapshot, Tree, TreeOptions};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const SMALL: TreeOptions = TreeOptions { page_size: 1024 };

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:08}").into_bytes()
}

fn value(i: u32, round: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize * 31 + round as usize * 7 + j) as u8)
        .collect()
}

fn contents(snap: &Snapshot) -> Model {
    snap.range(Bound::Unbounded, Bound::Unbounded)
        .collect::<Result<_, _>>()
        .expect("scan")
}

/// xorshift64*: enough randomness for choosing keys and torn pages, and a
/// failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn overwrite(tree: &mut Tree, model: &mut Model, keys: std::ops::Range<u32>, round: u32) {
    let mut b = tree.write();
    for i in keys {
        let v = value(i, round, 60);
        b.insert(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    b.commit(u64::from(round)).unwrap();
}

#[test]
fn steady_overwrites_keep_the_file_near_its_live_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::open(&dir.path().join("t"), SMALL).unwrap();
    let mut model = Model::new();
    // The same 1,000 keys overwritten 100 times, one batch each.
    for round in 1..=100 {
        overwrite(&mut tree, &mut model, 0..1000, round);
        let (used, live) = (tree.committed_bytes(), tree.live_bytes());
        assert!(
            used <= 3 * live,
            "round {round}: {used} bytes in use for {live} live"
        );
    }
    // Without reuse this file would be ~100x its live size.
    assert!(tree.file_bytes() <= 4 * tree.live_bytes() + (1 << 20));
    assert_eq!(contents(&tree.read()), model);
    tree.check_integrity().unwrap();

    // One key per commit, as etcd clients write: 200 keys, 25 times each.
    let high_water = tree.committed_bytes();
    let mut round = 100;
    for _ in 0..25 {
        for i in 0..200 {
            round += 1;
            overwrite(&mut tree, &mut model, i..i + 1, round);
        }
    }
    let (used, live) = (tree.committed_bytes(), tree.live_bytes());
    assert!(
        used <= high_water + live / 4,
        "{used} bytes in use after single-key commits, {high_water} before, {live} live"
    );
    assert_eq!(contents(&tree.read()), model);
    tree.check_integrity().unwrap();
}

#[test]
fn pinned_snapshot_keeps_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut tree = Tree::open(&path, SMALL).unwrap();
    let mut model = Model::new();
    for round in 1..=5 {
        overwrite(&mut tree, &mut model, 0..500, round);
    }
    let pinned = tree.read();
    let pinned_model = model.clone();
    let used_before = tree.committed_bytes();
    // Every page the snapshot reads is freed by the next commit and would
    // be reusable two commits later, were it not pinned.
    for round in 6..=30 {
        overwrite(&mut tree, &mut model, 0..500, round);
        assert_eq!(contents(&pinned), pinned_model, "round {round}");
    }
    assert!(
        tree.committed_bytes() > used_before,
        "nothing was held back"
    );
    // A snapshot of an earlier open of the same file pins it too.
    drop(tree);
    let mut tree = Tree::open(&path, SMALL).unwrap();
    for round in 31..=40 {
        overwrite(&mut tree, &mut model, 0..500, round);
        assert_eq!(contents(&pinned), pinned_model, "round {round}");
    }
    assert_eq!(
        pinned.count(Bound::Unbounded, Bound::Unbounded).unwrap(),
        500
    );
    // Once it is gone, the space is reused: the file stops growing.
    drop(pinned);
    for round in 41..=45 {
        overwrite(&mut tree, &mut model, 0..500, round);
    }
    let settled = tree.committed_bytes();
    for round in 46..=80 {
        overwrite(&mut tree, &mut model, 0..500, round);
    }
    assert_eq!(tree.committed_bytes(), settled);
    assert_eq!(contents(&tree.read()), model);
    tree.check_integrity().unwrap();
}

/// A crash during commit `n + 1` leaves on disk, for every page, either its
/// content before the commit or after it: any subset of the commit's writes
/// may have landed. Each such image must open at commit `n` or `n + 1` with
/// exactly that commit's contents, and the older slot (commit `n - 1` before
/// the commit, `n` after) must still open with `open_at_most`.
#[test]
fn torn_commits_leave_both_slots_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let torn = dir.path().join("torn");
    let mut tree = Tree::open(&path, SMALL).unwrap();
    let mut rng = Rng(0x05EE_D0F5_BACE);
    let mut models = vec![Model::new()];
    let mut model = Model::new();
    for round in 1..=120u32 {
        let before = std::fs::read(&path).unwrap();
        let mut b = tree.write();
        for _ in 0..1 + rng.below(40) {
            let i = rng.below(600) as u32;
            if rng.below(4) == 0 {
                b.remove(&key(i)).unwrap();
                model.remove(&key(i));
            } else {
                let v = value(i, round, 20 + rng.below(200) as usize);
                b.insert(&key(i), &v).unwrap();
                model.insert(key(i), v);
            }
        }
        b.commit(u64::from(round)).unwrap();
        models.push(model.clone());
        let after = std::fs::read(&path).unwrap();
        if round < 3 {
            continue;
        }
        assert!(
            tree.free_bytes() > 0 || round < 8,
            "round {round}: no reuse"
        );
        let n = u64::from(round) - 1;
        for trial in 0..6 {
            let image = tear(&before, &after, &mut rng, trial);
            std::fs::write(&torn, &image).unwrap();
            let t = Tree::open(&torn, SMALL).expect("torn image opens");
            let at = t.user_meta();
            assert!(at == n || at == n + 1, "round {round}: opened at {at}");
            assert_eq!(contents(&t.read()), models[at as usize], "round {round}");
            t.check_integrity().unwrap();
            drop(t);
            // The other slot: n - 1 if the new meta did not land, n if it
            // did and verified (if it did and did not, it is the torn one).
            let ps = SMALL.page_size as usize;
            if at == n && image[..2 * ps] != before[..2 * ps] {
                continue;
            }
            let older = Tree::open_at_most(&torn, SMALL, at - 1).expect("older slot opens");
            assert_eq!(older.user_meta(), at - 1, "round {round}");
            assert_eq!(
                contents(&older.read()),
                models[at as usize - 1],
                "round {round}"
            );
            older.check_integrity().unwrap();
        }
    }
    tree.check_integrity().unwrap();
    assert!(
        tree.committed_bytes() <= 4 * tree.live_bytes(),
        "{} in use for {} live",
        tree.committed_bytes(),
        tree.live_bytes()
    );
}

/// Page by page, `before` or `after` (trial 0: every changed node page
/// landed but the meta did not; trial 1: the meta landed, one changed node
/// page did not; later trials: at random).
fn tear(before: &[u8], after: &[u8], rng: &mut Rng, trial: u32) -> Vec<u8> {
    let ps = SMALL.page_size as usize;
    let mut image = after.to_vec();
    let page_of = |b: &[u8], p: usize| -> Vec<u8> {
        let mut out = vec![0u8; ps];
        if p * ps < b.len() {
            let end = (p * ps + ps).min(b.len());
            out[..end - p * ps].copy_from_slice(&b[p * ps..end]);
        }
        out
    };
    let changed: Vec<usize> = (0..after.len() / ps)
        .filter(|&p| page_of(before, p) != page_of(after, p))
        .collect();
    let meta = changed.iter().copied().filter(|&p| p < 2);
    let nodes: Vec<usize> = changed.iter().copied().filter(|&p| p >= 2).collect();
    let old = |image: &mut Vec<u8>, p: usize| {
        image[p * ps..p * ps + ps].copy_from_slice(&page_of(before, p));
    };
    match trial {
        0 => meta.for_each(|p| old(&mut image, p)),
        1 => {
            if !nodes.is_empty() {
                old(&mut image, nodes[rng.below(nodes.len() as u64) as usize]);
            }
        }
        _ => {
            for &p in &changed {
                if rng.below(2) == 0 {
                    old(&mut image, p);
                }
            }
        }
    }
    image
}

#[test]
fn reopen_rebuilds_the_free_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("t");
    let mut tree = Tree::open(path, SMALL).unwrap();
    let mut model = Model::new();
    for round in 1..=20 {
        overwrite(&mut tree, &mut model, 0..800, round);
    }
    let used = tree.committed_bytes();
    drop(tree);
    let mut tree = Tree::open(path, SMALL).unwrap();
    assert!(tree.free_bytes() > 0);
    assert!(tree.free_bytes() <= tree.reclaimable_bytes());
    for round in 21..=40 {
        overwrite(&mut tree, &mut model, 0..800, round);
        if round % 5 == 0 {
            drop(tree);
            tree = Tree::open(path, SMALL).unwrap();
        }
    }
    assert!(
        tree.committed_bytes() <= used + used / 4,
        "{used} then {}",
        tree.committed_bytes()
    );
    assert_eq!(contents(&tree.read()), model);
    tree.check_integrity().unwrap();
}

/// A file written before page reuse (format version 1: every commit
/// appended, six commits of 300 keys by the code of commit 923c446, page
/// size 1 KiB) opens, reads, reuses its garbage and takes new commits.
#[test]
fn version_1_file_opens_and_reuses_its_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.tree");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/btree-v1-1k.tree");
    std::fs::copy(fixture, &path).unwrap();
    // Its older slot is a version 1 commit too.
    let older = Tree::open_at_most(&path, SMALL, 5).unwrap();
    assert_eq!((older.user_meta(), older.len()), (5, 300));
    older.check_integrity().unwrap();
    drop(older);
    let expected: Model = (0..300u32)
        .filter(|i| i % 3 != 0)
        .map(|i| {
            let k = format!("key/{i:05}").into_bytes();
            (k, format!("value {i} round 6").into_bytes())
        })
        .collect();
    let mut tree = Tree::open(&path, SMALL).unwrap();
    assert_eq!(tree.user_meta(), 6);
    assert_eq!(contents(&tree.read()), expected);
    tree.check_integrity().unwrap();
    // Five commits' worth of appended garbage is free at once.
    assert_eq!(tree.free_bytes(), tree.reclaimable_bytes());
    assert!(tree.free_bytes() > tree.live_bytes());
    let mut model = expected.clone();
    let mut used = Vec::new();
    for round in 7..=14 {
        // Values three times the fixture's: the live size triples.
        overwrite(&mut tree, &mut model, 0..300, round);
        used.push(tree.committed_bytes());
    }
    assert!(used[0] < 81920 + tree.live_bytes() / 2, "{used:?}");
    assert!(used[7] <= 3 * tree.live_bytes(), "{used:?}");
    assert_eq!(used[4], used[7], "the file stopped growing: {used:?}");
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    assert_eq!(tree.user_meta(), 14);
    assert_eq!(contents(&tree.read()), model);
    tree.check_integrity().unwrap();
    drop(tree);
    // The older slot (commit 13, version 2 now) still opens.
    let older = Tree::open_at_most(&path, SMALL, 13).unwrap();
    assert_eq!(older.user_meta(), 13);
    older.check_integrity().unwrap();
}
