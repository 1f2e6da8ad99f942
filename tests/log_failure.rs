//! A member whose log write fails (a dying disk: the fdatasync fails)
//! stops: the write is refused, nothing after it is acknowledged, and the
//! process exits 1 with an error naming the WAL file, rather than serving
//! on with a log it can no longer trust. Debug builds of basalt fail the
//! N-th log write on request (`BASALT_TEST_WAL_FAULT=fail-sync-at:N`).

mod support;

use std::time::Duration;

use support::{Kind, Server};

#[tokio::test]
async fn a_failed_log_write_stops_the_member_with_the_file_named() {
    // The only test of this binary: the variable reaches no other server.
    std::env::set_var("BASALT_TEST_WAL_FAULT", "fail-sync-at:12");
    let mut server = Server::start(Kind::Basalt).await;
    let mut c = server.client().await;
    let mut acknowledged = 0;
    let mut failed = None;
    for i in 0..30 {
        match c.put(format!("k{i}"), "v", None).await {
            Ok(_) if failed.is_none() => acknowledged += 1,
            Ok(_) => panic!("a write acknowledged after the log failed"),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    assert!(failed.is_some(), "no write failed");
    assert!(acknowledged > 0, "the fault hit before any write");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the member exits by itself");
    assert_eq!(status.code(), Some(1), "{}", server.log());
    let log = server.log();
    assert!(log.contains("the raft log failed"), "{log}");
    assert!(log.contains("injected fault: fdatasync"), "{log}");
    assert!(log.contains("member/wal/"), "the WAL file is named: {log}");
}
