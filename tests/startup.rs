//! A start that cannot go on ends the process with what to change, and a
//! stop signal ends a start that is still under way: basalt never hangs
//! where a supervisor would wait for it for ever.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

/// basalt on free loopback ports and a fresh data dir; stderr to a file.
fn basalt(dir: &std::path::Path, extra: &[&str]) -> Command {
    let (client, peer) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{client}");
    let peer = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("default={peer}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap());
    cmd
}

/// Waits up to `limit` for `child` to exit; kills it (and fails) if not.
fn exits_within(
    child: &mut Child,
    limit: Duration,
    log: &std::path::Path,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "basalt still runs after {limit:?}: it hangs\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ulimit -l 64` (io_uring's buffers need more locked memory): before,
/// basalt printed nothing, opened no port and ignored SIGTERM.
#[test]
fn a_low_locked_memory_limit_fails_at_once_saying_what_to_change() {
    for cores in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = basalt(dir.path(), &["--cores", cores]);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the
        // child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64 << 10,
                    rlim_max: 64 << 10,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let log = dir.path().join("log");
        let status = exits_within(&mut child, Duration::from_secs(20), &log);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(1), "--cores {cores}: {text}");
        assert!(
            text.contains("the limit is 64 KiB") && text.contains("LimitMEMLOCK"),
            "--cores {cores}: the message says what to change: {text}"
        );
    }
}

/// SIGTERM while the start is still under way ends the process (a debug
/// build's test hook makes the start stall for ever).
#[test]
fn a_stop_signal_ends_a_start_still_under_way() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the startup stall hook exists in debug builds only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = basalt(dir.path(), &[])
        .env("BASALT_TEST_STARTUP_STALL", "1")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("startup stalls")
    {
        assert!(Instant::now() < deadline, "the stall hook never ran");
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before the signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = exits_within(&mut child, Duration::from_secs(5), &log);
    assert_eq!(status.signal(), None, "basalt exits by itself");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stopping before startup finished"), "{text}");
}

/// Logs go to stderr; when whoever reads it goes away (a pipe closed), the
/// member serves on and still stops on SIGTERM. Before, the log writer's
/// own error report panicked on the broken stderr and took the process
/// (and, earlier still, only its listeners) down.
#[test]
fn a_closed_stderr_never_stops_the_member() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let client = free_port();
    let url = format!("http://127.0.0.1:{client}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("default={peer}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving client requests") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr ended");
    }
    drop(stderr);
    let put = |key: &str| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &url, "--command-timeout=5s", "put", key, "v"])
            .output()
            .unwrap()
    };
    // Every put logs nothing by itself: wait for the member to write a
    // line into the closed pipe (its periodic lines, or the puts'
    // checkpoints), then check it still serves.
    for i in 0..20 {
        let out = put(&format!("k{i}"));
        assert!(
            out.status.success(),
            "put {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().unwrap().is_none(), "basalt exited");
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = exits_within(
        &mut child,
        Duration::from_secs(10),
        &dir.path().join("none"),
    );
    assert_eq!(status.code(), Some(0), "{status:?}");
}
