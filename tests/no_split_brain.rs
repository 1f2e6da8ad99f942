//! The setups in which basalt would silently serve diverging copies of the
//! data are refused: joining a cluster no member answers for (the member
//! would start alone) and a second process on a port basalt holds. And the port rules etcd users rely on: a restarted member
//! rebinds its port at once, and basalt's own executors all serve the one
//! port.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, Kind, Server};

/// Runs basalt to completion with `args` (it must exit by itself).
fn run_basalt(data_dir: &Path, args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start basalt");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "basalt {args:?} kept running; it must refuse and exit:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn member_args(name: &str, client: u16, peer: u16, cluster: &str) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client}");
    let peer = format!("http://127.0.0.1:{peer}");
    [
        "--name",
        name,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        cluster,
        "--initial-cluster-token",
        "refusal-test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn nothing_listens_on(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_err()
}

/// A member told to join a running cluster that no peer answers for exits
/// with etcd's message rather than start alone.
#[test]
fn joining_a_cluster_no_peer_answers_for_is_refused_like_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let mut args = member_args(
        "solo",
        client,
        peer,
        &format!("solo=http://127.0.0.1:{peer}"),
    );
    args.extend(["--initial-cluster-state".into(), "existing".into()]);
    let out = run_basalt(&dir.path().join("d"), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cannot fetch cluster info from peer urls: could not retrieve cluster information \
             from the given URLs"
        ),
        "{stderr}"
    );
    assert!(nothing_listens_on(client));
}

/// `etcdctl member list` on a single member shows that member only, with
/// its real URLs.
#[tokio::test]
async fn member_list_shows_only_real_members() {
    let server = Server::start(Kind::Basalt).await;
    let out = server.etcdctl(&["member", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("started, default,"), "{text}");
    assert!(lines[0].contains(&server.endpoint), "{text}");
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Connections made to `port` all reach the first server: each sees the
/// key only that server holds.
async fn every_connection_reaches(port: u16, key: &str) {
    for _ in 0..12 {
        let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .expect("connect");
        let got = c.get(key, None).await.expect("get");
        assert_eq!(got.kvs().len(), 1, "a connection reached another store");
    }
}

#[tokio::test]
async fn a_second_process_on_a_taken_client_port_exits_and_the_first_keeps_serving() {
    let first = Server::start_with(Kind::Basalt, &["--cores", "2"]).await;
    first
        .client()
        .await
        .put("only-on-first", "1", None)
        .await
        .unwrap();
    let port = port_of(&first.endpoint);
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = free_port();
    let args = member_args(
        "default",
        port,
        peer,
        &format!("default=http://127.0.0.1:{peer}"),
    );
    let out = run_basalt(&dir.path().join("second"), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen for client traffic on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Address already in use"), "{stderr}");

    // Another kind of process, asking for the port sharing basalt's
    // executors used to offer any same-user process: refused too.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other.set_reuse_address(true).unwrap();
    let taken = other.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into());
    assert_eq!(
        taken.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse),
        "an SO_REUSEPORT socket could share basalt's client port"
    );
    drop(other);

    every_connection_reaches(port, "only-on-first").await;
}

#[tokio::test]
async fn a_second_process_on_a_taken_peer_port_exits() {
    let first = Server::start(Kind::Basalt).await;
    // The test support gives every server its own peer port; `member list`
    // prints it: "id, started, name, peer URLs, client URLs, is learner".
    let out = first.etcdctl(&["member", "list"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let peer_url = text.split(", ").nth(3).expect("peer url in member list");
    let peer_port = port_of(peer_url);
    let dir = tempfile::tempdir().expect("tempdir");
    let client = free_port();
    let args = member_args(
        "default",
        client,
        peer_port,
        &format!("default=http://127.0.0.1:{peer_port}"),
    );
    let out = run_basalt(&dir.path().join("second"), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen for peer traffic on 127.0.0.1:{peer_port}"
        )),
        "{stderr}"
    );
    assert!(
        nothing_listens_on(client),
        "the refused process left a listener"
    );
    // The first one is unharmed.
    let mut c = first.client().await;
    c.put("k", "v", None).await.expect("first still serves");
}

/// Sockets on `port` in TIME_WAIT, from /proc/net/tcp (state 06).
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[3] == "06" && fields[1].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

/// A member killed while clients were connected leaves its side of their
/// connections in TIME_WAIT; the restarted member binds the port at once
/// (SO_REUSEADDR, as etcd), instead of failing for about a minute.
#[tokio::test]
async fn a_restarted_member_rebinds_its_port_at_once() {
    let mut server = Server::start(Kind::Basalt).await;
    let port = port_of(&server.endpoint);
    for i in 0..4 {
        let mut c = server.client().await;
        c.put(format!("k{i}"), "v", None).await.unwrap();
    }
    // Idle connections (nothing unread on the server's side, so its close
    // is a FIN, not a reset).
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    // The server's end closes first (once the kernel has torn down the
    // dead process's io_uring, which can take a moment); the clients'
    // close then completes it.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while time_wait_on(port) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        time_wait_on(port) > 0,
        "no TIME_WAIT connection on port {port}: the test would prove nothing"
    );
    let started = Instant::now();
    let server = server.restart_on_same_ports(&[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "rebinding took {:?}",
        started.elapsed()
    );
    let got = server.client().await.get("k3", None).await.unwrap();
    assert_eq!(got.kvs().len(), 1);
}

/// `/metrics` on the client port, over HTTP/1.
fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn connections_of(metrics: &str, executor: usize) -> u64 {
    let prefix = format!("basalt_executor_client_connections_total{{executor=\"{executor}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no connection count for executor {executor}:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// With one listening socket for the process, basalt's two executors still
/// both serve clients: connections are dealt to them in turn.
#[tokio::test]
async fn every_executor_serves_connections_on_the_one_port() {
    let server = Server::start_with(Kind::Basalt, &["--cores", "2"]).await;
    let port = port_of(&server.endpoint);
    let before = scrape(port);
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c = server.client().await;
        c.put(format!("k{i}"), "v", None).await.unwrap();
        clients.push(c);
    }
    let after = scrape(port);
    for executor in 0..2 {
        let gained = connections_of(&after, executor) - connections_of(&before, executor);
        assert!(
            gained >= 3,
            "executor {executor} was given {gained} of 9 new connections"
        );
    }
}
