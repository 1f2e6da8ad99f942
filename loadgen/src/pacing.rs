//! Tickets for requests: the one place that enforces `--total`, `--rate`
//! and `--duration`. Every request of a phase takes a ticket first; no ticket
//! means the phase is over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// Hands out request tickets, paced and bounded.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    deadline: Option<Instant>,
    total: Option<u64>,
    rate: Option<f64>,
    issued: AtomicU64,
    shutdown: Shutdown,
}

impl Pacer {
    /// A pacer starting now. `rate` is requests per second over all tasks.
    pub fn new(
        total: Option<u64>,
        rate: Option<f64>,
        duration: Option<Duration>,
        shutdown: Shutdown,
    ) -> Self {
        let start = Instant::now();
        Self {
            start,
            deadline: duration.map(|d| start + d),
            total,
            rate: rate.filter(|r| *r > 0.0),
            issued: AtomicU64::new(0),
            shutdown,
        }
    }

    /// When this pacer started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The next ticket, waiting for its slot when a rate is set. `None` once
    /// the total is used up, the deadline is reached or the run is stopped.
    pub async fn next(&self) -> Option<u64> {
        if self.shutdown.is_triggered() {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|t| n >= t) {
            return None;
        }
        if let Some(rate) = self.rate {
            // Slots are fixed on the start time, so a slow request does not
            // shift every later one (no coordinated omission in the rate).
            let at = self.start + Duration::from_secs_f64(n as f64 / rate);
            if self.deadline.is_some_and(|d| at >= d) {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.shutdown.wait() => return None,
            }
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        Some(n)
    }
}

/// Parses `10`, `10s`, `250ms`, `2m` or `1h` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`: use ms, s, m or h"
            ))
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn total_bounds_tickets() {
        let p = Pacer::new(Some(3), None, None, Shutdown::new());
        let mut got = Vec::new();
        while let Some(t) = p.next().await {
            got.push(t);
        }
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_spaces_tickets() {
        let p = Pacer::new(Some(11), Some(10.0), None, Shutdown::new());
        let start = Instant::now();
        while p.next().await.is_some() {}
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1000), "{took:?}");
        assert!(took < Duration::from_millis(1100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_bounds_tickets() {
        let p = Pacer::new(
            None,
            Some(100.0),
            Some(Duration::from_secs(1)),
            Shutdown::new(),
        );
        let mut n = 0;
        while p.next().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[tokio::test]
    async fn shutdown_ends_tickets() {
        let s = Shutdown::new();
        let p = Pacer::new(None, None, None, s.clone());
        assert!(p.next().await.is_some());
        s.trigger();
        assert!(p.next().await.is_none());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
