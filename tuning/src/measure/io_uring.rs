//! Whether this process can really use io_uring: set up a ring and run
//! one no-op through it. Reading sysctls is not enough — a seccomp filter
//! (Docker's and containerd's default profiles) or an LSM can refuse the
//! syscalls while every file says io_uring is there.

use std::io;

use io_uring::{opcode, IoUring};
use serde::Serialize;

/// Ring size for the probe: the smallest useful one.
const PROBE_ENTRIES: u32 = 4;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IoUringProbe {
    pub available: bool,
    /// Which step failed: `setup` (io_uring_setup) or `submit`
    /// (io_uring_enter or the no-op's completion).
    pub failed_step: Option<String>,
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub message: Option<String>,
}

impl IoUringProbe {
    pub fn works() -> Self {
        Self {
            available: true,
            failed_step: None,
            errno: None,
            errno_name: None,
            message: None,
        }
    }

    pub fn failed(step: &str, error: &io::Error) -> Self {
        let errno = error.raw_os_error();
        Self {
            available: false,
            failed_step: Some(step.to_owned()),
            errno,
            errno_name: errno.map(errno_name),
            message: Some(error.to_string()),
        }
    }
}

/// Sets up a ring, submits a no-op and waits for its completion.
pub fn probe() -> IoUringProbe {
    let mut ring = match IoUring::new(PROBE_ENTRIES) {
        Ok(ring) => ring,
        Err(error) => return IoUringProbe::failed("setup", &error),
    };
    let nop = opcode::Nop::new().build().user_data(0x6261_7361_6c74);
    // SAFETY: a no-op references no buffers, so nothing has to outlive
    // the submission.
    if unsafe { ring.submission().push(&nop) }.is_err() {
        let error = io::Error::other("submission queue full on a fresh ring");
        return IoUringProbe::failed("submit", &error);
    }
    if let Err(error) = ring.submit_and_wait(1) {
        return IoUringProbe::failed("submit", &error);
    }
    let result = ring.completion().next().map(|cqe| cqe.result());
    match result {
        Some(result) if result >= 0 => IoUringProbe::works(),
        Some(result) => IoUringProbe::failed("submit", &io::Error::from_raw_os_error(-result)),
        None => IoUringProbe::failed("submit", &io::Error::other("no completion for the no-op")),
    }
}

/// Symbolic names for the errors io_uring_setup returns in practice.
pub fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EFAULT => "EFAULT",
        other => return format!("errno {other}"),
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_errno_and_name() {
        let probe = IoUringProbe::failed("setup", &io::Error::from_raw_os_error(libc::EPERM));
        assert!(!probe.available);
        assert_eq!(probe.errno, Some(libc::EPERM));
        assert_eq!(probe.errno_name.as_deref(), Some("EPERM"));
        assert_eq!(errno_name(12345), "errno 12345");
    }

    #[test]
    fn probe_returns_a_verdict_either_way() {
        let probe = probe();
        assert_eq!(
            probe.available,
            probe.errno.is_none() && probe.failed_step.is_none()
        );
    }
}
