//! Throughput of the pure state machine: one follower stepping appends, and
//! proposals through an in-memory 3-node cluster with batching.
//!
//! `cargo bench -p basalt-raft` (numbers exclude real I/O: storage is
//! `MemStorage` and the network a `Vec`).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use basalt_raft::{Config, Entry, MemStorage, Message, MessageType, RawNode, StateRole};

const PAYLOAD: usize = 128;

/// Persists, "sends" (returns) and applies one node's pending work.
fn handle_ready(node: &mut RawNode<MemStorage>, out: &mut Vec<Message>) -> usize {
    let mut applied = 0;
    while node.has_ready() {
        let rd = node.ready();
        if let Some(s) = rd.snapshot.clone() {
            node.storage_mut().apply_snapshot(s).expect("snapshot");
        }
        node.storage_mut().append(&rd.entries).expect("append");
        if let Some(hs) = rd.hard_state {
            node.storage_mut().set_hard_state(hs);
        }
        out.extend(rd.messages);
        applied += rd
            .committed_entries
            .iter()
            .filter(|e| !e.data.is_empty())
            .count();
        node.advance().expect("advance");
    }
    applied
}

fn follower_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("step");
    const BATCH: u64 = 1000;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("follower_append_1_entry", |b| {
        b.iter_batched(
            || RawNode::new(Config::new(2), MemStorage::new_with_voters(&[1, 2, 3])).expect("node"),
            |mut node| {
                let mut out = Vec::new();
                for i in 0..BATCH {
                    let mut m = Message::new(MessageType::Append, 1, 2);
                    m.term = 2;
                    m.index = 1 + i;
                    m.log_term = if i == 0 { 1 } else { 2 };
                    m.commit = 1 + i;
                    m.entries = vec![Entry {
                        term: 2,
                        index: 2 + i,
                        data: vec![0; PAYLOAD],
                        ..Entry::default()
                    }];
                    node.step(m).expect("step");
                    handle_ready(&mut node, &mut out);
                    out.clear();
                }
                node
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A fault-free 3-node cluster; returns it with node 1 leading.
fn cluster() -> Vec<RawNode<MemStorage>> {
    let mut nodes: Vec<RawNode<MemStorage>> = (1..=3)
        .map(|id| {
            RawNode::new(Config::new(id), MemStorage::new_with_voters(&[1, 2, 3])).expect("node")
        })
        .collect();
    nodes[0].campaign();
    pump(&mut nodes);
    assert_eq!(nodes[0].role(), StateRole::Leader);
    nodes
}

/// Delivers messages until quiet; returns entries applied on the leader.
fn pump(nodes: &mut [RawNode<MemStorage>]) -> usize {
    let mut applied = 0;
    let mut msgs = Vec::new();
    loop {
        for (i, n) in nodes.iter_mut().enumerate() {
            let a = handle_ready(n, &mut msgs);
            if i == 0 {
                applied += a;
            }
        }
        if msgs.is_empty() {
            return applied;
        }
        for m in std::mem::take(&mut msgs) {
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step");
        }
    }
}

fn cluster_proposals(c: &mut Criterion) {
    let mut g = c.benchmark_group("cluster3");
    for batch in [1u64, 64, 512] {
        const TOTAL: u64 = 4096;
        g.throughput(Throughput::Elements(TOTAL));
        g.bench_function(format!("proposals_batch_{batch}"), |b| {
            b.iter_batched(
                cluster,
                |mut nodes| {
                    let mut applied = 0;
                    for _ in 0..TOTAL / batch {
                        if batch == 1 {
                            nodes[0].propose(vec![1; PAYLOAD]).expect("propose");
                        } else {
                            let b = (0..batch).map(|_| vec![1; PAYLOAD]).collect();
                            nodes[0].propose_batch(b).expect("propose");
                        }
                        applied += pump(&mut nodes);
                    }
                    assert_eq!(applied as u64, TOTAL);
                    nodes
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, follower_step, cluster_proposals);
criterion_main!(benches);
