//! The basalt server in-process, driven by real etcd clients: the Rust
//! `etcd-client` crate and, when installed, `/usr/bin/etcdctl`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use basalt_net::{Config, ServerHandle};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp,
};

struct TestServer {
    handle: Option<ServerHandle>,
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, tweak)
    }

    fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = Config::for_test(dir.path());
        tweak(&mut cfg);
        let handle = basalt_net::start(cfg).expect("server starts");
        TestServer {
            handle: Some(handle),
            dir: Some(dir),
        }
    }

    fn url(&self) -> String {
        self.handle.as_ref().expect("running").client_url()
    }

    async fn client(&self) -> Client {
        Client::connect([self.url()], None).await.expect("connect")
    }

    /// Clean shutdown, then the same data dir again.
    fn restart(mut self) -> TestServer {
        self.handle
            .take()
            .expect("running")
            .shutdown()
            .expect("clean shutdown");
        let dir = self.dir.take().expect("dir");
        Self::start_in(dir, |_| {})
    }

    fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// The gRPC code number and message of a failed call.
fn status_of<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> (i32, String) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => (s.code() as i32, s.message().to_owned()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const OUT_OF_RANGE: i32 = 11;

#[tokio::test]
async fn put_get_range_delete() {
    let s = TestServer::start();
    let mut c = s.client().await;
    let r = c.put("a", "1", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 2);
    c.put("b", "2", None).await.unwrap();
    c.put("c", "3", None).await.unwrap();
    let r = c
        .put("a", "1b", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"1");

    let g = c.get("a", None).await.unwrap();
    let kv = &g.kvs()[0];
    assert_eq!(
        (
            kv.value(),
            kv.version(),
            kv.create_revision(),
            kv.mod_revision()
        ),
        (&b"1b"[..], 2, 2, 5)
    );
    assert_eq!(g.header().unwrap().revision(), 5);

    // Limit: exact count and `more`.
    let g = c
        .get("", Some(GetOptions::new().with_all_keys().with_limit(2)))
        .await
        .unwrap();
    assert_eq!((g.kvs().len(), g.count(), g.more()), (2, 3, true));
    // Sorted descending by key, keys only.
    let g = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let keys: Vec<_> = g.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    assert_eq!(keys, vec![b"c".to_vec(), b"b".to_vec(), b"a".to_vec()]);
    assert!(g.kvs().iter().all(|kv| kv.value().is_empty()));
    // An old revision.
    let g = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(g.kvs()[0].value(), b"1");

    let d = c
        .delete(
            "b",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(d.deleted(), 1);
    assert_eq!(d.prev_kvs()[0].key(), b"b");
    assert_eq!(c.get("b", None).await.unwrap().count(), 0);
}

#[tokio::test]
async fn txn_compare_and_branches() {
    let s = TestServer::start();
    let mut c = s.client().await;
    c.put("k", "v1", None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "v1")])
        .and_then([TxnOp::put("k", "v2", None), TxnOp::get("k", None)])
        .or_else([TxnOp::put("k", "nope", None)]);
    let r = c.txn(txn.clone()).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(r.op_responses().len(), 2);
    // Same txn again: the compare now fails.
    let r = c.txn(txn).await.unwrap();
    assert!(!r.succeeded());
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"nope");
    let r = c
        .txn(Txn::new().when([Compare::version("k", CompareOp::Greater, 2)]))
        .await
        .unwrap();
    assert!(r.succeeded());
}

#[tokio::test]
async fn etcd_errors_with_etcd_codes_and_messages() {
    let s = TestServer::start();
    let mut c = s.client().await;
    assert_eq!(
        status_of(c.put("", "v", None).await),
        (INVALID_ARGUMENT, "etcdserver: key is not provided".into())
    );
    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    assert_eq!(
        status_of(c.txn(dup).await),
        (
            INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request".into()
        )
    );
    let many: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    assert_eq!(
        status_of(c.txn(Txn::new().and_then(many)).await),
        (
            INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request".into()
        )
    );
    // Over --max-request-bytes but inside the gRPC limit (+512 KiB).
    assert_eq!(
        status_of(c.put("big", vec![0u8; 1600 * 1024], None).await),
        (INVALID_ARGUMENT, "etcdserver: request is too large".into())
    );
    // Over the gRPC limit: refused before decoding.
    let (code, msg) = status_of(c.put("huge", vec![0u8; 3 << 20], None).await);
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(
        msg.starts_with("grpc: received message larger than max"),
        "{msg}"
    );

    for i in 0..5 {
        c.put("r", format!("{i}"), None).await.unwrap();
    }
    assert_eq!(
        status_of(c.get("r", Some(GetOptions::new().with_revision(100))).await),
        (
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision".into()
        )
    );
    c.compact(4, None).await.unwrap();
    assert_eq!(
        status_of(c.get("r", Some(GetOptions::new().with_revision(3))).await),
        (
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted".into()
        )
    );
    assert_eq!(
        status_of(c.compact(3, None).await),
        (
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted".into()
        )
    );
    // An auth error, as etcd words it.
    let (code, msg) = status_of(c.user_add("", "p", None).await);
    assert_eq!(
        (code, msg.as_str()),
        (INVALID_ARGUMENT, "etcdserver: user name is empty")
    );
    // The server is still fine after all of that.
    assert_eq!(c.get("r", None).await.unwrap().kvs()[0].value(), b"4");
}

#[tokio::test]
async fn maintenance_and_cluster() {
    let s = TestServer::start();
    let mut c = s.client().await;
    c.put("k", "v", None).await.unwrap();
    let st = c.status().await.unwrap();
    assert_eq!(st.version(), "3.5.17");
    let member_id = st.header().unwrap().member_id();
    assert_eq!(st.leader(), member_id);
    assert!(st.db_size() > 0);
    assert!(st.raft_index() >= 1);
    assert_eq!(st.raft_applied_index(), st.raft_index());

    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    let m = &members.members()[0];
    assert_eq!((m.id(), m.name()), (member_id, "default"));
    assert_eq!(m.client_urls(), [s.url()]);

    let h1 = c.hash_kv(0).await.unwrap().hash();
    c.defragment().await.unwrap();
    assert_eq!(
        c.hash_kv(0).await.unwrap().hash(),
        h1,
        "defrag keeps content"
    );
    c.put("k2", "v", None).await.unwrap();
    assert_ne!(c.hash_kv(0).await.unwrap().hash(), h1);
    assert!(c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None
        )
        .await
        .unwrap()
        .alarms()
        .is_empty());

    let mut snap = c.snapshot().await.unwrap();
    let mut bytes = Vec::new();
    while let Some(part) = snap.message().await.unwrap() {
        bytes.extend_from_slice(part.blob());
    }
    assert_eq!(bytes.len() % 512, 32, "etcdctl's snapshot length rule");
    assert_eq!(
        &bytes[16..20],
        &0xED0C_DAEDu32.to_le_bytes(),
        "a bbolt file"
    );
}

#[tokio::test]
async fn quota_raises_nospace_and_blocks_puts_until_disarmed() {
    let s = TestServer::start_with(|c| c.limits.quota_backend_bytes = 1);
    let mut c = s.client().await;
    assert_eq!(
        status_of(c.put("k", "v", None).await),
        (
            RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded".into()
        )
    );
    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 1);
    // Deletes still work so space can be freed.
    c.delete("k", None).await.unwrap();
}

/// etcd keeps alarms in its backend: an alarm raised before a restart still
/// refuses writes after it, and a disarm is remembered too.
#[tokio::test]
async fn alarms_survive_restart_until_disarmed() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let s = TestServer::start();
    let mut c = s.client().await;
    c.put("k", "v", None).await.unwrap();
    c.alarm(AlarmAction::Activate, AlarmType::Nospace, None)
        .await
        .expect("raise NOSPACE");
    drop(c);
    let s = s.restart();
    let mut c = s.client().await;
    assert_eq!(
        status_of(c.put("k", "v2", None).await),
        (
            RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded".into()
        )
    );
    let active = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(active.alarms().len(), 1);
    let member = active.alarms()[0].member_id();
    let mut options = AlarmOptions::new();
    options.with_member(member);
    c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
        .await
        .expect("disarm");
    drop(c);
    let s = s.restart();
    let mut c = s.client().await;
    c.put("k", "v3", None).await.expect("writes accepted again");
    let none = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert!(none.alarms().is_empty());
}

/// A store made by two executors has two shard trees; a restart with one
/// executor keeps both (the count is fixed at creation) and every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_count_is_fixed_when_the_store_is_created() {
    let s = TestServer::start_with(|c| c.cores = 2);
    let mut c = s.client().await;
    for i in 0..40 {
        c.put(format!("s/{i:02}"), format!("{i}"), None)
            .await
            .unwrap();
    }
    drop(c);
    let mut handle = s;
    let dir = handle.dir.take().expect("dir");
    handle
        .handle
        .take()
        .unwrap()
        .shutdown()
        .expect("clean shutdown");
    let store = dir.path().join("data/member/store");
    for f in ["shard-000.btree", "shard-001.btree"] {
        assert!(store.join(f).exists(), "{f} missing in {}", store.display());
    }
    assert!(!store.join("shard-002.btree").exists());
    let s = TestServer::start_in(dir, |c| c.cores = 1);
    let mut c = s.client().await;
    let all = c
        .get("s/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let keys: Vec<String> = all
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..40).map(|i| format!("s/{i:02}")).collect();
    assert_eq!(keys, want, "every key, in order, across both shards");
}

#[tokio::test]
async fn large_range_is_sent_under_flow_control() {
    let s = TestServer::start();
    let mut c = s.client().await;
    let value = vec![7u8; 100 * 1024];
    for i in 0..30 {
        c.put(format!("big/{i:02}"), value.clone(), None)
            .await
            .unwrap();
    }
    let g = c
        .get("big/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(g.kvs().len(), 30);
    assert!(g.kvs().iter().all(|kv| kv.value() == &value[..]));
}

#[tokio::test]
async fn writes_survive_restart() {
    let s = TestServer::start();
    let mut c = s.client().await;
    for i in 0..50 {
        c.put(format!("d{i}"), format!("{i}"), None).await.unwrap();
    }
    let rev = c
        .get("d0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    drop(c);
    let s = s.restart();
    let mut c = s.client().await;
    let g = c
        .get("d", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(g.count(), 50);
    assert_eq!(g.header().unwrap().revision(), rev);
    let r = c.put("after", "x", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), rev + 1);
    assert!(s.data_dir().join("data/member/wal").is_dir());
}

#[tokio::test]
async fn two_executors_forward_to_the_sequencer() {
    let s = TestServer::start_with(|c| c.cores = 2);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let url = s.url();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect([url], None).await.unwrap();
            for i in 0..25 {
                c.put(format!("t{t}/{i}"), "v", None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = s.client().await;
    let g = c
        .get("t", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(g.count(), 100);
    assert_eq!(g.header().unwrap().revision(), 101);
}

/// Watch and Lease live on the sequencer's executor; connections accepted
/// by the other executor reach them through the call bridge.
#[tokio::test]
async fn watch_and_lease_work_from_every_executor() {
    let s = TestServer::start_with(|c| c.cores = 2);
    // Several connections so both executors get some (SO_REUSEPORT hashes
    // by source port).
    for n in 0..6 {
        let mut c = s.client().await;
        let lease = c.lease_grant(60, None).await.unwrap();
        assert_eq!(lease.ttl(), 60);
        let key = format!("w{n}");
        let mut stream = c.watch(key.clone(), None).await.unwrap();
        c.put(
            key.clone(),
            "v",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .unwrap();
        // The first response may be the bare "created" one.
        let resp = loop {
            let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .expect("watch event in time")
                .unwrap()
                .unwrap();
            if !resp.events().is_empty() {
                break resp;
            }
        };
        let events = resp.events();
        assert_eq!(events.len(), 1, "{resp:?}");
        assert_eq!(events[0].kv().unwrap().key(), key.as_bytes());
        let ttl = c.lease_time_to_live(lease.id(), None).await.unwrap();
        assert!(ttl.ttl() > 0);
    }
}

fn etcdctl(url: &str, args: &[&str]) -> Option<String> {
    if !Path::new("/usr/bin/etcdctl").exists() {
        return None;
    }
    let out = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(url)
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn etcdctl_works_against_basalt() {
    let s = TestServer::start();
    let url = s.url();
    let Some(out) = etcdctl(&url, &["put", "foo", "bar"]) else {
        eprintln!("etcdctl not installed; skipping");
        return;
    };
    assert_eq!(out.trim(), "OK");
    assert_eq!(
        etcdctl(&url, &["get", "foo", "--print-value-only"])
            .unwrap()
            .trim(),
        "bar"
    );
    let status = etcdctl(&url, &["endpoint", "status", "-w", "json"]).unwrap();
    assert!(status.contains("\"version\":\"3.5.17\""), "{status}");
    let members = etcdctl(&url, &["member", "list"]).unwrap();
    assert!(
        members.contains("default") && members.contains(&url),
        "{members}"
    );
    let snap = s.data_dir().join("snap.db");
    etcdctl(&url, &["snapshot", "save", snap.to_str().unwrap()]).unwrap();
    assert_eq!(std::fs::metadata(&snap).unwrap().len() % 512, 32);
    etcdctl(&url, &["defrag"]).unwrap();
    etcdctl(&url, &["compaction", "2"]).unwrap();
    let del = etcdctl(&url, &["del", "foo"]).unwrap();
    assert_eq!(del.trim(), "1");
    // Restore the saved snapshot into a new data dir and serve it.
    let restored = tempfile::tempdir().unwrap();
    basalt_net::snapshot_file::restore(&snap, &restored.path().join("data"), Default::default())
        .unwrap();
    let r = TestServer::start_in(restored, |_| {});
    assert_eq!(
        etcdctl(&r.url(), &["get", "foo", "--print-value-only"])
            .unwrap()
            .trim(),
        "bar"
    );
    std::thread::sleep(Duration::from_millis(1));
}

/// Issue 17: after a large delete and a compaction of the history the db
/// shrinks by itself (an automatic online defragmentation), which etcd
/// never does without a stop-the-world defrag. Fails if the automatic run
/// is gone (the size stays at its high-water mark).
#[tokio::test]
async fn db_shrinks_by_itself_after_a_large_delete_and_compaction() {
    let s = TestServer::start_with(|c| c.checkpoint_interval = Duration::from_millis(100));
    let mut c = s.client().await;
    let value = vec![b'x'; 1024];
    for t in 0..30 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|j| TxnOp::put(format!("space/{:05}", t * 100 + j), value.clone(), None))
            .collect();
        c.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    // Checkpointed within the interval: the size with every key written.
    let mut peak = 0;
    for _ in 0..100 {
        peak = c.status().await.unwrap().db_size();
        if peak > 3 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(peak > 3 << 20, "the puts made the db {peak} bytes");
    let deleted = c
        .delete(
            "space/00300",
            Some(DeleteOptions::new().with_range("space/1")),
        )
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 2700);
    let revision = deleted.header().unwrap().revision();
    c.compact(revision, None).await.unwrap();
    let mut last = (0, 0);
    for _ in 0..100 {
        let st = c.status().await.unwrap();
        last = (st.db_size(), st.raft_used_db_size());
        if last.0 <= 2 * last.1 && last.0 * 4 < peak {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (size, in_use) = last;
    assert!(size <= 2 * in_use, "{size} bytes for {in_use} in use");
    assert!(size * 4 < peak, "{peak} then {size}");
    assert_eq!(
        c.get(
            "space/",
            Some(GetOptions::new().with_prefix().with_count_only())
        )
        .await
        .unwrap()
        .count(),
        300
    );
}

/// Reads HTTP/2 frames from `s` until a PING (type 6) arrives; false if
/// the stream ended first.
fn read_until_ping(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    loop {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).is_err() {
            return false;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            return false;
        }
        let ack = head[4] & 1 == 1;
        if head[3] == 6 && !ack {
            return true;
        }
    }
}

/// etcd's `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: the
/// server pings every connection; one whose client never answers is
/// closed, one whose client answers (every HTTP/2 client does) stays
/// usable. Fails if the server never pings, or keeps a silent connection.
#[tokio::test]
async fn keepalive_pings_close_connections_whose_client_is_gone() {
    use std::io::{Read, Write};
    let s = TestServer::start_with(|c| {
        c.grpc_keepalive = Some((Duration::from_millis(300), Duration::from_millis(300)))
    });
    let addr = s.url().trim_start_matches("http://").to_string();
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then silence.
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    raw.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    assert!(read_until_ping(&mut raw), "the server never pinged");
    let mut rest = Vec::new();
    let closed = raw.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the connection of a client that never answered stayed open: {closed:?}"
    );
    // A real client answers the pings and keeps its connection.
    let mut c = s.client().await;
    c.put("k", "v", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.get("k", None).await.unwrap().kvs().len(), 1);
}
