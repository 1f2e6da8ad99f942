//! The HTTP/1.1 listener behind `--listen-metrics-urls`: one request per
//! connection (`Connection: close`), GET or HEAD, a bounded request head
//! and a read timeout, so a slow or hostile scraper costs one small task.
//! [`Endpoint::route`] also answers HTTP/1 requests on the client port
//! (see [`super::answer`]).

use std::cell::{Cell, OnceCell};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};

use super::grpc_server::{
    render_client_bytes, render_executor_connections, render_grpc_server, render_handling_seconds,
};
use super::http1::{parse_request_line, read_head, text, write_response, Response};
use super::{health, render_metrics, version_json, DiskMetrics, ServerState};
use crate::config::parse_listen_url;
use crate::error::Error;
use crate::grpc::{CallMetrics, Shutdown};
use crate::services::ETCD_COMPAT_VERSION;
use crate::tls::Stream;

/// Connections answered at once per listener; more are closed unanswered,
/// so idle or slow clients cannot pile up tasks and buffers.
pub const MAX_OPEN_CONNECTIONS: usize = 64;
/// A client that has not sent its request head by then is dropped.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a scrape gets its answers.
pub struct Endpoint {
    /// Reads the server's state at scrape time (on the sequencer's
    /// executor, so it may borrow the store).
    pub state: Box<dyn Fn() -> Pin<Box<dyn Future<Output = ServerState>>>>,
    pub disk: Rc<DiskMetrics>,
    /// The gRPC call counters of every executor, once the server counts
    /// calls (see [`super::MetricsServer::attach`]).
    pub calls: OnceCell<Arc<CallMetrics>>,
    /// `--metrics extensive`: also the handling time histograms.
    pub extensive: bool,
}

/// One bound `--listen-metrics-urls` URL; `https` ones serve TLS with the
/// client certificates, as etcd's do.
pub struct MetricsListener {
    pub socket: std::net::TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Binds every `--listen-metrics-urls` URL (on the caller's thread, so the
/// real ports are known before the server reports it is up). `tls`: the
/// client listeners' TLS, for `https` URLs.
pub fn bind_listeners(
    urls: &[String],
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Vec<MetricsListener>, Error> {
    urls.iter()
        .map(|u| {
            let addr = parse_listen_url(u)?;
            let tls = if crate::tls::is_https(u) {
                let client = tls.ok_or_else(|| {
                    Error::Tls(format!(
                        "TLS key/cert (--cert-file, --key-file) must be provided for metrics url {u} with HTTPS scheme"
                    ))
                })?;
                Some(crate::tls::metrics_config(client))
            } else {
                None
            };
            let socket = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::io(format!("cannot listen for metrics on {addr}"), e))?;
            Ok(MetricsListener { socket, tls })
        })
        .collect()
}

/// Serves `/metrics`, `/health`, `/livez` and `/readyz` on `listeners`
/// until `shutdown` fires. Must run on a glommio executor.
pub async fn serve(
    listeners: Vec<MetricsListener>,
    endpoint: Rc<Endpoint>,
    shutdown: Rc<Shutdown>,
) {
    let mut loops = Vec::new();
    for l in listeners {
        // SAFETY: the fd comes from a bound, listening std listener whose
        // ownership `into_raw_fd` hands over; nothing else closes it.
        let listener = unsafe { TcpListener::from_raw_fd(l.socket.into_raw_fd()) };
        let (endpoint, shutdown) = (endpoint.clone(), shutdown.clone());
        loops.push(glommio::spawn_local(accept_loop(
            listener, l.tls, endpoint, shutdown,
        )));
    }
    for l in loops {
        l.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    endpoint: Rc<Endpoint>,
    shutdown: Rc<Shutdown>,
) {
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
                let (endpoint, open, tls) = (endpoint.clone(), open.clone(), tls.clone());
                open.set(open.get() + 1);
                glommio::spawn_local(async move {
                    if let Err(e) = answer(stream, tls, &endpoint).await {
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

async fn answer(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    endpoint: &Endpoint,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut stream = match tls {
        None => Stream::Plain(tcp),
        Some(config) => Stream::accept(tcp, config).await?,
    };
    let head = match read_head(&mut stream, Vec::new()).await? {
        Some(h) => h,
        None => return Ok(()),
    };
    let (resp, head_only) = match parse_request_line(&head) {
        Ok((method, path)) => (
            endpoint.route(method, path, Listener::Metrics).await,
            method == "HEAD",
        ),
        Err(why) => (text(400, why), false),
    };
    write_response(&mut stream, &resp, head_only).await
}

/// Which listener a request came in on; etcd answers slightly different
/// paths on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--listen-metrics-urls`.
    Metrics,
    /// HTTP/1 on `--listen-client-urls`, beside gRPC.
    Client,
}

impl Endpoint {
    /// The answer to `method path` on `listener`.
    pub async fn route(&self, method: &str, path: &str, listener: Listener) -> Response {
        // As etcd's Go mux: the Prometheus handler takes any method, the
        // others GET (and HEAD) only, and an unknown path is 404 whatever
        // the method.
        let known = matches!(path, "/health" | "/livez" | "/readyz")
            || (path == "/version" && listener == Listener::Client);
        if known && method != "GET" && method != "HEAD" {
            return text(405, "Method Not Allowed\n");
        }
        match path {
            "/metrics" => {
                let mut body = render_metrics(&(self.state)().await, &self.disk);
                if let Some(calls) = self.calls.get() {
                    let totals = calls.totals();
                    render_grpc_server(&mut body, &totals);
                    if self.extensive {
                        render_handling_seconds(&mut body, &totals);
                    }
                    render_client_bytes(&mut body, calls.bytes());
                    render_executor_connections(&mut body, &calls.connections());
                }
                Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8".to_owned(),
                    body,
                }
            }
            "/health" => {
                let (status, body) = health(&(self.state)().await);
                Response {
                    status,
                    content_type: "application/json".to_owned(),
                    body,
                }
            }
            // etcd serves /version on the client port only.
            "/version" if listener == Listener::Client => Response {
                status: 200,
                content_type: "application/json".to_owned(),
                body: version_json(ETCD_COMPAT_VERSION),
            },
            // etcd 3.5: the process is up / it can serve. A single member
            // that has opened its store is both.
            "/livez" | "/readyz" => text(200, "ok"),
            _ => text(404, "404 page not found\n"),
        }
    }
}

/// The addresses `listeners` are bound to.
pub fn local_addrs(listeners: &[MetricsListener]) -> Result<Vec<SocketAddr>, Error> {
    listeners
        .iter()
        .map(|l| {
            l.socket
                .local_addr()
                .map_err(|e| Error::io("reading a metrics listener's address", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let endpoint = Endpoint {
            state: Box::new(|| {
                Box::pin(async {
                    ServerState {
                        version: "3.5.17".into(),
                        has_leader: true,
                        is_leader: true,
                        leader_changes: 1,
                        ..ServerState::default()
                    }
                })
            }),
            disk: Rc::new(DiskMetrics::default()),
            calls: OnceCell::from(CallMetrics::new(1)),
            extensive: false,
        };
        let get = |method, path| future::block_on(endpoint.route(method, path, Listener::Metrics));
        assert_eq!(get("GET", "/livez").body, "ok");
        assert_eq!(get("GET", "/readyz").status, 200);
        assert_eq!(get("GET", "/nope").status, 404);
        assert_eq!(get("POST", "/metrics").status, 200);
        assert_eq!(get("POST", "/health").status, 405);
        assert_eq!(get("POST", "/nope").status, 404);
        let metrics = get("GET", "/metrics").body;
        assert!(metrics.contains("etcd_server_has_leader 1\n"));
        assert!(metrics.contains("# TYPE grpc_server_handled_total counter\n"));
        let mut types = std::collections::BTreeSet::new();
        for l in metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(types.insert(l.to_owned()), "{l} twice");
        }
        assert_eq!(get("GET", "/health").status, 200);
        // /version: client port only, as etcd.
        assert_eq!(get("GET", "/version").status, 404);
        let version = future::block_on(endpoint.route("GET", "/version", Listener::Client));
        assert_eq!(
            (version.status, version.body.as_str()),
            (200, r#"{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}"#)
        );
    }
}
