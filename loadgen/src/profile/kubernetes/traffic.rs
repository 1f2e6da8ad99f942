//! The apiserver's steady-state requests, each kind an actor with its own
//! rate. Rates are per second in the reference 5,000-node cluster and scale
//! linearly with `--nodes`, unless marked fixed (per apiserver, not per
//! node); `--speedup` multiplies all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, KvClient, LeaseClient};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::cluster::{
    create_txn, delete_txn, namespaces, update_txn, written, Bodies, Objects, Resource, Written,
};
use super::watchers::Ledger;
use crate::connection::Connection;
use crate::keys::prefix_end;
use crate::profile::listing::{list, ListFailure, ListSpec};
use crate::run::{Phase, Tally};

/// Page size of the apiserver's client pager.
pub const PAGE: i64 = 500;

/// At most this many objects share one event lease (the apiserver's limit).
const OBJECTS_PER_LEASE: u32 = 1_000;

/// What an actor does.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Create an object of resource `.0`.
    Create(usize),
    /// Update an object of resource `.0`; objects in turn when `.1`, else at random.
    Update(usize, bool),
    /// Delete an object of resource `.0`.
    Delete(usize),
    /// GET one object of any resource.
    Get,
    /// Paged LIST of one namespace of resource `.0`.
    List(usize),
    /// count_only Range of a resource's prefix, resources in turn.
    Count,
    /// keys_only Range of a resource's prefix (newer apiservers count this
    /// way), resources in turn.
    KeysOnly,
    /// Range(`/registry/<res>`, limit=1), resources in turn.
    RevisionProbe,
    /// Range(`/registry/health`).
    Health,
    /// Maintenance.Status.
    Status,
    /// Rewrite `/registry/masterleases/<ip>` with a fresh 15 s lease.
    MasterLease,
}

/// One kind of request at one rate.
#[derive(Clone, Debug)]
pub struct Actor {
    pub op: String,
    pub action: Action,
    /// Requests per second.
    pub rate: f64,
}

/// The cluster as the apiserver sees it.
pub struct Cluster {
    pub resources: Vec<Resource>,
    pub objects: Vec<Objects>,
    pub bodies: Vec<Bodies>,
    pub ledgers: Vec<Arc<Ledger>>,
    pub namespaces: u64,
    pub event_leases: LeaseReuse,
    stamp: AtomicU64,
    master_rev: AsyncMutex<i64>,
}

impl Cluster {
    /// A cluster of `nodes` with pods of `pod_size` bytes and events kept
    /// for `event_ttl`.
    pub fn new(nodes: u64, pod_size: usize, event_ttl: Duration) -> Self {
        let resources = super::cluster::resources(pod_size);
        Self {
            objects: resources.iter().map(|_| Objects::default()).collect(),
            bodies: resources.iter().map(|r| Bodies::new(r.size)).collect(),
            ledgers: resources
                .iter()
                .map(|_| Arc::new(Ledger::default()))
                .collect(),
            resources,
            namespaces: namespaces(nodes),
            event_leases: LeaseReuse::new(event_ttl),
            stamp: AtomicU64::new(0),
            master_rev: AsyncMutex::new(0),
        }
    }

    /// Index of resource `name`.
    pub fn index(&self, name: &str) -> usize {
        self.resources
            .iter()
            .position(|r| r.name == name)
            .expect("resource names are fixed in cluster::resources")
    }

    fn body(&self, res: usize) -> Vec<u8> {
        self.bodies[res].make(self.stamp.fetch_add(1, Ordering::Relaxed))
    }
}

/// The actors of a cluster of `nodes`.
pub fn actors(cluster: &Cluster, nodes: u64, speedup: f64, endpoints: usize) -> Vec<Actor> {
    let scaled = nodes as f64 / super::cluster::REFERENCE_NODES * speedup;
    let i = |n| cluster.index(n);
    let a = |op: &str, action, rate| Actor {
        op: op.to_owned(),
        action,
        rate,
    };
    vec![
        // Reference rates.
        a(
            "update-leases",
            Action::Update(i("leases"), true),
            500.0 * scaled,
        ),
        a(
            "update-minions",
            Action::Update(i("minions"), true),
            17.0 * scaled,
        ),
        a("create-events", Action::Create(i("events")), 485.0 * scaled),
        // clusterloader2 churns 10 pods/s; ~6 updates over a pod's life (est.).
        a("create-pods", Action::Create(i("pods")), 10.0 * scaled),
        a(
            "update-pods",
            Action::Update(i("pods"), false),
            60.0 * scaled,
        ),
        a("delete-pods", Action::Delete(i("pods")), 10.0 * scaled),
        // Reads that reach etcd (est.): most reads hit the watch cache.
        a("get", Action::Get, 50.0 * scaled),
        a("list-pods", Action::List(i("pods")), 2.0 * scaled),
        a("list-events", Action::List(i("events")), 2.0 * scaled),
        a("revision-probe", Action::RevisionProbe, 10.0 * scaled),
        // Fixed per apiserver.
        // Object counts every minute per resource, both ways.
        a(
            "count",
            Action::Count,
            cluster.resources.len() as f64 / 60.0 * speedup,
        ),
        a(
            "keys-only",
            Action::KeysOnly,
            cluster.resources.len() as f64 / 60.0 * speedup,
        ),
        a("health", Action::Health, 1.0 * speedup),
        a("status", Action::Status, endpoints as f64 / 30.0 * speedup),
        a("masterlease", Action::MasterLease, 0.1 * speedup),
    ]
}

/// The apiserver's event lease reuse: one lease per window, for up to
/// [`OBJECTS_PER_LEASE`] objects, granted for ttl + min(60 s, 5 % ttl),
/// never renewed.
pub struct LeaseReuse {
    current: AsyncMutex<Option<(i64, Instant, u32)>>,
    grant_ttl: i64,
    window: Duration,
}

impl LeaseReuse {
    fn new(ttl: Duration) -> Self {
        let window = Duration::from_secs(60).min(ttl.mul_f64(0.05));
        Self {
            current: AsyncMutex::new(None),
            grant_ttl: (ttl + window).as_secs().max(1) as i64,
            window,
        }
    }

    /// A lease for one more object, granting a new one when needed.
    pub async fn lease(
        &self,
        leases: &mut LeaseClient,
        conn: &Connection,
        tally: &mut Tally,
    ) -> Option<i64> {
        let mut current = self.current.lock().await;
        if let Some((id, granted, used)) = current.as_mut() {
            if granted.elapsed() < self.window && *used < OBJECTS_PER_LEASE {
                *used += 1;
                return Some(*id);
            }
        }
        let floor = conn.floor();
        let start = Instant::now();
        let result = leases.grant(self.grant_ttl, None).await;
        let granted = tally.settle("lease-grant", conn, floor, (result, start.elapsed()), |r| {
            r.header().map(|h| h.revision())
        })?;
        *current = Some((granted.id(), Instant::now(), 1));
        Some(granted.id())
    }
}

/// Per-task clients.
pub struct Clients {
    pub conn: Connection,
    pub kv: KvClient,
    pub leases: LeaseClient,
}

impl Clients {
    pub fn new(conn: Connection) -> Self {
        Self {
            kv: conn.kv(),
            leases: conn.client().lease_client(),
            conn,
        }
    }
}

/// Does one request of `actor`. Returns false once the phase has ended.
pub async fn act(
    cluster: &Cluster,
    actor: &Actor,
    ticket: u64,
    c: &mut Clients,
    phase: &Phase,
    tally: &mut Tally,
    rng: &mut fastrand::Rng,
) -> bool {
    let op = actor.op.as_str();
    match actor.action {
        Action::Create(res) => {
            let r = &cluster.resources[res];
            let lease = if r.leased {
                match cluster
                    .event_leases
                    .lease(&mut c.leases, &c.conn, tally)
                    .await
                {
                    Some(id) => Some(id),
                    None => return true,
                }
            } else {
                None
            };
            let key = r.key(cluster.objects[res].next_id(), cluster.namespaces);
            let txn = create_txn(&key, cluster.body(res), lease);
            let sent = Instant::now();
            let floor = c.conn.floor();
            let Some(outcome) = phase.timed(c.kv.txn(txn)).await else {
                return false;
            };
            if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) {
                match written(&resp) {
                    Written::Done(rev) => {
                        cluster.objects[res].insert(key, rev);
                        cluster.ledgers[res].wrote(rev, sent, tally);
                    }
                    Written::Conflict(_) => tally.violation(
                        op,
                        format!(
                            "create of new key {:?} found it taken",
                            String::from_utf8_lossy(&key)
                        ),
                    ),
                }
            }
        }
        Action::Update(res, in_turn) => {
            let objects = &cluster.objects[res];
            let picked = if in_turn {
                objects.get(ticket as usize)
            } else {
                objects.pick(rng)
            };
            let Some((slot, key, rev)) = picked else {
                return true;
            };
            let txn = update_txn(&key, rev, cluster.body(res), None);
            let sent = Instant::now();
            let floor = c.conn.floor();
            let Some(outcome) = phase.timed(c.kv.txn(txn)).await else {
                return false;
            };
            let latency = outcome.1;
            if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) {
                match written(&resp) {
                    Written::Done(rev) => {
                        objects.update(slot, &key, rev);
                        cluster.ledgers[res].wrote(rev, sent, tally);
                    }
                    // Another writer got there first: the apiserver would
                    // retry with the object the else branch returned.
                    Written::Conflict(0) => {
                        objects.remove(slot, &key);
                        tally.rec.record(&format!("{op}-conflict"), latency);
                    }
                    Written::Conflict(current) => {
                        objects.update(slot, &key, current);
                        tally.rec.record(&format!("{op}-conflict"), latency);
                    }
                }
            }
        }
        Action::Delete(res) => {
            let objects = &cluster.objects[res];
            let Some((slot, key, rev)) = objects.pick(rng) else {
                return true;
            };
            let sent = Instant::now();
            let floor = c.conn.floor();
            let Some(outcome) = phase.timed(c.kv.txn(delete_txn(&key, rev))).await else {
                return false;
            };
            let latency = outcome.1;
            if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) {
                match written(&resp) {
                    Written::Done(rev) => {
                        objects.remove(slot, &key);
                        cluster.ledgers[res].wrote(rev, sent, tally);
                    }
                    Written::Conflict(0) => {
                        objects.remove(slot, &key);
                        tally.rec.record(&format!("{op}-conflict"), latency);
                    }
                    Written::Conflict(current) => {
                        objects.update(slot, &key, current);
                        tally.rec.record(&format!("{op}-conflict"), latency);
                    }
                }
            }
        }
        Action::Get => {
            let res = rng.usize(0..cluster.resources.len());
            let Some((_, key, _)) = cluster.objects[res].pick(rng) else {
                return true;
            };
            let floor = c.conn.floor();
            let get = c.kv.get(key, Some(GetOptions::new().with_limit(1)));
            let Some(outcome) = phase.timed(get).await else {
                return false;
            };
            tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            });
        }
        Action::List(res) => {
            let ns = rng.u64(0..cluster.namespaces);
            let start = format!("{}ns-{ns}/", cluster.resources[res].prefix).into_bytes();
            let end = prefix_end(&start);
            let spec = ListSpec {
                start: &start,
                end: &end,
                page: PAGE,
                op,
            };
            // A compaction between pages makes the apiserver answer 410;
            // its client lists again. One retry, then it counts as failed.
            for attempt in 0..2 {
                let began = Instant::now();
                match list(&mut c.kv, &c.conn, phase, tally, &spec).await {
                    Ok(listing) => {
                        tally.ok(op, began.elapsed());
                        tally.rec.add_bytes(listing.bytes);
                        break;
                    }
                    Err(ListFailure::Stopped) => return false,
                    Err(ListFailure::Expired) if attempt == 0 => {
                        tally.rec.record(&format!("{op}-expired"), began.elapsed())
                    }
                    Err(ListFailure::Expired) => tally.fail(op, "list revision compacted twice"),
                    Err(ListFailure::Failed) => break,
                }
            }
        }
        Action::Count => {
            let r = &cluster.resources[ticket as usize % cluster.resources.len()];
            let floor = c.conn.floor();
            let options = GetOptions::new()
                .with_range(prefix_end(r.prefix.as_bytes()))
                .with_count_only();
            let Some(outcome) = phase.timed(c.kv.get(r.prefix, Some(options))).await else {
                return false;
            };
            if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) {
                if resp.count() < 0 || !resp.kvs().is_empty() {
                    tally.violation(
                        op,
                        format!(
                            "count_only answered count {} with {} keys",
                            resp.count(),
                            resp.kvs().len()
                        ),
                    );
                }
            }
        }
        Action::KeysOnly => {
            let r = &cluster.resources[ticket as usize % cluster.resources.len()];
            let floor = c.conn.floor();
            let options = GetOptions::new()
                .with_range(prefix_end(r.prefix.as_bytes()))
                .with_keys_only();
            let Some(outcome) = phase.timed(c.kv.get(r.prefix, Some(options))).await else {
                return false;
            };
            if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) {
                let valued = resp
                    .kvs()
                    .iter()
                    .filter(|kv| !kv.value().is_empty())
                    .count();
                if valued > 0 || resp.count() != resp.kvs().len() as i64 {
                    tally.violation(
                        op,
                        format!(
                            "keys_only answered {} keys ({valued} with values) for count {}",
                            resp.kvs().len(),
                            resp.count()
                        ),
                    );
                }
            }
        }
        Action::RevisionProbe => {
            let r = &cluster.resources[ticket as usize % cluster.resources.len()];
            let floor = c.conn.floor();
            let get =
                c.kv.get(r.probe_key(), Some(GetOptions::new().with_limit(1)));
            let Some(outcome) = phase.timed(get).await else {
                return false;
            };
            tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            });
        }
        Action::Health => {
            let floor = c.conn.floor();
            let Some(outcome) = phase.timed(c.kv.get("/registry/health", None)).await else {
                return false;
            };
            if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) {
                if !resp.kvs().is_empty() {
                    tally.violation(op, "/registry/health exists");
                }
            }
        }
        Action::Status => {
            let mut maintenance = c.conn.client().maintenance_client();
            let floor = c.conn.floor();
            let Some(outcome) = phase.timed(maintenance.status()).await else {
                return false;
            };
            tally.settle(op, &c.conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            });
        }
        Action::MasterLease => return master_lease(cluster, op, c, phase, tally).await,
    }
    true
}

/// The endpoint reconciler: a 15 s lease and the master lease key written
/// under it (create the first time, update after).
async fn master_lease(
    cluster: &Cluster,
    op: &str,
    c: &mut Clients,
    phase: &Phase,
    tally: &mut Tally,
) -> bool {
    const KEY: &[u8] = b"/registry/masterleases/127.0.0.1";
    let mut known = cluster.master_rev.lock().await;
    let floor = c.conn.floor();
    let Some(outcome) = phase.timed(c.leases.grant(15, None)).await else {
        return false;
    };
    let Some(lease) = tally.settle("lease-grant", &c.conn, floor, outcome, |r| {
        r.header().map(|h| h.revision())
    }) else {
        return true;
    };
    let body =
        b"{\"kind\":\"Endpoints\",\"subsets\":[{\"addresses\":[{\"ip\":\"127.0.0.1\"}]}]}".to_vec();
    let txn = if *known == 0 {
        create_txn(KEY, body, Some(lease.id()))
    } else {
        update_txn(KEY, *known, body, Some(lease.id()))
    };
    let floor = c.conn.floor();
    let Some(outcome) = phase.timed(c.kv.txn(txn)).await else {
        return false;
    };
    if let Some(resp) = tally.settle(op, &c.conn, floor, outcome, |r| {
        r.header().map(|h| h.revision())
    }) {
        *known = match written(&resp) {
            Written::Done(rev) | Written::Conflict(rev) => rev,
        };
    }
    true
}

/// The apiserver's compactor (staging/…/etcd3/compact.go): every interval,
/// `Txn if version(compact_rev_key) = t then Put(compact_rev_key, rev)
/// else Range(compact_rev_key)`, then Compact at the revision the previous
/// tick saw, so nothing newer than one interval is ever compacted.
pub async fn compactor(
    c: Clients,
    every: Duration,
    phase: Arc<Phase>,
    mut tally: Tally,
) -> crate::report::Recorder {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
    const KEY: &str = "compact_rev_key";
    let Clients { conn, mut kv, .. } = c;
    let mut t: i64 = 0;
    let mut previous: i64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = phase.shutdown.wait() => break,
        }
        let txn = Txn::new()
            .when(vec![Compare::version(KEY, CompareOp::Equal, t)])
            .and_then(vec![TxnOp::put(KEY, previous.to_string(), None)])
            .or_else(vec![TxnOp::get(KEY, None)]);
        let floor = conn.floor();
        let Some(outcome) = phase.timed(kv.txn(txn)).await else {
            break;
        };
        let Some(resp) = tally.settle("compact-txn", &conn, floor, outcome, |r| {
            r.header().map(|h| h.revision())
        }) else {
            continue;
        };
        let current = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            // Another apiserver compacted: adopt its clock.
            t = resp
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(t);
            previous = current;
            continue;
        }
        t += 1;
        if previous > 0 {
            let floor = conn.floor();
            let Some(outcome) = phase.timed(kv.compact(previous, None)).await else {
                break;
            };
            tally.settle("compact", &conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            });
        }
        previous = current;
    }
    tally.rec
}
