//! This member's identity as etcd derives it, so a client sees the same
//! member and cluster ids from basalt as from an etcd started with the
//! same flags.
//!
//! etcd: member id = first 8 bytes (big endian) of
//! SHA-1(sorted peer URLs concatenated ++ cluster token); cluster id = first
//! 8 bytes of SHA-1(every member id as 8 big-endian bytes, ascending).

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// A learner (a non-voting member); filled in from the membership
    /// when members are listed.
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    /// This member.
    pub local: MemberInfo,
    /// Every member of `--initial-cluster`, this one included.
    pub members: Vec<MemberInfo>,
}

pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = sha1_smol::Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    first_u64(&h.digest().bytes())
}

pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = sha1_smol::Sha1::new();
    for id in ids {
        h.update(&id.to_be_bytes());
    }
    first_u64(&h.digest().bytes())
}

fn first_u64(digest: &[u8; 20]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

impl ClusterInfo {
    /// From etcd's flags: `--initial-cluster` ("name=url,name=url,…"),
    /// `--initial-cluster-token`, and this member's name and URLs.
    pub fn from_flags(
        name: &str,
        initial_cluster: &str,
        token: &str,
        advertise_peer_urls: &[String],
        advertise_client_urls: &[String],
    ) -> Result<ClusterInfo, Error> {
        let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
        for part in initial_cluster.split(',').filter(|p| !p.is_empty()) {
            let (n, url) = part.split_once('=').ok_or_else(|| {
                Error::Config(format!("--initial-cluster entry {part:?} is not name=url"))
            })?;
            match by_name.iter_mut().find(|(k, _)| k == n) {
                Some((_, urls)) => urls.push(url.to_owned()),
                None => by_name.push((n.to_owned(), vec![url.to_owned()])),
            }
        }
        let Some((_, own_urls)) = by_name.iter().find(|(n, _)| n == name) else {
            return Err(Error::Config(format!(
                "couldn't find local name {name:?} in the initial cluster configuration"
            )));
        };
        let mut own_sorted = own_urls.clone();
        own_sorted.sort();
        let mut adv_sorted = advertise_peer_urls.to_vec();
        adv_sorted.sort();
        if own_sorted != adv_sorted {
            // etcd's words.
            return Err(Error::Config(format!(
                "--initial-cluster has {name}={} but missing from --initial-advertise-peer-urls={}",
                own_urls.join(","),
                advertise_peer_urls.join(",")
            )));
        }
        let members: Vec<MemberInfo> = by_name
            .into_iter()
            .map(|(n, urls)| MemberInfo {
                id: member_id(&urls, token),
                client_urls: if n == name {
                    advertise_client_urls.to_vec()
                } else {
                    Vec::new()
                },
                name: n,
                peer_urls: urls,
                is_learner: false,
            })
            .collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let local = members
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .ok_or_else(|| Error::Config("member vanished".into()))?;
        Ok(ClusterInfo {
            cluster_id: cluster_id(&ids),
            local,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A default `etcd` (name "default", peer http://localhost:2380, token
    /// "etcd-cluster") reports member 8e9e05c52164694d in cluster
    /// cdf818194e3a8c32.
    #[test]
    fn matches_etcd_default_ids() {
        let peers = vec!["http://localhost:2380".to_string()];
        let c = ClusterInfo::from_flags(
            "default",
            "default=http://localhost:2380",
            "etcd-cluster",
            &peers,
            &["http://localhost:2379".to_string()],
        )
        .unwrap();
        assert_eq!(c.local.id, 0x8e9e05c52164694d);
        assert_eq!(c.cluster_id, 0xcdf818194e3a8c32);
    }

    /// Observed from etcd 3.4.23 started with peer URL
    /// http://127.0.0.1:23802 and the default token.
    #[test]
    fn matches_etcd_ids_for_a_loopback_peer() {
        let peers = vec!["http://127.0.0.1:23802".to_string()];
        let id = member_id(&peers, "etcd-cluster");
        assert_eq!(id, 185828541645115251);
        assert_eq!(cluster_id(&[id]), 8140765981764738059);
    }

    #[test]
    fn bad_initial_cluster_is_an_error() {
        let peers = vec!["http://a:2380".to_string()];
        assert!(ClusterInfo::from_flags("x", "y=http://a:2380", "t", &peers, &[]).is_err());
        assert!(ClusterInfo::from_flags("x", "garbage", "t", &peers, &[]).is_err());
        assert!(ClusterInfo::from_flags("x", "x=http://b:2380", "t", &peers, &[]).is_err());
    }
}
