//! The harness end to end against real etcd 3.4, with a "basalt" that
//! cannot serve (`/bin/false`): the run must go on with etcd alone and
//! write a complete RESULTS.md.
//!
//! It drives the loadgen binary built into the same target directory
//! (`cargo test --workspace` builds it; alone, run
//! `cargo build -p basalt-loadgen` first).

use std::path::PathBuf;
use std::process::Command;

fn loadgen() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_side-by-side")).with_file_name("loadgen");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p basalt-loadgen` (cargo test --workspace does)",
        path.display()
    );
    path
}

#[test]
fn runs_end_to_end_against_etcd_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("docs/RESULTS.md");
    let status = Command::new(env!("CARGO_BIN_EXE_side-by-side"))
        .args(["--duration", "1s", "--repeats", "2", "--no-etcd35"])
        .args(["--scenarios", "put-serial,list-storm"])
        .args([
            "--storm-keys",
            "200",
            "--storm-val-size",
            "500",
            "--storm-lists",
            "2",
        ])
        .args(["--basalt", "/bin/false", "--loadgen"])
        .arg(loadgen())
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{stderr}");
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(
        md.contains("| basalt | not serving: basalt exited (exit status: 1) before serving"),
        "{md}"
    );
    assert!(md.contains("not measured (basalt not serving)"), "{md}");
    // Two rounds of each scenario on etcd, none failed.
    assert_eq!(stderr.matches("on etcd 3.4.23 … ").count(), 4, "{stderr}");
    assert!(!md.contains("Runs that failed"), "{md}");
    for scenario in ["## put-serial", "## list-storm"] {
        let section = md
            .split(scenario)
            .nth(1)
            .unwrap_or_else(|| panic!("no {scenario} in {md}"));
        let row = section
            .lines()
            .find(|l| l.starts_with("| etcd 3.4.23 |"))
            .unwrap();
        let ops: f64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(ops > 0.0, "{row}");
        assert!(row.contains("(2 runs)"), "{row}");
        assert!(row.trim_end().ends_with("| 0 |"), "errors in {row}");
    }
    // Per-run reports next to the results; the chart beside them.
    assert!(dir
        .path()
        .join("docs/raw/etcd-3.4-put-serial-0.json")
        .exists());
    let chart = std::fs::read_to_string(dir.path().join("docs/throughput.svg")).unwrap();
    assert!(
        chart.contains("etcd 3.4.23") && !chart.contains("basalt"),
        "{chart}"
    );
    // Data dirs are removed after each run.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `--members 3`: every run founds a fresh 3-member etcd cluster, finds its
/// leader, loads the leader or a follower, and stops every member.
#[test]
fn runs_a_cluster_end_to_end_against_etcd_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("docs/RESULTS-cluster.md");
    let status = Command::new(env!("CARGO_BIN_EXE_side-by-side"))
        .args(["--members", "3", "--duration", "1s", "--repeats", "1"])
        .args(["--no-etcd35", "--scenarios"])
        .arg("cluster-put-serial,cluster-range-100-follower")
        .args(["--basalt", "/bin/false", "--loadgen"])
        .arg(loadgen())
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{stderr}");
    let md = std::fs::read_to_string(&out).unwrap();
    // Whichever member of /bin/false is seen first to have exited.
    assert!(
        md.contains("| basalt | not serving: basalt member m")
            && md.contains("exited (exit status: 1) before serving"),
        "{md}"
    );
    assert!(md.contains("## Targets (3-member clusters)"), "{md}");
    assert!(!md.contains("Runs that failed"), "{md}");
    for scenario in ["## cluster-put-serial", "## cluster-range-100-follower"] {
        let section = md
            .split(scenario)
            .nth(1)
            .unwrap_or_else(|| panic!("no {scenario} in {md}"));
        let row = section
            .lines()
            .find(|l| l.starts_with("| etcd 3.4.23 |"))
            .unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let ops: f64 = cells[2].parse().unwrap();
        assert!(ops > 0.0, "{row}");
        // Σ peak RSS of three members: more than the largest one's, at
        // most three times it.
        let (sum, max): (f64, f64) = (cells[9].parse().unwrap(), cells[10].parse().unwrap());
        assert!(max > 0.0 && sum > max && sum <= 3.0 * max + 0.1, "{row}");
        assert!(row.trim_end().ends_with("| 0 |"), "errors in {row}");
    }
    // Every member logged; every data dir is gone.
    let work = dir.path().join("work");
    for member in ["m1", "m2", "m3"] {
        assert!(work
            .join(format!(
                "etcd-3.4-cluster-range-100-follower-0.{member}.log"
            ))
            .exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(dir
        .path()
        .join("docs/raw/etcd-3.4-cluster-put-serial-0.json")
        .exists());
    assert!(dir.path().join("docs/throughput-cluster.svg").exists());
}
