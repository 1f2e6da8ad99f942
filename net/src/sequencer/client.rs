//! How a connection's executor reaches the sequencer: directly when it is
//! the sequencer's own executor (no hop), else over a glommio channel mesh
//! to executor 0 with a oneshot for the reply.

use std::rc::Rc;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{MeshBuilder, Partial, Receivers, Senders};

use crate::error::Error;
use crate::grpc::{serve_forwarded, ForwardedCall, Router, Status};

use super::command::{Command, Reply};
use super::Sequencer;

/// What crosses the mesh to the sequencer's executor.
pub enum Envelope {
    /// One command and where its answer goes.
    Command {
        cmd: Command,
        reply: oneshot::Sender<Result<Reply, Status>>,
    },
    /// A whole gRPC call for a method only the sequencer's executor
    /// serves (Watch, Lease).
    Call(ForwardedCall),
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
                let env = Envelope::Command { cmd, reply: tx };
                if senders.send_to(0, env).await.is_err() {
                    return Err(Error::Stopped.into());
                }
                rx.await.unwrap_or_else(|_| Err(Error::Stopped.into()))
            }
        }
    }

    /// Hands a whole call to the sequencer's executor (see
    /// [`crate::grpc::forwarding_handler`]); only for `Remote`.
    pub async fn forward_call(&self, call: ForwardedCall) -> Result<(), Status> {
        match self {
            SequencerClient::Local(_) => Err(Status::new(
                crate::grpc::Code::Unimplemented,
                format!("no handler for {}", call.meta.path),
            )),
            SequencerClient::Remote(senders) => senders
                .send_to(0, Envelope::Call(call))
                .await
                .map_err(|_| Error::Stopped.into()),
        }
    }
}

/// Runs on the sequencer's executor: executes every forwarded command and
/// call as its own task, so a slow write never blocks reads behind it.
/// Calls are served by `router`, this executor's own method table.
pub fn serve_mesh(seq: Rc<Sequencer>, router: Rc<Router>, mut receivers: Receivers<Envelope>) {
    for (_, receiver) in receivers.streams() {
        let (seq, router) = (seq.clone(), router.clone());
        glommio::spawn_local(async move {
            while let Some(env) = receiver.recv().await {
                let (seq, router) = (seq.clone(), router.clone());
                glommio::spawn_local(async move {
                    match env {
                        Envelope::Command { cmd, reply } => {
                            let _ = reply.send(seq.execute(cmd).await);
                        }
                        Envelope::Call(call) => serve_forwarded(&router, call).await,
                    }
                })
                .detach();
            }
        })
        .detach();
    }
}
