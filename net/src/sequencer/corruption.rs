//! The cluster's corruption check (etcd's `--experimental-corrupt-check-time`),
//! carried by the log instead of peer HTTP calls.
//!
//! Every interval the leader proposes a hash check. Each member applies it
//! at the same point of the log — where a healthy member is at the same
//! revision R as every other — and computes etcd's HashKV up to its
//! revision from its store; it proposes its report (member, check index,
//! revision, compact revision, hash) through the log. The leader judges a
//! round once every voter reported, or at its next check with the reports
//! it has: among the reports made at its own compact revision, the members
//! whose (revision, hash) differs from the one a quorum of voters shares
//! get a CORRUPT alarm; without such a quorum the alarm goes to member 0, as etcd raises
//! it when it cannot tell who is corrupt. While any CORRUPT alarm is active
//! every member refuses writes with `etcdserver: corrupt cluster` and still
//! serves reads (etcd 3.4's corrupt applier), until an operator disarms it.

use std::collections::BTreeMap;

/// One member's report: its (revision, compact revision, hash) where the
/// round's check applied.
pub type Report = (i64, i64, u32);

/// The reports of the rounds in progress, by the check's log index.
#[derive(Debug, Default)]
pub struct Rounds {
    rounds: BTreeMap<u64, BTreeMap<u64, Report>>,
}

/// Rounds remembered while waiting for reports; older ones are dropped.
const KEPT_ROUNDS: usize = 4;

impl Rounds {
    /// The check at log index `index` applied: its reports are awaited.
    pub fn open(&mut self, index: u64) {
        self.rounds.entry(index).or_default();
        while self.rounds.len() > KEPT_ROUNDS {
            self.rounds.pop_first();
        }
    }

    /// Records `member`'s report; returns the round's reports once `voters`
    /// members reported. Reports for rounds not open are ignored.
    pub fn report(
        &mut self,
        index: u64,
        member: u64,
        report: Report,
        voters: usize,
    ) -> Option<BTreeMap<u64, Report>> {
        let round = self.rounds.get_mut(&index)?;
        round.insert(member, report);
        if round.len() >= voters {
            return self.rounds.remove(&index);
        }
        None
    }

    /// Every open round, emptied (the leader judges them with what came in).
    pub fn take_all(&mut self) -> Vec<(u64, BTreeMap<u64, Report>)> {
        std::mem::take(&mut self.rounds).into_iter().collect()
    }
}

/// What a round says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too few comparable reports (the leader's own among them) to say.
    Unknown,
    /// Every comparable report has the same hash.
    Consistent { checked: usize },
    /// These members (0: cannot tell which) get a CORRUPT alarm.
    Corrupt(Vec<u64>),
}

/// Judges a round's reports as the leader `leader` of `voters` voters.
pub fn judge(reports: &BTreeMap<u64, Report>, leader: u64, voters: usize) -> Verdict {
    let Some(&(_, compact, _)) = reports.get(&leader) else {
        return Verdict::Unknown;
    };
    // Reports made after another compaction hash other versions.
    let comparable: Vec<(u64, (i64, u32))> = reports
        .iter()
        .filter(|(_, (_, c, _))| *c == compact)
        .map(|(&m, &(r, _, h))| (m, (r, h)))
        .collect();
    if comparable.len() < 2 {
        return Verdict::Unknown;
    }
    let mut by_hash: BTreeMap<(i64, u32), Vec<u64>> = BTreeMap::new();
    for &(member, hash) in &comparable {
        by_hash.entry(hash).or_default().push(member);
    }
    if by_hash.len() == 1 {
        return Verdict::Consistent {
            checked: comparable.len(),
        };
    }
    let quorum = voters / 2 + 1;
    match by_hash.values().find(|members| members.len() >= quorum) {
        Some(good) => Verdict::Corrupt(
            comparable
                .iter()
                .map(|&(m, _)| m)
                .filter(|m| !good.contains(m))
                .collect(),
        ),
        None => Verdict::Corrupt(vec![0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(r: &[(u64, i64, u32)]) -> BTreeMap<u64, Report> {
        r.iter().map(|&(m, c, h)| (m, (40, c, h))).collect()
    }

    #[test]
    fn the_minority_is_blamed_or_member_zero_without_a_quorum() {
        let same = reports(&[(1, 0, 7), (2, 0, 7), (3, 0, 7)]);
        assert_eq!(judge(&same, 1, 3), Verdict::Consistent { checked: 3 });
        let one_off = reports(&[(1, 0, 7), (2, 0, 7), (3, 0, 9)]);
        assert_eq!(judge(&one_off, 1, 3), Verdict::Corrupt(vec![3]));
        // The leader itself can be the odd one out.
        assert_eq!(judge(&one_off, 3, 3), Verdict::Corrupt(vec![3]));
        // Two of three reported and disagree: no quorum of voters agrees.
        let two = reports(&[(1, 0, 7), (2, 0, 9)]);
        assert_eq!(judge(&two, 1, 3), Verdict::Corrupt(vec![0]));
        let five = reports(&[(1, 0, 7), (2, 0, 7), (3, 0, 7), (4, 0, 8), (5, 0, 9)]);
        assert_eq!(judge(&five, 2, 5), Verdict::Corrupt(vec![4, 5]));
        // A member at another revision at the same point of the log is
        // corrupt whatever its hash.
        let mut ahead = same.clone();
        ahead.insert(2, (41, 0, 7));
        assert_eq!(judge(&ahead, 1, 3), Verdict::Corrupt(vec![2]));
    }

    #[test]
    fn reports_at_another_compaction_or_without_the_leader_say_nothing() {
        let compacted = reports(&[(1, 5, 7), (2, 0, 9), (3, 5, 7)]);
        assert_eq!(judge(&compacted, 1, 3), Verdict::Consistent { checked: 2 });
        let alone = reports(&[(1, 5, 7), (2, 0, 9)]);
        assert_eq!(judge(&alone, 1, 3), Verdict::Unknown);
        let no_leader = reports(&[(2, 0, 7), (3, 0, 9)]);
        assert_eq!(judge(&no_leader, 1, 3), Verdict::Unknown);
    }

    #[test]
    fn rounds_complete_with_every_voter_and_old_ones_are_dropped() {
        let mut rounds = Rounds::default();
        assert!(rounds.report(10, 1, (3, 0, 7), 2).is_none(), "not open");
        rounds.open(10);
        assert!(rounds.report(10, 1, (3, 0, 7), 2).is_none());
        let done = rounds.report(10, 2, (3, 0, 7), 2).expect("both reported");
        assert_eq!(done.len(), 2);
        for r in 20..30 {
            rounds.open(r);
        }
        let open: Vec<u64> = rounds.take_all().into_iter().map(|(r, _)| r).collect();
        assert_eq!(open, vec![26, 27, 28, 29]);
        assert!(rounds.take_all().is_empty());
    }
}
