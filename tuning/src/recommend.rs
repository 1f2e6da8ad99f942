//! From measurements to flags: the heartbeat and election timeouts
//! etcd's tuning guide derives from peer round-trip times, the snapshot
//! count and backend quota the host can afford, and basalt's own core
//! and spinning knobs. Pure: the same facts give the same flags.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::facts::HostFacts;
use crate::measure::Measurements;
use crate::rules::{human_bytes, planned_cpus_of, Plan};

/// etcd's default heartbeat interval; lower gains nothing on a LAN and
/// costs CPU and bandwidth.
pub const HEARTBEAT_MIN_MS: u64 = 100;
/// etcd's default election timeout.
pub const ELECTION_MIN_MS: u64 = 1_000;
/// etcd refuses election timeouts above 50 s.
pub const ELECTION_MAX_MS: u64 = 50_000;
/// etcd's tuning guide: election timeout ≥ 10 × RTT …
pub const ELECTION_RTT_FACTOR: u64 = 10;
/// … and comfortably above the heartbeat (etcd's default ratio is 10×;
/// 5× is the least that survives a few lost heartbeats).
pub const ELECTION_HEARTBEAT_FACTOR: u64 = 5;
/// etcd's default snapshot count (since 3.2).
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 100_000;
/// etcd's pre-3.2 default, for small-memory nodes: fewer entries are
/// kept in memory between snapshots.
pub const SNAPSHOT_COUNT_SMALL: u64 = 10_000;
/// Below this much RAM, prefer the smaller snapshot count.
pub const SMALL_MEMORY_BYTES: u64 = 8 << 30;
/// etcd's default backend quota and the largest it suggests.
pub const QUOTA_DEFAULT_BYTES: u64 = 2 << 30;
pub const QUOTA_MAX_BYTES: u64 = 8 << 30;
/// Quotas are rounded down to this.
const QUOTA_STEP_BYTES: u64 = 256 << 20;
/// Spin duration on dedicated cores: ~50 µs covers a cross-core hop
/// (p99 ~350 µs → ~47 µs measured with glommio on the project's VMs).
pub const SPIN_BEFORE_PARK: &str = "50us";

/// One recommended setting.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Setting {
    /// The flag's name without dashes, as etcd's config file keys it.
    pub name: &'static str,
    /// `None`: leave unset (the default is right here).
    pub value: Option<String>,
    /// Only basalt has this flag (etcd would reject it).
    pub basalt_only: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recommendation {
    pub settings: Vec<Setting>,
    /// Caveats about the inputs (unreachable peers, missing numbers).
    pub notes: Vec<String>,
}

pub fn recommend(facts: &HostFacts, measured: &Measurements, plan: Plan) -> Recommendation {
    let mut notes = Vec::new();
    let reachable: Vec<_> = measured.peers.iter().filter(|p| p.reachable).collect();
    if measured.peers.is_empty() {
        notes.push(
            "no --peer-urls: timeouts assume a LAN; measure the real peers before production"
                .into(),
        );
    }
    let unreachable = measured.peers.len() - reachable.len();
    if unreachable > 0 {
        notes.push(format!(
            "{unreachable} peer(s) unreachable: timeouts are derived from the reachable ones only"
        ));
    }
    let max_rtt_us = reachable
        .iter()
        .filter_map(|p| p.rtt_max_us)
        .fold(0.0, f64::max);
    let fsync_p99_us = measured.disk.append_fdatasync.map(|s| s.p99_us);
    if fsync_p99_us.is_none() {
        notes.push("no disk measurement: the heartbeat ignores sync latency".into());
    }

    let (heartbeat, election, mut timing_notes) = timeouts(max_rtt_us, fsync_p99_us.unwrap_or(0.0));
    notes.append(&mut timing_notes);

    let mut settings = vec![
        Setting {
            name: "heartbeat-interval",
            value: Some(heartbeat.to_string()),
            basalt_only: false,
            reason: format!(
                "≈ the largest peer RTT ({}) and at least the disk's p99 sync ({}), never below \
                 etcd's {HEARTBEAT_MIN_MS} ms default (etcd tuning guide: around the max RTT)",
                ms(max_rtt_us),
                fsync_p99_us.map_or("unmeasured".into(), ms),
            ),
        },
        Setting {
            name: "election-timeout",
            value: Some(election.to_string()),
            basalt_only: false,
            reason: format!(
                "≥ {ELECTION_RTT_FACTOR}× the largest RTT and ≥ {ELECTION_HEARTBEAT_FACTOR}× the heartbeat, \
                 at least etcd's {ELECTION_MIN_MS} ms default, at most etcd's {ELECTION_MAX_MS} ms limit"
            ),
        },
        snapshot_count(facts),
        quota(facts),
    ];
    settings.extend(cores_and_spin(facts, plan));
    Recommendation { settings, notes }
}

fn ms(micros: f64) -> String {
    format!("{:.2} ms", micros / 1000.0)
}

/// Heartbeat and election timeout in milliseconds from the largest RTT
/// and the disk's p99 sync, both in microseconds.
pub fn timeouts(max_rtt_us: f64, fsync_p99_us: f64) -> (u64, u64, Vec<String>) {
    let mut notes = Vec::new();
    let rtt_ms = (max_rtt_us / 1000.0).ceil() as u64;
    let sync_ms = (fsync_p99_us / 1000.0).ceil() as u64;
    let mut heartbeat = round_up(HEARTBEAT_MIN_MS.max(rtt_ms).max(sync_ms), 10);
    let mut election = round_up(
        ELECTION_MIN_MS
            .max(rtt_ms.saturating_mul(ELECTION_RTT_FACTOR))
            .max(heartbeat.saturating_mul(ELECTION_HEARTBEAT_FACTOR)),
        100,
    );
    if election > ELECTION_MAX_MS {
        election = ELECTION_MAX_MS;
        heartbeat = heartbeat.min(ELECTION_MAX_MS / ELECTION_HEARTBEAT_FACTOR);
        notes.push(format!(
            "peers or disk too slow: the election timeout is capped at etcd's {ELECTION_MAX_MS} ms; \
             this cluster spans too much latency for Raft to stay stable"
        ));
    }
    (heartbeat, election, notes)
}

fn round_up(value: u64, step: u64) -> u64 {
    value.div_ceil(step) * step
}

fn snapshot_count(facts: &HostFacts) -> Setting {
    let memory = facts.memory.total_bytes;
    let (value, why) = match memory {
        Some(bytes) if bytes < SMALL_MEMORY_BYTES => (
            SNAPSHOT_COUNT_SMALL,
            format!(
                "{} of RAM: snapshot more often so fewer Raft entries stay in memory",
                human_bytes(bytes)
            ),
        ),
        Some(bytes) => (
            SNAPSHOT_COUNT_DEFAULT,
            format!(
                "{} of RAM: etcd's default is affordable",
                human_bytes(bytes)
            ),
        ),
        None => (
            SNAPSHOT_COUNT_DEFAULT,
            "memory unknown: etcd's default".into(),
        ),
    };
    Setting {
        name: "snapshot-count",
        value: Some(value.to_string()),
        basalt_only: false,
        reason: why,
    }
}

fn quota(facts: &HostFacts) -> Setting {
    let (Some(total), Some(available)) = (facts.disk.total_bytes, facts.disk.available_bytes)
    else {
        return Setting {
            name: "quota-backend-bytes",
            value: Some(QUOTA_DEFAULT_BYTES.to_string()),
            basalt_only: false,
            reason: "disk size unknown: etcd's 2 GiB default".into(),
        };
    };
    // The data dir holds the database, the WAL and snapshots, and an online
    // compaction rewrites the live pages into a new file: keep the quota
    // under a quarter of the filesystem and half of what is free.
    let room = (total / 4).min(available / 2);
    let quota =
        (room.min(QUOTA_MAX_BYTES) / QUOTA_STEP_BYTES * QUOTA_STEP_BYTES).max(QUOTA_STEP_BYTES);
    let reason = if room >= QUOTA_MAX_BYTES {
        format!(
            "{} free of {}: etcd's suggested maximum of 8 GiB fits with room for WAL, snapshots and compaction",
            human_bytes(available),
            human_bytes(total)
        )
    } else {
        format!(
            "{} free of {}: min(¼ of the filesystem, ½ of free space), leaving room for WAL, snapshots and compaction",
            human_bytes(available),
            human_bytes(total)
        )
    };
    Setting {
        name: "quota-backend-bytes",
        value: Some(quota.to_string()),
        basalt_only: false,
        reason,
    }
}

fn cores_and_spin(facts: &HostFacts, plan: Plan) -> Vec<Setting> {
    let planned = planned_cpus_of(&facts.cpu, plan);
    let cores = match plan.cores {
        Some(cores) => cores,
        None if facts.cpu.smt_in_use() => facts.cpu.physical_cores_in(&planned),
        None => planned.len(),
    }
    .max(1);
    let cores_reason = match plan.cores {
        Some(_) => "as requested with --cores".to_owned(),
        None if facts.cpu.smt_in_use() => {
            "one executor per physical core: SMT siblings would share execution units".to_owned()
        }
        None => "one executor per CPU in the affinity mask".to_owned(),
    };
    let dedicated = facts.cpu.dedicated_cpus();
    let planned_set: BTreeSet<u32> = planned.iter().copied().collect();
    let all_dedicated = !planned_set.is_empty() && planned_set.is_subset(&dedicated);
    let spin = if all_dedicated {
        Setting {
            name: "spin-before-park",
            value: Some(SPIN_BEFORE_PARK.into()),
            basalt_only: true,
            reason:
                "the executor CPUs are isolated: spinning ~50 µs before parking avoids the wake-up \
                     cost of a cross-core hop at the price of busy cores"
                    .into(),
        }
    } else {
        Setting {
            name: "spin-before-park",
            value: None,
            basalt_only: true,
            reason: "leave off: the executor CPUs are shared, and spinning would steal time from \
                     other processes (and from the CPU that syncs)"
                .into(),
        }
    };
    vec![
        Setting {
            name: "cores",
            value: Some(cores.to_string()),
            basalt_only: true,
            reason: cores_reason,
        },
        spin,
    ]
}

impl Recommendation {
    /// An etcd-style YAML config file (`--config-file`): the keys are the
    /// flag names. basalt-only keys are marked.
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("# basalt configuration recommended by basalt-tune\n");
        for note in &self.notes {
            out.push_str(&format!("# note: {note}\n"));
        }
        for setting in &self.settings {
            out.push_str(&format!("\n# {}\n", setting.reason));
            if setting.basalt_only {
                out.push_str("# (basalt only; remove for etcd)\n");
            }
            match &setting.value {
                Some(value) => out.push_str(&format!("{}: {}\n", setting.name, yaml_scalar(value))),
                None => out.push_str(&format!("# {}: (unset)\n", setting.name)),
            }
        }
        out
    }

    /// One flag per line, for an ExecStart= line or a manifest's command.
    pub fn to_flags(&self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            out.push_str(&format!("# note: {note}\n"));
        }
        for setting in &self.settings {
            match &setting.value {
                Some(value) => out.push_str(&format!("--{}={value}\n", setting.name)),
                None => out.push_str(&format!("# --{} unset: {}\n", setting.name, setting.reason)),
            }
        }
        out
    }
}

/// Quotes a value that YAML would otherwise read as something else.
fn yaml_scalar(value: &str) -> String {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{CpuFacts, DiskFacts, MemoryFacts};
    use crate::measure::disk::{DirectIoSupport, DiskMeasurement};
    use crate::measure::{IoUringProbe, LatencySummary, PeerMeasurement};

    fn facts() -> HostFacts {
        HostFacts {
            cpu: CpuFacts {
                online: vec![0, 1, 2, 3],
                sibling_groups: vec![vec![0], vec![1], vec![2], vec![3]],
                affinity: vec![0, 1, 2, 3],
                ..CpuFacts::default()
            },
            memory: MemoryFacts {
                total_bytes: Some(16 << 30),
                ..MemoryFacts::default()
            },
            disk: DiskFacts {
                total_bytes: Some(256 << 30),
                available_bytes: Some(200 << 30),
                ..DiskFacts::default()
            },
            ..HostFacts::default()
        }
    }

    fn measured(rtts_us: &[f64], p99_us: f64) -> Measurements {
        let summary = LatencySummary {
            samples: 100,
            min_us: 100.0,
            p50_us: 200.0,
            p99_us,
            p999_us: p99_us,
            max_us: p99_us,
            mean_us: 200.0,
        };
        Measurements {
            disk: DiskMeasurement {
                append_fdatasync: Some(summary),
                o_direct: DirectIoSupport {
                    supported: true,
                    error: None,
                },
                direct_overwrite_fdatasync: None,
                group_commit: None,
                error: None,
            },
            io_uring: IoUringProbe::works(),
            peers: rtts_us
                .iter()
                .enumerate()
                .map(|(i, &rtt)| PeerMeasurement {
                    url: format!("http://10.0.0.{i}:2380"),
                    address: None,
                    reachable: true,
                    connects: 5,
                    failures: 0,
                    rtt_min_us: Some(rtt / 2.0),
                    rtt_median_us: Some(rtt),
                    rtt_max_us: Some(rtt),
                    error: None,
                })
                .collect(),
        }
    }

    fn value(rec: &Recommendation, name: &str) -> Option<String> {
        rec.settings
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .value
            .clone()
    }

    #[test]
    fn lan_keeps_etcd_defaults() {
        let rec = recommend(
            &facts(),
            &measured(&[300.0, 500.0], 2_000.0),
            Plan::default(),
        );
        assert_eq!(value(&rec, "heartbeat-interval").as_deref(), Some("100"));
        assert_eq!(value(&rec, "election-timeout").as_deref(), Some("1000"));
        assert_eq!(value(&rec, "snapshot-count").as_deref(), Some("100000"));
        assert_eq!(
            value(&rec, "quota-backend-bytes"),
            Some((8u64 << 30).to_string())
        );
        assert_eq!(value(&rec, "cores").as_deref(), Some("4"));
        assert_eq!(value(&rec, "spin-before-park"), None);
        assert!(rec.notes.is_empty());
    }

    #[test]
    fn cross_region_rtt_scales_timeouts() {
        // 150 ms between regions: heartbeat ≈ RTT, election ≥ 10 × RTT.
        let rec = recommend(
            &facts(),
            &measured(&[150_000.0, 80_000.0], 2_000.0),
            Plan::default(),
        );
        assert_eq!(value(&rec, "heartbeat-interval").as_deref(), Some("150"));
        assert_eq!(value(&rec, "election-timeout").as_deref(), Some("1500"));
    }

    #[test]
    fn election_is_at_least_five_heartbeats_and_capped() {
        // A slow disk pushes the heartbeat up; the election follows at 5×.
        let (heartbeat, election, notes) = timeouts(1_000.0, 333_000.0);
        assert_eq!(heartbeat, 340);
        assert_eq!(election, 1_700);
        assert!(notes.is_empty());
        let (heartbeat, election, notes) = timeouts(9_000_000.0, 0.0);
        assert_eq!(election, ELECTION_MAX_MS);
        assert!(heartbeat * ELECTION_HEARTBEAT_FACTOR <= election);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn small_hosts_and_dedicated_cores() {
        let mut small = facts();
        small.memory.total_bytes = Some(4 << 30);
        small.disk.total_bytes = Some(20 << 30);
        small.disk.available_bytes = Some(6 << 30);
        small.cpu.isolated = vec![2, 3];
        small.cpu.affinity = vec![2, 3];
        let rec = recommend(&small, &measured(&[], 1_000.0), Plan::default());
        assert_eq!(value(&rec, "snapshot-count").as_deref(), Some("10000"));
        assert_eq!(
            value(&rec, "quota-backend-bytes"),
            Some((3u64 << 30).to_string())
        );
        assert_eq!(value(&rec, "cores").as_deref(), Some("2"));
        assert_eq!(
            value(&rec, "spin-before-park").as_deref(),
            Some(SPIN_BEFORE_PARK)
        );
        assert_eq!(rec.notes.len(), 1, "no peers note");
        let yaml = rec.to_yaml();
        assert!(yaml.contains("snapshot-count: 10000\n"));
        assert!(yaml.contains("spin-before-park: 50us\n"));
        let flags = rec.to_flags();
        assert!(flags.contains("--cores=2\n"));
    }

    #[test]
    fn smt_hosts_get_one_executor_per_core() {
        let mut smt = facts();
        smt.cpu.sibling_groups = vec![vec![0, 2], vec![1, 3]];
        smt.cpu.smt_active = Some(true);
        let rec = recommend(&smt, &measured(&[], 1_000.0), Plan::default());
        assert_eq!(value(&rec, "cores").as_deref(), Some("2"));
        let rec = recommend(&smt, &measured(&[], 1_000.0), Plan { cores: Some(3) });
        assert_eq!(value(&rec, "cores").as_deref(), Some("3"));
    }
}
