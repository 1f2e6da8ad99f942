//! io_uring blocked by seccomp, as container runtimes' default profiles do:
//! the child installs a filter that fails `io_uring_setup` with EPERM,
//! then execs `basalt-tune check`, which must name the cause.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::Value;

/// Installs a seccomp filter answering `io_uring_setup` with EPERM and
/// allowing everything else. Only async-signal-safe calls (prctl).
fn deny_io_uring_setup() -> io::Result<()> {
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with these arguments only reads `program`, which
    // outlives the call; no_new_privs lets an unprivileged process install
    // a filter.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn seccomp_blocked_io_uring_is_reported_with_its_cause() {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_basalt-tune"));
    command.args([
        "check",
        "--json",
        "--disk-time",
        "100ms",
        "--disk-max-syncs",
        "50",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    // SAFETY: the closure runs in the forked child before exec and calls
    // only prctl, which is async-signal-safe.
    unsafe {
        command.pre_exec(deny_io_uring_setup);
    }
    let output = command.output().expect("run basalt-tune under seccomp");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.code(),
        Some(1),
        "io_uring.setup fails the check; stderr: {stderr}"
    );

    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["facts"]["kernel"]["seccomp_mode"], 2);
    let probe = &report["measurements"]["io_uring"];
    assert_eq!(probe["available"], false);
    assert_eq!(probe["errno_name"], "EPERM");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "io_uring.setup")
        .unwrap();
    assert_eq!(finding["verdict"], "fail");
    assert!(
        finding["detail"].as_str().unwrap().contains("seccomp"),
        "{finding}"
    );
    assert!(
        finding["fix"]
            .as_str()
            .unwrap()
            .contains("seccomp-basalt.json"),
        "{finding}"
    );
}
