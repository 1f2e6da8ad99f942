//! How a connection's executor reaches the sequencer: directly when it is
//! the sequencer's own executor (no hop), else over a glommio channel mesh
//! to executor 0 with a oneshot for the reply.

use std::rc::Rc;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{MeshBuilder, Partial, Receivers, Senders};

use crate::error::Error;
use crate::grpc::Status;

use super::command::{Command, Reply};
use super::Sequencer;

/// One forwarded command and where its answer goes.
pub struct Envelope {
    cmd: Command,
    reply: oneshot::Sender<Result<Reply, Status>>,
}

/// The mesh joining every executor (producers) to the sequencer (the one
/// consumer).
pub type SequencerMesh = MeshBuilder<Envelope, Partial>;

/// Commands in flight per executor before senders wait (backpressure).
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone)]
pub enum SequencerClient {
    Local(Rc<Sequencer>),
    Remote(Rc<Senders<Envelope>>),
}

impl SequencerClient {
    pub async fn call(&self, cmd: Command) -> Result<Reply, Status> {
        match self {
            SequencerClient::Local(seq) => seq.execute(cmd).await,
            SequencerClient::Remote(senders) => {
                let (tx, rx) = oneshot::channel();
                // The sequencer is the only consumer of the mesh: index 0.
                if senders
                    .send_to(0, Envelope { cmd, reply: tx })
                    .await
                    .is_err()
                {
                    return Err(Error::Stopped.into());
                }
                rx.await.unwrap_or_else(|_| Err(Error::Stopped.into()))
            }
        }
    }

    /// The sequencer itself when it lives on this executor.
    pub fn local(&self) -> Option<&Rc<Sequencer>> {
        match self {
            SequencerClient::Local(seq) => Some(seq),
            SequencerClient::Remote(_) => None,
        }
    }
}

/// Runs on the sequencer's executor: executes every forwarded command as
/// its own task, so a slow write never blocks reads behind it.
pub fn serve_mesh(seq: Rc<Sequencer>, mut receivers: Receivers<Envelope>) {
    for (_, receiver) in receivers.streams() {
        let seq = seq.clone();
        glommio::spawn_local(async move {
            while let Some(env) = receiver.recv().await {
                let seq = seq.clone();
                glommio::spawn_local(async move {
                    let result = seq.execute(env.cmd).await;
                    let _ = env.reply.send(result);
                })
                .detach();
            }
        })
        .detach();
    }
}
