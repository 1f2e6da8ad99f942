//! HTTP/1.1 `/metrics`, `/health` and `/version` on the client port beside
//! gRPC (etcd serves them there), and the go-grpc-prometheus counters
//! etcd's dashboards read, moved by real gRPC calls.
//!
//! etcd 3.4.23 facts these tests encode (observed with `etcdctl put`,
//! `get`, a `put ""`, a `watch` killed by timeout and `endpoint status`,
//! then `curl http://127.0.0.1:<client port>/metrics`):
//! - families `grpc_server_started_total`, `grpc_server_msg_received_total`,
//!   `grpc_server_msg_sent_total` with labels grpc_method, grpc_service,
//!   grpc_type; `grpc_server_handled_total` with grpc_code in front; every
//!   registered method has series from the start (41 methods × 17 codes).
//! - a failed unary call counts one message received and none sent:
//!   `handled_total{grpc_code="InvalidArgument",grpc_method="Put",...} 1`,
//!   started 3 / received 3 / sent 2 after two good puts and one bad one.
//! - a watch ended by the client is `grpc_code="Canceled"`, type
//!   `bidi_stream`, service `etcdserverpb.Watch`.
//! - `/version` answers `{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use basalt_net::grpc::{encode_message, HTTP2_PREFACE};
use basalt_net::proto::etcdserverpb as pb;
use basalt_net::{Config, ServerHandle};
use bytes::{Buf, Bytes};
use etcd_client::Client;
use support::{get, http};

fn start(cores: usize) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::for_test(dir.path());
    cfg.cores = cores;
    let handle = basalt_net::start(cfg).expect("server starts");
    (handle, dir)
}

fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of the series `name{labels}` (labels as written, in order).
fn value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

fn method_labels(method: &str, service: &str, kind: &str) -> String {
    format!("{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}")
}

/// The four counters of one method (+ handled with `code`).
fn counts(metrics: &str, method: &str, service: &str, kind: &str, code: &str) -> [u64; 4] {
    let l = method_labels(method, service, kind);
    [
        value(metrics, &format!("grpc_server_started_total{l}")),
        value(metrics, &format!("grpc_server_msg_received_total{l}")),
        value(metrics, &format!("grpc_server_msg_sent_total{l}")),
        value(
            metrics,
            &format!(
                "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",\
                 grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
            ),
        ),
    ]
}

fn delta(after: [u64; 4], before: [u64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

async fn counters_move_with_grpc_calls(cores: usize) {
    let (server, _dir) = start(cores);
    let addr = server.client_addr();
    let before = scrape(addr);
    let put_ok = |m: &str| counts(m, "Put", "etcdserverpb.KV", "unary", "OK");
    let put_bad = |m: &str| counts(m, "Put", "etcdserverpb.KV", "unary", "InvalidArgument");
    let range_ok = |m: &str| counts(m, "Range", "etcdserverpb.KV", "unary", "OK");

    let mut client = Client::connect([server.client_url()], None)
        .await
        .expect("connect");
    client.put("a", "1", None).await.expect("put");
    client.put("b", "2", None).await.expect("put");
    let err = client.put("", "x", None).await.expect_err("empty key");
    assert!(err.to_string().contains("key is not provided"), "{err}");
    client.get("a", None).await.expect("get");

    // Several scrapes on fresh connections: with two executors they land
    // on both, and each must see every executor's counts.
    for _ in 0..4 {
        let after = scrape(addr);
        assert_eq!(delta(put_ok(&after), put_ok(&before)), [3, 3, 2, 2]);
        assert_eq!(delta(put_bad(&after), put_bad(&before)), [3, 3, 2, 1]);
        assert_eq!(delta(range_ok(&after), range_ok(&before)), [1, 1, 1, 1]);
        // Untouched methods stay at zero.
        assert_eq!(
            counts(&after, "Txn", "etcdserverpb.KV", "unary", "OK"),
            [0; 4]
        );
    }

    // A watch: bidi_stream, counted on the executor of its connection even
    // when the call is served on the sequencer's.
    let wl = method_labels("Watch", "etcdserverpb.Watch", "bidi_stream");
    let mut stream = client.watch("a", None).await.expect("watch");
    let created = stream.message().await.expect("created").expect("open");
    assert!(created.created());
    client.put("a", "3", None).await.expect("put");
    let resp = stream.message().await.expect("watch event").expect("open");
    assert_eq!(resp.events().len(), 1);
    let during = scrape(addr);
    assert_eq!(value(&during, &format!("grpc_server_started_total{wl}")), 1);
    assert_eq!(
        value(&during, &format!("grpc_server_msg_received_total{wl}")),
        1
    );
    // "created" and the event.
    assert_eq!(
        value(&during, &format!("grpc_server_msg_sent_total{wl}")),
        2
    );
    drop((stream, client));
    // The stream ends once the client's connection goes: etcd counts it
    // as Canceled.
    let deadline = Instant::now() + Duration::from_secs(10);
    let canceled = loop {
        let m = scrape(addr);
        let total: u64 = m
            .lines()
            .filter(|l| {
                l.starts_with("grpc_server_handled_total{") && l.contains("grpc_method=\"Watch\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        if total > 0 || Instant::now() > deadline {
            break counts(&m, "Watch", "etcdserverpb.Watch", "bidi_stream", "Canceled")[3];
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(canceled, 1, "the watch call was not counted as Canceled");
    server.shutdown().expect("clean shutdown");
}

#[tokio::test]
async fn counters_move_with_grpc_calls_one_core() {
    counters_move_with_grpc_calls(1).await;
}

#[tokio::test]
async fn counters_move_with_grpc_calls_two_cores() {
    counters_move_with_grpc_calls(2).await;
}

#[test]
fn health_version_and_errors_on_the_client_port() {
    for cores in [1, 2] {
        let (server, _dir) = start(cores);
        let addr = server.client_addr();
        for _ in 0..3 {
            let (status, head, body) = get(addr, "/health");
            assert_eq!(
                (status, body.as_str()),
                (200, r#"{"health":"true","reason":""}"#)
            );
            assert!(head.contains("Content-Type: application/json"), "{head}");
            let (status, _, body) = get(addr, "/version");
            assert_eq!(
                (status, body.as_str()),
                (200, r#"{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}"#)
            );
        }
        let (status, head, body) = http(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        assert!(head.contains("Content-Length: "), "{head}");
        assert!(body.is_empty());
        assert_eq!(get(addr, "/nope").0, 404);
        // As etcd's mux: Prometheus takes any method, /health GET only.
        assert_eq!(http(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 200);
        assert_eq!(http(addr, "POST /health HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(http(addr, "HELLO\r\n\r\n").0, 400);
        // A request line split across segments.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for piece in ["G", "ET /ver", "sion HTTP/1.1\r\n", "\r\n"] {
            s.write_all(piece.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let (status, head, body) = support::read_response(&mut s, false);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(status, 200);
        assert!(body.ends_with(r#""etcdcluster":"3.5.0"}"#), "{body}");
        // Bytes that start no HTTP/1 request (a TLS hello) go to HTTP/2,
        // which drops them at once instead of waiting for a request head.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t = Instant::now();
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00])
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // HTTP/1 does not leak into gRPC's internal paths.

        assert_eq!(get(addr, "/basalt.internal.ClientHttp/Get").0, 404);
        server.shutdown().expect("clean shutdown");
    }
}

/// Writes the HTTP/2 preface a few bytes at a time (separate TCP
/// segments), then lets `h2` go on as if it had written it.
struct PrefaceSent<T>(T, usize);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PrefaceSent<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for PrefaceSent<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // h2 starts by writing the preface, which we already sent.
        if self.1 > 0 {
            let n = self.1.min(buf.len());
            self.1 -= n;
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A Range over raw HTTP/2 whose preface arrives in `pieces`.
async fn range_with_split_preface(addr: SocketAddr, pieces: &[usize]) -> pb::RangeResponse {
    let mut std_stream = TcpStream::connect(addr).unwrap();
    std_stream.set_nodelay(true).unwrap();
    let mut at = 0;
    for &n in pieces {
        std_stream.write_all(&HTTP2_PREFACE[at..at + n]).unwrap();
        at += n;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(at, HTTP2_PREFACE.len());
    std_stream.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(std_stream).unwrap();
    let (mut client, conn) = h2::client::handshake(PrefaceSent(tcp, HTTP2_PREFACE.len()))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(format!("http://{addr}/etcdserverpb.KV/Range"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let range = pb::RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    send.send_data(encode_message(&range), true).unwrap();
    let resp = resp.await.expect("response");
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(chunk.chunk());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    prost::Message::decode(&data[5..]).expect("RangeResponse")
}

#[tokio::test]
async fn grpc_survives_a_preface_in_small_segments() {
    let (server, _dir) = start(2);
    let addr = server.client_addr();
    let before = scrape(addr);
    for pieces in [&[1usize; 24][..], &[3, 1, 10, 10], &[13, 11]] {
        let r = range_with_split_preface(addr, pieces).await;
        assert_eq!(r.count, 0);
        assert_eq!(r.header.unwrap().revision, 1);
    }
    let after = scrape(addr);
    let range_ok = |m: &str| counts(m, "Range", "etcdserverpb.KV", "unary", "OK");
    assert_eq!(delta(range_ok(&after), range_ok(&before)), [3, 3, 3, 3]);
    server.shutdown().expect("clean shutdown");
}

/// (service, method, type) of every `grpc_server_started_total` series.
fn label_set(metrics: &str) -> BTreeSet<(String, String, String)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("grpc_server_started_total{"))
        .map(|l| {
            let field = |name: &str| {
                let start = l.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                l[start..].split('"').next().unwrap().to_owned()
            };
            (
                field("grpc_service"),
                field("grpc_method"),
                field("grpc_type"),
            )
        })
        .collect()
}

/// The methods etcd 3.4.23 pre-registers (observed), plus the two etcd 3.5
/// added; basalt reports a 3.5 version.
const ETCD_3_4_METHODS: &str = "\
etcdserverpb.Auth AuthDisable unary|etcdserverpb.Auth AuthEnable unary|\
etcdserverpb.Auth Authenticate unary|etcdserverpb.Auth RoleAdd unary|\
etcdserverpb.Auth RoleDelete unary|etcdserverpb.Auth RoleGet unary|\
etcdserverpb.Auth RoleGrantPermission unary|etcdserverpb.Auth RoleList unary|\
etcdserverpb.Auth RoleRevokePermission unary|etcdserverpb.Auth UserAdd unary|\
etcdserverpb.Auth UserChangePassword unary|etcdserverpb.Auth UserDelete unary|\
etcdserverpb.Auth UserGet unary|etcdserverpb.Auth UserGrantRole unary|\
etcdserverpb.Auth UserList unary|etcdserverpb.Auth UserRevokeRole unary|\
etcdserverpb.Cluster MemberAdd unary|etcdserverpb.Cluster MemberList unary|\
etcdserverpb.Cluster MemberPromote unary|etcdserverpb.Cluster MemberRemove unary|\
etcdserverpb.Cluster MemberUpdate unary|etcdserverpb.KV Compact unary|\
etcdserverpb.KV DeleteRange unary|etcdserverpb.KV Put unary|etcdserverpb.KV Range unary|\
etcdserverpb.KV Txn unary|etcdserverpb.Lease LeaseGrant unary|\
etcdserverpb.Lease LeaseKeepAlive bidi_stream|etcdserverpb.Lease LeaseLeases unary|\
etcdserverpb.Lease LeaseRevoke unary|etcdserverpb.Lease LeaseTimeToLive unary|\
etcdserverpb.Maintenance Alarm unary|etcdserverpb.Maintenance Defragment unary|\
etcdserverpb.Maintenance Hash unary|etcdserverpb.Maintenance HashKV unary|\
etcdserverpb.Maintenance MoveLeader unary|etcdserverpb.Maintenance Snapshot server_stream|\
etcdserverpb.Maintenance Status unary|etcdserverpb.Watch Watch bidi_stream|\
grpc.health.v1.Health Check unary|grpc.health.v1.Health Watch server_stream";
const ETCD_3_5_ADDITIONS: &str =
    "etcdserverpb.Auth AuthStatus unary|etcdserverpb.Maintenance Downgrade unary";

fn facts(list: &str) -> BTreeSet<(String, String, String)> {
    list.split('|')
        .map(|e| {
            let mut f = e.split(' ').map(str::to_owned);
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect()
}

#[test]
fn label_sets_match_etcd() {
    let (server, _dir) = start(1);
    let ours = label_set(&scrape(server.client_addr()));
    server.shutdown().expect("clean shutdown");
    let etcd_3_4 = facts(ETCD_3_4_METHODS);
    assert_eq!(etcd_3_4.len(), 41);
    let mut expected = etcd_3_4.clone();
    expected.extend(facts(ETCD_3_5_ADDITIONS));
    assert_eq!(ours, expected);

    // And against a live etcd when one is installed (CI installs 3.4.23).
    let Some(live) = live_etcd_started_labels() else {
        eprintln!("no etcd at /usr/bin/etcd: compared with the recorded 3.4.23 facts only");
        return;
    };
    assert_eq!(
        live, etcd_3_4,
        "etcd's registered methods differ from the recorded facts"
    );
}

/// Starts /usr/bin/etcd on free ports in a temp dir and returns the label
/// set of its client port's `/metrics`.
fn live_etcd_started_labels() -> Option<BTreeSet<(String, String, String)>> {
    if !std::path::Path::new("/usr/bin/etcd").exists() {
        return None;
    }
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (client, peer) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = std::process::Command::new("/usr/bin/etcd")
        .arg("--data-dir")
        .arg(dir.path().join("etcd"))
        .arg(format!("--listen-client-urls=http://{client}"))
        .arg(format!("--advertise-client-urls=http://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=default=http://{peer}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let labels = loop {
        if let Ok(mut s) = TcpStream::connect(client) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            let set = label_set(&raw);
            if !set.is_empty() {
                break Some(set);
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = etcd.kill();
    let _ = etcd.wait();
    Some(labels.expect("etcd served /metrics on its client port"))
}
