//! Runs the `basalt-tune` binary as an operator would: a short `check
//! --json` on this machine, `recommend`, and the bad inputs that must
//! give a clear message and exit status 2 rather than a panic.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Every item `check` reports when no peer is given.
const ITEMS: &[&str] = &[
    "cpu.count",
    "cpu.smt",
    "cpu.governor",
    "cpu.isolation",
    "cpu.affinity",
    "cpu.irq",
    "cpu.numa",
    "cpu.clocksource",
    "cpu.virtualisation",
    "memory.thp",
    "memory.swap",
    "memory.swappiness",
    "memory.memlock",
    "disk.filesystem",
    "disk.mount_options",
    "disk.device",
    "disk.scheduler",
    "disk.write_cache",
    "disk.rotational",
    "disk.space",
    "disk.o_direct",
    "disk.fdatasync",
    "disk.group_commit",
    "io_uring.kernel",
    "io_uring.sysctl",
    "io_uring.setup",
    "network.sysctl",
    "network.peers",
];

/// Short measurement settings so the suite stays fast.
const SHORT: &[&str] = &["--disk-time", "300ms", "--disk-max-syncs", "300"];

fn basalt_tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt-tune"))
        .args(args)
        .output()
        .expect("run basalt-tune")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_no_panic(output: &Output) {
    let err = stderr(output);
    assert!(!err.contains("panicked"), "basalt-tune panicked: {err}");
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("item {id} missing from the report"))
}

#[test]
fn check_json_reports_every_item_with_plausible_numbers() {
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let down = format!("http://127.0.0.1:{}", closed_port());
    let peers = format!("{up},{down}");
    let mut args = vec![
        "check",
        "--json",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--peer-urls",
        &peers,
        "--peer-samples",
        "3",
        "--peer-timeout",
        "500ms",
    ];
    args.extend_from_slice(SHORT);
    let output = basalt_tune(&args);
    assert_no_panic(&output);
    // The unreachable peer fails the check: exit status 1, report printed.
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");

    for id in ITEMS {
        let verdict = finding(&report, id)["verdict"].as_str().unwrap();
        assert!(
            ["ok", "info", "warn", "fail"].contains(&verdict),
            "{id}: {verdict}"
        );
        assert!(
            !finding(&report, id)["value"].as_str().unwrap().is_empty(),
            "{id}"
        );
    }

    let append = &report["measurements"]["disk"]["append_fdatasync"];
    let samples = append["samples"].as_u64().unwrap();
    assert!((1..=300).contains(&samples), "{samples} samples");
    for key in ["p50_us", "p99_us", "p999_us"] {
        let micros = append[key].as_f64().unwrap();
        assert!(
            micros > 0.0 && micros < 10_000_000.0,
            "fdatasync {key} = {micros} µs"
        );
    }
    assert!(append["p99_us"].as_f64() >= append["p50_us"].as_f64());

    let reachable = finding(&report, &format!("network.peer[{up}]"));
    assert_ne!(reachable["verdict"], "fail", "{reachable}");
    let peer = &report["measurements"]["peers"][0];
    assert_eq!(peer["reachable"], true);
    let rtt = peer["rtt_median_us"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 500_000.0, "loopback RTT {rtt} µs");

    let unreachable = finding(&report, &format!("network.peer[{down}]"));
    assert_eq!(unreachable["verdict"], "fail");
    assert!(unreachable["value"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    assert_eq!(finding(&report, "network.peers")["verdict"], "fail");

    let summary = &report["summary"];
    let counted: u64 = ["ok", "info", "warn", "fail"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted as usize,
        report["findings"].as_array().unwrap().len()
    );

    // The scratch directory is gone: check leaves the data dir as it was.
    assert_eq!(fs::read_dir(data.path()).unwrap().count(), 0);
    drop(listener);
}

#[test]
fn check_prints_a_table_by_default() {
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["check", "--data-dir", data.path().to_str().unwrap()];
    args.extend_from_slice(SHORT);
    let output = basalt_tune(&args);
    assert_no_panic(&output);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        stderr(&output)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.starts_with("basalt-tune check"), "{table}");
    for id in ITEMS {
        assert!(table.contains(id), "{id} missing from the table");
    }
    assert!(
        table.contains(" ok, ") && table.contains(" fail"),
        "summary line"
    );
}

#[test]
fn recommend_prints_config_and_flags() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut yaml_args = vec!["recommend", "--data-dir", dir];
    yaml_args.extend_from_slice(SHORT);
    let output = basalt_tune(&yaml_args);
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let yaml = String::from_utf8(output.stdout).unwrap();
    for key in [
        "heartbeat-interval: ",
        "election-timeout: ",
        "snapshot-count: ",
        "quota-backend-bytes: ",
        "cores: ",
    ] {
        assert!(
            yaml.lines().any(|l| l.starts_with(key)),
            "{key} missing:\n{yaml}"
        );
    }

    let mut flag_args = vec![
        "recommend",
        "--format",
        "flags",
        "--cores",
        "1",
        "--data-dir",
        dir,
    ];
    flag_args.extend_from_slice(SHORT);
    let output = basalt_tune(&flag_args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let flags = String::from_utf8(output.stdout).unwrap();
    assert!(flags.contains("--cores=1\n"), "{flags}");
    let heartbeat: u64 = flags
        .lines()
        .find_map(|l| l.strip_prefix("--heartbeat-interval="))
        .expect("heartbeat flag")
        .parse()
        .unwrap();
    let election: u64 = flags
        .lines()
        .find_map(|l| l.strip_prefix("--election-timeout="))
        .expect("election flag")
        .parse()
        .unwrap();
    assert!(heartbeat >= 100 && election >= 5 * heartbeat && election >= 1000);
}

#[test]
fn missing_data_dir_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("not-there");
    let output = basalt_tune(&["check", "--data-dir", missing.to_str().unwrap()]);
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("does not exist") && err.contains("not-there"),
        "{err}"
    );
    assert!(!missing.exists(), "check must not create the data dir");
}

#[test]
fn a_file_as_data_dir_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("file");
    fs::write(&file, b"x").unwrap();
    let output = basalt_tune(&["check", "--data-dir", file.to_str().unwrap()]);
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("is not a directory"));
}

/// Makes a directory unwritable for this process and undoes it on drop:
/// permission bits for an ordinary user, the immutable attribute for
/// root (which permission bits do not stop).
struct ReadOnlyDir {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    fn new(path: &Path) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o555)).ok()?;
        let mut guard = Self {
            path: path.to_path_buf(),
            immutable: false,
        };
        if guard.writable() {
            let status = Command::new("chattr").arg("+i").arg(path).status().ok()?;
            guard.immutable = status.success();
            if !guard.immutable || guard.writable() {
                return None;
            }
        }
        Some(guard)
    }

    fn writable(&self) -> bool {
        let probe = self.path.join("probe");
        let ok = fs::write(&probe, b"x").is_ok();
        let _ = fs::remove_file(probe);
        ok
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        }
        let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn read_only_data_dir_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let Some(guard) = ReadOnlyDir::new(data.path()) else {
        eprintln!("cannot make a read-only directory here (no chattr, not ext4/xfs?); skipped");
        return;
    };
    let output = basalt_tune(&["check", "--data-dir", data.path().to_str().unwrap()]);
    drop(guard);
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("cannot write in data dir"), "{err}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    for (args, needle) in [
        (vec!["--peer-urls", "http://10.0.0.2"], "no port"),
        (vec!["--peer-urls", "ftp://10.0.0.2:2380"], "scheme"),
        (vec!["--disk-time", "2"], "missing unit"),
        (vec!["--disk-time", "1h"], "unknown unit"),
        (vec!["--cores", "0"], "--cores must be between 1"),
        (vec!["--peer-samples", "1000"], "--peer-samples"),
    ] {
        let mut full = vec!["check", "--data-dir", dir];
        full.extend_from_slice(&args);
        let output = basalt_tune(&full);
        assert_no_panic(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
