//! Snapshots interchangeable with etcd, checked with the real tools:
//! a real etcd's `etcdctl snapshot save` restored by `basalt
//! --restore-snapshot`, and a basalt snapshot checked by `etcdctl snapshot
//! status` and restored by `etcdctl snapshot restore` into a real etcd;
//! each time the two servers must serve the same data (every retained
//! version, leases). Damaged files are refused and leave no data dir.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseTimeToLiveOptions,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use support::{basalt_restore, free_port, Kind, Server, ETCDCTL_BIN};

/// What a workload left for the comparison to check.
struct Written {
    compacted: i64,
    current: i64,
    leases: Vec<i64>,
}

const MIB: usize = 1024 * 1024;

/// History with everything a snapshot must keep: many revisions (several
/// bbolt pages and a branch level), multi-op txns (sub revisions), 1 MiB
/// values (overflow pages), overwrites (versions), deletes (tombstones),
/// leases with keys, a revoked lease, and a compaction with history after it.
async fn workload(c: &mut Client) -> Written {
    let short = c.lease_grant(300, None).await.expect("grant").id();
    let long = c.lease_grant(900, None).await.expect("grant").id();
    let doomed = c.lease_grant(600, None).await.expect("grant").id();
    for batch in 0..30 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| {
                TxnOp::put(
                    format!("k/{:04}", (batch * 100 + i) % 2500),
                    format!("v{batch}-{i}"),
                    None,
                )
            })
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
    for i in 0..200 {
        c.put(format!("k/{:04}", i * 7), format!("again {i}"), None)
            .await
            .expect("put");
    }
    c.put("big/1", vec![b'a'; MIB], None)
        .await
        .expect("1 MiB put");
    c.put(
        "leased/short",
        "s",
        Some(PutOptions::new().with_lease(short)),
    )
    .await
    .expect("put");
    c.put("leased/long", "l", Some(PutOptions::new().with_lease(long)))
        .await
        .expect("put");
    c.put(
        "leased/doomed",
        "d",
        Some(PutOptions::new().with_lease(doomed)),
    )
    .await
    .expect("put");
    c.delete("k/01", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    let mid = c.get("x", None).await.unwrap().header().unwrap().revision();
    c.put(
        "big/2",
        vec![b'b'; MIB],
        Some(PutOptions::new().with_lease(long)),
    )
    .await
    .expect("1 MiB put");
    c.lease_revoke(doomed).await.expect("revoke");
    c.txn(
        Txn::new()
            .when([Compare::version("k/0001", CompareOp::Greater, 0)])
            .and_then([
                TxnOp::put("k/0001", "txn", None),
                TxnOp::delete("k/0002", None),
                TxnOp::put("k/9999", "new", None),
            ]),
    )
    .await
    .expect("txn");
    c.compact(mid, None).await.expect("compact");
    for i in 0..50 {
        c.put(format!("after/{i}"), format!("{i}"), None)
            .await
            .expect("put");
    }
    c.delete("after/1", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    c.put("k/0003", "last", None).await.expect("put");
    let current = c.get("x", None).await.unwrap().header().unwrap().revision();
    Written {
        compacted: mid,
        current,
        leases: vec![short, long],
    }
}

type Kv = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

async fn range_at(c: &mut Client, revision: i64) -> (i64, Vec<Kv>) {
    let r = c
        .get(
            "",
            Some(GetOptions::new().with_from_key().with_revision(revision)),
        )
        .await
        .unwrap_or_else(|e| panic!("range at {revision}: {e}"));
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect();
    (r.count(), kvs)
}

/// Every event after `from` up to `to`: every retained version.
async fn history(c: &mut Client, from: i64, to: i64) -> Vec<(bool, Kv)> {
    let mut stream = c
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_from_key()
                    .with_start_revision(from),
            ),
        )
        .await
        .expect("watch");
    let mut out = Vec::new();
    while out.last().is_none_or(|(_, kv): &(bool, Kv)| kv.3 < to) {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await
            .expect("watch stalled")
            .expect("watch")
            .expect("watch ended");
        for e in resp.events() {
            let kv = e.kv().expect("event kv");
            out.push((
                e.event_type() == EventType::Put,
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                ),
            ));
        }
    }
    out
}

/// `a` and `b` serve the same data: revisions, every key at the
/// compaction revision and at several after it, every version after it,
/// leases with their TTLs and keys, and compacted history refused.
async fn assert_same_data(a: &Server, b: &Server, w: &Written) {
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let rev = |r: &etcd_client::GetResponse| r.header().unwrap().revision();
    assert_eq!(
        rev(&cb.get("x", None).await.unwrap()),
        w.current,
        "{:?} serves the source's revision",
        b.kind
    );
    let mut revisions = vec![
        w.compacted,
        w.compacted + 1,
        w.current - 30,
        w.current - 1,
        w.current,
    ];
    revisions.dedup();
    for r in revisions {
        let (na, kvs_a) = range_at(&mut ca, r).await;
        let (nb, kvs_b) = range_at(&mut cb, r).await;
        assert_eq!(na, nb, "key count at revision {r}");
        if let Some((x, y)) = kvs_a.iter().zip(&kvs_b).find(|(x, y)| x != y) {
            let short = |kv: &Kv| {
                (
                    String::from_utf8_lossy(&kv.0).into_owned(),
                    kv.1.len(),
                    kv.2,
                    kv.3,
                    kv.4,
                    kv.5,
                )
            };
            panic!(
                "at revision {r}: {:?} serves {:?}, {:?} serves {:?}",
                a.kind,
                short(x),
                b.kind,
                short(y)
            );
        }
        assert!(
            kvs_a == kvs_b,
            "every key at revision {r} ({} keys)",
            kvs_a.len()
        );
    }
    let ha = history(&mut ca, w.compacted + 1, w.current).await;
    let hb = history(&mut cb, w.compacted + 1, w.current).await;
    assert_eq!(ha.len(), hb.len(), "versions after the compaction");
    assert!(ha == hb, "every version after the compaction");
    for c in [&mut ca, &mut cb] {
        let e = c
            .get(
                "k/0000",
                Some(GetOptions::new().with_revision(w.compacted - 1)),
            )
            .await
            .expect_err("below the compaction");
        assert!(e.to_string().contains("compacted"), "{e}");
    }
    // etcd's own check of a migration: HashKV equal at every revision
    // asked, and etcdctl's view of it.
    for r in [0, w.compacted + 1, w.current - 30, w.current] {
        let ha = ca.hash_kv(r).await.expect("hash_kv");
        let hb = cb.hash_kv(r).await.expect("hash_kv");
        assert_eq!(ha.hash(), hb.hash(), "HashKV at revision {r}");
        assert_eq!(ha.compact_version(), hb.compact_version());
    }
    let hashkv = |s: &Server| {
        let out = s.etcdctl(&["endpoint", "hashkv", "-w", "json"]);
        assert!(out.status.success(), "{out:?}");
        json_field(&String::from_utf8_lossy(&out.stdout), "hash")
    };
    assert_eq!(hashkv(a), hashkv(b), "etcdctl endpoint hashkv");
    let mut la: Vec<i64> = ca
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    let mut lb: Vec<i64> = cb
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    la.sort();
    lb.sort();
    assert_eq!(la, lb, "lease ids");
    let mut want = w.leases.clone();
    want.sort();
    assert_eq!(lb, want, "the revoked lease is gone, the others kept");
    for &id in &w.leases {
        let opts = || Some(LeaseTimeToLiveOptions::new().with_keys());
        let ta = ca.lease_time_to_live(id, opts()).await.unwrap();
        let tb = cb.lease_time_to_live(id, opts()).await.unwrap();
        assert_eq!(ta.granted_ttl(), tb.granted_ttl(), "lease {id:x} TTL");
        let sorted = |keys: &[Vec<u8>]| {
            let mut k = keys.to_vec();
            k.sort();
            k
        };
        assert_eq!(sorted(ta.keys()), sorted(tb.keys()), "lease {id:x} keys");
        assert!(
            tb.ttl() > 0 && tb.ttl() <= tb.granted_ttl(),
            "lease {id:x} is live with {}s of {}s left",
            tb.ttl(),
            tb.granted_ttl()
        );
    }
}

fn etcdctl(args: &[&str]) -> std::process::Output {
    Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("etcdctl")
}

fn save(server: &Server, file: &Path) {
    let out = server.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "snapshot save from {:?}: {out:?}",
        server.kind
    );
}

#[tokio::test]
async fn etcd_snapshot_restores_into_basalt_with_every_version_and_lease() {
    let etcd = Server::start(Kind::Etcd).await;
    let w = workload(&mut etcd.client().await).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.db");
    save(&etcd, &file);
    let data_dir = dir.path().join("basalt");
    let out = basalt_restore(&file, &data_dir, &[]);
    assert!(out.status.success(), "restore: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("SHA-256 verified"), "{log}");
    let basalt = Server::start_on(Kind::Basalt, data_dir, (free_port(), free_port())).await;
    assert_same_data(&etcd, &basalt, &w).await;
    // The restored member keeps serving writes from the snapshot's revision.
    let mut c = basalt.client().await;
    let put = c.put("after-restore", "x", None).await.expect("put");
    assert_eq!(put.header().unwrap().revision(), w.current + 1);
}

fn status_json(file: &Path) -> String {
    let out = etcdctl(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert!(out.status.success(), "snapshot status: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_field(json: &str, name: &str) -> i64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("{name} in {json}"));
    json[at + name.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn basalt_snapshot_passes_etcdctl_status_and_restores_into_etcd() {
    let basalt = Server::start(Kind::Basalt).await;
    let w = workload(&mut basalt.client().await).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("basalt.db");
    save(&basalt, &file);

    let status = status_json(&file);
    assert_eq!(json_field(&status, "revision"), w.current, "{status}");
    // Every version basalt retains is in the key bucket: the keys live at
    // the compaction revision plus every change after it; beside them 2
    // leases, 1 member, 4 meta keys (consistent index, term, two
    // compaction revisions), the cluster version and the auth revision.
    let mut c = basalt.client().await;
    let (live_at_compaction, _) = range_at(&mut c, w.compacted).await;
    let changes = history(&mut c, w.compacted + 1, w.current).await.len() as i64;
    assert_eq!(
        json_field(&status, "totalKey"),
        live_at_compaction + changes + 9,
        "{status}"
    );
    assert_eq!(
        json_field(&status, "totalSize") as u64 + 32,
        std::fs::metadata(&file).unwrap().len(),
        "{status}"
    );

    let ports = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let data_dir: PathBuf = dir.path().join("etcd");
    let out = etcdctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--name",
        "default",
        "--initial-cluster",
        &format!("default={peer}"),
        "--initial-advertise-peer-urls",
        &peer,
    ]);
    assert!(out.status.success(), "etcdctl snapshot restore: {out:?}");
    let etcd = Server::start_on(Kind::Etcd, data_dir, ports).await;
    assert_same_data(&basalt, &etcd, &w).await;
    let mut c = etcd.client().await;
    let put = c.put("after-restore", "x", None).await.expect("put");
    assert_eq!(put.header().unwrap().revision(), w.current + 1);
}

/// A snapshot a real etcd 3.4.23 saved (see engine/tests/etcdfmt.rs).
const ETCD_SMALL: &[u8] = include_bytes!("../engine/tests/data/etcd-3.4.23-small.db");

/// `basalt --restore-snapshot` refuses `file`: it exits non-zero, says
/// `why`, and leaves no data dir a server could start on.
fn assert_refused(name: &str, file: &[u8], extra: &[&str], why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    std::fs::write(&path, file).unwrap();
    let data_dir = dir.path().join("data");
    let out = basalt_restore(&path, &data_dir, extra);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name}: restored anyway: {log}");
    assert!(log.contains(why), "{name}: expected {why:?} in: {log}");
    assert!(!log.contains("panicked"), "{name}: {log}");
    assert!(!data_dir.exists(), "{name}: a data dir was left behind");
}

#[test]
fn bad_snapshot_files_are_refused_with_a_reason_and_leave_nothing() {
    let n = ETCD_SMALL.len();
    assert_refused("truncated", &ETCD_SMALL[..n / 2], &[], "truncated snapshot");
    assert_refused(
        "truncated, hash check skipped",
        &ETCD_SMALL[..4096 * 4],
        &["--skip-hash-check"],
        "the file holds only 4",
    );
    let mut flipped = ETCD_SMALL.to_vec();
    flipped[3 * 4096 + 200] ^= 1;
    assert_refused("wrong checksum", &flipped, &[], "hash mismatch");
    assert_refused(
        "not a snapshot",
        &b"key=value\n".repeat(1000),
        &[],
        "neither an etcd database",
    );
    assert_refused(
        "no trailer",
        &ETCD_SMALL[..n - 32],
        &[],
        "no SHA-256 trailer",
    );
    let mut page_type = ETCD_SMALL.to_vec();
    page_type[4 * 4096 + 8] = 0x10;
    assert_refused(
        "unexpected page type",
        &page_type,
        &["--skip-hash-check"],
        "page 4: a freelist page",
    );
}

#[tokio::test]
async fn a_db_copied_from_a_data_dir_restores_with_skip_hash_check() {
    // Without its trailer (what member/snap/db holds), as etcdctl allows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, &ETCD_SMALL[..ETCD_SMALL.len() - 32]).unwrap();
    let data_dir = dir.path().join("data");
    let out = basalt_restore(&path, &data_dir, &["--skip-hash-check"]);
    assert!(out.status.success(), "{out:?}");
    let basalt = Server::start_on(Kind::Basalt, data_dir, (free_port(), free_port())).await;
    let mut c = basalt.client().await;
    let got = c.get("a", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"11");
    assert_eq!(got.header().unwrap().revision(), 7);
}

#[tokio::test]
async fn basalts_older_snapshot_format_still_restores() {
    use basalt_engine::mvcc::{Op, PutRequest, Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("old"), StoreOptions::default()).unwrap();
    for (i, v) in ["one", "two"].iter().enumerate() {
        let put = Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        });
        store.apply(i as u64 + 1, &put).unwrap();
    }
    let mut stream = Vec::new();
    store.write_snapshot(&mut stream).unwrap();
    let path = dir.path().join("old.db");
    std::fs::write(&path, basalt_net::snapshot_file::wrap(stream)).unwrap();
    let data_dir = dir.path().join("data");
    let out = basalt_restore(&path, &data_dir, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("older snapshot format"));
    let basalt = Server::start_on(Kind::Basalt, data_dir, (free_port(), free_port())).await;
    let got = basalt.client().await.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"two");
    assert_eq!(got.kvs()[0].version(), 2);
}

// ---- etcd 3.5 (etcdutl) ----

/// A binary of etcd 3.5.1, installed by scripts/install-test-deps.sh.
fn etcd35(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/py-etcd35/etcdbin")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        bin.display()
    );
    bin
}

fn run(bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

#[tokio::test]
async fn etcd_3_5_snapshot_restores_into_basalt() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Server::start_etcd_build(
        &etcd35("etcd"),
        dir.path().join("etcd35"),
        (free_port(), free_port()),
    )
    .await;
    let w = workload(&mut etcd.client().await).await;
    let file = dir.path().join("etcd35.db");
    let out = run(
        &etcd35("etcdctl"),
        &[
            "--endpoints",
            &etcd.endpoint,
            "snapshot",
            "save",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "etcdctl 3.5 snapshot save: {out:?}");
    let data_dir = dir.path().join("basalt");
    let out = basalt_restore(&file, &data_dir, &[]);
    assert!(out.status.success(), "restore: {out:?}");
    let basalt = Server::start_on(Kind::Basalt, data_dir, (free_port(), free_port())).await;
    assert_same_data(&etcd, &basalt, &w).await;
}

#[tokio::test]
async fn basalt_snapshot_passes_etcdutl_3_5_status_and_restores_into_etcd_3_5() {
    let basalt = Server::start(Kind::Basalt).await;
    let w = workload(&mut basalt.client().await).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("basalt.db");
    save(&basalt, &file);
    let etcdutl = etcd35("etcdutl");
    let out = run(
        &etcdutl,
        &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
    );
    assert!(out.status.success(), "etcdutl snapshot status: {out:?}");
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(json_field(&status, "revision"), w.current, "{status}");
    // etcdutl 3.5 hashes the same way etcdctl 3.4 does.
    assert_eq!(
        json_field(&status, "hash"),
        json_field(&status_json(&file), "hash")
    );

    let ports = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let data_dir = dir.path().join("etcd35");
    let out = run(
        &etcdutl,
        &[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "default",
            "--initial-cluster",
            &format!("default={peer}"),
            "--initial-advertise-peer-urls",
            &peer,
        ],
    );
    assert!(out.status.success(), "etcdutl snapshot restore: {out:?}");
    let etcd = Server::start_etcd_build(&etcd35("etcd"), data_dir, ports).await;
    assert_same_data(&basalt, &etcd, &w).await;
}
