//! Serves one client TCP connection, after a TLS handshake on an `https`
//! listener: HTTP/2 via `h2`, each stream one call (or, for a request that
//! is not gRPC, an HTTP answer, see [`crate::gateway::serve_http2`]);
//! or, when the first bytes are not the HTTP/2 preface, HTTP/1.x requests
//! (the JSON gateway, `/metrics`, `/health`, `/version`, as etcd answers on
//! its client port) through [`crate::gateway::serve_http1`].

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::authority::AuthorityFix;
use super::call::{Metadata, RequestStream, ResponseSink, CLIENT_CN_HEADER};
use super::call_metrics::CallTally;
use super::deadline::parse_grpc_timeout;
use super::preface::{read_first_bytes, FirstBytes};
use super::router::Router;
use super::shutdown::Shutdown;
use super::status::{Code, Status};
use crate::error::Error;
use crate::tls::Stream;

/// Per-connection limits, all from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request message accepted (etcd: --max-request-bytes plus
    /// 512 KiB of gRPC overhead).
    pub max_recv_message_bytes: usize,
    /// Concurrent streams per connection announced in SETTINGS.
    pub max_concurrent_streams: u32,
    /// etcd's `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`:
    /// the server pings each connection this often and closes one whose
    /// client does not answer in time (a client that vanished without a
    /// FIN or RST, its watches held open meanwhile).
    pub keepalive: Option<(Duration, Duration)>,
}

/// HTTP/2 windows: generous so one large Range or snapshot is not throttled
/// by round trips on loopback, bounded so one connection cannot pin much
/// memory.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
const MAX_SEND_BUFFER: usize = 1 << 20;
const MAX_HEADER_LIST: u32 = 16 << 10;
/// A connection that has not shown its protocol by then is closed
/// (grpc-go's default connection timeout for the HTTP/2 handshake).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(120);

/// Serves `tcp` until the client closes it or `shutdown` fires; on shutdown
/// it sends GOAWAY and lets in-flight calls finish. With `tls`, the
/// connection is served after a TLS handshake; one that fails is logged
/// and closed, as etcd logs "rejected connection".
pub async fn serve_connection(
    tcp: glommio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Rc<Router>,
    limits: Limits,
    shutdown: Rc<Shutdown>,
) -> Result<(), Error> {
    let _ = tcp.set_nodelay(true);
    let remote = tcp.peer_addr().ok();
    let opening = async {
        let mut stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => Stream::accept(tcp, config).await.inspect_err(|e| {
                tracing::warn!(
                    "rejected connection from {:?} (error {:?})",
                    remote.map(|a| a.to_string()).unwrap_or_default(),
                    e.to_string()
                );
            })?,
        };
        let first = read_first_bytes(&mut stream).await?;
        Ok::<_, std::io::Error>((stream, first))
    };
    let opened = future::or(async { Some(opening.await) }, async {
        future::or(shutdown.wait(), glommio::timer::sleep(FIRST_BYTES_TIMEOUT)).await;
        None
    })
    .await;
    match opened {
        None | Some(Ok((_, FirstBytes::Closed))) => Ok(()),
        Some(Err(e)) => Err(Error::io("reading a connection's first bytes", e)),
        Some(Ok((stream, FirstBytes::Http1(received)))) => {
            crate::gateway::serve_http1(stream, received, &router, limits.max_recv_message_bytes)
                .await
                .map_err(|e| Error::io("HTTP/1.1 on the client port", e))
        }
        Some(Ok((stream, FirstBytes::Http2(received)))) => {
            // Present only when the certificate was verified (a client
            // certificate is asked for under --client-cert-auth only).
            let client_cn = stream
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(crate::tls::common_name)
                .map(Rc::<str>::from);
            serve_http2(stream, &received, router, limits, shutdown, client_cn)
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    let io = e.into_io().unwrap_or_else(|| std::io::Error::other(text));
                    Error::io("HTTP/2", io)
                })
        }
    }
}

async fn serve_http2(
    tcp: Stream,
    received: &[u8],
    router: Rc<Router>,
    limits: Limits,
    shutdown: Rc<Shutdown>,
    client_cn: Option<Rc<str>>,
) -> Result<(), h2::Error> {
    let mut conn = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .handshake::<_, Bytes>(AuthorityFix::with_received(tcp, received).compat())
        .await?;
    let unanswered = Rc::new(Shutdown::new());
    // Dropped (cancelled) with the connection.
    let _pinger = match (limits.keepalive, conn.ping_pong()) {
        (Some((every, timeout)), Some(pings)) => Some(glommio::spawn_local(keep_alive(
            pings,
            every,
            timeout,
            unanswered.clone(),
        ))),
        _ => None,
    };
    let mut draining = false;
    loop {
        let next = if draining {
            future::or(async { Some(conn.accept().await) }, async {
                unanswered.wait().await;
                None
            })
            .await
            .unwrap_or(None)
        } else {
            let stop = future::or(async { Some(conn.accept().await) }, async {
                future::or(shutdown.wait(), unanswered.wait()).await;
                None
            })
            .await;
            if stop.is_none() && unanswered.is_fired() {
                tracing::debug!("closing a client connection whose keepalive ping went unanswered");
                return Ok(());
            }
            match stop {
                Some(next) => next,
                None => {
                    // GOAWAY now; `accept` then keeps driving the connection
                    // until its in-flight calls are done and returns `None`.
                    draining = true;
                    conn.graceful_shutdown();
                    continue;
                }
            }
        };
        match next {
            Some(Ok((req, respond))) if is_grpc(&req) => {
                let router = router.clone();
                let cn = client_cn.clone();
                glommio::spawn_local(serve_call(req, respond, router, limits, cn)).detach();
            }
            Some(Ok((req, respond))) => {
                let router = router.clone();
                let max = limits.max_recv_message_bytes;
                glommio::spawn_local(async move {
                    crate::gateway::serve_http2(req, respond, &router, max).await
                })
                .detach();
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// Pings the client every `every`; fires `unanswered` when a ping goes
/// `timeout` without its answer (grpc-go's server keepalive).
async fn keep_alive(
    mut pings: h2::PingPong,
    every: Duration,
    timeout: Duration,
    unanswered: Rc<Shutdown>,
) {
    loop {
        glommio::timer::sleep(every).await;
        let answered = future::or(
            async { pings.ping(h2::Ping::opaque()).await.is_ok() },
            async {
                glommio::timer::sleep(timeout).await;
                false
            },
        )
        .await;
        if !answered {
            unanswered.fire();
            return;
        }
    }
}

/// A gRPC call says so in its content type (`application/grpc`,
/// `application/grpc+proto`), as grpc-go and etcd tell them apart; anything
/// else (`curl https://…/metrics` or a gateway POST over `h2`) is a plain
/// HTTP request.
fn is_grpc(req: &Request<RecvStream>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn serve_call(
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    router: Rc<Router>,
    limits: Limits,
    client_cn: Option<Rc<str>>,
) {
    let tally = router.calls().and_then(|c| c.start(req.uri().path()));
    let (sink, core) = ResponseSink::new(respond, tally.clone());
    // A call the client resets is dropped (as a Go server cancels the
    // handler's context): a Lock waiter, say, then takes its key back.
    let reset = {
        let core = core.clone();
        async move {
            std::future::poll_fn(|cx| core.borrow_mut().poll_reset(cx)).await;
            Err(Status::new(Code::Cancelled, "context canceled"))
        }
    };
    let call = run_call(req, sink, &router, limits, tally.clone(), client_cn);
    let status = match future::or(call, reset).await {
        Ok(()) => Status::ok(),
        Err(s) => s,
    };
    core.borrow_mut().finish(&status);
    if let Some(t) = tally {
        t.finished(status.code);
    }
}

async fn run_call(
    req: Request<RecvStream>,
    sink: ResponseSink,
    router: &Router,
    limits: Limits,
    tally: Option<CallTally>,
    client_cn: Option<Rc<str>>,
) -> Result<(), Status> {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(CLIENT_CN_HEADER);
    if let Some(value) = client_cn.and_then(|cn| http::HeaderValue::from_str(&cn).ok()) {
        parts.headers.insert(CLIENT_CN_HEADER, value);
    }
    if let Some(enc) = parts.headers.get("grpc-encoding") {
        if enc != "identity" {
            return Err(Status::new(
                Code::Unimplemented,
                format!(
                    "grpc: Decompressor is not installed for grpc-encoding {:?}",
                    enc.to_str().unwrap_or("")
                ),
            ));
        }
    }
    let deadline = match parts.headers.get("grpc-timeout") {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            let d = parse_grpc_timeout(text).ok_or_else(|| {
                Status::new(
                    Code::Internal,
                    format!("transport: malformed grpc-timeout: {text:?}"),
                )
            })?;
            Some(d)
        }
    };
    let path = parts.uri.path().to_owned();
    let handler = router.route_client(&path)?;
    let meta = Metadata {
        path,
        headers: parts.headers,
        deadline: deadline.and_then(|d| Instant::now().checked_add(d)),
    };
    let requests = RequestStream::new(body, limits.max_recv_message_bytes, tally);
    let call = handler.call(meta, requests, sink);
    match deadline {
        None => call.await,
        Some(d) => future::or(call, expire(d)).await,
    }
}

async fn expire(after: Duration) -> Result<(), Status> {
    glommio::timer::sleep(after).await;
    Err(Status::new(
        Code::DeadlineExceeded,
        "context deadline exceeded",
    ))
}
