//! Command-line behaviour: bad input is an error (exit 2), never a panic;
//! Ctrl-C stops a run and still writes the partial report.

mod etcd;

use std::process::{Command, Stdio};
use std::time::Duration;

use etcd::Etcd;

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for args in [
        &[][..],
        &["--clients", "0", "put"],
        &["--rate", "-5", "put"],
        &["--profile", "kubernetes", "put"],
        &["--duration", "soon", "put"],
    ] {
        let out = loadgen(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn unreachable_endpoint_is_reported() {
    // Port 1 on loopback: nothing listens there.
    let out = loadgen(&[
        "--endpoints",
        "http://127.0.0.1:1",
        "--no-progress",
        "--total",
        "1",
        "put",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ctrl_c_gives_a_partial_report() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("partial.json");
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--endpoints",
            &etcd.endpoint,
            "--no-progress",
            "--duration",
            "60s",
            "--json",
        ])
        .arg(&json)
        .args(["--rate", "200", "put"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("partial report"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let d = report["duration_s"].as_f64().unwrap();
    assert!(d > 1.0 && d < 10.0, "stopped after {d} s");
    assert!(report["ops"]["put"]["count"].as_u64().unwrap() > 100);
}
