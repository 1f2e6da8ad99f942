//! CPU facts: which CPUs exist, which share a physical core, how their
//! frequency is governed, which are set apart from the scheduler, which
//! this process may run on, and whether this is a virtual machine.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::cpu_list;
use crate::host_root::HostRoot;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CpuFacts {
    /// Online CPUs (`/sys/devices/system/cpu/online`).
    pub online: Vec<u32>,
    /// Groups of online CPUs that are SMT siblings of one physical core;
    /// a group of one is a core without SMT.
    pub sibling_groups: Vec<Vec<u32>>,
    /// `smt/active`: whether SMT is on (unknown on kernels without it).
    pub smt_active: Option<bool>,
    /// Distinct `scaling_governor` values across online CPUs; empty when
    /// the kernel exposes no cpufreq (typical in VMs).
    pub governors: Vec<String>,
    /// CPUs named by `isolcpus=` on the kernel command line.
    pub isolcpus: Option<Vec<u32>>,
    /// CPUs named by `nohz_full=`.
    pub nohz_full: Option<Vec<u32>>,
    /// CPUs named by `rcu_nocbs=`.
    pub rcu_nocbs: Option<Vec<u32>>,
    /// `/sys/devices/system/cpu/isolated`: what the kernel actually isolated.
    pub isolated: Vec<u32>,
    /// This process's affinity mask (`Cpus_allowed_list`), the CPUs
    /// basalt would run on by default.
    pub affinity: Vec<u32>,
    /// The CPU reports the `hypervisor` flag: we run in a guest.
    pub hypervisor: bool,
    /// `cpuidle/current_driver` (`haltpoll` in KVM guests that poll).
    pub cpuidle_driver: Option<String>,
    /// `haltpoll`'s `guest_halt_poll_ns`: how long an idle guest vCPU
    /// polls before halting. 0 means every idle period pays a full
    /// halt and wake-up through the hypervisor.
    pub guest_halt_poll_ns: Option<u64>,
    /// `/proc/irq/default_smp_affinity`: CPUs a newly registered
    /// interrupt may be delivered to.
    pub default_irq_affinity: Option<Vec<u32>>,
    /// Device interrupts (numbered IRQs in `/proc/interrupts`) handled
    /// per CPU since boot, as `(cpu, count)`.
    pub device_irqs: Vec<(u32, u64)>,
    /// The kernel's current clocksource (`tsc`, `kvm-clock`, `hpet`, …):
    /// what every clock read in the runtime costs.
    pub clocksource: Option<String>,
    /// Online CPUs of each NUMA node, by node number.
    pub numa_nodes: Vec<(u32, Vec<u32>)>,
}

impl CpuFacts {
    pub fn gather(host: &HostRoot) -> Self {
        let online = host
            .read("/sys/devices/system/cpu/online")
            .and_then(|text| cpu_list::parse(&text))
            .unwrap_or_else(|| count_from_cpuinfo(host));

        let mut sibling_groups: Vec<Vec<u32>> = Vec::new();
        let mut governors = BTreeSet::new();
        for cpu in &online {
            let base = format!("/sys/devices/system/cpu/cpu{cpu}");
            let siblings = host
                .read(&format!("{base}/topology/thread_siblings_list"))
                .and_then(|text| cpu_list::parse(&text))
                .map(|set| set.intersection(&online).copied().collect::<Vec<_>>())
                .unwrap_or_else(|| vec![*cpu]);
            if !sibling_groups.contains(&siblings) {
                sibling_groups.push(siblings);
            }
            if let Some(governor) = host.read(&format!("{base}/cpufreq/scaling_governor")) {
                governors.insert(governor);
            }
        }

        let cmdline = host.read("/proc/cmdline").unwrap_or_default();
        let boot_list = |name: &str| {
            boot_param(&cmdline, name)
                .and_then(cpu_list::parse_boot_param)
                .map(|set| set.into_iter().collect())
        };

        let hypervisor = host
            .read("/proc/cpuinfo")
            .map(|text| {
                text.lines()
                    .filter(|line| line.starts_with("flags"))
                    .any(|line| line.split_whitespace().any(|flag| flag == "hypervisor"))
            })
            .unwrap_or(false);

        Self {
            online: online.iter().copied().collect(),
            sibling_groups,
            smt_active: host
                .read("/sys/devices/system/cpu/smt/active")
                .map(|text| text == "1"),
            governors: governors.into_iter().collect(),
            isolcpus: boot_list("isolcpus"),
            nohz_full: boot_list("nohz_full"),
            rcu_nocbs: boot_list("rcu_nocbs"),
            isolated: host
                .read("/sys/devices/system/cpu/isolated")
                .and_then(|text| cpu_list::parse(&text))
                .unwrap_or_default()
                .into_iter()
                .collect(),
            affinity: host
                .read_field("/proc/self/status", "Cpus_allowed_list")
                .and_then(|text| cpu_list::parse(&text))
                .unwrap_or_default()
                .into_iter()
                .collect(),
            hypervisor,
            cpuidle_driver: host.read("/sys/devices/system/cpu/cpuidle/current_driver"),
            guest_halt_poll_ns: host.read_u64("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
            default_irq_affinity: host
                .read("/proc/irq/default_smp_affinity")
                .and_then(|mask| parse_hex_mask(&mask))
                .map(|set| set.into_iter().collect()),
            device_irqs: host
                .read("/proc/interrupts")
                .map(|text| device_irqs_per_cpu(&text))
                .unwrap_or_default(),
            clocksource: host
                .read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            numa_nodes: numa_nodes(host, &online),
        }
    }

    /// Physical cores among `cpus`: SMT siblings count once.
    pub fn physical_cores_in(&self, cpus: &[u32]) -> usize {
        let wanted: BTreeSet<u32> = cpus.iter().copied().collect();
        let mut grouped: BTreeSet<u32> = BTreeSet::new();
        let mut cores = 0;
        for group in &self.sibling_groups {
            if group.iter().any(|cpu| wanted.contains(cpu)) {
                cores += 1;
                grouped.extend(group.iter().copied());
            }
        }
        // CPUs missing from the topology (a fake tree, a hidden sysfs)
        // count as cores of their own.
        cores + wanted.difference(&grouped).count()
    }

    /// Whether any online physical core runs more than one hardware thread.
    pub fn smt_in_use(&self) -> bool {
        self.smt_active == Some(true) || self.sibling_groups.iter().any(|group| group.len() > 1)
    }

    /// CPUs the kernel keeps the general scheduler (and, with `nohz_full`,
    /// the tick) away from: the union of `isolcpus`, `nohz_full` and what
    /// sysfs reports isolated.
    pub fn dedicated_cpus(&self) -> BTreeSet<u32> {
        let mut set: BTreeSet<u32> = self.isolated.iter().copied().collect();
        set.extend(self.isolcpus.iter().flatten().copied());
        set.extend(self.nohz_full.iter().flatten().copied());
        set
    }
}

/// The value of `name=` on the kernel command line; only the kernel's own
/// part counts (what follows ` -- ` goes to init).
pub fn boot_param<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    let kernel_part = cmdline.split(" -- ").next().unwrap_or("");
    kernel_part
        .split_whitespace()
        .rev()
        .filter_map(|token| token.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Parses a hex CPU mask as the kernel prints it: 32-bit words, most
/// significant first, separated by commas (`ffffffff,00000003`).
pub fn parse_hex_mask(text: &str) -> Option<BTreeSet<u32>> {
    let mut cpus = BTreeSet::new();
    let words: Vec<&str> = text.trim().split(',').collect();
    for (index, word) in words.iter().rev().enumerate() {
        let bits = u32::from_str_radix(word, 16).ok()?;
        let base = u32::try_from(index).ok()?.checked_mul(32)?;
        cpus.extend(
            (0..32)
                .filter(|bit| bits & (1 << bit) != 0)
                .map(|bit| base + bit),
        );
    }
    Some(cpus)
}

/// Sums the numbered (device) interrupt lines of `/proc/interrupts` per
/// CPU; the named lines (LOC, RES, …) are the kernel's own and every CPU
/// gets them.
pub fn device_irqs_per_cpu(text: &str) -> Vec<(u32, u64)> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cpus: Vec<u32> = header
        .split_whitespace()
        .filter_map(|name| name.strip_prefix("CPU")?.parse().ok())
        .collect();
    let mut totals = vec![0u64; cpus.len()];
    for line in lines {
        let Some((irq, counts)) = line.split_once(':') else {
            continue;
        };
        if irq.trim().parse::<u32>().is_err() {
            continue;
        }
        for (total, count) in totals.iter_mut().zip(counts.split_whitespace()) {
            match count.parse::<u64>() {
                Ok(count) => *total += count,
                Err(_) => break,
            }
        }
    }
    cpus.into_iter().zip(totals).collect()
}

/// NUMA nodes that have online CPUs, from `/sys/devices/system/node`.
fn numa_nodes(host: &HostRoot, online: &BTreeSet<u32>) -> Vec<(u32, Vec<u32>)> {
    let Ok(entries) = std::fs::read_dir(host.path("/sys/devices/system/node")) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, Vec<u32>)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let node: u32 = name.to_str()?.strip_prefix("node")?.parse().ok()?;
            let cpus = host
                .read(&format!("/sys/devices/system/node/node{node}/cpulist"))
                .and_then(|text| cpu_list::parse(&text))?;
            let cpus: Vec<u32> = cpus.intersection(online).copied().collect();
            (!cpus.is_empty()).then_some((node, cpus))
        })
        .collect();
    nodes.sort();
    nodes
}

fn count_from_cpuinfo(host: &HostRoot) -> BTreeSet<u32> {
    host.read("/proc/cpuinfo")
        .map(|text| {
            text.lines()
                .filter_map(|line| line.strip_prefix("processor"))
                .filter_map(|rest| rest.split(':').nth(1)?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_param_ignores_init_arguments_and_takes_the_last() {
        let cmdline = "quiet isolcpus=1 isolcpus=2-3 nohz_full=2-3 -- --isolcpus=9";
        assert_eq!(boot_param(cmdline, "isolcpus"), Some("2-3"));
        assert_eq!(boot_param(cmdline, "rcu_nocbs"), None);
    }

    #[test]
    fn hex_masks_and_interrupt_counts() {
        let mask = parse_hex_mask("00000001,0000000c").unwrap();
        assert_eq!(mask.into_iter().collect::<Vec<_>>(), vec![2, 3, 32]);
        assert!(parse_hex_mask("xyz").is_none());
        let interrupts = "           CPU0       CPU1\n\
             24:          1          0  IO-APIC   5-edge      ACPI:Ged\n\
             36:          0      27418  PCI-MSIX  virtio1-req.0\n\
            LOC:     500000     400000   Local timer interrupts\n";
        assert_eq!(device_irqs_per_cpu(interrupts), vec![(0, 1), (1, 27418)]);
        assert!(device_irqs_per_cpu("").is_empty());
    }

    #[test]
    fn physical_cores_count_siblings_once() {
        let facts = CpuFacts {
            sibling_groups: vec![vec![0, 2], vec![1, 3]],
            ..CpuFacts::default()
        };
        assert_eq!(facts.physical_cores_in(&[0, 1, 2, 3]), 2);
        assert_eq!(facts.physical_cores_in(&[0, 2]), 1);
        assert_eq!(facts.physical_cores_in(&[0, 7]), 2);
        assert!(facts.smt_in_use());
    }
}
