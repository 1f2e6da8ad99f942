//! Memory facts: transparent huge pages, swap, and the locked-memory
//! limit that io_uring buffer registration counts against.

use serde::Serialize;

use crate::host_root::{selected_choice, HostRoot};

/// `CAP_IPC_LOCK`: a process holding it may lock memory past its
/// `RLIMIT_MEMLOCK` (root has it unless a container drops it).
const CAP_IPC_LOCK: u32 = 14;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MemoryFacts {
    pub total_bytes: Option<u64>,
    /// THP mode: `always`, `madvise` or `never`.
    pub thp_enabled: Option<String>,
    /// THP defrag mode: `always` makes page faults compact memory inline.
    pub thp_defrag: Option<String>,
    pub swappiness: Option<u64>,
    /// Total swap configured (`SwapTotal`).
    pub swap_total_bytes: Option<u64>,
    /// Active swap devices and files (`/proc/swaps`).
    pub swap_devices: usize,
    /// `RLIMIT_MEMLOCK` soft limit; `None` inside means unlimited.
    pub memlock_soft: Option<Limit>,
    pub memlock_hard: Option<Limit>,
    /// Whether the process holds `CAP_IPC_LOCK`, which exempts it from
    /// the memlock limit.
    pub cap_ipc_lock: Option<bool>,
}

/// A resource limit value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Bytes(u64),
    Unlimited,
}

impl Limit {
    /// True when the limit allows at least `bytes`.
    pub fn allows(self, bytes: u64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::Bytes(limit) => limit >= bytes,
        }
    }
}

impl MemoryFacts {
    pub fn gather(host: &HostRoot) -> Self {
        let kib = |key: &str| {
            host.read_field("/proc/meminfo", key)
                .and_then(|value| value.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        let (memlock_soft, memlock_hard) = host
            .read("/proc/self/limits")
            .and_then(|text| parse_limit_line(&text, "Max locked memory"))
            .map_or((None, None), |(soft, hard)| (Some(soft), Some(hard)));
        let swap_devices = host
            .read("/proc/swaps")
            .map(|text| {
                text.lines()
                    .skip(1)
                    .filter(|line| !line.trim().is_empty())
                    .count()
            })
            .unwrap_or(0);
        let cap_ipc_lock = host
            .read_field("/proc/self/status", "CapEff")
            .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
            .map(|caps| caps & (1 << CAP_IPC_LOCK) != 0);

        Self {
            total_bytes: kib("MemTotal"),
            thp_enabled: host
                .read("/sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|text| selected_choice(&text)),
            thp_defrag: host
                .read("/sys/kernel/mm/transparent_hugepage/defrag")
                .and_then(|text| selected_choice(&text)),
            swappiness: host.read_u64("/proc/sys/vm/swappiness"),
            swap_total_bytes: kib("SwapTotal"),
            swap_devices,
            memlock_soft,
            memlock_hard,
            cap_ipc_lock,
        }
    }
}

/// Parses one line of `/proc/<pid>/limits`, whose columns are the name,
/// the soft limit, the hard limit and the unit.
pub fn parse_limit_line(text: &str, name: &str) -> Option<(Limit, Limit)> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    let mut values = line[name.len()..]
        .split_whitespace()
        .map(|word| match word {
            "unlimited" => Some(Limit::Unlimited),
            number => number.parse().ok().map(Limit::Bytes),
        });
    let soft = values.next()??;
    let hard = values.next()??;
    Some((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max locked memory         8388608              unlimited            bytes\n";
        assert_eq!(
            parse_limit_line(text, "Max locked memory"),
            Some((Limit::Bytes(8_388_608), Limit::Unlimited))
        );
        assert_eq!(parse_limit_line(text, "Max open files"), None);
        assert!(Limit::Unlimited.allows(u64::MAX));
        assert!(!Limit::Bytes(10).allows(11));
    }
}
