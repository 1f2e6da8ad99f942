//! The `basalt` server binary: etcd's command-line flags (same names and
//! meanings, so an etcd unit file or kubeadm manifest starts basalt by
//! changing the binary name), plus basalt's own `--cores`.
//!
//! With no flags it serves one member on 127.0.0.1:2379 with its data in
//! `./default.basalt`. SIGTERM or SIGINT stop it cleanly: no new calls,
//! in-flight calls finish, the store is checkpointed, exit status 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use basalt_net::config::InitialClusterState;
use basalt_net::services::{KvLimits, ETCD_COMPAT_VERSION};
use basalt_net::tls::{TlsInfo, TlsSettings, TlsVersion};
use basalt_net::Config;
use clap::Parser;

/// etcd's default quota: 2 GiB (`--quota-backend-bytes 0` means this).
const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

#[derive(Parser, Debug)]
#[command(
    name = "basalt",
    about = "An etcd v3-compatible key-value store, thread-per-core on glommio and io_uring",
    disable_version_flag = true
)]
struct Flags {
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory (default: "${name}.basalt").
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// This member's client URLs to advertise to the cluster.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs to advertise to the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration, "name=url,…" (default: this member).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Initial cluster state ("new" or "existing").
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: ClusterState,
    /// Initial cluster token; part of the member and cluster ids.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Applied entries between store checkpoints (WAL is released below a
    /// checkpoint).
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// Entries of log a member keeps behind its checkpoint for slow
    /// followers; one further behind is sent a snapshot of the store.
    #[arg(long, default_value_t = 5000)]
    experimental_snapshot_catchup_entries: u64,
    /// Have the leader record long leases' remaining TTLs in the log every
    /// 5 minutes, so a new leader does not give them their full TTL again.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    experimental_enable_lease_checkpoint: bool,
    /// Duration of time between cluster corruption check passes (0s: off).
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = parse_go_duration_or_zero)]
    experimental_corrupt_check_time: Duration,
    /// basalt (tests): the lease checkpoint interval (etcd's fixed 5m).
    #[arg(long, hide = true, value_name = "DURATION", value_parser = parse_go_duration)]
    experimental_lease_checkpoint_interval: Option<Duration>,
    /// Raise the NOSPACE alarm when the backend exceeds this size (0 = 2 GiB).
    #[arg(long, default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Interpret auto-compaction-retention as "periodic" (a duration, or
    /// hours when a plain number) or "revision" (a number of revisions).
    #[arg(long, default_value = "periodic")]
    auto_compaction_mode: String,
    /// Auto compaction retention (0 = off).
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// URLs to serve /metrics and /health on.
    #[arg(long, value_delimiter = ',')]
    listen_metrics_urls: Option<Vec<String>>,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
    // ---- TLS: etcd's security flags (see basalt_net::tls) ----
    /// Path to the client server TLS cert file.
    #[arg(long, value_name = "FILE")]
    cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, value_name = "FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, value_name = "FILE")]
    client_crl_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, value_name = "FILE")]
    peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, value_name = "FILE")]
    peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, value_name = "FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    peer_client_cert_auth: bool,
    /// Peer TLS using generated certificates.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, value_name = "FILE")]
    peer_crl_file: Option<PathBuf>,
    /// Allowed CN for inter peer authentication.
    #[arg(long, value_name = "CN")]
    peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, value_name = "HOST")]
    peer_cert_allowed_hostname: Option<String>,
    /// The validity period of the client and peer certificates generated by
    /// --auto-tls and --peer-auto-tls, in years.
    #[arg(long, default_value_t = 1)]
    self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites between client/server
    /// and peers (empty will be auto-populated).
    #[arg(long, value_delimiter = ',')]
    cipher_suites: Vec<String>,
    /// Minimum TLS version supported (TLS1.2 or TLS1.3).
    #[arg(long, default_value = "TLS1.2")]
    tls_min_version: String,
    /// Maximum TLS version supported (TLS1.2 or TLS1.3; empty: the newest).
    #[arg(long, default_value = "")]
    tls_max_version: String,
    // ---- end of TLS ----
    // Snapshot restore (etcd: `etcdctl snapshot restore`), one block.
    /// basalt: restore a file saved by `etcdctl snapshot save` (from etcd
    /// 3.4/3.5 or basalt) into a new --data-dir, then exit.
    #[arg(long, value_name = "FILE")]
    restore_snapshot: Option<PathBuf>,
    /// With --restore-snapshot: do not require a matching SHA-256 trailer
    /// (etcdctl's flag; needed for a db file copied from a data dir).
    #[arg(long, requires = "restore_snapshot")]
    skip_hash_check: bool,
    /// basalt: executors (one pinned per core); 0 = every CPU allowed.
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// basalt: how long an idle executor spins before parking its thread
    /// (e.g. 50us); pays only on dedicated cores. Default: park at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_spin)]
    spin_before_park: Option<Duration>,
}

/// `--initial-cluster-state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClusterState {
    New,
    Existing,
}

/// Parses `50us`, `1ms`, `200ns` or a bare number of microseconds; capped at
/// one second, since a longer spin only burns a core.
/// A positive Go duration ("5m", "1.5s").
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    match basalt_net::compactor::parse_go_duration(text)? {
        n if n > 0 => Ok(Duration::from_nanos(n as u64)),
        _ => Err(format!("{text:?} is not a positive duration")),
    }
}

/// A Go duration, zero or positive ("0s", "5m").
fn parse_go_duration_or_zero(text: &str) -> Result<Duration, String> {
    match basalt_net::compactor::parse_go_duration(text)? {
        n if n >= 0 => Ok(Duration::from_nanos(n as u64)),
        _ => Err(format!("{text:?} is negative")),
    }
}

fn parse_spin(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration like 50us or 1ms, got {text:?}"))?;
    let d = match unit {
        "" | "us" | "µs" => Duration::from_micros(n),
        "ns" => Duration::from_nanos(n),
        "ms" => Duration::from_millis(n),
        other => return Err(format!("unknown unit {other:?}: use ns, us or ms")),
    };
    if d > Duration::from_secs(1) {
        return Err(format!("{text} is over the 1s limit"));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    if flags.version {
        println!("basalt Version: {}", env!("CARGO_PKG_VERSION"));
        println!("etcd API Version: {ETCD_COMPAT_VERSION}");
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&flags.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr, as etcd's do; colour codes only for a person at a
    // terminal, never into a file or a pipe (and never under NO_COLOR).
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_terminal && std::env::var_os("NO_COLOR").is_none())
        // A log line that cannot be written is dropped: reporting it would
        // write to the same broken stderr (a panic in `eprintln!`), and a
        // closed log pipe must never stop the member.
        .log_internal_errors(false)
        .init();
    let cfg = match config(&flags) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("error verifying flags, {e}. See 'basalt --help'.");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = &flags.restore_snapshot {
        // The cluster the restored member founds, as `etcdctl snapshot
        // restore` takes it from --name and --initial-cluster*.
        let cluster = match basalt_net::member::ClusterInfo::from_flags(
            &cfg.name,
            &cfg.initial_cluster(),
            &cfg.initial_cluster_token,
            &cfg.initial_advertise_peer_urls,
            &cfg.advertise_client_urls,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "snapshot restore failed");
                return ExitCode::FAILURE;
            }
        };
        let restore_flags = basalt_net::snapshot_file::RestoreFlags {
            skip_hash_check: flags.skip_hash_check,
            cluster: Some(cluster),
        };
        return match basalt_net::snapshot_file::restore(file, &cfg.data_dir, restore_flags) {
            Ok(what) => {
                tracing::info!(file = %file.display(), data_dir = %cfg.data_dir.display(), restored = %what, "snapshot restored");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot restore failed");
                ExitCode::FAILURE
            }
        };
    }

    // Block the stop signals before any executor thread exists, so they
    // inherit the mask and the main thread alone receives them.
    let signals = match StopSignals::block() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up signal handling");
            return ExitCode::FAILURE;
        }
    };
    // Startup (store recovery, executors) runs on a thread of its own, so
    // a stop signal ends the process even while it is under way.
    let (started_tx, started) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("basalt-start".into())
        .spawn(move || {
            let _ = started_tx.send(basalt_net::start(cfg));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "basalt failed to start");
        return ExitCode::FAILURE;
    }
    let server = loop {
        if let Some(sig) = signals.wait_for(Duration::from_millis(100)) {
            tracing::warn!(signal = sig, "stopping before startup finished");
            return ExitCode::from(128u8.saturating_add(sig as u8));
        }
        match started.try_recv() {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "basalt failed to start");
                return ExitCode::FAILURE;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                tracing::error!("basalt failed to start: the startup thread died");
                return ExitCode::FAILURE;
            }
        }
    };
    let failure = loop {
        if let Some(sig) = signals.wait_for(Duration::from_millis(200)) {
            tracing::info!(
                signal = sig,
                "stopping: no new calls, finishing in-flight ones"
            );
            break None;
        }
        if let Some(why) = server.failure() {
            tracing::error!(error = %why, "stopping: the member cannot go on");
            break Some(why);
        }
    };
    if failure.is_some() {
        let _ = server.shutdown();
        return ExitCode::FAILURE;
    }
    match server.shutdown() {
        Ok(()) => {
            tracing::info!("basalt stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "basalt stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn config(f: &Flags) -> Result<Config, String> {
    let data_dir = f
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.basalt", f.name)));
    let mut c = Config::new(data_dir);
    c.name = f.name.clone();
    c.listen_client_urls = f.listen_client_urls.clone();
    c.advertise_client_urls = f.advertise_client_urls.clone();
    c.listen_metrics_urls = f.listen_metrics_urls.clone().unwrap_or_default();
    c.initial_advertise_peer_urls = f.initial_advertise_peer_urls.clone();
    c.initial_cluster = f.initial_cluster.clone().unwrap_or_default();
    c.initial_cluster_token = f.initial_cluster_token.clone();
    c.initial_cluster_state = match f.initial_cluster_state {
        ClusterState::New => InitialClusterState::New,
        ClusterState::Existing => InitialClusterState::Existing,
    };
    c.listen_peer_urls = f.listen_peer_urls.clone();
    c.timing = timing(f.heartbeat_interval, f.election_timeout)?;
    c.snapshot_count = f.snapshot_count;
    c.catchup_entries = f.experimental_snapshot_catchup_entries;
    c.corrupt_check_interval = Some(f.experimental_corrupt_check_time).filter(|d| !d.is_zero());
    c.lease_checkpoint_interval = f.experimental_enable_lease_checkpoint.then(|| {
        f.experimental_lease_checkpoint_interval
            .unwrap_or(basalt_net::lease::LEASE_CHECKPOINT_INTERVAL)
    });
    c.limits = KvLimits {
        max_txn_ops: f.max_txn_ops,
        max_request_bytes: f.max_request_bytes,
        quota_backend_bytes: if f.quota_backend_bytes == 0 {
            DEFAULT_QUOTA_BYTES
        } else {
            f.quota_backend_bytes
        },
    };
    c.cores = f.cores;
    c.spin_before_park = f.spin_before_park.filter(|d| !d.is_zero());
    c.auto_compaction =
        basalt_net::compactor::parse(&f.auto_compaction_mode, &f.auto_compaction_retention)?;
    c.tls = tls(f)?;
    Ok(c)
}

/// The TLS flags; an empty path (`--cert-file=`) is no path, as in etcd.
fn tls(f: &Flags) -> Result<TlsSettings, String> {
    let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let text = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
    let min_version =
        basalt_net::tls::parse_tls_version(&f.tls_min_version)?.unwrap_or(TlsVersion::Tls12);
    let settings = TlsSettings {
        client: TlsInfo {
            cert_file: path(&f.cert_file),
            key_file: path(&f.key_file),
            trusted_ca_file: path(&f.trusted_ca_file),
            client_cert_auth: f.client_cert_auth,
            crl_file: path(&f.client_crl_file),
            auto_tls: f.auto_tls,
            allowed_cn: None,
            allowed_hostname: None,
        },
        peer: TlsInfo {
            cert_file: path(&f.peer_cert_file),
            key_file: path(&f.peer_key_file),
            trusted_ca_file: path(&f.peer_trusted_ca_file),
            client_cert_auth: f.peer_client_cert_auth,
            crl_file: path(&f.peer_crl_file),
            auto_tls: f.peer_auto_tls,
            allowed_cn: text(&f.peer_cert_allowed_cn),
            allowed_hostname: text(&f.peer_cert_allowed_hostname),
        },
        self_signed_cert_validity: f.self_signed_cert_validity,
        cipher_suites: f
            .cipher_suites
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        min_version,
        max_version: basalt_net::tls::parse_tls_version(&f.tls_max_version)?,
    };
    settings.validate()?;
    Ok(settings)
}

/// etcd's rules for `--heartbeat-interval` and `--election-timeout` (its
/// `embed.Config.Validate`), with its messages.
fn timing(heartbeat: u64, election: u64) -> Result<basalt_net::node::NodeTiming, String> {
    if heartbeat == 0 {
        return Err(format!(
            "--heartbeat-interval must be >0 (set to {heartbeat}ms)"
        ));
    }
    if 5 * heartbeat > election {
        return Err(format!(
            "--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat}ms]"
        ));
    }
    if election > 50_000 {
        return Err(format!(
            "--election-timeout[{election}ms] is too long, and should be set less than 50000ms"
        ));
    }
    Ok(basalt_net::node::NodeTiming {
        heartbeat: Duration::from_millis(heartbeat),
        election_timeout: Duration::from_millis(election),
    })
}

/// SIGTERM and SIGINT, delivered synchronously to the main thread.
struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    fn block() -> std::io::Result<StopSignals> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before
        // use; pthread_sigmask only changes this thread's signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(StopSignals { set })
        }
    }

    /// Waits up to `timeout` for one of the signals; its number if one
    /// arrived.
    fn wait_for(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` was initialised in `block`; sigtimedwait reads
        // it and the timespec, and writes nothing we pass (null info).
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_durations_parse_with_units_and_limits() {
        assert_eq!(parse_spin("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_spin("50"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_spin("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(parse_spin("500ns"), Ok(Duration::from_nanos(500)));
        assert!(parse_spin("2s").is_err());
        assert!(parse_spin("5000ms").is_err());
        assert!(parse_spin("fast").is_err());
        assert!(parse_spin("").is_err());
    }
}
