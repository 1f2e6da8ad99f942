//! Each shard tree is written by the executor that owns it.
//!
//! A checkpoint is split ([`CheckpointTask::split`]) into one commit per
//! shard tree and the index tree's commit. The sequencer hands shard `i`'s
//! commit to executor `i % executors`, which runs it on its own blocking
//! thread; all shards commit at the same time, and the index tree commits
//! once every shard's commit is back (the order recovery relies on).
//!
//! [`CheckpointTask::split`]: basalt_engine::mvcc::CheckpointTask::split

use basalt_engine::mvcc::{ShardCommit, ShardCommitted};
use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;

/// A shard commit and where its result goes.
type Job = (ShardCommit, oneshot::Sender<ShardCommitted>);

/// What executor `i` serves shard commits from ([`serve`]).
pub struct ShardWorker(mpsc::UnboundedReceiver<Job>);

/// The sequencer's side: one sender per executor other than its own.
#[derive(Clone)]
pub struct ShardWorkers(Vec<mpsc::UnboundedSender<Job>>);

impl std::fmt::Debug for ShardWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardWorkers({} executors)", self.0.len() + 1)
    }
}

impl ShardWorkers {
    /// The workers of `executors` executors: the sequencer's (0) runs its
    /// shards' commits itself; `workers[i - 1]` is for executor `i`.
    pub fn new(executors: usize) -> (ShardWorkers, Vec<ShardWorker>) {
        let (senders, workers) = (1..executors.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded();
                (tx, ShardWorker(rx))
            })
            .unzip();
        (ShardWorkers(senders), workers)
    }

    /// Lets every worker's [`serve`] loop end once its queue is empty.
    pub fn close(&self) {
        for tx in &self.0 {
            tx.close_channel();
        }
    }

    /// Runs every part at once, each on its owner's blocking thread, and
    /// returns them all. A part whose executor no longer takes work runs
    /// on this executor's blocking thread instead; a part whose result
    /// never comes back (its executor died) is left out, which
    /// `IndexCommit::finish` reports.
    pub async fn run(&self, parts: Vec<ShardCommit>) -> Vec<ShardCommitted> {
        let executors = self.0.len() + 1;
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for part in parts {
            let owner = part.shard() % executors;
            if owner == 0 {
                local.push(part);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            match self.0[owner - 1].unbounded_send((part, tx)) {
                Ok(()) => remote.push(rx),
                Err(refused) => local.push(refused.into_inner().0),
            }
        }
        let mut done = Vec::new();
        for part in local {
            done.push(glommio::executor().spawn_blocking(move || part.run()).await);
        }
        for rx in remote {
            match rx.await {
                Ok(committed) => done.push(committed),
                Err(_) => tracing::error!("a shard commit's executor stopped before answering"),
            }
        }
        done
    }
}

/// Executor `i`'s loop: runs each shard commit it is handed on this
/// executor's blocking thread, one at a time, until the sequencer closes
/// the queue ([`ShardWorkers::close`]).
pub async fn serve(worker: ShardWorker) {
    let mut jobs = worker.0;
    while let Some((part, reply)) = jobs.next().await {
        let committed = glommio::executor().spawn_blocking(move || part.run()).await;
        let _ = reply.send(committed);
    }
}
