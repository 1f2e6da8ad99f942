//! SIGTERM and SIGINT for the main thread: blocked before any executor
//! thread exists (so they inherit the mask), then waited for.

use std::time::Duration;

/// SIGTERM and SIGINT, delivered synchronously to the main thread.
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    pub fn block() -> std::io::Result<StopSignals> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before
        // use; pthread_sigmask only changes this thread's signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(StopSignals { set })
        }
    }

    /// Waits up to `timeout` for one of the signals; its number if one
    /// arrived.
    pub fn wait_for(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` was initialised in `block`; sigtimedwait reads
        // it and the timespec, and writes nothing we pass (null info).
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}
