//! From etcd's settings (flags, `ETCD_*` variables or a config file) to
//! the server's [`Config`], with etcd's checks and messages, and the
//! warnings for what basalt accepts but does not act on.

use std::path::PathBuf;
use std::time::Duration;

use basalt_net::config::InitialClusterState;
use basalt_net::services::KvLimits;
use basalt_net::tls::{TlsInfo, TlsSettings, TlsVersion};
use basalt_net::Config;

use crate::flag_table::{Treatment, FLAGS};
use crate::flags::{Settings, Source};

/// etcd's default quota: 2 GiB (`--quota-backend-bytes 0` means this).
const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// etcd's second line when client URLs are listened on but not advertised.
pub const ADVERTISE_HINT: &str = "When listening on specific address(es), this etcd process must advertise accessible url(s) to each connected client.";

/// A setting basalt cannot start with: what to say, and the exit status
/// etcd ends with for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub exit: u8,
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal { message, exit: 1 }
    }
}

/// Where log lines go (`--log-outputs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// `--log-level` (or `--debug`) and `--log-outputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// A tracing filter: etcd's level names mapped to tracing's, or a
    /// tracing directive as given (basalt's extension, e.g.
    /// `basalt_net=debug`).
    pub filter: String,
    pub outputs: Vec<LogOutput>,
    /// `--logger zap`: etcd's JSON lines (see `crate::zap`).
    pub zap: bool,
}

impl Default for Logging {
    /// etcd's defaults: info to stderr.
    fn default() -> Logging {
        Logging {
            filter: "info".into(),
            outputs: vec![LogOutput::Stderr],
            zap: false,
        }
    }
}

/// What to log about the settings once logging is up.
pub fn warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for flag in FLAGS {
        let Some(source) = settings
            .given()
            .find(|(n, _)| *n == flag.name)
            .map(|(_, s)| s)
        else {
            continue;
        };
        let how = match source {
            Source::Flag => format!("--{}", flag.name),
            Source::Env(key) => format!("--{} (from {key})", flag.name),
            Source::ConfigFile => format!("--{} (config file key {})", flag.name, flag.name),
        };
        match flag.treatment {
            Treatment::NoEffect(why) => {
                out.push(format!(
                    "{how} is accepted but has no effect in basalt: {why}"
                ));
            }
            Treatment::RefusedUnlessDefault(why) if !settings.differs_from_default(flag) => {
                out.push(format!(
                    "{how} is accepted but has no effect in basalt: {why}"
                ));
            }
            // etcd's own warning for these.
            Treatment::Legacy => out.push(format!(
                "flag \"-{}\" is no longer supported - ignoring.",
                flag.name
            )),
            _ => {}
        }
    }
    out
}

/// Checks etcd makes before starting, and basalt's refusals.
pub fn check(settings: &Settings) -> Result<(), Refusal> {
    for flag in FLAGS {
        if let Treatment::RefusedUnlessDefault(why) = flag.treatment {
            if settings.differs_from_default(flag) {
                return Err(format!("--{} is not supported by basalt: {why}", flag.name).into());
            }
        }
    }
    let logger = settings.text("logger");
    if logger != "zap" && logger != "capnslog" {
        return Err(format!("unknown logger option {}", crate::flags::go_quote(logger)).into());
    }
    let token = settings.text("auth-token");
    let token_type = token.split(',').next().unwrap_or("");
    if token_type != "simple" && token_type != "jwt" {
        return Err(
            format!("auth: invalid auth options (unknown token type: {token_type})").into(),
        );
    }
    if settings.is_given("skip-hash-check") && settings.text("restore-snapshot").is_empty() {
        return Err(String::from("--skip-hash-check is only for --restore-snapshot").into());
    }
    // Only from the command line or environment: a config file keeps the
    // default advertise URL (etcd's `configFromCmdLine` alone clears it).
    let from_file = |name| settings.source(name) == Some(&Source::ConfigFile);
    if settings.is_given("listen-client-urls")
        && !from_file("listen-client-urls")
        && !settings.is_given("advertise-client-urls")
        && settings.text("restore-snapshot").is_empty()
    {
        return Err(String::from(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
        )
        .into());
    }
    Ok(())
}

/// `--log-level`, `--debug` and `--log-outputs`.
pub fn logging(settings: &Settings) -> Result<Logging, Refusal> {
    let level = settings.text("log-level");
    let filter = if settings.bool("debug") {
        "debug".to_string()
    } else {
        match level {
            "trace" | "debug" | "info" | "warn" | "error" => level.to_string(),
            // tracing has no levels above error.
            "dpanic" | "panic" | "fatal" => "error".to_string(),
            other if other.contains('=') => other.to_string(),
            // etcd panics here, which ends it with status 2.
            other => {
                return Err(Refusal {
                    message: format!("unknown level {}", crate::flags::go_quote(other)),
                    exit: 2,
                })
            }
        }
    };
    let mut outputs = Vec::new();
    for out in settings.list("log-outputs") {
        let out = match out.as_str() {
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            "" => continue,
            path => LogOutput::File(PathBuf::from(path)),
        };
        if !outputs.contains(&out) {
            outputs.push(out);
        }
    }
    if outputs.is_empty() {
        outputs.push(LogOutput::Stderr);
    }
    Ok(Logging {
        filter,
        outputs,
        zap: settings.text("logger") == "zap",
    })
}

/// The server's configuration.
pub fn config(s: &Settings) -> Result<Config, String> {
    let name = s.text("name").to_string();
    let data_dir = match s.text("data-dir") {
        "" => PathBuf::from(format!("{name}.basalt")),
        _ if !s.is_given("data-dir") => PathBuf::from(format!("{name}.basalt")),
        dir => PathBuf::from(dir),
    };
    let mut c = Config::new(data_dir);
    c.wal_dir = Some(PathBuf::from(s.text("wal-dir"))).filter(|d| !d.as_os_str().is_empty());
    c.name = name;
    c.listen_client_urls = s.list("listen-client-urls").to_vec();
    c.advertise_client_urls = s.list("advertise-client-urls").to_vec();
    c.listen_metrics_urls = s.list("listen-metrics-urls").to_vec();
    c.initial_advertise_peer_urls = s.list("initial-advertise-peer-urls").to_vec();
    c.initial_cluster = if s.is_given("initial-cluster") {
        s.text("initial-cluster").to_string()
    } else {
        String::new()
    };
    c.initial_cluster_token = s.text("initial-cluster-token").to_string();
    c.initial_cluster_state = match s.text("initial-cluster-state") {
        "existing" => InitialClusterState::Existing,
        _ => InitialClusterState::New,
    };
    c.listen_peer_urls = s.list("listen-peer-urls").to_vec();
    c.timing = timing(s.uint("heartbeat-interval"), s.uint("election-timeout"))?;
    c.snapshot_count = s.uint("snapshot-count");
    c.catchup_entries = s.uint("experimental-snapshot-catchup-entries");
    let nanos = |name: &str| std::time::Duration::from_nanos(s.nanos(name).max(0) as u64);
    c.corrupt_check_interval =
        Some(nanos("experimental-corrupt-check-time")).filter(|d| !d.is_zero());
    c.initial_corrupt_check = s.bool("experimental-initial-corrupt-check");
    // etcd 3.5's default (the version basalt reports) unless given.
    c.pre_vote = !s.is_given("pre-vote") || s.bool("pre-vote");
    // etcd does not check the value: anything but "extensive" is basic.
    c.metrics_extensive = s.text("metrics") == "extensive";
    c.wal.sync = !s.bool("unsafe-no-fsync");
    c.lease_checkpoint_interval = s
        .bool("experimental-enable-lease-checkpoint")
        .then(|| nanos("experimental-lease-checkpoint-interval"))
        .filter(|d| !d.is_zero());
    let quota = s.int("quota-backend-bytes");
    c.limits = KvLimits {
        max_txn_ops: usize::try_from(s.uint("max-txn-ops")).unwrap_or(usize::MAX),
        max_request_bytes: usize::try_from(s.uint("max-request-bytes")).unwrap_or(usize::MAX),
        quota_backend_bytes: match quota {
            0 => DEFAULT_QUOTA_BYTES,
            // etcd: a negative quota disables the quota.
            q if q < 0 => u64::MAX,
            q => q as u64,
        },
    };
    // etcd applies only a positive interval.
    let progress = s.nanos("experimental-watch-progress-notify-interval");
    if progress > 0 {
        c.watch_progress_notify_interval = Duration::from_nanos(progress as u64);
    }
    c.max_concurrent_streams = u32::try_from(s.uint("max-concurrent-streams")).unwrap_or(u32::MAX);
    // grpc-go pings only with a positive interval and timeout.
    let every = std::time::Duration::from_nanos(s.nanos("grpc-keepalive-interval").max(0) as u64);
    let timeout = std::time::Duration::from_nanos(s.nanos("grpc-keepalive-timeout").max(0) as u64);
    c.grpc_keepalive = (!every.is_zero() && !timeout.is_zero()).then_some((every, timeout));
    c.cores = usize::try_from(s.uint("cores")).unwrap_or(usize::MAX);
    c.spin_before_park = match s.text("spin-before-park") {
        "" => None,
        text => Some(crate::flags::parse_spin(text)?).filter(|d| !d.is_zero()),
    };
    c.auto_compaction = basalt_net::compactor::parse(
        s.text("auto-compaction-mode"),
        s.text("auto-compaction-retention"),
    )?;
    c.tls = tls(s)?;
    let ttl = Duration::from_secs(s.uint("auth-token-ttl"));
    c.auth_token = basalt_net::auth::TokenConfig::parse(s.text("auth-token"), ttl)?;
    // Go's bcrypt hashes at its default cost below its minimum, and cannot
    // above its maximum.
    c.bcrypt_cost = match s.uint("bcrypt-cost") {
        cost if cost < 4 => basalt_net::auth::DEFAULT_BCRYPT_COST,
        cost if cost > 31 => return Err(format!("invalid --bcrypt-cost {cost}: at most 31")),
        cost => cost as u32,
    };
    Ok(c)
}

/// The TLS settings; an empty path (`--cert-file=`) is no path, as in etcd.
fn tls(s: &Settings) -> Result<TlsSettings, String> {
    let path = |name: &str| Some(PathBuf::from(s.text(name))).filter(|p| !p.as_os_str().is_empty());
    let text = |name: &str| Some(s.text(name).to_string()).filter(|t| !t.is_empty());
    let min_version =
        basalt_net::tls::parse_tls_version(s.text("tls-min-version"))?.unwrap_or(TlsVersion::Tls12);
    let settings = TlsSettings {
        client: TlsInfo {
            cert_file: path("cert-file"),
            key_file: path("key-file"),
            trusted_ca_file: path("trusted-ca-file"),
            client_cert_auth: s.bool("client-cert-auth"),
            crl_file: path("client-crl-file"),
            auto_tls: s.bool("auto-tls"),
            allowed_cn: None,
            allowed_hostname: text("client-cert-allowed-hostname"),
        },
        peer: TlsInfo {
            cert_file: path("peer-cert-file"),
            key_file: path("peer-key-file"),
            trusted_ca_file: path("peer-trusted-ca-file"),
            client_cert_auth: s.bool("peer-client-cert-auth"),
            crl_file: path("peer-crl-file"),
            auto_tls: s.bool("peer-auto-tls"),
            allowed_cn: text("peer-cert-allowed-cn"),
            allowed_hostname: text("peer-cert-allowed-hostname"),
        },
        self_signed_cert_validity: u32::try_from(s.uint("self-signed-cert-validity"))
            .unwrap_or(u32::MAX),
        cipher_suites: s
            .list("cipher-suites")
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect(),
        min_version,
        max_version: basalt_net::tls::parse_tls_version(s.text("tls-max-version"))?,
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
    if heartbeat.saturating_mul(5) > election {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::parse;

    fn settings(args: &[&str]) -> Settings {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn flags_without_effect_warn_once_each_and_only_when_given() {
        assert!(warnings(&settings(&[])).is_empty());
        let w = warnings(&settings(&[
            "--enable-pprof",
            "--max-wals=3",
            "--v",
            "--enable-v2=false",
        ]));
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w
            .iter()
            .any(|l| l.starts_with("--enable-pprof is accepted but has no effect in basalt")));
        assert!(w.contains(&"flag \"-v\" is no longer supported - ignoring.".to_string()));
    }

    #[test]
    fn features_basalt_lacks_are_refused_when_asked_for() {
        let e = check(&settings(&["--enable-v2=true"])).unwrap_err();
        assert_eq!(
            e.message,
            "--enable-v2 is not supported by basalt: basalt serves the v3 API only"
        );
        assert_eq!(e.exit, 1);
        assert!(check(&settings(&["--proxy=on"])).is_err());
        assert!(check(&settings(&["--force-new-cluster"])).is_err());
        assert!(check(&settings(&["--discovery=https://d/x"])).is_err());
        assert!(check(&settings(&["--enable-v2=false", "--proxy=off"])).is_ok());
    }

    #[test]
    fn etcds_checks_hold() {
        let e = check(&settings(&["--logger=bogus"])).unwrap_err();
        assert_eq!(e.message, "unknown logger option \"bogus\"");
        let e = logging(&settings(&["--log-level=bogus"])).unwrap_err();
        assert_eq!((e.message.as_str(), e.exit), ("unknown level \"bogus\"", 2));
        assert_eq!(logging(&settings(&["--debug"])).unwrap().filter, "debug");
        assert!(check(&settings(&["--listen-client-urls=http://127.0.0.1:1"])).is_err());
    }

    /// Catches: the auth flags read but not put into the configuration.
    #[test]
    fn auth_flags_act() {
        use basalt_net::auth::TokenConfig;
        use std::time::Duration;
        let c = config(&settings(&["--bcrypt-cost=4", "--auth-token-ttl=7"])).unwrap();
        assert_eq!(c.bcrypt_cost, 4);
        assert_eq!(
            c.auth_token,
            TokenConfig::Simple {
                ttl: Duration::from_secs(7)
            }
        );
        // Go's bcrypt: below its minimum, its default cost.
        assert_eq!(
            config(&settings(&["--bcrypt-cost=2"])).unwrap().bcrypt_cost,
            10
        );
        assert!(config(&settings(&["--bcrypt-cost=32"])).is_err());
        let c = config(&settings(&[
            "--auth-token=jwt,pub-key=/p,priv-key=/k,sign-method=RS256,ttl=1m",
        ]))
        .unwrap();
        assert!(
            matches!(c.auth_token, TokenConfig::Jwt { ttl, .. } if ttl == Duration::from_secs(60))
        );
        assert!(config(&settings(&["--auth-token=jwt,sign-method=RS256"])).is_err());
    }
}
