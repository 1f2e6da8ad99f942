//! basalt-only flags, end to end through the binary.

mod support;

use std::process::Command;

use support::{Kind, Server};

#[tokio::test]
async fn spin_before_park_is_applied_and_reported() {
    let server = Server::start_with(Kind::Basalt, &["--spin-before-park", "50us"]).await;
    let mut c = server.client().await;
    c.put("k", "v", None)
        .await
        .expect("put with spinning executors");
    let got = c.get("k", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");
    assert!(
        server.log().contains("spin_before_park=Some(50µs)"),
        "start-up log does not report the spin:\n{}",
        server.log()
    );
}

#[test]
fn a_bad_spin_duration_is_refused_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["--spin-before-park", "5000ms"])
        .output()
        .expect("run basalt");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("over the 1s limit"), "{stderr}");
}
