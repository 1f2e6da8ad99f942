//! `/metrics`, `/health` and `/version` on the client port, beside gRPC
//! and the JSON gateway, as etcd serves them (Prometheus configs and
//! `curl http://127.0.0.1:2379/metrics` rely on it).
//!
//! The answers need the sequencer's state and disk histograms, which live
//! on the sequencer's executor, while a connection may land on any
//! executor. So the request goes through the router like a gRPC call, to
//! the internal method [`CLIENT_HTTP_PATH`]: the sequencer's executor
//! registers it ([`super::MetricsServer::attach`]) and every other executor
//! forwards it there with its other sequencer-only methods. The connection
//! itself (reading the request, writing the answer) stays where it was
//! accepted.

use std::rc::Rc;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_lite::StreamExt;
use http::HeaderMap;
use prost::Message;

use super::endpoint::{Endpoint, Listener};
use super::http1::{text, Response};
use crate::grpc::{
    unary, Code, Handler, Metadata, RequestStream, ResponseSink, Router, Status, PREFIX_LEN,
};

/// The internal method answering client-port HTTP requests. Its request is
/// `"METHOD /path"` (a protobuf `StringValue`), its reply an
/// [`HttpAnswer`].
pub const CLIENT_HTTP_PATH: &str = "/basalt.internal.ClientHttp/Get";

/// An HTTP answer as it crosses executors.
#[derive(Clone, PartialEq, prost::Message)]
struct HttpAnswer {
    #[prost(uint32, tag = "1")]
    status: u32,
    #[prost(string, tag = "2")]
    content_type: String,
    #[prost(string, tag = "3")]
    body: String,
}

/// The handler behind [`CLIENT_HTTP_PATH`], on the sequencer's executor.
pub fn client_http_handler(endpoint: Rc<Endpoint>) -> Rc<dyn Handler> {
    unary(move |request: String, _: Metadata| {
        let endpoint = endpoint.clone();
        async move {
            let (method, path) = request.split_once(' ').ok_or_else(|| {
                Status::new(Code::InvalidArgument, "basalt: malformed HTTP request")
            })?;
            let r = endpoint.route(method, path, Listener::Client).await;
            Ok(HttpAnswer {
                status: u32::from(r.status),
                content_type: r.content_type,
                body: r.body,
            })
        }
    })
}

/// The answer to a plain HTTP request on the client port that is not the
/// gateway's (`GET /metrics`): [`CLIENT_HTTP_PATH`] run through `router`
/// (here or forwarded). The connection is served by [`crate::gateway`].
pub async fn answer(router: &Router, method: &str, path: &str) -> Response {
    let handler = match router.route(CLIENT_HTTP_PATH) {
        Ok(h) => h,
        Err(_) => return text(404, "404 page not found\n"),
    };
    let (mut req_tx, req_rx) = mpsc::channel::<Bytes>(1);
    let (resp_tx, mut resp_rx) = mpsc::channel::<Bytes>(1);
    // A fresh channel with room for one message: this cannot fail.
    let _ = req_tx.try_send(Bytes::from(format!("{method} {path}").encode_to_vec()));
    drop(req_tx);
    let meta = Metadata {
        path: CLIENT_HTTP_PATH.to_owned(),
        headers: HeaderMap::new(),
        deadline: None,
    };
    let result = handler
        .call(
            meta,
            RequestStream::from_channel(req_rx),
            ResponseSink::from_channel(resp_tx),
        )
        .await;
    let framed = resp_rx.next().await;
    match (result, framed) {
        (Ok(()), Some(framed)) if framed.len() >= PREFIX_LEN => {
            match HttpAnswer::decode(&framed[PREFIX_LEN..]) {
                Ok(a) => Response {
                    status: u16::try_from(a.status).unwrap_or(500),
                    content_type: a.content_type,
                    body: a.body,
                },
                Err(e) => text(503, &format!("basalt: bad internal answer: {e}\n")),
            }
        }
        // The sequencer's executor does not serve HTTP (no metrics wired).
        (Err(s), _) if s.code == Code::Unimplemented => text(404, "404 page not found\n"),
        (Err(s), _) => text(503, &format!("{}\n", s.message)),
        (Ok(()), _) => text(503, "basalt: no internal answer\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::OnceCell;

    use futures_lite::future::block_on;

    use super::*;
    use crate::grpc::HandlerFuture;
    use crate::metrics::{DiskMetrics, ServerState};

    fn endpoint() -> Rc<Endpoint> {
        Rc::new(Endpoint {
            state: Box::new(|| Box::pin(async { ServerState::default() })),
            disk: Rc::new(DiskMetrics::default()),
            calls: OnceCell::new(),
            extensive: false,
        })
    }

    #[test]
    fn answers_through_the_router() {
        let mut router = Router::new();
        router.add(CLIENT_HTTP_PATH, client_http_handler(endpoint()));
        let r = block_on(answer(&router, "GET", "/version"));
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        assert!(r.body.starts_with(r#"{"etcdserver":"#), "{}", r.body);
        assert_eq!(block_on(answer(&router, "GET", "/livez")).body, "ok");
        assert_eq!(block_on(answer(&router, "DELETE", "/livez")).status, 405);
    }

    #[test]
    fn a_router_without_the_method_or_a_failing_one() {
        assert_eq!(
            block_on(answer(&Router::new(), "GET", "/metrics")).status,
            404
        );
        let mut router = Router::new();
        router.add(
            CLIENT_HTTP_PATH,
            Rc::new(|_: Metadata, _: RequestStream, _: ResponseSink| {
                Box::pin(async {
                    Err(Status::new(Code::Unavailable, "etcdserver: server stopped"))
                }) as HandlerFuture
            }),
        );
        let r = block_on(answer(&router, "GET", "/metrics"));
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "etcdserver: server stopped\n")
        );
    }
}
