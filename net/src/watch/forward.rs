//! Watch streams whose client is connected to an executor other than the
//! hub's. That executor's handler hands the stream over as a
//! [`ForwardedWatch`] (two bounded channels, `Send`) and pumps the client's
//! messages through them; the hub's executor serves it with
//! [`serve_forwarded`] exactly like a local stream. The response channel is
//! bounded, so a slow remote client still only fills its own watchers'
//! buffers and is caught up from history.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_lite::StreamExt;

use crate::grpc::{
    Code, Handler, HandlerFuture, Metadata, RequestStream, ResponseSink, Router, Status,
};
use crate::proto::etcdserverpb as pb;

use super::hub::Hub;
use super::service::{run_stream, HistorySource, WatchRequests, WatchResponses, WATCH_METHOD};

/// Messages in flight each way between the two executors.
pub const FORWARD_BUFFER: usize = 64;

/// One watch stream crossing executors.
pub struct ForwardedWatch {
    pub requests: mpsc::Receiver<pb::WatchRequest>,
    /// Responses, then the call's final status if it failed.
    pub responses: mpsc::Sender<Result<pb::WatchResponse, Status>>,
}

/// Hands a [`ForwardedWatch`] to the hub's executor (over the server's
/// channel mesh), which must run [`serve_forwarded`] for it.
pub type WatchForwarder =
    Rc<dyn Fn(ForwardedWatch) -> Pin<Box<dyn Future<Output = Result<(), Status>>>>>;

fn closed() -> Status {
    Status::new(Code::Cancelled, "watch stream closed")
}

async fn send_to<T>(tx: &mut mpsc::Sender<T>, msg: T) -> Result<(), Status> {
    poll_fn(|cx| tx.poll_ready(cx))
        .await
        .map_err(|_| closed())?;
    tx.start_send(msg).map_err(|_| closed())
}

impl WatchRequests for mpsc::Receiver<pb::WatchRequest> {
    async fn next_request(&mut self) -> Result<Option<pb::WatchRequest>, Status> {
        Ok(self.next().await)
    }
}

impl WatchResponses for mpsc::Sender<Result<pb::WatchResponse, Status>> {
    async fn send_response(&mut self, resp: &pb::WatchResponse) -> Result<(), Status> {
        send_to(self, Ok(resp.clone())).await
    }
}

/// Serves a forwarded stream on the hub's executor; spawn it there.
pub async fn serve_forwarded(
    hub: Rc<RefCell<Hub>>,
    source: Rc<dyn HistorySource>,
    call: ForwardedWatch,
) {
    let mut status_tx = call.responses.clone();
    if let Err(status) = run_stream(hub, source, call.requests, call.responses).await {
        let _ = send_to(&mut status_tx, Err(status)).await;
    }
}

/// Registers the Watch method on an executor without the hub: every call
/// is handed to `forward`.
pub fn register_forwarding(router: &mut Router, forward: WatchForwarder) {
    router.add(WATCH_METHOD, Rc::new(ForwardingHandler { forward }));
}

struct ForwardingHandler {
    forward: WatchForwarder,
}

impl Handler for ForwardingHandler {
    fn call(
        &self,
        _meta: Metadata,
        requests: RequestStream,
        responses: ResponseSink,
    ) -> HandlerFuture {
        let forward = self.forward.clone();
        Box::pin(async move {
            let (req_tx, req_rx) = mpsc::channel(FORWARD_BUFFER);
            let (resp_tx, resp_rx) = mpsc::channel(FORWARD_BUFFER);
            forward(ForwardedWatch {
                requests: req_rx,
                responses: resp_tx,
            })
            .await?;
            futures_lite::future::or(
                pump_requests(requests, req_tx),
                pump_responses(resp_rx, responses),
            )
            .await
        })
    }
}

async fn pump_requests(
    mut requests: RequestStream,
    mut tx: mpsc::Sender<pb::WatchRequest>,
) -> Result<(), Status> {
    while let Some(req) = requests.next::<pb::WatchRequest>().await? {
        send_to(&mut tx, req).await?;
    }
    // Closing the channel tells the hub the client half-closed; the call
    // ends when the hub side has sent what it had.
    drop(tx);
    std::future::pending().await
}

async fn pump_responses(
    mut rx: mpsc::Receiver<Result<pb::WatchResponse, Status>>,
    mut responses: ResponseSink,
) -> Result<(), Status> {
    while let Some(msg) = rx.next().await {
        responses.send(&msg?).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{History, HubConfig};
    use basalt_engine::mvcc::{Event, EventKind, KeyValue, MvccError};

    struct Empty;
    impl History for Empty {
        fn current_revision(&self) -> i64 {
            1
        }
        fn compact_revision(&self) -> i64 {
            0
        }
        fn events_from(
            &self,
            _: &[u8],
            _: &[u8],
            _: i64,
            _: usize,
        ) -> Result<Vec<Event>, MvccError> {
            Ok(Vec::new())
        }
    }

    /// The hub side of a forwarded stream, driven on a glommio executor:
    /// created response, a published event, then the stream ends when the
    /// remote side closes its request channel.
    #[test]
    fn forwarded_stream_is_served_like_a_local_one() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(async {
                let hub = Rc::new(RefCell::new(Hub::new(
                    HubConfig::default(),
                    pb::ResponseHeader::default(),
                )));
                let source: Rc<dyn HistorySource> = Rc::new(RefCell::new(Empty));
                let (mut req_tx, req_rx) = mpsc::channel(FORWARD_BUFFER);
                let (resp_tx, mut resp_rx) = mpsc::channel(FORWARD_BUFFER);
                let served = glommio::spawn_local(serve_forwarded(
                    hub.clone(),
                    source,
                    ForwardedWatch {
                        requests: req_rx,
                        responses: resp_tx,
                    },
                ));
                let create = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: b"k".to_vec(),
                            ..Default::default()
                        },
                    )),
                };
                send_to(&mut req_tx, create).await.unwrap();
                let created = resp_rx.next().await.unwrap().unwrap();
                assert!(created.created);
                let put = Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: b"k".to_vec(),
                        mod_revision: 2,
                        ..Default::default()
                    },
                    prev_kv: None,
                };
                hub.borrow_mut().publish(2, &[put]);
                let r = resp_rx.next().await.unwrap().unwrap();
                assert_eq!(r.events.len(), 1);
                drop(req_tx);
                served.await;
                assert!(resp_rx.next().await.is_none(), "stream ended");
                assert_eq!(hub.borrow().stream_count(), 0);
            });
    }
}
