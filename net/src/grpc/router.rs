//! Maps `:path` (`/package.Service/Method`) to the handler of that method.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::call::{Metadata, RequestStream, ResponseSink};
use super::call_metrics::ExecutorCalls;
use super::status::{Code, Status};

/// What a handler returns: the call's final status (trailers).
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), Status>>>>;

/// One gRPC method. Lives on one executor (`!Send`), shared by its calls.
pub trait Handler {
    fn call(
        &self,
        meta: Metadata,
        requests: RequestStream,
        responses: ResponseSink,
    ) -> HandlerFuture;
}

impl<F> Handler for F
where
    F: Fn(Metadata, RequestStream, ResponseSink) -> HandlerFuture,
{
    fn call(
        &self,
        meta: Metadata,
        requests: RequestStream,
        responses: ResponseSink,
    ) -> HandlerFuture {
        self(meta, requests, responses)
    }
}

/// Wraps a request → response function as a unary method handler.
pub fn unary<Req, Resp, F, Fut>(f: F) -> Rc<dyn Handler>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    F: Fn(Req, Metadata) -> Fut + 'static,
    Fut: Future<Output = Result<Resp, Status>> + 'static,
{
    let f = Rc::new(f);
    Rc::new(
        move |meta: Metadata, mut requests: RequestStream, mut responses: ResponseSink| {
            let f = f.clone();
            Box::pin(async move {
                let req: Req = requests.next().await?.ok_or_else(|| {
                    Status::new(Code::Internal, "grpc: unary call ended without a request")
                })?;
                let resp = f(req, meta).await?;
                responses.send(&resp).await
            }) as HandlerFuture
        },
    )
}

/// Wraps a request → stream-of-responses function as a server-streaming
/// handler (Maintenance.Snapshot).
pub fn server_streaming<Req, F, Fut>(f: F) -> Rc<dyn Handler>
where
    Req: prost::Message + Default + 'static,
    F: Fn(Req, Metadata, ResponseSink) -> Fut + 'static,
    Fut: Future<Output = Result<(), Status>> + 'static,
{
    let f = Rc::new(f);
    Rc::new(
        move |meta: Metadata, mut requests: RequestStream, responses: ResponseSink| {
            let f = f.clone();
            Box::pin(async move {
                let req: Req = requests.next().await?.ok_or_else(|| {
                    Status::new(
                        Code::Internal,
                        "grpc: streaming call ended without a request",
                    )
                })?;
                f(req, meta, responses).await
            }) as HandlerFuture
        },
    )
}

/// Paths under this prefix are basalt's own calls between executors
/// (e.g. an HTTP/1.1 request on the client port forwarded to the executor
/// that can answer it). Clients never reach them: a client call to such a
/// path is answered as an unknown service.
pub const INTERNAL_PATH_PREFIX: &str = "/basalt.internal.";

/// The method table of one executor, and where its calls are counted.
#[derive(Default, Clone)]
pub struct Router {
    methods: HashMap<String, Rc<dyn Handler>>,
    /// Serves paths with no handler here (forwarding to another executor).
    fallback: Option<Rc<dyn Handler>>,
    /// This executor's slot of the server's call counters.
    calls: Option<ExecutorCalls>,
    /// Decides, before any handler runs, whether a client's call to a path
    /// is served at all (a learner refuses most of them).
    gate: Option<Gate>,
}

/// See [`Router::set_gate`].
pub type Gate = Rc<dyn Fn(&str) -> Result<(), Status>>;

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `handler` for `path` (`/etcdserverpb.KV/Range`), replacing
    /// any earlier one.
    pub fn add(&mut self, path: &str, handler: Rc<dyn Handler>) -> &mut Router {
        self.methods.insert(path.to_owned(), handler);
        self
    }

    /// The handler registered for `path` itself, if any (to wrap it).
    pub fn method(&self, path: &str) -> Option<Rc<dyn Handler>> {
        self.methods.get(path).cloned()
    }

    /// Every path without its own handler goes to `handler`.
    pub fn set_fallback(&mut self, handler: Rc<dyn Handler>) -> &mut Router {
        self.fallback = Some(handler);
        self
    }

    /// Every client call is first put to `gate` with its path; an error
    /// answers the call.
    pub fn set_gate(&mut self, gate: Gate) -> &mut Router {
        self.gate = Some(gate);
        self
    }

    /// Counts the calls this router serves (and their messages) in `calls`.
    pub fn count_calls(&mut self, calls: ExecutorCalls) -> &mut Router {
        self.calls = Some(calls);
        self
    }

    /// Where this executor counts its calls, if anywhere.
    pub fn calls(&self) -> Option<&ExecutorCalls> {
        self.calls.as_ref()
    }

    /// The handler for a path a client asked for: like [`Router::route`],
    /// but basalt's internal paths are unknown to clients.
    pub fn route_client(&self, path: &str) -> Result<Rc<dyn Handler>, Status> {
        if path.starts_with(INTERNAL_PATH_PREFIX) {
            return Err(unknown_service(path));
        }
        if let Some(gate) = &self.gate {
            gate(path)?;
        }
        self.route(path)
    }

    /// The handler for `path`, or grpc-go's UNIMPLEMENTED status for it.
    pub fn route(&self, path: &str) -> Result<Rc<dyn Handler>, Status> {
        if let Some(h) = self.methods.get(path).or(self.fallback.as_ref()) {
            return Ok(h.clone());
        }
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.rsplit_once('/'))
        else {
            return Err(Status::new(
                Code::Unimplemented,
                format!("malformed method name: {path:?}"),
            ));
        };
        let prefix = format!("/{service}/");
        if self.methods.keys().any(|k| k.starts_with(&prefix)) {
            Err(Status::new(
                Code::Unimplemented,
                format!("unknown method {method} for service {service}"),
            ))
        } else {
            Err(unknown_service(path))
        }
    }
}

fn unknown_service(path: &str) -> Status {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.rsplit_once('/'))
        .map_or(path, |(s, _)| s);
    Status::new(Code::Unimplemented, format!("unknown service {service}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut r = Router::new();
        r.add(
            "/etcdserverpb.KV/Range",
            Rc::new(|_: Metadata, _: RequestStream, _: ResponseSink| {
                Box::pin(async { Ok(()) }) as HandlerFuture
            }),
        );
        r
    }

    #[test]
    fn unknown_paths_get_grpc_go_messages() {
        let r = router();
        assert!(r.route("/etcdserverpb.KV/Range").is_ok());
        let e = r.route("/etcdserverpb.KV/Nope").err().unwrap();
        assert_eq!(e.code, Code::Unimplemented);
        assert_eq!(e.message, "unknown method Nope for service etcdserverpb.KV");
        let e = r.route("/x.Y/Z").err().unwrap();
        assert_eq!(e.message, "unknown service x.Y");
        let e = r.route("nonsense").err().unwrap();
        assert_eq!(e.message, "malformed method name: \"nonsense\"");
    }

    #[test]
    fn internal_paths_are_hidden_from_clients() {
        let mut r = router();
        let internal = format!("{INTERNAL_PATH_PREFIX}X/Y");
        r.add(
            &internal,
            Rc::new(|_: Metadata, _: RequestStream, _: ResponseSink| {
                Box::pin(async { Ok(()) }) as HandlerFuture
            }),
        );
        assert!(r.route(&internal).is_ok());
        let e = r.route_client(&internal).err().unwrap();
        assert_eq!(e.message, "unknown service basalt.internal.X");
        assert!(r.route_client("/etcdserverpb.KV/Range").is_ok());
    }
}
