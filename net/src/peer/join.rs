//! A new member's question to the cluster it joins (`--initial-cluster-state
//! existing`): who am I, and who are the others? etcd's joining member asks
//! a peer's `/members` over HTTP; here the question is a [`StreamKind::Join`]
//! hello on the peer port and the answer a [`HelloReply::Joined`]. Blocking
//! std I/O: it runs once, before the member's executors start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use basalt_raft::NO_NODE;

use super::WireLimits;
use super::{Frame, FrameDecoder, FrameEncoder, Hello, HelloReply, JoinedCluster, StreamKind};
use crate::config::parse_listen_url;
use crate::error::Error;

/// How long one peer gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the members at `peer_urls` (the other members of
/// `--initial-cluster`), in order, who the member with `own_peer_urls` is;
/// the first answer wins. `tls` dials `https` peer URLs.
pub fn discover(
    peer_urls: &[String],
    own_peer_urls: &[String],
    name: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<JoinedCluster, Error> {
    let mut hello = Hello::new(0, NO_NODE, NO_NODE, StreamKind::Join);
    hello.name = Some(name.to_string());
    hello.peer_urls = own_peer_urls.to_vec();
    let mut problems = Vec::new();
    for url in peer_urls {
        match ask(url, &hello, tls.clone()) {
            Ok(HelloReply::Joined(joined)) => {
                tracing::info!(
                    peer = %url,
                    member_id = format!("{:x}", joined.member_id),
                    cluster_id = format!("{:x}", joined.cluster_id),
                    "joining the cluster"
                );
                return Ok(joined);
            }
            Ok(HelloReply::Refused(r)) => problems.push(format!("{url}: {r}")),
            Ok(HelloReply::Accepted { .. } | HelloReply::Answer(_)) => {
                problems.push(format!("{url}: not an answer to a join"))
            }
            Err(e) => problems.push(format!("{url}: {e}")),
        }
    }
    // etcd's words, and what each peer said.
    Err(Error::Config(format!(
        "cannot fetch cluster info from peer urls: could not retrieve cluster information \
         from the given URLs ({}); was this member added with `etcdctl member add` and its \
         peer URLs {}?",
        problems.join("; "),
        own_peer_urls.join(",")
    )))
}

fn ask(
    url: &str,
    hello: &Hello,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<HelloReply, String> {
    let addr = parse_listen_url(url).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&addr, ASK_TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(ASK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(ASK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let limits = WireLimits::default();
    let mut out = Vec::new();
    FrameEncoder::new(limits)
        .hello(hello, &mut out)
        .map_err(|e| e.to_string())?;
    if crate::tls::is_https(url) {
        let config = tls.ok_or("an https peer URL needs the --peer-* TLS flags")?;
        let conn = rustls::ClientConnection::new(config, crate::tls::server_name(url, addr))
            .map_err(|e| e.to_string())?;
        exchange(rustls::StreamOwned::new(conn, tcp), &out, limits)
    } else {
        exchange(tcp, &out, limits)
    }
}

fn exchange(
    mut s: impl Read + Write,
    hello: &[u8],
    limits: WireLimits,
) -> Result<HelloReply, String> {
    s.write_all(hello)
        .and_then(|_| s.flush())
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(limits);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            return match frame.decode().map_err(|e| e.to_string())? {
                Frame::HelloReply(r) => Ok(r),
                _ => Err("the peer answered a join with something else".into()),
            };
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the peer closed the connection".into());
        }
        decoder.push(&buf[..n]);
    }
}
