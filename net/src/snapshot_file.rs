//! Snapshot files `basalt --restore-snapshot` reads.
//!
//! Maintenance.Snapshot streams etcd's own format (a bbolt database in
//! etcd's layout, then its SHA-256; see `basalt_engine::etcdfmt`), so a
//! file `etcdctl snapshot save` stores from basalt or from etcd is the
//! same kind of file. Restore tells the formats apart by their first page:
//! a bbolt meta page, or basalt's older framing below, which earlier
//! basalt versions streamed and which still restores.
//!
//! etcdctl only accepts a stream whose length is a multiple of 512 plus 32
//! (a page-aligned bbolt file followed by its SHA-256). basalt's store
//! snapshot was not page-aligned, so it was framed:
//!
//! ```text
//! [store snapshot][zero padding][store snapshot length: u64 LE][SHA-256 of all before]
//! ```
//!
//! with the padding chosen so the part before the hash is a multiple of 512.

use sha2::{Digest, Sha256};

use basalt_engine::etcdfmt;

use crate::error::Error;

const ALIGN: usize = 512;
const HASH_LEN: usize = 32;
const LEN_FIELD: usize = 8;

/// Frames a store snapshot for streaming.
pub fn wrap(store_snapshot: Vec<u8>) -> Vec<u8> {
    let len = store_snapshot.len();
    let body = (len + LEN_FIELD).div_ceil(ALIGN) * ALIGN;
    let mut out = store_snapshot;
    out.resize(body - LEN_FIELD, 0);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

/// The store snapshot inside a file written by `etcdctl snapshot save`
/// from basalt, after checking its length and hash.
pub fn unwrap(file: &[u8]) -> Result<&[u8], Error> {
    let bad = |why: &str| Error::SnapshotFile(why.to_owned());
    if file.len() < ALIGN + HASH_LEN || file.len() % ALIGN != HASH_LEN {
        return Err(bad("length is not a multiple of 512 plus a 32-byte hash"));
    }
    let (body, hash) = file.split_at(file.len() - HASH_LEN);
    if Sha256::digest(body).as_slice() != hash {
        return Err(bad("SHA-256 does not match: the file is damaged"));
    }
    let mut len = [0u8; LEN_FIELD];
    len.copy_from_slice(&body[body.len() - LEN_FIELD..]);
    let len = u64::from_le_bytes(len);
    if len > (body.len() - LEN_FIELD) as u64 {
        return Err(bad("store snapshot length exceeds the file"));
    }
    Ok(&body[..len as usize])
}

/// How `--restore-snapshot` reads a file.
#[derive(Debug, Clone, Default)]
pub struct RestoreFlags {
    /// etcd's `--skip-hash-check`: restore an etcd database without a
    /// SHA-256 trailer (one copied from a data dir), or whose trailer does
    /// not match.
    pub skip_hash_check: bool,
    /// The cluster the restored member founds, from `--name`,
    /// `--initial-cluster`, `--initial-cluster-token` and
    /// `--initial-advertise-peer-urls` (as `etcdctl snapshot restore` takes
    /// them): every member restored from the same file with the same flags
    /// starts as one cluster of them all, at the snapshot's state. `None`:
    /// a member of its own.
    pub cluster: Option<crate::member::ClusterInfo>,
}

/// Restores a snapshot file (etcd's format, from etcd or basalt, or
/// basalt's older one) into a new `data_dir` (which must not hold a member
/// yet), as `etcdctl snapshot restore` does for etcd. The server started
/// on it then continues from the snapshot's revision. On an error nothing
/// is left behind: the member directory (and the data dir, if this made
/// it) is removed, so no server starts on half a restore.
pub fn restore(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    flags: RestoreFlags,
) -> Result<String, Error> {
    let member = data_dir.join("member");
    if member.exists() {
        return Err(Error::SnapshotFile(format!(
            "{} already exists; restore into a new --data-dir",
            member.display()
        )));
    }
    let made_data_dir = !data_dir.exists();
    let cluster = flags.cluster.clone();
    let result = restore_into(file, data_dir, flags).and_then(|(what, auth)| {
        match &cluster {
            Some(cluster) => found_restored(data_dir, cluster, auth)?,
            None if auth != crate::auth::AuthState::default() => {
                tracing::warn!("the snapshot's users and roles are not restored without a cluster")
            }
            None => {}
        }
        Ok(what)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&member);
        if made_data_dir {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
    result
}

/// Records in the restored store the cluster it founds (every member of
/// `--initial-cluster` a voter), at the store's applied index, so each
/// member restored alike enters Raft at the same point with the same
/// membership.
fn found_restored(
    data_dir: &std::path::Path,
    cluster: &crate::member::ClusterInfo,
    auth: crate::auth::AuthState,
) -> Result<(), Error> {
    use basalt_engine::mvcc::{Store, StoreOptions};
    let mut store = Store::open(
        &crate::sequencer::store_dir(data_dir),
        StoreOptions::default(),
    )?;
    if store.applied_index() < basalt_raft::BOOTSTRAP_INDEX {
        store.skip(basalt_raft::BOOTSTRAP_INDEX);
    }
    let mut voters: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    voters.sort_unstable();
    let meta = crate::node::MemberMeta {
        applied_term: basalt_raft::BOOTSTRAP_TERM,
        cluster_id: cluster.cluster_id,
        member_id: cluster.local.id,
        conf_state: basalt_raft::ConfState {
            voters,
            ..basalt_raft::ConfState::default()
        },
        members: cluster.members.clone(),
        removed: Vec::new(),
        auth: std::sync::Arc::new(auth),
    };
    store.stage_member_meta(meta.encode());
    store.checkpoint()?;
    Ok(())
}

fn restore_into(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    flags: RestoreFlags,
) -> Result<(String, crate::auth::AuthState), Error> {
    let mut head = [0u8; 20];
    let n = std::fs::File::open(file)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::io(format!("reading snapshot {}", file.display()), e))?;
    let store_dir = crate::sequencer::store_dir(data_dir);
    if etcdfmt::is_etcd_db(&head[..n]) {
        let opts = etcdfmt::RestoreOptions {
            skip_hash_check: flags.skip_hash_check,
            ..Default::default()
        };
        let r = etcdfmt::restore(file, &store_dir, &opts)
            .map_err(|e| Error::SnapshotFile(format!("{}: {e}", file.display())))?;
        let auth = crate::auth::AuthState::from_etcd(&r.auth)?;
        let summary = format!(
            "etcd snapshot: revision {}, compacted at {}, {} versions, {} leases, {} users, {} roles{}{}",
            r.revision,
            r.compact_revision,
            r.summary.versions,
            r.summary.leases,
            auth.users.len(),
            auth.roles.len(),
            if r.hash_verified {
                ", SHA-256 verified"
            } else {
                ", SHA-256 not checked"
            },
            if r.summary.keys_without_their_lease > 0 {
                format!(
                    ", {} live keys named a lease the snapshot lacks (kept without it)",
                    r.summary.keys_without_their_lease
                )
            } else {
                String::new()
            }
        );
        return Ok((summary, auth));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| Error::io(format!("reading snapshot {}", file.display()), e))?;
    let mut store = unwrap(&bytes).map_err(|e| match e {
        Error::SnapshotFile(why) => Error::SnapshotFile(format!(
            "{}: neither an etcd database (no bbolt meta page) nor basalt's older format ({why})",
            file.display()
        )),
        other => other,
    })?;
    basalt_engine::mvcc::Store::restore_snapshot(&mut store, &store_dir)?;
    Ok((
        "basalt's older snapshot format".into(),
        crate::auth::AuthState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_length_is_what_etcdctl_expects_and_round_trips() {
        for n in [0usize, 1, 503, 504, 505, 512, 4096, 10_000] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let w = wrap(data.clone());
            assert_eq!(w.len() % 512, 32, "n={n}");
            assert_eq!(unwrap(&w).unwrap(), &data[..]);
        }
    }

    #[test]
    fn damage_is_detected() {
        let mut w = wrap(vec![7; 100]);
        w[3] ^= 1;
        assert!(unwrap(&w).is_err());
        assert!(unwrap(&w[..w.len() - 1]).is_err());
        assert!(unwrap(&[]).is_err());
    }
}
