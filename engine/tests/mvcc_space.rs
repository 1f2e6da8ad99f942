//! Space at the store level: overwrites stay near the live size through
//! checkpoints (tree pages are reused), and after a large delete and a
//! compaction of the history the store asks to be defragmented, which then
//! brings the files back near the live data.

use basalt_engine::mvcc::{DeleteRangeRequest, Op, PutRequest, Store, StoreOptions};

fn put(k: &str, len: usize, fill: u8) -> Op {
    Op::Put(PutRequest {
        key: k.into(),
        value: vec![fill; len],
        ..Default::default()
    })
}

fn key(i: u32) -> String {
    format!("space/{i:06}")
}

#[test]
fn overwrites_with_compaction_keep_the_files_near_the_live_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut index = 0;
    let mut sizes = Vec::new();
    for round in 0..30u8 {
        for i in 0..500 {
            index += 1;
            store.apply(index, &put(&key(i), 200, round)).unwrap();
        }
        index += 1;
        let revision = store.current_revision();
        store.apply(index, &Op::Compact { revision }).unwrap();
        store.checkpoint().unwrap();
        sizes.push((store.db_size(), store.db_size_in_use()));
    }
    let (size, in_use) = *sizes.last().unwrap();
    assert!(size <= 3 * in_use, "{sizes:?}");
    // Without reuse the files grew by every round's rewrite.
    assert!(size <= sizes[5].0 + sizes[5].0 / 2, "{sizes:?}");
}

#[test]
fn large_delete_then_compaction_asks_for_and_gets_a_defragmentation() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut index = 0;
    for i in 0..5000 {
        index += 1;
        store.apply(index, &put(&key(i), 500, 1)).unwrap();
    }
    store.checkpoint().unwrap();
    assert!(!store.wants_defragment(), "nothing to reclaim yet");
    // Delete 90%, then drop the history no read needs.
    index += 1;
    let delete = Op::DeleteRange(DeleteRangeRequest {
        key: key(500).into_bytes(),
        range_end: key(5000).into_bytes(),
        prev_kv: false,
    });
    store.apply(index, &delete).unwrap();
    index += 1;
    let revision = store.current_revision();
    store.apply(index, &Op::Compact { revision }).unwrap();
    store.checkpoint().unwrap();
    let (before, in_use) = (store.db_size(), store.db_size_in_use());
    assert!(store.wants_defragment(), "{before} bytes, {in_use} in use");
    store.defragment().unwrap();
    let (after, in_use) = (store.db_size(), store.db_size_in_use());
    assert!(after <= 2 * in_use, "{after} bytes, {in_use} in use");
    assert!(after * 4 < before, "{before} then {after}");
    assert!(!store.wants_defragment());
}
