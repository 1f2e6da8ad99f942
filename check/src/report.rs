//! What a check found: a [`Verdict`], and for each violation a text a
//! person can act on, naming the operations involved with times relative to
//! the first call of the history.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::bytes::Bytes;
use crate::history::OpId;

/// Most violations of one kind kept in a report; the rest are counted.
pub const MAX_VIOLATIONS_PER_KIND: usize = 20;

/// The answer of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed.
    Ok,
    /// At least one guarantee is broken; see [`Report::violations`].
    Violated,
    /// Nothing was found broken, but the search budget ran out on some key
    /// before it could decide; see [`Report::inconclusive`]. Not a pass.
    Unknown,
}

/// Which guarantee a [`Violation`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// The operations on one key have no linearization.
    NotLinearizable,
    /// Two acknowledged writes got the same revision.
    DuplicateRevision,
    /// Two operations disagree on what one revision wrote (another key,
    /// another value).
    RevisionConflict,
    /// An operation called after another returned got a lower revision (or,
    /// for a write, not a higher one).
    RevisionWentBackwards,
    /// A watch delivered an event of a lower revision after a higher one.
    WatchOutOfOrder,
    /// A watch delivered the same event twice.
    WatchDuplicateEvent,
    /// A watch split the events of one revision over two responses.
    WatchSplitRevision,
    /// A watch skipped an event within the revisions it covered.
    WatchMissingEvent,
    /// A watch delivered an event below its start revision.
    WatchEventBeforeStart,
    /// A watch delivered an event at or below a revision a progress
    /// notification had declared complete.
    WatchBookmarkBroken,
    /// A watch delivered events after it was canceled.
    WatchEventAfterCancel,
    /// An event or response contradicts itself: key outside the watched
    /// range, versions or create revisions that do not chain, a header
    /// behind its events, a compaction that did not apply.
    WatchMalformedEvent,
    /// An event's prev_kv is not the key's previous write.
    WatchPrevKvWrong,
    /// An event disagrees with another watcher's event or with the
    /// operations about what a revision wrote.
    WatchEventConflict,
    /// An event that no recorded operation can have written, or one write
    /// delivered at more revisions than it was issued.
    WatchEventNotInHistory,
    /// An operation called after a watcher had received revision r got a
    /// lower revision.
    StaleAfterWatch,
}

impl ViolationKind {
    /// The guarantee, as etcd's documentation names it.
    pub fn guarantee(self) -> &'static str {
        use ViolationKind::*;
        match self {
            NotLinearizable | DuplicateRevision | RevisionConflict | RevisionWentBackwards => {
                "KV: strict serializability"
            }
            WatchOutOfOrder => "watch: ordered",
            WatchDuplicateEvent => "watch: unique",
            WatchSplitRevision => "watch: atomic",
            WatchMissingEvent => "watch: reliable",
            WatchEventBeforeStart
            | WatchEventAfterCancel
            | WatchMalformedEvent
            | WatchPrevKvWrong => "watch: events as requested",
            WatchBookmarkBroken => "watch: bookmarkable",
            WatchEventConflict | WatchEventNotInHistory | StaleAfterWatch => {
                "watch: agrees with the KV history"
            }
        }
    }
}

/// One broken guarantee, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The key, when the violation is about one.
    pub key: Option<Bytes>,
    /// The operations involved.
    pub ops: Vec<OpId>,
    /// The evidence for a person: one or more lines.
    pub detail: String,
}

/// A key the search could not decide within its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconclusive {
    pub key: Bytes,
    /// Which budget ran out.
    pub reason: String,
    /// How far the search got.
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub operations: usize,
    pub keys: usize,
    /// Model steps tried by the linearizability search, all keys together.
    pub states_explored: u64,
    pub watchers: usize,
    pub events: usize,
    pub elapsed: Duration,
}

/// The violations and undecided keys a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub inconclusive: Vec<Inconclusive>,
    /// Violations beyond [`MAX_VIOLATIONS_PER_KIND`], counted, not kept.
    pub omitted: BTreeMap<ViolationKind, usize>,
    pub stats: Stats,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if !self.violations.is_empty() {
            Verdict::Violated
        } else if !self.inconclusive.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Ok
        }
    }

    pub fn is_ok(&self) -> bool {
        self.verdict() == Verdict::Ok
    }

    /// The kinds of violation found.
    pub fn kinds(&self) -> BTreeSet<ViolationKind> {
        self.violations.iter().map(|v| v.kind).collect()
    }

    pub fn has(&self, kind: ViolationKind) -> bool {
        self.violations.iter().any(|v| v.kind == kind)
    }

    pub(crate) fn push(&mut self, violation: Violation) {
        let kept = self
            .violations
            .iter()
            .filter(|v| v.kind == violation.kind)
            .count();
        if kept < MAX_VIOLATIONS_PER_KIND {
            self.violations.push(violation);
        } else {
            *self.omitted.entry(violation.kind).or_default() += 1;
        }
    }

    pub(crate) fn violation(
        &mut self,
        kind: ViolationKind,
        key: Option<&Bytes>,
        ops: Vec<OpId>,
        detail: String,
    ) {
        self.push(Violation {
            kind,
            key: key.cloned(),
            ops,
            detail,
        });
    }

    /// Folds `other` in, as when both the KV and the watch checks ran.
    pub fn merge(&mut self, other: Report) {
        for violation in other.violations {
            self.push(violation);
        }
        for (kind, count) in other.omitted {
            *self.omitted.entry(kind).or_default() += count;
        }
        self.inconclusive.extend(other.inconclusive);
        let (mine, theirs) = (&mut self.stats, other.stats);
        mine.operations = mine.operations.max(theirs.operations);
        mine.keys = mine.keys.max(theirs.keys);
        mine.states_explored += theirs.states_explored;
        mine.watchers = mine.watchers.max(theirs.watchers);
        mine.events = mine.events.max(theirs.events);
        mine.elapsed += theirs.elapsed;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        let verdict = match self.verdict() {
            Verdict::Ok => "OK: every check passed",
            Verdict::Violated => "VIOLATED",
            Verdict::Unknown => {
                "UNKNOWN: nothing found broken, but the search gave up on some keys (not a pass)"
            }
        };
        writeln!(f, "{verdict}")?;
        writeln!(
            f,
            "({} operations on {} keys, {} watchers with {} events; {} search states; {:.3}s)",
            s.operations,
            s.keys,
            s.watchers,
            s.events,
            s.states_explored,
            s.elapsed.as_secs_f64()
        )?;
        for (index, violation) in self.violations.iter().enumerate() {
            writeln!(f)?;
            write!(
                f,
                "violation {}: {:?} (breaks {})",
                index + 1,
                violation.kind,
                violation.kind.guarantee()
            )?;
            if let Some(key) = &violation.key {
                write!(f, " on key {key}")?;
            }
            writeln!(f)?;
            for line in violation.detail.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        for (kind, count) in &self.omitted {
            writeln!(f, "\n… and {count} more {kind:?} violations not shown")?;
        }
        for undecided in &self.inconclusive {
            writeln!(
                f,
                "\nundecided: key {}: {}",
                undecided.key, undecided.reason
            )?;
            for line in undecided.detail.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// `t` relative to `origin`, for a person: `+1.234ms`, `+12.345s`.
pub fn offset(t: u64, origin: u64) -> String {
    let (sign, nanos) = if t >= origin {
        ("+", t - origin)
    } else {
        ("-", origin - t)
    };
    let duration = Duration::from_nanos(nanos);
    if duration < Duration::from_secs(1) {
        format!("{sign}{:.3}ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{sign}{:.3}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_in_milliseconds_then_seconds() {
        assert_eq!(offset(1_234_000, 0), "+1.234ms");
        assert_eq!(offset(12_345_000_000, 0), "+12.345s");
        assert_eq!(offset(5, 10), "-0.000ms");
    }

    #[test]
    fn violations_beyond_the_cap_are_counted_not_kept() {
        let mut report = Report::default();
        for _ in 0..MAX_VIOLATIONS_PER_KIND + 3 {
            report.violation(
                ViolationKind::DuplicateRevision,
                None,
                vec![],
                String::new(),
            );
        }
        assert_eq!(report.violations.len(), MAX_VIOLATIONS_PER_KIND);
        assert_eq!(report.omitted[&ViolationKind::DuplicateRevision], 3);
        assert_eq!(report.verdict(), Verdict::Violated);
    }
}
