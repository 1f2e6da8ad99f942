//! Online compaction: writes in every phase (before, during and after the
//! copy, between catch-ups, right after the switch), the switch that writes
//! nothing after a full catch-up, abandoning at each step, and real process
//! deaths at each step (an abort at a chosen point, and SIGKILL at random
//! moments). After every switch and every reopen the tree must equal a
//! `BTreeMap` model holding every acknowledged commit.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use basalt_engine::btree::{CompactedFile, Snapshot, Tree, TreeOptions};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const SMALL: TreeOptions = TreeOptions { page_size: 1024 };

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:08}").into_bytes()
}

fn value(round: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (round as usize * 31 + j) as u8).collect()
}

fn contents(snap: &Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
    snap.range(Bound::Unbounded, Bound::Unbounded)
        .collect::<Result<_, _>>()
        .expect("scan")
}

fn model_contents(m: &Model) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// One commit of 40 inserts and 10 removes over 3000 keys, mirrored in the
/// model; `user_meta` is the round.
fn write_round(tree: &mut Tree, model: &mut Model, round: u32) {
    let mut b = tree.write();
    for i in 0..50u32 {
        let k = key((i * 61 + round * 13) % 3000);
        if i % 5 == 0 {
            b.remove(&k).unwrap();
            model.remove(&k);
        } else {
            b.insert(&k, &value(round, 40)).unwrap();
            model.insert(k, value(round, 40));
        }
    }
    b.commit(u64::from(round)).unwrap();
}

fn assert_matches(tree: &Tree, model: &Model, when: &str) {
    tree.check_integrity()
        .unwrap_or_else(|e| panic!("{when}: {e}"));
    assert_eq!(contents(&tree.read()), model_contents(model), "{when}");
    assert_eq!(tree.len(), model.len() as u64, "{when}");
}

fn compact_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".compact");
    PathBuf::from(p)
}

/// A tree with 3000 keys and plenty of garbage (every key rewritten often).
fn garbage_tree(path: &Path, model: &mut Model) -> Tree {
    let mut tree = Tree::open(path, SMALL).unwrap();
    for round in 0..60 {
        write_round(&mut tree, model, round);
    }
    tree
}

#[test]
fn writes_in_every_phase_survive_the_switch_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut model = Model::new();
    let mut tree = garbage_tree(&path, &mut model);
    let mut round = 100;

    let job = tree.begin_compaction().unwrap();
    // Between begin and the copy's start.
    write_round(&mut tree, &mut model, round);
    round += 1;
    let copier = std::thread::spawn(move || job.build());
    // During the copy: at least a few however fast it is, and a bounded
    // number however slow (each is copied again by a catch-up).
    let mut during = 0;
    while during < 3 || (!copier.is_finished() && during < 12) {
        write_round(&mut tree, &mut model, round);
        round += 1;
        during += 1;
    }
    let mut copy = copier.join().unwrap().unwrap();
    // Bounded catch-ups between writes, until one leaves nothing behind.
    let mut steps = 0;
    loop {
        write_round(&mut tree, &mut model, round);
        round += 1;
        tree.catch_up_at_most(&mut copy, 60).unwrap();
        steps += 1;
        if tree.compaction_backlog() == 0 {
            break;
        }
        assert!(steps < 100, "the backlog does not shrink");
    }
    assert!(tree.compaction_caught_up(&copy));
    let old = tree.read();
    let old_id = tree.commit_id();
    // Pages are reused, but not those the copy's snapshot pinned meanwhile.
    let before_bytes = tree.committed_bytes();
    tree.finish_compaction(copy).unwrap();
    assert!(tree.commit_id() > old_id, "commit ids keep increasing");
    assert!(!compact_path(&path).exists());
    assert!(tree.committed_bytes() < before_bytes);
    assert_eq!(tree.user_meta(), u64::from(round - 1));
    assert_matches(&tree, &model, "right after the switch");
    // A snapshot of the replaced file still reads it, across later commits.
    assert_eq!(contents(&old), model_contents(&model));
    let before_after_writes = model.clone();
    for _ in 0..3 {
        write_round(&mut tree, &mut model, round);
        round += 1;
    }
    assert_eq!(contents(&old), model_contents(&before_after_writes));
    drop(old); // the last reference to the old file: released off-thread
    assert_matches(&tree, &model, "after writes on the new file");
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    assert_matches(&tree, &model, "after reopen");
    assert_eq!(tree.user_meta(), u64::from(round - 1));
}

#[test]
fn switch_right_after_a_full_catch_up_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut model = Model::new();
    let mut tree = garbage_tree(&path, &mut model);
    let mut copy = tree.begin_compaction().unwrap().build().unwrap();
    write_round(&mut tree, &mut model, 200);
    tree.catch_up(&mut copy).unwrap();
    assert!(tree.compaction_caught_up(&copy));
    let copied = std::fs::metadata(compact_path(&path)).unwrap();
    tree.finish_compaction(copy).unwrap();
    let switched = std::fs::metadata(&path).unwrap();
    assert_eq!(switched.len(), copied.len());
    assert_eq!(
        switched.modified().unwrap(),
        copied.modified().unwrap(),
        "the switch wrote to the file"
    );
    assert_matches(&tree, &model, "after the switch");
    write_round(&mut tree, &mut model, 201);
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    assert_matches(&tree, &model, "after reopen");
    assert_eq!(tree.user_meta(), 201);
}

#[test]
fn switch_copies_what_is_left_including_a_bare_user_meta_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut model = Model::new();
    let mut tree = garbage_tree(&path, &mut model);
    let mut copy = tree.begin_compaction().unwrap().build().unwrap();
    write_round(&mut tree, &mut model, 300);
    tree.catch_up(&mut copy).unwrap();
    // Keys left over for the switch to copy.
    write_round(&mut tree, &mut model, 301);
    assert!(tree.compaction_backlog() > 0);
    let copy = {
        tree.catch_up(&mut copy).unwrap();
        // No keys, only a new user_meta (e.g. a checkpoint of an applied
        // index that changed nothing here): the switch must still carry it.
        tree.write().commit(302).unwrap();
        assert_eq!(tree.compaction_backlog(), 0);
        assert!(!tree.compaction_caught_up(&copy));
        copy
    };
    tree.finish_compaction(copy).unwrap();
    assert_eq!(tree.user_meta(), 302);
    assert_matches(&tree, &model, "after the switch");
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    assert_eq!(tree.user_meta(), 302);
    assert_matches(&tree, &model, "after reopen");

    // And with a plain backlog of keys at the switch.
    let mut tree = tree;
    let copy = tree.begin_compaction().unwrap().build().unwrap();
    write_round(&mut tree, &mut model, 303);
    write_round(&mut tree, &mut model, 304);
    tree.finish_compaction(copy).unwrap();
    assert_eq!(tree.user_meta(), 304);
    assert_matches(&tree, &model, "after a switch with a backlog");
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    assert_matches(&tree, &model, "after reopen");
}

#[test]
fn two_switches_in_a_row_then_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut model = Model::new();
    let mut tree = garbage_tree(&path, &mut model);
    let held = tree.read();
    // The second switch replaces a file whose own rename may still be
    // syncing, with no commit between.
    tree.compact_file().unwrap();
    let copy = tree.begin_compaction().unwrap().build().unwrap();
    assert!(tree.compaction_caught_up(&copy));
    tree.finish_compaction(copy).unwrap();
    assert_matches(&tree, &model, "after two switches");
    assert_eq!(contents(&held), model_contents(&model));
    drop(held);
    write_round(&mut tree, &mut model, 500);
    drop(tree);
    let tree = Tree::open(&path, SMALL).unwrap();
    assert_matches(&tree, &model, "after reopen");
    assert_eq!(tree.user_meta(), 500);
}

#[test]
fn abandoning_at_each_step_leaves_the_old_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut model = Model::new();
    let mut tree = garbage_tree(&path, &mut model);
    let mut round = 400;
    for step in 0..4 {
        let job = tree.begin_compaction().unwrap();
        write_round(&mut tree, &mut model, round);
        round += 1;
        if step > 0 {
            let mut copy: CompactedFile = job.build().unwrap();
            write_round(&mut tree, &mut model, round);
            round += 1;
            if step > 1 {
                tree.catch_up_at_most(&mut copy, 20).unwrap();
            }
            if step > 2 {
                tree.catch_up(&mut copy).unwrap();
            }
            drop(copy);
        } else {
            drop(job);
        }
        write_round(&mut tree, &mut model, round);
        round += 1;
        assert_matches(&tree, &model, &format!("abandoned at step {step}"));
        drop(tree);
        tree = Tree::open(&path, SMALL).unwrap();
        assert_matches(&tree, &model, &format!("reopened after step {step}"));
    }
    // The leftover copy is discarded by the next compaction, which works.
    let copy = tree.begin_compaction().unwrap().build().unwrap();
    tree.finish_compaction(copy).unwrap();
    assert_matches(&tree, &model, "after a full compaction");
}

#[test]
fn copy_larger_than_the_writeback_window_is_complete() {
    // ~14 MiB of leaves: the copy streams them out in several windows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let mut tree = Tree::open(&path, TreeOptions::default()).unwrap();
    let mut model = Model::new();
    for chunk in 0..10u32 {
        let mut b = tree.write();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            b.insert(&key(i), &value(i, 100)).unwrap();
            model.insert(key(i), value(i, 100));
        }
        b.commit(u64::from(chunk)).unwrap();
    }
    let copy = tree.begin_compaction().unwrap().build().unwrap();
    tree.finish_compaction(copy).unwrap();
    assert!(tree.committed_bytes() > 12 << 20);
    assert_matches(&tree, &model, "after the switch");
    drop(tree);
    let tree = Tree::open(&path, TreeOptions::default()).unwrap();
    assert_matches(&tree, &model, "after reopen");
}

// --- Process deaths -------------------------------------------------------

const CHILD_PATH_ENV: &str = "BTREE_COMPACTION_CHILD_PATH";
const CHILD_ABORT_ENV: &str = "BTREE_COMPACTION_CHILD_ABORT_AT";

/// Where the child may die on purpose, in the order it passes them.
const ABORT_POINTS: [&str; 7] = [
    "begun",
    "built",
    "caught-up-partly",
    "caught-up",
    "switched",
    "written-after-switch",
    "compacted-twice",
];

/// The state after commit `c`: commit `i` inserts `i/0..i/9` and removes
/// `(i-1)/0`.
fn model_after(c: u64) -> Model {
    let mut m = Model::new();
    for i in 1..=c {
        for j in 0..10 {
            m.insert(format!("{i:08}/{j}").into_bytes(), vec![(i + j) as u8; 40]);
        }
        m.remove(format!("{:08}/0", i - 1).as_bytes());
    }
    m
}

struct Child {
    tree: Tree,
    c: u64,
    abort_at: Option<String>,
}

impl Child {
    fn commit(&mut self) {
        self.c += 1;
        let c = self.c;
        let mut b = self.tree.write();
        for j in 0..10 {
            b.insert(format!("{c:08}/{j}").as_bytes(), &[(c + j) as u8; 40])
                .expect("insert");
        }
        b.remove(format!("{:08}/0", c - 1).as_bytes())
            .expect("remove");
        b.commit(c).expect("commit");
        println!("acked {c}");
    }

    fn reached(&self, point: &str) {
        if self.abort_at.as_deref() == Some(point) {
            println!("aborting at {point}");
            std::process::abort();
        }
    }

    /// One online compaction with commits in every phase.
    fn compact_online(&mut self) {
        let job = self.tree.begin_compaction().expect("begin");
        self.reached("begun");
        self.commit();
        let copier = std::thread::spawn(move || job.build());
        while !copier.is_finished() {
            self.commit();
        }
        let mut copy = copier.join().unwrap().expect("build");
        self.reached("built");
        self.commit();
        self.tree.catch_up_at_most(&mut copy, 7).expect("catch up");
        self.reached("caught-up-partly");
        while self.tree.compaction_backlog() > 0 {
            self.commit();
            self.tree.catch_up_at_most(&mut copy, 25).expect("catch up");
        }
        self.reached("caught-up");
        self.tree.finish_compaction(copy).expect("finish");
        self.reached("switched");
        self.commit();
        self.reached("written-after-switch");
    }
}

fn child(path: &Path) {
    let tree = Tree::open(path, SMALL).expect("child open");
    let c = tree.user_meta();
    let mut child = Child {
        tree,
        c,
        abort_at: std::env::var(CHILD_ABORT_ENV).ok(),
    };
    let mut compactions = 0;
    loop {
        child.commit();
        if child.c % 30 == 0 {
            child.compact_online();
            compactions += 1;
            if compactions == 2 {
                child.reached("compacted-twice");
            }
        }
    }
}

#[test]
fn compaction_child() {
    // Runs only when spawned by the process-death tests below.
    if let Some(path) = std::env::var_os(CHILD_PATH_ENV) {
        child(Path::new(&path));
    }
}

/// Runs the child until it exits (it aborts) or `kill_after` passes, then
/// SIGKILLs it; returns the last commit it acknowledged and whether it
/// reached its abort point.
fn run_child(path: &Path, abort_at: Option<&str>, kill_after: Duration) -> (u64, bool) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "compaction_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_PATH_ENV, path)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(point) = abort_at {
        cmd.env(CHILD_ABORT_ENV, point);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut acked, mut aborted) = (0, false);
    let read = |l: &str, acked: &mut u64, aborted: &mut bool| {
        if let Some(n) = l.strip_prefix("acked ") {
            *acked = n.parse().unwrap();
        }
        *aborted |= l.starts_with("aborting at");
    };
    let start = Instant::now();
    while start.elapsed() < kill_after {
        match lines.next() {
            Some(Ok(l)) => read(&l, &mut acked, &mut aborted),
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL, if it is still running
    child.wait().unwrap();
    for l in lines.map_while(Result::ok) {
        read(&l, &mut acked, &mut aborted);
    }
    (acked, aborted)
}

/// Reopens after a death: the tree holds exactly some commit at or after the
/// last acknowledged one, and passes its integrity walk.
fn check_after_death(path: &Path, acked: u64, when: &str) -> u64 {
    let tree = Tree::open(path, SMALL).unwrap_or_else(|e| panic!("{when}: reopen: {e}"));
    let c = tree.user_meta();
    assert!(
        c >= acked,
        "{when}: commit {acked} was acknowledged, tree is at {c}"
    );
    assert_matches(&tree, &model_after(c), when);
    c
}

#[test]
fn abort_at_each_step_loses_nothing_acknowledged() {
    for point in ABORT_POINTS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.tree");
        let (acked, aborted) = run_child(&path, Some(point), Duration::from_secs(60));
        assert!(aborted, "the child never reached {point}");
        let c = check_after_death(&path, acked, point);
        // The next run starts over from the reopened tree (and discards the
        // leftover copy) and gets through a compaction.
        let (acked, aborted) = run_child(&path, Some("switched"), Duration::from_secs(60));
        assert!(aborted && acked > c, "after {point}: no progress");
        check_after_death(&path, acked, &format!("{point}, then switched"));
    }
}

#[test]
fn killed_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.tree");
    let mut last = 0;
    for (round, ms) in [120u64, 350, 60, 500, 230, 90, 410].into_iter().enumerate() {
        let (acked, _) = run_child(&path, None, Duration::from_millis(ms));
        last = check_after_death(&path, acked, &format!("round {round}"));
    }
    // Enough commits that compactions (every 30) were under way at kills.
    assert!(last > 60, "only {last} commits in all rounds");
}
