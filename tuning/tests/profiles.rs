//! The profiles in tuning/profiles/ must be well-formed and must fix what
//! `check` complains about: each setting is fed back through the rules.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use basalt_tuning::facts::{KernelFacts, MemoryFacts, NetworkFacts};
use basalt_tuning::measure::IoUringProbe;
use basalt_tuning::rules::{self, Verdict};
use serde_json::Value;

fn profile(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("profiles")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `key = value` lines of a sysctl.d file.
fn sysctls() -> BTreeMap<String, String> {
    profile("90-basalt.conf")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key = value: {line}"));
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// `Key=Value` settings of a systemd unit or drop-in.
fn unit_settings(name: &str) -> BTreeMap<String, String> {
    profile(name)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('[') && line.contains('='))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

#[test]
fn sysctl_profile_satisfies_the_memory_and_io_uring_rules() {
    let sysctls = sysctls();
    let swappiness: u64 = sysctls["vm.swappiness"].parse().unwrap();
    let swapping_host = MemoryFacts {
        swappiness: Some(swappiness),
        swap_devices: 1,
        swap_total_bytes: Some(1 << 30),
        ..MemoryFacts::default()
    };
    let findings = rules::memory::evaluate(&swapping_host, 1);
    let verdict = findings
        .iter()
        .find(|f| f.id == "memory.swappiness")
        .unwrap()
        .verdict;
    assert_eq!(verdict, Verdict::Ok);

    let disabled: u64 = sysctls["kernel.io_uring_disabled"].parse().unwrap();
    let kernel = KernelFacts {
        release: Some("6.8.0".into()),
        io_uring_disabled: Some(disabled),
        seccomp_mode: Some(0),
    };
    let findings = rules::io_uring::evaluate(&kernel, &IoUringProbe::works());
    assert!(
        findings.iter().all(|f| f.verdict == Verdict::Ok),
        "{findings:?}"
    );
}

#[test]
fn sysctl_profile_satisfies_the_network_rule() {
    let sysctls = sysctls();
    let number = |key: &str| sysctls.get(key).map(|v| v.parse::<u64>().unwrap());
    let network = NetworkFacts {
        somaxconn: number("net.core.somaxconn"),
        tcp_max_syn_backlog: number("net.ipv4.tcp_max_syn_backlog"),
        tcp_slow_start_after_idle: number("net.ipv4.tcp_slow_start_after_idle"),
    };
    let findings = rules::network::evaluate(&network, &[]);
    assert_eq!(findings[0].id, "network.sysctl");
    assert_eq!(findings[0].verdict, Verdict::Ok, "{:?}", findings[0]);
}

#[test]
fn thp_snippet_satisfies_the_thp_rule() {
    let snippet = profile("basalt-thp.conf");
    let value_for = |file: &str| {
        snippet
            .lines()
            .find(|line| line.starts_with("w ") && line.contains(file))
            .and_then(|line| line.split_whitespace().last())
            .map(str::to_owned)
    };
    let memory = MemoryFacts {
        thp_enabled: value_for("transparent_hugepage/enabled"),
        thp_defrag: value_for("transparent_hugepage/defrag"),
        ..MemoryFacts::default()
    };
    assert!(memory.thp_enabled.is_some() && memory.thp_defrag.is_some());
    let findings = rules::memory::evaluate(&memory, 1);
    assert_eq!(
        findings
            .iter()
            .find(|f| f.id == "memory.thp")
            .unwrap()
            .verdict,
        Verdict::Ok
    );
}

#[test]
fn seccomp_profile_allows_io_uring() {
    let profile: Value = serde_json::from_str(&profile("seccomp-basalt.json")).expect("valid JSON");
    let rules = profile["syscalls"].as_array().unwrap();
    let io_uring = ["io_uring_setup", "io_uring_enter", "io_uring_register"];
    for rule in rules {
        let names: Vec<&str> = rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let action = rule["action"].as_str().unwrap();
        for syscall in io_uring {
            if names.contains(&syscall) {
                assert_eq!(action, "SCMP_ACT_ALLOW", "{syscall} must be allowed");
            }
        }
        if action != "SCMP_ACT_ALLOW" {
            assert!(
                names.contains(&"kexec_load") || names.contains(&"mount"),
                "deny rule has the dangerous ones"
            );
        }
    }
    let allowed_by_default = profile["defaultAction"] == "SCMP_ACT_ALLOW";
    let allowed_explicitly = rules.iter().any(|rule| {
        rule["action"] == "SCMP_ACT_ALLOW"
            && rule["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "io_uring_setup")
    });
    assert!(allowed_by_default || allowed_explicitly);
}

#[test]
fn systemd_unit_and_drop_in_carry_the_latency_settings() {
    let unit = unit_settings("basalt.service");
    assert_eq!(unit["LimitMEMLOCK"], "infinity");
    assert!(unit.contains_key("ExecStart"));
    assert!(
        !unit.contains_key("SystemCallFilter"),
        "a filter could block io_uring"
    );

    let drop_in = unit_settings("basalt.service.d/10-latency.conf");
    assert!(
        basalt_tuning::cpu_list::parse(&drop_in["CPUAffinity"]).is_some_and(|set| !set.is_empty())
    );
    assert_eq!(drop_in["IOSchedulingClass"], "best-effort");
    assert_eq!(drop_in["IOSchedulingPriority"], "0");
    assert!(drop_in["Nice"].parse::<i32>().unwrap() < 0);
    assert_eq!(drop_in["LimitMEMLOCK"], "infinity");
}

#[test]
fn static_pod_replaces_etcd_and_allows_io_uring() {
    let pod = profile("kubeadm-basalt.yaml");
    for needle in [
        "name: etcd",
        "namespace: kube-system",
        "type: Localhost",
        "localhostProfile: profiles/basalt.json",
        "IPC_LOCK",
        "- basalt",
        "--data-dir=/var/lib/etcd",
        "path: /var/lib/etcd",
    ] {
        assert!(pod.contains(needle), "{needle} missing from the static pod");
    }
    assert!(
        !pod.contains("RuntimeDefault\n"),
        "RuntimeDefault blocks io_uring"
    );
}
