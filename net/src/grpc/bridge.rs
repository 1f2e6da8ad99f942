//! Calls crossing executors. A connection accepted by an executor that does
//! not serve a method itself (Watch and Lease live on the sequencer's
//! executor) forwards the whole call: request messages one way, framed
//! response messages the other, through bounded channels, and the final
//! status at the end. The serving executor runs its ordinary handler on a
//! channel-backed [`RequestStream`] / [`ResponseSink`], so every method works
//! from every executor, unary or streaming.

use std::future::{pending, poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_lite::{future, StreamExt};

use super::call::{Metadata, RequestStream, ResponseSink};
use super::router::{Handler, HandlerFuture, Router};
use super::status::{Code, Status};

/// Messages buffered each way per forwarded call (backpressure beyond).
pub const BRIDGE_BUFFER: usize = 64;

/// One call handed to another executor. `Send`.
pub struct ForwardedCall {
    pub meta: Metadata,
    pub requests: mpsc::Receiver<Bytes>,
    pub responses: mpsc::Sender<Bytes>,
    pub done: oneshot::Sender<Status>,
}

/// Delivers a [`ForwardedCall`] to the executor that serves it.
pub type CallForwarder =
    Rc<dyn Fn(ForwardedCall) -> Pin<Box<dyn Future<Output = Result<(), Status>>>>>;

fn closed() -> Status {
    Status::new(Code::Unavailable, "etcdserver: server stopped")
}

/// A handler that forwards every call it gets through `forward`.
pub fn forwarding_handler(forward: CallForwarder) -> Rc<dyn Handler> {
    Rc::new(
        move |meta: Metadata, mut requests: RequestStream, mut responses: ResponseSink| {
            let forward = forward.clone();
            Box::pin(async move {
                let (mut req_tx, req_rx) = mpsc::channel::<Bytes>(BRIDGE_BUFFER);
                let (resp_tx, mut resp_rx) = mpsc::channel::<Bytes>(BRIDGE_BUFFER);
                let (done_tx, done_rx) = oneshot::channel();
                forward(ForwardedCall {
                    meta,
                    requests: req_rx,
                    responses: resp_tx,
                    done: done_tx,
                })
                .await?;
                let inbound = async move {
                    while let Some(m) = requests.next_bytes().await? {
                        if poll_fn(|cx| req_tx.poll_ready(cx)).await.is_err()
                            || req_tx.start_send(m).is_err()
                        {
                            break; // the serving side finished
                        }
                    }
                    drop(req_tx);
                    // The client half-closed: now only the outbound side
                    // decides when the call ends.
                    pending::<Result<(), Status>>().await
                };
                let outbound = async move {
                    while let Some(framed) = resp_rx.next().await {
                        responses.send_framed(framed).await?;
                    }
                    match done_rx.await {
                        Ok(s) if s.code == Code::Ok => Ok(()),
                        Ok(s) => Err(s),
                        Err(_) => Err(closed()),
                    }
                };
                future::or(outbound, inbound).await
            }) as HandlerFuture
        },
    )
}

/// Serves a forwarded call with `router`'s handler; the status goes back
/// through `done`.
pub async fn serve_forwarded(router: &Router, call: ForwardedCall) {
    let ForwardedCall {
        meta,
        requests,
        responses,
        done,
    } = call;
    let status = match router.route(&meta.path) {
        Err(s) => s,
        Ok(handler) => {
            let result = handler
                .call(
                    meta,
                    RequestStream::from_channel(requests),
                    ResponseSink::from_channel(responses),
                )
                .await;
            match result {
                Ok(()) => Status::ok(),
                Err(s) => s,
            }
        }
    };
    let _ = done.send(status);
}
