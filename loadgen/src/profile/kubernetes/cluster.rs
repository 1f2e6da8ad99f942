//! The synthetic cluster: which objects exist, how big they are, and the
//! apiserver's request shapes for creating, updating and deleting them.
//!
//! Counts per node come from the reference's 5,000-node clusterloader2
//! "load" figures (30 pods per node, one node object and one node lease per
//! node, ~1.65 services per node); values marked (est.) are estimates the
//! reference does not fix.

use std::sync::Mutex;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};

use crate::keys::random_value;

/// The reference cluster size the per-node figures and rates are for.
pub const REFERENCE_NODES: f64 = 5_000.0;

/// clusterloader2 puts 100 nodes' worth of objects in each namespace.
const NODES_PER_NAMESPACE: u64 = 100;

/// One resource type: its etcd key layout and population.
#[derive(Clone, Debug)]
pub struct Resource {
    /// Name in reports (`create-pods`, …).
    pub name: &'static str,
    /// `/registry/<resource>/` with the apiserver's overrides.
    pub prefix: &'static str,
    /// Objects per node.
    pub per_node: f64,
    /// Value size in bytes.
    pub size: usize,
    /// Objects live in namespaces (`<prefix><ns>/<name>`).
    pub namespaced: bool,
    /// Objects carry a TTL lease (events).
    pub leased: bool,
}

/// The resources of the profile, with pods at `pod_size` bytes.
pub fn resources(pod_size: usize) -> Vec<Resource> {
    let r = |name, prefix, per_node, size, namespaced, leased| Resource {
        name,
        prefix,
        per_node,
        size,
        namespaced,
        leased,
    };
    vec![
        r("pods", "/registry/pods/", 30.0, pod_size, true, false),
        r("minions", "/registry/minions/", 1.0, 20_000, false, false),
        // Node leases all live in the kube-node-lease namespace.
        r("leases", "/registry/leases/", 1.0, 600, false, false),
        // One event per pod kept for --event-ttl (est.), ~1 KB (est.).
        r("events", "/registry/events/", 30.0, 1_000, true, true),
        r(
            "configmaps",
            "/registry/configmaps/",
            1.65,
            2_000,
            true,
            false,
        ),
        r(
            "endpointslices",
            "/registry/endpointslices/",
            1.65,
            1_500,
            true,
            false,
        ),
        r(
            "services",
            "/registry/services/specs/",
            1.65,
            2_000,
            true,
            false,
        ),
    ]
}

/// Namespaces of a cluster of `nodes`.
pub fn namespaces(nodes: u64) -> u64 {
    (nodes / NODES_PER_NAMESPACE).max(1)
}

impl Resource {
    /// Objects of this resource in a cluster of `nodes`.
    pub fn population(&self, nodes: u64) -> u64 {
        (self.per_node * nodes as f64).ceil() as u64
    }

    /// The key of object `id`.
    pub fn key(&self, id: u64, namespaces: u64) -> Vec<u8> {
        let name = self.name.trim_end_matches('s');
        let key = if self.name == "leases" {
            format!("{}kube-node-lease/node-{id}", self.prefix)
        } else if self.name == "minions" {
            format!("{}node-{id}", self.prefix)
        } else if self.namespaced {
            format!("{}ns-{}/{name}-{id}", self.prefix, id % namespaces)
        } else {
            format!("{}{name}-{id}", self.prefix)
        };
        key.into_bytes()
    }

    /// The key of the revision probe: the resource prefix without its
    /// trailing slash.
    pub fn probe_key(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }
}

/// Values written for one resource: one random body whose first bytes are
/// stamped per write, so every write differs without re-randomising
/// kilobytes.
#[derive(Debug)]
pub struct Bodies {
    template: Vec<u8>,
}

impl Bodies {
    /// Bodies of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            template: random_value(size.max(16), &mut fastrand::Rng::new()),
        }
    }

    /// A body stamped with `stamp`.
    pub fn make(&self, stamp: u64) -> Vec<u8> {
        let mut v = self.template.clone();
        v[..16].copy_from_slice(format!("{stamp:016x}").as_bytes());
        v
    }
}

/// The live objects of one resource with the mod revision the apiserver
/// last saw for each (what it puts in its update and delete compares).
#[derive(Debug, Default)]
pub struct Objects {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    live: Vec<Option<(Vec<u8>, i64)>>,
    free: Vec<usize>,
    next_id: u64,
    len: usize,
}

impl Objects {
    /// Reserves the id of a new object.
    pub fn next_id(&self) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        id
    }

    /// Adds a created object.
    pub fn insert(&self, key: Vec<u8>, revision: i64) {
        let mut s = self.lock();
        match s.free.pop() {
            Some(i) => s.live[i] = Some((key, revision)),
            None => s.live.push(Some((key, revision))),
        }
        s.len += 1;
    }

    /// A random live object: (slot, key, revision).
    pub fn pick(&self, rng: &mut fastrand::Rng) -> Option<(usize, Vec<u8>, i64)> {
        let s = self.lock();
        if s.len == 0 {
            return None;
        }
        for _ in 0..64 {
            let i = rng.usize(0..s.live.len());
            if let Some((k, r)) = &s.live[i] {
                return Some((i, k.clone(), *r));
            }
        }
        None
    }

    /// The object in slot `i`, if live (node leases and nodes are picked
    /// in turn, not at random).
    pub fn get(&self, i: usize) -> Option<(usize, Vec<u8>, i64)> {
        let s = self.lock();
        let len = s.live.len();
        if len == 0 {
            return None;
        }
        s.live[i % len]
            .as_ref()
            .map(|(k, r)| (i % len, k.clone(), *r))
    }

    /// Notes the newest revision of the object in `slot`.
    pub fn update(&self, slot: usize, key: &[u8], revision: i64) {
        let mut s = self.lock();
        if let Some(Some((k, r))) = s.live.get_mut(slot) {
            if k == key && revision > *r {
                *r = revision;
            }
        }
    }

    /// Forgets the object in `slot` (deleted).
    pub fn remove(&self, slot: usize, key: &[u8]) {
        let mut s = self.lock();
        let matches = matches!(s.live.get(slot), Some(Some((k, _))) if k == key);
        if matches {
            s.live[slot] = None;
            s.free.push(slot);
            s.len -= 1;
        }
    }

    /// Live objects.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The outcome of a conditional write.
#[derive(Debug)]
pub enum Written {
    /// The compare held; the write happened at this revision.
    Done(i64),
    /// The compare failed; the object is at this revision now (0: gone).
    Conflict(i64),
}

/// create: `Txn if mod_revision(k) = 0 then Put(k, v[, lease])`.
pub fn create_txn(key: &[u8], value: Vec<u8>, lease: Option<i64>) -> Txn {
    Txn::new()
        .when(vec![Compare::mod_revision(key, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(
            key,
            value,
            lease.map(|l| PutOptions::new().with_lease(l)),
        )])
}

/// update: `Txn if mod_revision(k) = rev then Put(k, v[, lease]) else Range(k)`.
pub fn update_txn(key: &[u8], revision: i64, value: Vec<u8>, lease: Option<i64>) -> Txn {
    Txn::new()
        .when(vec![Compare::mod_revision(key, CompareOp::Equal, revision)])
        .and_then(vec![TxnOp::put(
            key,
            value,
            lease.map(|l| PutOptions::new().with_lease(l)),
        )])
        .or_else(vec![TxnOp::get(key, None)])
}

/// delete: `Txn if mod_revision(k) = rev then DeleteRange(k) else Range(k)`.
pub fn delete_txn(key: &[u8], revision: i64) -> Txn {
    Txn::new()
        .when(vec![Compare::mod_revision(key, CompareOp::Equal, revision)])
        .and_then(vec![TxnOp::delete(key, None)])
        .or_else(vec![TxnOp::get(key, None)])
}

/// Reads a conditional write's response.
pub fn written(resp: &TxnResponse) -> Written {
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    if resp.succeeded() {
        return Written::Done(revision);
    }
    let current = resp
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
            _ => None,
        })
        .unwrap_or(0);
    Written::Conflict(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_apiserver_layout() {
        let all = resources(15_000);
        let by = |n: &str| all.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(by("pods").key(7, 5), b"/registry/pods/ns-2/pod-7");
        assert_eq!(by("minions").key(3, 5), b"/registry/minions/node-3");
        assert_eq!(
            by("leases").key(3, 5),
            b"/registry/leases/kube-node-lease/node-3"
        );
        assert_eq!(
            by("services").key(4, 5),
            b"/registry/services/specs/ns-4/service-4"
        );
        assert_eq!(by("pods").probe_key(), "/registry/pods");
        assert_eq!(by("pods").population(500), 15_000);
        assert_eq!(by("services").population(500), 825);
        assert_eq!(namespaces(5_000), 50);
        assert_eq!(namespaces(10), 1);
    }

    #[test]
    fn objects_track_revisions() {
        let objs = Objects::default();
        objs.insert(b"a".to_vec(), 5);
        objs.insert(b"b".to_vec(), 6);
        let mut rng = fastrand::Rng::with_seed(3);
        let (slot, key, rev) = objs.pick(&mut rng).unwrap();
        objs.update(slot, &key, rev + 10);
        assert_eq!(objs.get(slot).unwrap().2, rev + 10);
        objs.update(slot, &key, 1);
        assert_eq!(
            objs.get(slot).unwrap().2,
            rev + 10,
            "revisions never go back"
        );
        objs.remove(slot, &key);
        assert_eq!(objs.len(), 1);
        objs.insert(b"c".to_vec(), 9);
        assert_eq!(objs.len(), 2);
    }

    #[test]
    fn bodies_differ_per_stamp() {
        let b = Bodies::new(100);
        assert_eq!(b.make(1).len(), 100);
        assert_ne!(b.make(1), b.make(2));
    }
}
