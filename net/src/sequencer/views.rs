//! What reads are served from: the store as of the sequencer's last applied
//! batch, published to every executor.
//!
//! After applying a batch, and before answering any request of it, the
//! sequencer takes a [`ReadView`] (O(1), see `basalt_engine::mvcc::view`)
//! and publishes it here. A Range or read-only Txn on any executor loads
//! the latest view and reads every shard file from its own core: no hop to
//! the sequencer. That stays linearizable on one member: a write is
//! acknowledged only after the view holding it was published, so a read
//! that starts after the acknowledgement loads that view or a newer one.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use basalt_engine::mvcc::ReadView;

use crate::error::Error;
use crate::grpc::Status;
use crate::proto::etcdserverpb as pb;

/// One published state: the view and what a response header needs.
pub struct Published {
    pub view: ReadView,
    /// A linearizable read may be answered from this view without a
    /// ReadIndex round: this member is the only voter, leads, and had
    /// applied everything committed when the view was published.
    pub reads_are_local: bool,
    /// The member knew a leader when this view was published (a view is
    /// published at every change of leader).
    pub has_leader: bool,
    /// This member is a learner (it serves only Status and serializable
    /// Range, as etcd's learners).
    pub is_learner: bool,
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
    /// The auth store as applied with this view.
    pub auth: Arc<crate::auth::AuthState>,
}

impl Published {
    /// The header of a response read from this view.
    pub fn header(&self) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: self.view.current_revision(),
            raft_term: self.raft_term,
        }
    }
}

/// The slot every executor reads the latest [`Published`] from; cloning
/// shares it.
#[derive(Clone, Default)]
pub struct PublishedViews(Arc<ArcSwapOption<Published>>);

impl std::fmt::Debug for PublishedViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let applied = self.0.load().as_ref().map(|p| p.view.applied_index());
        f.debug_struct("PublishedViews")
            .field("applied_index", &applied)
            .finish()
    }
}

impl PublishedViews {
    pub fn publish(&self, published: Published) {
        self.0.store(Some(Arc::new(published)));
    }

    /// The latest view; held by a long response, it stays as it was.
    /// Unavailable only before the sequencer opened the store (executors
    /// start serving after that) or if it failed to.
    pub fn latest(&self) -> Result<Arc<Published>, Status> {
        self.0.load_full().ok_or_else(|| Error::Stopped.into())
    }
}
