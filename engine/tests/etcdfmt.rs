//! etcd's snapshot format: basalt's writer read back by basalt's reader,
//! files written by a real etcd read by basalt's reader, and damaged files
//! refused with an error (never a panic, never a replaced store).

use basalt_engine::etcdfmt::{
    restore_bytes, EtcdFmtError, EtcdSnapshot, RestoreOptions, SnapshotMeta,
};
use basalt_engine::mvcc::{
    DeleteRangeRequest, KeyValue, Op, PutRequest, RangeRequest, Store, StoreOptions,
};

/// A snapshot `etcdctl snapshot save` (3.4.23) took of a real etcd after:
/// put a=1, put b=2, lease grant 300 (id 0x390da23d4eb0a207), put c=3 with
/// it, put a=11, del b, put big (10,000 x), compact 3.
const ETCD_SMALL: &[u8] = include_bytes!("data/etcd-3.4.23-small.db");

fn put(key: &str, value: &[u8], lease: i64) -> Op {
    Op::Put(PutRequest {
        key: key.into(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    })
}

fn range_all(store: &Store, revision: i64) -> Vec<KeyValue> {
    store
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        })
        .unwrap()
        .kvs
}

fn snapshot(store: &Store) -> Vec<u8> {
    let snap = EtcdSnapshot::plan(
        store.read_view(),
        SnapshotMeta {
            term: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let mut out = Vec::new();
    snap.write(&mut out).unwrap();
    assert_eq!(out.len() as u64, snap.len(), "planned length");
    assert_eq!(out.len() % 512, 32, "etcdctl's length rule");
    out
}

fn restored(file: &[u8], dir: &std::path::Path) -> Store {
    restore_bytes(file, dir, &RestoreOptions::default()).unwrap();
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// Every key at every revision from the compaction on, and the leases.
fn assert_same(a: &Store, b: &Store) {
    assert_eq!(a.current_revision(), b.current_revision());
    assert_eq!(a.compact_revision(), b.compact_revision());
    for rev in a.compact_revision().max(1)..=a.current_revision() {
        assert_eq!(range_all(a, rev), range_all(b, rev), "at revision {rev}");
    }
    assert_eq!(a.leases().unwrap(), b.leases().unwrap());
}

#[test]
fn real_etcd_snapshot_restores_every_retained_version() {
    let dir = tempfile::tempdir().unwrap();
    let r = restore_bytes(ETCD_SMALL, dir.path(), &RestoreOptions::default()).unwrap();
    assert!(r.hash_verified);
    assert_eq!((r.revision, r.compact_revision), (7, 3));
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.current_revision(), 7);
    assert_eq!(store.compact_revision(), 3);
    let now = range_all(&store, 0);
    let keys: Vec<&[u8]> = now.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"a"[..], b"big", b"c"]);
    assert_eq!(now[0].value, b"11");
    assert_eq!(
        (now[0].create_revision, now[0].mod_revision, now[0].version),
        (2, 5, 2)
    );
    assert_eq!(now[1].value.len(), 10_000);
    let lease = 0x390d_a23d_4eb0_a207;
    assert_eq!(now[2].lease, lease);
    let at3 = range_all(&store, 3);
    assert_eq!(at3.len(), 2, "a and b at the compaction revision");
    assert_eq!(at3[1].value, b"2");
    let leases = store.leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].id, leases[0].ttl), (lease, 300));
    assert_eq!(leases[0].keys, vec![b"c".to_vec()]);
    assert!(
        store
            .range(&RangeRequest {
                key: b"a".to_vec(),
                revision: 2,
                ..Default::default()
            })
            .is_err(),
        "below the compaction is compacted"
    );
}

fn busy_store(dir: &std::path::Path) -> Store {
    let mut s = Store::open(dir, StoreOptions::default()).unwrap();
    let mut index = 0;
    let mut apply = |s: &mut Store, op: Op| {
        index += 1;
        s.apply(index, &op).unwrap();
    };
    apply(&mut s, Op::LeaseGrant { id: 77, ttl: 60 });
    for i in 0..3000 {
        apply(
            &mut s,
            put(&format!("k{:05}", i % 1200), format!("v{i}").as_bytes(), 0),
        );
    }
    apply(&mut s, put("leased", b"x", 77));
    apply(&mut s, put("big1", &vec![b'b'; 300_000], 0));
    apply(&mut s, put("big2", &vec![b'c'; 70_000], 77));
    apply(
        &mut s,
        Op::DeleteRange(DeleteRangeRequest {
            key: b"k00100".to_vec(),
            range_end: b"k00200".to_vec(),
            ..Default::default()
        }),
    );
    apply(&mut s, Op::Compact { revision: 1500 });
    apply(&mut s, put("k00150", b"again", 0));
    s
}

#[test]
fn written_snapshot_restores_to_the_same_store_and_rewrites_identically() {
    let dir = tempfile::tempdir().unwrap();
    let store = busy_store(&dir.path().join("a"));
    let file = snapshot(&store);
    assert!(
        file.len() > 400_000,
        "values and many pages: {}",
        file.len()
    );
    let back = restored(&file, &dir.path().join("b"));
    assert_same(&store, &back);
    assert_eq!(back.applied_index(), store.last_applied());
    assert_eq!(
        snapshot(&back),
        file,
        "a restored store writes the same file"
    );
}
