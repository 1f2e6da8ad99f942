//! etcd's `--experimental-initial-corrupt-check`: a restarted member
//! compares its HashKV with every peer's before it serves a client, and
//! stops if a peer hashed the same revision, after the same compaction,
//! to another value (etcd: "found data inconsistency with peers").
//!
//! A new or joining member is not checked (it has nothing of its own yet),
//! nor is a peer that cannot answer: one that is down or behind (the
//! revision is in its future) or compacted past it is logged and skipped,
//! as etcd does. The peers answer over the peer port ([`PeerQuery::HashKv`])
//! where etcd calls their client URLs.

use basalt_engine::etcdfmt::HashKv;

use crate::peer::{PeerAnswer, PeerQuery};

use super::Sequencer;

/// What one peer said of the revision the restarted member hashed.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerVerdict {
    Agrees,
    /// Same revision and compaction, another hash: corruption.
    Differs,
    /// Another compaction revision: the hashes cover other versions.
    OtherCompaction,
    /// No comparable answer (down, behind, compacted, …), and why.
    Unknown(String),
}

/// Judges `peer`'s answer against the member's own hash.
pub fn judge(own: &HashKv, answer: &Result<PeerAnswer, String>) -> PeerVerdict {
    match answer {
        Ok(PeerAnswer::HashKv {
            compact_revision,
            hash,
            ..
        }) => {
            if *hash == own.hash {
                PeerVerdict::Agrees
            } else if *compact_revision == own.compact_revision {
                PeerVerdict::Differs
            } else {
                PeerVerdict::OtherCompaction
            }
        }
        Ok(PeerAnswer::Failed { message }) => PeerVerdict::Unknown(message.clone()),
        Ok(other) => PeerVerdict::Unknown(format!("unexpected answer {other:?}")),
        Err(e) => PeerVerdict::Unknown(e.clone()),
    }
}

impl Sequencer {
    /// Runs the initial check if it is asked for and this member restarted;
    /// false (with the member's failure set, so the process stops) if a
    /// peer disagrees.
    pub async fn initial_corruption_check(&self) -> bool {
        if !self.cfg.initial_corrupt_check || !self.restarted {
            return true;
        }
        let me = self.driver.status().id;
        let wait = self.cfg.timing.request_timeout();
        tracing::info!(
            local_member_id = format!("{me:x}"),
            timeout = ?wait,
            "starting initial corruption check"
        );
        let view = self.store.borrow().read_view();
        let own = glommio::executor()
            .spawn_blocking(move || basalt_engine::etcdfmt::hash_kv(&view, 0))
            .await;
        let own = match own {
            Ok(h) => h,
            Err(e) => {
                let why = format!("{me:x} failed to fetch hash ({e})");
                tracing::error!("{why}");
                let _ = self.cfg.failed.set(why);
                return false;
            }
        };
        let peers: Vec<u64> = {
            let meta = self.meta.borrow();
            let cs = &meta.conf_state;
            cs.voters
                .iter()
                .chain(&cs.learners)
                .copied()
                .filter(|&id| id != me)
                .collect()
        };
        let transport = self.transport.borrow().clone();
        let mut mismatches = 0;
        for peer in peers {
            let answer = match &transport {
                Some(t) => {
                    let query = PeerQuery::HashKv {
                        revision: own.hash_revision,
                    };
                    t.ask(peer, query, wait).await
                }
                None => Err("no peer transport".into()),
            };
            let remote = match &answer {
                Ok(PeerAnswer::HashKv {
                    revision,
                    compact_revision,
                    hash,
                }) => Some((*revision, *compact_revision, *hash)),
                _ => None,
            };
            match judge(&own, &answer) {
                PeerVerdict::Agrees => {}
                PeerVerdict::Differs => {
                    mismatches += 1;
                    tracing::warn!(
                        local_member_id = format!("{me:x}"),
                        local_member_revision = own.hash_revision,
                        local_member_compact_revision = own.compact_revision,
                        local_member_hash = own.hash,
                        remote_peer_id = format!("{peer:x}"),
                        remote = ?remote,
                        "found different hash values from remote peer"
                    );
                }
                PeerVerdict::OtherCompaction => tracing::warn!(
                    local_member_id = format!("{me:x}"),
                    local_member_compact_revision = own.compact_revision,
                    remote_peer_id = format!("{peer:x}"),
                    remote = ?remote,
                    "found different compact revision values from remote peer"
                ),
                PeerVerdict::Unknown(why) => tracing::warn!(
                    local_member_id = format!("{me:x}"),
                    remote_peer_id = format!("{peer:x}"),
                    error = %why,
                    "cannot fetch hash from remote peer"
                ),
            }
        }
        if mismatches > 0 {
            let why = format!("{me:x} found data inconsistency with peers");
            tracing::error!("{why}");
            let _ = self.cfg.failed.set(why);
            return false;
        }
        tracing::info!(
            local_member_id = format!("{me:x}"),
            "initial corruption checking passed; no corruption"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> HashKv {
        HashKv {
            hash: 7,
            compact_revision: 3,
            hash_revision: 10,
        }
    }

    fn answered(compact_revision: i64, hash: u32) -> Result<PeerAnswer, String> {
        Ok(PeerAnswer::HashKv {
            revision: 12,
            compact_revision,
            hash,
        })
    }

    /// etcd's rules: only a different hash after the same compaction is a
    /// mismatch. Fails if a peer that cannot compare counts against us.
    #[test]
    fn only_the_same_compaction_with_another_hash_is_corruption() {
        assert_eq!(judge(&own(), &answered(3, 7)), PeerVerdict::Agrees);
        assert_eq!(judge(&own(), &answered(3, 8)), PeerVerdict::Differs);
        assert_eq!(judge(&own(), &answered(5, 8)), PeerVerdict::OtherCompaction);
        let future = Ok(PeerAnswer::Failed {
            message: "mvcc: required revision is a future revision".into(),
        });
        assert!(matches!(
            judge(&own(), &future),
            PeerVerdict::Unknown(m) if m.contains("future")
        ));
        assert!(matches!(
            judge(&own(), &Err("connection refused".into())),
            PeerVerdict::Unknown(_)
        ));
    }
}
