//! Serves one client TCP connection: HTTP/2 via `h2`, each stream one call.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::authority::AuthorityFix;
use super::call::{Metadata, RequestStream, ResponseSink};
use super::deadline::parse_grpc_timeout;
use super::router::Router;
use super::shutdown::Shutdown;
use super::status::{Code, Status};

/// Per-connection limits, all from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request message accepted (etcd: --max-request-bytes plus
    /// 512 KiB of gRPC overhead).
    pub max_recv_message_bytes: usize,
    /// Concurrent streams per connection announced in SETTINGS.
    pub max_concurrent_streams: u32,
}

/// HTTP/2 windows: generous so one large Range or snapshot is not throttled
/// by round trips on loopback, bounded so one connection cannot pin much
/// memory.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
const MAX_SEND_BUFFER: usize = 1 << 20;
const MAX_HEADER_LIST: u32 = 16 << 10;

/// Serves `tcp` until the client closes it or `shutdown` fires; on shutdown
/// it sends GOAWAY and lets in-flight calls finish.
pub async fn serve_connection(
    tcp: glommio::net::TcpStream,
    router: Rc<Router>,
    limits: Limits,
    shutdown: Rc<Shutdown>,
) -> Result<(), h2::Error> {
    let _ = tcp.set_nodelay(true);
    let mut conn = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .handshake::<_, Bytes>(AuthorityFix::new(tcp).compat())
        .await?;
    let mut draining = false;
    loop {
        let next = if draining {
            conn.accept().await
        } else {
            let stop = future::or(async { Some(conn.accept().await) }, async {
                shutdown.wait().await;
                None
            })
            .await;
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
            Some(Ok((req, respond))) => {
                let router = router.clone();
                glommio::spawn_local(serve_call(req, respond, router, limits)).detach();
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

async fn serve_call(
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    router: Rc<Router>,
    limits: Limits,
) {
    let (sink, core) = ResponseSink::new(respond);
    let status = match run_call(req, sink, &router, limits).await {
        Ok(()) => Status::ok(),
        Err(s) => s,
    };
    core.borrow_mut().finish(&status);
}

async fn run_call(
    req: Request<RecvStream>,
    sink: ResponseSink,
    router: &Router,
    limits: Limits,
) -> Result<(), Status> {
    let (parts, body) = req.into_parts();
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
    let handler = router.route(&path)?;
    let meta = Metadata {
        path,
        headers: parts.headers,
        deadline: deadline.and_then(|d| Instant::now().checked_add(d)),
    };
    let requests = RequestStream::new(body, limits.max_recv_message_bytes);
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
