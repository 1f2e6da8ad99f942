//! Differential check: the same seeded command sequence against a real etcd
//! (through etcdctl, `-w fields`) and against `Store`, field by field.
//!
//! Needs /usr/bin/etcd and /usr/bin/etcdctl (scripts/install-test-deps.sh);
//! without them the test is skipped, except under CI=true where it fails.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use basalt_engine::mvcc::*;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("127.0.0.1:{client}");
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://{endpoint}")])
            .args(["--advertise-client-urls", &format!("http://{endpoint}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while etcd.ctl(&["get", "probe"]).is_err() {
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    /// Runs etcdctl; Ok(fields) or Err(stderr).
    fn ctl(&self, args: &[&str]) -> Result<Fields, String> {
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["-w", "fields"])
            .args(args)
            .output()
            .expect("run etcdctl");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(" : ")?;
                let name = name.trim_matches('"').to_string();
                let skip = ["ClusterID", "MemberID", "RaftTerm"];
                (!skip.contains(&name.as_str())).then(|| (name, value.to_string()))
            })
            .collect())
    }
}

/// etcdctl `-w fields` output: (name, printed value) in order.
type Fields = Vec<(String, String)>;

fn q(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn kv_fields(out: &mut Fields, prefix: &str, kv: &KeyValue) {
    let mut push = |n: &str, v: String| out.push((format!("{prefix}{n}"), v));
    push("Key", q(&kv.key));
    push("CreateRevision", kv.create_revision.to_string());
    push("ModRevision", kv.mod_revision.to_string());
    push("Version", kv.version.to_string());
    push("Value", q(&kv.value));
    push("Lease", kv.lease.to_string());
}

/// etcd's error text for the client-visible MVCC errors.
fn etcd_error(e: &MvccError) -> &'static str {
    match e {
        MvccError::Compacted { .. } => "required revision has been compacted",
        MvccError::FutureRevision => "required revision is a future revision",
        MvccError::LeaseNotFound(_) => "requested lease not found",
        MvccError::KeyNotFound => "key not found",
        other => panic!("unexpected store error {other}"),
    }
}

/// A tiny deterministic generator, so a failure replays exactly.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const KEYS: [&str; 5] = ["a", "a1", "ab", "b", "c"];

#[test]
fn store_matches_real_etcd_one_shard() {
    differential(1);
}

#[test]
fn store_matches_real_etcd_four_shards() {
    differential(4);
}

/// Runs the same seeded scenario against a fresh etcd and a store with
/// `shards` shard trees, comparing every response.
fn differential(shards: usize) {
    if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install etcd (scripts/install-test-deps.sh)"
        );
        eprintln!("skipping: {ETCD} or {ETCDCTL} not installed");
        return;
    }
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        shards,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.shards(), shards);
    let mut index = 0u64;
    let mut rng = Lcg(0x5eed);
    let mut leases: Vec<i64> = Vec::new();
    let steps: usize = std::env::var("MVCC_ETCD_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);

    let (mut compared, mut errors) = (0, 0);
    for step in 0..steps {
        let key = KEYS[rng.next(KEYS.len() as u64) as usize];
        let value = format!("v{}", rng.next(1000));
        let current = store.current_revision();
        let (args, ours): (Vec<String>, Result<Fields, MvccError>) = match rng.next(10) {
            0..=2 => {
                let lease = if !leases.is_empty() && rng.next(3) == 0 {
                    leases[rng.next(leases.len() as u64) as usize]
                } else {
                    0
                };
                let mut args = vec!["put".into(), key.into(), value.clone(), "--prev-kv".into()];
                if lease != 0 {
                    args.push(format!("--lease={lease:x}"));
                }
                index += 1;
                let op = Op::Put(PutRequest {
                    key: key.into(),
                    value: value.into_bytes(),
                    lease,
                    prev_kv: true,
                    ..Default::default()
                });
                let ours = store.apply(index, &op).map(|a| {
                    let mut f = vec![("Revision".into(), a.revision.to_string())];
                    if let OpResponse::Put(PutResponse { prev_kv: Some(p) }) = &a.response {
                        kv_fields(&mut f, "Prev", p);
                    }
                    f
                });
                (args, ours)
            }
            3 => {
                let (args, end): (Vec<String>, Vec<u8>) = match rng.next(3) {
                    0 => (vec!["del".into(), key.into()], vec![]),
                    1 => (vec!["del".into(), key.into(), "--prefix".into()], {
                        let mut e = key.as_bytes().to_vec();
                        *e.last_mut().unwrap() += 1;
                        e
                    }),
                    _ => (vec!["del".into(), key.into(), "c".into()], b"c".to_vec()),
                };
                let mut args = args;
                args.push("--prev-kv".into());
                index += 1;
                let op = Op::DeleteRange(DeleteRangeRequest {
                    key: key.into(),
                    range_end: end,
                    prev_kv: true,
                });
                let ours = store.apply(index, &op).map(|a| {
                    let mut f = vec![("Revision".into(), a.revision.to_string())];
                    if let OpResponse::DeleteRange(d) = &a.response {
                        f.push(("Deleted".into(), d.deleted.to_string()));
                        for p in &d.prev_kvs {
                            kv_fields(&mut f, "Prev", p);
                        }
                    }
                    f
                });
                (args, ours)
            }
            4..=7 => {
                let mut args: Vec<String> = vec!["get".into(), key.into()];
                let mut req = RangeRequest {
                    key: key.into(),
                    ..Default::default()
                };
                match rng.next(3) {
                    0 => {}
                    1 => {
                        args.push("--prefix".into());
                        let mut e = key.as_bytes().to_vec();
                        *e.last_mut().unwrap() += 1;
                        req.range_end = e;
                    }
                    _ => {
                        args.push("--from-key".into());
                        req.range_end = vec![0];
                    }
                }
                if rng.next(2) == 0 {
                    // around the compacted and the future revision too
                    let rev = (current - rng.next(8) as i64 + 1).max(1);
                    args.push(format!("--rev={rev}"));
                    req.revision = rev;
                }
                if rng.next(2) == 0 {
                    let limit = rng.next(3) as i64 + 1;
                    args.push(format!("--limit={limit}"));
                    req.limit = limit;
                }
                match rng.next(4) {
                    0 => {
                        args.push("--order=DESCEND".into());
                        req.sort_order = SortOrder::Descend;
                    }
                    1 => {
                        args.push("--sort-by=MODIFY".into());
                        req.sort_target = SortTarget::Mod;
                        if rng.next(2) == 0 {
                            args.push("--order=DESCEND".into());
                            req.sort_order = SortOrder::Descend;
                        }
                    }
                    _ => {}
                }
                if rng.next(4) == 0 {
                    args.push("--keys-only".into());
                    req.keys_only = true;
                }
                let ours = store.range(&req).map(|r| {
                    let mut f = vec![("Revision".into(), current.to_string())];
                    for kv in &r.kvs {
                        kv_fields(&mut f, "", kv);
                    }
                    f.push(("More".into(), r.more.to_string()));
                    f.push(("Count".into(), r.count.to_string()));
                    f
                });
                (args, ours)
            }
            8 => {
                let rev = current - rng.next(6) as i64 + 1;
                index += 1;
                let ours = store
                    .apply(index, &Op::Compact { revision: rev })
                    .map(|_| Vec::new());
                (vec!["compact".into(), rev.to_string()], ours)
            }
            _ => {
                if leases.is_empty() || rng.next(2) == 0 {
                    let theirs = etcd.ctl(&["lease", "grant", "100"]).unwrap();
                    let id: i64 = theirs
                        .iter()
                        .find(|(n, _)| n == "ID")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap();
                    index += 1;
                    store
                        .apply(index, &Op::LeaseGrant { id, ttl: 100 })
                        .unwrap();
                    leases.push(id);
                    continue;
                }
                let id = leases.remove(rng.next(leases.len() as u64) as usize);
                index += 1;
                let ours = store
                    .apply(index, &Op::LeaseRevoke { id })
                    .map(|_| Vec::new());
                (
                    vec!["lease".into(), "revoke".into(), format!("{id:x}")],
                    ours,
                )
            }
        };
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let theirs = etcd.ctl(&arg_refs);
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => {
                // compact / lease revoke print prose, not fields: success is the check
                if !matches!(args[0].as_str(), "compact" | "lease") {
                    assert_eq!(o, t, "step {step}: etcdctl {args:?}");
                    compared += 1;
                }
            }
            (Err(e), Err(t)) => {
                assert!(
                    t.contains(etcd_error(e)),
                    "step {step}: etcdctl {args:?}: ours {e}, etcd {t}"
                );
                errors += 1;
            }
            _ => panic!("step {step}: etcdctl {args:?}: ours {ours:?}, etcd {theirs:?}"),
        }
        if rng.next(20) == 0 {
            store.checkpoint().unwrap();
        }
    }
    eprintln!("{compared} responses equal, {errors} errors equal");
    assert!(
        compared > steps / 2,
        "too few responses compared: {compared}"
    );
    // Revision agreement at the end.
    let theirs = etcd.ctl(&["get", "probe"]).unwrap();
    assert_eq!(
        theirs[0],
        ("Revision".to_string(), store.current_revision().to_string())
    );
}
