//! io_uring rules: a kernel new enough for glommio, not disabled by
//! sysctl, and a ring that really works in this process (seccomp).

use crate::facts::KernelFacts;
use crate::measure::IoUringProbe;
use crate::rules::{Area, Finding, Verdict};

/// glommio needs Linux 5.8 or newer.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

pub fn evaluate(kernel: &KernelFacts, probe: &IoUringProbe) -> Vec<Finding> {
    vec![kernel_version(kernel), sysctl(kernel), setup(kernel, probe)]
}

fn kernel_version(kernel: &KernelFacts) -> Finding {
    let release = kernel.release.clone().unwrap_or_else(|| "unknown".into());
    match kernel.version() {
        Some(version) if version >= MIN_KERNEL => {
            Finding::new("io_uring.kernel", Area::IoUring, Verdict::Ok, release)
                .detail("new enough for glommio (5.8+)")
        }
        Some(_) => Finding::new("io_uring.kernel", Area::IoUring, Verdict::Fail, release)
            .detail("glommio, basalt's runtime, needs Linux 5.8 or newer")
            .fix("upgrade the kernel"),
        None => Finding::new("io_uring.kernel", Area::IoUring, Verdict::Info, release)
            .detail("cannot read the kernel version"),
    }
}

fn sysctl(kernel: &KernelFacts) -> Finding {
    let fix = "sysctl kernel.io_uring_disabled=0 (tuning/profiles/90-basalt.conf)";
    match kernel.io_uring_disabled {
        None => Finding::new("io_uring.sysctl", Area::IoUring, Verdict::Ok, "absent")
            .detail("kernel.io_uring_disabled does not exist (before 6.6): io_uring is not restricted by sysctl"),
        Some(0) => Finding::new("io_uring.sysctl", Area::IoUring, Verdict::Ok, "kernel.io_uring_disabled=0")
            .detail("io_uring allowed for every process"),
        Some(1) => Finding::new("io_uring.sysctl", Area::IoUring, Verdict::Warn, "kernel.io_uring_disabled=1")
            .detail("io_uring only for processes in kernel.io_uring_group (or with CAP_SYS_ADMIN)")
            .fix(format!("{fix}, or add basalt's user to the group named by kernel.io_uring_group")),
        Some(other) => Finding::new("io_uring.sysctl", Area::IoUring, Verdict::Fail, format!("kernel.io_uring_disabled={other}"))
            .detail("io_uring is disabled for every process; basalt cannot start")
            .fix(fix),
    }
}

fn setup(kernel: &KernelFacts, probe: &IoUringProbe) -> Finding {
    if probe.available {
        return Finding::new("io_uring.setup", Area::IoUring, Verdict::Ok, "works")
            .detail("io_uring_setup succeeded and a no-op completed through the ring");
    }
    let errno = probe
        .errno_name
        .clone()
        .unwrap_or_else(|| "no errno".into());
    let step = probe.failed_step.clone().unwrap_or_else(|| "setup".into());
    let value = format!("{step} failed: {errno}");
    let (detail, fix) = match (probe.errno, kernel.seccomp_mode, kernel.io_uring_disabled) {
        (Some(libc::EPERM), _, Some(2)) | (Some(libc::EPERM), _, Some(1)) => (
            "the kernel.io_uring_disabled sysctl refuses this process".to_owned(),
            "sysctl kernel.io_uring_disabled=0".to_owned(),
        ),
        (Some(libc::EPERM | libc::ENOSYS | libc::EACCES), Some(2), _) => (
            "blocked by this process's seccomp filter: Docker's, containerd's and Kubernetes' \
             RuntimeDefault profiles deny io_uring"
                .to_owned(),
            "run with tuning/profiles/seccomp-basalt.json (docker --security-opt seccomp=…; \
             Kubernetes securityContext.seccompProfile type Localhost)"
                .to_owned(),
        ),
        (Some(libc::ENOSYS), _, _) => (
            "the kernel has no io_uring (built without CONFIG_IO_URING, or too old)".to_owned(),
            "use a kernel with io_uring, 5.8 or newer".to_owned(),
        ),
        (Some(libc::ENOMEM), _, _) => (
            "not enough locked memory for the ring (kernels before 5.12 charge rings to RLIMIT_MEMLOCK)".to_owned(),
            "raise LimitMEMLOCK (see memory.memlock)".to_owned(),
        ),
        (Some(libc::EPERM | libc::EACCES), _, _) => (
            "refused by a security module (SELinux, AppArmor) or a sandbox".to_owned(),
            "allow io_uring for basalt in the policy that refused it".to_owned(),
        ),
        _ => (
            format!("io_uring failed: {}", probe.message.clone().unwrap_or_default()),
            "check dmesg and the kernel's io_uring support".to_owned(),
        ),
    };
    Finding::new("io_uring.setup", Area::IoUring, Verdict::Fail, value)
        .detail(format!(
            "{detail}; basalt runs all I/O on io_uring and cannot start without it"
        ))
        .fix(fix)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn kernel(seccomp: u64, disabled: Option<u64>) -> KernelFacts {
        KernelFacts {
            release: Some("6.8.0".into()),
            io_uring_disabled: disabled,
            seccomp_mode: Some(seccomp),
        }
    }

    fn find(findings: Vec<Finding>, id: &str) -> Finding {
        findings.into_iter().find(|f| f.id == id).unwrap()
    }

    #[test]
    fn seccomp_blocked_ring_names_the_profile() {
        let probe = IoUringProbe::failed("setup", &io::Error::from_raw_os_error(libc::EPERM));
        let finding = find(evaluate(&kernel(2, Some(0)), &probe), "io_uring.setup");
        assert_eq!(finding.verdict, Verdict::Fail);
        assert!(finding.value.contains("EPERM"));
        assert!(finding.detail.contains("seccomp"));
        assert!(finding.fix.unwrap().contains("seccomp-basalt.json"));
    }

    #[test]
    fn sysctl_disabled_is_named_before_seccomp() {
        let probe = IoUringProbe::failed("setup", &io::Error::from_raw_os_error(libc::EPERM));
        let findings = evaluate(&kernel(2, Some(2)), &probe);
        assert_eq!(
            find(findings.clone(), "io_uring.sysctl").verdict,
            Verdict::Fail
        );
        assert!(find(findings, "io_uring.setup")
            .detail
            .contains("io_uring_disabled"));
    }

    #[test]
    fn working_ring_and_old_kernel() {
        let findings = evaluate(&kernel(0, None), &IoUringProbe::works());
        assert!(findings.iter().all(|f| f.verdict == Verdict::Ok));
        let old = KernelFacts {
            release: Some("4.19.0".into()),
            ..kernel(0, None)
        };
        assert_eq!(
            find(evaluate(&old, &IoUringProbe::works()), "io_uring.kernel").verdict,
            Verdict::Fail
        );
        let enosys = IoUringProbe::failed("setup", &io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(find(evaluate(&kernel(0, None), &enosys), "io_uring.setup")
            .detail
            .contains("no io_uring"));
    }
}
