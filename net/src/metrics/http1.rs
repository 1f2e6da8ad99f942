//! The little of HTTP/1.1 the scrape endpoints need: read one bounded
//! request head, parse its request line, write one response and close
//! (`Connection: close`). Used by the `--listen-metrics-urls` listeners and
//! by HTTP/1 requests on the client port.

use std::io::ErrorKind;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request line plus headers we read; scrapers send a few hundred
/// bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// An answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// A `text/plain` answer.
pub fn text(status: u16, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8".to_owned(),
        body: body.to_owned(),
    }
}

/// Reads until the blank line ending the head, starting from `received`
/// (bytes of it already read). `None`: the peer closed before sending
/// anything.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    received: Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = received;
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "request head too large",
            ));
        }
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
    }
}

/// `METHOD /path[?query] HTTP/1.x` → (method, path without query).
pub fn parse_request_line(head: &[u8]) -> Result<(&str, &str), &'static str> {
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

/// Writes `resp` (only its head when `head_only`, for HEAD) and closes.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    resp: &Response,
    head_only: bool,
) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

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
    fn head_reading_starts_from_received_bytes() {
        let mut rest: &[u8] = b"/x HTTP/1.1\r\n\r\n";
        let head = block_on(read_head(&mut rest, b"GET ".to_vec())).unwrap();
        assert_eq!(head.unwrap(), b"GET /x HTTP/1.1\r\n\r\n");
        // Everything already received: no read at all.
        let mut nothing: &[u8] = b"";
        let head = block_on(read_head(&mut nothing, b"GET / HTTP/1.1\r\n\r\n".to_vec()));
        assert!(head.unwrap().is_some());
        assert!(block_on(read_head(&mut nothing, Vec::new()))
            .unwrap()
            .is_none());
        assert!(block_on(read_head(&mut nothing, b"GET".to_vec())).is_err());
        let big = vec![b'a'; MAX_REQUEST_HEAD_BYTES + 1];
        assert!(block_on(read_head(&mut nothing, big)).is_err());
    }

    #[test]
    fn responses_carry_length_and_close() {
        let mut out = Vec::new();
        block_on(write_response(&mut out, &text(404, "no\n"), false)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\nno\n"
        );
        let mut out = Vec::new();
        block_on(write_response(&mut out, &text(200, "ok"), true)).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"));
    }
}
