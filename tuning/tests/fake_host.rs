//! Recorded host facts (a fake `/proc` and `/sys` tree) through gathering,
//! the rules and the recommendation: a bare-metal SMT server with
//! isolated cores, THP always, swap on, a tiny memlock limit, xfs on an
//! NVMe partition, and io_uring disabled by sysctl inside a seccomp
//! sandbox.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use basalt_tuning::facts::{HostFacts, Limit};
use basalt_tuning::host_root::HostRoot;
use basalt_tuning::measure::disk::{DirectIoSupport, DiskMeasurement};
use basalt_tuning::measure::{IoUringProbe, LatencySummary, Measurements};
use basalt_tuning::recommend::recommend;
use basalt_tuning::rules::{evaluate, Finding, Plan, Verdict};

fn write(root: &Path, path: &str, contents: &str) {
    let full = root.join(path);
    fs::create_dir_all(full.parent().unwrap()).unwrap();
    fs::write(full, contents).unwrap();
}

/// Builds the tree and returns the data dir to check (a real directory,
/// named as the mount point in the fake mountinfo).
fn smt_server(root: &Path, data_dir: &Path) {
    write(
        root,
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3 quiet\n",
    );
    let mut cpuinfo = String::new();
    for cpu in 0..4 {
        cpuinfo.push_str(&format!(
            "processor\t: {cpu}\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 ht\n\n"
        ));
    }
    write(root, "proc/cpuinfo", &cpuinfo);
    write(
        root,
        "proc/self/status",
        "Name:\tbasalt-tune\nCapEff:\t0000000000000000\nSeccomp:\t2\nCpus_allowed:\tc\nCpus_allowed_list:\t2-3\n",
    );
    write(
        root,
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max open files            1024                 4096                 files     \n\
         Max locked memory         65536                65536                bytes     \n",
    );
    write(
        root,
        "proc/self/mountinfo",
        &format!(
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 259:2 / / rw,relatime - ext4 /dev/nvme0n1p2 rw\n\
             60 27 259:1 / {} rw,relatime shared:5 - xfs /dev/nvme0n1p1 rw,attr2,inode64\n",
            data_dir.display()
        ),
    );
    write(
        root,
        "proc/meminfo",
        "MemTotal:        4194304 kB\nMemFree:         1000000 kB\nSwapTotal:       2097152 kB\n",
    );
    write(
        root,
        "proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n/swap.img\tfile\t2097148\t0\t-2\n",
    );
    write(root, "proc/sys/vm/swappiness", "60\n");
    write(root, "proc/sys/net/core/somaxconn", "4096\n");
    write(root, "proc/sys/net/ipv4/tcp_slow_start_after_idle", "1\n");
    write(root, "proc/irq/default_smp_affinity", "f\n");
    write(
        root,
        "proc/interrupts",
        "           CPU0       CPU1       CPU2       CPU3\n\
          120:       9000          0        310          0   PCI-MSI   nvme0q1\n\
          LOC:     100000     100000       5000       5000   Local timer interrupts\n",
    );
    write(root, "proc/sys/kernel/osrelease", "6.8.0-45-generic\n");
    write(root, "proc/sys/kernel/io_uring_disabled", "2\n");

    let cpu = "sys/devices/system/cpu";
    write(root, &format!("{cpu}/online"), "0-3\n");
    write(root, &format!("{cpu}/isolated"), "2-3\n");
    write(
        root,
        "sys/devices/system/clocksource/clocksource0/current_clocksource",
        "hpet\n",
    );
    write(root, "sys/devices/system/node/node0/cpulist", "0-3\n");
    write(root, "sys/devices/system/node/node1/cpulist", "\n");
    write(root, &format!("{cpu}/smt/active"), "1\n");
    for (n, siblings) in [(0, "0,2"), (1, "1,3"), (2, "0,2"), (3, "1,3")] {
        write(
            root,
            &format!("{cpu}/cpu{n}/topology/thread_siblings_list"),
            siblings,
        );
        write(
            root,
            &format!("{cpu}/cpu{n}/cpufreq/scaling_governor"),
            "powersave\n",
        );
    }
    write(
        root,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    );
    write(
        root,
        "sys/kernel/mm/transparent_hugepage/defrag",
        "always defer defer+madvise [madvise] never\n",
    );

    let disk = "sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1";
    write(
        root,
        &format!("{disk}/queue/scheduler"),
        "[none] mq-deadline\n",
    );
    write(root, &format!("{disk}/queue/rotational"), "0\n");
    write(root, &format!("{disk}/queue/write_cache"), "write back\n");
    write(root, &format!("{disk}/device/model"), "Fake NVMe 1TB\n");
    write(root, &format!("{disk}/nvme0n1p1/partition"), "1\n");
    fs::create_dir_all(root.join("sys/dev/block")).unwrap();
    symlink(
        "../../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p1",
        root.join("sys/dev/block/259:1"),
    )
    .unwrap();
}

fn synthetic_measurements(p99_us: f64) -> Measurements {
    let sync = LatencySummary {
        samples: 1000,
        min_us: 40.0,
        p50_us: 60.0,
        p99_us,
        p999_us: p99_us * 1.5,
        max_us: p99_us * 2.0,
        mean_us: 70.0,
    };
    Measurements {
        disk: DiskMeasurement {
            append_fdatasync: Some(sync),
            o_direct: DirectIoSupport {
                supported: true,
                error: None,
            },
            direct_overwrite_fdatasync: Some(sync),
            group_commit: None,
            error: None,
        },
        io_uring: IoUringProbe::failed("setup", &std::io::Error::from_raw_os_error(libc_eperm())),
        peers: vec![],
    }
}

/// EPERM is 1 on every Linux architecture.
fn libc_eperm() -> i32 {
    1
}

fn find<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no finding {id}"))
}

#[test]
fn gathers_every_fact_from_the_tree() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = fs::canonicalize(data.path()).unwrap();
    smt_server(root.path(), &data_dir);

    let facts = HostFacts::gather(&HostRoot::new(root.path()), &data_dir);

    assert_eq!(facts.cpu.online, vec![0, 1, 2, 3]);
    assert_eq!(facts.cpu.sibling_groups, vec![vec![0, 2], vec![1, 3]]);
    assert_eq!(facts.cpu.governors, vec!["powersave".to_owned()]);
    assert_eq!(facts.cpu.isolcpus, Some(vec![2, 3]));
    assert_eq!(facts.cpu.rcu_nocbs, Some(vec![2, 3]));
    assert_eq!(facts.cpu.affinity, vec![2, 3]);
    assert!(!facts.cpu.hypervisor);
    assert_eq!(facts.cpu.default_irq_affinity, Some(vec![0, 1, 2, 3]));
    assert_eq!(facts.cpu.clocksource.as_deref(), Some("hpet"));
    assert_eq!(
        facts.cpu.numa_nodes,
        vec![(0, vec![0, 1, 2, 3])],
        "a node without CPUs is left out"
    );
    assert_eq!(
        facts.cpu.device_irqs,
        vec![(0, 9000), (1, 0), (2, 310), (3, 0)]
    );

    assert_eq!(facts.memory.thp_enabled.as_deref(), Some("always"));
    assert_eq!(facts.memory.thp_defrag.as_deref(), Some("madvise"));
    assert_eq!(facts.memory.swap_devices, 1);
    assert_eq!(facts.memory.swap_total_bytes, Some(2 << 30));
    assert_eq!(facts.memory.total_bytes, Some(4 << 30));
    assert_eq!(facts.memory.memlock_soft, Some(Limit::Bytes(65536)));
    assert_eq!(facts.memory.cap_ipc_lock, Some(false));

    let mount = facts.disk.mount.as_ref().expect("mount found");
    assert_eq!(mount.fs_type, "xfs");
    assert_eq!(mount.source, "/dev/nvme0n1p1");
    let device = facts
        .disk
        .device
        .as_ref()
        .expect("device resolved through /sys/dev/block");
    assert_eq!(device.name, "nvme0n1");
    assert_eq!(device.partition.as_deref(), Some("nvme0n1p1"));
    assert_eq!(device.scheduler.as_deref(), Some("none"));
    assert_eq!(device.rotational, Some(false));
    assert_eq!(device.model.as_deref(), Some("Fake NVMe 1TB"));
    assert!(
        facts.disk.total_bytes.unwrap() > 0,
        "statvfs of the real data dir"
    );

    assert_eq!(facts.kernel.io_uring_disabled, Some(2));
    assert_eq!(facts.kernel.seccomp_mode, Some(2));
    assert_eq!(facts.kernel.version(), Some((6, 8)));
    assert_eq!(facts.network.somaxconn, Some(4096));
    assert_eq!(facts.network.tcp_slow_start_after_idle, Some(1));
    assert_eq!(facts.network.tcp_max_syn_backlog, None);
}

#[test]
fn rules_and_recommendation_for_the_recorded_host() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = fs::canonicalize(data.path()).unwrap();
    smt_server(root.path(), &data_dir);
    let facts = HostFacts::gather(&HostRoot::new(root.path()), &data_dir);
    let measured = synthetic_measurements(800.0);

    let findings = evaluate(&facts, &measured, Plan::default());
    let expect = [
        ("cpu.count", Verdict::Ok),
        ("cpu.smt", Verdict::Warn),
        ("cpu.governor", Verdict::Warn),
        ("cpu.isolation", Verdict::Ok),
        ("cpu.affinity", Verdict::Ok),
        ("cpu.irq", Verdict::Warn),
        ("cpu.numa", Verdict::Ok),
        ("cpu.clocksource", Verdict::Warn),
        ("cpu.virtualisation", Verdict::Ok),
        ("memory.thp", Verdict::Warn),
        ("memory.swap", Verdict::Warn),
        ("memory.swappiness", Verdict::Warn),
        ("memory.memlock", Verdict::Fail),
        ("disk.filesystem", Verdict::Ok),
        ("disk.mount_options", Verdict::Info),
        ("disk.scheduler", Verdict::Ok),
        ("disk.rotational", Verdict::Ok),
        ("disk.fdatasync", Verdict::Ok),
        ("io_uring.kernel", Verdict::Ok),
        ("io_uring.sysctl", Verdict::Fail),
        ("io_uring.setup", Verdict::Fail),
        ("network.sysctl", Verdict::Info),
        ("network.peers", Verdict::Info),
    ];
    for (id, verdict) in expect {
        assert_eq!(
            find(&findings, id).verdict,
            verdict,
            "{id}: {:?}",
            find(&findings, id)
        );
    }
    assert!(find(&findings, "memory.memlock")
        .value
        .contains("need 60 MiB for 2 executor(s)"));
    assert!(find(&findings, "io_uring.setup")
        .detail
        .contains("io_uring_disabled"));
    assert!(find(&findings, "disk.device")
        .value
        .contains("nvme0n1p1 on nvme0n1"));

    // Asking for more executors than the affinity mask allows fails.
    let too_many = evaluate(&facts, &measured, Plan { cores: Some(3) });
    assert_eq!(find(&too_many, "cpu.affinity").verdict, Verdict::Fail);
    assert!(
        find(&too_many, "memory.memlock")
            .value
            .contains("for 3 executor(s)"),
        "memlock counts the executors asked for"
    );

    let rec = recommend(&facts, &measured, Plan::default());
    let value = |name: &str| {
        rec.settings
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(value("heartbeat-interval").as_deref(), Some("100"));
    assert_eq!(value("election-timeout").as_deref(), Some("1000"));
    assert_eq!(
        value("snapshot-count").as_deref(),
        Some("10000"),
        "4 GiB of RAM"
    );
    assert_eq!(
        value("cores").as_deref(),
        Some("2"),
        "CPUs 2 and 3 are separate cores"
    );
    assert_eq!(
        value("spin-before-park").as_deref(),
        Some("50us"),
        "isolated cores"
    );
}

#[test]
fn an_empty_tree_gives_unknowns_not_errors() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let facts = HostFacts::gather(&HostRoot::new(root.path()), data.path());
    let findings = evaluate(&facts, &synthetic_measurements(500.0), Plan::default());
    for id in [
        "cpu.count",
        "cpu.smt",
        "memory.thp",
        "disk.filesystem",
        "disk.scheduler",
        "io_uring.kernel",
    ] {
        assert_eq!(find(&findings, id).verdict, Verdict::Info, "{id}");
    }
}
