//! Memory rules: no page-fault stalls from huge-page compaction, no
//! swapping, and enough locked memory for io_uring's registered buffers.

use crate::facts::{Limit, MemoryFacts};
use crate::rules::{human_bytes, Area, Finding, Verdict};

/// Below this per executor glommio cannot register its I/O buffers and
/// silently falls back to unregistered ones (measured with glommio 0.9).
pub const GLOMMIO_MEMLOCK_MIN_PER_EXECUTOR: u64 = 512 << 10;
/// What one glommio executor pins by default: three rings × 10 MiB of
/// `io_memory`.
pub const GLOMMIO_MEMLOCK_PER_EXECUTOR: u64 = 30 << 20;
/// Above this swappiness the kernel swaps anonymous memory readily.
const SWAPPINESS_MAX: u64 = 10;

pub fn evaluate(memory: &MemoryFacts, executors: usize) -> Vec<Finding> {
    vec![
        thp(memory),
        swap(memory),
        swappiness(memory),
        memlock(memory, executors),
    ]
}

fn thp(memory: &MemoryFacts) -> Finding {
    let (Some(enabled), defrag) = (memory.thp_enabled.as_deref(), memory.thp_defrag.as_deref())
    else {
        return Finding::new("memory.thp", Area::Memory, Verdict::Info, "unknown")
            .detail("the kernel exposes no transparent huge page settings");
    };
    let defrag = defrag.unwrap_or("-");
    let value = format!("enabled={enabled} defrag={defrag}");
    if enabled == "always" || defrag == "always" {
        Finding::new("memory.thp", Area::Memory, Verdict::Warn, value)
            .detail(
                "with THP always, page faults may compact memory inline and khugepaged \
                 rewrites pages in the background: millisecond stalls at random",
            )
            .fix("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled; echo madvise > /sys/kernel/mm/transparent_hugepage/defrag (or transparent_hugepage=madvise on the kernel command line)")
    } else {
        Finding::new("memory.thp", Area::Memory, Verdict::Ok, value)
            .detail("huge pages only where a program asks for them: no surprise compaction stalls")
    }
}

fn swap(memory: &MemoryFacts) -> Finding {
    let total = memory.swap_total_bytes.unwrap_or(0);
    if memory.swap_devices == 0 && total == 0 {
        return Finding::new("memory.swap", Area::Memory, Verdict::Ok, "off")
            .detail("nothing of basalt's can be swapped out");
    }
    Finding::new(
        "memory.swap",
        Area::Memory,
        Verdict::Warn,
        format!("on: {} device(s), {}", memory.swap_devices, human_bytes(total)),
    )
    .detail(
        "a request that touches a swapped-out page waits for a disk read; under memory \
         pressure that is every request, and heartbeats miss their deadline",
    )
    .fix("swapoff -a and remove swap from /etc/fstab, or keep it and set vm.swappiness=1 (tuning/profiles/90-basalt.conf)")
}

fn swappiness(memory: &MemoryFacts) -> Finding {
    let Some(value) = memory.swappiness else {
        return Finding::new("memory.swappiness", Area::Memory, Verdict::Info, "unknown");
    };
    let swap_on = memory.swap_devices > 0 || memory.swap_total_bytes.unwrap_or(0) > 0;
    let finding = Finding::new(
        "memory.swappiness",
        Area::Memory,
        Verdict::Ok,
        value.to_string(),
    );
    if !swap_on {
        finding.detail("no swap, so swappiness has no effect")
    } else if value > SWAPPINESS_MAX {
        Finding {
            verdict: Verdict::Warn,
            ..finding
        }
        .detail("with swap on, a high swappiness swaps idle heap out in favour of page cache")
        .fix("sysctl vm.swappiness=1 (tuning/profiles/90-basalt.conf)")
    } else {
        finding.detail("the kernel swaps only under real pressure")
    }
}

fn memlock(memory: &MemoryFacts, executors: usize) -> Finding {
    let executors = executors as u64;
    let wanted = GLOMMIO_MEMLOCK_PER_EXECUTOR * executors;
    let minimum = GLOMMIO_MEMLOCK_MIN_PER_EXECUTOR * executors;
    let show = |limit: Option<Limit>| match limit {
        Some(Limit::Unlimited) => "unlimited".to_owned(),
        Some(Limit::Bytes(bytes)) => human_bytes(bytes),
        None => "unknown".to_owned(),
    };
    let value = format!(
        "soft {} / hard {}, need {} for {executors} executor(s)",
        show(memory.memlock_soft),
        show(memory.memlock_hard),
        human_bytes(wanted)
    );
    let fix = format!(
        "LimitMEMLOCK=infinity in the systemd unit (tuning/profiles/basalt.service), \
         `ulimit -l unlimited`, or at least {} (30 MiB per executor)",
        human_bytes(wanted)
    );
    if memory.cap_ipc_lock == Some(true) {
        return Finding::new("memory.memlock", Area::Memory, Verdict::Ok, value)
            .detail("the process holds CAP_IPC_LOCK (root), which exempts it from the limit");
    }
    match memory.memlock_soft {
        None => Finding::new("memory.memlock", Area::Memory, Verdict::Info, value)
            .detail("cannot read the limit (/proc/self/limits)"),
        Some(limit) if limit.allows(wanted) => {
            Finding::new("memory.memlock", Area::Memory, Verdict::Ok, value)
                .detail("every executor can pin its io_uring buffers")
        }
        Some(limit) if limit.allows(minimum) => {
            Finding::new("memory.memlock", Area::Memory, Verdict::Warn, value)
                .detail(
                    "enough to register buffers but not the ~30 MiB each glommio executor pins by \
                 default; later executors or larger rings fail to pin",
                )
                .fix(fix)
        }
        Some(_) => Finding::new("memory.memlock", Area::Memory, Verdict::Fail, value)
            .detail(
                "below 512 KiB per executor glommio cannot register its I/O buffers and \
                 silently falls back to slower unregistered I/O",
            )
            .fix(fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> MemoryFacts {
        MemoryFacts {
            total_bytes: Some(24 << 30),
            thp_enabled: Some("madvise".into()),
            thp_defrag: Some("madvise".into()),
            swappiness: Some(60),
            swap_total_bytes: Some(0),
            swap_devices: 0,
            memlock_soft: Some(Limit::Bytes(8 << 20)),
            memlock_hard: Some(Limit::Bytes(8 << 20)),
            cap_ipc_lock: Some(false),
        }
    }

    fn verdict(memory: &MemoryFacts, executors: usize, id: &str) -> Verdict {
        evaluate(memory, executors)
            .into_iter()
            .find(|f| f.id == id)
            .unwrap()
            .verdict
    }

    #[test]
    fn memlock_thresholds() {
        // 8 MiB: enough to register for 2 executors, not to pin 60 MiB.
        assert_eq!(verdict(&base(), 2, "memory.memlock"), Verdict::Warn);
        let tiny = MemoryFacts {
            memlock_soft: Some(Limit::Bytes(64 << 10)),
            ..base()
        };
        assert_eq!(verdict(&tiny, 1, "memory.memlock"), Verdict::Fail);
        let unlimited = MemoryFacts {
            memlock_soft: Some(Limit::Unlimited),
            ..base()
        };
        assert_eq!(verdict(&unlimited, 64, "memory.memlock"), Verdict::Ok);
        let root = MemoryFacts {
            cap_ipc_lock: Some(true),
            ..tiny
        };
        assert_eq!(verdict(&root, 2, "memory.memlock"), Verdict::Ok);
    }

    #[test]
    fn swap_and_thp() {
        assert_eq!(verdict(&base(), 1, "memory.swap"), Verdict::Ok);
        assert_eq!(verdict(&base(), 1, "memory.swappiness"), Verdict::Ok);
        let swapping = MemoryFacts {
            swap_devices: 1,
            swap_total_bytes: Some(2 << 30),
            ..base()
        };
        assert_eq!(verdict(&swapping, 1, "memory.swap"), Verdict::Warn);
        assert_eq!(verdict(&swapping, 1, "memory.swappiness"), Verdict::Warn);
        let gentle = MemoryFacts {
            swappiness: Some(1),
            ..swapping
        };
        assert_eq!(verdict(&gentle, 1, "memory.swappiness"), Verdict::Ok);
        let always = MemoryFacts {
            thp_enabled: Some("always".into()),
            ..base()
        };
        assert_eq!(verdict(&always, 1, "memory.thp"), Verdict::Warn);
        assert_eq!(verdict(&base(), 1, "memory.thp"), Verdict::Ok);
    }
}
