//! Repairs one client quirk below HTTP/2: etcdctl 3.4 (grpc-go's
//! passthrough resolver) sends the whole endpoint URL as `:authority`
//! (`http://127.0.0.1:2379`) for `endpoint status/health/hashkv`. grpc-go
//! servers accept that; `h2` resets the stream as malformed. This layer sits
//! between the socket and `h2`, decodes every request header block with the
//! client's HPACK state, and once any `:authority` needs repair, re-encodes
//! that block and every later one as plain literals ("without indexing",
//! so `h2`'s HPACK table never needs to follow ours) with the scheme and
//! path cut off. Every other frame passes through byte for byte.
//!
//! A gRPC client sends one `:authority` on all the requests of a
//! connection (grpc-go's and tonic's channels fix it at dial time), so the
//! first request's header block decides: well-formed, and everything after
//! it is passed through without decoding (HPACK decoding with Huffman
//! strings was ~15% of the server's CPU under a put load); with a URL, the
//! connection is rewritten to its end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite};

/// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE that `h2` announces by default: frames we emit
/// stay within it, and a larger incoming frame is left for `h2` to reject.
const MAX_FRAME_LEN: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE that `h2` announces by default.
const HPACK_TABLE_SIZE: usize = 4096;
/// Largest header block we buffer (h2 refuses lists over 16 KiB anyway).
const MAX_BLOCK_LEN: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

pub struct AuthorityFix<S> {
    inner: S,
    raw: BytesMut,
    out: BytesMut,
    preface_left: usize,
    decoder: loona_hpack::Decoder<'static>,
    /// Set once a block was re-encoded: from then on all blocks are.
    rewriting: bool,
    /// Something we do not understand: hand everything to `h2` unchanged
    /// and let it judge.
    passthrough: bool,
    pending: Option<PendingBlock>,
    eof: bool,
}

struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    frames: BytesMut,
    block: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    /// Like [`AuthorityFix::new`], for a connection whose first bytes
    /// (`received`) were already read from `inner` (to tell HTTP/2 from
    /// HTTP/1): they are processed first, as if read again.
    pub fn with_received(inner: S, received: &[u8]) -> AuthorityFix<S> {
        let mut fix = AuthorityFix::new(inner);
        fix.raw.extend_from_slice(received);
        fix
    }

    pub fn new(inner: S) -> AuthorityFix<S> {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        AuthorityFix {
            inner,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            preface_left: PREFACE_LEN,
            decoder,
            rewriting: false,
            passthrough: false,
            pending: None,
            eof: false,
        }
    }

    /// Moves whatever can be moved from `raw` to `out`; false when more
    /// input is needed.
    fn process(&mut self) -> bool {
        if self.raw.is_empty() {
            return false;
        }
        if self.passthrough {
            let all = self.raw.split();
            self.out.unsplit(all);
            return true;
        }
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            self.preface_left -= n;
            let part = self.raw.split_to(n);
            self.out.unsplit(part);
            return true;
        }
        if self.raw.len() < FRAME_HEADER_LEN {
            return false;
        }
        let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
        if len > MAX_FRAME_LEN {
            self.give_up();
            return true;
        }
        if self.raw.len() < FRAME_HEADER_LEN + len {
            self.raw.reserve(FRAME_HEADER_LEN + len - self.raw.len());
            return false;
        }
        let frame = self.raw.split_to(FRAME_HEADER_LEN + len);
        self.frame(frame);
        true
    }

    fn give_up(&mut self) {
        self.passthrough = true;
        if let Some(p) = self.pending.take() {
            self.out.unsplit(p.frames);
        }
        let rest = self.raw.split();
        self.out.unsplit(rest);
    }

    fn frame(&mut self, frame: BytesMut) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        match kind {
            HEADERS if self.pending.is_none() => {
                let Some(fragment) = header_fragment(flags, payload) else {
                    self.out.unsplit(frame);
                    self.give_up();
                    return;
                };
                let pending = PendingBlock {
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                    block: fragment.to_vec(),
                    frames: frame,
                };
                self.pending = Some(pending);
            }
            CONTINUATION
                if self.pending.as_ref().is_some_and(|p| {
                    p.stream_id == stream_id && p.block.len() + payload.len() <= MAX_BLOCK_LEN
                }) =>
            {
                let p = self.pending.as_mut().expect("checked above");
                p.block.extend_from_slice(payload);
                p.frames.unsplit(frame);
            }
            _ if self.pending.is_some() => {
                // Only CONTINUATION may follow an unfinished HEADERS.
                self.out.unsplit(frame);
                self.give_up();
                return;
            }
            _ => {
                self.out.unsplit(frame);
                return;
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(p) = self.pending.take() {
                self.finish_block(p);
            }
        }
    }

    fn finish_block(&mut self, p: PendingBlock) {
        let headers = match self.decoder.decode(&p.block) {
            Ok(h) => h,
            Err(_) => {
                self.out.unsplit(p.frames);
                self.give_up();
                return;
            }
        };
        let needs_fix = headers
            .iter()
            .any(|(n, v)| n == b":authority" && v.windows(3).any(|w| w == b"://"));
        if !needs_fix && !self.rewriting {
            self.out.unsplit(p.frames);
            // This connection's authority is fine: stop decoding.
            self.give_up();
            return;
        }
        self.rewriting = true;
        let mut block = Vec::with_capacity(p.block.len() * 2);
        for (name, value) in &headers {
            let value = if name == b":authority" {
                fix_authority(value)
            } else {
                value
            };
            encode_literal(&mut block, name, value);
        }
        let chunks: Vec<&[u8]> = if block.is_empty() {
            vec![&[][..]]
        } else {
            block.chunks(MAX_FRAME_LEN).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let mut flags = 0;
            if i == 0 && p.end_stream {
                flags |= END_STREAM;
            }
            if i == last {
                flags |= END_HEADERS;
            }
            let len = chunk.len() as u32;
            self.out.put_slice(&len.to_be_bytes()[1..]);
            self.out.put_u8(kind);
            self.out.put_u8(flags);
            self.out.put_u32(p.stream_id);
            self.out.put_slice(chunk);
        }
    }
}

/// The header block fragment of a HEADERS payload, without padding and
/// priority fields; `None` if the payload is too short for its flags.
fn header_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    if flags & PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// `http://host:port/path` → `host:port`.
fn fix_authority(value: &[u8]) -> &[u8] {
    let rest = match value.windows(3).position(|w| w == b"://") {
        Some(i) => &value[i + 3..],
        None => value,
    };
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => &rest[..i],
        None => rest,
    }
}

/// HPACK "literal header field without indexing — new name", strings not
/// Huffman-coded (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `high` holds the bits
/// above the prefix in the first byte.
fn encode_int(out: &mut Vec<u8>, mut v: usize, n: u32, high: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.len());
                buf[..n].copy_from_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(n));
            }
            if this.process() {
                continue;
            }
            if this.eof {
                // A truncated frame: hand it over as is, then EOF.
                if !this.raw.is_empty() || this.pending.is_some() {
                    this.give_up();
                    continue;
                }
                return Poll::Ready(Ok(0));
            }
            let mut chunk = [0u8; READ_CHUNK];
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(n)) => this.raw.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        f.push(HEADERS);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(block);
        f
    }

    /// Runs `input` through the fix and returns what h2 would read.
    fn run(input: &[u8]) -> Vec<u8> {
        let mut fix = AuthorityFix::new(());
        fix.raw.extend_from_slice(input);
        fix.eof = true;
        while fix.process() {}
        if !fix.raw.is_empty() || fix.pending.is_some() {
            fix.give_up();
        }
        fix.out.to_vec()
    }

    fn decode_first_block(out: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let body = &out[PREFACE_LEN..];
        let len = u32::from_be_bytes([0, body[0], body[1], body[2]]) as usize;
        let mut d = loona_hpack::Decoder::new();
        d.decode(&body[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len])
            .unwrap()
    }

    #[test]
    fn url_authority_is_cut_to_host_and_port_and_later_blocks_stay_decodable() {
        let mut enc = loona_hpack::Encoder::new();
        let bad: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"content-type", b"application/grpc"),
        ];
        let b1 = enc.encode(bad.iter().copied());
        // The second block may index entries the first one added.
        let b2 = enc.encode(bad.iter().copied());
        let mut input = vec![0u8; PREFACE_LEN];
        input.extend(headers_frame(1, END_HEADERS, &b1));
        input.extend(headers_frame(3, END_HEADERS | END_STREAM, &b2));
        let out = run(&input);
        let h = decode_first_block(&out);
        assert!(h.contains(&(b":authority".to_vec(), b"127.0.0.1:2379".to_vec())));
        assert!(h.contains(&(
            b":path".to_vec(),
            b"/etcdserverpb.Maintenance/Status".to_vec()
        )));
        // Second frame: same headers, stream 3, END_STREAM kept.
        let first_len = u32::from_be_bytes([
            0,
            out[PREFACE_LEN],
            out[PREFACE_LEN + 1],
            out[PREFACE_LEN + 2],
        ]) as usize;
        let second = &out[PREFACE_LEN + FRAME_HEADER_LEN + first_len..];
        assert_eq!(second[4], END_HEADERS | END_STREAM);
        assert_eq!(
            u32::from_be_bytes([second[5], second[6], second[7], second[8]]),
            3
        );
        let mut d = loona_hpack::Decoder::new();
        let h2 = d.decode(&second[FRAME_HEADER_LEN..]).unwrap();
        assert!(h2.contains(&(b":authority".to_vec(), b"127.0.0.1:2379".to_vec())));
    }

    #[test]
    fn good_authority_passes_through_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let ok: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"POST"), (b":authority", b"127.0.0.1:2379")];
        let b = enc.encode(ok.iter().copied());
        let mut input = vec![0u8; PREFACE_LEN];
        input.extend(headers_frame(1, END_HEADERS, &b));
        input.extend([0, 0, 1, 0, 1, 0, 0, 0, 1, 42]); // DATA
        assert_eq!(run(&input), input);
    }

    #[test]
    fn after_a_good_first_request_later_blocks_are_not_decoded() {
        let mut enc = loona_hpack::Encoder::new();
        let ok: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"POST"), (b":authority", b"127.0.0.1:2379")];
        let bad: Vec<(&[u8], &[u8])> = vec![(b":method", b"POST"), (b":authority", b"http://h:1")];
        let mut input = vec![0u8; PREFACE_LEN];
        input.extend(headers_frame(
            1,
            END_HEADERS,
            &enc.encode(ok.iter().copied()),
        ));
        input.extend(headers_frame(
            3,
            END_HEADERS,
            &enc.encode(bad.iter().copied()),
        ));
        let mut fix = AuthorityFix::new(());
        fix.raw.extend_from_slice(&input);
        while fix.process() {}
        assert!(fix.passthrough && !fix.rewriting);
        assert_eq!(fix.out.to_vec(), input);
    }

    #[test]
    fn garbage_is_handed_over_unchanged() {
        let mut input = vec![0u8; PREFACE_LEN];
        input.extend(headers_frame(1, END_HEADERS, &[0xff, 0xff, 0xff]));
        assert_eq!(run(&input), input);
        let mut input = vec![0u8; PREFACE_LEN];
        input.extend([0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 1]);
        assert_eq!(run(&input), input);
    }

    #[test]
    fn integers_use_continuation_bytes() {
        let mut v = Vec::new();
        encode_int(&mut v, 1337, 5, 0);
        assert_eq!(v, [31, 154, 10]);
    }
}
