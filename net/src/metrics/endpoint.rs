//! The HTTP/1.1 listener behind `--listen-metrics-urls`: one request per
//! connection (`Connection: close`), GET or HEAD, a bounded request head
//! and a read timeout, so a slow or hostile scraper costs one small task.

use std::cell::Cell;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::{health, render_metrics, DiskMetrics, ServerState};
use crate::config::parse_listen_url;
use crate::error::Error;
use crate::grpc::Shutdown;

/// Longest request line plus headers we read; scrapers send a few hundred
/// bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Connections answered at once per listener; more are closed unanswered,
/// so idle or slow clients cannot pile up tasks and buffers.
pub const MAX_OPEN_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a scrape gets its answers.
pub struct Endpoint {
    /// Reads the server's state at scrape time (on the sequencer's
    /// executor, so it may borrow the store).
    pub state: Box<dyn Fn() -> Pin<Box<dyn Future<Output = ServerState>>>>,
    pub disk: Rc<DiskMetrics>,
}

/// Binds every `--listen-metrics-urls` URL (on the caller's thread, so the
/// real ports are known before the server reports it is up).
pub fn bind_listeners(urls: &[String]) -> Result<Vec<std::net::TcpListener>, Error> {
    urls.iter()
        .map(|u| {
            let addr = parse_listen_url(u)?;
            std::net::TcpListener::bind(addr)
                .map_err(|e| Error::io(format!("cannot listen for metrics on {addr}"), e))
        })
        .collect()
}

/// Serves `/metrics`, `/health`, `/livez` and `/readyz` on `listeners`
/// until `shutdown` fires. Must run on a glommio executor.
pub async fn serve(
    listeners: Vec<std::net::TcpListener>,
    endpoint: Rc<Endpoint>,
    shutdown: Rc<Shutdown>,
) {
    let mut loops = Vec::new();
    for l in listeners {
        // SAFETY: the fd comes from a bound, listening std listener whose
        // ownership `into_raw_fd` hands over; nothing else closes it.
        let listener = unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) };
        let (endpoint, shutdown) = (endpoint.clone(), shutdown.clone());
        loops.push(glommio::spawn_local(accept_loop(
            listener, endpoint, shutdown,
        )));
    }
    for l in loops {
        l.await;
    }
}

async fn accept_loop(listener: TcpListener, endpoint: Rc<Endpoint>, shutdown: Rc<Shutdown>) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let next = future::or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        match next {
            None => break,
            Some(Ok(stream)) if open.get() >= MAX_OPEN_CONNECTIONS => {
                tracing::debug!("metrics connection refused: too many open");
                drop(stream);
            }
            Some(Ok(stream)) => {
                let (endpoint, open) = (endpoint.clone(), open.clone());
                open.set(open.get() + 1);
                glommio::spawn_local(async move {
                    if let Err(e) = answer(stream, &endpoint).await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "metrics accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A parsed response: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

async fn answer(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = match read_head(&mut stream).await? {
        Some(h) => h,
        None => return Ok(()),
    };
    let (resp, head_only) = match parse_request_line(&head) {
        Ok((method, path)) => (route(method, path, endpoint).await, method == "HEAD"),
        Err(why) => (text(400, why), false),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if !head_only {
        out.push_str(&resp.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}

/// Reads until the blank line ending the head. `None`: the peer closed
/// before sending a request.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "request head cut short",
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

/// `METHOD /path[?query] HTTP/1.x` → (method, path without query).
fn parse_request_line(head: &[u8]) -> Result<(&str, &str), &'static str> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("no request line")?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| "request line is not UTF-8")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("unsupported HTTP version");
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok((method, path))
}

async fn route(method: &str, path: &str, endpoint: &Endpoint) -> Response {
    if method != "GET" && method != "HEAD" {
        return text(405, "method not allowed\n");
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render_metrics(&(endpoint.state)().await, &endpoint.disk),
        },
        "/health" => {
            let (status, body) = health(&(endpoint.state)().await);
            Response {
                status,
                content_type: "application/json",
                body,
            }
        }
        // etcd 3.5: the process is up / it can serve. A single member that
        // has opened its store is both.
        "/livez" | "/readyz" => text(200, "ok"),
        _ => text(404, "404 page not found\n"),
    }
}

fn text(status: u16, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_owned(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The addresses `listeners` are bound to.
pub fn local_addrs(listeners: &[std::net::TcpListener]) -> Result<Vec<SocketAddr>, Error> {
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_err(|e| Error::io("reading a metrics listener's address", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"HEAD /health HTTP/1.0\r\n\r\n"),
            Ok(("HEAD", "/health"))
        );
        assert!(parse_request_line(b"GET /metrics\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET /metrics HTTP/2\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET  /metrics HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"\xff\xfe / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET / HTTP/1.1").is_err());
    }

    #[test]
    fn routes() {
        let endpoint = Endpoint {
            state: Box::new(|| Box::pin(async { ServerState::default() })),
            disk: Rc::new(DiskMetrics::default()),
        };
        let get = |method, path| future::block_on(route(method, path, &endpoint));
        assert_eq!(get("GET", "/livez").body, "ok");
        assert_eq!(get("GET", "/readyz").status, 200);
        assert_eq!(get("GET", "/nope").status, 404);
        assert_eq!(get("POST", "/metrics").status, 405);
        assert!(get("GET", "/metrics")
            .body
            .contains("etcd_server_has_leader 1\n"));
        assert_eq!(get("GET", "/health").status, 200);
    }
}
