//! Both traffic profiles for a few seconds against a real etcd.

mod etcd;

use etcd::Etcd;
use serde_json::Value;

fn report(etcd: &Etcd, args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut all: Vec<&str> = vec!["--json", json.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = etcd.loadgen(&all);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "loadgen {args:?} failed:\n{text}");
    (
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(),
        text,
    )
}

fn errors(report: &Value) -> Vec<String> {
    report["ops"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, op)| op["errors"].as_u64() != Some(0))
        .map(|(name, op)| format!("{name}: {}", op["errors"]))
        .collect()
}

#[test]
fn kubernetes_profile() {
    let etcd = Etcd::start();
    let (r, text) = report(
        &etcd,
        &[
            "--profile",
            "kubernetes",
            "--nodes",
            "20",
            "--speedup",
            "40",
            "--duration",
            "4s",
            "--pod-size",
            "4000",
            "--compact-interval",
            "1s",
        ],
    );
    assert_eq!(r["profile"], "kubernetes");
    assert!(errors(&r).is_empty(), "errors {:?}\n{text}", errors(&r));
    let ops = r["ops"].as_object().unwrap();
    for op in [
        "update-leases",
        "update-minions",
        "create-events",
        "create-pods",
        "update-pods",
        "delete-pods",
        "get",
        "list-pods",
        "list-events",
        "count",
        "keys-only",
        "revision-probe",
        "health",
        "status",
        "masterlease",
        "lease-grant",
        "list-watchcache",
        "watch-event",
        "watch-progress",
        "compact-txn",
        "compact",
    ] {
        let n = ops.get(op).and_then(|o| o["count"].as_u64()).unwrap_or(0);
        assert!(n > 0, "no {op} in the report:\n{text}");
    }
    assert_eq!(ops["list-watchcache"]["count"], 7, "one fill per resource");
    // Every write of ours reached its watch: at least as many events as
    // successful writes to watched resources.
    let writes: u64 = [
        "update-leases",
        "update-minions",
        "create-events",
        "create-pods",
        "update-pods",
        "delete-pods",
    ]
    .iter()
    .map(|op| ops[*op]["count"].as_u64().unwrap())
    .sum();
    let conflicts: u64 = ops
        .iter()
        .filter(|(name, _)| name.ends_with("-conflict"))
        .map(|(_, o)| o["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        ops["watch-event"]["count"].as_u64().unwrap(),
        writes - conflicts,
        "{text}"
    );
}

#[test]
fn kubernetes_profile_bounded_by_total() {
    let etcd = Etcd::start();
    let (r, text) = report(
        &etcd,
        &[
            "--profile",
            "kubernetes",
            "--nodes",
            "4",
            "--speedup",
            "100",
            "--total",
            "150",
        ],
    );
    assert!(errors(&r).is_empty(), "{text}");
    let requests: u64 = r["ops"]
        .as_object()
        .unwrap()
        .iter()
        // Requests that take a ticket; watches, the fill, lease grants,
        // the compactor and conflict tallies do not.
        .filter(|(name, _)| {
            ![
                "watch-event",
                "watch-progress",
                "list-watchcache",
                "lease-grant",
                "compact",
                "compact-txn",
            ]
            .contains(&name.as_str())
                && !name.ends_with("-conflict")
        })
        .map(|(_, o)| o["count"].as_u64().unwrap())
        .sum();
    assert!(
        (1..=150).contains(&requests),
        "{requests} requests for --total 150\n{text}"
    );
}

#[test]
fn kubernetes_profile_refuses_a_dirty_endpoint() {
    let etcd = Etcd::start();
    report(
        &etcd,
        &[
            "--profile",
            "kubernetes",
            "--nodes",
            "2",
            "--duration",
            "1s",
        ],
    );
    let out = etcd.loadgen(&[
        "--profile",
        "kubernetes",
        "--nodes",
        "2",
        "--duration",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clean"));
    let (r, text) = report(
        &etcd,
        &[
            "--profile",
            "kubernetes",
            "--nodes",
            "2",
            "--duration",
            "1s",
            "--clean",
        ],
    );
    assert!(errors(&r).is_empty(), "{text}");
}

#[test]
fn list_storm_profile() {
    let etcd = Etcd::start();
    let (r, text) = report(
        &etcd,
        &[
            "--profile",
            "list-storm",
            "--lists",
            "4",
            "--storm-keys",
            "1500",
            "--storm-val-size",
            "2000",
            "--page-size",
            "400",
            "--total",
            "12",
        ],
    );
    assert_eq!(r["profile"], "list-storm");
    assert!(errors(&r).is_empty(), "{text}");
    assert_eq!(r["ops"]["list"]["count"], 12);
    // 12 lists of 1,500 × ~2 KB: about 36 MB listed.
    let bytes = r["bytes_per_s"].as_f64().unwrap() * r["duration_s"].as_f64().unwrap();
    assert!((35e6..38e6).contains(&bytes), "{bytes} bytes listed");

    // Listing what the first run loaded, without loading again.
    let (r, text) = report(
        &etcd,
        &[
            "--profile",
            "list-storm",
            "--lists",
            "2",
            "--storm-keys",
            "1500",
            "--page-size",
            "0",
            "--total",
            "2",
            "--storm-reuse",
        ],
    );
    assert!(errors(&r).is_empty(), "{text}");
    assert_eq!(r["ops"]["list"]["count"], 2);
    assert!(!text.contains("loading"), "{text}");
    let out = etcd.loadgen(&[
        "--profile",
        "list-storm",
        "--storm-keys",
        "99",
        "--storm-reuse",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a mismatched key count is refused"
    );
}
