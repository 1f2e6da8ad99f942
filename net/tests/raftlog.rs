//! `basalt_raft::RawNode` on `WalStorage`: a one-member cluster that
//! restarts from its WAL, and a three-member cluster where a member that
//! was down catches up from the leader's WAL across several segments.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use basalt_engine::wal::{Wal, WalOptions};
use basalt_net::raftlog::WalStorage;
use basalt_raft::{
    ConfState, Config, Entry, Message, MessageType, NodeId, RawNode, SnapshotMetadata, StateRole,
    Storage, BOOTSTRAP_INDEX, BOOTSTRAP_TERM,
};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("test body does not panic");
}

/// 64 KiB segments, so a few hundred KiB of entries span several files;
/// entries are read back, not kept from recovery.
fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        max_batch_bytes: 16 << 10,
        materialize_recovered: false,
        ..WalOptions::default()
    }
}

fn bootstrap_snapshot(voters: &[NodeId]) -> SnapshotMetadata {
    SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: BOOTSTRAP_TERM,
        conf_state: ConfState {
            voters: voters.to_vec(),
            ..ConfState::default()
        },
    }
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("request {i} ").into_bytes();
    p.resize(1000, (i % 251) as u8);
    p
}

/// Handles one `Ready` the way the server must: persist (durable) before
/// sending, then apply, then advance. Returns the messages to send.
async fn handle_ready(node: &mut RawNode<WalStorage>, applied: &mut Vec<Entry>) -> Vec<Message> {
    let rd = node.ready();
    assert!(rd.snapshot.is_none(), "no snapshot is expected here");
    node.storage()
        .persist(rd.entries, rd.hard_state)
        .await
        .expect("persist");
    applied.extend(rd.committed_entries);
    node.advance().expect("advance");
    rd.messages
}

async fn drain(node: &mut RawNode<WalStorage>, applied: &mut Vec<Entry>) {
    while node.has_ready() {
        let msgs = handle_ready(node, applied).await;
        assert!(msgs.is_empty(), "a single member sends nothing");
    }
}

async fn close(wal: Rc<Wal>) {
    Rc::try_unwrap(wal)
        .ok()
        .expect("the node was dropped")
        .close()
        .await
        .expect("close");
}

async fn reopen(dir: &Path, voters: &[NodeId]) -> WalStorage {
    let (wal, rec) = Wal::open(dir, opts()).await.expect("reopen");
    assert!(rec.entries.is_empty(), "recovery kept only the index");
    WalStorage::new(Rc::new(wal), rec.hard_state, bootstrap_snapshot(voters)).expect("storage")
}

#[test]
fn single_member_resumes_at_the_same_term_and_commit_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, opts()).await.unwrap();
        let storage = WalStorage::bootstrap(Rc::new(wal), &[1]).await.unwrap();
        let mut node = RawNode::new(Config::new(1), storage).unwrap();
        node.campaign();
        let mut applied = Vec::new();
        drain(&mut node, &mut applied).await;
        assert_eq!(node.role(), StateRole::Leader);
        for i in 0..200 {
            node.propose(payload(i)).unwrap();
            if i % 10 == 9 {
                drain(&mut node, &mut applied).await;
            }
        }
        drain(&mut node, &mut applied).await;
        let before = node.status();
        assert_eq!(before.hard_state.commit, before.last_index);
        assert!(
            node.storage().wal().segment_paths().len() >= 3,
            "200 KiB of entries should span several 64 KiB segments"
        );
        let data: Vec<Vec<u8>> = applied
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect();
        assert_eq!(data, (0..200).map(payload).collect::<Vec<_>>());
        let wal = Rc::clone(node.storage().wal());
        drop(node);
        close(wal).await;

        // Restart with nothing applied past the bootstrap: Raft must hand
        // every committed entry out again, read back from the WAL.
        let storage = reopen(&d, &[1]).await;
        assert_eq!(storage.hard_state(), before.hard_state);
        let mut node = RawNode::new(Config::new(1), storage).unwrap();
        let after = node.status();
        assert_eq!(after.hard_state, before.hard_state);
        assert_eq!(after.last_index, before.last_index);
        assert_eq!(after.first_index, BOOTSTRAP_INDEX + 1);
        let mut replayed = Vec::new();
        drain(&mut node, &mut replayed).await;
        assert_eq!(replayed, applied, "replay equals what was applied");
        assert_eq!(
            node.storage().term(BOOTSTRAP_INDEX),
            Ok(BOOTSTRAP_TERM),
            "term(first_index - 1) answers"
        );
        let wal = Rc::clone(node.storage().wal());
        drop(node);
        close(wal).await;

        // Restart with everything applied: no replay; Raft goes on from the
        // same term and commit, and a new leader term commits new entries.
        let storage = reopen(&d, &[1]).await;
        let mut cfg = Config::new(1);
        cfg.applied = before.hard_state.commit;
        let mut node = RawNode::new(cfg, storage).unwrap();
        let mut applied = Vec::new();
        node.campaign();
        drain(&mut node, &mut applied).await;
        assert_eq!(node.role(), StateRole::Leader);
        assert_eq!(node.status().hard_state.term, before.hard_state.term + 1);
        node.propose(b"after restart".to_vec()).unwrap();
        drain(&mut node, &mut applied).await;
        let last = applied.last().unwrap();
        assert_eq!(last.data, b"after restart");
        // The new leader's empty entry, then the proposal.
        assert_eq!(last.index, before.last_index + 2);
        assert_eq!(node.status().hard_state.commit, before.last_index + 2);
        let wal = Rc::clone(node.storage().wal());
        drop(node);
        close(wal).await;
    });
}

/// An in-process cluster: members step each other's messages directly.
struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    /// `None` while a member is down (its WAL closed).
    nodes: Vec<Option<RawNode<WalStorage>>>,
    applied: Vec<Vec<Entry>>,
    snapshots_sent: usize,
}

const VOTERS: [NodeId; 3] = [1, 2, 3];

fn config(id: NodeId) -> Config {
    let mut cfg = Config::new(id);
    // Small appends and a short pipeline: catching up takes many reads of
    // the leader's log.
    cfg.max_size_per_msg = 16 << 10;
    cfg.max_inflight_msgs = 4;
    cfg
}

impl Cluster {
    fn node(&mut self, id: NodeId) -> &mut RawNode<WalStorage> {
        self.nodes[(id - 1) as usize]
            .as_mut()
            .expect("member is up")
    }

    /// Runs every member's `Ready`s and delivers messages until quiet.
    /// Messages to or from a member that is down are lost.
    async fn settle(&mut self) {
        let mut inbox: VecDeque<Message> = VecDeque::new();
        for _round in 0..10_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                let Some(node) = self.nodes[i].as_mut() else {
                    continue;
                };
                while node.has_ready() {
                    busy = true;
                    let msgs = handle_ready(node, &mut self.applied[i]).await;
                    inbox.extend(msgs);
                }
            }
            while let Some(m) = inbox.pop_front() {
                busy = true;
                if m.msg_type == MessageType::Snapshot {
                    self.snapshots_sent += 1;
                }
                if let Some(to) = self.nodes[(m.to - 1) as usize].as_mut() {
                    // A stale message may be refused; that is Raft's call.
                    let _ = to.step(m);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes[(id - 1) as usize].take().expect("member is up");
        let wal = Rc::clone(node.storage().wal());
        drop(node);
        close(wal).await;
    }

    async fn restart(&mut self, id: NodeId) {
        let storage = reopen(self.dirs[(id - 1) as usize].path(), &VOTERS).await;
        let mut cfg = config(id);
        cfg.applied = self.applied[(id - 1) as usize]
            .last()
            .map_or(BOOTSTRAP_INDEX, |e| e.index);
        self.nodes[(id - 1) as usize] = Some(RawNode::new(cfg, storage).expect("restart"));
    }
}

#[test]
fn a_member_that_was_down_catches_up_from_the_leaders_wal() {
    run(|| async {
        let mut c = Cluster {
            dirs: Vec::new(),
            nodes: Vec::new(),
            applied: vec![Vec::new(); 3],
            snapshots_sent: 0,
        };
        for id in VOTERS {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(dir.path(), opts()).await.unwrap();
            let storage = WalStorage::bootstrap(Rc::new(wal), &VOTERS).await.unwrap();
            c.nodes
                .push(Some(RawNode::new(config(id), storage).unwrap()));
            c.dirs.push(dir);
        }
        c.node(1).campaign();
        c.settle().await;
        assert_eq!(c.node(1).role(), StateRole::Leader);
        c.node(1).propose(payload(0)).unwrap();
        c.settle().await;

        // Member 3 goes down; 1 and 2 commit 400 KiB more.
        c.stop(3).await;
        for i in 1..=400 {
            c.node(1).propose(payload(i)).unwrap();
            if i % 20 == 0 {
                c.settle().await;
            }
        }
        c.settle().await;
        let leader_last = c.node(1).status().last_index;
        assert_eq!(c.node(1).status().hard_state.commit, leader_last);
        assert_eq!(c.node(2).status().last_index, leader_last);
        let segments = c.node(1).storage().wal().segment_paths().len();
        assert!(segments >= 5, "the leader's log spans {segments} segments");

        // It comes back from its own WAL; heartbeats reveal how far behind
        // it is and the leader replicates the rest from its WAL.
        c.restart(3).await;
        for _ in 0..200 {
            if c.node(3).status().hard_state.commit == leader_last {
                break;
            }
            c.node(1).tick();
            c.settle().await;
        }
        assert_eq!(c.node(3).status().hard_state.commit, leader_last);
        assert_eq!(
            c.snapshots_sent, 0,
            "caught up from the log, not a snapshot"
        );

        // Same log on both, read back from each WAL.
        let lo = BOOTSTRAP_INDEX + 1;
        let leader = c.node(1).storage().entries(lo, leader_last + 1, u64::MAX);
        let follower = c.node(3).storage().entries(lo, leader_last + 1, u64::MAX);
        assert_eq!(leader.unwrap(), follower.unwrap());
        let data: Vec<Vec<u8>> = c.applied[2]
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect();
        assert_eq!(data, (0..=400).map(payload).collect::<Vec<_>>());
        for id in VOTERS {
            c.stop(id).await;
        }
    });
}

#[test]
fn storage_contract_at_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, opts()).await.unwrap();
        let s = WalStorage::bootstrap(Rc::new(wal), &[1]).await.unwrap();
        let e = |index, term| Entry {
            index,
            term,
            data: vec![index as u8; 100],
            ..Entry::default()
        };
        s.persist((2..=10).map(|i| e(i, 2)).collect(), None)
            .await
            .unwrap();
        assert_eq!((s.first_index(), s.last_index()), (Ok(2), Ok(10)));
        assert!(matches!(
            s.entries(1, 3, u64::MAX),
            Err(basalt_raft::Error::Compacted { first_index: 2, .. })
        ));
        assert!(matches!(
            s.entries(2, 12, u64::MAX),
            Err(basalt_raft::Error::Unavailable { last_index: 10, .. })
        ));
        assert_eq!(s.entries(2, 11, 0).unwrap().len(), 1);
        assert_eq!(s.entries(2, 11, 2 * e(2, 2).size()).unwrap().len(), 2);
        assert_eq!(s.term(1), Ok(BOOTSTRAP_TERM));
        assert!(matches!(
            s.term(0),
            Err(basalt_raft::Error::Compacted { .. })
        ));
        assert!(matches!(
            s.term(11),
            Err(basalt_raft::Error::Unavailable { .. })
        ));

        // A conflicting suffix is replaced in one persist.
        s.persist(vec![e(7, 3), e(8, 3)], None).await.unwrap();
        assert_eq!(s.last_index(), Ok(8));
        assert_eq!(s.term(7), Ok(3));
        assert_eq!(s.term(6), Ok(2));
        assert!(s.persist(vec![e(1, 3)], None).await.is_err());

        // Compaction: Raft's log starts after it; the WAL keeps its entry.
        assert!(
            s.compact(5, ConfState::default()).await.is_err(),
            "past commit"
        );
        let mut hs = s.hard_state();
        hs.commit = 8;
        s.persist(Vec::new(), Some(hs)).await.unwrap();
        s.compact(5, ConfState::default()).await.unwrap();
        assert_eq!(s.first_index(), Ok(6));
        assert_eq!(s.term(5), Ok(2));
        assert!(matches!(
            s.entries(5, 6, 0),
            Err(basalt_raft::Error::Compacted { .. })
        ));
        assert_eq!(s.wal().first_index(), 5);
        assert_eq!(s.snapshot().unwrap().metadata.index, 5);

        // After a restart, the checkpoint's index is enough.
        let wal = Rc::clone(s.wal());
        drop(s);
        close(wal).await;
        let (wal, rec) = Wal::open(&d, opts()).await.unwrap();
        let s = WalStorage::from_checkpoint(Rc::new(wal), rec.hard_state, 5, ConfState::default())
            .unwrap();
        assert_eq!((s.first_index(), s.last_index()), (Ok(6), Ok(8)));
        assert_eq!(s.term(5), Ok(2));
        assert_eq!(s.hard_state().commit, 8);

        // Installing a newer snapshot empties the log up to it.
        let meta = SnapshotMetadata {
            index: 20,
            term: 4,
            conf_state: ConfState::default(),
        };
        s.apply_snapshot(meta.clone()).await.unwrap();
        assert_eq!((s.first_index(), s.last_index()), (Ok(21), Ok(20)));
        assert_eq!(s.term(20), Ok(4));
        assert_eq!(s.hard_state().commit, 20);
        assert!(s.apply_snapshot(meta).await.is_err(), "not newer");
        s.persist(vec![e(21, 4)], None).await.unwrap();
        assert_eq!(s.entries(21, 22, 0).unwrap()[0].term, 4);

        // A WAL that starts after the snapshot has a gap.
        let wal = Rc::clone(s.wal());
        drop(s);
        close(wal).await;
        let (wal, rec) = Wal::open(&d, opts()).await.unwrap();
        let wal = Rc::new(wal);
        assert!(
            WalStorage::new(Rc::clone(&wal), rec.hard_state, bootstrap_snapshot(&[1])).is_err()
        );
        close(wal).await;
    });
}

/// Entries read back through `WalStorage` (most from its in-memory tail)
/// are always exactly what the WAL holds: random appends that replace
/// suffixes of random lengths, with compactions, then every range compared
/// with the WAL read directly — and again after a restart, when every read
/// goes to the WAL.
#[test]
fn entries_read_back_are_what_the_wal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, opts()).await.unwrap();
        let s = WalStorage::bootstrap(Rc::new(wal), &[1]).await.unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut term = 2;
        for round in 0..300u64 {
            let last = s.last_index().unwrap();
            let first = s.first_index().unwrap();
            // Replace up to 5 entries back (never below the log start).
            let from = (last + 1).saturating_sub(next(6)).max(first);
            if from <= last {
                term += 1;
            }
            let count = 1 + next(8);
            let entries: Vec<Entry> = (from..from + count)
                .map(|index| Entry {
                    index,
                    term,
                    data: payload((round * 100 + index) as usize)[..(next(1000) as usize)].to_vec(),
                    ..Entry::default()
                })
                .collect();
            let mut hs = s.hard_state();
            hs.term = term;
            hs.commit = from - 1;
            s.persist(entries, Some(hs)).await.unwrap();
            if round % 50 == 49 {
                let to = s.hard_state().commit.saturating_sub(20);
                if to > s.first_index().unwrap() {
                    s.compact(to, ConfState::default()).await.unwrap();
                }
            }
        }
        let same_as_wal = |s: &WalStorage| {
            let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
            for lo in first..=last {
                let hi = (lo + 1 + (lo * 7) % 40).min(last + 1);
                let read: Vec<(u64, u64, Vec<u8>)> = s
                    .entries(lo, hi, u64::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.index, e.term, e.data))
                    .collect();
                let held: Vec<(u64, u64, Vec<u8>)> = s
                    .wal()
                    .entries(lo, hi, u64::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.index, e.term, e.data))
                    .collect();
                assert_eq!(read, held, "entries {lo}..{hi}");
            }
        };
        same_as_wal(&s);
        let wal = Rc::clone(s.wal());
        let (index, cs) = (s.first_index().unwrap() - 1, ConfState::default());
        drop(s);
        close(wal).await;
        let (wal, rec) = Wal::open(&d, opts()).await.unwrap();
        let s = WalStorage::from_checkpoint(Rc::new(wal), rec.hard_state, index, cs).unwrap();
        same_as_wal(&s);
    });
}
