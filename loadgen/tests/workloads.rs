//! Every etcd-benchmark workload for a few seconds against a real etcd:
//! the report must be complete and error-free, and the counts must match
//! what the workload did.

mod etcd;

use std::path::Path;

use etcd::{Etcd, Pki};
use serde_json::Value;

/// Runs loadgen with `--json`, checks it succeeded, returns the report.
fn run(etcd: &Etcd, dir: &Path, args: &[&str]) -> Value {
    let json = dir.join("report.json");
    let mut all: Vec<&str> = vec!["--json", json.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = etcd.loadgen(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_complete(&report, &format!("{stdout}\n{stderr}"));
    report
}

/// The schema, no errors, sane percentiles.
fn check_complete(report: &Value, output: &str) {
    assert!(report["profile"].is_string(), "{report}");
    assert!(report["duration_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["throughput_ops_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let ops = report["ops"].as_object().unwrap();
    assert!(!ops.is_empty(), "{report}");
    for (name, op) in ops {
        assert_eq!(
            op["errors"].as_u64(),
            Some(0),
            "{name} has errors: {report}\n{output}"
        );
        let p: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
            .iter()
            .map(|k| {
                op[*k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name}.{k} missing"))
            })
            .collect();
        assert!(
            p.windows(2).all(|w| w[0] <= w[1]),
            "{name}: percentiles not ordered: {p:?}"
        );
        if op["count"].as_u64().unwrap() > 0 {
            assert!(p[0] > 0.0, "{name}: zero latency");
        }
    }
}

fn count(report: &Value, op: &str) -> u64 {
    report["ops"][op]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no op {op} in {report}"))
}

#[test]
fn put() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--conns",
            "2",
            "--clients",
            "8",
            "--total",
            "1500",
            "put",
            "--key-space-size",
            "100",
            "--val-size",
            "256",
        ],
    );
    assert_eq!(r["profile"], "put");
    assert_eq!(count(&r, "put"), 1500);
}

#[test]
fn put_with_rate_and_duration_and_compaction() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--clients",
            "16",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--compact-interval",
            "500ms",
            "put",
            "--sequential-keys",
            "--key-space-size",
            "50",
        ],
    );
    let puts = count(&r, "put");
    // 200/s for 2 s: never above the rate (the slots are fixed), and
    // not far below it unless the machine is very loaded.
    assert!((100..=401).contains(&puts), "{puts} puts");
    assert!(count(&r, "compact-probe") >= 1, "{r}");
}

#[test]
fn range_variants() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    run(
        &etcd,
        dir.path(),
        &[
            "--total",
            "300",
            "put",
            "--key-space-size",
            "300",
            "--sequential-keys",
            "--prefix",
            "r/",
        ],
    );
    let single = run(
        &etcd,
        dir.path(),
        &["--clients", "4", "--total", "400", "range", "r/000001"],
    );
    assert_eq!(count(&single, "range"), 400);
    let prefix = run(
        &etcd,
        dir.path(),
        &[
            "--clients",
            "2",
            "--total",
            "100",
            "range",
            "r/",
            "--prefix",
            "--consistency",
            "s",
            "--limit",
            "50",
            "--keys-only",
        ],
    );
    assert_eq!(count(&prefix, "range"), 100);
    let counted = run(
        &etcd,
        dir.path(),
        &["--total", "50", "range", "r/0", "r/1", "--count-only"],
    );
    assert_eq!(count(&counted, "range"), 50);
}

/// Catches a range response decoded wrong (kvs dropped or cut short): the
/// bytes loadgen reports must be exactly the keys and values etcd holds.
#[test]
fn range_reports_every_byte_it_read() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    run(
        &etcd,
        dir.path(),
        &[
            "--total",
            "200",
            "put",
            "--key-space-size",
            "200",
            "--sequential-keys",
            "--prefix",
            "b/",
            "--key-size",
            "8",
            "--val-size",
            "100",
        ],
    );
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--conns",
            "2",
            "--clients",
            "4",
            "--total",
            "40",
            "range",
            "b/",
            "--prefix",
            "--limit",
            "50",
        ],
    );
    assert_eq!(count(&r, "range"), 40);
    let bytes = r["bytes_per_s"].as_f64().unwrap() * r["duration_s"].as_f64().unwrap();
    let expected = 40.0 * 50.0 * (8.0 + 100.0);
    assert!(
        (bytes - expected).abs() < 1e-6 * expected,
        "{bytes} bytes read, expected {expected}: {r}"
    );
}

/// Catches a lean-path call that swallows a server's gRPC error: etcd
/// refuses a value over its 1.5 MiB request limit, and each refusal must
/// count as a failed put (exit status 1) with etcd's message.
#[test]
fn a_refused_request_counts_as_an_error() {
    let etcd = Etcd::start();
    let out = etcd.loadgen(&["--total", "3", "put", "--val-size", "2000000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("request is too large"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let put = stdout
        .lines()
        .find(|l| l.starts_with("put "))
        .unwrap_or_else(|| panic!("no put line in {stdout}"));
    let fields: Vec<&str> = put.split_whitespace().collect();
    assert_eq!(&fields[1..3], ["0", "3"], "count 0, errors 3: {stdout}");
}

/// Catches the lean path's TLS going wrong: put and range over https with
/// a client certificate succeed (etcd checks it), and without one the
/// run cannot even connect (exit status 2).
#[test]
fn put_and_range_over_tls() {
    let pki = Pki::generate();
    let etcd = Etcd::start_tls(&pki);
    let dir = tempfile::tempdir().unwrap();
    let flags = pki.client_flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--conns", "2", "--clients", "4", "--total", "200", "put"]);
    assert_eq!(count(&run(&etcd, dir.path(), &args), "put"), 200);
    args.truncate(flags.len());
    args.extend([
        "--conns",
        "2",
        "--clients",
        "4",
        "--total",
        "200",
        "range",
        "k",
    ]);
    assert_eq!(count(&run(&etcd, dir.path(), &args), "range"), 200);
    let ca = pki.file("ca.pem");
    let out = etcd.loadgen(&["--cacert", &ca, "--total", "5", "put"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Catches a lean channel that never dials again: etcd is killed and
/// restarted in the middle of a paced put run, and puts must succeed
/// again once it is back (the ones in between count as failures).
#[test]
fn put_recovers_after_a_server_restart() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--endpoints", &etcd.endpoint, "--no-progress", "--json"])
        .arg(&json)
        .args([
            "--conns",
            "2",
            "--clients",
            "4",
            "--rate",
            "100",
            "--duration",
            "7s",
            "put",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    etcd.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failures while etcd was down: {stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // ~150 puts before the kill; a channel that stays dead adds none.
    let puts = count(&report, "put");
    assert!(
        puts > 250,
        "{puts} puts: no recovery after the restart: {report}\n{stderr}"
    );
}

/// Catches a Txn whose ops etcd reads as something else (a put sent under
/// the range tag would succeed and write nothing): after sequential
/// txn-puts over 20 keys, a prefix range must read all 20, each 8 + 8
/// bytes.
#[test]
fn txn_put_writes_every_key() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--total",
            "10",
            "txn-put",
            "--txn-ops",
            "2",
            "--prefix",
            "t/",
            "--key-space-size",
            "20",
            "--sequential-keys",
        ],
    );
    assert_eq!(count(&r, "txn-put"), 10);
    let r = run(
        &etcd,
        dir.path(),
        &["--total", "1", "range", "t/", "--prefix"],
    );
    let bytes = r["bytes_per_s"].as_f64().unwrap() * r["duration_s"].as_f64().unwrap();
    assert!((bytes - 320.0).abs() < 1e-6, "{bytes} bytes: {r}");
}

#[test]
fn txn_put_and_mixed() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--clients",
            "4",
            "--total",
            "400",
            "txn-put",
            "--txn-ops",
            "4",
            "--key-space-size",
            "64",
        ],
    );
    assert_eq!(count(&r, "txn-put"), 400);
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--clients",
            "4",
            "--total",
            "600",
            "txn-mixed",
            "--key-space-size",
            "64",
            "--rw-ratio",
            "2",
            "--limit",
            "10",
        ],
    );
    let (reads, writes) = (count(&r, "txn-read"), count(&r, "txn-write"));
    assert_eq!(reads + writes, 600);
    assert!(reads > writes, "rw-ratio 2: {reads} reads, {writes} writes");
}

#[test]
fn watch_sees_every_put_on_every_watcher() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--conns",
            "2",
            "watch",
            "--streams",
            "3",
            "--watchers-per-stream",
            "4",
            "--watched-key-total",
            "3",
            "--put-total",
            "150",
            "--put-rate",
            "200",
            "--prevkv",
        ],
    );
    assert_eq!(count(&r, "put"), 150);
    assert_eq!(count(&r, "watch-create"), 12);
    // 12 watchers over 3 keys: each key has 4 watchers and 50 puts.
    assert_eq!(count(&r, "watch-event"), 12 * 50);
}

#[test]
fn watch_latency() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "watch-latency",
            "--streams",
            "2",
            "--watchers-per-stream",
            "5",
            "--put-total",
            "100",
            "--put-rate",
            "100",
        ],
    );
    assert_eq!(count(&r, "put"), 100);
    assert_eq!(count(&r, "watch-event"), 10 * 100);
}

#[test]
fn lease_keepalive() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &etcd,
        dir.path(),
        &[
            "--clients",
            "3",
            "--total",
            "300",
            "lease-keepalive",
            "--ttl",
            "30",
        ],
    );
    assert_eq!(count(&r, "lease-keepalive"), 300);
    assert_eq!(count(&r, "lease-grant"), 3);
    assert_eq!(count(&r, "lease-revoke"), 3);
}

#[test]
fn plot_is_drawn() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("put.svg");
    run(
        &etcd,
        dir.path(),
        &["--total", "200", "--plot", svg.to_str().unwrap(), "put"],
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("put"),
        "{}",
        &text[..text.len().min(200)]
    );
}
