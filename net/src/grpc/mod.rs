//! gRPC server directly on `h2` over glommio sockets.
//!
//! A client connection whose first bytes are not the HTTP/2 preface is
//! plain HTTP/1.x (the JSON gateway, a Prometheus scrape or `curl /health`,
//! which etcd
//! answers on its client port) and goes to
//! [`crate::gateway::serve_http1`]. Calls to the methods etcd
//! registers are counted per executor in [`CallMetrics`] (go-grpc-prometheus
//! semantics) when the router has [`Router::count_calls`].
//!
//! A call is routed by its `:path` to a [`Handler`], which gets the request
//! [`Metadata`], a [`RequestStream`] and a [`ResponseSink`] and returns the
//! final [`Status`] (written as `grpc-status`/`grpc-message` trailers).
//! [`unary`] and [`server_streaming`] adapt plain async functions; a
//! bidirectional method (Watch, LeaseKeepAlive) implements [`Handler`]
//! directly and may move the two halves into separate tasks:
//!
//! ```no_run
//! use std::rc::Rc;
//! use basalt_net::grpc::{HandlerFuture, Metadata, RequestStream, ResponseSink, Router};
//! use basalt_net::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
//!
//! let mut router = Router::new();
//! router.add(
//!     "/etcdserverpb.Lease/LeaseKeepAlive",
//!     Rc::new(|_meta: Metadata, mut reqs: RequestStream, mut resps: ResponseSink| {
//!         Box::pin(async move {
//!             while let Some(r) = reqs.next::<LeaseKeepAliveRequest>().await? {
//!                 resps.send(&LeaseKeepAliveResponse { id: r.id, ttl: 60, ..Default::default() }).await?;
//!             }
//!             Ok(())
//!         }) as HandlerFuture
//!     }),
//! );
//! ```

mod authority;
mod bridge;
mod call;
mod call_metrics;
mod codec;
mod connection;
mod deadline;
mod preface;
mod router;
mod shutdown;
mod status;

pub use bridge::{
    forwarding_handler, serve_forwarded, CallForwarder, ForwardedCall, BRIDGE_BUFFER,
};
pub use call::{Metadata, RequestStream, ResponseSink, CLIENT_CN_HEADER};
pub use call_metrics::{
    CallMetrics, CallTally, ExecutorCalls, Method, MethodKind, MethodTotals, HANDLING_BUCKETS,
    METHODS,
};
pub use codec::{encode_message, Deframer, PREFIX_LEN};
pub use connection::{serve_connection, Limits};
pub use deadline::parse_grpc_timeout;
pub use preface::{classify, read_first_bytes, FirstBytes, HTTP2_PREFACE};
pub use router::{
    server_streaming, unary, Gate, Handler, HandlerFuture, Router, INTERNAL_PATH_PREFIX,
};
pub use shutdown::Shutdown;
pub use status::{Code, Status};
