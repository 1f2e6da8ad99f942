//! etcd's JSON gateway on the client port (issue 16): the same HTTP
//! requests to etcd 3.5 and to basalt get the same status and the same
//! JSON, byte for byte once the values that differ between any two
//! servers (ids, ports, sizes, hashes) are blanked. Streams (Watch,
//! LeaseKeepAlive, Snapshot) stream as etcd's do; bad input gets etcd's
//! answer and never a hang; HTTP/1.1 keeps connections alive; TLS (HTTP/2
//! and HTTP/1.1) serves the gateway too.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use support::pki::{arg, Ca};
use support::{ClientTls, Kind, Server};

/// etcd 3.5.1 (scripts/install-test-deps.sh): basalt reports a 3.5
/// version, and its gateway answers as 3.5's does.
fn etcd35() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-etcd35/etcdbin/etcd");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        bin.display()
    );
    bin
}

/// etcd 3.5 on free ports, with the directory holding its data (dropped
/// after the server).
async fn start_etcd35() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ports = (support::free_port(), support::free_port());
    (Server::start_etcd_build(&etcd35(), data, ports).await, dir)
}

fn addr(server: &Server) -> String {
    server
        .endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(addr(server)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn request_bytes(method: &str, path: &str, body: &str, close: bool) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// Reads one response (head, then a body by length or chunks) from `r`.
fn read_reply(r: &mut BufReader<TcpStream>) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').expect("header line");
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        while let Some(chunk) = read_chunk(r) {
            reply.body.push_str(&chunk);
        }
    } else {
        let len: usize = reply
            .header("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        reply.body = String::from_utf8(body).unwrap();
    }
    reply
}

/// The next chunk of a chunked body; `None` at its end.
fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut size = String::new();
    r.read_line(&mut size).expect("chunk size");
    let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
    let mut data = vec![0; n + 2];
    r.read_exact(&mut data).expect("chunk");
    if n == 0 {
        return None;
    }
    data.truncate(n);
    Some(String::from_utf8(data).unwrap())
}

/// One request on a fresh connection.
fn http(server: &Server, method: &str, path: &str, body: &str) -> Reply {
    let mut s = connect(server);
    s.write_all(&request_bytes(method, path, body, true))
        .unwrap();
    read_reply(&mut BufReader::new(s))
}

fn post(server: &Server, path: &str, body: &str) -> Reply {
    http(server, "POST", path, body)
}

/// `body` with the values of `keys` replaced by `_`, wherever they occur
/// (`"key":"v"`, `"key":123`, `"key":["a","b"]`; objects are left alone).
fn blank(body: &str, keys: &[&str]) -> String {
    let mut out = body.to_owned();
    for key in keys {
        let pattern = format!("\"{key}\":");
        let mut from = 0;
        while let Some(i) = out[from..].find(&pattern) {
            let start = from + i + pattern.len();
            let rest = &out[start..];
            let len = match rest.as_bytes()[0] {
                b'"' => rest[1..].find('"').unwrap() + 2,
                b'[' => rest.find(']').unwrap() + 1,
                // An object (an election's `leader`) is compared whole.
                b'{' => {
                    from = start;
                    continue;
                }
                _ => rest.find([',', '}']).unwrap(),
            };
            out.replace_range(start..start + len, "_");
            from = start + 1;
        }
    }
    out
}

/// Values that differ between any two servers.
const IDS: &[&str] = &[
    "cluster_id",
    "member_id",
    "leader",
    "raftIndex",
    "raftAppliedIndex",
];

/// The requests both servers get, in order: (path, body, keys to blank
/// beyond [`IDS`]).
const SCENARIO: &[(&str, &str, &[&str])] = &[
    ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &[]),
    (
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
        &[],
    ),
    (
        "/v3/kv/put",
        r#"{"key":"Zm9vMg==","value":"PGI+Jg=="}"#,
        &[],
    ),
    ("/v3/kv/range", r#"{"key":"Zm9v"}"#, &[]),
    (
        "/v3beta/kv/range",
        r#"{"key":"Zm9v","rangeEnd":"Zm9w","keysOnly":true,"limit":"1"}"#,
        &[],
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sortTarget":"KEY","serializable":true}"#,
        &[],
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#,
        &[],
    ),
    ("/v3/kv/range", r#"{"key":"bm9uZQ=="}"#, &[]),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"requestPut":{"key":"Zm9v","value":"cXV4"}},{"request_range":{"key":"Zm9v"}}],"failure":[{"request_delete_range":{"key":"Zm9v"}}]}"#,
        &[],
    ),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","target":"CREATE","create_revision":"0"}],"success":[{"requestDeleteRange":{"key":"Zm9v"}}],"failure":[{"requestRange":{"key":"Zm9v","keys_only":true}}]}"#,
        &[],
    ),
    ("/v3/lease/grant", r#"{"TTL":"60","ID":1234}"#, &[]),
    // Taken: FailedPrecondition, which grpc-gateway 1.16 answers 400.
    ("/v3/lease/grant", r#"{"TTL":60,"ID":"1234"}"#, &[]),
    (
        "/v3/kv/put",
        r#"{"key":"bGVhc2Vk","value":"eA==","lease":"1234"}"#,
        &[],
    ),
    ("/v3/lease/leases", "{}", &[]),
    (
        "/v3/lease/timetolive",
        r#"{"ID":1234,"keys":true}"#,
        &["TTL"],
    ),
    ("/v3/kv/lease/timetolive", r#"{"ID":"99"}"#, &[]),
    ("/v3/lease/revoke", r#"{"ID":"1234"}"#, &[]),
    ("/v3/kv/lease/revoke", r#"{"ID":"1234"}"#, &[]),
    // Lower-case `ttl` and `id` are no names of these fields: ignored, so
    // this is a grant of a server-chosen id with etcd's minimum TTL.
    ("/v3/lease/grant", r#"{"ttl":60,"id":"4321"}"#, &["ID"]),
    ("/v3/kv/lease/leases", "", &["ID"]),
    ("/v3/kv/range", r#"{"key":"bGVhc2Vk"}"#, &[]),
    (
        "/v3/kv/deleterange",
        r#"{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}"#,
        &[],
    ),
    (
        "/v3/kv/compaction",
        r#"{"revision":"3","physical":true}"#,
        &[],
    ),
    ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#, &[]),
    ("/v3/kv/range", r#"{"key":"Zm9v","revision":"1000"}"#, &[]),
    ("/v3/kv/compaction", r#"{"revision":"1000"}"#, &[]),
    (
        "/v3/maintenance/status",
        "{}",
        &["version", "dbSize", "dbSizeInUse", "dbSizeQuota"],
    ),
    ("/v3/maintenance/hash", "{}", &["hash"]),
    ("/v3/maintenance/defragment", "{}", &[]),
    (
        "/v3/cluster/member/list",
        "{}",
        &["ID", "peerURLs", "clientURLs"],
    ),
    ("/v3/lock/lock", r#"{"name":"bG9jaw=="}"#, &["key"]),
    ("/v3/election/leader", r#"{"name":"ZWxlY3Rpb24="}"#, &[]),
    // Bad input: etcd's answers.
    ("/v3/kv/put", r#"{"key":""}"#, &[]),
    ("/v3/kv/range", "", &[]),
    ("/v3/kv/range", "null", &[]),
    ("/v3/kv/range", r#"{"key":"Zm9v","bogus":{"x":[1]}}"#, &[]),
    ("/v3/kv/range", r#"{"key":"Zm9v"} trailing"#, &[]),
    ("/v3/kv/range", r#"{"key":"#, &[]),
    ("/v3/kv/range", "[]", &[]),
    ("/v3/kv/range", "xyz", &[]),
    ("/v3/kv/range", r#"{"key":123}"#, &[]),
    ("/v3/kv/range", r#"{"key":"Zm9v","range_end":"!!"}"#, &[]),
    ("/v3/kv/range", r#"{"key":"Zm9v","sort_order":1}"#, &[]),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","sort_order":"BOGUS"}"#,
        &[],
    ),
    (
        "/v3/maintenance/alarm",
        r#"{"action":"GET","alarm":"NOPE"}"#,
        &[],
    ),
    ("/v3/kv/nope", "{}", &[]),
    // A bidirectional call's bad first request is Unknown (500), a
    // server-streaming call's InvalidArgument (400).
    ("/v3/lease/keepalive", "xx", &[]),
    ("/v3/watch", "[1]", &[]),
    ("/v3/maintenance/snapshot", "xx", &[]),
    ("/v3/lease/revoke", r#"{"ID":"5"}"#, &[]),
];

/// What a server answers to [`SCENARIO`], one line per request.
fn transcript(server: &Server) -> Vec<String> {
    SCENARIO
        .iter()
        .map(|(path, body, extra)| {
            let r = post(server, path, body);
            let keys: Vec<&str> = IDS.iter().chain(extra.iter()).copied().collect();
            // etcd 3.5.1 predates Status's `dbSizeQuota` (later 3.5
            // releases and basalt send it).
            let body_seen = blank(&r.body, &keys).replace(r#","dbSizeQuota":_"#, "");
            let mut line = format!(
                "{path} {body} -> {} {} {body_seen}",
                r.status,
                r.header("content-type").unwrap_or("-"),
            );
            // Written on every answer (etcd's --cors default).
            if r.header("access-control-allow-origin") != Some("*") {
                line.push_str(" (no CORS headers)");
            }
            line
        })
        .collect()
}

fn assert_same(etcd: &[String], basalt: &[String]) {
    let mut diffs = Vec::new();
    for (e, b) in etcd.iter().zip(basalt) {
        if e != b {
            diffs.push(format!("etcd:   {e}\nbasalt: {b}"));
        }
    }
    assert_eq!(etcd.len(), basalt.len());
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n\n")
    );
}

/// The same JSON requests, the same answers, byte for byte.
#[tokio::test]
async fn json_answers_match_etcd_35() {
    let (etcd, _dir) = start_etcd35().await;
    let expected = transcript(&etcd);
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let got = transcript(&basalt);
    assert_same(&expected, &got);
    // The transcript is not vacuous: it saw values and errors.
    assert!(
        got[3].contains(r#""kvs":[{"key":"Zm9v","create_revision":"2""#),
        "{}",
        got[3]
    );
    assert!(got.iter().any(|l| l.contains(
        r#" 404 application/json {"error":"etcdserver: requested lease not found","code":5,"#
    )));
}

/// Methods other than POST, paths outside the gateway, CORS preflight.
#[tokio::test]
async fn methods_and_paths_answer_as_etcd() {
    let cases = [
        ("GET", "/v3/kv/range"),
        ("PUT", "/v3/kv/put"),
        ("DELETE", "/v3/watch"),
        ("OPTIONS", "/v3/kv/range"),
        ("POST", "/v3alpha/kv/range"),
        ("POST", "/v3/"),
        ("POST", "/v3"),
        ("GET", "/v3?x=1"),
        ("POST", "/v3beta"),
    ];
    let answers = |server: &Server| -> Vec<String> {
        cases
            .iter()
            .map(|(m, p)| {
                let r = http(server, m, p, "{}");
                format!(
                    "{m} {p} -> {} {:?} {:?} {:?} {:?}",
                    r.status,
                    r.header("content-type"),
                    r.header("x-content-type-options"),
                    r.header("location"),
                    r.body
                )
            })
            .collect()
    };
    let (etcd, _dir) = start_etcd35().await;
    let expected = answers(&etcd);
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    assert_same(&expected, &answers(&basalt));
}

/// Reads a chunked stream answer line by line.
struct StreamReader {
    r: BufReader<TcpStream>,
    pending: String,
}

impl StreamReader {
    fn open(server: &Server, path: &str, body: &str) -> (Reply, StreamReader) {
        let mut s = connect(server);
        s.write_all(&request_bytes("POST", path, body, false))
            .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').unwrap();
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let head = Reply {
            status,
            headers,
            body: String::new(),
        };
        (
            head,
            StreamReader {
                r,
                pending: String::new(),
            },
        )
    }

    /// The next line of the body; `None` once the body ended.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.find('\n') {
                let line = self.pending[..i].to_owned();
                self.pending.drain(..=i);
                return Some(line);
            }
            let chunk = read_chunk(&mut self.r)?;
            self.pending.push_str(&chunk);
        }
    }
}

/// A watch streams `{"result":…}` lines as events happen, and keeps
/// streaming after its one request (etcd's watch outlives the half-close);
/// keep-alives answer each request in the body and end.
async fn stream_transcript(server: &Server) -> Vec<String> {
    let mut out = Vec::new();
    let (head, mut watch) = StreamReader::open(
        server,
        "/v3/watch",
        r#"{"create_request":{"key":"dw==","prev_kv":true}}"#,
    );
    out.push(format!(
        "watch {} {:?} {:?}",
        head.status,
        head.header("transfer-encoding"),
        head.header("content-type")
    ));
    out.push(blank(&watch.line().expect("created"), IDS));
    for v in ["MQ==", "Mg=="] {
        post(
            server,
            "/v3/kv/put",
            &format!(r#"{{"key":"dw==","value":"{v}"}}"#),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        out.push(blank(&watch.line().expect("event"), IDS));
    }
    post(server, "/v3/kv/deleterange", r#"{"key":"dw=="}"#);
    out.push(blank(&watch.line().expect("delete event"), IDS));
    post(server, "/v3/lease/grant", r#"{"TTL":30,"ID":77}"#);
    let (head, mut ka) =
        StreamReader::open(server, "/v3/lease/keepalive", r#"{"ID":77}{"ID":"77"}"#);
    out.push(format!("keepalive {}", head.status));
    while let Some(line) = ka.line() {
        out.push(blank(&line, IDS));
    }
    let (_, mut ka) = StreamReader::open(server, "/v3/lease/keepalive", r#"{"ID":78}"#);
    while let Some(line) = ka.line() {
        out.push(blank(&line, IDS));
    }
    // No request at all: an empty stream, ended at once.
    let (head, mut ka) = StreamReader::open(server, "/v3/lease/keepalive", "");
    out.push(format!(
        "empty keepalive {} {:?}",
        head.status,
        head.header("grpc-metadata-content-type")
    ));
    while let Some(line) = ka.line() {
        out.push(blank(&line, IDS));
    }
    out
}

#[tokio::test]
async fn streams_match_etcd_35() {
    let (etcd, _dir) = start_etcd35().await;
    let expected = stream_transcript(&etcd).await;
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let got = stream_transcript(&basalt).await;
    assert_same(&expected, &got);
    assert!(got[3].contains(r#""events":[{"kv":{"key":"dw==","create_revision":"2","mod_revision":"3","version":"2","value":"Mg=="},"prev_kv":"#), "{}", got[3]);
    assert_eq!(got.len(), 10, "{got:#?}");
}

/// A snapshot streams as `{"result":{"blob":…}}` lines whose blobs, joined,
/// are a snapshot etcd's tools take; `remaining_bytes` counts down to 0.
#[tokio::test]
async fn snapshot_streams_blobs() {
    let basalt = Server::start(Kind::Basalt).await;
    post(&basalt, "/v3/kv/put", r#"{"key":"cw==","value":"dg=="}"#);
    let (head, mut s) = StreamReader::open(&basalt, "/v3/maintenance/snapshot", "{}");
    assert_eq!(head.status, 200);
    let mut lines = 0;
    let mut last = String::new();
    while let Some(line) = s.line() {
        assert!(line.starts_with(r#"{"result":{"#), "{line}");
        assert!(line.contains(r#""blob":""#), "{line}");
        lines += 1;
        last = line;
    }
    assert!(lines >= 1);
    assert!(!last.contains("remaining_bytes"), "{last}");
}

/// Requests one after another on one connection (HTTP/1.1 keep-alive),
/// pipelined, then the client's `Connection: close` is honoured.
#[tokio::test]
async fn http11_keeps_connections_alive() {
    let basalt = Server::start(Kind::Basalt).await;
    let mut s = connect(&basalt);
    let mut wire = request_bytes(
        "POST",
        "/v3/kv/put",
        r#"{"key":"aw==","value":"MQ=="}"#,
        false,
    );
    wire.extend(request_bytes(
        "POST",
        "/v3/kv/range",
        r#"{"key":"aw=="}"#,
        false,
    ));
    wire.extend(request_bytes("GET", "/health", "", false));
    wire.extend(request_bytes("POST", "/v3/kv/nope", "{}", true));
    s.write_all(&wire).unwrap();
    let mut r = BufReader::new(s);
    let put = read_reply(&mut r);
    assert_eq!(put.status, 200, "{put:?}");
    let range = read_reply(&mut r);
    assert!(range.body.contains(r#""value":"MQ==""#), "{range:?}");
    let health = read_reply(&mut r);
    assert_eq!(health.status, 200, "{health:?}");
    let nope = read_reply(&mut r);
    assert_eq!((nope.status, nope.body.as_str()), (404, "Not Found\n"));
    assert_eq!(nope.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the last"
    );
    // Pipelined, then half-closed (`printf … | nc -N`): each is answered.
    let mut s = connect(&basalt);
    let mut wire = request_bytes("POST", "/v3/kv/range", r#"{"key":"aw=="}"#, false);
    wire.extend(request_bytes(
        "POST",
        "/v3/kv/range",
        r#"{"key":"aw=="}"#,
        true,
    ));
    s.write_all(&wire).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let range = read_reply(&mut r);
        assert!(range.body.contains(r#""value":"MQ==""#), "{range:?}");
    }
    // `Expect: 100-continue`: the interim answer first, then the body is
    // sent and answered.
    let mut s = connect(&basalt);
    let body = r#"{"key":"aw=="}"#;
    write!(
        s,
        "POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let range = read_reply(&mut r);
    assert!(range.body.contains(r#""value":"MQ==""#), "{range:?}");
    // curl reuses its connection for a second URL.
    let url = format!("{}/v3/kv/range", basalt.endpoint);
    let out = curl(&[
        "-v",
        "-X",
        "POST",
        "-d",
        r#"{"key":"aw=="}"#,
        &url,
        "-d",
        r#"{"key":"aw=="}"#,
        &url,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Re-using existing connection"), "{err}");
}

/// Input that is not a request, or too large, is answered (or the
/// connection closed) at once, and the server goes on serving.
#[tokio::test]
async fn bad_http_never_hangs_or_takes_the_server_down() {
    let basalt = Server::start(Kind::Basalt).await;
    let bad: Vec<Vec<u8>> = vec![
        b"POST /v3/kv/range HTTP/1.1\r\nBroken header\r\n\r\n".to_vec(),
        b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: nine\r\n\r\n".to_vec(),
        b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n".to_vec(),
        b"POST /v3/kv/range HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"POST /v3/kv/range HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nffffffffffffffff\r\n".to_vec(),
        b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"k".to_vec(),
        [
            b"GET /".to_vec(),
            vec![b'a'; 40_000],
            b" HTTP/1.1\r\n\r\n".to_vec(),
        ]
        .concat(),
        b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: 14\r\n\r\n\xff\xfe{\"key\":1}\x00\x01"
            .to_vec(),
    ];
    for wire in &bad {
        let mut s = connect(&basalt);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(wire);
        // Half-close: a request cut short must not wait for more.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        assert!(
            read.is_ok(),
            "no answer nor close within 3 s for {:?}: {read:?}",
            String::from_utf8_lossy(&wire[..wire.len().min(80)])
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{:?} -> {text}",
            String::from_utf8_lossy(&wire[..wire.len().min(80)])
        );
    }
    // A chunked body is read as Go's server reads it.
    let mut s = connect(&basalt);
    s.write_all(b"POST /v3/kv/put HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n{\"key\":\"\r\n15\r\nYw==\",\"value\":\"dg==\"}\r\n0\r\n\r\n").unwrap();
    let put = read_reply(&mut BufReader::new(s));
    assert_eq!(put.status, 200, "{put:?}");
    let r = post(&basalt, "/v3/kv/range", r#"{"key":"Yw=="}"#);
    assert!(r.body.contains(r#""value":"dg==""#), "{r:?}");
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl")
}

/// The gateway over TLS: curl negotiates HTTP/2 by ALPN, or is held to
/// HTTP/1.1; both get the JSON answers, and a watch streams over both.
#[tokio::test]
async fn the_gateway_over_tls_http2_and_http11() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let cert = ca.issue(dir.path(), "server", "basalt", &["127.0.0.1"], 1);
    let flags = [
        format!("--cert-file={}", arg(&cert.cert_file)),
        format!("--key-file={}", arg(&cert.key_file)),
    ];
    let tls = ClientTls {
        ca: Some(ca.cert_file.clone()),
        ..Default::default()
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_tls(Kind::Basalt, tls, &flags).await;
    let cacert = arg(&ca.cert_file);
    for version in ["--http2", "--http1.1"] {
        let url = |p: &str| format!("{}{p}", server.endpoint);
        let put = curl(&[
            version,
            "--cacert",
            &cacert,
            "-X",
            "POST",
            "-d",
            r#"{"key":"dGxz","value":"eWVz"}"#,
            &url("/v3/kv/put"),
        ]);
        assert!(
            String::from_utf8_lossy(&put.stdout).starts_with(r#"{"header":{"cluster_id":""#),
            "{version}: {put:?}"
        );
        let range = curl(&[
            version,
            "--cacert",
            &cacert,
            "-w",
            " %{http_version} %{http_code}",
            "-X",
            "POST",
            "-d",
            r#"{"key":"dGxz"}"#,
            &url("/v3/kv/range"),
        ]);
        let text = String::from_utf8_lossy(&range.stdout);
        let want = if version == "--http2" {
            " 2 200"
        } else {
            " 1.1 200"
        };
        assert!(
            text.contains(r#""value":"eWVz""#) && text.ends_with(want),
            "{version}: {text}"
        );
        let bad = curl(&[
            version,
            "--cacert",
            &cacert,
            "-w",
            " %{http_code}",
            "-X",
            "POST",
            "-d",
            "{",
            &url("/v3/kv/range"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&bad.stdout),
            r#"{"error":"unexpected EOF","code":3,"message":"unexpected EOF"} 400"#
        );
        // A watch streams until curl gives up (--max-time).
        let watch = std::process::Command::new("curl")
            .args([
                "-s",
                "-N",
                "--max-time",
                "3",
                version,
                "--cacert",
                &cacert,
                "-X",
                "POST",
            ])
            .args([
                "-d",
                r#"{"create_request":{"key":"dGxz"}}"#,
                &url("/v3/watch"),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        curl(&[
            version,
            "--cacert",
            &cacert,
            "-X",
            "POST",
            "-d",
            r#"{"key":"dGxz","value":"YWdhaW4="}"#,
            &url("/v3/kv/put"),
        ]);
        let out = watch.wait_with_output().unwrap();
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), 2, "{version}: {lines:?}");
        assert!(
            lines[0].contains(r#""created":true"#),
            "{version}: {lines:?}"
        );
        assert!(
            lines[1].contains(r#""value":"YWdhaW4=""#),
            "{version}: {lines:?}"
        );
    }
}

/// The Python `etcd3gw` client (a real grpc-gateway client) drives etcd and
/// basalt and sees the same things.
#[tokio::test]
async fn python_etcd3gw_sees_what_it_sees_on_etcd() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-etcd3gw/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/etcd3gw_client.py");
    let run = |server: &Server| {
        let port = server.endpoint.rsplit(':').next().unwrap().to_owned();
        let out = Command::new(&python)
            .arg(&script)
            .arg(port)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{:?}: etcd3gw script failed:\n{}\nserver log:\n{}",
            server.kind,
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (etcd, _dir) = start_etcd35().await;
    let expected = run(&etcd);
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let got = run(&basalt);
    assert_eq!(got, expected, "etcd3gw transcript differs from etcd's");
    assert!(got.lines().count() > 10, "{got}");
}

/// The value of one `grpc_server_handled_total` series on `server`.
fn handled(server: &Server, method: &str, code: &str) -> u64 {
    let metrics = http(server, "GET", "/metrics", "").body;
    let series =
        format!("grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",");
    metrics
        .lines()
        .find(|l| l.starts_with(&series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Gateway calls count as the gRPC calls they are (etcd's gateway is a
/// gRPC client of its own server), and a watch whose HTTP client leaves
/// ends at once, idle as it is (counted `Canceled`).
#[tokio::test]
async fn gateway_calls_are_counted_and_end_with_their_client() {
    let basalt = Server::start(Kind::Basalt).await;
    post(&basalt, "/v3/kv/put", r#"{"key":"Yw==","value":"dg=="}"#);
    post(&basalt, "/v3/kv/put", r#"{"key":""}"#);
    assert_eq!(handled(&basalt, "Put", "OK"), 1);
    assert_eq!(handled(&basalt, "Put", "InvalidArgument"), 1);
    let mut s = connect(&basalt);
    s.write_all(&request_bytes(
        "POST",
        "/v3/watch",
        r#"{"create_request":{"key":"Yw=="}}"#,
        false,
    ))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handled(&basalt, "Watch", "Canceled"), 0);
    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while handled(&basalt, "Watch", "Canceled") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch did not end within 5 s of its client leaving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Lock that waits for a holder is dropped when its HTTP client gives
/// up: it never takes the lock for no one, so the next client gets it as
/// soon as the holder unlocks.
#[tokio::test]
async fn a_waiting_lock_ends_with_its_client() {
    let basalt = Server::start(Kind::Basalt).await;
    let held = post(&basalt, "/v3/lock/lock", r#"{"name":"bA=="}"#);
    assert_eq!(held.status, 200, "{held:?}");
    let key = held.body.split(r#""key":""#).nth(1).unwrap();
    let key = &key[..key.find('"').unwrap()];
    let mut waiting = connect(&basalt);
    waiting
        .write_all(&request_bytes(
            "POST",
            "/v3/lock/lock",
            r#"{"name":"bA=="}"#,
            false,
        ))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(waiting);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unlock = post(&basalt, "/v3/lock/unlock", &format!(r#"{{"key":"{key}"}}"#));
    assert_eq!(unlock.status, 200, "{unlock:?}");
    let mut next = connect(&basalt);
    next.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    next.write_all(&request_bytes(
        "POST",
        "/v3/lock/lock",
        r#"{"name":"bA=="}"#,
        true,
    ))
    .unwrap();
    let mut answer = String::new();
    let read = next.read_to_string(&mut answer);
    assert!(
        read.is_ok() && answer.starts_with("HTTP/1.1 200 "),
        "the next Lock waits for the abandoned one: {read:?} {answer}"
    );
    // But a client that sent another request behind its waiting Lock and
    // then half-closed (`printf … | nc -N`) is still there: as with Go's
    // server, bytes behind a request end the watch for its leaving, and
    // both are answered once the lock is free.
    let key = answer.split(r#""key":""#).nth(1).unwrap();
    let key = key[..key.find('"').unwrap()].to_owned();
    let mut s = connect(&basalt);
    let mut wire = request_bytes("POST", "/v3/lock/lock", r#"{"name":"bA=="}"#, false);
    wire.extend(request_bytes(
        "POST",
        "/v3/kv/range",
        r#"{"key":"bA=="}"#,
        true,
    ));
    s.write_all(&wire).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unlock = post(&basalt, "/v3/lock/unlock", &format!(r#"{{"key":"{key}"}}"#));
    assert_eq!(unlock.status, 200, "{unlock:?}");
    let mut r = BufReader::new(s);
    let lock = read_reply(&mut r);
    assert_eq!(lock.status, 200, "{lock:?}");
    assert_eq!(read_reply(&mut r).status, 200);
}

/// One POST with an `Authorization` header (the token, as etcd's gateway
/// takes it).
fn post_with_token(server: &Server, path: &str, body: &str, token: &str) -> Reply {
    let mut s = connect(server);
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_reply(&mut BufReader::new(s))
}

/// Auth through the gateway: enable it, authenticate, and the token in the
/// `Authorization` header is the caller's identity; without it, or with a
/// bad one, etcd's errors.
async fn auth_transcript(server: &Server) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = |what: &str, r: Reply| {
        out.push(format!("{what} -> {} {}", r.status, blank(&r.body, IDS)));
    };
    line(
        "user add",
        post(
            server,
            "/v3/auth/user/add",
            r#"{"name":"root","password":"pw"}"#,
        ),
    );
    line(
        "grant",
        post(
            server,
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#,
        ),
    );
    line("enable", post(server, "/v3/auth/enable", "{}"));
    line(
        "put, no token",
        post(server, "/v3/kv/put", r#"{"key":"YQ==","value":"Yg=="}"#),
    );
    let auth = post(
        server,
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
    );
    let token = auth
        .body
        .split(r#""token":""#)
        .nth(1)
        .unwrap_or("\"")
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    line(
        "authenticate",
        Reply {
            body: blank(&auth.body, &["token"]),
            ..auth
        },
    );
    line(
        "wrong password",
        post(
            server,
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"no"}"#,
        ),
    );
    line(
        "put, token",
        post_with_token(
            server,
            "/v3/kv/put",
            r#"{"key":"YQ==","value":"Yg=="}"#,
            &token,
        ),
    );
    line(
        "put, bad token",
        post_with_token(
            server,
            "/v3/kv/put",
            r#"{"key":"YQ==","value":"Yg=="}"#,
            "bogus",
        ),
    );
    line(
        "user list",
        post_with_token(server, "/v3/auth/user/list", "{}", &token),
    );
    line(
        "disable",
        post_with_token(server, "/v3/auth/disable", "{}", &token),
    );
    line(
        "put after",
        post(server, "/v3/kv/put", r#"{"key":"YQ==","value":"Yw=="}"#),
    );
    out
}

#[tokio::test]
async fn auth_tokens_through_the_gateway_as_on_etcd() {
    let (etcd, _dir) = start_etcd35().await;
    let expected = auth_transcript(&etcd).await;
    drop(etcd);
    assert!(expected[6].contains("put, token -> 200"), "{expected:#?}");
    let basalt = Server::start(Kind::Basalt).await;
    assert_same(&expected, &auth_transcript(&basalt).await);
}

/// The value of a string field `"name":"…"` in a JSON body (the first).
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    let pattern = format!("\"{name}\":\"");
    let start = body.find(&pattern).map(|i| i + pattern.len()).unwrap_or(0);
    &body[start..start + body[start..].find('"').unwrap_or(0)]
}

/// The Election service through the gateway: campaign with a lease, the
/// leader, proclaim, observe's first answer, resign, then no leader.
async fn election_transcript(server: &Server) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = |what: &str, r: &Reply| {
        out.push(format!("{what} -> {} {}", r.status, blank(&r.body, IDS)));
    };
    line(
        "grant",
        &post(server, "/v3/lease/grant", r#"{"TTL":60,"ID":"1365"}"#),
    );
    let won = post(
        server,
        "/v3/election/campaign",
        r#"{"name":"ZQ==","lease":"1365","value":"djE="}"#,
    );
    line("campaign", &won);
    let leader = format!(
        r#"{{"name":"ZQ==","key":"{}","rev":"{}","lease":"1365"}}"#,
        field(&won.body, "key"),
        field(&won.body, "rev")
    );
    line(
        "leader",
        &post(server, "/v3/election/leader", r#"{"name":"ZQ=="}"#),
    );
    line(
        "proclaim",
        &post(
            server,
            "/v3/election/proclaim",
            &format!(r#"{{"leader":{leader},"value":"djI="}}"#),
        ),
    );
    let (head, mut observe) =
        StreamReader::open(server, "/v3/election/observe", r#"{"name":"ZQ=="}"#);
    let first = observe.line().unwrap_or_default();
    line(
        "observe",
        &Reply {
            body: first,
            ..head
        },
    );
    drop(observe);
    line(
        "resign",
        &post(
            server,
            "/v3/election/resign",
            &format!(r#"{{"leader":{leader}}}"#),
        ),
    );
    line(
        "leader after",
        &post(server, "/v3/election/leader", r#"{"name":"ZQ=="}"#),
    );
    line(
        "proclaim after",
        &post(
            server,
            "/v3/election/proclaim",
            &format!(r#"{{"leader":{leader},"value":"djM="}}"#),
        ),
    );
    out
}

#[tokio::test]
async fn election_through_the_gateway_as_on_etcd() {
    let (etcd, _dir) = start_etcd35().await;
    let expected = election_transcript(&etcd).await;
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let got = election_transcript(&basalt).await;
    assert_same(&expected, &got);
    assert!(
        got[1].contains(r#""leader":{"name":"ZQ==","key":"ZS81NTU=""#),
        "{got:#?}"
    );
}

/// A large answer, sent by the handler in parts (and across executors on
/// two cores), arrives whole: a range over eight values of 150 KB.
#[tokio::test]
async fn large_answers_arrive_whole_on_two_cores() {
    let basalt = Server::start_with(Kind::Basalt, &["--cores", "2"]).await;
    // 150,000 bytes of 'x' is 200,000 base64 characters of 'eHh4'.
    let value = "eHh4".repeat(50_000);
    for i in 0..8 {
        let key = [
            "bDA=", "bDE=", "bDI=", "bDM=", "bDQ=", "bDU=", "bDY=", "bDc=",
        ][i];
        let put = post(
            &basalt,
            "/v3/kv/put",
            &format!(r#"{{"key":"{key}","value":"{value}"}}"#),
        );
        assert_eq!(put.status, 200, "{put:?}");
    }
    for _ in 0..4 {
        // Every executor in turn (connections are spread over them).
        let r = post(
            &basalt,
            "/v3/kv/range",
            r#"{"key":"bA==","range_end":"bQ=="}"#,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body.matches(&format!(r#""value":"{value}""#)).count(), 8);
        assert!(
            r.body.ends_with(r#""count":"8"}"#),
            "{}",
            &r.body[r.body.len() - 40..]
        );
    }
}
