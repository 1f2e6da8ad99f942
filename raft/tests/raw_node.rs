//! The application-facing contract of `RawNode`: configuration checks,
//! the Ready/advance cycle, restart from storage, dropped proposals, lease
//! reads and the flow-control limits.

mod cluster;

use basalt_raft::{
    ConfChange, Config, Entry, EntryType, Error, HardState, MemStorage, Message, MessageType,
    ProgressState, RawNode, ReadOnlyOption, StateRole, Storage,
};
use cluster::{Cluster, SimOptions};

fn single_node() -> RawNode<MemStorage> {
    RawNode::new(Config::new(1), MemStorage::new_with_voters(&[1])).unwrap()
}

/// Persists and applies everything; returns the applied payloads.
fn drain(node: &mut RawNode<MemStorage>) -> Vec<Vec<u8>> {
    let mut applied = Vec::new();
    while node.has_ready() {
        let rd = node.ready();
        if let Some(s) = rd.snapshot.clone() {
            node.storage_mut().apply_snapshot(s).unwrap();
        }
        node.storage_mut().append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            node.storage_mut().set_hard_state(hs);
        }
        for e in rd.committed_entries {
            if e.entry_type == EntryType::Normal && !e.data.is_empty() {
                applied.push(e.data);
            }
        }
        node.advance().unwrap();
    }
    applied
}

#[test]
fn config_is_validated() {
    let bad = |f: fn(&mut Config)| {
        let mut c = Config::new(1);
        f(&mut c);
        matches!(
            RawNode::new(c, MemStorage::new_with_voters(&[1])),
            Err(Error::InvalidConfig { .. })
        )
    };
    assert!(bad(|c| c.id = 0));
    assert!(bad(|c| c.heartbeat_tick = 0));
    assert!(bad(|c| c.election_tick = c.heartbeat_tick));
    assert!(bad(|c| c.max_inflight_msgs = 0));
    assert!(bad(|c| {
        c.read_only_option = ReadOnlyOption::LeaseBased;
        c.check_quorum = false;
    }));
    assert!(bad(|c| c.applied = 5), "applied above commit");
}

#[test]
fn hard_state_outside_log_is_rejected() {
    let mut s = MemStorage::new_with_voters(&[1]);
    s.set_hard_state(HardState {
        term: 1,
        vote: 0,
        commit: 9,
    });
    assert!(matches!(
        RawNode::new(Config::new(1), s),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn advance_needs_a_ready() {
    let mut n = single_node();
    assert_eq!(n.advance(), Err(Error::NoPendingReady));
    n.campaign();
    let _ = n.ready();
    assert_eq!(n.advance(), Ok(()));
    assert_eq!(n.advance(), Err(Error::NoPendingReady));
}

#[test]
fn termless_peer_messages_are_refused() {
    let mut n = single_node();
    let m = Message::new(MessageType::Append, 2, 1);
    assert!(matches!(n.step(m), Err(Error::InvalidMessage { .. })));
    let anonymous = Message::new(MessageType::Propose, 0, 1);
    assert!(matches!(
        n.step(anonymous),
        Err(Error::InvalidMessage { .. })
    ));
}

#[test]
fn single_node_commits_and_survives_restart() {
    let mut n = single_node();
    n.campaign();
    assert_eq!(n.role(), StateRole::Leader);
    n.propose(b"a".to_vec()).unwrap();
    n.propose(b"b".to_vec()).unwrap();
    assert_eq!(drain(&mut n), vec![b"a".to_vec(), b"b".to_vec()]);
    let term = n.term();
    let commit = n.committed();
    // Restart from what was persisted: same term, vote and commit.
    let disk = n.storage().clone();
    let mut cfg = Config::new(1);
    cfg.applied = commit;
    let mut r = RawNode::new(cfg, disk).unwrap();
    assert_eq!(r.term(), term);
    assert_eq!(r.committed(), commit);
    assert_eq!(r.status().hard_state.vote, 1);
    assert!(drain(&mut r).is_empty(), "nothing is applied twice");
    r.campaign();
    assert_eq!(r.term(), term + 1);
}

#[test]
fn proposals_without_leader_are_dropped() {
    let mut n = RawNode::new(Config::new(1), MemStorage::new_with_voters(&[1, 2, 3])).unwrap();
    assert!(matches!(
        n.propose(b"x".to_vec()),
        Err(Error::ProposalDropped { .. })
    ));
    assert!(matches!(
        n.read_index(b"r".to_vec()),
        Err(Error::ProposalDropped { .. })
    ));
    // A malformed conf change never reaches the log.
    let mut leader = single_node();
    leader.campaign();
    let bad = Entry {
        entry_type: EntryType::ConfChange,
        data: vec![1, 2, 3],
        ..Entry::default()
    };
    let mut m = Message::new(MessageType::Propose, 1, 0);
    m.entries = vec![bad];
    assert!(matches!(leader.step(m), Err(Error::Decode { .. })));
}

#[test]
fn forwarding_can_be_disabled() {
    let mut c = Cluster::new(&[1, 2, 3], SimOptions::default(), 7);
    c.raw(1).campaign();
    c.process_all().unwrap();
    c.settle().unwrap();
    assert_eq!(c.leader(), Some(1));
    assert!(c.propose(2).is_some(), "forwarded to the leader");
    c.settle().unwrap();
    // Rebuild node 2 with forwarding disabled.
    c.crash(2);
    let disk = c.nodes[&2].disk.clone();
    let mut cfg = Config::new(2);
    cfg.disable_proposal_forwarding = true;
    let mut n2 = RawNode::new(cfg, disk).unwrap();
    let mut hb = Message::new(MessageType::Heartbeat, 1, 2);
    hb.term = c.raw(1).term();
    n2.step(hb).unwrap();
    assert_eq!(n2.leader_id(), 1);
    assert!(matches!(
        n2.propose(b"x".to_vec()),
        Err(Error::ProposalDropped { .. })
    ));
}

#[test]
fn lease_reads_skip_the_heartbeat_round() {
    let opts = SimOptions {
        lease_reads: true,
        ..SimOptions::default()
    };
    let mut c = Cluster::new(&[1, 2, 3], opts, 1);
    c.raw(1).campaign();
    c.process_all().unwrap();
    c.settle().unwrap();
    c.raw(1).read_index(b"lease".to_vec()).unwrap();
    let rd = c.raw(1).ready();
    assert_eq!(rd.read_states.len(), 1, "answered at once");
    assert_eq!(rd.read_states[0].index, c.raw(1).committed());
    assert!(rd
        .messages
        .iter()
        .all(|m| m.msg_type != MessageType::Heartbeat));
    c.raw(1).advance().unwrap();
}

#[test]
fn inflight_bytes_pause_replication() {
    // 100 entry bytes allowed in flight; each entry weighs 24 + 40.
    let opts = SimOptions {
        max_inflight_msgs: 100,
        max_inflight_bytes: 100,
        max_size_per_msg: 1,
        ..SimOptions::default()
    };
    let mut c = Cluster::new(&[1, 2], opts, 3);
    c.raw(1).campaign();
    c.process_all().unwrap();
    c.settle().unwrap();
    for _ in 0..5 {
        c.raw(1).propose(vec![7; 40]).unwrap();
    }
    c.process(1).unwrap();
    let p = c
        .raw(1)
        .status()
        .progress
        .into_iter()
        .find(|p| p.id == 2)
        .unwrap();
    assert_eq!(p.state, ProgressState::Replicate);
    assert_eq!(
        p.inflight_msgs, 2,
        "the second message crosses the byte limit; the rest wait"
    );
    assert_eq!(p.inflight_bytes, 128);
    c.settle().unwrap();
    let p = c
        .raw(1)
        .status()
        .progress
        .into_iter()
        .find(|p| p.id == 2)
        .unwrap();
    assert_eq!(
        p.matched,
        c.raw(1).status().last_index,
        "acks free the window until all is sent"
    );
}

#[test]
fn committed_entries_are_handed_out_in_bounded_batches() {
    let mut cfg = Config::new(1);
    cfg.max_committed_size_per_ready = 100;
    let mut n = RawNode::new(cfg, MemStorage::new_with_voters(&[1])).unwrap();
    n.campaign();
    for i in 0..6u8 {
        n.propose(vec![i; 30]).unwrap();
    }
    let mut batches = 0;
    let mut total = 0;
    while n.has_ready() {
        let rd = n.ready();
        n.storage_mut().append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            n.storage_mut().set_hard_state(hs);
        }
        let bytes: u64 = rd.committed_entries.iter().map(|e| e.size()).sum();
        assert!(
            rd.committed_entries.len() <= 1 || bytes <= 100,
            "batch of {bytes} bytes"
        );
        total += rd
            .committed_entries
            .iter()
            .filter(|e| !e.data.is_empty())
            .count();
        batches += 1;
        n.advance().unwrap();
    }
    assert_eq!(total, 6);
    assert!(
        batches >= 4,
        "six 54-byte entries need several batches, got {batches}"
    );
}

#[test]
fn unreachable_peer_drops_back_to_probing() {
    let mut c = Cluster::new(&[1, 2, 3], SimOptions::default(), 5);
    c.raw(1).campaign();
    c.process_all().unwrap();
    c.settle().unwrap();
    let state = |c: &mut Cluster| {
        c.raw(1)
            .status()
            .progress
            .into_iter()
            .find(|p| p.id == 3)
            .unwrap()
            .state
    };
    assert_eq!(state(&mut c), ProgressState::Replicate);
    c.raw(1).report_unreachable(3);
    assert_eq!(state(&mut c), ProgressState::Probe);
}

#[test]
fn conf_change_on_wrong_config_is_an_error() {
    let mut n = single_node();
    n.campaign();
    drain(&mut n);
    assert!(matches!(
        n.apply_conf_change(&ConfChange::leave_joint()),
        Err(Error::InvalidConfChange { .. })
    ));
    assert!(matches!(
        n.apply_conf_change(&ConfChange::remove_node(1)),
        Err(Error::InvalidConfChange { .. })
    ));
    let cs = n.apply_conf_change(&ConfChange::add_learner(2)).unwrap();
    assert_eq!(cs.learners, vec![2]);
    assert_eq!(
        n.storage().initial_state().unwrap().1.voters,
        vec![1],
        "storage is the application's to update"
    );
}

#[test]
fn a_batch_travels_in_one_append() {
    let mut c = Cluster::new(
        &[1, 2, 3],
        SimOptions {
            max_size_per_msg: 1 << 20,
            ..SimOptions::default()
        },
        9,
    );
    c.raw(1).campaign();
    c.process_all().unwrap();
    c.settle().unwrap();
    let batch: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 8]).collect();
    c.raw(1).propose_batch(batch).unwrap();
    let rd = c.raw(1).ready();
    let appends: Vec<&Message> = rd
        .messages
        .iter()
        .filter(|m| m.msg_type == MessageType::Append)
        .collect();
    assert_eq!(appends.len(), 2, "one append per follower");
    assert!(appends.iter().all(|m| m.entries.len() == 10));
    assert!(matches!(
        c.raw(2).propose_batch(Vec::new()),
        Err(Error::ProposalDropped { .. })
    ));
}

#[test]
fn malformed_appends_are_errors_not_panics() {
    let mut n = RawNode::new(Config::new(2), MemStorage::new_with_voters(&[1, 2, 3])).unwrap();
    let append = |index: u64, log_term: u64, ents: &[(u64, u64)]| {
        let mut m = Message::new(MessageType::Append, 1, 2);
        m.term = 2;
        m.index = index;
        m.log_term = log_term;
        m.entries = ents
            .iter()
            .map(|&(index, term)| Entry {
                index,
                term,
                ..Entry::default()
            })
            .collect();
        m
    };
    let invalid = |r: basalt_raft::Result<()>| matches!(r, Err(Error::InvalidMessage { .. }));
    assert!(
        invalid(n.step(append(1, 1, &[(1, 2)]))),
        "entry at the prev index"
    );
    assert!(invalid(n.step(append(1, 1, &[(2, 2), (4, 2)]))), "gap");
    assert!(
        invalid(n.step(append(1, 1, &[(2, 3)]))),
        "term above the sender's"
    );
    assert!(invalid(n.step(append(1, 2, &[(2, 1)]))), "term below prev");
    let mut snap = Message::new(MessageType::Snapshot, 1, 2);
    snap.term = 2;
    assert!(invalid(n.step(snap)));
    assert_eq!(n.term(), 1, "nothing was applied");
    assert_eq!(n.step(append(1, 1, &[(2, 2)])), Ok(()));
    assert_eq!(n.status().last_index, 2);
}

#[test]
fn uncommitted_bytes_are_capped_on_the_leader() {
    let mut c = Cluster::new(&[1, 2, 3], SimOptions::default(), 11);
    c.raw(1).campaign();
    c.process_all().unwrap();
    c.settle().unwrap();
    // Rebuild the leader's config with a cap by restarting it as leader.
    c.crash(1);
    let disk = c.nodes[&1].disk.clone();
    let mut cfg = Config::new(1);
    cfg.max_uncommitted_entries_size = 100;
    cfg.applied = disk.hard_state().commit;
    let mut n = RawNode::new(cfg, disk).unwrap();
    n.campaign();
    // Make it leader by granting pre-votes and votes from node 2.
    for t in [MessageType::PreVoteResponse, MessageType::VoteResponse] {
        let mut r = Message::new(t, 2, 1);
        r.term = n.term() + u64::from(t == MessageType::PreVoteResponse);
        n.step(r).unwrap();
    }
    assert_eq!(n.role(), StateRole::Leader);
    n.propose(vec![0; 60]).unwrap();
    assert!(
        matches!(n.propose(vec![0; 60]), Err(Error::ProposalDropped { .. })),
        "60 + 60 > 100"
    );
    n.propose(vec![0; 40]).unwrap();
    // Nothing commits without acks; once applied, the budget frees up.
    let last = n.status().last_index;
    let mut ack = Message::new(MessageType::AppendResponse, 2, 1);
    ack.term = n.term();
    ack.index = last;
    n.step(ack).unwrap();
    drain(&mut n);
    n.propose(vec![0; 90]).unwrap();
}
