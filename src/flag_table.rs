//! Every flag of etcd 3.4 and 3.5 as data: its name, the Go type etcd
//! parses it as (so a bad value fails with etcd's words), etcd's default,
//! which etcd versions have it, and what basalt does with it.
//!
//! The lists are etcd's own `newConfig` flag sets (`etcdmain/config.go` at
//! v3.4.23, `server/etcdmain/config.go` at v3.5.1), which hold more than
//! `etcd --help` shows (e.g. `--enable-grpc-gateway`, `--raft-read-timeout`,
//! the legacy flags etcd still accepts and ignores). `tests/flags.rs` checks
//! the table against `etcd --help` of both versions and `docs/flags.md`
//! against the table.
//!
//! Invariant: every name appears once; a flag acted on is read by
//! `server_config`, a flag without effect names why in its warning.

/// How etcd parses a flag's value (Go's `flag` package and etcd's
/// `pkg/flags` values), which is also how basalt parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Go `bool`: `--flag` alone means true.
    Bool,
    /// Go `uint` (64 bits here).
    Uint,
    Uint64,
    /// etcd's `uint32Value`: its errors are strconv's, unwrapped.
    Uint32,
    /// Go `int` (64 bits here).
    Int,
    Int64,
    /// Go `time.Duration` (`1h2m3.5s`); integer nanoseconds in a config file.
    Duration,
    Text,
    /// etcd's `UniqueURLs`: comma-separated http/https/unix/unixs URLs
    /// with a port and no path; `star` also admits `*` (`--cors`).
    Urls {
        star: bool,
    },
    /// Comma-separated strings (`StringsValue`, `UniqueStringsValue`); a
    /// list in a config file when `yaml_list`.
    List {
        yaml_list: bool,
    },
    /// etcd's `SelectiveStringValue`: one of these.
    Choice(&'static [&'static str]),
    /// etcd's `SelectiveStringsValue`: a comma-separated subset of these.
    Choices(&'static [&'static str]),
    /// A flag etcd keeps only to say it is no longer supported; takes any
    /// value or none (etcd's `IgnoredFlag`).
    Legacy,
    /// basalt's `--spin-before-park` (`50us`, `1ms`; at most 1s).
    Spin,
}

impl Kind {
    /// The Go type etcd decodes a config-file value into, for its messages.
    pub fn go_type(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Uint => "uint",
            Kind::Uint64 => "uint64",
            Kind::Uint32 => "uint32",
            Kind::Int => "int",
            Kind::Int64 => "int64",
            Kind::Duration => "time.Duration",
            Kind::List { yaml_list: true } => "[]string",
            _ => "string",
        }
    }

    /// Takes no value on the command line unless given with `=`.
    pub fn is_bool(self) -> bool {
        matches!(self, Kind::Bool | Kind::Legacy)
    }
}

/// Which etcd releases define the flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// etcd 3.4 and 3.5.
    Both,
    /// etcd 3.4 only (removed in 3.5).
    V34,
    /// etcd 3.5 only (added in 3.5).
    V35,
    /// Later etcd 3.5 releases (after 3.5.1), which basalt takes too.
    Later35,
    /// basalt's own.
    Basalt,
}

impl Since {
    pub fn label(self) -> &'static str {
        match self {
            Since::Both => "3.4, 3.5",
            Since::V34 => "3.4",
            Since::V35 => "3.5",
            Since::Later35 => "3.5.x (after 3.5.1)",
            Since::Basalt => "basalt only",
        }
    }
}

/// What basalt does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// basalt acts on it with etcd's meaning (the note says how).
    Acted(&'static str),
    /// Accepted with etcd's syntax; one warning at start when given, saying
    /// why it changes nothing.
    NoEffect(&'static str),
    /// Accepted at etcd's default; any other value is refused at start
    /// (exit 1), because running without the feature would be a different
    /// server from the one asked for.
    RefusedUnlessDefault(&'static str),
    /// A flag etcd itself ignores with a warning.
    Legacy,
}

#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    /// etcd's default as its `--help` prints it (basalt's where it differs,
    /// see `Treatment`).
    pub default: &'static str,
    pub since: Since,
    pub treatment: Treatment,
    /// The key in etcd's YAML config file; `None` when etcd's file has no
    /// such key. TLS keys live under `client-transport-security` /
    /// `peer-transport-security` (see `config_file`).
    pub yaml: Yaml,
}

/// Where a flag sits in etcd's config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yaml {
    /// A top-level key named as the flag.
    Top,
    /// `client-transport-security: {key: …}`.
    Client(&'static str),
    /// `peer-transport-security: {key: …}`.
    Peer(&'static str),
    /// Not settable from etcd's config file.
    None,
}

const fn f(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    since: Since,
    treatment: Treatment,
) -> Flag {
    Flag {
        name,
        kind,
        default,
        since,
        treatment,
        yaml: Yaml::Top,
    }
}

const fn no_yaml(flag: Flag) -> Flag {
    Flag {
        yaml: Yaml::None,
        ..flag
    }
}

const fn client(key: &'static str, flag: Flag) -> Flag {
    Flag {
        yaml: Yaml::Client(key),
        ..flag
    }
}

const fn peer(key: &'static str, flag: Flag) -> Flag {
    Flag {
        yaml: Yaml::Peer(key),
        ..flag
    }
}

use Kind::{Bool, Choice, Choices, Duration, Int, Int64, Text, Uint, Uint32, Uint64};
use Since::{Basalt, Both, Later35, V34, V35};
use Treatment::{Acted, Legacy, NoEffect, RefusedUnlessDefault};

const URLS: Kind = Kind::Urls { star: false };
const LIST: Kind = Kind::List { yaml_list: false };
const YAML_LIST: Kind = Kind::List { yaml_list: true };

const STORAGE: &str = "basalt's storage is not bbolt: it has its own WAL and trees";
const NO_V2: &str = "basalt serves the v3 API only";
const LOGGING: &str = "basalt logs with its own format to stderr (or --log-outputs)";
const TRACING: &str = "basalt has no OpenTelemetry tracing";

/// etcd 3.4's and 3.5's flags, then basalt's own.
pub const FLAGS: &[Flag] = &[
    no_yaml(f("config-file", Text, "", Both, Acted("read etcd's YAML config file; other flags and ETCD_* variables are then ignored, as in etcd"))),
    // ---- member ----
    f("name", Text, "default", Both, Acted("member name")),
    f("data-dir", Text, "${name}.basalt", Both, Acted("data directory (basalt's default is ${name}.basalt)")),
    f("wal-dir", Text, "", Both, Acted("the WAL's own directory (default <data-dir>/member/wal)")),
    f("listen-peer-urls", URLS, "http://localhost:2380", Both, Acted("peer listeners")),
    f("listen-client-urls", URLS, "http://localhost:2379", Both, Acted("client listeners")),
    f("listen-metrics-urls", URLS, "", Both, Acted("/metrics and /health listeners")),
    f("max-snapshots", Uint, "5", Both, NoEffect("basalt keeps no snapshot files; its store is checkpointed in place")),
    f("max-wals", Uint, "5", Both, NoEffect("basalt releases WAL segments below its checkpoint itself")),
    f("snapshot-count", Uint64, "10000", Both, Acted("applied entries between store checkpoints (etcd's default is 100000)")),
    f("heartbeat-interval", Uint, "100", Both, Acted("Raft heartbeat (one tick), ms")),
    f("election-timeout", Uint, "1000", Both, Acted("Raft election timeout, ms")),
    f("initial-election-tick-advance", Bool, "true", Both, NoEffect("basalt's Raft does not fast-forward election ticks at boot")),
    f("quota-backend-bytes", Int64, "0", Both, Acted("NOSPACE alarm threshold (0: 2 GiB, negative: no quota)")),
    f("backend-bbolt-freelist-type", Text, "map", V35, NoEffect(STORAGE)),
    f("backend-batch-interval", Duration, "0s", Both, NoEffect(STORAGE)),
    f("backend-batch-limit", Int, "0", Both, NoEffect(STORAGE)),
    f("max-txn-ops", Uint, "128", Both, Acted("operations per transaction")),
    f("max-request-bytes", Uint, "1572864", Both, Acted("largest client request")),
    f("max-concurrent-streams", Uint32, "4294967295", V34, Acted("gRPC streams per client connection (basalt caps it at 10000)")),
    f("grpc-keepalive-min-time", Duration, "5s", Both, NoEffect("basalt's HTTP/2 layer answers every client ping and cannot tell too frequent ones apart")),
    f("grpc-keepalive-interval", Duration, "2h0m0s", Both, Acted("how often the server pings each client connection")),
    f("grpc-keepalive-timeout", Duration, "20s", Both, Acted("a connection whose client does not answer a ping this long is closed")),
    no_yaml(f("socket-reuse-port", Bool, "false", V35, NoEffect("basalt binds its ports with SO_REUSEADDR only"))),
    no_yaml(f("socket-reuse-address", Bool, "false", V35, NoEffect("basalt always binds its ports with SO_REUSEADDR"))),
    no_yaml(f("raft-read-timeout", Duration, "5s", V35, NoEffect("basalt's peer transport has its own timeouts"))),
    no_yaml(f("raft-write-timeout", Duration, "5s", V35, NoEffect("basalt's peer transport has its own timeouts (5 s write)"))),
    // ---- clustering ----
    f("initial-advertise-peer-urls", URLS, "http://localhost:2380", Both, Acted("this member's peer URLs")),
    f("advertise-client-urls", URLS, "http://localhost:2379", Both, Acted("client URLs reported by MemberList")),
    f("discovery", Text, "", Both, RefusedUnlessDefault("basalt has no discovery service bootstrap: list the members in --initial-cluster")),
    f("discovery-fallback", Choice(&["proxy", "exit"]), "proxy", Both, NoEffect("basalt has no discovery bootstrap")),
    f("discovery-proxy", Text, "", Both, NoEffect("basalt has no discovery bootstrap")),
    f("discovery-srv", Text, "", Both, RefusedUnlessDefault("basalt has no DNS SRV bootstrap: list the members in --initial-cluster")),
    f("discovery-srv-name", Text, "", Both, RefusedUnlessDefault("basalt has no DNS SRV bootstrap: list the members in --initial-cluster")),
    f("initial-cluster", Text, "default=http://localhost:2380", Both, Acted("founding members")),
    f("initial-cluster-token", Text, "etcd-cluster", Both, Acted("part of the member and cluster ids")),
    f("initial-cluster-state", Choice(&["new", "existing"]), "new", Both, Acted("'existing' joins a running cluster after `etcdctl member add`")),
    f("strict-reconfig-check", Bool, "true", Both, NoEffect("basalt refuses every membership change yet")),
    f("pre-vote", Bool, "false (3.5: true)", Both, Acted("Raft's pre-vote phase; on unless --pre-vote=false (etcd 3.5's default)")),
    f("enable-v2", Bool, "false", Both, RefusedUnlessDefault(NO_V2)),
    f("experimental-enable-v2v3", Text, "", Both, RefusedUnlessDefault(NO_V2)),
    f("v2-deprecation", Choices(&["not-yet", "write-only", "write-only-drop-data", "gone"]), "not-yet", V35, NoEffect("basalt has no v2 store at all")),
    // ---- proxy (v2) ----
    f("proxy", Choice(&["off", "readonly", "on"]), "off", Both, RefusedUnlessDefault("basalt has no v2 proxy mode")),
    f("proxy-failure-wait", Uint, "5000", Both, NoEffect("basalt has no v2 proxy mode")),
    f("proxy-refresh-interval", Uint, "30000", Both, NoEffect("basalt has no v2 proxy mode")),
    f("proxy-dial-timeout", Uint, "1000", Both, NoEffect("basalt has no v2 proxy mode")),
    f("proxy-write-timeout", Uint, "5000", Both, NoEffect("basalt has no v2 proxy mode")),
    f("proxy-read-timeout", Uint, "0", Both, NoEffect("basalt has no v2 proxy mode")),
    // ---- security ----
    client("cert-file", f("cert-file", Text, "", Both, Acted("client TLS certificate"))),
    client("key-file", f("key-file", Text, "", Both, Acted("client TLS key"))),
    client("client-cert-file", f("client-cert-file", Text, "", V35, NoEffect("basalt dials no client-side TLS connections with the client certificate"))),
    client("client-key-file", f("client-key-file", Text, "", V35, NoEffect("basalt dials no client-side TLS connections with the client key"))),
    client("client-cert-auth", f("client-cert-auth", Bool, "false", Both, Acted("require client certificates"))),
    no_yaml(f("client-crl-file", Text, "", Both, Acted("client certificate revocation list"))),
    no_yaml(f("client-cert-allowed-hostname", Text, "", Both, Acted("a client certificate must be valid for this host name"))),
    client("trusted-ca-file", f("trusted-ca-file", Text, "", Both, Acted("CA for client certificates"))),
    client("auto-tls", f("auto-tls", Bool, "false", Both, Acted("self-signed client TLS"))),
    peer("cert-file", f("peer-cert-file", Text, "", Both, Acted("peer TLS certificate"))),
    peer("key-file", f("peer-key-file", Text, "", Both, Acted("peer TLS key"))),
    peer("client-cert-file", f("peer-client-cert-file", Text, "", V35, NoEffect("basalt dials peers with --peer-cert-file"))),
    peer("client-key-file", f("peer-client-key-file", Text, "", V35, NoEffect("basalt dials peers with --peer-key-file"))),
    peer("client-cert-auth", f("peer-client-cert-auth", Bool, "false", Both, Acted("require peer certificates"))),
    peer("trusted-ca-file", f("peer-trusted-ca-file", Text, "", Both, Acted("CA for peer certificates"))),
    peer("auto-tls", f("peer-auto-tls", Bool, "false", Both, Acted("self-signed peer TLS"))),
    f("self-signed-cert-validity", Uint, "1", V35, Acted("years of validity of --auto-tls/--peer-auto-tls certificates")),
    no_yaml(f("peer-crl-file", Text, "", Both, Acted("peer certificate revocation list"))),
    no_yaml(f("peer-cert-allowed-cn", Text, "", Both, Acted("a peer certificate must have this CN"))),
    no_yaml(f("peer-cert-allowed-hostname", Text, "", Both, Acted("a peer certificate must be valid for this host name"))),
    f("cipher-suites", YAML_LIST, "", Both, Acted("TLS 1.2 cipher suites (Go names)")),
    f("tls-min-version", Text, "TLS1.2", Later35, Acted("oldest TLS version")),
    f("tls-max-version", Text, "", Later35, Acted("newest TLS version")),
    no_yaml(f("experimental-peer-skip-client-san-verification", Bool, "false", Both, NoEffect("basalt does not check the SAN of a peer's client certificate against its address"))),
    f("cors", Kind::Urls { star: true }, "*", Both, NoEffect("basalt serves no browser-facing HTTP API")),
    f("host-whitelist", LIST, "*", Both, NoEffect("basalt serves no v2 HTTP API")),
    // ---- logging ----
    f("logger", Text, "capnslog (3.5: zap)", Both, Acted("zap: etcd's JSON lines (level, ts, caller, msg, then the fields); otherwise basalt's text lines")),
    f("log-output", YAML_LIST, "default", V34, NoEffect("deprecated in etcd 3.4: use --log-outputs")),
    f("log-outputs", YAML_LIST, "default", Both, Acted("default/stderr, stdout, or a file to append to")),
    f("debug", Bool, "false", V34, Acted("same as --log-level=debug")),
    f("log-level", Text, "info", Both, Acted("log level (panic and fatal log errors only)")),
    f("log-package-levels", Text, "", V34, NoEffect(LOGGING)),
    f("enable-log-rotation", Bool, "false", V35, NoEffect(LOGGING)),
    f("log-rotation-config-json", Text, "{\"maxsize\": 100, \"maxage\": 0, \"maxbackups\": 0, \"localtime\": false, \"compress\": false}", V35, NoEffect(LOGGING)),
    no_yaml(f("version", Bool, "false", Both, Acted("print the version and exit"))),
    f("auto-compaction-retention", Text, "0", Both, Acted("compaction retention")),
    f("auto-compaction-mode", Text, "periodic", Both, Acted("periodic or revision")),
    // ---- profiling, metrics, auth ----
    f("enable-pprof", Bool, "false", Both, NoEffect("basalt has no Go runtime profiler; see docs/tuning.md for perf")),
    f("metrics", Text, "basic", Both, Acted("extensive adds grpc_server_handling_seconds, as in etcd")),
    f("experimental-enable-distributed-tracing", Bool, "false", V35, NoEffect(TRACING)),
    f("experimental-distributed-tracing-address", Text, "localhost:4317", V35, NoEffect(TRACING)),
    f("experimental-distributed-tracing-service-name", Text, "etcd", V35, NoEffect(TRACING)),
    f("experimental-distributed-tracing-instance-id", Text, "", V35, NoEffect(TRACING)),
    f("auth-token", Text, "simple", Both, Acted("auth token type and options")),
    f("bcrypt-cost", Uint, "10", Both, Acted("bcrypt cost of password hashes")),
    f("auth-token-ttl", Uint, "300", Both, Acted("simple token lifetime in seconds")),
    f("enable-grpc-gateway", Bool, "true", Both, NoEffect("basalt serves no gRPC gateway (JSON over HTTP)")),
    // ---- experimental ----
    f("experimental-initial-corrupt-check", Bool, "false", Both, Acted("a restarted member compares its HashKV with every peer's before serving clients and exits 1 if one differs after the same compaction")),
    f("experimental-corrupt-check-time", Duration, "0s", Both, Acted("how often the leader compares every member's HashKV through the log (0s: never); a mismatch raises CORRUPT")),
    f("experimental-backend-bbolt-freelist-type", Text, "array", V34, NoEffect(STORAGE)),
    f("experimental-enable-lease-checkpoint", Bool, "false", Both, Acted("the leader records long leases' remaining TTLs in the log every 5 minutes; a new leader starts them from there")),
    f("experimental-enable-lease-checkpoint-persist", Bool, "false", V34, NoEffect("basalt keeps checkpointed TTLs in memory only, as etcd 3.4 without this flag")),
    f("experimental-compaction-batch-limit", Int, "1000", Both, NoEffect(STORAGE)),
    f("experimental-watch-progress-notify-interval", Duration, "10m0s", Both, Acted("how often watchers that asked for progress notifications get one")),
    f("experimental-downgrade-check-time", Duration, "5s", V35, NoEffect("basalt has no cluster downgrade")),
    f("experimental-warning-apply-duration", Duration, "100ms", Both, NoEffect("basalt does not log slow applies")),
    f("experimental-memory-mlock", Bool, "false", V35, NoEffect(STORAGE)),
    f("experimental-txn-mode-write-with-shared-buffer", Bool, "true", V35, NoEffect(STORAGE)),
    f("experimental-bootstrap-defrag-threshold-megabytes", Uint, "0", V35, NoEffect(STORAGE)),
    f("experimental-snapshot-catchup-entries", Uint64, "5000", Later35, Acted("log entries kept behind a checkpoint for slow followers")),
    // ---- unsafe ----
    f("unsafe-no-fsync", Bool, "false", Both, Acted("WAL batches are acknowledged without fdatasync (a power loss can lose them; a killed process cannot); store checkpoints still sync")),
    f("force-new-cluster", Bool, "false", Both, RefusedUnlessDefault("basalt cannot rewrite a member's cluster to one member")),
    // ---- flags etcd accepts and ignores (its `ignored` list) ----
    no_yaml(f("cluster-active-size", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("cluster-remove-delay", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("cluster-sync-interval", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("config", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("force", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("max-result-buffer", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("max-retry-attempts", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("peer-heartbeat-interval", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("peer-election-timeout", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("retry-interval", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("snapshot", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("v", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("vv", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("test.coverprofile", Kind::Legacy, "", Both, Legacy)),
    no_yaml(f("test.outputdir", Kind::Legacy, "", Both, Legacy)),
    // ---- basalt's own ----
    no_yaml(f("restore-snapshot", Text, "", Basalt, Acted("restore a file saved by `etcdctl snapshot save` into a new --data-dir, then exit"))),
    no_yaml(f("skip-hash-check", Bool, "false", Basalt, Acted("with --restore-snapshot: no SHA-256 trailer needed (etcdctl's flag)"))),
    f("cores", Uint, "0", Basalt, Acted("executors, one pinned per core; 0: every CPU allowed")),
    f("experimental-lease-checkpoint-interval", Duration, "5m0s", Basalt, Acted("basalt (tests): how often lease checkpoints are made (etcd's fixed 5m)")),
    f("spin-before-park", Kind::Spin, "", Basalt, Acted("how long an idle executor spins before parking (e.g. 50us); default: park at once")),
];

/// The flag called `name`, if etcd or basalt has one.
pub fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_appears_once() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a flag is listed twice");
    }

    #[test]
    fn refused_flags_have_a_default_that_is_accepted() {
        for flag in FLAGS {
            if let Treatment::RefusedUnlessDefault(_) = flag.treatment {
                assert!(
                    matches!(flag.kind, Kind::Bool | Kind::Text | Kind::Choice(_)),
                    "{}",
                    flag.name
                );
            }
        }
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// docs/flags.md has one row per flag (legacy ones in a sentence),
    /// saying what the table says basalt does with it.
    #[test]
    fn docs_flags_md_matches_the_table() {
        let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flags.md"));
        for flag in FLAGS {
            let cell = format!("| `--{}` |", flag.name);
            let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with(&cell)).collect();
            let says = match flag.treatment {
                Treatment::Acted(_) => "| acted on |",
                Treatment::NoEffect(_) => "| accepted, **no effect** (warns) |",
                Treatment::RefusedUnlessDefault(_) => "| **refused** unless",
                Treatment::Legacy => {
                    assert!(doc.contains(&format!("`--{}`", flag.name)), "{}", flag.name);
                    continue;
                }
            };
            assert_eq!(
                rows.len(),
                1,
                "docs/flags.md rows for --{}: {rows:?}",
                flag.name
            );
            assert!(rows[0].contains(says), "--{}: {}", flag.name, rows[0]);
        }
    }
}
