//! Membership changes (etcd's Cluster service): MemberAdd (voter or
//! learner), MemberRemove, MemberPromote through Raft configuration
//! changes, one member at a time as etcd makes them; MemberUpdate (peer
//! URLs) through a member entry of the log. Each is checked first with
//! etcd's rules and errors (`--strict-reconfig-check`, on as in etcd): a
//! voter is added only while enough members are started and this member
//! is connected to every voter, a voter removed only if the rest keep a
//! quorum, a learner promoted only once its log is within 10% of the
//! leader's. Members and the membership are applied on every member from
//! the log and recorded with each checkpoint ([`crate::node::MemberMeta`]).

use basalt_raft::{ConfChange, ConfChangeType};
use prost::Message;

use crate::error::Error;
use crate::grpc::Status;
use crate::member::MemberInfo;

use super::Reply;
use crate::peer::{HelloReply, JoinedCluster, JoinedMember, Refusal};

/// The context of a membership change entry: who waits for it, and the
/// member it adds, removes or promotes. Field numbers are basalt's on-disk
/// format: never reuse one.
#[derive(Clone, PartialEq, Message)]
pub struct MemberChange {
    #[prost(uint64, tag = "1")]
    pub proposer: u64,
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
    #[prost(uint64, tag = "3")]
    pub id: u64,
    #[prost(string, repeated, tag = "4")]
    pub peer_urls: Vec<String>,
    #[prost(bool, tag = "5")]
    pub is_learner: bool,
}

/// A member's new peer URLs (MemberUpdate), as a member entry of the log.
#[derive(Clone, PartialEq, Message)]
pub struct MemberUpdate {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, repeated, tag = "2")]
    pub peer_urls: Vec<String>,
}

/// etcd's limit on learners in a cluster (`maxLearners`).
pub const MAX_LEARNERS: usize = 1;

/// A learner is ready to be promoted once its log matches this share of
/// the leader's (etcd's `readyPercent`).
pub const LEARNER_READY: f64 = 0.9;

/// The id etcd gives a member added at `unix_secs` with `peer_urls`.
pub fn added_member_id(peer_urls: &[String], unix_secs: u64) -> u64 {
    crate::member::member_id(peer_urls, &unix_secs.to_string())
}

/// etcd's check of peer URLs given to MemberAdd/MemberUpdate: each a URL
/// with a scheme and a host (`etcdserver: given member URLs are invalid`).
pub fn check_peer_urls(urls: &[String]) -> Result<(), Error> {
    let valid = |u: &str| {
        let Some((scheme, rest)) = u.split_once("://") else {
            return false;
        };
        matches!(scheme, "http" | "https" | "unix" | "unixs")
            && !rest.is_empty()
            && !rest.contains('/')
    };
    if urls.is_empty() || !urls.iter().all(|u| valid(u)) {
        return Err(Error::MemberBadUrls);
    }
    Ok(())
}

/// Whether a member other than `except` already has one of `urls`.
pub fn urls_taken(members: &[MemberInfo], urls: &[String], except: u64) -> bool {
    members
        .iter()
        .filter(|m| m.id != except)
        .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
}

/// A majority of `n` voters.
fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// A member is started once it published its name (etcd's `IsStarted`).
fn started(m: &MemberInfo) -> bool {
    !m.name.is_empty()
}

fn voting<'a>(
    members: &'a [MemberInfo],
    voters: &'a [u64],
) -> impl Iterator<Item = &'a MemberInfo> {
    members.iter().filter(|m| voters.contains(&m.id))
}

/// etcd's `IsReadyToAddVotingMember`: the started voters still make a
/// quorum once one more voter (not started yet) is counted.
pub fn ready_to_add_voter(members: &[MemberInfo], voters: &[u64]) -> bool {
    let nstarted = voting(members, voters).filter(|m| started(m)).count();
    let nmembers = voting(members, voters).count() + 1;
    // Adding a second member to a cluster of one, to restore it.
    if nstarted == 1 && nmembers == 2 {
        return true;
    }
    nstarted >= quorum(nmembers)
}

/// etcd's `IsReadyToRemoveVotingMember`: the started voters left make a
/// quorum of the voters left.
pub fn ready_to_remove_voter(members: &[MemberInfo], voters: &[u64], id: u64) -> bool {
    let rest: Vec<&MemberInfo> = voting(members, voters).filter(|m| m.id != id).collect();
    let nstarted = rest.iter().filter(|m| started(m)).count();
    nstarted >= quorum(rest.len())
}

/// etcd's `IsReadyToPromoteMember`: counting the learner as a started
/// voter, the started voters make a quorum.
pub fn ready_to_promote(members: &[MemberInfo], voters: &[u64]) -> bool {
    let nstarted = voting(members, voters).filter(|m| started(m)).count() + 1;
    let nmembers = voting(members, voters).count() + 1;
    nstarted >= quorum(nmembers)
}

/// The Raft change and its context for one membership change.
pub fn conf_change(kind: ConfChangeType, change: &MemberChange) -> ConfChange {
    let mut cc = match kind {
        ConfChangeType::AddNode => ConfChange::add_node(change.id),
        ConfChangeType::AddLearner => ConfChange::add_learner(change.id),
        ConfChangeType::RemoveNode => ConfChange::remove_node(change.id),
    };
    cc.context = change.encode_to_vec();
    cc
}

impl super::Sequencer {
    /// Whether this member can vouch for the peers' health: only the
    /// leader keeps a stream to every other member (etcd keeps streams
    /// between all members, so any member can; a follower here skips the
    /// connectivity half of `--strict-reconfig-check`).
    fn sees_every_peer(&self) -> bool {
        self.driver.status().role == basalt_raft::StateRole::Leader
    }

    /// Whether the leader's streams to every other voter are up (etcd
    /// wants them up for its health interval before a voter is added).
    fn connected_to_every_voter(&self, voters: &[u64]) -> bool {
        !self.sees_every_peer() || voters.iter().all(|&v| self.connected(v))
    }

    fn connected(&self, id: u64) -> bool {
        id == self.driver.status().id
            || self
                .transport
                .borrow()
                .as_ref()
                .is_some_and(|t| t.connected(id))
    }

    /// (members, voters, learners) as applied.
    fn membership(&self) -> (Vec<MemberInfo>, Vec<u64>, Vec<u64>) {
        let meta = self.meta.borrow();
        (
            meta.members.clone(),
            meta.conf_state.voters.clone(),
            meta.conf_state.learners.clone(),
        )
    }

    async fn propose_member_change(
        &self,
        kind: ConfChangeType,
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Reply, Status> {
        if self.stopping.get() {
            return Err(Error::Stopped.into());
        }
        if let Some(why) = self.poisoned.borrow().as_ref() {
            return Err(Error::Wal(why.clone()).into());
        }
        let rx = self.driver.propose_conf_change(|proposer, request_id| {
            conf_change(
                kind,
                &MemberChange {
                    proposer,
                    request_id,
                    id,
                    peer_urls,
                    is_learner,
                },
            )
        })?;
        rx.await.unwrap_or_else(|_| Err(Error::Stopped.into()))
    }

    /// MemberAdd: etcd's checks, then the change through Raft.
    pub(super) async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Reply, Status> {
        check_peer_urls(&peer_urls)?;
        let (members, voters, learners) = self.membership();
        if !is_learner {
            if !ready_to_add_voter(&members, &voters) {
                return Err(Error::NotEnoughStartedMembers.into());
            }
            if !self.connected_to_every_voter(&voters) {
                return Err(Error::Unhealthy.into());
            }
        }
        // etcd's order: the id, the URLs, the learner limit.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = added_member_id(&peer_urls, secs);
        if members.iter().any(|m| m.id == id) {
            return Err(Error::MemberExists.into());
        }
        if urls_taken(&members, &peer_urls, 0) {
            return Err(Error::PeerUrlExists.into());
        }
        if is_learner && learners.len() >= MAX_LEARNERS {
            return Err(Error::TooManyLearners.into());
        }
        let kind = if is_learner {
            ConfChangeType::AddLearner
        } else {
            ConfChangeType::AddNode
        };
        self.propose_member_change(kind, id, peer_urls, is_learner)
            .await
    }

    /// MemberRemove: a voter only while the rest keep a quorum.
    pub(super) async fn member_remove(&self, id: u64) -> Result<Reply, Status> {
        let (members, voters, learners) = self.membership();
        if !members.iter().any(|m| m.id == id) {
            return Err(Error::MemberNotFound.into());
        }
        if !learners.contains(&id) {
            if !ready_to_remove_voter(&members, &voters, id) {
                return Err(Error::NotEnoughStartedMembers.into());
            }
            // A member that is down is no part of the active quorum.
            if self.sees_every_peer() && self.connected(id) {
                let active = voters.iter().filter(|&&v| self.connected(v)).count();
                if active - 1 < 1 + (voters.len() - 1) / 2 {
                    return Err(Error::Unhealthy.into());
                }
            }
        }
        self.propose_member_change(ConfChangeType::RemoveNode, id, Vec::new(), false)
            .await
    }

    /// MemberPromote: a learner whose log is within 10% of the leader's.
    /// The leader checks that; a follower, which cannot see the learner's
    /// progress (etcd forwards the call to the leader), refuses a learner
    /// that has not yet applied its own start (published its name) and
    /// proposes the promotion of one that has.
    pub(super) async fn member_promote(&self, id: u64) -> Result<Reply, Status> {
        let (members, voters, learners) = self.membership();
        let Some(m) = members.iter().find(|m| m.id == id) else {
            return Err(Error::MemberNotFound.into());
        };
        if !learners.contains(&id) {
            return Err(Error::MemberNotLearner.into());
        }
        let ready = match self.driver.progress_of(id) {
            Some((matched, leader)) => matched as f64 >= leader as f64 * LEARNER_READY,
            None => started(m),
        };
        if !ready {
            return Err(Error::LearnerNotReady.into());
        }
        if !ready_to_promote(&members, &voters) {
            return Err(Error::NotEnoughStartedMembers.into());
        }
        let urls = m.peer_urls.clone();
        let promoted = self
            .propose_member_change(ConfChangeType::AddNode, id, urls, false)
            .await;
        if promoted.is_ok() {
            let c = &self.counters().learners_promoted;
            c.set(c.get() + 1);
        }
        promoted
    }

    /// MemberUpdate: new peer URLs, through the log.
    pub(super) async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Reply, Status> {
        check_peer_urls(&peer_urls)?;
        let (members, _, _) = self.membership();
        if !members.iter().any(|m| m.id == id) {
            return Err(Error::MemberNotFound.into());
        }
        if urls_taken(&members, &peer_urls, id) {
            return Err(Error::PeerUrlExists.into());
        }
        let entry = super::LogEntry::new(super::LogRequest::MemberUpdate(MemberUpdate {
            id,
            peer_urls,
        }));
        self.propose(entry).await
    }
}

/// The answer to a new member asking to join with `peer_urls`: the member
/// those URLs were added as, and the membership as applied here.
pub fn join_reply(meta: &crate::node::MemberMeta, peer_urls: &[String]) -> HelloReply {
    let mut wanted = peer_urls.to_vec();
    wanted.sort();
    let found = meta.members.iter().find(|m| {
        let mut urls = m.peer_urls.clone();
        urls.sort();
        urls == wanted
    });
    let Some(member) = found else {
        return HelloReply::Refused(Refusal::UnknownMember { id: 0 });
    };
    HelloReply::Joined(JoinedCluster {
        cluster_id: meta.cluster_id,
        member_id: member.id,
        voters: meta.conf_state.voters.clone(),
        learners: meta.conf_state.learners.clone(),
        members: meta
            .members
            .iter()
            .map(|m| JoinedMember {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> MemberInfo {
        MemberInfo {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            client_urls: Vec::new(),
            is_learner: false,
        }
    }

    #[test]
    fn quorum_rules_are_etcds() {
        let three = vec![member(1, "a"), member(2, "b"), member(3, "c")];
        let voters = [1, 2, 3];
        assert!(ready_to_add_voter(&three, &voters));
        let one_down = vec![member(1, "a"), member(2, "b"), member(3, "")];
        // 4 voters need 3 started.
        assert!(!ready_to_add_voter(&one_down, &voters));
        assert!(ready_to_add_voter(&[member(1, "a")], &[1]), "1 → 2");
        assert!(ready_to_remove_voter(&one_down, &voters, 3));
        assert!(
            !ready_to_remove_voter(&one_down, &voters, 2),
            "a and c left: only a started"
        );
        let two_down = vec![member(1, "a"), member(2, ""), member(3, "")];
        assert!(!ready_to_remove_voter(&two_down, &voters, 1));
        assert!(ready_to_promote(&one_down, &voters));
        assert!(!ready_to_promote(&two_down, &voters));
    }

    #[test]
    fn urls_are_checked_and_ids_derived_as_etcd() {
        assert!(check_peer_urls(&["http://10.0.0.1:2380".into()]).is_ok());
        assert!(check_peer_urls(&[]).is_err());
        assert!(check_peer_urls(&["10.0.0.1:2380".into()]).is_err());
        assert!(check_peer_urls(&["http://".into()]).is_err());
        let three = vec![member(1, "a"), member(2, "b")];
        assert!(urls_taken(&three, &["http://127.0.0.1:2".into()], 0));
        assert!(!urls_taken(&three, &["http://127.0.0.1:2".into()], 2));
        let urls = vec!["http://127.0.0.1:2380".to_string()];
        assert_ne!(added_member_id(&urls, 1), added_member_id(&urls, 2));
        assert_eq!(
            added_member_id(&urls, 7),
            crate::member::member_id(&urls, "7")
        );
    }
}
