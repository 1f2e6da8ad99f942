//! `--listen-metrics-urls`: /metrics, /health, /livez and /readyz of an
//! in-process server, read over plain HTTP/1.1 while etcd-client writes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use basalt_net::{Config, ServerHandle};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client};
use support::{get, http};

fn start(cores: usize) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::for_test(dir.path());
    cfg.cores = cores;
    cfg.listen_metrics_urls = vec!["http://127.0.0.1:0".into(), "http://localhost:0".into()];
    let handle = basalt_net::start(cfg).expect("server starts");
    (handle, dir)
}

/// The value of an unlabelled series in a /metrics body.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from\n{metrics}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

async fn metrics_move_with_writes(cores: usize) {
    let (server, _dir) = start(cores);
    let addrs = server.metrics_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let (status, head, before) = get(addrs[0], "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(value(&before, "etcd_server_has_leader"), 1.0);
    assert_eq!(value(&before, "etcd_server_is_leader"), 1.0);
    assert_eq!(value(&before, "etcd_server_leader_changes_seen_total"), 1.0);
    assert_eq!(
        value(&before, "etcd_server_quota_backend_bytes"),
        2147483648.0
    );
    assert!(value(&before, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert_eq!(value(&before, "etcd_debugging_mvcc_compact_revision"), -1.0);
    let mut client = Client::connect([server.client_url()], None)
        .await
        .expect("connect");
    for i in 0..5 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    // The second URL serves the same thing.
    let (status, _, after) = get(addrs[1], "/metrics");
    assert_eq!(status, 200);
    let rev = "etcd_debugging_mvcc_current_revision";
    assert_eq!(value(&after, rev), value(&before, rev) + 5.0);
    for counter in [
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
    ] {
        assert!(
            value(&after, counter) >= value(&before, counter) + 5.0,
            "{counter} did not move by 5 puts"
        );
    }
    assert!(
        value(&after, "etcd_server_proposals_committed_total")
            >= value(&after, "etcd_server_proposals_applied_total")
    );
    assert!(after.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"));
    // The bucket series is cumulative and ends at the count.
    assert_eq!(
        value(
            &after,
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        value(&after, "etcd_disk_wal_fsync_duration_seconds_count")
    );
    // Five puts answered one by one: each waited for a WAL sync.
    assert!(
        value(&after, "etcd_disk_wal_fsync_duration_seconds_count")
            >= value(&before, "etcd_disk_wal_fsync_duration_seconds_count") + 5.0,
        "WAL syncs were not observed"
    );
    assert!(value(&after, "etcd_disk_wal_fsync_duration_seconds_sum") > 0.0);
    assert!(after.contains("# TYPE etcd_disk_backend_commit_duration_seconds histogram\n"));
    assert!(after.contains("etcd_server_version{server_version=\"3.5.17\"} 1\n"));
    // The gRPC counters of every executor, as on the client port.
    let put_ok = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",\
                  grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert_eq!(value(&after, put_ok), value(&before, put_ok) + 5.0);
    let started = "grpc_server_started_total{grpc_method=\"Put\",\
                   grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert_eq!(value(&after, started), value(&before, started) + 5.0);
    // /version is a client-port path only, as in etcd.
    assert_eq!(get(addrs[0], "/version").0, 404);
    drop(client);
    server.shutdown().expect("clean shutdown");
}

#[tokio::test]
async fn metrics_move_with_writes_one_core() {
    metrics_move_with_writes(1).await;
}

#[tokio::test]
async fn metrics_move_with_writes_two_cores() {
    metrics_move_with_writes(2).await;
}

fn alarm_options(member: u64) -> AlarmOptions {
    let mut o = AlarmOptions::new();
    o.with_member(member);
    o
}

#[tokio::test]
async fn health_follows_the_nospace_alarm() {
    let (server, _dir) = start(1);
    let addr = server.metrics_addrs()[0];
    let (status, head, body) = get(addr, "/health");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let mut client = Client::connect([server.client_url()], None)
        .await
        .expect("connect");
    let member = server.member_id();
    client
        .alarm(
            AlarmAction::Activate,
            AlarmType::Nospace,
            Some(alarm_options(member)),
        )
        .await
        .expect("raise NOSPACE");
    let (status, _, body) = get(addr, "/health");
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#)
    );
    client
        .alarm(
            AlarmAction::Deactivate,
            AlarmType::Nospace,
            Some(alarm_options(member)),
        )
        .await
        .expect("disarm NOSPACE");
    assert_eq!(get(addr, "/health").0, 200);
    drop(client);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn probes_and_bad_requests() {
    let (server, _dir) = start(1);
    let addr = server.metrics_addrs()[0];
    for probe in ["/livez", "/readyz"] {
        let (status, _, body) = get(addr, probe);
        assert_eq!((status, body.as_str()), (200, "ok"), "{probe}");
    }
    assert_eq!(get(addr, "/nope").0, 404);
    // HEAD: the head only.
    let (status, head, body) = http(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length: "), "{head}");
    assert!(body.is_empty());
    // As etcd's mux: Prometheus takes any method, /health GET only.
    assert_eq!(http(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 200);
    assert_eq!(http(addr, "POST /health HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(addr, "HELLO\r\n\r\n").0, 400);
    // A head larger than the limit is dropped without an answer, and the
    // listener goes on serving.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n",
        "a".repeat(basalt_net::metrics::MAX_REQUEST_HEAD_BYTES + 10)
    );
    let _ = s.write_all(huge.as_bytes());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(get(addr, "/readyz").0, 200);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn idle_connections_are_bounded() {
    let (server, _dir) = start(1);
    let addr = server.metrics_addrs()[0];
    let idle: Vec<TcpStream> = (0..basalt_net::metrics::MAX_OPEN_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Past the bound a connection is closed without an answer…
    let mut refused = false;
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /livez HTTP/1.1\r\n\r\n");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if got.is_empty() {
            refused = true;
            break;
        }
        // The server may not have accepted every idle one yet.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "a connection past the bound was answered");
    // …and once the idle ones go, requests are answered again.
    drop(idle);
    let answered = (0..100).any(|_| {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /livez HTTP/1.1\r\n\r\n");
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        if got.ends_with("\r\n\r\nok") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(answered);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_taken_metrics_port_fails_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_test(dir.path());
    cfg.listen_metrics_urls = vec![format!("http://{}", taken.local_addr().unwrap())];
    assert!(basalt_net::start(cfg).is_err());
    let mut cfg = Config::for_test(dir.path());
    cfg.listen_metrics_urls = vec!["https://127.0.0.1:0".into()];
    assert!(basalt_net::start(cfg).is_err());
}
