//! TLS on the client listeners, with real clients (etcdctl 3.4, curl, the
//! Rust `etcd-client`, a bare rustls handshake), each scenario run against
//! etcd 3.4 too where both should behave alike. Certificates are made by
//! the test (rcgen).

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use support::pki::{arg, Ca, Issued};
use support::{free_port, ClientTls, Kind, Server};

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Issued,
    client: Issued,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue(
        dir.path(),
        "server",
        "basalt-server",
        &["127.0.0.1", "localhost"],
        1,
    );
    let client = ca.issue(dir.path(), "client", "root", &[], 2);
    Pki {
        dir,
        ca,
        server,
        client,
    }
}

impl Pki {
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, and
    /// `--client-cert-auth` if asked.
    fn server_flags(&self, client_cert_auth: bool) -> Vec<String> {
        let mut flags = vec![
            format!("--cert-file={}", arg(&self.server.cert_file)),
            format!("--key-file={}", arg(&self.server.key_file)),
        ];
        if client_cert_auth {
            flags.push(format!("--trusted-ca-file={}", arg(&self.ca.cert_file)));
            flags.push("--client-cert-auth".into());
        }
        flags
    }

    fn with_client_cert(&self) -> ClientTls {
        ClientTls {
            ca: Some(self.ca.cert_file.clone()),
            cert: Some((self.client.cert_file.clone(), self.client.key_file.clone())),
            also_listen: Vec::new(),
        }
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// etcdctl with exactly `tls` (not the server's own client settings).
fn etcdctl_as(server: &Server, tls: &ClientTls, args: &[&str]) -> Output {
    Command::new(support::ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&server.endpoint)
        .args(["--dial-timeout=2s", "--command-timeout=3s"])
        .args(tls.etcdctl_args())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// With `--client-cert-auth`, etcdctl with a client certificate works;
/// without one, or trusting another CA, it is refused: etcd and basalt
/// alike (etcdctl reports "context deadline exceeded" and exits 1).
#[tokio::test]
async fn client_certificates_are_required_and_checked_like_etcd() {
    let p = pki();
    let other_ca = Ca::new(p.dir.path(), "other-ca");
    let mut seen = Vec::new();
    for kind in [Kind::Etcd, Kind::Basalt] {
        let flags = p.server_flags(true);
        let server = Server::start_tls(kind, p.with_client_cert(), &strs(&flags)).await;
        let put = server.etcdctl(&["put", "greeting", "hello"]);
        assert!(put.status.success(), "{kind:?}: {}", text(&put));
        let get = server.etcdctl(&["get", "greeting"]);
        assert_eq!(
            String::from_utf8_lossy(&get.stdout),
            "greeting\nhello\n",
            "{kind:?}"
        );
        let no_cert = ClientTls {
            ca: Some(p.ca.cert_file.clone()),
            ..ClientTls::default()
        };
        let refused = etcdctl_as(&server, &no_cert, &["get", "greeting"]);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{kind:?}: {}",
            text(&refused)
        );
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("context deadline exceeded"),
            "{kind:?}: {}",
            text(&refused)
        );
        let wrong_ca = ClientTls {
            ca: Some(other_ca.cert_file.clone()),
            ..p.with_client_cert()
        };
        let refused_ca = etcdctl_as(&server, &wrong_ca, &["get", "greeting"]);
        assert_eq!(
            refused_ca.status.code(),
            Some(1),
            "{kind:?}: {}",
            text(&refused_ca)
        );
        // The server goes on serving everyone else.
        let again = server.etcdctl(&["get", "greeting", "--print-value-only"]);
        assert_eq!(String::from_utf8_lossy(&again.stdout), "hello\n");
        seen.push((
            put.stdout,
            get.stdout,
            refused.status.code(),
            refused_ca.status.code(),
        ));
    }
    assert_eq!(seen[0], seen[1], "etcd and basalt differ");
}

/// An `https` and an `http` client URL side by side, as etcd allows: the
/// same data on both; plain text on the TLS port and TLS on the plain
/// port get nowhere, and the server keeps serving.
#[tokio::test]
async fn plain_and_tls_listeners_side_by_side() {
    let p = pki();
    let plain = format!("http://127.0.0.1:{}", free_port());
    let mut tls = p.with_client_cert();
    tls.also_listen.push(plain.clone());
    let flags = p.server_flags(true);
    let server = Server::start_tls(Kind::Basalt, tls, &strs(&flags)).await;
    assert!(server.etcdctl(&["put", "k", "over-tls"]).status.success());
    let over_plain = Command::new(support::ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &plain, "get", "k", "--print-value-only"])
        .output()
        .expect("etcdctl");
    assert_eq!(String::from_utf8_lossy(&over_plain.stdout), "over-tls\n");
    // Plain text on the TLS port.
    let plain_on_tls = Command::new(support::ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &server.endpoint.replace("https", "http")])
        .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "k"])
        .output()
        .expect("etcdctl");
    assert!(!plain_on_tls.status.success(), "{}", text(&plain_on_tls));
    // TLS on the plain port.
    let tls_on_plain = Command::new(support::ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &plain.replace("http", "https")])
        .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "k"])
        .args(p.with_client_cert().etcdctl_args())
        .output()
        .expect("etcdctl");
    assert!(!tls_on_plain.status.success(), "{}", text(&tls_on_plain));
    let still = server.etcdctl(&["get", "k", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&still.stdout), "over-tls\n");
}

/// `--auto-tls`: a self-signed certificate in the data dir that etcdctl
/// accepts with `--insecure-skip-tls-verify`, as with etcd.
#[tokio::test]
async fn auto_tls_serves_a_self_signed_certificate_like_etcd() {
    for kind in [Kind::Etcd, Kind::Basalt] {
        let server = Server::start_tls(kind, ClientTls::default(), &["--auto-tls"]).await;
        let put = server.etcdctl(&["put", "k", "v"]);
        assert!(put.status.success(), "{kind:?}: {}", text(&put));
        let get = server.etcdctl(&["get", "k", "--print-value-only"]);
        assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n", "{kind:?}");
        let fixtures = server.data_dir().join("fixtures/client");
        assert!(fixtures.join("cert.pem").exists(), "{kind:?}");
        assert!(fixtures.join("key.pem").exists(), "{kind:?}");
        // Verified against nothing it is refused: it is self-signed.
        let verified = Command::new(support::ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &server.endpoint])
            .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "k"])
            .output()
            .expect("etcdctl");
        assert_eq!(
            verified.status.code(),
            Some(1),
            "{kind:?}: {}",
            text(&verified)
        );
    }
}

/// The certificate a fresh TLS handshake with `endpoint` is served.
fn served_certificate(endpoint: &str, ca: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA");
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let addr = endpoint.trim_start_matches("https://");
    let mut sock = std::net::TcpStream::connect(addr).expect("connect");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    conn.peer_certificates().expect("a certificate")[0].to_vec()
}

/// A certificate rotated on disk is served to the next handshake, without
/// a restart; a half-written rotation (a certificate without its key)
/// keeps the previous one serving.
#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart() {
    let p = pki();
    let tls = ClientTls {
        ca: Some(p.ca.cert_file.clone()),
        ..ClientTls::default()
    };
    let flags = p.server_flags(false);
    let server = Server::start_tls(Kind::Basalt, tls, &strs(&flags)).await;
    assert_eq!(
        served_certificate(&server.endpoint, &p.ca.cert_file),
        p.server.der
    );
    let rotated =
        p.ca.issue(p.dir.path(), "server", "basalt-server", &["127.0.0.1"], 3);
    assert_ne!(rotated.der, p.server.der);
    assert_eq!(
        served_certificate(&server.endpoint, &p.ca.cert_file),
        rotated.der,
        "the rotated certificate (serial {}) is not served",
        rotated.serial
    );
    assert!(server
        .etcdctl(&["put", "after", "rotation"])
        .status
        .success());
    // Only the certificate replaced, its key not yet: the pair does not
    // match, so the last good pair serves.
    let next =
        p.ca.issue(p.dir.path(), "next", "basalt-server", &["127.0.0.1"], 4);
    std::fs::copy(&next.cert_file, &p.server.cert_file).expect("copy");
    assert_eq!(
        served_certificate(&server.endpoint, &p.ca.cert_file),
        rotated.der
    );
    assert!(
        server.log().contains("serving the previous certificate"),
        "{}",
        server.log()
    );
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl")
}

/// `/metrics` and `/health` over TLS on the client port (HTTP/2 and
/// HTTP/1.1) and on an `https` `--listen-metrics-urls`, with the client
/// certificate rules of the client port.
#[tokio::test]
async fn metrics_and_health_over_https() {
    let p = pki();
    let metrics = format!("https://127.0.0.1:{}", free_port());
    let mut flags = p.server_flags(true);
    flags.push(format!("--listen-metrics-urls={metrics}"));
    let server = Server::start_tls(Kind::Basalt, p.with_client_cert(), &strs(&flags)).await;
    let (ca, cert, key) = (
        arg(&p.ca.cert_file),
        arg(&p.client.cert_file),
        arg(&p.client.key_file),
    );
    let with_cert = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    for base in [&server.endpoint, &metrics] {
        for version in ["--http2", "--http1.1"] {
            let health = curl(&[&with_cert[..], &[version, &format!("{base}/health")]].concat());
            assert_eq!(
                String::from_utf8_lossy(&health.stdout),
                r#"{"health":"true","reason":""}"#,
                "{base} {version}: {}",
                text(&health)
            );
            let scrape = curl(&[&with_cert[..], &[version, &format!("{base}/metrics")]].concat());
            assert!(
                String::from_utf8_lossy(&scrape.stdout).contains("etcd_server_has_leader 1\n"),
                "{base} {version}: {}",
                text(&scrape)
            );
        }
        let no_cert = curl(&["--cacert", &ca, &format!("{base}/health")]);
        assert!(!no_cert.status.success(), "{base}: {}", text(&no_cert));
    }
}

/// The Rust client (tonic over rustls) with a client certificate.
#[tokio::test]
async fn the_rust_client_speaks_tls() {
    let p = pki();
    let flags = p.server_flags(true);
    let server = Server::start_tls(Kind::Basalt, p.with_client_cert(), &strs(&flags)).await;
    let mut c = server.client().await;
    c.put("rust", "tls", None).await.expect("put over TLS");
    let got = c.get("rust", None).await.expect("get over TLS");
    assert_eq!(got.kvs()[0].value(), b"tls");
}

/// `--client-crl-file`: a revoked client certificate is refused, others
/// are served, and a new list is read without a restart, as with etcd.
#[tokio::test]
async fn a_revoked_client_certificate_is_refused_like_etcd() {
    let p = pki();
    let revoked = p.ca.issue(p.dir.path(), "revoked", "mallory", &[], 9);
    let crl = p.ca.revoke(p.dir.path(), "crl.pem", &[&revoked]);
    for kind in [Kind::Etcd, Kind::Basalt] {
        let mut flags = p.server_flags(true);
        flags.push(format!("--client-crl-file={}", arg(&crl)));
        let server = Server::start_tls(kind, p.with_client_cert(), &strs(&flags)).await;
        assert!(
            server.etcdctl(&["put", "k", "v"]).status.success(),
            "{kind:?}"
        );
        let as_revoked = ClientTls {
            ca: Some(p.ca.cert_file.clone()),
            cert: Some((revoked.cert_file.clone(), revoked.key_file.clone())),
            also_listen: Vec::new(),
        };
        let refused = etcdctl_as(&server, &as_revoked, &["get", "k"]);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{kind:?}: {}",
            text(&refused)
        );
        // Revoking the served client too takes effect without a restart.
        p.ca.revoke(p.dir.path(), "crl.pem", &[&revoked, &p.client]);
        let now_refused = etcdctl_as(&server, &p.with_client_cert(), &["get", "k"]);
        assert_eq!(
            now_refused.status.code(),
            Some(1),
            "{kind:?}: {}",
            text(&now_refused)
        );
        p.ca.revoke(p.dir.path(), "crl.pem", &[&revoked]);
    }
}

/// Kills (by its own PID) and reaps a process on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tuning/profiles/kubeadm-basalt.yaml` starts as written (its flags,
/// with kubeadm's file names, on free loopback ports), and etcdctl with
/// the kube-apiserver's client certificate uses it.
#[tokio::test]
async fn the_kubeadm_profile_starts_and_serves_a_kubeadm_client() {
    let manifest = include_str!("../tuning/profiles/kubeadm-basalt.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let node_ip = "127.0.0.2";
    // kubeadm's etcd PKI: one CA; server and peer certificates for the
    // node's names; the API server's client certificate.
    let ca = Ca::new(&pki, "ca");
    let hosts = ["localhost", "node", "127.0.0.1", node_ip, "::1"];
    let server = ca.issue(&pki, "server", "node", &hosts, 1);
    let peer = ca.issue(&pki, "peer", "node", &hosts, 2);
    let client = ca.issue(
        &pki,
        "apiserver-etcd-client",
        "kube-apiserver-etcd-client",
        &[],
        3,
    );
    for (from, to) in [
        (&ca.cert_file, "ca.crt"),
        (&server.cert_file, "server.crt"),
        (&server.key_file, "server.key"),
        (&peer.cert_file, "peer.crt"),
        (&peer.key_file, "peer.key"),
    ] {
        std::fs::copy(from, pki.join(to)).expect("copy");
    }
    let (client_port, peer_port, metrics_port) = (free_port(), free_port(), free_port());
    let args: Vec<String> = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("command:"))
        .skip(2) // "command:" and "- basalt"
        .map_while(|l| l.trim_start().strip_prefix("- --"))
        .map(|flag| {
            format!("--{flag}")
                .replace("NODE_NAME", "node")
                .replace("NODE_IP", node_ip)
                .replace(":2379", &format!(":{client_port}"))
                .replace(":2380", &format!(":{peer_port}"))
                .replace(":2381", &format!(":{metrics_port}"))
                .replace("/etc/kubernetes/pki/etcd", &pki.display().to_string())
                .replace(
                    "/var/lib/etcd",
                    &dir.path().join("data").display().to_string(),
                )
        })
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("--cert-file=")),
        "{args:?}"
    );
    let log = std::fs::File::create(dir.path().join("basalt.log")).expect("log");
    let _basalt = Running(
        Command::new(env!("CARGO_BIN_EXE_basalt"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start basalt"),
    );
    let endpoint = format!("https://{node_ip}:{client_port}");
    let etcdctl = |args: &[&str]| {
        Command::new(support::ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "--command-timeout=3s"])
            .arg(format!("--cacert={}", arg(&pki.join("ca.crt"))))
            .arg(format!("--cert={}", arg(&client.cert_file)))
            .arg(format!("--key={}", arg(&client.key_file)))
            .args(args)
            .output()
            .expect("etcdctl")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !etcdctl(&["put", "/registry/pods/default/p", "x"])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the kubeadm profile did not serve:\n{}",
            std::fs::read_to_string(dir.path().join("basalt.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let got = etcdctl(&["get", "/registry/pods/default/p", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "x\n");
    let ready = curl(&[&format!("http://127.0.0.1:{metrics_port}/readyz")]);
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ok");
}

/// `--cipher-suites` narrows TLS 1.2 to the listed suites (etcd 3.4 and
/// basalt alike); `--tls-min-version=TLS1.3` (etcd 3.5) refuses TLS 1.2.
#[tokio::test]
async fn cipher_suites_and_tls_versions_narrow_the_handshake() {
    let p = pki();
    let ca = arg(&p.ca.cert_file);
    let health = |endpoint: &str, how: &[&str]| {
        let out = curl(
            &[
                &["--cacert", &ca][..],
                how,
                &[&format!("{endpoint}/health")],
            ]
            .concat(),
        );
        out.status.success()
    };
    let tls12 = ["--tls-max", "1.2"];
    for kind in [Kind::Etcd, Kind::Basalt] {
        let mut flags = p.server_flags(false);
        flags.push("--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into());
        let tls = ClientTls {
            ca: Some(p.ca.cert_file.clone()),
            ..ClientTls::default()
        };
        let server = Server::start_tls(kind, tls, &strs(&flags)).await;
        let e = &server.endpoint;
        let listed = [&tls12[..], &["--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"]].concat();
        let unlisted = [&tls12[..], &["--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]].concat();
        assert!(health(e, &listed), "{kind:?}: a listed suite is refused");
        assert!(
            !health(e, &unlisted),
            "{kind:?}: an unlisted suite is served"
        );
        assert!(
            health(e, &["--tlsv1.3"]),
            "{kind:?}: TLS 1.3 is not offered"
        );
    }
    let mut flags = p.server_flags(false);
    flags.push("--tls-min-version=TLS1.3".into());
    let tls = ClientTls {
        ca: Some(p.ca.cert_file.clone()),
        ..ClientTls::default()
    };
    let server = Server::start_tls(Kind::Basalt, tls, &strs(&flags)).await;
    assert!(!health(&server.endpoint, &tls12), "TLS 1.2 is served");
    assert!(health(&server.endpoint, &["--tlsv1.3"]));
}

/// Expired and not yet valid client certificates are refused (etcd 3.4
/// and basalt alike), and garbage instead of a TLS hello gets the
/// connection closed and a log line; the server keeps serving.
#[tokio::test]
async fn expired_certificates_and_garbage_handshakes_are_refused() {
    use std::io::{Read, Write};
    let p = pki();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let expired = p.ca.issue_valid(
        p.dir.path(),
        "expired",
        "old",
        &[],
        20,
        (now - 10 * day, now - day),
    );
    let early = p.ca.issue_valid(
        p.dir.path(),
        "early",
        "new",
        &[],
        21,
        (now + day, now + 10 * day),
    );
    for kind in [Kind::Etcd, Kind::Basalt] {
        let flags = p.server_flags(true);
        let server = Server::start_tls(kind, p.with_client_cert(), &strs(&flags)).await;
        for bad in [&expired, &early] {
            let tls = ClientTls {
                ca: Some(p.ca.cert_file.clone()),
                cert: Some((bad.cert_file.clone(), bad.key_file.clone())),
                also_listen: Vec::new(),
            };
            let refused = etcdctl_as(&server, &tls, &["get", "k"]);
            assert_eq!(
                refused.status.code(),
                Some(1),
                "{kind:?}: {}",
                text(&refused)
            );
        }
        let addr = server.endpoint.trim_start_matches("https://").to_string();
        let mut garbage = std::net::TcpStream::connect(&addr).expect("connect");
        garbage
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        garbage.write_all(&[0x42; 512]).expect("write garbage");
        let mut buf = [0u8; 64];
        // Closed (possibly after an alert), never left hanging.
        loop {
            match garbage.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{kind:?}: garbage left the connection open: {e}"),
            }
        }
        assert!(
            server
                .etcdctl(&["put", "k", "still-serving"])
                .status
                .success(),
            "{kind:?}"
        );
        assert!(
            server.log().contains("rejected connection"),
            "{kind:?}: {}",
            server.log()
        );
    }
}
