//! A request that is not gRPC on an HTTP/2 connection (`curl https://…`
//! negotiates `h2`): the gateway's for `/v3/` paths, the metrics
//! endpoints' otherwise, as etcd hands every non-gRPC request on its
//! client port to its HTTP handlers.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use super::{is_gateway_path, serve, GatewayRequest, ReplyWriter};
use crate::grpc::Router;

/// Answers `req` on its stream. Errors (the client reset the stream, the
/// connection went away) end the answer quietly: there is no one to tell.
pub async fn serve_http2(
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    router: &Router,
    max_message: usize,
) {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path();
    let mut w = Writer {
        respond,
        stream: None,
        head_only: parts.method == http::Method::HEAD,
    };
    if !is_gateway_path(path) {
        let r = crate::metrics::answer(router, parts.method.as_str(), path).await;
        let _ = async {
            w.head(
                r.status,
                &[("content-type", &r.content_type)],
                Some(r.body.len()),
            )
            .await?;
            w.body(r.body.as_bytes()).await?;
            w.end().await
        }
        .await;
        return;
    }
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > max_message.saturating_mul(2) {
            let _ = async {
                let text = "http: request body too large";
                w.head(
                    413,
                    &[("content-type", "text/plain; charset=utf-8")],
                    Some(text.len()),
                )
                .await?;
                w.body(text.as_bytes()).await?;
                w.end().await
            }
            .await;
            return;
        }
    }
    let req = GatewayRequest {
        method: parts.method.as_str(),
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &data,
    };
    let _ = serve(req, router, max_message, &mut w).await;
}

struct Writer {
    respond: SendResponse<Bytes>,
    stream: Option<SendStream<Bytes>>,
    head_only: bool,
}

fn h2_io(e: h2::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl ReplyWriter for Writer {
    async fn head(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        length: Option<usize>,
    ) -> io::Result<()> {
        let mut resp = http::Response::builder().status(status);
        for (name, value) in headers {
            resp = resp.header(name.to_ascii_lowercase(), *value);
        }
        if let Some(n) = length {
            resp = resp.header("content-length", n);
        }
        let resp = resp.body(()).map_err(io::Error::other)?;
        let end = self.head_only || length == Some(0);
        let stream = self.respond.send_response(resp, end).map_err(h2_io)?;
        if !end {
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Sends `data` as the client grants window, so a large answer (a
    /// snapshot) is never queued whole.
    async fn body(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let mut data = Bytes::copy_from_slice(data);
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let granted = poll_fn(|cx| {
                if stream.capacity() > 0 {
                    return Poll::Ready(Ok(stream.capacity()));
                }
                match stream.poll_capacity(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(n))) => Poll::Ready(Ok(n)),
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Err(h2_io(e))),
                    Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "stream closed by client",
                    ))),
                }
            })
            .await?;
            if granted == 0 {
                continue;
            }
            let piece = data.split_to(granted.min(data.len()));
            stream.send_data(piece, false).map_err(h2_io)?;
        }
        Ok(())
    }

    async fn end(&mut self) -> io::Result<()> {
        if let Some(mut stream) = self.stream.take() {
            stream.send_data(Bytes::new(), true).map_err(h2_io)?;
        }
        Ok(())
    }

    /// The client resets the stream (or the connection goes).
    async fn closed(&mut self) {
        let _ = poll_fn(|cx| match self.stream.as_mut() {
            Some(stream) => stream.poll_reset(cx),
            None => self.respond.poll_reset(cx),
        })
        .await;
    }
}
