//! Lease clocks: when each lease expires, renewal, and which leases are
//! due. Pure bookkeeping with the time passed in, so it is tested without
//! waiting; the lessor turns due leases into revokes through the log.
//!
//! Deadlines are not persisted: after a restart every lease gets its full
//! TTL again (what etcd does), which can only make a lease live longer than
//! asked, never shorter. With lease checkpointing the leader records each
//! long lease's remaining TTL in the log now and then, and a new leader
//! starts the lease from that instead of its full TTL (etcd's
//! `--experimental-enable-lease-checkpoint`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Clock {
    ttl: i64,
    deadline: Instant,
    /// Handed out for revoking: renewals fail from then on, even if that
    /// revoke fails and is retried.
    expired: bool,
    /// The remaining TTL the last checkpoint applied from the log recorded
    /// (0: none, or reset by a keepalive since).
    checkpointed: i64,
    /// When the leader records the remaining TTL next, if the lease is
    /// long enough to need it.
    next_checkpoint: Option<Instant>,
}

/// The deadlines of every live lease.
#[derive(Debug, Default)]
pub struct Keeper {
    leases: HashMap<i64, Clock>,
    /// (deadline, id) of every lease not being revoked, soonest first.
    due: BTreeSet<(Instant, i64)>,
    /// (next checkpoint, id), soonest first.
    checkpoints: BTreeSet<(Instant, i64)>,
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
            checkpointed: 0,
            next_checkpoint: None,
        };
        self.due.insert((clock.deadline, id));
        self.leases.insert(id, clock);
    }

    /// Drops lease `id` (revoked).
    pub fn forget(&mut self, id: i64) {
        if let Some(c) = self.leases.remove(&id) {
            self.due.remove(&(c.deadline, id));
            if let Some(at) = c.next_checkpoint {
                self.checkpoints.remove(&(at, id));
            }
        }
    }

    /// A checkpoint applied from the log: lease `id` had `remaining`
    /// seconds left when the leader recorded it (0 clears the record).
    /// Only a new leader acts on it ([`Keeper::promote`]).
    pub fn set_checkpoint(&mut self, id: i64, remaining: i64) {
        if let Some(c) = self.leases.get_mut(&id) {
            c.checkpointed = remaining.max(0);
        }
    }

    /// This member became leader: every lease not being revoked lives
    /// `extend` plus its checkpointed remaining TTL (its full TTL without
    /// one) from `now`, as etcd's `Promote`. Leases with a TTL longer than
    /// `checkpoint_every` get their next checkpoint scheduled.
    pub fn promote(&mut self, now: Instant, extend: Duration, checkpoint_every: Option<Duration>) {
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        for id in ids {
            let c = self.leases.get_mut(&id).expect("listed above");
            if c.expired {
                continue;
            }
            self.due.remove(&(c.deadline, id));
            let left = if c.checkpointed > 0 {
                c.checkpointed
            } else {
                c.ttl
            };
            c.deadline = deadline(now + extend, left);
            self.due.insert((c.deadline, id));
            self.schedule_checkpoint(id, now, checkpoint_every);
        }
    }

    /// Schedules lease `id`'s next checkpoint `every` from `now` if it has
    /// more than that left (etcd checkpoints only such leases).
    pub fn schedule_checkpoint(&mut self, id: i64, now: Instant, every: Option<Duration>) {
        let (Some(every), Some(c)) = (every, self.leases.get_mut(&id)) else {
            return;
        };
        if let Some(at) = c.next_checkpoint.take() {
            self.checkpoints.remove(&(at, id));
        }
        if !c.expired && c.deadline.saturating_duration_since(now) > every {
            let at = now + every;
            c.next_checkpoint = Some(at);
            self.checkpoints.insert((at, id));
        }
    }

    /// Up to `max` leases whose checkpoint is due at `now`, with their
    /// remaining whole seconds, soonest first; each is rescheduled `every`
    /// later while it still has more than that left.
    pub fn take_checkpoints(
        &mut self,
        now: Instant,
        every: Duration,
        max: usize,
    ) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(at, id)) = self.checkpoints.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.checkpoints.remove(&(at, id));
            let Some(c) = self.leases.get_mut(&id) else {
                continue;
            };
            c.next_checkpoint = None;
            if c.expired {
                continue;
            }
            let left = c.deadline.saturating_duration_since(now);
            out.push((id, left.as_secs().max(1) as i64));
            self.schedule_checkpoint(id, now, Some(every));
        }
        out
    }

    /// A keepalive: the lease lives its full TTL from `now` and forgets
    /// its checkpointed remaining TTL. Returns the TTL, or `None` for a
    /// lease that does not exist or already expired (etcd answers both
    /// with TTL 0).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let c = self.leases.get_mut(&id)?;
        if c.expired || c.deadline <= now {
            return None;
        }
        self.due.remove(&(c.deadline, id));
        c.deadline = deadline(now, c.ttl);
        c.checkpointed = 0;
        self.due.insert((c.deadline, id));
        Some(c.ttl)
    }

    /// The remaining TTL the last applied checkpoint recorded (0: none).
    pub fn checkpointed(&self, id: i64) -> i64 {
        self.leases.get(&id).map_or(0, |c| c.checkpointed)
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

    #[test]
    fn checkpoints_are_due_every_interval_for_long_leases_only() {
        let t0 = Instant::now();
        let every = Some(secs(3));
        let mut k = Keeper::new();
        k.grant(1, 10, t0);
        k.schedule_checkpoint(1, t0, every);
        k.grant(2, 2, t0);
        k.schedule_checkpoint(2, t0, every);
        assert!(k.take_checkpoints(t0 + secs(2), secs(3), 10).is_empty());
        assert_eq!(k.take_checkpoints(t0 + secs(3), secs(3), 10), vec![(1, 7)]);
        assert_eq!(k.take_checkpoints(t0 + secs(6), secs(3), 10), vec![(1, 4)]);
        // 4 s left at 6 s: one more at 9 s, then no more (1 s left).
        assert_eq!(k.take_checkpoints(t0 + secs(9), secs(3), 10), vec![(1, 1)]);
        assert!(k.take_checkpoints(t0 + secs(60), secs(3), 10).is_empty());
        // Forgotten leases leave no checkpoint behind.
        k.grant(3, 100, t0);
        k.schedule_checkpoint(3, t0, every);
        k.forget(3);
        assert!(k.take_checkpoints(t0 + secs(60), secs(3), 10).is_empty());
    }

    #[test]
    fn promote_starts_from_the_checkpoint_or_the_full_ttl_plus_the_extension() {
        let t0 = Instant::now();
        let mut k = Keeper::new();
        k.grant(1, 60, t0);
        k.grant(2, 60, t0);
        k.grant(3, 60, t0);
        k.set_checkpoint(1, 20);
        k.set_checkpoint(3, 20);
        assert_eq!(k.renew(3, t0 + secs(5)), Some(60), "renewal clears it");
        assert_eq!(k.checkpointed(3), 0);
        let later = t0 + secs(50);
        k.promote(later, secs(1), None);
        assert_eq!(k.remaining(1, later), Some((60, 21)));
        assert_eq!(k.remaining(2, later), Some((60, 61)));
        assert_eq!(k.remaining(3, later), Some((60, 61)));
        assert_eq!(k.take_expired(later + secs(21), 10), vec![1]);
    }

    #[test]
    fn promote_leaves_leases_being_revoked_alone() {
        let t0 = Instant::now();
        let mut k = Keeper::new();
        k.grant(1, 2, t0);
        assert_eq!(k.take_expired(t0 + secs(3), 10), vec![1]);
        k.promote(t0 + secs(3), secs(1), Some(secs(1)));
        assert_eq!(k.renew(1, t0 + secs(3)), None, "still expired");
        assert!(k.take_expired(t0 + secs(100), 10).is_empty());
    }
}
