//! etcd's limits on a lease's TTL.

use std::time::Duration;

/// etcd's `MaxLeaseTTL`: larger grants fail with "too large lease TTL".
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's default `--heartbeat-interval` and `--election-timeout`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// The smallest TTL a lease gets, in seconds: etcd raises shorter grants
/// to one and a half election timeouts (counted in whole heartbeats), so a
/// lease cannot expire during a leader change. 2 s with etcd's defaults.
pub fn min_ttl(heartbeat: Duration, election_timeout: Duration) -> i64 {
    let heartbeat_ms = heartbeat.as_millis().max(1);
    let election_ticks = election_timeout.as_millis() / heartbeat_ms;
    let min_ms = (3 * election_ticks / 2) * heartbeat_ms;
    // Whole seconds, rounded up, and never below one.
    (min_ms.div_ceil(1000) as i64).max(1)
}

/// The TTL a grant of `requested` seconds gets, as etcd decides it: too
/// large is an error (`None`), too small (zero and negative included) is
/// raised to `min_ttl`.
pub fn effective_ttl(requested: i64, min_ttl: i64) -> Option<i64> {
    if requested > MAX_LEASE_TTL {
        return None;
    }
    Some(requested.max(min_ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_defaults_give_two_seconds() {
        assert_eq!(min_ttl(DEFAULT_HEARTBEAT, DEFAULT_ELECTION_TIMEOUT), 2);
        // 3 * 10 / 2 = 15 ticks of 200 ms = 3 s.
        assert_eq!(
            min_ttl(Duration::from_millis(200), Duration::from_millis(2000)),
            3
        );
        // 3 * 5 / 2 = 7 ticks of 100 ms = 0.7 s, rounded up.
        assert_eq!(
            min_ttl(Duration::from_millis(100), Duration::from_millis(500)),
            1
        );
        assert_eq!(min_ttl(Duration::ZERO, Duration::ZERO), 1);
    }

    #[test]
    fn small_ttls_are_raised_and_huge_ones_refused() {
        assert_eq!(effective_ttl(1, 2), Some(2));
        assert_eq!(effective_ttl(-5, 2), Some(2));
        assert_eq!(effective_ttl(0, 2), Some(2));
        assert_eq!(effective_ttl(60, 2), Some(60));
        assert_eq!(effective_ttl(MAX_LEASE_TTL, 2), Some(MAX_LEASE_TTL));
        assert_eq!(effective_ttl(MAX_LEASE_TTL + 1, 2), None);
    }
}
