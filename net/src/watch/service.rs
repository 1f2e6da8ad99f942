//! `/etcdserverpb.Watch/Watch`: one bidirectional call is one hub stream.
//!
//! The call runs two loops on the hub: one feeds the client's create,
//! cancel and progress requests in, the other sends the stream's queued
//! responses out (fragmenting where asked) and, whenever the client has
//! taken some, lets lagging watchers catch up from history. Sending waits
//! for HTTP/2 flow control, so a slow client only ever fills its own
//! watchers' buffers.

use std::cell::{Cell, Ref, RefCell};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::Poll;

use crate::grpc::{Handler, HandlerFuture, Metadata, RequestStream, ResponseSink, Router, Status};
use crate::proto::etcdserverpb as pb;

use super::fragment::fragments;
use super::hub::{History, Hub, StreamId};

pub const WATCH_METHOD: &str = "/etcdserverpb.Watch/Watch";

/// Gives the watch service read access to history (the sequencer's store).
/// The borrow is never held across an await.
pub trait HistorySource {
    fn history(&self) -> Ref<'_, dyn History>;
}

impl<T: History + 'static> HistorySource for RefCell<T> {
    fn history(&self) -> Ref<'_, dyn History> {
        Ref::map(self.borrow(), |h| h as &dyn History)
    }
}

/// Registers the Watch method. The handler must run on the hub's executor.
pub fn register(router: &mut Router, hub: Rc<RefCell<Hub>>, source: Rc<dyn HistorySource>) {
    router.add(WATCH_METHOD, Rc::new(WatchHandler { hub, source }));
}

/// Sends the periodic progress notifications (see
/// [`Hub::progress_tick`]) until the hub or the history is dropped. Spawn
/// it on the hub's executor. It holds neither strongly, so a stopped
/// server's store is released even while the task sleeps.
pub async fn run_progress_notifier(hub: Weak<RefCell<Hub>>, source: Weak<dyn HistorySource>) {
    loop {
        let Some(interval) = hub.upgrade().map(|h| h.borrow().config().progress_interval) else {
            return;
        };
        glommio::timer::sleep(interval).await;
        let (Some(hub), Some(source)) = (hub.upgrade(), source.upgrade()) else {
            return;
        };
        let history = source.history();
        hub.borrow_mut().progress_tick(&*history);
    }
}

struct WatchHandler {
    hub: Rc<RefCell<Hub>>,
    source: Rc<dyn HistorySource>,
}

impl Handler for WatchHandler {
    fn call(
        &self,
        meta: Metadata,
        requests: RequestStream,
        responses: ResponseSink,
    ) -> HandlerFuture {
        let hub = self.hub.clone();
        let source = self.source.clone();
        Box::pin(serve(hub, source, meta, requests, responses))
    }
}

/// Closes the hub stream however the call ends (client reset included).
struct OpenStream {
    hub: Rc<RefCell<Hub>>,
    sid: StreamId,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Ok(mut hub) = self.hub.try_borrow_mut() {
            hub.close_stream(self.sid);
        }
    }
}

/// Where a hub stream's requests come from: the gRPC call, or a channel
/// from the executor that holds the client's connection.
pub(super) trait WatchRequests {
    async fn next_request(&mut self) -> Result<Option<pb::WatchRequest>, Status>;
}

/// Where a hub stream's responses go.
pub(super) trait WatchResponses {
    async fn send_response(&mut self, resp: &pb::WatchResponse) -> Result<(), Status>;
}

impl WatchRequests for RequestStream {
    async fn next_request(&mut self) -> Result<Option<pb::WatchRequest>, Status> {
        self.next::<pb::WatchRequest>().await
    }
}

impl WatchResponses for ResponseSink {
    async fn send_response(&mut self, resp: &pb::WatchResponse) -> Result<(), Status> {
        self.send(resp).await
    }
}

async fn serve(
    hub: Rc<RefCell<Hub>>,
    source: Rc<dyn HistorySource>,
    meta: Metadata,
    requests: RequestStream,
    responses: ResponseSink,
) -> Result<(), Status> {
    // `hasleader: true` is served by `require_leader`, wrapped around this.
    run_stream(hub, source, Some(meta), requests, responses).await
}

/// Serves one watch stream on the hub until the client goes away, or has
/// half-closed and everything queued went out.
pub(super) async fn run_stream(
    hub: Rc<RefCell<Hub>>,
    source: Rc<dyn HistorySource>,
    meta: Option<Metadata>,
    requests: impl WatchRequests,
    responses: impl WatchResponses,
) -> Result<(), Status> {
    let sid = hub.borrow_mut().open_stream();
    let _open = OpenStream {
        hub: hub.clone(),
        sid,
    };
    let half_closed = Cell::new(false);
    futures_lite::future::or(
        receive(&hub, &*source, sid, meta.as_ref(), requests, &half_closed),
        send(&hub, &*source, sid, responses, &half_closed),
    )
    .await
}

async fn receive(
    hub: &RefCell<Hub>,
    source: &dyn HistorySource,
    sid: StreamId,
    meta: Option<&Metadata>,
    mut requests: impl WatchRequests,
    half_closed: &Cell<bool>,
) -> Result<(), Status> {
    let authorize = hub.borrow().config().authorize.clone();
    loop {
        poll_fn(|cx| hub.borrow_mut().poll_room(sid, cx)).await;
        let Some(req) = requests.next_request().await? else {
            break;
        };
        if let (Some(auth), Some(meta), Some(pb::watch_request::RequestUnion::CreateRequest(c))) =
            (&authorize, meta, &req.request_union)
        {
            if let Err(reason) = (auth.0)(meta, c) {
                let history = source.history();
                hub.borrow_mut().refuse(sid, reason, &*history);
                continue;
            }
        }
        let history = source.history();
        hub.borrow_mut().handle(sid, req, &*history);
    }
    // The client will send nothing more: the call ends once what is
    // already queued has gone out.
    half_closed.set(true);
    hub.borrow_mut().wake(sid);
    std::future::pending().await
}

async fn send(
    hub: &RefCell<Hub>,
    source: &dyn HistorySource,
    sid: StreamId,
    mut responses: impl WatchResponses,
    half_closed: &Cell<bool>,
) -> Result<(), Status> {
    loop {
        let more = {
            let history = source.history();
            hub.borrow_mut().catch_up(sid, &*history)
        };
        let next = hub.borrow_mut().pop(sid);
        let out = match next {
            Some(out) => out,
            None if more => {
                // Catch-up of a long history goes step by step so other
                // tasks (the apply loop) run in between.
                futures_lite::future::yield_now().await;
                continue;
            }
            None => {
                let waited = poll_fn(|cx| {
                    if half_closed.get() {
                        return Poll::Ready(Waited::Closed);
                    }
                    let mut hub = hub.borrow_mut();
                    if hub.take_catch_up_due(sid) {
                        return Poll::Ready(Waited::CatchUp);
                    }
                    hub.poll_pop(sid, cx)
                        .map(|out| out.map_or(Waited::Closed, Waited::Response))
                })
                .await;
                match waited {
                    Waited::Response(out) => out,
                    Waited::CatchUp => continue,
                    Waited::Closed => return Ok(()),
                }
            }
        };
        if out.fragment {
            let max = hub.borrow().config().max_response_bytes;
            for piece in fragments(out.response, max) {
                responses.send_response(&piece).await?;
            }
        } else {
            responses.send_response(&out.response).await?;
        }
    }
}

/// What a stream's task woke for.
enum Waited {
    Response(super::hub::Outgoing),
    CatchUp,
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;
    use crate::watch::HubConfig;
    use basalt_engine::mvcc::{Event, EventKind, KeyValue, MvccError};
    use futures_channel::mpsc;
    use futures_lite::StreamExt;

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

    impl WatchRequests for mpsc::Receiver<pb::WatchRequest> {
        async fn next_request(&mut self) -> Result<Option<pb::WatchRequest>, Status> {
            Ok(self.next().await)
        }
    }

    impl WatchResponses for mpsc::UnboundedSender<pb::WatchResponse> {
        async fn send_response(&mut self, resp: &pb::WatchResponse) -> Result<(), Status> {
            self.unbounded_send(resp.clone())
                .map_err(|_| Status::new(Code::Cancelled, "closed"))
        }
    }

    /// The stream loops on a glommio executor: created response, a
    /// published event, and the end of the stream (hub stream closed) once
    /// the client half-closes.
    #[test]
    fn stream_serves_requests_and_ends_after_half_close() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(async {
                let hub = Rc::new(RefCell::new(Hub::new(
                    HubConfig::default(),
                    pb::ResponseHeader::default(),
                )));
                let source: Rc<dyn HistorySource> = Rc::new(RefCell::new(Empty));
                let (mut req_tx, req_rx) = mpsc::channel(8);
                let (resp_tx, mut resp_rx) = mpsc::unbounded();
                let served =
                    glommio::spawn_local(run_stream(hub.clone(), source, None, req_rx, resp_tx));
                let create = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: b"k".to_vec(),
                            ..Default::default()
                        },
                    )),
                };
                req_tx.try_send(create).unwrap();
                let created = resp_rx.next().await.unwrap();
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
                let r = resp_rx.next().await.unwrap();
                assert_eq!(r.events.len(), 1);
                drop(req_tx);
                served.await.unwrap();
                assert!(resp_rx.next().await.is_none(), "stream ended");
                assert_eq!(hub.borrow().stream_count(), 0);
            });
    }
}
