//! One RPC as a handler sees it: request metadata, the stream of request
//! messages and the sink for response messages.
//!
//! Unary, server-streaming and bidirectional methods all use the same
//! shape; a unary handler simply reads one message and sends one. The two
//! halves are separate owned values so a bidirectional handler (Watch,
//! LeaseKeepAlive) can move them into separate tasks.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_channel::mpsc;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Response};

use super::call_metrics::CallTally;
use super::codec::{encode_message, Deframer};
use super::status::{Code, Status};

/// Request headers of one call, e.g. `hasleader` for require-leader watches.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The full method path, `/etcdserverpb.KV/Range`.
    pub path: String,
    pub headers: HeaderMap,
    /// From `grpc-timeout`, when the client set one.
    pub deadline: Option<Instant>,
}

/// The header under which a call carries the CN of the client certificate
/// its connection verified (set by the connection only: a client's own
/// header of that name is dropped).
pub const CLIENT_CN_HEADER: &str = "x-basalt-client-cn";

impl Metadata {
    /// The CN of the verified client certificate of the call's connection.
    pub fn client_cn(&self) -> Option<&str> {
        self.get(CLIENT_CN_HEADER)
    }

    /// A request header as text, if present and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// etcd clients set `hasleader: true` to ask that a stream fail rather
    /// than hang when the member has no leader.
    pub fn requires_leader(&self) -> bool {
        self.get("hasleader") == Some("true")
    }
}

/// The client's messages, decoded lazily as they arrive: from the HTTP/2
/// stream, or from a channel when the call was forwarded from another
/// executor (see [`super::bridge`]).
pub struct RequestStream {
    source: Source,
}

enum Source {
    H2 {
        body: RecvStream,
        deframer: Deframer,
        ended: bool,
        /// Counts the messages of a call to a counted method.
        tally: Option<CallTally>,
    },
    /// Whole messages (no length prefix), already size-checked.
    Channel(mpsc::Receiver<Bytes>),
}

impl RequestStream {
    pub(crate) fn new(
        body: RecvStream,
        max_message_len: usize,
        tally: Option<CallTally>,
    ) -> RequestStream {
        RequestStream {
            source: Source::H2 {
                body,
                deframer: Deframer::new(max_message_len),
                ended: false,
                tally,
            },
        }
    }

    /// Messages fed by another executor; the stream ends when `rx` closes.
    pub fn from_channel(rx: mpsc::Receiver<Bytes>) -> RequestStream {
        RequestStream {
            source: Source::Channel(rx),
        }
    }

    /// The next message's bytes; `None` once the client half-closed.
    pub async fn next_bytes(&mut self) -> Result<Option<Bytes>, Status> {
        let (body, deframer, ended, tally) = match &mut self.source {
            Source::Channel(rx) => return Ok(futures_lite::StreamExt::next(rx).await),
            Source::H2 {
                body,
                deframer,
                ended,
                tally,
            } => (body, deframer, ended, tally),
        };
        loop {
            if let Some(m) = deframer.next_message()? {
                if let Some(t) = tally {
                    t.received();
                    // The message and its 5-byte gRPC frame header.
                    t.received_bytes(m.len() + 5);
                }
                return Ok(Some(m));
            }
            if *ended {
                if deframer.pending() > 0 {
                    return Err(Status::new(
                        Code::Internal,
                        "grpc: stream ended inside a message",
                    ));
                }
                return Ok(None);
            }
            match body.data().await {
                Some(Ok(chunk)) => {
                    deframer.push(&chunk);
                    // Hand the window back at once: the deframer enforces
                    // the message size limit, so buffering stays bounded.
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Some(Err(e)) => return Err(stream_error(&e)),
                None => *ended = true,
            }
        }
    }

    /// The next message decoded as `M`; `None` once the client half-closed.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        match self.next_bytes().await? {
            None => Ok(None),
            Some(b) => M::decode(b).map(Some).map_err(|e| {
                Status::new(
                    Code::Internal,
                    format!("grpc: error unmarshalling request: {e}"),
                )
            }),
        }
    }
}

/// Where a handler sends response messages. Response headers go out with
/// the first message; the status trailers are written by the connection
/// once the handler returns.
pub struct ResponseSink {
    target: Target,
}

enum Target {
    H2(Rc<RefCell<SinkCore>>),
    /// Framed messages to the executor that owns the client's connection.
    Channel(mpsc::Sender<Bytes>),
}

pub(crate) struct SinkCore {
    respond: SendResponse<Bytes>,
    stream: Option<SendStream<Bytes>>,
    finished: bool,
    tally: Option<CallTally>,
}

impl ResponseSink {
    pub(crate) fn new(
        respond: SendResponse<Bytes>,
        tally: Option<CallTally>,
    ) -> (ResponseSink, Rc<RefCell<SinkCore>>) {
        let core = Rc::new(RefCell::new(SinkCore {
            respond,
            stream: None,
            finished: false,
            tally,
        }));
        (
            ResponseSink {
                target: Target::H2(core.clone()),
            },
            core,
        )
    }

    /// Sends framed messages into `tx` (a call forwarded from another
    /// executor); waits while the channel is full.
    pub fn from_channel(tx: mpsc::Sender<Bytes>) -> ResponseSink {
        ResponseSink {
            target: Target::Channel(tx),
        }
    }

    /// Sends one message, waiting for HTTP/2 flow-control window as needed:
    /// a large message goes out in pieces as the client grants capacity, and
    /// never more than h2's send buffer is held beyond the message itself.
    pub async fn send<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        self.send_framed(encode_message(msg)).await
    }

    /// Sends an already framed message (see [`super::codec::encode_message`]).
    pub async fn send_framed(&mut self, data: Bytes) -> Result<(), Status> {
        self.send_part(data).await?;
        self.message_sent();
        Ok(())
    }

    /// Sends the next bytes of a message the caller frames itself, written
    /// in parts so that no more than a part is held at once (a large Range);
    /// call [`ResponseSink::message_sent`] after its last part. A forwarded
    /// call carries each part as if it were a message: its executor counts
    /// parts, not messages.
    pub async fn send_part(&mut self, mut data: Bytes) -> Result<(), Status> {
        let core = match &mut self.target {
            Target::H2(core) => core,
            Target::Channel(tx) => {
                let closed = || Status::new(Code::Cancelled, "forwarded stream closed");
                poll_fn(|cx| tx.poll_ready(cx))
                    .await
                    .map_err(|_| closed())?;
                return tx.start_send(data).map_err(|_| closed());
            }
        };
        core.borrow_mut().start()?;
        if let Some(t) = &core.borrow().tally {
            t.sent_bytes(data.len());
        }
        while !data.is_empty() {
            let granted = poll_fn(|cx| {
                let mut core = core.borrow_mut();
                let stream = core.stream.as_mut().expect("started above");
                if stream.capacity() > 0 {
                    return std::task::Poll::Ready(Ok(stream.capacity()));
                }
                stream.reserve_capacity(data.len());
                match stream.poll_capacity(cx) {
                    std::task::Poll::Pending => std::task::Poll::Pending,
                    std::task::Poll::Ready(Some(Ok(n))) => std::task::Poll::Ready(Ok(n)),
                    std::task::Poll::Ready(Some(Err(e))) => {
                        std::task::Poll::Ready(Err(stream_error(&e)))
                    }
                    std::task::Poll::Ready(None) => std::task::Poll::Ready(Err(Status::new(
                        Code::Cancelled,
                        "stream closed by client",
                    ))),
                }
            })
            .await?;
            if granted == 0 {
                continue;
            }
            let chunk = data.split_to(granted.min(data.len()));
            let mut core = core.borrow_mut();
            let stream = core.stream.as_mut().expect("started above");
            stream
                .send_data(chunk, false)
                .map_err(|e| stream_error(&e))?;
        }
        Ok(())
    }

    /// Counts one whole message sent (for the call metrics).
    pub fn message_sent(&self) {
        if let Target::H2(core) = &self.target {
            if let Some(t) = &core.borrow().tally {
                t.sent();
            }
        }
    }
}

impl SinkCore {
    /// Ready once the client reset the call's stream (it gave up on the
    /// call): the connection then drops the handler.
    pub(crate) fn poll_reset(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        if self.finished {
            return Poll::Pending;
        }
        let polled = match self.stream.as_mut() {
            Some(stream) => stream.poll_reset(cx),
            None => self.respond.poll_reset(cx),
        };
        match polled {
            Poll::Ready(Ok(_)) => Poll::Ready(()),
            // An error here is h2's (a misuse, or the connection gone, which
            // ends the call anyway): nothing to react to.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }

    fn start(&mut self) -> Result<(), Status> {
        if self.finished {
            return Err(Status::new(Code::Internal, "response already finished"));
        }
        if self.stream.is_none() {
            let stream = self
                .respond
                .send_response(grpc_response(), false)
                .map_err(|e| stream_error(&e))?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Ends the call with `status`: trailers after messages, or a
    /// trailers-only response when nothing was sent.
    pub(crate) fn finish(&mut self, status: &Status) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut trailers = HeaderMap::new();
        status.write_to(&mut trailers);
        match self.stream.as_mut() {
            Some(stream) => {
                let _ = stream.send_trailers(trailers);
            }
            None => {
                let mut resp = grpc_response();
                resp.headers_mut().extend(trailers);
                let _ = self.respond.send_response(resp, true);
            }
        }
    }
}

fn grpc_response() -> Response<()> {
    let mut resp = Response::new(());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

fn stream_error(e: &h2::Error) -> Status {
    if e.is_reset() || e.is_go_away() || e.is_io() {
        Status::new(Code::Cancelled, format!("stream closed: {e}"))
    } else {
        Status::new(Code::Internal, format!("http2: {e}"))
    }
}
