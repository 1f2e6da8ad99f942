//! HTTP/1.1 on the client port: requests one after another on a kept-alive
//! connection, each body read whole (`Content-Length` or chunked, bounded),
//! answered with a length or, for a stream, chunked. `/v3/` paths go to
//! the gateway, every other path to the metrics endpoints.

use std::io;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{is_gateway_path, reason, serve, GatewayRequest, ReplyWriter};
use crate::grpc::Router;
use crate::tls::Stream;

/// Longest request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers one request may have.
const MAX_HEADERS: usize = 64;
/// How long a kept-alive connection may sit idle, and a request take to
/// arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one write may wait for the client to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A request head, parsed.
struct Head {
    method: String,
    /// Without the query string.
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    keep_alive: bool,
    /// Bytes of the head (what follows is the body).
    len: usize,
}

/// Serves HTTP/1.x requests on `stream` until the client closes it, asks
/// to close, or a request is malformed. `received`: bytes already read.
/// `max_message` is the gRPC message limit; a body may be twice that (JSON
/// spells bytes in base64) and no more.
pub async fn serve_http1(
    mut stream: Stream,
    received: Vec<u8>,
    router: &Router,
    max_message: usize,
) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let max_body = max_message.saturating_mul(2);
    let mut buf = received;
    loop {
        let head = match read_head(&mut stream, &mut buf).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let mut w = Writer::new(&mut stream, false, false);
                return answer_text(&mut w, 400, "400 Bad Request").await;
            }
            // An idle kept-alive connection timing out is a normal end.
            Err(e) if e.kind() == io::ErrorKind::TimedOut && buf.is_empty() => return Ok(()),
            Err(e) => return Err(e),
        };
        buf.drain(..head.len);
        if head
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            stream.flush().await?;
        }
        let body = match read_body(&mut stream, &mut buf, &head.headers, max_body).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let mut w = Writer::new(&mut stream, false, false);
                return answer_text(&mut w, 413, "http: request body too large").await;
            }
            Err(e) => return Err(e),
        };
        let head_only = head.method == "HEAD";
        let mut w = Writer::new(&mut stream, head.keep_alive, head_only);
        w.received = Some(&mut buf);
        if is_gateway_path(&head.path) {
            let req = GatewayRequest {
                method: &head.method,
                path: &head.path,
                query: head.query.as_deref(),
                headers: &head.headers,
                body: &body,
            };
            serve(req, router, max_message, &mut w).await?;
        } else {
            let r = crate::metrics::answer(router, &head.method, &head.path).await;
            w.head(
                r.status,
                &super::http_headers(&r.content_type, r.status),
                Some(r.body.len()),
            )
            .await?;
            w.body(r.body.as_bytes()).await?;
            w.end().await?;
        }
        if !head.keep_alive {
            return stream.close().await;
        }
    }
}

async fn answer_text(w: &mut Writer<'_>, status: u16, text: &str) -> io::Result<()> {
    w.head(
        status,
        &[("Content-Type", "text/plain; charset=utf-8")],
        Some(text.len()),
    )
    .await?;
    w.body(text.as_bytes()).await?;
    w.end().await?;
    w.stream.close().await
}

/// Reads until `buf` holds a whole head and parses it. `None`: the client
/// closed between requests. A malformed or oversized head is
/// `InvalidData`.
async fn read_head(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<Option<Head>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(Some(head));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "request head cut short",
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// The head at the start of `buf`, once all of it is there.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&e.to_string())),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(invalid("malformed request line"));
    };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| invalid(&e.to_string()))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| invalid(&e.to_string()))?;
        headers.append(name, value);
    }
    let connection = headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep_alive = match version {
        1 => !connection.contains("close"),
        _ => connection.contains("keep-alive"),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    Ok(Some(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
        keep_alive,
        len,
    }))
}

/// The request body: `Content-Length` bytes, or a chunked body decoded.
/// Bytes past it stay in `buf` for the next request. Longer than `max`:
/// `InvalidData`.
async fn read_body(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    headers: &HeaderMap,
    max: usize,
) -> io::Result<Vec<u8>> {
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(stream, buf, max).await;
    }
    let len = match headers.get(http::header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| invalid("bad Content-Length"))?,
    };
    if len > max {
        return Err(invalid("request body too large"));
    }
    fill(stream, buf, len).await?;
    Ok(buf.drain(..len).collect())
}

/// Reads until `buf` has at least `n` bytes.
async fn fill(stream: &mut Stream, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    while buf.len() < n {
        let got = stream.read(&mut chunk).await?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "request body cut short",
            ));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

/// Reads until `buf` holds a CRLF-terminated line; returns it (without the
/// CRLF) and removes it from `buf`.
async fn read_line(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf[..i].to_vec();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("chunk line too long"));
        }
        fill(stream, buf, buf.len() + 1).await?;
    }
}

async fn read_chunked(stream: &mut Stream, buf: &mut Vec<u8>, max: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = std::str::from_utf8(&line)
            .ok()
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, if any, up to the blank line.
            for _ in 0..=MAX_HEADERS {
                if read_line(stream, buf).await?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(invalid("too many trailers"));
        }
        // Not `body.len() + size`: a size of 2^64 - 1 would overflow.
        if size > max.saturating_sub(body.len()) {
            return Err(invalid("request body too large"));
        }
        fill(stream, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Writes one answer: a head, then a body of known length or chunks.
struct Writer<'a> {
    stream: &'a mut Stream,
    /// Where bytes the client sends during an answer go (a pipelined next
    /// request), read while watching for the client to leave.
    received: Option<&'a mut Vec<u8>>,
    keep_alive: bool,
    head_only: bool,
    chunked: bool,
    pending: Vec<u8>,
}

impl<'a> Writer<'a> {
    fn new(stream: &'a mut Stream, keep_alive: bool, head_only: bool) -> Writer<'a> {
        Writer {
            stream,
            received: None,
            keep_alive,
            head_only,
            chunked: false,
            pending: Vec::new(),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.stream.write_all(&self.pending).await?;
            self.pending.clear();
        }
        self.stream.flush().await
    }
}

impl ReplyWriter for Writer<'_> {
    async fn head(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        length: Option<usize>,
    ) -> io::Result<()> {
        use std::io::Write;
        let p = &mut self.pending;
        write!(p, "HTTP/1.1 {status} {}\r\n", reason(status))?;
        for (name, value) in headers {
            write!(p, "{name}: {value}\r\n")?;
        }
        match length {
            Some(n) => write!(p, "Content-Length: {n}\r\n")?,
            None => {
                self.chunked = true;
                p.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        }
        if !self.keep_alive {
            p.extend_from_slice(b"Connection: close\r\n");
        }
        p.extend_from_slice(b"\r\n");
        Ok(())
    }

    async fn body(&mut self, data: &[u8]) -> io::Result<()> {
        if self.head_only || data.is_empty() {
            return Ok(());
        }
        if self.chunked {
            use std::io::Write;
            write!(self.pending, "{:x}\r\n", data.len())?;
            self.pending.extend_from_slice(data);
            self.pending.extend_from_slice(b"\r\n");
            // A stream's line goes out now, not with the next one.
            return self.flush().await;
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    async fn end(&mut self) -> io::Result<()> {
        if self.chunked && !self.head_only {
            self.pending.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await
    }

    /// The client closes its side or the connection fails, as Go's server
    /// watches for it: a read that finds the end (a half-close counts as
    /// gone) or an error. A read that finds bytes (a pipelined next request,
    /// kept for it) ends the watch, as Go's background read does, and the
    /// current answer is served whatever follows.
    async fn closed(&mut self) {
        if !self.received.as_ref().is_some_and(|r| r.is_empty()) {
            // Not watching, or a request already waits behind this one.
            return std::future::pending().await;
        }
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => {
                    if let Some(received) = self.received.as_mut() {
                        received.extend_from_slice(&chunk[..n]);
                    }
                    return std::future::pending().await;
                }
                // The read timeout is for requests, not for a client
                // reading a long stream.
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_keep_alive_rules() {
        let raw = b"POST /v3/kv/range?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("POST", "/v3/kv/range")
        );
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-length"], "2");
        assert_eq!(h.len, raw.len() - 2);
        let h = parse_head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .unwrap()
            .is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
        assert!(parse_head(b"\x01\x02 / HTTP/1.1\r\n\r\n").is_err());
    }
}
