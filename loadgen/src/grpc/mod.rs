//! The lean gRPC path: unary etcd calls over one HTTP/2 connection with
//! `h2` and `prost`, nothing in between.
//!
//! tonic puts a tower stack in front of every call (a buffer task fed by a
//! channel, a oneshot back, a body adapter, a spawned task per request in
//! hyper); profiled under `range --clients 100` that stack and its
//! allocations were most of loadgen's CPU, and without it a request costs
//! 7–10 µs of client CPU instead of 18–22 µs
//! (docs/benchmarks/loadgen-vs-etcd-benchmark.md). On a
//! 2-core machine the client's CPU is taken from the server under test, so
//! the KV workloads (`put`, `range`, `txn-put`, `txn-mixed`) go through
//! this path instead; every other call (watch, lease, compaction, the
//! profiles) stays on `etcd-client`.
//!
//! A [`Channel`] is one HTTP/2 connection; it is cheap to clone, and calls
//! on clones are multiplexed as concurrent streams. When the connection
//! fails, the call that finds it gone fails (and counts as a failed
//! request) and the next call dials a new one, as tonic's channel does. It
//! talks to one endpoint, where etcd-client balances each call over all of
//! them. A call encodes its request straight into the frame it sends and
//! decodes the response from the frame it received (byte fields borrow
//! it).
//!
//! ```text
//! use crate::grpc::{messages::{path, RangeRequest, RangeResponse}, Channel};
//! let ch = Channel::connect("http://127.0.0.1:2379", None, false).await?;
//! let req = RangeRequest { key: "foo".into(), ..Default::default() };
//! let resp: RangeResponse = ch.unary(path::RANGE, &req).await?;
//! ```

pub mod messages;
mod tls;

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri};
use prost::Message;
use tokio::net::TcpStream;

pub use tls::TlsConfig;

use crate::connection::MAX_MESSAGE_BYTES;

/// A gRPC message is framed by a compression flag and a 32-bit length.
const FRAME_PREFIX: usize = 5;

/// HTTP/2 stream window: a single-key response fits many times over, and
/// a large range need not wait for window updates every 64 KiB.
const STREAM_WINDOW: u32 = 4 << 20;

/// Connection window, shared by the connection's concurrent streams.
const CONNECTION_WINDOW: u32 = 64 << 20;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with a non-zero `grpc-status`.
    Status { code: u32, message: String },
    /// The HTTP/2 connection or stream failed.
    Transport(h2::Error),
    /// The connection was lost and could not be dialled again.
    Connect(String),
    /// The answer was not a well-formed gRPC response.
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { code, message } => write!(f, "grpc-status {code}: {message}"),
            Self::Transport(e) => write!(f, "transport: {e}"),
            Self::Connect(m) => write!(f, "reconnecting: {m}"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<h2::Error> for CallError {
    fn from(e: h2::Error) -> Self {
        Self::Transport(e)
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad endpoint `{0}`: {1}")]
    Endpoint(String, String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: HTTP/2 handshake: {1}")]
    Handshake(String, h2::Error),
    #[error("{0}: TLS: {1}")]
    Tls(String, String),
}

/// Where a channel connects, and what every request on it carries.
struct Target {
    endpoint: String,
    scheme: Scheme,
    authority: Authority,
    port: u16,
    tls: Option<TlsConfig>,
    headers: HeaderMap,
}

/// The live connection's handle, numbered so that a task that saw an old
/// connection fail does not drop a newer one another task dialled.
#[derive(Default)]
struct Live {
    generation: u64,
    send: Option<h2::client::SendRequest<Bytes>>,
}

/// One HTTP/2 connection to one endpoint, dialled again after it fails.
#[derive(Clone)]
pub struct Channel {
    target: Arc<Target>,
    live: Arc<std::sync::Mutex<Live>>,
    /// Held while dialling, so that the clients of a lost connection dial
    /// one new connection, not one each.
    dialling: Arc<tokio::sync::Mutex<()>>,
}

impl Channel {
    /// Connects to `endpoint` (`http://host:port`, `https://…`, or
    /// `host:port`, which means https when `tls` is given). With
    /// `require_leader` every call carries etcd's `hasleader` metadata.
    pub async fn connect(
        endpoint: &str,
        tls: Option<&TlsConfig>,
        require_leader: bool,
    ) -> Result<Self, ConnectError> {
        let bad = |m: String| ConnectError::Endpoint(endpoint.to_owned(), m);
        let with_scheme = if endpoint.contains("://") {
            endpoint.to_owned()
        } else if tls.is_some() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        };
        let uri: Uri = with_scheme.parse().map_err(|e| bad(format!("{e}")))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("no host:port".into()))?;
        let port = authority.port_u16().ok_or_else(|| bad("no port".into()))?;
        if scheme == Scheme::HTTPS && tls.is_none() {
            return Err(bad(
                "https needs TLS settings (--cacert, or --cert and --key)".into(),
            ));
        }
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if require_leader {
            headers.insert("hasleader", HeaderValue::from_static("true"));
        }
        let target = Target {
            endpoint: endpoint.to_owned(),
            scheme,
            authority,
            port,
            tls: tls.cloned(),
            headers,
        };
        let send = dial(&target).await?;
        Ok(Self {
            target: Arc::new(target),
            live: Arc::new(std::sync::Mutex::new(Live {
                generation: 0,
                send: Some(send),
            })),
            dialling: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        // Nothing can panic while the lock is held; a poisoned lock still
        // holds a consistent value.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connection, dialled anew if the last one failed.
    async fn connection(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), CallError> {
        let current = |live: &Live| live.send.clone().map(|s| (live.generation, s));
        if let Some(found) = current(&self.live()) {
            return Ok(found);
        }
        let _dialling = self.dialling.lock().await;
        if let Some(found) = current(&self.live()) {
            return Ok(found);
        }
        let send = dial(&self.target)
            .await
            .map_err(|e| CallError::Connect(e.to_string()))?;
        let mut live = self.live();
        live.generation += 1;
        live.send = Some(send.clone());
        Ok((live.generation, send))
    }

    /// Drops connection `generation` after it failed, unless it has
    /// already been replaced.
    fn lost(&self, generation: u64) {
        let mut live = self.live();
        if live.generation == generation {
            live.send = None;
        }
    }

    /// Calls unary method `path` with `request`.
    pub async fn unary<Q: Message, R: Message + Default>(
        &self,
        path: &'static str,
        request: &Q,
    ) -> Result<R, CallError> {
        let body = encode_frame(request);
        let uri = Uri::builder()
            .scheme(self.target.scheme.clone())
            .authority(self.target.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .map_err(|e| CallError::Protocol(format!("request URI: {e}")))?;
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        *head.headers_mut() = self.target.headers.clone();
        let (generation, send) = self.connection().await?;
        // `ready` fails only when the connection is gone.
        let mut send = send.ready().await.inspect_err(|_| self.lost(generation))?;
        let (response, mut stream) = send.send_request(head, false)?;
        stream.send_data(body, true)?;
        let response = response.await?;
        let (parts, mut body) = response.into_parts();
        // A call that fails before any message answers with headers only.
        check_status(&parts.headers)?;
        if parts.status != http::StatusCode::OK {
            return Err(CallError::Protocol(format!("HTTP status {}", parts.status)));
        }
        let mut message = Received::default();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            if message.len() + chunk.len() > FRAME_PREFIX + MAX_MESSAGE_BYTES {
                return Err(CallError::Protocol(format!(
                    "response over {MAX_MESSAGE_BYTES} bytes"
                )));
            }
            // Hand the window back at once: the bytes are ours now.
            let _ = body.flow_control().release_capacity(chunk.len());
            message.push(chunk);
        }
        match body.trailers().await? {
            Some(trailers) => check_status(&trailers)?,
            None => return Err(CallError::Protocol("no trailers (grpc-status)".into())),
        }
        decode_frame(message.into_bytes())
    }
}

/// Opens a connection to `target` and starts driving it.
async fn dial(target: &Target) -> Result<h2::client::SendRequest<Bytes>, ConnectError> {
    let endpoint = || target.endpoint.clone();
    let host = target.authority.host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, target.port))
        .await
        .map_err(|e| ConnectError::Io(endpoint(), e))?;
    tcp.set_nodelay(true)
        .map_err(|e| ConnectError::Io(endpoint(), e))?;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    match &target.tls {
        Some(tls) if target.scheme == Scheme::HTTPS => {
            let stream = tls
                .connect(host, tcp)
                .await
                .map_err(|e| ConnectError::Tls(endpoint(), e.to_string()))?;
            let (send, conn) = builder
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|e| ConnectError::Handshake(endpoint(), e))?;
            tokio::spawn(drive(conn));
            Ok(send)
        }
        _ => {
            let (send, conn) = builder
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(|e| ConnectError::Handshake(endpoint(), e))?;
            tokio::spawn(drive(conn));
            Ok(send)
        }
    }
}

/// Runs the connection until it closes; calls on it fail from then on.
async fn drive<T>(conn: h2::client::Connection<T, Bytes>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = conn.await;
}

/// `request` as a gRPC frame: no compression, length, message.
fn encode_frame<Q: Message>(request: &Q) -> Bytes {
    let len = request.encoded_len();
    let mut buf = BytesMut::with_capacity(FRAME_PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Cannot fail: the buffer was sized by encoded_len.
    let _ = request.encode(&mut buf);
    buf.freeze()
}

/// The one message in a unary response body.
fn decode_frame<R: Message + Default>(mut frame: Bytes) -> Result<R, CallError> {
    if frame.len() < FRAME_PREFIX {
        return Err(CallError::Protocol(format!(
            "response body of {} bytes, less than a frame prefix",
            frame.len()
        )));
    }
    let compressed = frame.get_u8();
    let len = frame.get_u32() as usize;
    if compressed != 0 {
        return Err(CallError::Protocol(
            "compressed response (none was asked for)".into(),
        ));
    }
    if frame.len() != len {
        return Err(CallError::Protocol(format!(
            "frame says {len} bytes, body has {}",
            frame.len()
        )));
    }
    R::decode(frame).map_err(|e| CallError::Protocol(format!("decoding the response: {e}")))
}

/// `grpc-status` of a header block: absent (no verdict yet) or 0 is fine.
fn check_status(headers: &HeaderMap) -> Result<(), CallError> {
    let Some(status) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code = status
        .to_str()
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| CallError::Protocol(format!("grpc-status {status:?}")))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Err(CallError::Status { code, message })
}

/// gRPC percent-encodes `grpc-message`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response body as it arrives: usually one DATA frame, kept as is;
/// several are joined.
#[derive(Default)]
struct Received {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Received {
    fn len(&self) -> usize {
        match (&self.joined, &self.first) {
            (Some(joined), _) => joined.len(),
            (None, Some(first)) => first.len(),
            (None, None) => 0,
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&chunk);
        } else if let Some(first) = self.first.take() {
            let mut joined = BytesMut::with_capacity(first.len() + chunk.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&chunk);
            self.joined = Some(joined);
        } else {
            self.first = Some(chunk);
        }
    }

    fn into_bytes(self) -> Bytes {
        match (self.joined, self.first) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(first)) => first,
            (None, None) => Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::messages::{PutRequest, PutResponse, ResponseHeader};
    use super::*;

    #[test]
    fn a_frame_round_trips_and_a_short_one_is_refused() {
        let req = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        };
        let frame = encode_frame(&req);
        assert_eq!(frame[0], 0);
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - FRAME_PREFIX
        );
        let back: PutRequest = decode_frame(frame.clone()).unwrap();
        assert_eq!(back, req);
        // A body cut short must not decode as a (shorter) message.
        let cut = frame.slice(..frame.len() - 1);
        assert!(decode_frame::<PutRequest>(cut).is_err());
    }

    #[test]
    fn a_body_split_over_frames_is_joined() {
        let resp = PutResponse {
            header: Some(ResponseHeader {
                revision: 42,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let frame = encode_frame(&resp);
        let mut received = Received::default();
        received.push(frame.slice(..3));
        received.push(frame.slice(3..7));
        received.push(frame.slice(7..));
        // The size limit is checked against this.
        assert_eq!(received.len(), frame.len());
        let back: PutResponse = decode_frame(received.into_bytes()).unwrap();
        assert_eq!(back.header.unwrap().revision, 42);
    }

    #[test]
    fn a_non_zero_status_is_an_error_with_its_message() {
        let mut h = HeaderMap::new();
        assert!(check_status(&h).is_ok());
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_status(&h).is_ok());
        h.insert("grpc-status", HeaderValue::from_static("9"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver:%20mvcc:%20required%20revision"),
        );
        match check_status(&h) {
            Err(CallError::Status { code, message }) => {
                assert_eq!(code, 9);
                assert_eq!(message, "etcdserver: mvcc: required revision");
            }
            other => panic!("{other:?}"),
        }
    }
}
