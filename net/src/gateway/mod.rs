//! etcd's JSON gateway (grpc-gateway in etcd) on the client port: `POST
//! /v3/kv/range` with a JSON body is the gRPC call `/etcdserverpb.KV/Range`
//! with that body transcoded, and its answer transcoded back.
//!
//! The gateway owns the client port's plain-HTTP side ([`serve_http1`], and
//! [`serve_http2`] for a non-gRPC request on an HTTP/2 connection, such as
//! `curl https://…` negotiating `h2`): `/v3/…` and `/v3beta/…` come here,
//! every other path goes to the metrics endpoints (`/metrics`, `/health`,
//! `/version`).
//!
//! A call is dispatched by gRPC method name through the executor's
//! [`Router`], to the same handler a gRPC client reaches, with the same
//! gate (a learner refuses what it refuses over gRPC). The `Authorization`
//! header becomes the `token` metadata etcd's auth reads, as etcd's gateway
//! passes it on. What etcd's gateway writes, basalt writes:
//!
//! - a unary answer: `200` and the response as JSON (proto field names,
//!   64-bit integers as strings, bytes as base64, zero values left out);
//! - a stream (Watch, LeaseKeepAlive, Snapshot, Observe): `200`, chunked,
//!   one `{"result":…}` line per message; every JSON value in the body is
//!   one request, and the call is half-closed after the last (but for a
//!   watch, which streams until its client goes, as etcd's does);
//! - a failed call: the HTTP status grpc-gateway maps the gRPC code to and
//!   `{"error":…,"code":…,"message":…}`; `{"error":{"grpc_code":…}}` as the
//!   last line of a stream;
//! - an unknown path `404 Not Found`, another method than POST `405`.
//!
//! A call whose client goes away (an idle watch, a Lock still waiting) is
//! dropped at once, as a reset gRPC stream drops its call, and every call
//! is counted in the gRPC call metrics, as etcd counts its gateway's.
//!
//! ```
//! use basalt_net::gateway::http_status;
//! use basalt_net::grpc::Code;
//! assert_eq!(http_status(Code::NotFound), 404);
//! assert_eq!(http_status(Code::FailedPrecondition), 400);
//! ```

mod http1;
mod http2;
mod json;
mod routes;

pub use http1::serve_http1;
pub use http2::serve_http2;
pub use routes::{find, is_gateway_path, Route, Shape, ROUTES};

use std::io;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_lite::{future, StreamExt};
use http::HeaderMap;

use crate::grpc::{
    CallTally, Code, Deframer, Metadata, RequestStream, ResponseSink, Router, Status, PREFIX_LEN,
};

/// Most requests one streaming body may carry (a body of keep-alives or
/// watch requests); etcd has no limit, but a body is bounded anyway.
pub const MAX_STREAM_REQUESTS: usize = 1024;

/// Responses queued between a streaming handler and the connection.
const RESPONSE_QUEUE: usize = 16;

/// Headers on every gateway answer: etcd's default `--cors=*`.
const CORS: [(&str, &str); 3] = [
    (
        "Access-Control-Allow-Headers",
        "accept, content-type, authorization",
    ),
    (
        "Access-Control-Allow-Methods",
        "POST, GET, OPTIONS, PUT, DELETE",
    ),
    ("Access-Control-Allow-Origin", "*"),
];

/// One HTTP request for the gateway, its body read whole.
pub struct GatewayRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string, without its `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Where an answer goes: HTTP/1.1 or an HTTP/2 stream.
pub(crate) trait ReplyWriter {
    /// Status line and headers; `length` is the body's, or `None` for a
    /// stream of chunks of unknown total length.
    async fn head(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        length: Option<usize>,
    ) -> io::Result<()>;
    async fn body(&mut self, data: &[u8]) -> io::Result<()>;
    async fn end(&mut self) -> io::Result<()>;
    /// Resolves once the client is gone (closed or reset), so that a
    /// stream with nothing to send (an idle watch) does not outlive it.
    async fn closed(&mut self);
}

/// grpc-gateway's `HTTPStatusFromCode` (v1.16, etcd 3.5's): note
/// FailedPrecondition is 400, not 412.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 408,
        Code::Unknown => 500,
        Code::InvalidArgument => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::FailedPrecondition => 400,
        Code::Aborted => 409,
        Code::OutOfRange => 400,
        Code::Unimplemented => 501,
        Code::Internal => 500,
        Code::Unavailable => 503,
        Code::DataLoss => 500,
    }
}

/// Go's `http.StatusText` for the statuses the gateway writes.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// The error body of a failed unary call, as grpc-gateway writes it
/// (`error`, `code`, `message`: its `Error` message's field order).
pub fn error_body(status: &Status) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: &'a str,
        code: u8,
        message: &'a str,
    }
    json::to_go_json(&Body {
        error: &status.message,
        code: status.code as u8,
        message: &status.message,
    })
    .unwrap_or_default()
}

/// The last line of a stream that failed, as grpc-gateway writes it.
pub fn stream_error_line(status: &Status) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Inner<'a> {
        grpc_code: u8,
        http_code: u16,
        message: &'a str,
        http_status: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Line<'a> {
        error: Inner<'a>,
    }
    let http_code = http_status(status.code);
    let mut out = json::to_go_json(&Line {
        error: Inner {
            grpc_code: status.code as u8,
            http_code,
            message: &status.message,
            http_status: reason(http_code),
        },
    })
    .unwrap_or_default();
    out.push(b'\n');
    out
}

/// Answers one gateway request (a path [`is_gateway_path`] accepts) into
/// `out`. `max_message` is the gRPC receive limit the transcoded request
/// must fit, as it must over gRPC.
pub(crate) async fn serve<W: ReplyWriter>(
    req: GatewayRequest<'_>,
    router: &Router,
    max_message: usize,
    out: &mut W,
) -> io::Result<()> {
    if req.method == "OPTIONS" {
        // etcd answers a CORS preflight itself, on any path.
        out.head(200, &CORS, Some(0)).await?;
        return out.end().await;
    }
    if req.path == "/v3" {
        return redirect_to_v3(out, req.method, req.query).await;
    }
    let Some(route) = find(req.path) else {
        return plain(out, 404, "Not Found\n").await;
    };
    if req.method != "POST" {
        return plain(out, 405, "Method Not Allowed\n").await;
    }
    let messages = match requests_of(route, req.body, max_message) {
        Ok(m) => m,
        Err(s) => return failed(out, &s).await,
    };
    // Counted as the gRPC call it is (etcd's gateway is a gRPC client of
    // its own server, so etcd counts these calls too).
    let tally = Tally::start(router, route.method);
    let handler = match router.route_client(route.method) {
        Ok(h) => h,
        Err(s) => {
            tally.finish(s.code);
            return failed(out, &s).await;
        }
    };
    for m in &messages {
        tally.received(m.len());
    }
    let (mut req_tx, req_rx) = mpsc::channel::<Bytes>(messages.len().max(1));
    for m in messages {
        // The channel has room for every message: this cannot fail.
        let _ = req_tx.try_send(m);
    }
    // Held (not half-closed) for as long as the answer streams: see
    // [`Shape::Watch`].
    let _open = (route.shape == Shape::Watch).then_some(req_tx);
    let (resp_tx, resp_rx) = mpsc::channel::<Bytes>(RESPONSE_QUEUE);
    let meta = Metadata {
        path: route.method.to_owned(),
        headers: metadata_from(req.headers),
        deadline: None,
    };
    let call = handler.call(
        meta,
        RequestStream::from_channel(req_rx),
        ResponseSink::from_channel(resp_tx),
    );
    // The handler runs in its own task so that a reader gone mid-stream
    // (a write fails) drops it, as a reset stream drops a gRPC call.
    let task = glommio::spawn_local(call);
    let responses = Responses::new(task, resp_rx, tally);
    match route.shape {
        Shape::Unary => unary_reply(route, responses, out).await,
        Shape::ServerStream | Shape::BidiStream | Shape::Watch => {
            stream_reply(route, responses, out).await
        }
    }
}

/// The gRPC request messages a body holds, each within `max_message`.
/// A unary or server-streaming call has exactly one (an empty body is the
/// empty request); a bidirectional one every value in the body, none for
/// an empty body (grpc-gateway then sends nothing and half-closes).
fn requests_of(route: &Route, body: &[u8], max_message: usize) -> Result<Vec<Bytes>, Status> {
    let bidi = matches!(route.shape, Shape::BidiStream | Shape::Watch);
    let max_requests = if bidi { MAX_STREAM_REQUESTS } else { 1 };
    let mut messages = match (route.decode)(body, max_requests) {
        Ok(m) => m,
        // grpc-gateway decodes a bidirectional call's first request outside
        // its error mapping: the error goes out as Unknown (500).
        Err(s) if bidi => return Err(Status::new(Code::Unknown, s.message)),
        Err(s) => return Err(s),
    };
    if messages.is_empty() && !bidi {
        messages.push(Bytes::new());
    }
    if let Some(m) = messages.iter().find(|m| m.len() > max_message) {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!(
                "grpc: received message larger than max ({} vs. {max_message})",
                m.len()
            ),
        ));
    }
    Ok(messages)
}

/// A gateway call's place in the gRPC call counters: started, messages
/// each way, and how it ended (`Cancelled` if the client went away first).
struct Tally {
    tally: Option<CallTally>,
    code: std::cell::Cell<Option<Code>>,
}

impl Tally {
    fn start(router: &Router, method: &str) -> Tally {
        Tally {
            tally: router.calls().and_then(|c| c.start(method)),
            code: std::cell::Cell::new(None),
        }
    }

    fn received(&self, len: usize) {
        if let Some(t) = &self.tally {
            t.received();
            t.received_bytes(len + PREFIX_LEN);
        }
    }

    fn sent(&self, len: usize) {
        if let Some(t) = &self.tally {
            t.sent();
            t.sent_bytes(len + PREFIX_LEN);
        }
    }

    fn finish(&self, code: Code) {
        self.code.set(Some(code));
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(t) = &self.tally {
            t.finished(self.code.get().unwrap_or(Code::Cancelled));
        }
    }
}

/// gRPC metadata from the HTTP headers, as grpc-gateway builds it:
/// `Authorization` is the auth token (etcd reads it as `token`), and a
/// `Grpc-Metadata-Foo` header is the metadata `foo`.
fn metadata_from(headers: &HeaderMap) -> HeaderMap {
    let mut meta = HeaderMap::new();
    for (name, value) in headers {
        if let Some(rest) = name.as_str().strip_prefix("grpc-metadata-") {
            // The client certificate's CN is set by the TLS layer only: a
            // header naming it would let any client act as any user.
            if rest.eq_ignore_ascii_case(crate::grpc::CLIENT_CN_HEADER) {
                continue;
            }
            if let Ok(n) = http::header::HeaderName::from_bytes(rest.as_bytes()) {
                meta.append(n, value.clone());
            }
        }
    }
    if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        meta.insert("authorization", auth.clone());
        if !meta.contains_key("token") {
            meta.insert("token", auth.clone());
        }
    }
    meta
}

/// The headers of a plain HTTP answer on the client port (the metrics
/// endpoints', or the gateway's 404 and 405): etcd's CORS headers, and the
/// `nosniff` Go's `http.Error` adds to an error.
pub(crate) fn http_headers(content_type: &str, status: u16) -> Vec<(&'static str, &str)> {
    let mut headers: Vec<(&str, &str)> = CORS.to_vec();
    headers.push(("Content-Type", content_type));
    if status >= 400 {
        headers.push(("X-Content-Type-Options", "nosniff"));
    }
    headers
}

/// `/v3` is `/v3/`: Go's mux redirects a path to its subtree, keeping the
/// query, with a link for GET and HEAD and no body otherwise.
async fn redirect_to_v3<W: ReplyWriter>(
    out: &mut W,
    method: &str,
    query: Option<&str>,
) -> io::Result<()> {
    let location = match query {
        Some(q) => format!("/v3/?{q}"),
        None => "/v3/".to_owned(),
    };
    let mut headers: Vec<(&str, &str)> = CORS.to_vec();
    let body = if method == "GET" || method == "HEAD" {
        headers.push(("Content-Type", "text/html; charset=utf-8"));
        format!("<a href=\"{location}\">Moved Permanently</a>.\n\n")
    } else {
        String::new()
    };
    headers.push(("Location", &location));
    out.head(301, &headers, Some(body.len())).await?;
    out.body(body.as_bytes()).await?;
    out.end().await
}

/// A text answer (grpc-gateway's 404 and 405, Go's `http.Error`).
async fn plain<W: ReplyWriter>(out: &mut W, status: u16, text: &str) -> io::Result<()> {
    let headers = http_headers("text/plain; charset=utf-8", status);
    out.head(status, &headers, Some(text.len())).await?;
    out.body(text.as_bytes()).await?;
    out.end().await
}

/// A failed unary call (or one that failed before it was made).
async fn failed<W: ReplyWriter>(out: &mut W, status: &Status) -> io::Result<()> {
    let body = error_body(status);
    let mut headers: Vec<(&str, &str)> = CORS.to_vec();
    headers.push(("Content-Type", "application/json"));
    out.head(http_status(status.code), &headers, Some(body.len()))
        .await?;
    out.body(&body).await?;
    out.end().await
}

fn ok_headers() -> Vec<(&'static str, &'static str)> {
    let mut headers: Vec<(&str, &str)> = CORS.to_vec();
    headers.push(("Content-Type", "application/json"));
    headers.push(("Grpc-Metadata-Content-Type", "application/grpc"));
    headers
}

/// What the handler's task and its response channel yield next.
enum Next {
    Part(Option<Bytes>),
    Done(Result<(), Status>),
}

/// Response messages as the handler sends them, reassembled from the parts
/// a forwarded or large response arrives in; then the handler's status.
struct Responses {
    task: Option<glommio::Task<Result<(), Status>>>,
    rx: mpsc::Receiver<Bytes>,
    deframer: Deframer,
    status: Option<Result<(), Status>>,
    tally: Tally,
}

impl Responses {
    fn new(
        task: glommio::Task<Result<(), Status>>,
        rx: mpsc::Receiver<Bytes>,
        tally: Tally,
    ) -> Responses {
        Responses {
            task: Some(task),
            rx,
            // A response is as large as the server made it.
            deframer: Deframer::new(u32::MAX as usize),
            status: None,
            tally,
        }
    }

    /// The next whole response message; `None` once the handler finished
    /// and everything it sent was read ([`Responses::status`] then tells how).
    async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            match self.deframer.next_message() {
                Ok(Some(m)) => {
                    self.tally.sent(m.len());
                    return Some(Ok(m));
                }
                Ok(None) => {}
                Err(s) => return Some(Err(s)),
            }
            let next = match self.task.as_mut() {
                Some(task) => {
                    let rx = &mut self.rx;
                    future::or(async { Next::Part(rx.next().await) }, async {
                        Next::Done(task.await)
                    })
                    .await
                }
                // Finished: what it sent before is queued, nothing follows.
                None => Next::Part(self.rx.try_recv().ok()),
            };
            match next {
                Next::Part(Some(part)) => self.deframer.push(&part),
                Next::Part(None) if self.task.is_some() => {
                    // The sink is gone: the handler is about to finish.
                    let status = self.task.take()?.await;
                    self.status = Some(status);
                }
                Next::Part(None) => return None,
                Next::Done(status) => {
                    self.task = None;
                    self.status = Some(status);
                }
            }
        }
    }

    /// How the handler ended; counted as the call's code.
    fn status(&mut self) -> Result<(), Status> {
        let status = self.status.take().unwrap_or(Ok(()));
        self.tally
            .finish(status.as_ref().err().map_or(Code::Ok, |s| s.code));
        status
    }
}

/// The next response message, or `None` once the client is gone.
async fn next_or_gone<W: ReplyWriter>(
    responses: &mut Responses,
    out: &mut W,
) -> Option<Option<Result<Bytes, Status>>> {
    future::or(async { Some(responses.next().await) }, async {
        out.closed().await;
        None
    })
    .await
}

async fn unary_reply<W: ReplyWriter>(
    route: &Route,
    mut responses: Responses,
    out: &mut W,
) -> io::Result<()> {
    let mut answer = None;
    loop {
        // The client gone (it gave up on a waiting Lock, say): dropping
        // `responses` drops the handler, as a reset stream drops a call.
        let Some(next) = next_or_gone(&mut responses, out).await else {
            return Ok(());
        };
        let Some(m) = next else { break };
        match m {
            Ok(m) if answer.is_none() => answer = Some(m),
            Ok(_) => {}
            Err(s) => return failed(out, &s).await,
        }
    }
    let json = match (responses.status(), answer) {
        (Err(s), _) => return failed(out, &s).await,
        (Ok(()), None) => {
            let s = Status::new(Code::Internal, "grpc: the server sent no response");
            return failed(out, &s).await;
        }
        (Ok(()), Some(m)) => match (route.encode)(&m) {
            Ok(json) => json,
            Err(s) => return failed(out, &s).await,
        },
    };
    out.head(200, &ok_headers(), Some(json.len())).await?;
    out.body(&json).await?;
    out.end().await
}

async fn stream_reply<W: ReplyWriter>(
    route: &Route,
    mut responses: Responses,
    out: &mut W,
) -> io::Result<()> {
    let mut started = false;
    let mut error = None;
    loop {
        // The client gone: dropping `responses` drops the handler.
        let Some(next) = next_or_gone(&mut responses, out).await else {
            return Ok(());
        };
        let Some(m) = next else { break };
        let line = m.and_then(|m| (route.encode)(&m)).map(|json| {
            let mut line = Vec::with_capacity(json.len() + 12);
            line.extend_from_slice(b"{\"result\":");
            line.extend_from_slice(&json);
            line.extend_from_slice(b"}\n");
            line
        });
        match line {
            Ok(line) => {
                if !started {
                    out.head(200, &ok_headers(), None).await?;
                    started = true;
                }
                out.body(&line).await?;
            }
            Err(s) => {
                error = Some(s);
                break;
            }
        }
    }
    if let Some(s) = error.or_else(|| responses.status().err()) {
        if !started {
            let mut headers: Vec<(&str, &str)> = CORS.to_vec();
            headers.push(("Content-Type", "application/json"));
            out.head(http_status(s.code), &headers, None).await?;
            started = true;
        }
        out.body(&stream_error_line(&s)).await?;
    }
    if !started {
        // No message: grpc-gateway saw no gRPC header metadata to forward.
        let mut headers: Vec<(&str, &str)> = CORS.to_vec();
        headers.push(("Content-Type", "application/json"));
        out.head(200, &headers, None).await?;
    }
    out.end().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn error_bodies_are_grpc_gateways() {
        let s = Status::new(Code::NotFound, "etcdserver: requested lease not found");
        assert_eq!(
            String::from_utf8(error_body(&s)).unwrap(),
            r#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#
        );
        assert_eq!(
            String::from_utf8(stream_error_line(&s)).unwrap(),
            "{\"error\":{\"grpc_code\":5,\"http_code\":404,\"message\":\"etcdserver: requested lease not found\",\"http_status\":\"Not Found\"}}\n"
        );
    }

    #[test]
    fn every_code_has_a_status_with_a_reason() {
        for c in Code::ALL {
            assert!(!reason(http_status(c)).is_empty(), "{c:?}");
        }
    }

    #[test]
    fn authorization_is_the_token() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("abc.def"));
        h.insert("grpc-metadata-hasleader", HeaderValue::from_static("true"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let m = metadata_from(&h);
        assert_eq!(m["token"], "abc.def");
        assert_eq!(m["authorization"], "abc.def");
        assert_eq!(m["hasleader"], "true");
        assert!(m.get("content-type").is_none());
    }

    /// A gateway client cannot pose as a certificate's user: fails if the
    /// CN metadata passes through (any client would then act as root).
    #[test]
    fn a_client_cannot_claim_a_certificate_cn() {
        let mut h = HeaderMap::new();
        h.insert(
            "grpc-metadata-x-basalt-client-cn",
            HeaderValue::from_static("root"),
        );
        let m = metadata_from(&h);
        assert!(m.get(crate::grpc::CLIENT_CN_HEADER).is_none());
    }
}
