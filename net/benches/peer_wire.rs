//! Peer wire micro-benchmarks: what a batch of Raft messages costs on the
//! wire — encoding into a reused buffer, and cutting, validating and
//! converting it back — for the leader's common case, a batch of 64
//! appends of one 256-byte entry each, and one append of 64 such entries.
//!
//! `cargo bench -p basalt-net --bench peer_wire`

use basalt_net::peer::{FrameDecoder, FrameEncoder, WireLimits};
use basalt_raft::{Entry, EntryType, Message, MessageType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn append(first_index: u64, entries: usize) -> Message {
    let mut m = Message::new(MessageType::Append, 1, 2);
    m.term = 5;
    m.log_term = 5;
    m.index = first_index - 1;
    m.commit = first_index - 1;
    m.entries = (0..entries as u64)
        .map(|i| Entry {
            term: 5,
            index: first_index + i,
            entry_type: EntryType::Normal,
            data: vec![0xa5; 256],
        })
        .collect();
    m
}

fn batches() -> [(&'static str, Vec<Message>); 2] {
    [
        (
            "64_appends_x_1_entry_256B",
            (0..64).map(|i| append(100 + i, 1)).collect(),
        ),
        ("1_append_x_64_entries_256B", vec![append(100, 64)]),
    ]
}

fn peer_wire(c: &mut Criterion) {
    let limits = WireLimits::default();
    for (label, batch) in batches() {
        let mut wire = Vec::new();
        FrameEncoder::new(limits)
            .messages(&batch, &mut wire)
            .expect("encode");
        let mut g = c.benchmark_group("peer_wire");
        g.throughput(Throughput::Bytes(wire.len() as u64));

        g.bench_function(format!("encode/{label}"), |b| {
            let mut encoder = FrameEncoder::new(limits);
            let mut out = Vec::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                encoder.messages(&batch, &mut out).expect("encode")
            })
        });

        g.bench_function(format!("decode/{label}"), |b| {
            let mut decoder = FrameDecoder::new(limits);
            let mut messages = Vec::with_capacity(batch.len());
            b.iter(|| {
                decoder.push(&wire);
                let frame = decoder.next_frame().expect("frame").expect("whole");
                messages.clear();
                frame.decode_messages_into(&mut messages).expect("decode");
                messages.len()
            })
        });

        g.bench_function(format!("encode_decode/{label}"), |b| {
            let mut encoder = FrameEncoder::new(limits);
            let mut decoder = FrameDecoder::new(limits);
            let mut out = Vec::with_capacity(wire.len());
            let mut messages = Vec::with_capacity(batch.len());
            b.iter(|| {
                out.clear();
                encoder.messages(&batch, &mut out).expect("encode");
                decoder.push(&out);
                let frame = decoder.next_frame().expect("frame").expect("whole");
                messages.clear();
                frame.decode_messages_into(&mut messages).expect("decode");
                messages.len()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, peer_wire);
criterion_main!(benches);
