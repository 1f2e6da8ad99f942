//! Disk rules for the data dir: a durable local filesystem, sensible
//! mount options and scheduler, direct I/O, and — above all — measured
//! sync latency against etcd's 10 ms p99 rule.

use crate::facts::HostFacts;
use crate::measure::disk::{DiskMeasurement, ETCD_TEST_WRITE_BYTES};
use crate::measure::latency::human_us;
use crate::rules::{human_bytes, Area, Finding, Verdict};

/// etcd's hardware guide: the 99th percentile of WAL fdatasync must stay
/// under 10 ms.
pub const ETCD_FSYNC_P99_LIMIT_US: f64 = 10_000.0;
/// A sync slower than a default heartbeat interval (100 ms) makes the
/// leader late for its own heartbeat.
pub const HEARTBEAT_DEFAULT_US: f64 = 100_000.0;
/// etcd's default backend quota; the data dir needs room for it plus the
/// WAL, snapshots and a compaction rewrite.
pub const MIN_FREE_BYTES: u64 = 4 << 30;
/// Below this many syncs a tail percentile is the maximum of a handful.
const FEW_SAMPLES: usize = 1000;

pub fn evaluate(facts: &HostFacts, disk: &DiskMeasurement) -> Vec<Finding> {
    vec![
        filesystem(facts),
        mount_options(facts),
        device(facts),
        scheduler(facts),
        write_cache(facts),
        rotational(facts),
        space(facts),
        o_direct(disk),
        fdatasync(disk),
        group_commit(disk),
    ]
}

fn filesystem(facts: &HostFacts) -> Finding {
    let Some(mount) = &facts.disk.mount else {
        return Finding::new("disk.filesystem", Area::Disk, Verdict::Info, "unknown")
            .detail("the data dir's mount is not in /proc/self/mountinfo");
    };
    let value = format!(
        "{} on {} ({})",
        mount.fs_type, mount.mount_point, mount.source
    );
    let fs = mount.fs_type.as_str();
    let finding = |verdict| Finding::new("disk.filesystem", Area::Disk, verdict, value.clone());
    match fs {
        "ext4" | "xfs" => finding(Verdict::Ok).detail("a journaling local filesystem with cheap fdatasync"),
        "tmpfs" | "ramfs" => finding(Verdict::Fail)
            .detail("memory-backed: everything is lost on reboot, and a node that forgets its log breaks Raft's safety")
            .fix("put --data-dir on a local SSD"),
        _ if fs.starts_with("nfs") || fs.starts_with("fuse") || ["cifs", "smb3", "9p", "virtiofs", "ceph", "glusterfs"].contains(&fs) => {
            finding(Verdict::Fail)
                .detail("a network filesystem: every sync is a network round trip with unpredictable tails; etcd's docs say to avoid them")
                .fix("put --data-dir on a local SSD")
        }
        "overlay" => finding(Verdict::Warn)
            .detail("the container's writable layer: copy-up and overlay metadata sit in the sync path, and the data dies with the container")
            .fix("mount a volume (hostPath or a local PersistentVolume) at the data dir"),
        "btrfs" | "zfs" => finding(Verdict::Warn)
            .detail("copy-on-write: every overwrite of a WAL block allocates and each fdatasync commits tree metadata")
            .fix("prefer ext4 or xfs; on btrfs at least chattr +C the data dir (no CoW)"),
        _ => finding(Verdict::Info).detail("not a filesystem basalt is tested on; the measured sync latency decides"),
    }
}

fn mount_options(facts: &HostFacts) -> Finding {
    let Some(mount) = &facts.disk.mount else {
        return Finding::new("disk.mount_options", Area::Disk, Verdict::Info, "unknown");
    };
    let value = mount.mount_options.join(",");
    let mut verdict = Verdict::Ok;
    let mut details = Vec::new();
    let mut fixes = Vec::new();
    if mount.read_only() {
        verdict = verdict.max(Verdict::Fail);
        details.push("mounted read-only: basalt cannot write its WAL".to_owned());
        fixes.push("remount read-write".to_owned());
    }
    if mount.has_option("nobarrier") || mount.has_option("barrier=0") {
        verdict = verdict.max(Verdict::Fail);
        details.push("write barriers are off: fdatasync returns before data is on stable media, so a power cut can lose acknowledged writes".to_owned());
        fixes.push("remove nobarrier/barrier=0".to_owned());
    }
    if mount.has_option("data=journal") {
        verdict = verdict.max(Verdict::Warn);
        details.push("data=journal writes every block twice".to_owned());
        fixes.push("use the default data=ordered".to_owned());
    }
    if mount.has_option("sync") {
        verdict = verdict.max(Verdict::Warn);
        details.push(
            "the sync option makes every write synchronous, including the B+tree's".to_owned(),
        );
        fixes.push("remove sync: basalt syncs exactly what must be durable".to_owned());
    }
    if mount.has_option("noatime") {
        details.push("noatime: reads never cause metadata writes".to_owned());
    } else if mount.has_option("relatime") || mount.has_option("lazytime") {
        verdict = verdict.max(Verdict::Info);
        details.push("relatime still writes an access time about once a day per file".to_owned());
        fixes.push("mount with noatime".to_owned());
    } else {
        verdict = verdict.max(Verdict::Warn);
        details.push("strict atime: every read of a page file writes inode metadata".to_owned());
        fixes.push("mount with noatime".to_owned());
    }
    let mut finding =
        Finding::new("disk.mount_options", Area::Disk, verdict, value).detail(details.join("; "));
    if !fixes.is_empty() {
        finding = finding.fix(fixes.join("; "));
    }
    finding
}

fn device(facts: &HostFacts) -> Finding {
    match &facts.disk.device {
        Some(dev) => {
            let mut value = dev.name.clone();
            if let Some(part) = &dev.partition {
                value = format!("{part} on {value}");
            }
            if let Some(model) = &dev.model {
                value = format!("{value} ({model})");
            }
            let detail = if dev.name.starts_with("vd") || dev.name.starts_with("xvd") {
                "a virtual disk: its latency is the hypervisor's storage path; only the measurement below tells"
            } else if dev.name.starts_with("nvme") {
                "an NVMe device: the recommended class for etcd-like workloads"
            } else {
                "the block device behind the data dir"
            };
            Finding::new("disk.device", Area::Disk, Verdict::Info, value).detail(detail)
        }
        None => Finding::new("disk.device", Area::Disk, Verdict::Info, "none")
            .detail("no block device behind the filesystem (tmpfs, overlay, network or btrfs): scheduler and cache cannot be read"),
    }
}

fn scheduler(facts: &HostFacts) -> Finding {
    let Some(scheduler) = facts.disk.device.as_ref().and_then(|d| d.scheduler.clone()) else {
        return Finding::new("disk.scheduler", Area::Disk, Verdict::Info, "unknown");
    };
    let name = facts
        .disk
        .device
        .as_ref()
        .map_or("<disk>", |d| d.name.as_str());
    match scheduler.as_str() {
        "none" | "mq-deadline" | "kyber" | "noop" | "deadline" => {
            Finding::new("disk.scheduler", Area::Disk, Verdict::Ok, scheduler)
                .detail("a low-overhead scheduler; basalt keeps few requests in flight and wants them dispatched at once")
        }
        _ => Finding::new("disk.scheduler", Area::Disk, Verdict::Warn, scheduler)
            .detail("bfq/cfq idle the queue to be fair between processes, which delays a WAL sync behind other I/O")
            .fix(format!(
                "echo mq-deadline > /sys/block/{name}/queue/scheduler (or none on NVMe), or raise basalt's I/O priority (IOSchedulingPriority=0 in the unit's drop-in)"
            )),
    }
}

fn write_cache(facts: &HostFacts) -> Finding {
    let Some(cache) = facts
        .disk
        .device
        .as_ref()
        .and_then(|d| d.write_cache.clone())
    else {
        return Finding::new("disk.write_cache", Area::Disk, Verdict::Info, "unknown");
    };
    if cache == "write back" {
        Finding::new("disk.write_cache", Area::Disk, Verdict::Ok, cache)
            .detail("a volatile cache the kernel flushes on every fdatasync, so durable writes stay durable")
    } else {
        Finding::new("disk.write_cache", Area::Disk, Verdict::Ok, cache).detail(
            "no volatile cache reported, so the kernel sends no flushes: right for disks with power-loss protection, \
             data loss on a power cut if the device lies",
        )
    }
}

fn rotational(facts: &HostFacts) -> Finding {
    let Some(rotational) = facts.disk.device.as_ref().and_then(|d| d.rotational) else {
        return Finding::new("disk.rotational", Area::Disk, Verdict::Info, "unknown");
    };
    if !rotational {
        Finding::new(
            "disk.rotational",
            Area::Disk,
            Verdict::Ok,
            "no (solid state)",
        )
        .detail("no seek time between the WAL and the B+tree files")
    } else if facts.cpu.hypervisor {
        Finding::new("disk.rotational", Area::Disk, Verdict::Info, "reported rotational (virtual disk)")
            .detail("virtio and most virtual disks report rotational whatever backs them; trust the measured sync latency")
    } else {
        Finding::new(
            "disk.rotational",
            Area::Disk,
            Verdict::Warn,
            "yes (spinning)",
        )
        .detail("every sync waits for the platter; etcd's hardware guide recommends SSDs")
        .fix("put --data-dir on an SSD or NVMe device")
    }
}

fn space(facts: &HostFacts) -> Finding {
    let (Some(total), Some(available)) = (facts.disk.total_bytes, facts.disk.available_bytes)
    else {
        return Finding::new("disk.space", Area::Disk, Verdict::Info, "unknown");
    };
    let value = format!("{} free of {}", human_bytes(available), human_bytes(total));
    if available < MIN_FREE_BYTES {
        Finding::new("disk.space", Area::Disk, Verdict::Warn, value)
            .detail("less than the 2 GiB default quota plus room for WAL segments, snapshots and a compaction rewrite")
            .fix("free space or lower --quota-backend-bytes (see `basalt-tune recommend`)")
    } else {
        Finding::new("disk.space", Area::Disk, Verdict::Ok, value)
            .detail("room for the quota `recommend` derives from it")
    }
}

fn o_direct(disk: &DiskMeasurement) -> Finding {
    if disk.o_direct.supported {
        Finding::new("disk.o_direct", Area::Disk, Verdict::Ok, "supported")
            .detail("basalt's WAL writes 4 KiB blocks with O_DIRECT through io_uring")
    } else {
        let error = disk
            .o_direct
            .error
            .clone()
            .unwrap_or_else(|| "unknown error".into());
        Finding::new(
            "disk.o_direct",
            Area::Disk,
            Verdict::Fail,
            format!("not supported: {error}"),
        )
        .detail("the filesystem refused an aligned O_DIRECT write; basalt's WAL needs direct I/O")
        .fix("use ext4 or xfs on a block device")
    }
}

fn fdatasync(disk: &DiskMeasurement) -> Finding {
    let Some(append) = disk.append_fdatasync else {
        let error = disk.error.clone().unwrap_or_else(|| "no sample".into());
        return Finding::new("disk.fdatasync", Area::Disk, Verdict::Fail, "not measured")
            .detail(format!("the sync test did not complete: {error}"));
    };
    let mut value = format!(
        "p50 {} p99 {} p99.9 {} ({} × {ETCD_TEST_WRITE_BYTES} B)",
        human_us(append.p50_us),
        human_us(append.p99_us),
        human_us(append.p999_us),
        append.samples
    );
    if let Some(direct) = disk.direct_overwrite_fdatasync {
        value.push_str(&format!(
            "; O_DIRECT 4 KiB p50 {} p99 {}",
            human_us(direct.p50_us),
            human_us(direct.p99_us)
        ));
    }
    let finding = fdatasync_verdict(value, append.p99_us, append.p999_us);
    if append.samples < FEW_SAMPLES {
        let caveat = format!(
            "; only {} samples, so p99 and p99.9 are close to the maximum: run with a longer --disk-time for a trustworthy tail",
            append.samples
        );
        return Finding {
            detail: finding.detail.clone() + &caveat,
            ..finding
        };
    }
    finding
}

fn fdatasync_verdict(value: String, p99_us: f64, p999_us: f64) -> Finding {
    if p99_us >= ETCD_FSYNC_P99_LIMIT_US {
        Finding::new("disk.fdatasync", Area::Disk, Verdict::Fail, value)
            .detail(
                "p99 of fdatasync is at or above the 10 ms etcd's hardware guide requires: \
                 expect slow applies, missed heartbeats and leader elections under load",
            )
            .fix("move --data-dir to a dedicated low-latency SSD/NVMe; keep other I/O (logs, images) off it")
    } else if p999_us >= HEARTBEAT_DEFAULT_US {
        Finding::new("disk.fdatasync", Area::Disk, Verdict::Warn, value)
            .detail("p99 is under etcd's 10 ms but 1 in 1000 syncs takes longer than a 100 ms heartbeat")
            .fix("look for competing I/O on the device; raise --heartbeat-interval (see recommend)")
    } else {
        Finding::new("disk.fdatasync", Area::Disk, Verdict::Ok, value)
            .detail("p99 under etcd's 10 ms rule (the fio test of etcd's docs: 2300 B writes, fdatasync each)")
    }
}

fn group_commit(disk: &DiskMeasurement) -> Finding {
    match &disk.group_commit {
        Some(group) => Finding::new(
            "disk.group_commit",
            Area::Disk,
            Verdict::Ok,
            format!(
                "{} × 4 KiB per sync: p50 {}, mean {} → ~{:.0} syncs/s, ~{:.0} entries/s",
                group.entries_per_sync,
                human_us(group.sync.p50_us),
                human_us(group.sync.mean_us),
                group.syncs_per_second,
                group.entries_per_second
            ),
        )
        .detail(
            "one client waits one sync per write; with group commit all writes arriving during \
             a sync share the next one, so this is the ceiling for small writes on this disk",
        ),
        None => Finding::new(
            "disk.group_commit",
            Area::Disk,
            Verdict::Info,
            "not measured",
        )
        .detail("needs O_DIRECT; see disk.o_direct"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{BlockDeviceFacts, DiskFacts, MountFacts};
    use crate::measure::disk::DirectIoSupport;
    use crate::measure::LatencySummary;

    fn latency(p50_us: f64, p99_us: f64, p999_us: f64) -> LatencySummary {
        LatencySummary {
            samples: 1000,
            min_us: p50_us / 2.0,
            p50_us,
            p99_us,
            p999_us,
            max_us: p999_us,
            mean_us: p50_us,
        }
    }

    fn measured(p99_us: f64) -> DiskMeasurement {
        DiskMeasurement {
            append_fdatasync: Some(latency(200.0, p99_us, p99_us * 2.0)),
            o_direct: DirectIoSupport {
                supported: true,
                error: None,
            },
            direct_overwrite_fdatasync: Some(latency(150.0, 400.0, 900.0)),
            group_commit: None,
            error: None,
        }
    }

    fn facts(fs_type: &str, options: &[&str]) -> HostFacts {
        HostFacts {
            disk: DiskFacts {
                data_dir: "/var/lib/basalt".into(),
                mount: Some(MountFacts {
                    mount_point: "/var/lib/basalt".into(),
                    fs_type: fs_type.into(),
                    source: "/dev/nvme0n1p1".into(),
                    mount_options: options.iter().map(|s| s.to_string()).collect(),
                    super_options: vec!["rw".into()],
                    device_number: "259:1".into(),
                }),
                device: Some(BlockDeviceFacts {
                    name: "nvme0n1".into(),
                    partition: Some("nvme0n1p1".into()),
                    scheduler: Some("bfq".into()),
                    rotational: Some(false),
                    write_cache: Some("write through".into()),
                    model: None,
                }),
                total_bytes: Some(100 << 30),
                available_bytes: Some(1 << 30),
            },
            ..HostFacts::default()
        }
    }

    fn verdict(findings: &[Finding], id: &str) -> Verdict {
        findings.iter().find(|f| f.id == id).unwrap().verdict
    }

    #[test]
    fn etcd_ten_millisecond_rule() {
        let f = facts("ext4", &["rw", "noatime"]);
        assert_eq!(
            verdict(&evaluate(&f, &measured(2_000.0)), "disk.fdatasync"),
            Verdict::Ok
        );
        assert_eq!(
            verdict(&evaluate(&f, &measured(10_000.0)), "disk.fdatasync"),
            Verdict::Fail
        );
        assert_eq!(
            verdict(&evaluate(&f, &measured(60_000.0)), "disk.fdatasync"),
            Verdict::Fail
        );
        let mut few = measured(2_000.0);
        if let Some(append) = few.append_fdatasync.as_mut() {
            append.samples = 40;
        }
        let few = evaluate(&f, &few);
        let finding = few.iter().find(|f| f.id == "disk.fdatasync").unwrap();
        assert_eq!(finding.verdict, Verdict::Ok);
        assert!(finding.detail.contains("only 40 samples"));
        let mut spiky = measured(5_000.0);
        spiky.append_fdatasync = Some(latency(200.0, 5_000.0, 150_000.0));
        assert_eq!(
            verdict(&evaluate(&f, &spiky), "disk.fdatasync"),
            Verdict::Warn
        );
        let mut none = measured(1.0);
        none.append_fdatasync = None;
        none.error = Some("append phase: EIO".into());
        assert_eq!(
            verdict(&evaluate(&f, &none), "disk.fdatasync"),
            Verdict::Fail
        );
    }

    #[test]
    fn filesystem_mounts_and_device() {
        let ok = evaluate(&facts("ext4", &["rw", "noatime"]), &measured(1_000.0));
        assert_eq!(verdict(&ok, "disk.filesystem"), Verdict::Ok);
        assert_eq!(verdict(&ok, "disk.mount_options"), Verdict::Ok);
        assert_eq!(verdict(&ok, "disk.scheduler"), Verdict::Warn);
        assert_eq!(verdict(&ok, "disk.rotational"), Verdict::Ok);
        assert_eq!(verdict(&ok, "disk.space"), Verdict::Warn);
        assert_eq!(verdict(&ok, "disk.group_commit"), Verdict::Info);
        let tmp = evaluate(&facts("tmpfs", &["rw", "relatime"]), &measured(1_000.0));
        assert_eq!(verdict(&tmp, "disk.filesystem"), Verdict::Fail);
        assert_eq!(verdict(&tmp, "disk.mount_options"), Verdict::Info);
        let ro = evaluate(&facts("xfs", &["ro", "noatime"]), &measured(1_000.0));
        assert_eq!(verdict(&ro, "disk.mount_options"), Verdict::Fail);
        let nfs = evaluate(&facts("nfs4", &["rw"]), &measured(1_000.0));
        assert_eq!(verdict(&nfs, "disk.filesystem"), Verdict::Fail);
        assert_eq!(
            verdict(&nfs, "disk.mount_options"),
            Verdict::Warn,
            "strict atime"
        );
        let mut no_direct = measured(1_000.0);
        no_direct.o_direct = DirectIoSupport {
            supported: false,
            error: Some("Invalid argument".into()),
        };
        assert_eq!(
            verdict(
                &evaluate(&facts("ext4", &["rw"]), &no_direct),
                "disk.o_direct"
            ),
            Verdict::Fail
        );
    }
}
