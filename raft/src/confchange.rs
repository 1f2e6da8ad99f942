//! Turns a [`ConfChange`] into a new [`MembershipConfig`], enforcing the
//! rules that keep membership changes safe:
//! - a simple change alters the voter set by at most one member;
//! - joint consensus is entered only from a non-joint config and left only
//!   from a joint one;
//! - a node is never voter and learner at once; the voter set never empties.

use crate::error::{Error, Result};
use crate::message::{ConfChange, ConfChangeType};
use crate::tracker::MembershipConfig;

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfChange {
        reason: reason.into(),
    }
}

/// The configuration that results from applying `cc` to `current`.
pub fn apply(current: &MembershipConfig, cc: &ConfChange) -> Result<MembershipConfig> {
    if cc.is_leave_joint() {
        return leave_joint(current);
    }
    match cc.enters_joint() {
        Some(auto_leave) => enter_joint(current, cc, auto_leave),
        None => simple(current, cc),
    }
}

fn simple(current: &MembershipConfig, cc: &ConfChange) -> Result<MembershipConfig> {
    if current.voters.is_joint() {
        return Err(invalid(
            "cannot make a simple change while in a joint configuration",
        ));
    }
    let mut next = current.clone();
    apply_changes(&mut next, cc)?;
    let changed = current
        .voters
        .incoming
        .symmetric_difference(&next.voters.incoming)
        .count();
    if changed > 1 {
        return Err(invalid(
            "more than one voter changed without joint consensus",
        ));
    }
    check(&next)?;
    Ok(next)
}

fn enter_joint(
    current: &MembershipConfig,
    cc: &ConfChange,
    auto_leave: bool,
) -> Result<MembershipConfig> {
    if current.voters.is_joint() {
        return Err(invalid("already in a joint configuration"));
    }
    if current.voters.incoming.is_empty() {
        return Err(invalid(
            "cannot enter a joint configuration from an empty one",
        ));
    }
    let mut next = current.clone();
    next.voters.outgoing = current.voters.incoming.clone();
    apply_changes(&mut next, cc)?;
    next.auto_leave = auto_leave;
    check(&next)?;
    Ok(next)
}

fn leave_joint(current: &MembershipConfig) -> Result<MembershipConfig> {
    if !current.voters.is_joint() {
        return Err(invalid("not in a joint configuration"));
    }
    let mut next = current.clone();
    let learners_next = std::mem::take(&mut next.learners_next);
    next.learners.extend(learners_next);
    next.voters.outgoing.clear();
    next.auto_leave = false;
    check(&next)?;
    Ok(next)
}

fn apply_changes(cfg: &mut MembershipConfig, cc: &ConfChange) -> Result<()> {
    for c in &cc.changes {
        let id = c.node_id;
        if id == 0 {
            return Err(invalid("node id 0 is reserved"));
        }
        match c.change_type {
            ConfChangeType::AddNode => {
                cfg.voters.incoming.insert(id);
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
            }
            ConfChangeType::AddLearner => {
                cfg.voters.incoming.remove(&id);
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
                // A voter of the outgoing config keeps voting there until the
                // joint config is left; only then does it become a learner.
                if cfg.voters.outgoing.contains(&id) {
                    cfg.learners_next.insert(id);
                } else {
                    cfg.learners.insert(id);
                }
            }
            ConfChangeType::RemoveNode => {
                cfg.voters.incoming.remove(&id);
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
            }
        }
    }
    if cfg.voters.incoming.is_empty() {
        return Err(invalid("removing all voters is not allowed"));
    }
    Ok(())
}

fn check(cfg: &MembershipConfig) -> Result<()> {
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return Err(invalid(format!("node {id} is both voter and learner")));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(id) || cfg.voters.incoming.contains(id) {
            return Err(invalid(format!(
                "node {id} is in learners_next but not only an outgoing voter"
            )));
        }
    }
    if !cfg.voters.is_joint() && (cfg.auto_leave || !cfg.learners_next.is_empty()) {
        return Err(invalid("joint-only state outside a joint configuration"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ConfChangeSingle, ConfChangeTransition};

    fn cfg(voters: &[u64]) -> MembershipConfig {
        let mut c = MembershipConfig::default();
        c.voters.incoming = voters.iter().copied().collect();
        c
    }

    fn multi(changes: &[(ConfChangeType, u64)]) -> ConfChange {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: changes
                .iter()
                .map(|&(change_type, node_id)| ConfChangeSingle {
                    change_type,
                    node_id,
                })
                .collect(),
            context: Vec::new(),
        }
    }

    #[test]
    fn simple_changes_one_voter_at_a_time() {
        let c = apply(&cfg(&[1, 2, 3]), &ConfChange::add_node(4)).unwrap();
        assert_eq!(c.voters.incoming.len(), 4);
        let c = apply(&c, &ConfChange::add_learner(4)).unwrap();
        assert!(c.learners.contains(&4) && !c.voters.contains(4));
        assert!(apply(&cfg(&[1]), &ConfChange::remove_node(1)).is_err());
    }

    #[test]
    fn joint_swap_then_leave() {
        let cc = multi(&[
            (ConfChangeType::AddNode, 4),
            (ConfChangeType::AddLearner, 1),
        ]);
        let j = apply(&cfg(&[1, 2, 3]), &cc).unwrap();
        assert!(j.voters.is_joint());
        assert!(j.auto_leave);
        assert!(j.learners_next.contains(&1));
        assert!(
            apply(&j, &ConfChange::add_node(5)).is_err(),
            "no simple change while joint"
        );
        let out = apply(&j, &ConfChange::leave_joint()).unwrap();
        assert!(!out.voters.is_joint());
        assert_eq!(out.voters.incoming, [2, 3, 4].into_iter().collect());
        assert!(out.learners.contains(&1));
        assert!(apply(&out, &ConfChange::leave_joint()).is_err());
    }
}
