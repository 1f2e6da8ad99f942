//! CPU rules: enough cores, one executor per physical core, full clock
//! speed, cores kept free of other work, and cheap vCPU wake-ups.

use std::collections::BTreeSet;

use crate::cpu_list;
use crate::facts::CpuFacts;
use crate::rules::{Area, Finding, Plan, Verdict};

/// Cost of waking a halted vCPU measured on the project's VMs, per
/// direction (see docs/tuning.md).
const VCPU_WAKE_COST: &str = "~45–50 µs";

pub fn evaluate(cpu: &CpuFacts, plan: Plan) -> Vec<Finding> {
    vec![
        count(cpu),
        smt(cpu),
        governor(cpu),
        isolation(cpu, plan),
        affinity(cpu, plan),
        irq(cpu, plan),
        numa(cpu, plan),
        clocksource(cpu),
        virtualisation(cpu),
    ]
}

fn list(cpus: &[u32]) -> String {
    cpu_list::format(&cpus.iter().copied().collect())
}

fn count(cpu: &CpuFacts) -> Finding {
    let n = cpu.online.len();
    let value = format!("{n} online ({})", list(&cpu.online));
    let finding = Finding::new("cpu.count", Area::Cpu, Verdict::Ok, value);
    match n {
        0 => Finding {
            verdict: Verdict::Info,
            ..finding
        }
        .detail("the kernel exposes no online CPU list; cannot judge"),
        1 => Finding {
            verdict: Verdict::Warn,
            ..finding
        }
        .detail(
            "one CPU runs the network, Raft, the WAL and every shard on one executor, \
                 competing with the kernel's own work; etcd's hardware guide asks for 2–4 \
                 cores even for small clusters",
        )
        .fix("give the node at least 2 CPUs"),
        _ => finding.detail("basalt runs one executor per core"),
    }
}

fn smt(cpu: &CpuFacts) -> Finding {
    let shared: Vec<String> = cpu
        .sibling_groups
        .iter()
        .filter(|group| group.len() > 1)
        .map(|group| list(group))
        .collect();
    if cpu.smt_in_use() {
        Finding::new(
            "cpu.smt",
            Area::Cpu,
            Verdict::Warn,
            format!("on, siblings {}", shared.join(" ")),
        )
        .detail(
            "SMT siblings share one core's execution units and caches; an executor whose \
             sibling is busy sees its latency jitter",
        )
        .fix(format!(
            "run one executor per physical core (--cores {} with CPUAffinity= listing one \
             thread of each core), or disable SMT (echo off > /sys/devices/system/cpu/smt/control)",
            cpu.physical_cores_in(&cpu.online).max(1)
        ))
    } else if cpu.sibling_groups.is_empty() {
        Finding::new("cpu.smt", Area::Cpu, Verdict::Info, "unknown")
            .detail("the kernel exposes no CPU topology")
    } else {
        Finding::new(
            "cpu.smt",
            Area::Cpu,
            Verdict::Ok,
            "off (one thread per core)",
        )
        .detail("every executor has a core to itself")
    }
}

fn governor(cpu: &CpuFacts) -> Finding {
    if cpu.governors.is_empty() {
        return Finding::new("cpu.governor", Area::Cpu, Verdict::Info, "no cpufreq")
            .detail("the kernel exposes no frequency scaling (usual in a VM: the hypervisor decides the clock)");
    }
    let value = cpu.governors.join(", ");
    if cpu.governors.iter().all(|g| g == "performance") {
        Finding::new("cpu.governor", Area::Cpu, Verdict::Ok, value)
            .detail("CPUs run at full clock speed")
    } else {
        Finding::new("cpu.governor", Area::Cpu, Verdict::Warn, value)
            .detail(
                "a power-saving governor raises the clock only after load arrives, so a \
                 request after an idle spell runs slow; etcd's tuning guide sets the \
                 performance governor",
            )
            .fix("echo performance | tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (or cpupower frequency-set -g performance)")
    }
}

fn isolation(cpu: &CpuFacts, plan: Plan) -> Finding {
    let planned: BTreeSet<u32> = crate::rules::planned_cpus_of(cpu, plan)
        .into_iter()
        .collect();
    let dedicated = cpu.dedicated_cpus();
    let fmt_opt = |v: &Option<Vec<u32>>| v.as_ref().map_or("-".to_owned(), |l| list(l));
    let value = format!(
        "isolcpus={} nohz_full={} rcu_nocbs={}",
        fmt_opt(&cpu.isolcpus),
        fmt_opt(&cpu.nohz_full),
        fmt_opt(&cpu.rcu_nocbs)
    );
    let covered = planned.intersection(&dedicated).count();
    let boot_fix = isolation_fix(cpu);
    if planned.is_empty() {
        return Finding::new("cpu.isolation", Area::Cpu, Verdict::Info, value)
            .detail("no CPUs known for the executors");
    }
    let nohz_without_rcu = cpu.nohz_full.as_ref().is_some_and(|nohz| {
        let rcu: BTreeSet<u32> = cpu.rcu_nocbs.iter().flatten().copied().collect();
        nohz.iter().any(|c| !rcu.contains(c))
    });
    if covered == planned.len() && !nohz_without_rcu {
        Finding::new("cpu.isolation", Area::Cpu, Verdict::Ok, value)
            .detail("the executor CPUs are kept free of other tasks: spinning before parking pays off there")
    } else if covered == planned.len() {
        Finding::new("cpu.isolation", Area::Cpu, Verdict::Warn, value)
            .detail("nohz_full CPUs without rcu_nocbs still run RCU callbacks, which interrupt the executors")
            .fix("add rcu_nocbs= with the same CPUs as nohz_full")
    } else if covered > 0 {
        Finding::new("cpu.isolation", Area::Cpu, Verdict::Warn, value)
            .detail(format!(
                "only {covered} of the {} executor CPUs are isolated; the others share their \
                 time with every other process and the slowest executor sets the tail",
                planned.len()
            ))
            .fix(boot_fix)
    } else {
        Finding::new("cpu.isolation", Area::Cpu, Verdict::Info, value)
            .detail(
                "executors share their CPUs with other processes: fine for most nodes, but \
                 a noisy neighbour adds its run time to the tail, and spinning before \
                 parking must stay off",
            )
            .fix(boot_fix)
    }
}

/// A concrete boot line: the first physical core (with its SMT siblings)
/// stays with the kernel, IRQs and everything else; the rest become
/// executor CPUs.
fn isolation_fix(cpu: &CpuFacts) -> String {
    let housekeeping: BTreeSet<u32> = cpu
        .online
        .first()
        .map(|first| {
            cpu.sibling_groups
                .iter()
                .find(|group| group.contains(first))
                .cloned()
                .unwrap_or_else(|| vec![*first])
        })
        .unwrap_or_default()
        .into_iter()
        .collect();
    let executors: BTreeSet<u32> = cpu
        .online
        .iter()
        .copied()
        .filter(|c| !housekeeping.contains(c))
        .collect();
    if executors.is_empty() {
        return "isolation needs at least two cores: one for the kernel, the rest for executors"
            .to_owned();
    }
    let (exec, keep) = (
        cpu_list::format(&executors),
        cpu_list::format(&housekeeping),
    );
    let noun = if executors.len() == 1 { "CPU" } else { "CPUs" };
    format!(
        "to dedicate {noun} {exec} to basalt, boot with isolcpus=managed_irq,domain,{exec} nohz_full={exec} \
         rcu_nocbs={exec} irqaffinity={keep} and set CPUAffinity={exec} \
         (tuning/profiles/basalt.service.d/10-latency.conf)"
    )
}

fn affinity(cpu: &CpuFacts, plan: Plan) -> Finding {
    let mask = if cpu.affinity.is_empty() {
        &cpu.online
    } else {
        &cpu.affinity
    };
    let value = format!("{} CPUs ({})", mask.len(), list(mask));
    match plan.cores {
        Some(cores) if cores > mask.len() => {
            Finding::new("cpu.affinity", Area::Cpu, Verdict::Fail, value)
                .detail(format!(
            "--cores {cores} asks for more executors than the {} CPUs this process may run on; \
                 two executors would share a CPU and stall each other",
            mask.len()
        ))
                .fix(format!(
            "use --cores {} or widen the affinity (CPUAffinity=, taskset, the container's cpuset)",
            mask.len()
        ))
        }
        Some(cores) => Finding::new("cpu.affinity", Area::Cpu, Verdict::Ok, value).detail(format!(
            "--cores {cores} fits; executors pin to {}",
            list(&mask[..cores.min(mask.len())])
        )),
        None => Finding::new("cpu.affinity", Area::Cpu, Verdict::Ok, value).detail(format!(
            "without --cores basalt starts {} executors, one per CPU in the mask",
            mask.len()
        )),
    }
}

fn irq(cpu: &CpuFacts, plan: Plan) -> Finding {
    let planned: BTreeSet<u32> = crate::rules::planned_cpus_of(cpu, plan)
        .into_iter()
        .collect();
    let counts: Vec<String> = cpu
        .device_irqs
        .iter()
        .map(|(n, count)| format!("cpu{n} {count}"))
        .collect();
    let mut value = if counts.is_empty() {
        "device IRQs unknown".to_owned()
    } else {
        format!("device IRQs since boot: {}", counts.join(", "))
    };
    if let Some(default) = &cpu.default_irq_affinity {
        value.push_str(&format!("; default affinity {}", list(default)));
    }
    let dedicated: BTreeSet<u32> = planned
        .intersection(&cpu.dedicated_cpus())
        .copied()
        .collect();
    if dedicated.is_empty() {
        return Finding::new("cpu.irq", Area::Cpu, Verdict::Info, value).detail(
            "executors share their CPUs with interrupt handling; steering IRQs away pays off only once the executor CPUs are isolated (see cpu.isolation)",
        );
    }
    let exposed: Vec<u32> = cpu
        .default_irq_affinity
        .iter()
        .flatten()
        .copied()
        .filter(|c| dedicated.contains(c))
        .collect();
    if exposed.is_empty() {
        Finding::new("cpu.irq", Area::Cpu, Verdict::Ok, value)
            .detail("new interrupts are steered away from the isolated executor CPUs")
    } else {
        Finding::new("cpu.irq", Area::Cpu, Verdict::Warn, value)
            .detail(format!(
                "interrupts may still be delivered to isolated executor CPUs {}: each one preempts an executor mid-request",
                list(&exposed)
            ))
            .fix(
                "boot with irqaffinity=<housekeeping cpus> and isolcpus=managed_irq,…; tell irqbalance to stay off them (IRQBALANCE_BANNED_CPULIST=<executor cpus>) or write the housekeeping mask to /proc/irq/*/smp_affinity",
            )
    }
}

fn numa(cpu: &CpuFacts, plan: Plan) -> Finding {
    if cpu.numa_nodes.is_empty() {
        return Finding::new("cpu.numa", Area::Cpu, Verdict::Info, "unknown")
            .detail("the kernel exposes no NUMA topology");
    }
    let planned: BTreeSet<u32> = crate::rules::planned_cpus_of(cpu, plan)
        .into_iter()
        .collect();
    let spanned: Vec<u32> = cpu
        .numa_nodes
        .iter()
        .filter(|(_, cpus)| cpus.iter().any(|c| planned.contains(c)))
        .map(|(node, _)| *node)
        .collect();
    let value = format!(
        "{} node(s); executors on node(s) {}",
        cpu.numa_nodes.len(),
        spanned
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if spanned.len() > 1 {
        Finding::new("cpu.numa", Area::Cpu, Verdict::Warn, value)
            .detail(
                "executors on several NUMA nodes: every hop between them, and every access to the \
                 sequencer's memory from a remote node, crosses the interconnect",
            )
            .fix("pin basalt to the CPUs of one node (CPUAffinity= with that node's cpulist), ideally the node the NVMe and NIC are attached to")
    } else {
        Finding::new("cpu.numa", Area::Cpu, Verdict::Ok, value)
            .detail("all executors share one memory node")
    }
}

fn clocksource(cpu: &CpuFacts) -> Finding {
    let Some(source) = cpu.clocksource.clone() else {
        return Finding::new("cpu.clocksource", Area::Cpu, Verdict::Info, "unknown");
    };
    match source.as_str() {
        "tsc" | "kvm-clock" | "arch_sys_counter" | "hyperv_clocksource_tsc_page" => {
            Finding::new("cpu.clocksource", Area::Cpu, Verdict::Ok, source)
                .detail("clock reads are served in user space (vDSO) in tens of nanoseconds")
        }
        _ => Finding::new("cpu.clocksource", Area::Cpu, Verdict::Warn, source)
            .detail(
                "this clocksource is read through a system call or slow device access, costing \
                 microseconds on every timer and latency measurement the runtime makes",
            )
            .fix("switch to tsc if the CPU has a stable TSC: echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource (or clocksource=tsc tsc=reliable at boot)"),
    }
}

fn virtualisation(cpu: &CpuFacts) -> Finding {
    if !cpu.hypervisor {
        return Finding::new("cpu.virtualisation", Area::Cpu, Verdict::Ok, "bare metal")
            .detail("no hypervisor flag: waking an idle CPU costs only the C-state exit");
    }
    let driver = cpu.cpuidle_driver.as_deref().unwrap_or("none");
    let poll = cpu.guest_halt_poll_ns;
    let value = format!(
        "guest; cpuidle {driver}, guest_halt_poll_ns {}",
        poll.map_or("-".to_owned(), |ns| ns.to_string())
    );
    if driver == "haltpoll" && poll.unwrap_or(0) > 0 {
        Finding::new("cpu.virtualisation", Area::Cpu, Verdict::Ok, value)
            .detail("idle vCPUs poll before halting, so a wake-up within the poll window avoids an exit to the hypervisor")
    } else {
        Finding::new("cpu.virtualisation", Area::Cpu, Verdict::Warn, value)
            .detail(format!(
                "in a guest without halt polling every idle vCPU halts into the hypervisor and \
                 waking it costs {VCPU_WAKE_COST} per direction, on every request that crosses \
                 CPUs or arrives after an idle spell"
            ))
            .fix(
                "boot the guest with cpuidle_haltpoll.force=1 haltpoll.guest_halt_poll_ns=200000, \
                 or on dedicated vCPUs run basalt with --spin-before-park; ask the provider for \
                 dedicated (pinned) vCPUs",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_cpu_guest() -> CpuFacts {
        CpuFacts {
            online: vec![0, 1],
            sibling_groups: vec![vec![0], vec![1]],
            smt_active: Some(false),
            affinity: vec![0, 1],
            hypervisor: true,
            cpuidle_driver: Some("haltpoll".into()),
            guest_halt_poll_ns: Some(0),
            ..CpuFacts::default()
        }
    }

    fn find<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
        findings.iter().find(|f| f.id == id).unwrap()
    }

    #[test]
    fn guest_without_halt_polling_warns() {
        let findings = evaluate(&two_cpu_guest(), Plan::default());
        assert_eq!(find(&findings, "cpu.virtualisation").verdict, Verdict::Warn);
        assert_eq!(find(&findings, "cpu.clocksource").verdict, Verdict::Info);
        assert_eq!(find(&findings, "cpu.numa").verdict, Verdict::Info);
        let fix = find(&findings, "cpu.isolation").fix.clone().unwrap();
        assert!(
            fix.contains("isolcpus=managed_irq,domain,1 ") && fix.contains("irqaffinity=0 "),
            "{fix}"
        );
        assert_eq!(find(&findings, "cpu.smt").verdict, Verdict::Ok);
        assert_eq!(find(&findings, "cpu.governor").verdict, Verdict::Info);
        assert_eq!(find(&findings, "cpu.isolation").verdict, Verdict::Info);
        let polling = CpuFacts {
            guest_halt_poll_ns: Some(200_000),
            ..two_cpu_guest()
        };
        assert_eq!(
            find(&evaluate(&polling, Plan::default()), "cpu.virtualisation").verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn clocksource_and_numa() {
        let hpet = CpuFacts {
            clocksource: Some("hpet".into()),
            ..two_cpu_guest()
        };
        assert_eq!(
            find(&evaluate(&hpet, Plan::default()), "cpu.clocksource").verdict,
            Verdict::Warn
        );
        let kvm = CpuFacts {
            clocksource: Some("kvm-clock".into()),
            ..two_cpu_guest()
        };
        assert_eq!(
            find(&evaluate(&kvm, Plan::default()), "cpu.clocksource").verdict,
            Verdict::Ok
        );
        let two_nodes = CpuFacts {
            online: vec![0, 1, 2, 3],
            affinity: vec![0, 1, 2, 3],
            numa_nodes: vec![(0, vec![0, 1]), (1, vec![2, 3])],
            ..CpuFacts::default()
        };
        assert_eq!(
            find(&evaluate(&two_nodes, Plan::default()), "cpu.numa").verdict,
            Verdict::Warn
        );
        assert_eq!(
            find(&evaluate(&two_nodes, Plan { cores: Some(2) }), "cpu.numa").verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn too_many_cores_fail() {
        let findings = evaluate(&two_cpu_guest(), Plan { cores: Some(4) });
        let affinity = find(&findings, "cpu.affinity");
        assert_eq!(affinity.verdict, Verdict::Fail);
        assert!(affinity.fix.as_ref().unwrap().contains("--cores 2"));
        assert_eq!(
            find(
                &evaluate(&two_cpu_guest(), Plan { cores: Some(1) }),
                "cpu.affinity"
            )
            .verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn isolation_and_governor_and_smt() {
        let cpu = CpuFacts {
            online: vec![0, 1, 2, 3],
            sibling_groups: vec![vec![0, 2], vec![1, 3]],
            smt_active: Some(true),
            governors: vec!["powersave".into()],
            isolcpus: Some(vec![2, 3]),
            nohz_full: Some(vec![2, 3]),
            rcu_nocbs: None,
            isolated: vec![2, 3],
            affinity: vec![2, 3],
            ..CpuFacts::default()
        };
        let findings = evaluate(&cpu, Plan::default());
        assert_eq!(find(&findings, "cpu.smt").verdict, Verdict::Warn);
        assert_eq!(find(&findings, "cpu.governor").verdict, Verdict::Warn);
        let isolation = find(&findings, "cpu.isolation");
        assert_eq!(
            isolation.verdict,
            Verdict::Warn,
            "nohz_full without rcu_nocbs"
        );
        let fixed = CpuFacts {
            rcu_nocbs: Some(vec![2, 3]),
            ..cpu.clone()
        };
        assert_eq!(
            find(&evaluate(&fixed, Plan::default()), "cpu.isolation").verdict,
            Verdict::Ok
        );
        let partial = CpuFacts {
            affinity: vec![1, 2, 3],
            ..fixed
        };
        assert_eq!(
            find(&evaluate(&partial, Plan::default()), "cpu.isolation").verdict,
            Verdict::Warn
        );
        assert_eq!(
            find(
                &evaluate(&CpuFacts::default(), Plan::default()),
                "cpu.count"
            )
            .verdict,
            Verdict::Info
        );
    }
}
