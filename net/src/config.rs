//! Server configuration: etcd's settings (from etcd's flags, parsed by the
//! binary) plus basalt's own (`cores`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use basalt_engine::wal::WalOptions;

use crate::compactor::AutoCompaction;
use crate::error::Error;
use crate::services::KvLimits;
use crate::tls::TlsSettings;

/// `--initial-cluster-state`: found a new cluster, or join a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialClusterState {
    #[default]
    New,
    Existing,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--wal-dir`: the WAL's own directory (a dedicated disk, say);
    /// `None`: `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// `--listen-client-urls`, e.g. `http://127.0.0.1:2379`.
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`; reported by MemberList. Port 0 is replaced
    /// by the bound port.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-metrics-urls`: `/metrics`, `/health`, `/livez`, `/readyz`.
    pub listen_metrics_urls: Vec<String>,
    /// `--listen-peer-urls`: bound (so no other process takes them) even
    /// before members talk to peers.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster` ("name=url,…"); empty means `name=first peer url`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: InitialClusterState,
    /// `--heartbeat-interval` and `--election-timeout`.
    pub timing: crate::node::NodeTiming,
    /// `--snapshot-count`: checkpoint the store after this many entries.
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`: entries of log kept
    /// behind a checkpoint for followers; one further behind gets a
    /// snapshot of the store.
    pub catchup_entries: u64,
    /// Checkpoint at least this often while there are unsaved entries.
    pub checkpoint_interval: Duration,
    pub limits: KvLimits,
    /// `--experimental-watch-progress-notify-interval`: how often watchers
    /// that asked for progress notifications get one.
    pub watch_progress_notify_interval: Duration,
    /// `--max-concurrent-streams` (etcd 3.4): gRPC streams one client
    /// connection may open at once; capped at the server's own bound.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout` (etcd:
    /// 2 h and 20 s); `None`: never ping.
    pub grpc_keepalive: Option<(Duration, Duration)>,
    /// Executors (one per core); `0` = every CPU in the affinity mask.
    pub cores: usize,
    /// `--spin-before-park`: how long an idle executor spins before it parks
    /// its thread. Waking a parked vCPU costs tens of µs on VMs; spinning
    /// trades a busy core for that, so it only pays on dedicated cores.
    pub spin_before_park: Option<Duration>,
    pub wal: WalOptions,
    /// How long shutdown waits for in-flight calls and open streams.
    pub drain_timeout: Duration,
    /// `--auto-compaction-mode` + `--auto-compaction-retention`; `None` = off
    /// (etcd's default).
    pub auto_compaction: Option<AutoCompaction>,
    /// How often `revision` mode compacts; etcd's fixed five minutes, shorter
    /// only in tests.
    pub revision_compaction_interval: Duration,
    /// `--experimental-enable-lease-checkpoint`: how often the leader
    /// records long leases' remaining TTLs in the log (etcd: 5 minutes);
    /// `None` = off, etcd's default.
    pub lease_checkpoint_interval: Option<Duration>,
    /// `--experimental-corrupt-check-time`: how often the leader compares
    /// every member's HashKV; `None` (etcd's `0s`) = never.
    pub corrupt_check_interval: Option<Duration>,
    /// `--experimental-initial-corrupt-check`: a restarted member compares
    /// its HashKV with every peer's before serving clients.
    pub initial_corrupt_check: bool,
    /// `--pre-vote`: a candidate asks whether it would win before raising
    /// the term (etcd 3.5's default, true; 3.4's was false).
    pub pre_vote: bool,
    /// `--metrics extensive`: also export `grpc_server_handling_seconds`.
    pub metrics_extensive: bool,

    // ---- TLS: etcd's security flags (see crate::tls) ----
    /// `--cert-file` … `--peer-cert-allowed-hostname`, `--cipher-suites`,
    /// `--tls-min-version`/`--tls-max-version`, `--self-signed-cert-validity`.
    pub tls: TlsSettings,

    // ---- auth ----
    /// `--auth-token` with `--auth-token-ttl`.
    pub auth_token: crate::auth::TokenConfig,
    /// `--bcrypt-cost`: of the password hashes UserAdd and
    /// UserChangePassword store.
    pub bcrypt_cost: u32,
}

impl Config {
    /// etcd's defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            name: "default".into(),
            data_dir: data_dir.into(),
            wal_dir: None,
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_metrics_urls: Vec::new(),
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: String::new(),
            initial_cluster_token: "etcd-cluster".into(),
            initial_cluster_state: InitialClusterState::New,
            timing: crate::node::NodeTiming::default(),
            snapshot_count: 10_000,
            catchup_entries: crate::sequencer::DEFAULT_CATCHUP_ENTRIES,
            checkpoint_interval: Duration::from_secs(1),
            limits: KvLimits::default(),
            max_concurrent_streams: u32::MAX,
            grpc_keepalive: Some((Duration::from_secs(2 * 3600), Duration::from_secs(20))),
            watch_progress_notify_interval: crate::watch::DEFAULT_PROGRESS_INTERVAL,
            cores: 0,
            spin_before_park: None,
            wal: WalOptions::default(),
            drain_timeout: Duration::from_secs(5),
            auto_compaction: None,
            revision_compaction_interval: crate::compactor::REVISION_INTERVAL,
            lease_checkpoint_interval: None,
            corrupt_check_interval: None,
            initial_corrupt_check: false,
            pre_vote: true,
            metrics_extensive: false,
            tls: TlsSettings::default(),
            auth_token: crate::auth::TokenConfig::default(),
            bcrypt_cost: crate::auth::DEFAULT_BCRYPT_COST,
        }
    }

    /// One executor on 127.0.0.1 with an OS-chosen port and small WAL
    /// segments, for tests.
    pub fn for_test(dir: &Path) -> Config {
        let mut c = Config::new(dir.join("data"));
        c.listen_client_urls = vec!["http://127.0.0.1:0".into()];
        c.advertise_client_urls = vec!["http://127.0.0.1:0".into()];
        c.listen_peer_urls = Vec::new();
        c.initial_advertise_peer_urls = vec!["http://127.0.0.1:2380".into()];
        c.cores = 1;
        c.wal.segment_bytes = 1 << 20;
        c.wal.max_batch_bytes = 256 << 10;
        c.drain_timeout = Duration::from_secs(2);
        c
    }

    /// `--initial-cluster`, defaulted as etcd does from name and peer URLs.
    pub fn initial_cluster(&self) -> String {
        if !self.initial_cluster.is_empty() {
            return self.initial_cluster.clone();
        }
        self.initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{}={u}", self.name))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `http://host:port` or `https://host:port` → socket address (whether
/// it is TLS is [`crate::tls::is_https`]). `localhost` binds 127.0.0.1
/// only (never every interface).
pub fn parse_listen_url(url: &str) -> Result<SocketAddr, Error> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(Error::Config(format!(
            "{url}: expected http://host:port or https://host:port"
        )));
    };
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("{url}: missing port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::Config(format!("{url}: bad port {port:?}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("{url}: {e}")))?
        .next()
        .ok_or_else(|| Error::Config(format!("{url}: no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_urls() {
        assert_eq!(
            parse_listen_url("http://localhost:2379").unwrap(),
            "127.0.0.1:2379".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_listen_url("http://127.0.0.1:0/").unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_listen_url("http://[::1]:2379").unwrap(),
            "[::1]:2379".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_listen_url("https://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_listen_url("unixs://127.0.0.1:2379").is_err());
        assert!(parse_listen_url("127.0.0.1:2379").is_err());
        assert!(parse_listen_url("http://127.0.0.1").is_err());
        assert!(parse_listen_url("http://127.0.0.1:99999").is_err());
    }

    #[test]
    fn initial_cluster_defaults_to_own_peer_urls() {
        let c = Config::new("/tmp/x");
        assert_eq!(c.initial_cluster(), "default=http://localhost:2380");
    }
}
