//! basalt-check: checks what clients of an etcd v3 cluster recorded
//! against the guarantees etcd makes, so fault runs (kill -9, SIGSTOP,
//! partitions, with clients running) can be judged. It is fed plain data,
//! a [`History`] of KV operations and the [`Watcher`]s' streams, and knows
//! nothing of basalt itself.
//!
//! [`check_linearizability`] asks whether the KV operations have a
//! linearization that respects etcd's revisions: per key, a Wing & Gong
//! search with memoization, handling operations whose outcome the client
//! never learned (they may have taken effect once, at any time after their
//! call, or never, with whatever revision the reads later show); across
//! keys, that acknowledged writes have distinct revisions and revisions
//! follow real time. [`check_watches`] checks each watch stream (ordered,
//! unique, atomic, reliable, resumable, bookmarkable) and that events agree
//! with each other and with the operations. [`check`] runs both.
//!
//! Invariants of the verdict: `Violated` only when a guarantee is broken
//! for certain, with a report of the operations a person needs to see
//! (times relative to the first call); `Unknown`, never `Ok`, when a key's
//! search ran out of its budget ([`Limits`]). The checker assumes every key
//! is absent when the history starts (record setup writes as operations),
//! every write to a checked key is in the history, and each request names
//! one key.
//!
//! Not checked: multi-key transactions and range reads (requests name one
//! key), serializable reads, leases, compaction of KV reads, fragmented
//! watch responses; and nothing about a key is known before its first
//! recorded write.
//!
//! ```
//! use basalt_check::{check_linearizability, History, Limits, Operation, Outcome, Request, Response, Verdict};
//!
//! let mut history = History::new();
//! // Client 1 puts k = a (revision 2); client 2's put of k = b times out.
//! history.push(Operation::new(1, 0, 10, Request::put("k", "a"), Outcome::Ok(Response::put(2))));
//! history.push(Operation::new(2, 5, 50, Request::put("k", "b"), Outcome::Indeterminate));
//! // A later read sees b, at a revision nobody acknowledged: the lost put took effect.
//! history.push(Operation::new(1, 60, 70, Request::get("k"), Outcome::Ok(Response::get(Some("b"), 4, 4))));
//! assert_eq!(check_linearizability(&history, &Limits::default())?.verdict(), Verdict::Ok);
//!
//! // A read that then goes back to a: stale.
//! history.push(Operation::new(3, 80, 90, Request::get("k"), Outcome::Ok(Response::get(Some("a"), 2, 4))));
//! let report = check_linearizability(&history, &Limits::default())?;
//! assert_eq!(report.verdict(), Verdict::Violated);
//! println!("{report}");
//! # Ok::<(), basalt_check::Error>(())
//! ```
//!
//! # The history file
//!
//! A run is saved as JSON lines ([`Recording`]), re-checked with
//! `basalt-check <file.jsonl>`. Each line is one record; blank lines are
//! skipped. Keys and values are strings when UTF-8, otherwise
//! `{"hex": "00ff"}`. Times are monotonic nanoseconds of one clock.
//!
//! An operation (`#N` in reports is the N-th `op` line, from 0):
//!
//! ```text
//! {"op":{"client":1,"call":1000,"return":2500,"request":{"put":{"key":"k","value":"v1"}},"outcome":{"ok":{"put":{"header_revision":7}}}}}
//! {"op":{"client":2,"call":1200,"return":9000,"request":{"delete":{"key":"k"}},"outcome":"indeterminate"}}
//! {"op":{"client":3,"call":1300,"return":1400,"request":{"get":{"key":"k"}},"outcome":"failed"}}
//! ```
//!
//! Requests: `{"get":{"key"}}`, `{"put":{"key","value"}}`,
//! `{"delete":{"key"}}`, `{"cas_put":{"key","compare":{"mod_revision":N}|{"value":V},"value"}}`.
//! Outcomes: `"failed"` (certainly not applied), `"indeterminate"` (may
//! have been; `return` is then ignored), or `{"ok":RESPONSE}` with
//! `{"get":{"value":V|null,"mod_revision","header_revision"}}`,
//! `{"put":{"header_revision"}}`, `{"delete":{"deleted","header_revision"}}`,
//! `{"cas_put":{"succeeded","header_revision","current":{"value","mod_revision"}|null}}`.
//!
//! A watcher, then the responses it received in order:
//!
//! ```text
//! {"watch":{"id":1,"client":4,"key":"k","range_end":null,"start_revision":0,"prev_kv":true,"resumes":null}}
//! {"watch_response":{"watcher":1,"header_revision":6,"created":true,"received_at":1100}}
//! {"watch_response":{"watcher":1,"header_revision":7,"received_at":2600,"events":[{"type":"put","kv":{"key":"k","value":"v1","create_revision":7,"mod_revision":7,"version":1},"prev_kv":null}]}}
//! {"watch_response":{"watcher":1,"header_revision":9,"canceled":true,"compact_revision":8,"cancel_reason":"compacted"}}
//! ```
//!
//! `range_end` follows etcd (absent: the key alone; `"\u0000"`: every key
//! from `key` on). A watcher that resumed another after a break, from the
//! last revision that one saw + 1, names it in `resumes`; the two are
//! checked as one stream. Response fields other than `watcher` and
//! `header_revision` may be left out; `received_at` enables the real-time
//! checks.

mod bytes;
mod error;
mod history;
mod linearizability;
mod recording;
mod report;
mod revision;
mod watch;

use std::time::Instant;

pub use crate::bytes::Bytes;
pub use crate::error::Error;
pub use crate::history::{
    CasPutResponse, ClientId, Compare, Current, DeleteResponse, GetResponse, History, OpId,
    Operation, Outcome, PutResponse, Request, Response,
};
pub use crate::linearizability::{check_linearizability, Limits};
pub use crate::recording::{ReceivedResponse, Record, Recording, WatchOpened};
pub use crate::report::{
    offset, Inconclusive, Report, Stats, Verdict, Violation, ViolationKind, MAX_VIOLATIONS_PER_KIND,
};
pub use crate::watch::{
    check_watches, stitch, Event, EventKind, KeyValue, Stream, WatchRequest, WatchResponse,
    Watcher, WatcherId,
};

/// Runs both checks on a recording and merges their reports.
pub fn check(recording: &Recording, limits: &Limits) -> Result<Report, Error> {
    let started = Instant::now();
    let mut report = check_linearizability(&recording.history, limits)?;
    if !recording.watchers.is_empty() {
        report.merge(check_watches(&recording.history, &recording.watchers)?);
    }
    report.stats.elapsed = started.elapsed();
    Ok(report)
}
