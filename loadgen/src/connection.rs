//! Connections to the servers under test, and the revision check that
//! comes with each: on one connection, a request that starts after another
//! has completed must not see an older revision.
//!
//! Requests on a connection overlap, so the check is not "each header is
//! newer than the last one received" (two overlapping requests may finish
//! in either order). Instead a request notes the newest revision completed
//! on its connection when it starts (its floor), and its own header must not
//! be older than that floor.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, KvClient, WatchClient};

use crate::error::{LoadgenError, Result};
use crate::grpc;

/// The largest response a client accepts: full LISTs of a big prefix are
/// exactly what the list-storm profile asks for, so tonic's 4 MiB default
/// would break them. gRPC frames carry a 32-bit length.
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// The newest revision completed on one connection.
#[derive(Debug, Default)]
pub struct RevisionFloor {
    newest: AtomicI64,
}

impl RevisionFloor {
    /// The floor for a request starting now.
    pub fn floor(&self) -> i64 {
        self.newest.load(Ordering::Acquire)
    }

    /// Checks the header revision of a request that started at `floor` and
    /// raises the floor for later requests. `Err` holds the violation.
    pub fn observe(&self, floor: i64, revision: i64) -> std::result::Result<(), (i64, i64)> {
        self.newest.fetch_max(revision, Ordering::AcqRel);
        if revision < floor {
            return Err((floor, revision));
        }
        Ok(())
    }
}

/// TLS for `https` endpoints: etcd benchmark's `--cacert`, `--cert`,
/// `--key`.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cacert: Option<std::path::PathBuf>,
    pub cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl TlsFiles {
    fn read(path: &std::path::Path) -> Result<Vec<u8>> {
        std::fs::read(path)
            .map_err(|e| LoadgenError::InvalidArgs(format!("{}: {e}", path.display())))
    }

    /// The same files for the lean path.
    pub fn lean(&self) -> Result<grpc::TlsConfig> {
        let ca = self.cacert.as_deref().map(Self::read).transpose()?;
        let identity = match &self.cert {
            Some((cert, key)) => Some((Self::read(cert)?, Self::read(key)?)),
            None => None,
        };
        grpc::TlsConfig::from_pem(
            ca.as_deref(),
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(LoadgenError::InvalidArgs)
    }

    fn options(&self) -> Result<etcd_client::TlsOptions> {
        let read = Self::read;
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.cacert {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &self.cert {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }
}

/// How long the first request may take before the endpoints count as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which client a run's hot requests go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `etcd-client` (tonic) for everything.
    Client,
    /// The lean path ([`grpc::Channel`]) for the workload's requests;
    /// `etcd-client` stays available for the odd call (compaction) and
    /// connects only when first used.
    Lean,
}

/// One gRPC connection (HTTP/2 channel) and its revision floor.
#[derive(Clone)]
pub struct Connection {
    client: Client,
    /// Present with [`Path::Lean`].
    channel: Option<grpc::Channel>,
    index: usize,
    floor: Arc<RevisionFloor>,
    /// The channel balances over several members.
    several_members: bool,
}

impl Connection {
    /// Opens connection number `index` to `endpoints`. With [`Path::Lean`]
    /// its lean channel goes to endpoint `index` mod their number, so
    /// connections spread over the members.
    pub async fn open(
        endpoints: &[String],
        index: usize,
        require_leader: bool,
        tls: Option<&TlsFiles>,
        path: Path,
    ) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_require_leader(require_leader);
        if let Some(tls) = tls {
            options = options.with_tls(tls.options()?);
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|source| LoadgenError::Connect {
                endpoints: endpoints.to_vec(),
                source,
            })?;
        let channel = match path {
            Path::Client => None,
            Path::Lean => {
                let endpoint = &endpoints[index % endpoints.len()];
                let tls = tls.map(TlsFiles::lean).transpose()?;
                let dial = grpc::Channel::connect(endpoint, tls.as_ref(), require_leader);
                let channel = tokio::time::timeout(PROBE_TIMEOUT, dial)
                    .await
                    .map_err(|_| LoadgenError::Dial {
                        endpoint: endpoint.clone(),
                        message: format!("no connection in {PROBE_TIMEOUT:?}"),
                    })?
                    .map_err(|e| LoadgenError::Dial {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })?;
                Some(channel)
            }
        };
        Ok(Self {
            client,
            channel,
            index,
            floor: Arc::new(RevisionFloor::default()),
            several_members: endpoints.len() > 1,
        })
    }

    /// Opens `count` connections.
    pub async fn open_many(
        endpoints: &[String],
        count: usize,
        require_leader: bool,
        tls: Option<&TlsFiles>,
        path: Path,
    ) -> Result<Vec<Self>> {
        let mut conns = Vec::with_capacity(count);
        for i in 0..count {
            conns.push(Self::open(endpoints, i, require_leader, tls, path).await?);
        }
        // Channels connect lazily: one read on each proves the endpoints
        // serve, and keeps connection setup out of the first measured
        // request. Only the path the run uses is warmed, so the server
        // sees `count` connections, not twice that.
        for conn in &conns {
            match &conn.channel {
                Some(channel) => conn.probe_lean(channel, endpoints).await?,
                None => conn.probe_client(endpoints).await?,
            }
        }
        Ok(conns)
    }

    async fn probe_client(&self, endpoints: &[String]) -> Result<()> {
        let probe = tokio::time::timeout(PROBE_TIMEOUT, self.kv().get("loadgen-probe", None)).await;
        let failed = match probe {
            Ok(Ok(_)) => None,
            Ok(Err(source)) => Some(source),
            Err(_) => Some(etcd_client::Error::Internal(format!(
                "no answer to a Range in {PROBE_TIMEOUT:?}"
            ))),
        };
        match failed {
            None => Ok(()),
            Some(source) => Err(LoadgenError::Connect {
                endpoints: endpoints.to_vec(),
                source,
            }),
        }
    }

    async fn probe_lean(&self, channel: &grpc::Channel, endpoints: &[String]) -> Result<()> {
        let request = grpc::messages::RangeRequest {
            key: bytes::Bytes::from_static(b"loadgen-probe"),
            ..Default::default()
        };
        let endpoint = endpoints[self.index % endpoints.len()].clone();
        let call = channel
            .unary::<_, grpc::messages::RangeResponse>(grpc::messages::path::RANGE, &request);
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(LoadgenError::Dial {
                endpoint,
                message: e.to_string(),
            }),
            Err(_) => Err(LoadgenError::Dial {
                endpoint,
                message: format!("no answer to a Range in {PROBE_TIMEOUT:?}"),
            }),
        }
    }

    /// The lean channel, present when the connections were opened with
    /// [`Path::Lean`].
    pub fn channel(&self) -> Option<&grpc::Channel> {
        self.channel.as_ref()
    }

    /// The underlying client (for lease, maintenance and other services).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A KV client on this connection that accepts large responses.
    pub fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A watch client on this connection that accepts large responses.
    pub fn watch(&self) -> WatchClient {
        self.client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The floor for a request starting now.
    pub fn floor(&self) -> i64 {
        self.floor.floor()
    }

    /// The floor for a read starting now. A serializable read answered by
    /// another member may lag the newest revision seen on this connection,
    /// legitimately; such reads are not checked (floor 0).
    pub fn read_floor(&self, serializable: bool) -> i64 {
        if serializable && self.several_members {
            0
        } else {
            self.floor()
        }
    }

    /// Checks the header revision of a request that started at `floor`, and
    /// raises the floor for later requests. Returns a description of the
    /// violation if the revision went back.
    pub fn observe(&self, floor: i64, revision: i64) -> std::result::Result<(), String> {
        self.floor
            .observe(floor, revision)
            .map_err(|(floor, revision)| {
                format!(
                    "connection {}: revision went back from {floor} to {revision}",
                    self.index
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_requests_may_finish_out_of_order() {
        let f = RevisionFloor::default();
        let a = f.floor(); // request A starts
        let b = f.floor(); // request B starts, overlapping A
        assert!(f.observe(b, 12).is_ok()); // B finishes first, newer
        assert!(f.observe(a, 11).is_ok()); // A older, but it started before B finished
        let c = f.floor(); // C starts after both finished
        assert_eq!(c, 12);
        assert_eq!(f.observe(c, 11), Err((12, 11)));
        assert!(f.observe(f.floor(), 12).is_ok());
    }
}
