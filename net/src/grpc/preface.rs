//! Telling HTTP/2 from HTTP/1.x on the client port by the first bytes, as
//! etcd does (it serves `/metrics`, `/health` and `/version` on the same
//! listener as gRPC). An HTTP/2 client opens with the fixed connection
//! preface; any HTTP/1 request line differs from it within its first
//! bytes. Segments may split the preface anywhere, so we read until the
//! bytes either diverge from it or contain all of it.

use futures_lite::{AsyncRead, AsyncReadExt};

/// RFC 9113 §3.4.
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection turned out to speak, with the bytes already read
/// (to be replayed to whichever protocol serves it).
#[derive(Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// The HTTP/2 preface, or bytes that cannot start an HTTP/1 request
    /// (a TLS hello, garbage): `h2` serves or rejects them, as before the
    /// client port spoke HTTP/1.
    Http2(Vec<u8>),
    /// An HTTP/1.x request line begins here (or something close enough
    /// for the HTTP/1 side to answer 400).
    Http1(Vec<u8>),
    /// The peer closed before its bytes told.
    Closed,
}

/// Which protocol `buf` (everything read so far) is: `Some(true)` for
/// HTTP/2 (or not HTTP/1), `Some(false)` for HTTP/1; `None`: still a proper
/// prefix of the HTTP/2 preface.
pub fn classify(buf: &[u8]) -> Option<bool> {
    // Every HTTP/1 method starts with an uppercase letter.
    if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
        return Some(true);
    }
    let n = buf.len().min(HTTP2_PREFACE.len());
    if buf[..n] != HTTP2_PREFACE[..n] {
        Some(false)
    } else if n == HTTP2_PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// Reads from `stream` until [`classify`] decides.
pub async fn read_first_bytes<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<FirstBytes> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(FirstBytes::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        match classify(&buf) {
            Some(true) => return Ok(FirstBytes::Http2(buf)),
            Some(false) => return Ok(FirstBytes::Http1(buf)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    /// Hands out one scripted piece per read, like TCP segments.
    struct Segments(Vec<Vec<u8>>);

    impl AsyncRead for Segments {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.0.is_empty() {
                return std::task::Poll::Ready(Ok(0));
            }
            let piece = self.0.remove(0);
            buf[..piece.len()].copy_from_slice(&piece);
            std::task::Poll::Ready(Ok(piece.len()))
        }
    }

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(HTTP2_PREFACE), Some(true));
        assert_eq!(classify(b"GET /metrics HTTP/1.1\r\n"), Some(false));
        assert_eq!(classify(b"POST"), Some(false));
        // The preface line with another version is an HTTP/1 request.
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(false));
        // Not a method: left to h2, which rejects it at once.
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(true));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(true));
    }

    #[test]
    fn a_preface_split_byte_by_byte_is_http2_and_nothing_is_lost() {
        let mut pieces: Vec<Vec<u8>> = HTTP2_PREFACE.iter().map(|b| vec![*b]).collect();
        pieces.push(vec![0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
        let got = block_on(read_first_bytes(&mut Segments(pieces))).unwrap();
        assert_eq!(got, FirstBytes::Http2(HTTP2_PREFACE.to_vec()));
        let mut s = Segments(vec![HTTP2_PREFACE[..5].to_vec(), {
            let mut rest = HTTP2_PREFACE[5..].to_vec();
            rest.extend([0, 0, 0, 4]);
            rest
        }]);
        let mut expect = HTTP2_PREFACE.to_vec();
        expect.extend([0, 0, 0, 4]);
        assert_eq!(
            block_on(read_first_bytes(&mut s)).unwrap(),
            FirstBytes::Http2(expect)
        );
    }

    #[test]
    fn http1_and_early_close() {
        let got = block_on(read_first_bytes(&mut Segments(vec![
            b"P".to_vec(),
            b"UT / HTTP/1.1\r\n".to_vec(),
        ])))
        .unwrap();
        assert_eq!(got, FirstBytes::Http1(b"PUT / HTTP/1.1\r\n".to_vec()));
        let got = block_on(read_first_bytes(&mut Segments(vec![b"PRI".to_vec()]))).unwrap();
        assert_eq!(got, FirstBytes::Closed);
    }
}
