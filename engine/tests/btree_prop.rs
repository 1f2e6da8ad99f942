//! Property test: the B+tree against `std::collections::BTreeMap` over random
//! inserts, removes, commits, aborted batches, reopens, compactions, range and
//! count queries, and old snapshots kept (across reopens) and dropped, while
//! commits reuse freed pages. More cases: `BTREE_PROPTEST_CASES=5000`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use basalt_engine::btree::{CompactedFile, Snapshot, Tree, TreeOptions};
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const OPTS: TreeOptions = TreeOptions { page_size: 1024 };

#[derive(Debug, Clone)]
enum Op {
    Insert {
        key: u16,
        len: u16,
        fill: u8,
    },
    Remove {
        key: u16,
    },
    Commit,
    Abort,
    Reopen,
    Compact,
    /// Online compaction, in steps interleaved with everything else.
    BeginCompaction,
    CatchUp,
    FinishCompaction,
    Query {
        a: u16,
        b: u16,
        kinds: u8,
    },
    KeepSnapshot,
    /// Drops one kept snapshot: its pages become reusable.
    DropSnapshot {
        which: u8,
    },
}

/// Distinct ids give distinct keys of varied lengths (2..=82 bytes), sorted
/// by id on their first two bytes.
fn key(id: u16) -> Vec<u8> {
    let mut k = id.to_be_bytes().to_vec();
    k.resize(2 + usize::from(id % 5) * 20, id as u8);
    k
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u16..400;
    prop_oneof![
        30 => (id.clone(), prop_oneof![9 => 0u16..120, 1 => 900u16..3000], any::<u8>())
            .prop_map(|(key, len, fill)| Op::Insert { key, len, fill }),
        12 => id.clone().prop_map(|key| Op::Remove { key }),
        6 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        1 => Just(Op::BeginCompaction),
        1 => Just(Op::CatchUp),
        1 => Just(Op::FinishCompaction),
        4 => (id.clone(), id, any::<u8>()).prop_map(|(a, b, kinds)| Op::Query { a, b, kinds }),
        1 => Just(Op::KeepSnapshot),
        1 => any::<u8>().prop_map(|which| Op::DropSnapshot { which }),
    ]
}

struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    tree: Tree,
    committed: Model,
    /// Writes of the open batch, replayed on commit (a batch borrows the tree).
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    commits: u64,
    snapshots: Vec<(Snapshot, Model)>,
    compacted: Option<CompactedFile>,
}

fn all(snap: &Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
    snap.range(Bound::Unbounded, Bound::Unbounded)
        .collect::<Result<_, _>>()
        .expect("scan")
}

fn listed(m: &Model) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn bound(k: &[u8], kind: u8) -> Bound<&[u8]> {
    match kind % 3 {
        0 => Bound::Included(k),
        1 => Bound::Excluded(k),
        _ => Bound::Unbounded,
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prop.tree");
        let tree = Tree::open(&path, OPTS).unwrap();
        Harness {
            _dir: dir,
            path,
            tree,
            committed: Model::new(),
            pending: Vec::new(),
            commits: 0,
            snapshots: Vec::new(),
            compacted: None,
        }
    }

    fn check_current(&self) {
        self.tree.check_integrity().expect("integrity");
        let snap = self.tree.read();
        assert_eq!(snap.len(), self.committed.len() as u64);
        assert_eq!(all(&snap), listed(&self.committed));
        assert_eq!(self.tree.user_meta(), self.commits);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Insert { key: id, len, fill } => {
                let v = vec![fill; usize::from(len)];
                self.pending.push((key(id), Some(v)));
            }
            Op::Remove { key: id } => self.pending.push((key(id), None)),
            Op::Commit => self.commit(),
            Op::Abort => {
                let mut batch = self.tree.write();
                for (k, v) in self.pending.drain(..) {
                    match v {
                        Some(v) => batch.insert(&k, &v).map(|_| ()),
                        None => batch.remove(&k).map(|_| ()),
                    }
                    .unwrap();
                }
                drop(batch);
                self.check_current();
            }
            Op::Reopen => {
                self.pending.clear();
                self.compacted = None;
                self.tree = Tree::open(&self.path, OPTS).expect("reopen");
                self.check_current();
            }
            Op::BeginCompaction => {
                // The copy may run on any thread; building it right away is
                // the same as building it later, since it reads a snapshot.
                let job = self.tree.begin_compaction().expect("begin");
                let built = std::thread::spawn(move || job.build()).join().unwrap();
                self.compacted = Some(built.expect("build"));
            }
            Op::CatchUp => {
                if let Some(c) = &mut self.compacted {
                    // Small bounded steps; the switch copies whatever is left.
                    let before = self.tree.compaction_backlog();
                    let copied = self.tree.catch_up_at_most(c, 5).expect("catch up");
                    assert_eq!(copied, before.min(5));
                    assert_eq!(self.tree.compaction_backlog(), before - copied);
                }
            }
            Op::FinishCompaction => {
                if let Some(c) = self.compacted.take() {
                    let before = self.tree.commit_id();
                    self.tree.finish_compaction(c).expect("finish");
                    assert!(self.tree.commit_id() > before);
                    self.check_current();
                }
            }
            Op::Compact => {
                // Supersedes an online compaction under way.
                self.compacted = None;
                self.tree.compact_file().expect("compact");
                self.check_current();
                assert!(self.tree.committed_bytes() <= self.tree.live_bytes());
            }
            Op::Query { a, b, kinds } => self.query(&key(a), &key(b), kinds),
            Op::KeepSnapshot => {
                if self.snapshots.len() == 3 {
                    self.snapshots.remove(0);
                }
                self.snapshots
                    .push((self.tree.read(), self.committed.clone()));
            }
            Op::DropSnapshot { which } => {
                if !self.snapshots.is_empty() {
                    self.snapshots
                        .remove(usize::from(which) % self.snapshots.len());
                }
            }
        }
    }

    fn commit(&mut self) {
        let mut model = self.committed.clone();
        let mut batch = self.tree.write();
        for (k, v) in self.pending.drain(..) {
            match v {
                Some(v) => {
                    let existed = batch.insert(&k, &v).unwrap();
                    assert_eq!(existed, model.insert(k.clone(), v).is_some());
                }
                None => {
                    let existed = batch.remove(&k).unwrap();
                    assert_eq!(existed, model.remove(&k).is_some());
                }
            }
            assert_eq!(batch.get(&k).unwrap().as_ref(), model.get(&k));
        }
        self.commits += 1;
        batch.commit(self.commits).unwrap();
        self.committed = model;
        self.check_current();
    }

    fn query(&self, a: &[u8], b: &[u8], kinds: u8) {
        let snap = self.tree.read();
        let (s, e) = (bound(a, kinds), bound(b, kinds / 3));
        let inverted = match (s, e) {
            (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
                x > y || (x == y && !matches!((s, e), (Bound::Included(_), Bound::Included(_))))
            }
            _ => false,
        };
        let want: Vec<_> = if inverted {
            Vec::new()
        } else {
            self.committed
                .range::<[u8], _>((s, e))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let got: Vec<_> = snap.range(s, e).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, want);
        let mut rev: Vec<_> = snap.range_rev(s, e).collect::<Result<_, _>>().unwrap();
        rev.reverse();
        assert_eq!(rev, want);
        assert_eq!(snap.count(s, e).unwrap(), want.len() as u64);
        assert_eq!(snap.get(a).unwrap().as_ref(), self.committed.get(a));
    }

    fn check_snapshots(&self) {
        for (snap, model) in &self.snapshots {
            assert_eq!(all(snap), listed(model));
            assert_eq!(
                snap.count(Bound::Unbounded, Bound::Unbounded).unwrap(),
                model.len() as u64
            );
        }
    }
}

fn cases() -> u32 {
    std::env::var("BTREE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn tree_matches_btreemap(ops in prop::collection::vec(op(), 1..300)) {
        let mut h = Harness::new();
        for op in ops {
            h.apply(op);
            h.check_snapshots();
        }
        h.commit();
        h.check_snapshots();
    }
}
