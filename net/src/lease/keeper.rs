//! Lease clocks: when each lease expires, renewal, and which leases are
//! due. Pure bookkeeping with the time passed in, so it is tested without
//! waiting; the lessor turns due leases into revokes through the log.
//!
//! Deadlines are not persisted: after a restart every lease gets its full
//! TTL again (what etcd does without lease checkpointing), which can only
//! make a lease live longer than asked, never shorter.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Clock {
    ttl: i64,
    deadline: Instant,
    /// Handed out for revoking: renewals fail from then on, even if that
    /// revoke fails and is retried.
    expired: bool,
}

/// The deadlines of every live lease.
#[derive(Debug, Default)]
pub struct Keeper {
    leases: HashMap<i64, Clock>,
    /// (deadline, id) of every lease not being revoked, soonest first.
    due: BTreeSet<(Instant, i64)>,
}

fn deadline(now: Instant, ttl: i64) -> Instant {
    // A TTL is at most 9e9 s, which fits an Instant on every platform we
    // run on; saturate rather than panic if it ever did not.
    let ttl = Duration::from_secs(ttl.max(0) as u64);
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(u32::MAX as u64))
}

impl Keeper {
    pub fn new() -> Keeper {
        Keeper::default()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Starts (or restarts) lease `id`'s clock: it expires `ttl` seconds
    /// after `now`.
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        self.forget(id);
        let clock = Clock {
            ttl,
            deadline: deadline(now, ttl),
            expired: false,
        };
        self.due.insert((clock.deadline, id));
        self.leases.insert(id, clock);
    }

    /// Drops lease `id` (revoked).
    pub fn forget(&mut self, id: i64) {
        if let Some(c) = self.leases.remove(&id) {
            self.due.remove(&(c.deadline, id));
        }
    }

    /// A keepalive: the lease lives its full TTL from `now`. Returns the
    /// TTL, or `None` for a lease that does not exist or already expired
    /// (etcd answers both with TTL 0).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let c = self.leases.get_mut(&id)?;
        if c.expired || c.deadline <= now {
            return None;
        }
        self.due.remove(&(c.deadline, id));
        c.deadline = deadline(now, c.ttl);
        self.due.insert((c.deadline, id));
        Some(c.ttl)
    }

    /// (granted TTL, whole seconds left) of lease `id`.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let c = self.leases.get(&id)?;
        let left = c.deadline.saturating_duration_since(now).as_secs() as i64;
        Some((c.ttl, if c.expired { 0 } else { left }))
    }

    /// Up to `max` leases whose deadline has passed, soonest first. They
    /// stay known (renewals fail) until [`Keeper::forget`] or
    /// [`Keeper::retry_at`].
    pub fn take_expired(&mut self, now: Instant, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(at, id)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.remove(&(at, id));
            if let Some(c) = self.leases.get_mut(&id) {
                c.expired = true;
            }
            out.push(id);
        }
        out
    }

    /// Revoking an expired lease failed (e.g. the server is stopping):
    /// hand it out again at `at`. It stays expired meanwhile.
    pub fn retry_at(&mut self, id: i64, at: Instant) {
        if let Some(c) = self.leases.get_mut(&id) {
            if c.expired && self.due.insert((at, id)) {
                c.deadline = at;
            }
        }
    }

    /// When the next lease is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|&(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn expires_after_ttl_unless_renewed() {
        let t0 = Instant::now();
        let mut k = Keeper::new();
        k.grant(1, 10, t0);
        k.grant(2, 5, t0);
        assert_eq!(k.remaining(1, t0 + secs(3)), Some((10, 7)));
        assert!(k.take_expired(t0 + secs(4), 10).is_empty());
        assert_eq!(k.renew(2, t0 + secs(4)), Some(5));
        assert_eq!(k.next_deadline(), Some(t0 + secs(9)));
        assert_eq!(k.take_expired(t0 + secs(9), 10), vec![2]);
        assert_eq!(k.take_expired(t0 + secs(10), 10), vec![1]);
    }

    #[test]
    fn expired_lease_cannot_be_renewed_until_revoke_settles() {
        let t0 = Instant::now();
        let mut k = Keeper::new();
        k.grant(1, 2, t0);
        assert_eq!(k.renew(1, t0 + secs(2)), None, "deadline reached");
        assert_eq!(k.take_expired(t0 + secs(2), 10), vec![1]);
        assert_eq!(k.renew(1, t0 + secs(2)), None);
        assert_eq!(k.remaining(1, t0 + secs(2)), Some((2, 0)));
        assert!(
            k.take_expired(t0 + secs(5), 10).is_empty(),
            "handed out once"
        );
        // The revoke failed: it comes back later.
        k.retry_at(1, t0 + secs(6));
        assert_eq!(
            k.renew(1, t0 + secs(3)),
            None,
            "still expired while retrying"
        );
        assert_eq!(k.take_expired(t0 + secs(6), 10), vec![1]);
        k.forget(1);
        assert!(!k.contains(1));
        assert_eq!(k.renew(1, t0), None);
        assert!(k.is_empty());
    }

    #[test]
    fn take_expired_is_bounded_and_soonest_first() {
        let t0 = Instant::now();
        let mut k = Keeper::new();
        for id in 1..=5 {
            k.grant(id, 10 - id, t0);
        }
        assert_eq!(k.take_expired(t0 + secs(100), 2), vec![5, 4]);
        assert_eq!(k.take_expired(t0 + secs(100), 10), vec![3, 2, 1]);
    }

    #[test]
    fn regrant_restarts_the_clock() {
        let t0 = Instant::now();
        let mut k = Keeper::new();
        k.grant(1, 5, t0);
        k.grant(1, 5, t0 + secs(4));
        assert!(k.take_expired(t0 + secs(5), 10).is_empty());
        assert_eq!(k.len(), 1);
        assert_eq!(k.take_expired(t0 + secs(9), 10), vec![1]);
    }
}
