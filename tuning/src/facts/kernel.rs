//! Kernel facts that decide whether io_uring is usable: the release,
//! the `kernel.io_uring_disabled` sysctl and this process's seccomp mode.

use serde::Serialize;

use crate::host_root::HostRoot;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KernelFacts {
    /// `kernel.osrelease`, e.g. `6.1.0-18-amd64`.
    pub release: Option<String>,
    /// `kernel.io_uring_disabled` (Linux 6.6+): 0 allowed, 1 only for
    /// members of `kernel.io_uring_group`, 2 disabled for everyone.
    pub io_uring_disabled: Option<u64>,
    /// Seccomp mode of this process: 0 none, 1 strict, 2 filter. Container
    /// runtimes install a filter whose default profile denies io_uring.
    pub seccomp_mode: Option<u64>,
}

impl KernelFacts {
    pub fn gather(host: &HostRoot) -> Self {
        Self {
            release: host.read("/proc/sys/kernel/osrelease"),
            io_uring_disabled: host.read_u64("/proc/sys/kernel/io_uring_disabled"),
            seccomp_mode: host
                .read_field("/proc/self/status", "Seccomp")
                .and_then(|mode| mode.parse().ok()),
        }
    }

    /// `(major, minor)` of the release, when it parses.
    pub fn version(&self) -> Option<(u32, u32)> {
        parse_release(self.release.as_deref()?)
    }
}

/// Reads `major.minor` from a release string such as `6.18.44-fc-v595`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_releases() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("weird"), None);
    }
}
