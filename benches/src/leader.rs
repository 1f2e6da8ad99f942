//! Which member of a running cluster leads, as the public API reports it:
//! `etcdctl endpoint status -w json` asks every member's Maintenance.Status
//! for its own member id and the leader it knows. The leader is the member
//! whose id every member names; members that disagree (an election under
//! way) name no leader yet.
//!
//! ```text
//! let etcdctl = Etcdctl::new("/usr/bin/etcdctl".into());
//! let statuses = etcdctl.status(&["http://127.0.0.1:2379".into(), …])?;
//! let leader: Option<usize> = agreed_leader(&statuses);
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{BenchError, Result};

/// Where Debian's etcd-client puts etcdctl (3.4; it speaks to 3.5 and
/// basalt alike).
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// How long etcdctl may wait for all members' answers.
const COMMAND_TIMEOUT: &str = "5s";

/// One member's answer to Maintenance.Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: u64,
    /// The leader's member id as this member knows it (0: none).
    pub leader: u64,
    pub raft_term: u64,
}

/// etcdctl, the client that asks.
#[derive(Clone, Debug)]
pub struct Etcdctl {
    pub binary: PathBuf,
}

impl Etcdctl {
    pub fn new(binary: PathBuf) -> Self {
        Self { binary }
    }

    /// Every endpoint's status, in the order given. Fails unless every
    /// endpoint answers.
    pub fn status(&self, endpoints: &[String]) -> Result<Vec<EndpointStatus>> {
        let out = Command::new(&self.binary)
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg(format!("--command-timeout={COMMAND_TIMEOUT}"))
            .args(["endpoint", "status", "-w", "json"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BenchError::Spawn {
                program: self.binary.display().to_string(),
                source,
            })?;
        let fail = |detail: String| BenchError::Status {
            endpoints: endpoints.join(","),
            detail,
        };
        if !out.status.success() {
            return Err(fail(format!(
                "etcdctl exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let statuses = parse_status(&String::from_utf8_lossy(&out.stdout)).map_err(fail)?;
        in_order(statuses, endpoints).map_err(fail)
    }
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Endpoint")]
    endpoint: String,
    #[serde(rename = "Status")]
    status: Status,
}

#[derive(Deserialize)]
struct Status {
    header: Header,
    #[serde(default)]
    leader: u64,
    #[serde(rename = "raftTerm", default)]
    raft_term: u64,
}

#[derive(Deserialize)]
struct Header {
    member_id: u64,
}

/// Parses `etcdctl endpoint status -w json`.
pub fn parse_status(json: &str) -> std::result::Result<Vec<EndpointStatus>, String> {
    let entries: Vec<Entry> = serde_json::from_str(json.trim())
        .map_err(|e| format!("unreadable status {json:?}: {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| EndpointStatus {
            endpoint: e.endpoint,
            member_id: e.status.header.member_id,
            leader: e.status.leader,
            raft_term: e.status.raft_term,
        })
        .collect())
}

/// `statuses` ordered as `endpoints`, one each.
fn in_order(
    mut statuses: Vec<EndpointStatus>,
    endpoints: &[String],
) -> std::result::Result<Vec<EndpointStatus>, String> {
    endpoints
        .iter()
        .map(|ep| {
            let at = statuses
                .iter()
                .position(|s| &s.endpoint == ep)
                .ok_or_else(|| format!("no status from {ep}"))?;
            Ok(statuses.swap_remove(at))
        })
        .collect()
}

/// The index of the member every member names as leader, if they agree
/// and the one named is among them.
pub fn agreed_leader(statuses: &[EndpointStatus]) -> Option<usize> {
    let named = statuses.first()?.leader;
    if named == 0 || statuses.iter().any(|s| s.leader != named) {
        return None;
    }
    statuses.iter().position(|s| s.member_id == named)
}

/// One line on who names whom, for notes when members disagree.
pub fn describe(statuses: &[EndpointStatus]) -> String {
    statuses
        .iter()
        .map(|s| {
            format!(
                "{} (id {:x}, term {}) names {:x}",
                s.endpoint, s.member_id, s.raft_term, s.leader
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What etcdctl 3.4 prints for a 3-member etcd 3.4 cluster (ids above
    /// 2^63 must survive as u64).
    const THREE: &str = r#"[{"Endpoint":"http://127.0.0.1:1","Status":{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":1,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":9372538179322589801,"raftIndex":4,"raftTerm":2,"raftAppliedIndex":4,"dbSizeInUse":16384}},
{"Endpoint":"http://127.0.0.1:2","Status":{"header":{"cluster_id":15118495548433857066,"member_id":9372538179322589801,"revision":1,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":9372538179322589801,"raftIndex":4,"raftTerm":2}},
{"Endpoint":"http://127.0.0.1:3","Status":{"header":{"cluster_id":15118495548433857066,"member_id":1,"revision":1,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":9372538179322589801,"raftIndex":4,"raftTerm":2}}]"#;

    fn endpoints(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_member_everyone_names() {
        let statuses = parse_status(THREE).unwrap();
        assert_eq!(statuses[0].member_id, 13668033151171901709);
        assert_eq!(statuses[0].raft_term, 2);
        assert_eq!(agreed_leader(&statuses), Some(1));
    }

    #[test]
    fn no_leader_while_members_disagree_or_name_none() {
        let mut statuses = parse_status(THREE).unwrap();
        statuses[2].leader = 1;
        assert_eq!(agreed_leader(&statuses), None, "a split vote");
        for s in &mut statuses {
            s.leader = 0;
        }
        assert_eq!(agreed_leader(&statuses), None, "no leader known");
        for s in &mut statuses {
            s.leader = 42;
        }
        assert_eq!(agreed_leader(&statuses), None, "a leader not asked");
        assert_eq!(agreed_leader(&[]), None);
    }

    #[test]
    fn orders_answers_as_asked_and_wants_every_one() {
        let statuses = parse_status(THREE).unwrap();
        let asked = endpoints(&[
            "http://127.0.0.1:3",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        ]);
        let ordered = in_order(statuses.clone(), &asked).unwrap();
        assert_eq!(ordered[0].member_id, 1);
        assert_eq!(agreed_leader(&ordered), Some(2));
        let more = endpoints(&["http://127.0.0.1:1", "http://127.0.0.1:4"]);
        assert_eq!(
            in_order(statuses, &more).unwrap_err(),
            "no status from http://127.0.0.1:4"
        );
        assert!(parse_status("Error: context deadline exceeded").is_err());
    }
}
