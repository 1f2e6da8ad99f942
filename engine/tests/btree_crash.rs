//! Real process crashes: a child process commits in a loop (compacting now
//! and then) and is killed with SIGKILL at a random moment; the reopened tree
//! must hold exactly the state of some commit at or after the last one the
//! child reported as durable. A second child overwrites a fixed set of keys,
//! so nearly every commit writes into reused pages, and runs online
//! compactions (copy on a thread, bounded catch-ups, switch) as the store's
//! automatic compaction does, so kills land in reuse and in every phase of a
//! compaction.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use basalt_engine::btree::{Tree, TreeOptions};

const OPTS: TreeOptions = TreeOptions { page_size: 1024 };
const CHILD_ENV: &str = "BTREE_CRASH_CHILD_PATH";
const REUSE_CHILD_ENV: &str = "BTREE_CRASH_REUSE_CHILD_PATH";
/// Keys the reuse child overwrites.
const REUSE_KEYS: u64 = 400;

/// The state after commit `c`: commit `i` inserts ten keys `i/0..i/9` and
/// removes `i-1/0`.
fn model_after(c: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 1..=c {
        for j in 0..10 {
            m.insert(format!("{i:08}/{j}").into_bytes(), vec![(i + j) as u8; 40]);
        }
        m.remove(format!("{:08}/0", i - 1).as_bytes());
    }
    m
}

fn child(path: &Path) {
    let mut tree = Tree::open(path, OPTS).expect("child open");
    let mut c = tree.user_meta();
    loop {
        c += 1;
        let mut b = tree.write();
        for j in 0..10 {
            b.insert(format!("{c:08}/{j}").as_bytes(), &[(c + j) as u8; 40])
                .expect("insert");
        }
        b.remove(format!("{:08}/0", c - 1).as_bytes())
            .expect("remove");
        b.commit(c).expect("commit");
        println!("acked {c}");
        if c % 40 == 0 {
            tree.compact_file().expect("compact");
        }
    }
}

#[test]
fn crash_child() {
    // Runs only when spawned by `killed_writer_loses_nothing_acknowledged`.
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path));
    }
}

/// The reuse child's state after commit `c`: commit `i` writes 25 of the
/// keys (`i*25 .. i*25+25` modulo [`REUSE_KEYS`]) with values naming `i`.
fn reuse_model_after(c: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 1..=c {
        for (k, v) in reuse_writes(i) {
            m.insert(k, v);
        }
    }
    m
}

fn reuse_writes(i: u64) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    (0..25).map(move |j| {
        let k = (i * 25 + j) % REUSE_KEYS;
        let len = 30 + ((i * 7 + j) % 90) as usize;
        (format!("{k:06}").into_bytes(), vec![(i % 251) as u8; len])
    })
}

fn reuse_child(path: &Path) {
    let mut tree = Tree::open(path, OPTS).expect("child open");
    let mut c = tree.user_meta();
    let mut compaction = None;
    let mut copy = None;
    loop {
        c += 1;
        let mut b = tree.write();
        for (k, v) in reuse_writes(c) {
            b.insert(&k, &v).expect("insert");
        }
        b.commit(c).expect("commit");
        println!("acked {c}");
        // A compaction every 60 commits, in steps between commits.
        if c % 60 == 0 && compaction.is_none() && copy.is_none() {
            let job = tree.begin_compaction().expect("begin");
            compaction = Some(std::thread::spawn(move || job.build()));
        }
        if compaction.as_ref().is_some_and(|h| h.is_finished()) {
            let built = compaction.take().unwrap().join().unwrap();
            copy = Some(built.expect("build"));
        }
        if let Some(mut f) = copy.take() {
            tree.catch_up_at_most(&mut f, 30).expect("catch up");
            if tree.compaction_backlog() == 0 {
                tree.finish_compaction(f).expect("switch");
            } else {
                copy = Some(f);
            }
        }
    }
}

#[test]
fn crash_reuse_child() {
    // Runs only when spawned by `killed_reusing_writer_loses_nothing_acknowledged`.
    if let Some(path) = std::env::var_os(REUSE_CHILD_ENV) {
        reuse_child(Path::new(&path));
    }
}

#[test]
fn killed_writer_loses_nothing_acknowledged() {
    let last = kill_rounds("crash_child", CHILD_ENV, model_after);
    // Enough commits happened that compactions (every 40) were killed too.
    assert!(last > 80, "only {last} commits in all rounds");
}

#[test]
fn killed_reusing_writer_loses_nothing_acknowledged() {
    let last = kill_rounds("crash_reuse_child", REUSE_CHILD_ENV, reuse_model_after);
    // Compactions (every 60 commits) were under way at some kills.
    assert!(last > 120, "only {last} commits in all rounds");
}

/// Runs the child `name` five times, killing it after various delays, and
/// checks each reopen against `model`; returns the last commit reopened.
fn kill_rounds(name: &str, env: &str, model: fn(u64) -> BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.tree");
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    for (round, run_for) in [150u64, 300, 50, 400, 200, 120, 350]
        .into_iter()
        .enumerate()
    {
        let mut child = Command::new(&exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(env, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let start = Instant::now();
        let mut acked = 0;
        while start.elapsed() < Duration::from_millis(run_for) {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(n) = l.strip_prefix("acked ") {
                        acked = n.parse().unwrap();
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acknowledgements printed before the kill but not read yet count too.
        for l in lines.map_while(Result::ok) {
            if let Some(n) = l.strip_prefix("acked ") {
                acked = n.parse().unwrap();
            }
        }
        let tree = Tree::open(&path, OPTS).expect("reopen after kill");
        tree.check_integrity().expect("integrity after kill");
        let c = tree.user_meta();
        assert!(
            c >= acked,
            "round {round}: commit {acked} was acknowledged, tree is at {c}"
        );
        let got: BTreeMap<_, _> = tree
            .read()
            .range(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, model(c), "round {round}: state of commit {c}");
        eprintln!("round {round}: acknowledged {acked}, reopened at {c}");
        last = c;
    }
    last
}
