//! The peer transport on the sequencer's executor: one outbound TCP stream
//! per peer, opened by the member that has messages to send (so each pair
//! of members has two streams, one each way), carrying batches of Raft
//! messages in the frames of [`super::frame`].
//!
//! - **Bounded.** Each peer has a queue of at most [`MAX_QUEUED_MESSAGES`]
//!   messages; a full queue drops the message and reports the peer
//!   unreachable to Raft (which then probes it instead of pipelining). The
//!   driver never waits on a peer.
//! - **Reconnecting.** A lost or refused connection drops what was queued
//!   (Raft retransmits), reports the peer unreachable, and is dialled
//!   again after a backoff from [`MIN_BACKOFF`] doubling to
//!   [`MAX_BACKOFF`]. A write that does not finish within
//!   [`WRITE_TIMEOUT`] (a peer paused or gone silent) closes the stream.
//! - **Checked.** Every stream opens with a [`Hello`] naming the cluster
//!   and both members; a member of another cluster, an unknown member or a
//!   misrouted stream is refused with the reason, as etcd refuses with
//!   "cluster ID mismatch". After that every batch must come from the
//!   member that said hello and be addressed to us ([`check_batch`]).
//! - **TLS** when a peer URL is `https://`: the dialler wraps the stream
//!   in TLS ([`Transport::set_dial_tls`]), the listener's acceptor before
//!   [`Transport::serve_inbound`]; everything above sees one [`Stream`].
//! - **Snapshots** (a follower behind the leader's log) go on a stream of
//!   their own, one at a time per peer: the store as of a pinned read view,
//!   written by a blocking thread into a bounded queue of chunks
//!   ([`SNAPSHOT_CHUNK_BYTES`] each, at most [`SNAPSHOT_CHUNKS_QUEUED`]
//!   queued, so memory stays bounded whatever the store's size), then the
//!   Raft message announcing it. The follower writes the chunks to a file
//!   and hands the message to Raft only once the file is complete and
//!   synced.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use basalt_raft::{Message, MessageType, NodeId, NO_NODE};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{
    check_batch, Frame, FrameDecoder, FrameEncoder, Hello, HelloReply, PeerAnswer, PeerQuery,
    Refusal, StreamKind, WireLimits,
};
use crate::config::parse_listen_url;
use crate::grpc::Shutdown;
use crate::metrics::{Histogram, PeerStats, PEER_RTT_BUCKETS};
use crate::node::Doorbell;
use crate::tls::Stream;

/// Messages queued for one peer, at most.
pub const MAX_QUEUED_MESSAGES: usize = 4096;
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A write to a peer taking longer than this closes the stream (etcd's
/// `ConnWriteTimeout`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a dial and for either side of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often every member pings each peer for its round trip histogram
/// (etcd probes every 4 s and observes its smoothed round trip every 30 s).
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes read from a peer's stream per read.
const READ_CHUNK: usize = 64 << 10;
/// Store bytes per snapshot chunk (the wire's default chunk limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = super::DEFAULT_MAX_SNAPSHOT_CHUNK_DATA;
/// Chunks written ahead of the socket, at most.
pub const SNAPSHOT_CHUNKS_QUEUED: usize = 4;

/// An answer being worked out (a hash over the whole store takes a while).
pub type Answering = std::pin::Pin<Box<dyn std::future::Future<Output = PeerAnswer>>>;

/// Where received messages and transport reports go (the member's Raft
/// driver), and where snapshots come from and go to.
pub trait PeerSink {
    fn deliver(&self, batch: Vec<Message>);
    fn unreachable(&self, peer: NodeId);
    /// A snapshot sent to `peer` went out whole (or did not).
    fn snapshot_sent(&self, peer: NodeId, ok: bool);
    /// The store to send a follower: a pinned view and the member metadata
    /// of the same moment (the snapshot message's data).
    fn snapshot_image(&self) -> Option<(basalt_engine::mvcc::ReadView, Vec<u8>)>;
    /// Where received snapshot files are written.
    fn snapshot_dir(&self) -> std::path::PathBuf;
    /// A snapshot from the leader is complete and synced at `path`;
    /// `message` is the Raft message announcing it.
    fn snapshot_received(&self, path: std::path::PathBuf, message: Message);
    /// The answer to a joining member with `peer_urls` (see
    /// [`StreamKind::Join`]): who it is in the cluster, or a refusal.
    fn join_reply(&self, peer_urls: &[String]) -> HelloReply {
        let _ = peer_urls;
        HelloReply::Refused(Refusal::UnknownMember { id: NO_NODE })
    }
    /// A peer refused this member because it was removed from the
    /// cluster (while it was down, say): it must stop.
    fn removed(&self) {}
    /// The answer to a member's [`PeerQuery`] (see [`StreamKind::Query`]).
    fn answer(&self, query: PeerQuery) -> Answering {
        let _ = query;
        Box::pin(async { PeerAnswer::NotLeader })
    }
}

/// The transport of one member.
pub struct Transport {
    /// This transport, for the link tasks it starts.
    this: Weak<Transport>,
    me: NodeId,
    cluster_id: u64,
    limits: WireLimits,
    sink: Weak<dyn PeerSink>,
    /// Current members other than us, with their peer URLs.
    peers: RefCell<HashMap<NodeId, Vec<String>>>,
    /// Members removed from the cluster: refused as such.
    removed: RefCell<std::collections::HashSet<NodeId>>,
    /// Bytes received from each peer's streams.
    received_bytes: RefCell<HashMap<NodeId, u64>>,
    /// Round trips of the pings to each peer.
    round_trips: RefCell<HashMap<NodeId, Histogram>>,
    links: RefCell<HashMap<NodeId, Rc<Link>>>,
    /// Peers a snapshot is being sent to.
    sending_snapshots: RefCell<std::collections::HashSet<NodeId>>,
    shutdown: Rc<Shutdown>,
    /// TLS for dialling `https` peer URLs (the `--peer-*` flags).
    dial_tls: RefCell<Option<Arc<rustls::ClientConfig>>>,
}

impl Transport {
    /// A transport for member `me` of `cluster_id`; `peers` are the other
    /// members and their peer URLs. Must be created on the executor it
    /// serves.
    pub fn new(
        me: NodeId,
        cluster_id: u64,
        peers: HashMap<NodeId, Vec<String>>,
        sink: Weak<dyn PeerSink>,
    ) -> Rc<Transport> {
        Rc::new_cyclic(|this| Transport {
            this: this.clone(),
            me,
            cluster_id,
            limits: WireLimits::default(),
            sink,
            peers: RefCell::new(peers),
            removed: RefCell::default(),
            received_bytes: RefCell::default(),
            round_trips: RefCell::default(),
            links: RefCell::new(HashMap::new()),
            sending_snapshots: RefCell::new(std::collections::HashSet::new()),
            shutdown: Rc::new(Shutdown::new()),
            dial_tls: RefCell::new(None),
        })
    }

    /// TLS for dialling `https` peer URLs from now on (set before the
    /// first dial).
    pub fn set_dial_tls(&self, tls: Option<Arc<rustls::ClientConfig>>) {
        *self.dial_tls.borrow_mut() = tls;
    }

    /// Closes every stream and stops dialling.
    pub fn stop(&self) {
        self.shutdown.fire();
        for link in self.links.borrow().values() {
            link.bell.ring();
        }
    }

    /// Queues messages for their peers (never waits).
    pub fn queue(&self, messages: Vec<Message>) {
        let mut full: Vec<NodeId> = Vec::new();
        for m in messages {
            let to = m.to;
            if m.msg_type == MessageType::Snapshot {
                self.start_snapshot(m);
                continue;
            }
            let Some(link) = self.link(to) else {
                full.push(to);
                continue;
            };
            let mut q = link.queue.borrow_mut();
            if q.len() >= MAX_QUEUED_MESSAGES {
                link.failures.set(link.failures.get() + 1);
                full.push(to);
                continue;
            }
            q.push_back(m);
            drop(q);
            link.bell.ring();
        }
        full.dedup();
        if let Some(sink) = self.sink.upgrade() {
            for peer in full {
                sink.unreachable(peer);
            }
        }
    }

    /// Starts sending a snapshot, unless one is on its way to that peer
    /// already (Raft asks again if this one fails).
    fn start_snapshot(&self, m: Message) {
        let to = m.to;
        tracing::info!(
            peer = format!("{to:x}"),
            index = m.snapshot.as_ref().map_or(0, |s| s.metadata.index),
            "the peer is behind the log: sending a snapshot of the store"
        );
        let Some(urls) = self.peers.borrow().get(&to).cloned() else {
            return;
        };
        if !self.sending_snapshots.borrow_mut().insert(to) {
            return;
        }
        let this = self.this.clone();
        glommio::spawn_local(async move {
            let Some(t) = this.upgrade() else {
                return;
            };
            let started = std::time::Instant::now();
            let result = t.send_snapshot(&urls, m).await;
            t.sending_snapshots.borrow_mut().remove(&to);
            let ok = result.is_ok();
            match result {
                Ok(bytes) => tracing::info!(
                    peer = format!("{to:x}"),
                    bytes,
                    took_ms = started.elapsed().as_millis() as u64,
                    "snapshot sent"
                ),
                Err(e) => tracing::warn!(peer = format!("{to:x}"), error = %e, "sending a snapshot failed"),
            }
            if let Some(sink) = t.sink.upgrade() {
                sink.snapshot_sent(to, ok);
            }
        })
        .detach();
    }

    /// Streams the store to the peer, then the Raft message; the bytes
    /// of store sent.
    async fn send_snapshot(&self, urls: &[String], mut m: Message) -> Result<u64, String> {
        let sink = self.sink.upgrade().ok_or("stopping")?;
        let (view, meta) = sink.snapshot_image().ok_or("no store to send")?;
        drop(sink);
        let metadata = match m.snapshot.as_mut() {
            Some(snap) => {
                snap.data = meta;
                snap.metadata.clone()
            }
            None => return Err("a snapshot message without a snapshot".into()),
        };
        let link = Link {
            peer: m.to,
            urls: urls.to_vec(),
            queue: RefCell::new(VecDeque::new()),
            bell: Doorbell::default(),
            connected: Cell::new(false),
            sent_bytes: Cell::new(0),
            failures: Cell::new(0),
        };
        let tls = self.dial_tls.borrow().clone();
        let (mut stream, mut encoder) = dial(
            &link,
            self.me,
            self.cluster_id,
            self.limits,
            StreamKind::Snapshot,
            tls,
        )
        .await?;
        let (tx, mut rx) = futures_channel::mpsc::channel::<Vec<u8>>(SNAPSHOT_CHUNKS_QUEUED);
        // A task of its own: the blocking job starts only once polled.
        let writer = glommio::spawn_local(glommio::executor().spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx,
                buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
            };
            view.write_snapshot(&mut out)
                .map_err(|e| e.to_string())
                .and_then(|()| out.flush_chunk())
        }));
        let mut out = Vec::new();
        let mut seq = 0u64;
        let mut sent = 0u64;
        let mut next = futures_lite::StreamExt::next(&mut rx).await;
        while let Some(chunk) = next {
            next = futures_lite::StreamExt::next(&mut rx).await;
            out.clear();
            encoder
                .snapshot_chunk(&metadata, seq, next.is_none(), &chunk, &mut out)
                .map_err(|e| e.to_string())?;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            seq += 1;
            sent += chunk.len() as u64;
        }
        writer.await?;
        out.clear();
        encoder
            .messages(&[m], &mut out)
            .map_err(|e| e.to_string())?;
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        // The follower closes once the file is synced and handed to Raft.
        let mut ack = [0u8; 1];
        let _ = stream.read(&mut ack).await;
        Ok(sent)
    }

    /// The link to `peer`, started on first use; `None` for a stranger.
    fn link(&self, peer: NodeId) -> Option<Rc<Link>> {
        if let Some(l) = self.links.borrow().get(&peer) {
            return Some(l.clone());
        }
        let urls = self.peers.borrow().get(&peer).cloned()?;
        let link = Rc::new(Link {
            peer,
            urls,
            queue: RefCell::new(VecDeque::new()),
            bell: Doorbell::default(),
            connected: Cell::new(false),
            sent_bytes: Cell::new(0),
            failures: Cell::new(0),
        });
        self.links.borrow_mut().insert(peer, link.clone());
        glommio::spawn_local(run_link(self.this.clone(), link.clone())).detach();
        Some(link)
    }

    /// Asks member `peer` one question over a connection of its own (each
    /// of its URLs in turn, `wait` at most for each answer).
    pub async fn ask(
        &self,
        peer: NodeId,
        query: PeerQuery,
        wait: Duration,
    ) -> Result<PeerAnswer, String> {
        self.ask_timed(peer, query, wait).await.map(|(a, _)| a)
    }

    /// [`Transport::ask`], and how long the question took once the
    /// connection was up (the round trip, without connecting).
    async fn ask_timed(
        &self,
        peer: NodeId,
        query: PeerQuery,
        wait: Duration,
    ) -> Result<(PeerAnswer, Duration), String> {
        let urls = self
            .peers
            .borrow()
            .get(&peer)
            .cloned()
            .ok_or_else(|| format!("member {peer:x} is not a peer"))?;
        let tls = self.dial_tls.borrow().clone();
        let mut hello = Hello::new(self.cluster_id, self.me, peer, StreamKind::Query);
        hello.query = Some(query);
        let mut last_error = String::from("no peer URL");
        for url in &urls {
            let (addr, tls) = match target(url, &tls) {
                Ok(t) => t,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            match say_hello(addr, tls, &hello, self.limits, wait).await {
                Ok((_, _, HelloReply::Answer(answer), took)) => return Ok((answer, took)),
                Ok((_, _, HelloReply::Refused(r), _)) => {
                    last_error = format!("{url}: refused: {r}")
                }
                Ok(_) => last_error = format!("{url}: the peer did not answer the question"),
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        Err(last_error)
    }

    /// Serves a stream a peer opened to us until it closes or misbehaves.
    pub async fn serve_inbound(self: Rc<Self>, stream: Stream) {
        let peer_addr = stream.peer_addr().ok();
        if let Err(e) = self.inbound(stream).await {
            tracing::debug!(peer = ?peer_addr, error = %e, "peer stream closed");
        }
    }

    async fn inbound(&self, mut stream: Stream) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut decoder = FrameDecoder::new(self.limits);
        let mut buf = vec![0u8; READ_CHUNK];
        let hello = loop {
            if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                match frame.decode().map_err(|e| e.to_string())? {
                    Frame::Hello(h) => break h,
                    _ => return Err("a peer stream must open with a hello".into()),
                }
            }
            let n = read_some(&mut stream, &mut buf, &self.shutdown).await?;
            decoder.push(&buf[..n]);
        };
        if hello.stream == StreamKind::Join {
            let reply = match self.sink.upgrade() {
                Some(sink) => sink.join_reply(&hello.peer_urls),
                None => return Ok(()),
            };
            tracing::info!(peer_urls = ?hello.peer_urls, joined = matches!(reply, HelloReply::Joined(_)), "a new member asked to join");
            let mut out = Vec::new();
            FrameEncoder::new(self.limits)
                .hello_reply(&reply, &mut out)
                .map_err(|e| e.to_string())?;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            return Ok(());
        }
        let mut verdict = hello.check(self.cluster_id, self.me);
        if verdict.is_ok() && self.removed.borrow().contains(&hello.from) {
            verdict = Err(Refusal::MemberRemoved { id: hello.from });
        } else if verdict.is_ok() && !self.peers.borrow().contains_key(&hello.from) {
            verdict = Err(Refusal::UnknownMember { id: hello.from });
        }
        let reply = match (&verdict, &hello.query) {
            (Ok(()), Some(PeerQuery::Ping)) if hello.stream == StreamKind::Query => {
                HelloReply::Answer(PeerAnswer::Pong)
            }
            (Ok(()), Some(query)) if hello.stream == StreamKind::Query => {
                let answering = match self.sink.upgrade() {
                    Some(sink) => sink.answer(query.clone()),
                    None => return Ok(()),
                };
                HelloReply::Answer(answering.await)
            }
            (Ok(()), _) if hello.stream == StreamKind::Query => {
                return Err("a query hello without a question".into())
            }
            (Ok(()), _) => HelloReply::accept(self.me, hello.protocol_version, self.limits),
            (Err(r), _) => HelloReply::Refused(r.clone()),
        };
        let mut out = Vec::new();
        FrameEncoder::new(self.limits)
            .hello_reply(&reply, &mut out)
            .map_err(|e| e.to_string())?;
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        if let Err(r) = verdict {
            tracing::warn!(from = format!("{:x}", hello.from), reason = %r, "refused a peer");
            return Err(r.to_string());
        }
        if hello.stream == StreamKind::Query {
            return Ok(());
        }
        stream.set_read_timeout(None).map_err(|e| e.to_string())?;
        let from = hello.from;
        if hello.stream == StreamKind::Snapshot {
            return self.receive_snapshot(stream, decoder, buf, from).await;
        }
        let mut batch = Vec::new();
        loop {
            while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                frame
                    .decode_messages_into(&mut batch)
                    .map_err(|e| e.to_string())?;
            }
            if !batch.is_empty() {
                check_batch(from, self.me, &batch).map_err(|e| e.to_string())?;
                let Some(sink) = self.sink.upgrade() else {
                    return Ok(());
                };
                sink.deliver(std::mem::take(&mut batch));
            }
            let n = read_some(&mut stream, &mut buf, &self.shutdown).await?;
            *self.received_bytes.borrow_mut().entry(from).or_default() += n as u64;
            decoder.push(&buf[..n]);
        }
    }

    /// Writes a snapshot stream to a file; once it is complete and synced,
    /// hands it and its Raft message to the sink.
    async fn receive_snapshot(
        &self,
        mut stream: Stream,
        mut decoder: FrameDecoder,
        mut buf: Vec<u8>,
        from: NodeId,
    ) -> Result<(), String> {
        use std::io::Write;
        let dir = self.sink.upgrade().ok_or("stopping")?.snapshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(format!("incoming-{from:x}.tmp"));
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut expected_seq = 0u64;
        let mut index = None;
        let mut done = false;
        let message = 'stream: loop {
            while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                match frame.decode().map_err(|e| e.to_string())? {
                    Frame::SnapshotChunk(c) if !done => {
                        if c.seq != expected_seq {
                            return Err(format!(
                                "snapshot chunk {} where {expected_seq} was due",
                                c.seq
                            ));
                        }
                        if *index.get_or_insert(c.metadata.index) != c.metadata.index {
                            return Err("snapshot chunks of two snapshots".into());
                        }
                        expected_seq += 1;
                        file.write_all(&c.data)
                            .map_err(|e| format!("{}: {e}", tmp.display()))?;
                        done = c.last;
                    }
                    Frame::Messages(batch) if done => {
                        check_batch(from, self.me, &batch).map_err(|e| e.to_string())?;
                        match <[Message; 1]>::try_from(batch) {
                            Ok([m])
                                if m.msg_type == MessageType::Snapshot
                                    && m.snapshot.as_ref().map(|s| s.metadata.index) == index =>
                            {
                                break 'stream m;
                            }
                            _ => {
                                return Err(
                                    "a snapshot stream must end with its raft message".into()
                                )
                            }
                        }
                    }
                    _ => return Err("unexpected frame on a snapshot stream".into()),
                }
            }
            let n = read_some(&mut stream, &mut buf, &self.shutdown).await?;
            decoder.push(&buf[..n]);
        };
        let index = index.unwrap_or(0);
        let path = dir.join(format!("received-{index:016x}.snap"));
        let (t, p) = (tmp.clone(), path.clone());
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                file.sync_all()?;
                std::fs::rename(&t, &p)?;
                if let Some(parent) = p.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        tracing::info!(
            from = format!("{from:x}"),
            index,
            file = %path.display(),
            "snapshot received"
        );
        let sink = self.sink.upgrade().ok_or("stopping")?;
        sink.snapshot_received(path, message);
        Ok(())
    }

    /// Every peer this member has talked with or pinged, as `/metrics`
    /// reports it (etcd's `etcd_network_*`).
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let received = self.received_bytes.borrow();
        let round_trips = self.round_trips.borrow();
        let mut ids: Vec<NodeId> = self
            .links
            .borrow()
            .keys()
            .chain(received.keys())
            .chain(round_trips.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let links = self.links.borrow();
        ids.into_iter()
            .map(|id| {
                let link = links.get(&id);
                PeerStats {
                    id,
                    sent_bytes: link.map_or(0, |l| l.sent_bytes.get()),
                    received_bytes: received.get(&id).copied().unwrap_or(0),
                    failures: link.map_or(0, |l| l.failures.get()),
                    active: link.is_some_and(|l| l.connected.get()),
                    rtt: round_trips
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| Histogram::new(&PEER_RTT_BUCKETS)),
                }
            })
            .collect()
    }

    /// Pings every peer each [`PROBE_INTERVAL`] and records the round
    /// trips, until the transport stops.
    pub async fn probe_peers(transport: Weak<Transport>) {
        loop {
            let Some(t) = transport.upgrade() else {
                return;
            };
            let shutdown = t.shutdown.clone();
            drop(t);
            if shutdown
                .unless_fired(glommio::timer::sleep(PROBE_INTERVAL))
                .await
                .is_none()
            {
                return;
            }
            let Some(t) = transport.upgrade() else {
                return;
            };
            let mut peers: Vec<NodeId> = t.peers.borrow().keys().copied().collect();
            peers.sort_unstable();
            for peer in peers {
                if let Ok((PeerAnswer::Pong, took)) =
                    t.ask_timed(peer, PeerQuery::Ping, HANDSHAKE_TIMEOUT).await
                {
                    t.round_trips
                        .borrow_mut()
                        .entry(peer)
                        .or_insert_with(|| Histogram::new(&PEER_RTT_BUCKETS))
                        .observe(took);
                }
            }
        }
    }

    /// Members removed from the cluster, from now on.
    pub fn set_removed(&self, removed: std::collections::HashSet<NodeId>) {
        *self.removed.borrow_mut() = removed;
    }

    /// The other members and their peer URLs, from now on.
    pub fn set_peers(&self, peers: HashMap<NodeId, Vec<String>>) {
        *self.peers.borrow_mut() = peers;
    }

    /// Whether a stream to `peer` is up (for metrics and health).
    pub fn connected(&self, peer: NodeId) -> bool {
        self.links
            .borrow()
            .get(&peer)
            .is_some_and(|l| l.connected.get())
    }
}

/// How a handshake refused because this member was removed begins.
const REMOVED_REFUSAL: &str = "refused: removed from the cluster: ";

/// Reads at least one byte, or fails at the end of the stream or on stop.
async fn read_some(
    stream: &mut Stream,
    buf: &mut [u8],
    shutdown: &Shutdown,
) -> Result<usize, String> {
    match shutdown.unless_fired(stream.read(buf)).await {
        None => Err("stopping".into()),
        Some(Ok(0)) => Err("the peer closed the stream".into()),
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(e.to_string()),
    }
}

/// One peer's outbound stream and queue.
struct Link {
    peer: NodeId,
    urls: Vec<String>,
    queue: RefCell<VecDeque<Message>>,
    bell: Doorbell,
    connected: Cell<bool>,
    /// Bytes written to the peer's stream.
    sent_bytes: Cell<u64>,
    /// Messages that could not be sent (queue full, stream lost).
    failures: Cell<u64>,
}

/// Dials, handshakes and pumps the queue, again and again, until stop.
async fn run_link(transport: Weak<Transport>, link: Rc<Link>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(t) = transport.upgrade() else {
            return;
        };
        if t.shutdown.is_fired() {
            return;
        }
        let (me, cluster_id, limits, shutdown) = (t.me, t.cluster_id, t.limits, t.shutdown.clone());
        let tls = t.dial_tls.borrow().clone();
        drop(t);
        match dial(&link, me, cluster_id, limits, StreamKind::Messages, tls).await {
            Ok((stream, encoder)) => {
                backoff = MIN_BACKOFF;
                link.connected.set(true);
                tracing::info!(peer = format!("{:x}", link.peer), "peer stream up");
                let e = pump(stream, encoder, &link, &shutdown).await;
                link.connected.set(false);
                if !shutdown.is_fired() {
                    tracing::warn!(peer = format!("{:x}", link.peer), error = %e, "peer stream lost");
                }
            }
            Err(e) => {
                tracing::debug!(peer = format!("{:x}", link.peer), error = %e, "cannot reach peer");
                if e.contains(REMOVED_REFUSAL) {
                    if let Some(sink) = transport.upgrade().and_then(|t| t.sink.upgrade()) {
                        sink.removed();
                    }
                }
            }
        }
        // What was queued is stale by the time a new stream is up: Raft
        // sends again what still matters once told the peer was lost.
        let dropped = link.queue.borrow().len() as u64;
        link.failures.set(link.failures.get() + dropped);
        link.queue.borrow_mut().clear();
        if let Some(t) = transport.upgrade() {
            if let Some(sink) = t.sink.upgrade() {
                sink.unreachable(link.peer);
            }
        }
        if shutdown
            .unless_fired(glommio::timer::sleep(backoff))
            .await
            .is_none()
        {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Opens a stream to one of the peer's URLs and makes the handshake.
async fn dial(
    link: &Link,
    me: NodeId,
    cluster_id: u64,
    limits: WireLimits,
    kind: StreamKind,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Stream, FrameEncoder), String> {
    let mut last_error = String::from("no peer URL");
    for url in &link.urls {
        let (addr, tls) = match target(url, &tls) {
            Ok(t) => t,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        match handshake(addr, tls, link.peer, me, cluster_id, limits, kind).await {
            Ok(ok) => return Ok(ok),
            Err(e) => last_error = format!("{url}: {e}"),
        }
    }
    Err(last_error)
}

type DialTls = Option<(
    Arc<rustls::ClientConfig>,
    rustls_pki_types::ServerName<'static>,
)>;

/// The address a peer URL names, and TLS for it if it is `https`.
fn target(
    url: &str,
    tls: &Option<Arc<rustls::ClientConfig>>,
) -> Result<(SocketAddr, DialTls), String> {
    let addr: SocketAddr = parse_listen_url(url).map_err(|e| e.to_string())?;
    let tls = match (crate::tls::is_https(url), tls) {
        (false, _) => None,
        (true, Some(config)) => Some((config.clone(), crate::tls::server_name(url, addr))),
        (true, None) => {
            return Err(format!(
                "{url}: an https peer URL needs the --peer-* TLS flags"
            ))
        }
    };
    Ok((addr, tls))
}

async fn handshake(
    addr: SocketAddr,
    tls: DialTls,
    peer: NodeId,
    me: NodeId,
    cluster_id: u64,
    limits: WireLimits,
    kind: StreamKind,
) -> Result<(Stream, FrameEncoder), String> {
    let hello = Hello::new(cluster_id, me, peer, kind);
    let (stream, mut encoder, reply, _) =
        say_hello(addr, tls, &hello, limits, HANDSHAKE_TIMEOUT).await?;
    match reply {
        HelloReply::Refused(Refusal::MemberRemoved { id }) if id == me => {
            tracing::error!(
                peer = format!("{peer:x}"),
                "the peer says this member was removed from the cluster"
            );
            Err(format!("{REMOVED_REFUSAL}{id:x}"))
        }
        HelloReply::Refused(r) => {
            tracing::warn!(peer = format!("{peer:x}"), reason = %r, "the peer refused us");
            Err(format!("refused: {r}"))
        }
        accepted => {
            let theirs = accepted
                .peer_limits()
                .ok_or("the peer announced invalid limits")?;
            encoder.set_limits(limits.min(theirs));
            Ok((stream, encoder))
        }
    }
}

/// Connects to `addr`, sends `hello` and reads the reply (waiting `wait`
/// at most for each read), and says how long that took once connected.
async fn say_hello(
    addr: SocketAddr,
    tls: DialTls,
    hello: &Hello,
    limits: WireLimits,
    wait: Duration,
) -> Result<(Stream, FrameEncoder, HelloReply, Duration), String> {
    let tcp = TcpStream::connect_timeout(addr, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .and_then(|()| tcp.set_write_timeout(Some(WRITE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut stream = match tls {
        None => Stream::Plain(tcp),
        Some((config, name)) => Stream::connect(tcp, config, name)
            .await
            .map_err(|e| format!("TLS: {e}"))?,
    };
    let mut encoder = FrameEncoder::new(limits);
    let mut out = Vec::new();
    encoder.hello(hello, &mut out).map_err(|e| e.to_string())?;
    let asked = std::time::Instant::now();
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(limits);
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            return match frame.decode().map_err(|e| e.to_string())? {
                Frame::HelloReply(r) => Ok((stream, encoder, r, asked.elapsed())),
                _ => Err("the peer did not answer the hello".into()),
            };
        }
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the peer closed the stream during the handshake".into());
        }
        decoder.push(&buf[..n]);
    }
}

/// Writes whatever is queued, batch by batch, until an error or stop.
async fn pump(
    mut stream: Stream,
    mut encoder: FrameEncoder,
    link: &Link,
    shutdown: &Shutdown,
) -> String {
    let mut out = Vec::new();
    let mut batch: Vec<Message> = Vec::new();
    loop {
        if link.queue.borrow().is_empty() && shutdown.unless_fired(link.bell.wait()).await.is_none()
        {
            return "stopping".into();
        }
        batch.extend(link.queue.borrow_mut().drain(..));
        if batch.is_empty() {
            continue;
        }
        out.clear();
        while !batch.is_empty() {
            match encoder.messages(&batch, &mut out) {
                Ok(_) => batch.clear(),
                Err(super::PeerWireError::MessageTooLarge { index, len, max }) => {
                    tracing::warn!(len, max, "a raft message too large for a frame was dropped");
                    batch.remove(index);
                }
                Err(e) => return format!("encoding: {e}"),
            }
        }
        // TLS holds records until flushed; plain TCP has nothing to flush.
        if let Err(e) = stream.write_all(&out).await {
            return e.to_string();
        }
        if let Err(e) = stream.flush().await {
            return e.to_string();
        }
        link.sent_bytes
            .set(link.sent_bytes.get() + out.len() as u64);
    }
}

impl crate::node::Outbox for Transport {
    fn send(&self, messages: Vec<Message>) {
        self.queue(messages);
    }
}

/// The snapshot writer's side of the chunk queue: fills chunks and hands
/// each over, waiting (on its blocking thread) while the queue is full.
struct ChunkWriter {
    tx: futures_channel::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        let tx = &mut self.tx;
        futures_lite::future::block_on(std::future::poll_fn(|cx| tx.poll_ready(cx)))
            .and_then(|()| tx.start_send(chunk))
            .map_err(|_| "the snapshot stream was closed".to_string())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.buf.len();
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK_BYTES {
            self.flush_chunk().map_err(std::io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
