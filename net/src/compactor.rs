//! etcd's automatic compaction (`--auto-compaction-mode`,
//! `--auto-compaction-retention`).
//!
//! Two modes, with etcd 3.4's observable behaviour:
//! - `periodic`, retention a duration: the compactor samples the current
//!   revision every tenth of the period (capped at an hour) and, once a
//!   period has passed, compacts to the revision it saw one period ago; after
//!   that it compacts every period (at most every hour).
//! - `revision`, retention a number of revisions: every five minutes it
//!   compacts to `current - retention`, skipping when that is not positive or
//!   did not move since the last compaction.
//!
//! Compactions go through the log like a client's `Compact`; a revision that
//! is already compacted counts as done, any other failure is retried at the
//! next sample.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::etcdserverpb as pb;
use crate::sequencer::{Command, LogEntry, LogRequest, Sequencer};

/// How `revision` mode waits between attempts, as etcd does.
pub const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Samples per period in `periodic` mode.
const SAMPLES_PER_PERIOD: u32 = 10;

/// The period that bounds both the compaction and the sample interval.
const MAX_PERIODIC_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// An enabled automatic compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much wall-clock history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// Reads the two flags as etcd does; `Ok(None)` means compaction is off
/// (retention 0). Errors carry etcd's wording.
pub fn parse(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
    let periodic = match mode {
        "periodic" => true,
        "revision" => false,
        other => return Err(format!("unknown auto-compaction-mode {other:?}")),
    };
    // A plain non-negative integer is hours (periodic) or revisions;
    // anything else must be a Go duration, which revision mode then reads
    // as a count of nanoseconds, exactly like etcd.
    let amount = match retention.parse::<i64>() {
        Ok(n) if n >= 0 => {
            if periodic {
                u64::try_from(n)
                    .ok()
                    .and_then(|h| h.checked_mul(3600))
                    .map(|s| Duration::from_secs(s).as_nanos())
                    .ok_or_else(|| {
                        format!("auto-compaction-retention {retention:?} is too large")
                    })?
            } else {
                n as u128
            }
        }
        _ => {
            let nanos = parse_go_duration(retention)
                .map_err(|e| format!("error parsing CompactionRetention: {e}"))?;
            if nanos < 0 {
                // etcd would start a compactor that never fires.
                return Ok(None);
            }
            nanos as u128
        }
    };
    if amount == 0 {
        return Ok(None);
    }
    Ok(Some(if periodic {
        AutoCompaction::Periodic(Duration::from_nanos(amount as u64))
    } else {
        AutoCompaction::Revision(i64::try_from(amount).unwrap_or(i64::MAX))
    }))
}

/// Go's `time.ParseDuration`: `[-+]?(number unit)+` with units ns, us, µs,
/// ms, s, m, h, or a bare "0". Returns nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total as i64;
    Ok(if negative { -nanos } else { nanos })
}

/// Runs `mode` against `seq` until the returned task is dropped.
/// `revision_interval` is [`REVISION_INTERVAL`] outside tests.
pub fn spawn(
    seq: Rc<Sequencer>,
    mode: AutoCompaction,
    revision_interval: Duration,
) -> glommio::Task<()> {
    tracing::info!(?mode, "auto compaction enabled");
    match mode {
        AutoCompaction::Periodic(period) => glommio::spawn_local(run_periodic(seq, period)),
        AutoCompaction::Revision(keep) => {
            glommio::spawn_local(run_revision(seq, keep, revision_interval))
        }
    }
}

async fn run_periodic(seq: Rc<Sequencer>, period: Duration) {
    let interval = period.min(MAX_PERIODIC_INTERVAL);
    let sample_every = interval / SAMPLES_PER_PERIOD;
    let retained = (period.as_nanos() / sample_every.as_nanos().max(1)) as usize + 1;
    let mut samples: VecDeque<i64> = VecDeque::with_capacity(retained + 1);
    let mut last_success = Instant::now();
    // The first compaction waits a whole period; later ones one interval.
    let mut wait = period;
    loop {
        samples.push_back(seq.header().revision);
        if samples.len() > retained {
            samples.pop_front();
        }
        glommio::timer::sleep(sample_every).await;
        if last_success.elapsed() < wait {
            continue;
        }
        wait = interval;
        let revision = samples[0];
        if compact(&seq, revision).await {
            last_success = Instant::now();
        }
    }
}

async fn run_revision(seq: Rc<Sequencer>, keep: i64, every: Duration) {
    let mut previous = 0;
    loop {
        glommio::timer::sleep(every).await;
        let revision = seq.header().revision.saturating_sub(keep);
        if revision <= 0 || revision == previous {
            continue;
        }
        if compact(&seq, revision).await {
            previous = revision;
        }
    }
}

/// True when `revision` is compacted now (by this call or before). Only
/// the leader compacts (as etcd): a follower's turn is skipped, and its
/// samples stay ready should it become leader.
async fn compact(seq: &Sequencer, revision: i64) -> bool {
    if seq.driver().status().role != basalt_raft::StateRole::Leader {
        return false;
    }
    tracing::info!(revision, "starting auto compaction");
    let started = Instant::now();
    let entry = LogEntry::new(LogRequest::Compaction(pb::CompactionRequest {
        revision,
        physical: false,
    }));
    match seq.execute(Command::Propose(entry)).await {
        Ok(_) => {
            tracing::info!(
                revision,
                took_ms = started.elapsed().as_secs_f64() * 1e3,
                "completed auto compaction"
            );
            true
        }
        Err(status) if status.message == crate::error::Error::Compacted.to_string() => true,
        Err(status) => {
            tracing::warn!(revision, error = %status.message, "auto compaction failed; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_like_etcd() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert_eq!(
            parse("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic(h)))
        );
        assert_eq!(
            parse("periodic", "1h30m"),
            Ok(Some(AutoCompaction::Periodic(h + h / 2)))
        );
        assert_eq!(
            parse("periodic", "2.5s"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_millis(2500))))
        );
        assert_eq!(
            parse("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        // etcd reads a duration in revision mode as nanoseconds.
        assert_eq!(
            parse("revision", "10m"),
            Ok(Some(AutoCompaction::Revision(600_000_000_000)))
        );
        assert_eq!(
            parse("foo", "1"),
            Err("unknown auto-compaction-mode \"foo\"".to_string())
        );
        assert_eq!(
            parse("revision", "abc"),
            Err("error parsing CompactionRetention: time: invalid duration \"abc\"".to_string())
        );
        assert_eq!(
            parse("periodic", "-1"),
            Err(
                "error parsing CompactionRetention: time: missing unit in duration \"-1\""
                    .to_string()
            )
        );
        assert_eq!(
            parse("periodic", "5x"),
            Err(
                "error parsing CompactionRetention: time: unknown unit \"x\" in duration \"5x\""
                    .to_string()
            )
        );
        assert_eq!(parse("periodic", "-5m"), Ok(None));
    }
}
