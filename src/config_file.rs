//! etcd's `--config-file`: a YAML file whose keys are the flags' names
//! (`name`, `data-dir`, `listen-client-urls: http://…,http://…`,
//! `initial-cluster`, …), with the client and peer TLS settings under
//! `client-transport-security` and `peer-transport-security`:
//!
//! ```yaml
//! name: m1
//! data-dir: /var/lib/etcd
//! listen-client-urls: https://10.0.0.1:2379
//! advertise-client-urls: https://10.0.0.1:2379
//! heartbeat-interval: 100
//! grpc-keepalive-min-time: 5000000000   # a time.Duration: nanoseconds
//! client-transport-security:
//!   cert-file: /etc/etcd/server.crt
//!   key-file: /etc/etcd/server.key
//! ```
//!
//! etcd decodes the file as JSON into Go types, so a value of the wrong
//! type fails with Go's message ("cannot unmarshal string into Go struct
//! field configYAML.heartbeat-interval of type uint") and so does it here.
//! Keys match without regard to case and unknown keys are skipped, as
//! Go's `encoding/json` does (basalt names them in a warning). basalt's own
//! flags (`cores`, `spin-before-park`) are keys too.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use crate::flag_table::{Flag, Kind, Yaml as Place, FLAGS};
use crate::flags::{parse_value, Settings, Source, Value};

/// What a config file set, and the keys it held that etcd does not know.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub unknown_keys: Vec<String>,
}

/// Reads `path` into settings over etcd's defaults; the error is etcd's.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("open {}: {}", path.display(), go_io_error(&e)))?;
    parse(&text)
}

/// Go's wording for the usual reasons a file cannot be read.
fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Parses the text of a config file.
pub fn parse(text: &str) -> Result<Loaded, String> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("error converting YAML to JSON: yaml: {e}"))?;
    let mut settings = Settings::defaults();
    let mut unknown_keys = Vec::new();
    let top = match docs.into_iter().next() {
        None | Some(Yaml::Null) => {
            return Ok(Loaded {
                settings,
                unknown_keys,
            })
        }
        Some(Yaml::Hash(h)) => h,
        Some(other) => {
            return Err(unmarshal_error(&other, "Go value", "embed.configYAML"));
        }
    };
    for (key, value) in &top {
        let key = scalar_text(key);
        let section = if key.eq_ignore_ascii_case("client-transport-security") {
            Some(false)
        } else if key.eq_ignore_ascii_case("peer-transport-security") {
            Some(true)
        } else {
            None
        };
        if let Some(is_peer) = section {
            read_security(&mut settings, &key, value, is_peer, &mut unknown_keys)?;
            continue;
        }
        let flag = FLAGS
            .iter()
            .find(|f| f.yaml == Place::Top && f.name.eq_ignore_ascii_case(&key));
        match flag {
            Some(flag) => {
                let field = format!("Go struct field configYAML.{}", flag.name);
                if let Some(v) = decode(flag, value, &field)? {
                    settings.put(flag, v, Source::ConfigFile);
                }
            }
            None => unknown_keys.push(key),
        }
    }
    Ok(Loaded {
        settings,
        unknown_keys,
    })
}

fn read_security(
    settings: &mut Settings,
    section: &str,
    value: &Yaml,
    is_peer: bool,
    unknown_keys: &mut Vec<String>,
) -> Result<(), String> {
    let map = match value {
        Yaml::Null => return Ok(()),
        Yaml::Hash(h) => h,
        other => {
            let field = format!("Go struct field configYAML.{}", section.to_lowercase());
            return Err(unmarshal_error(other, &field, "embed.securityConfig"));
        }
    };
    for (key, value) in map {
        let key = scalar_text(key);
        let flag = FLAGS.iter().find(|f| match f.yaml {
            Place::Client(k) if !is_peer => k.eq_ignore_ascii_case(&key),
            Place::Peer(k) if is_peer => k.eq_ignore_ascii_case(&key),
            _ => false,
        });
        match flag {
            Some(flag) => {
                let name = match flag.yaml {
                    Place::Client(k) | Place::Peer(k) => k,
                    _ => flag.name,
                };
                let field = format!(
                    "Go struct field securityConfig.{}.{name}",
                    section.to_lowercase()
                );
                if let Some(v) = decode(flag, value, &field)? {
                    settings.put(flag, v, Source::ConfigFile);
                }
            }
            None => unknown_keys.push(format!("{section}.{key}")),
        }
    }
    Ok(())
}

/// A YAML key as text (keys are strings in etcd's files; numbers and
/// booleans become their text, as YAML-to-JSON conversion does).
fn scalar_text(key: &Yaml) -> String {
    match key {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The JSON kind Go names in "cannot unmarshal X into …".
fn json_kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::String(_) => "string",
        Yaml::Integer(_) | Yaml::Real(_) => "number",
        Yaml::Boolean(_) => "bool",
        Yaml::Array(_) => "array",
        Yaml::Hash(_) => "object",
        _ => "null",
    }
}

fn unmarshal_error(value: &Yaml, field: &str, go_type: &str) -> String {
    let kind = match value {
        // Go names the number when it does not fit the type.
        Yaml::Integer(i) => format!("number {i}"),
        Yaml::Real(r) => format!("number {r}"),
        other => json_kind(other).to_string(),
    };
    let kind = if go_type == "string" || go_type.starts_with("embed.") || go_type == "[]string" {
        json_kind(value).to_string()
    } else {
        kind
    };
    format!("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {kind} into {field} of type {go_type}")
}

/// A flag's value from YAML with Go's JSON typing; `None` for `null`
/// (Go leaves the field as it was).
fn decode(flag: &'static Flag, value: &Yaml, field: &str) -> Result<Option<Value>, String> {
    if matches!(value, Yaml::Null) {
        return Ok(None);
    }
    let go_type = flag.kind.go_type();
    let wrong = || unmarshal_error(value, field, go_type);
    let decoded = match flag.kind {
        Kind::Bool => match value {
            Yaml::Boolean(b) => Value::Bool(*b),
            // YAML 1.1 booleans, which the YAML parser etcd uses reads as bools.
            Yaml::String(s) => match s.as_str() {
                "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Value::Bool(true),
                "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Value::Bool(false),
                _ => return Err(wrong()),
            },
            _ => return Err(wrong()),
        },
        Kind::Uint | Kind::Uint64 | Kind::Uint32 => {
            let max = if flag.kind == Kind::Uint32 {
                u64::from(u32::MAX)
            } else {
                u64::MAX
            };
            match value {
                Yaml::Integer(i) if *i >= 0 && (*i as u64) <= max => Value::Uint(*i as u64),
                Yaml::Real(r) => match r.parse::<f64>() {
                    Ok(x) if x >= 0.0 && x.fract() == 0.0 && x <= max as f64 => {
                        Value::Uint(x as u64)
                    }
                    _ => return Err(wrong()),
                },
                _ => return Err(wrong()),
            }
        }
        Kind::Int | Kind::Int64 | Kind::Duration => {
            let n = match value {
                Yaml::Integer(i) => *i,
                _ => return Err(wrong()),
            };
            if flag.kind == Kind::Duration {
                Value::Nanos(n)
            } else {
                Value::Int(n)
            }
        }
        Kind::List { yaml_list: true } => match value {
            Yaml::Array(items) => {
                let mut list = Vec::new();
                for item in items {
                    match item {
                        Yaml::String(s) => list.push(s.clone()),
                        other => {
                            return Err(unmarshal_error(other, field, "string"));
                        }
                    }
                }
                Value::List(list)
            }
            _ => return Err(wrong()),
        },
        // Everything else is a Go string in etcd's file, checked as etcd
        // checks it after decoding.
        _ => match value {
            Yaml::String(s) => from_file_string(flag, s)?,
            _ => return Err(wrong()),
        },
    };
    Ok(Some(decoded))
}

/// A string key's value, checked as etcd checks it after decoding the
/// file (URLs: "unexpected error setting up listen-peer-urls: …").
fn from_file_string(flag: &'static Flag, text: &str) -> Result<Value, String> {
    match flag.kind {
        Kind::Urls { .. } => parse_value(flag.kind, text)
            .map_err(|e| format!("unexpected error setting up {}: {e}", flag.name)),
        Kind::Choice(valid) if flag.name == "initial-cluster-state" => {
            if valid.contains(&text) {
                Ok(Value::Text(text.to_string()))
            } else {
                Err(format!(
                    "unexpected clusterState {}",
                    crate::flags::go_quote(text)
                ))
            }
        }
        // etcd's words for its two other choices read from a file.
        Kind::Choice(_) if flag.name == "proxy" => parse_value(flag.kind, text)
            .map_err(|e| format!("unexpected error setting up proxyFlag: {e}")),
        Kind::Choice(_) if flag.name == "discovery-fallback" => parse_value(flag.kind, text)
            .map_err(|e| format!("unexpected error setting up discovery-fallback flag: {e}")),
        Kind::Choice(_) | Kind::Choices(_) | Kind::Spin => parse_value(flag.kind, text)
            .map_err(|e| format!("unexpected error setting up {}: {e}", flag.name)),
        Kind::List { .. } => parse_value(flag.kind, text),
        _ => Ok(Value::Text(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        parse(yaml).expect_err(yaml)
    }

    #[test]
    fn keys_set_the_flags_they_name() {
        let loaded = parse(
            "name: m1\nHeartbeat-Interval: 50\nelection-timeout: 500\n\
             listen-client-urls: http://127.0.0.1:1,http://127.0.0.1:2\n\
             grpc-keepalive-min-time: 5000000000\nenable-pprof: yes\n\
             cipher-suites: [TLS_AES_128_GCM_SHA256]\n\
             client-transport-security:\n  cert-file: /c\n  client-cert-auth: true\n\
             peer-transport-security: {key-file: /k, auto-tls: true}\n\
             bogus: 1\n",
        )
        .unwrap();
        let s = &loaded.settings;
        assert_eq!(s.text("name"), "m1");
        assert_eq!(s.uint("heartbeat-interval"), 50);
        assert_eq!(s.list("listen-client-urls").len(), 2);
        assert_eq!(s.nanos("grpc-keepalive-min-time"), 5_000_000_000);
        assert!(s.bool("enable-pprof"));
        assert_eq!(s.list("cipher-suites"), ["TLS_AES_128_GCM_SHA256"]);
        assert_eq!(s.text("cert-file"), "/c");
        assert!(s.bool("client-cert-auth"));
        assert_eq!(s.text("peer-key-file"), "/k");
        assert!(s.bool("peer-auto-tls"));
        assert!(!s.is_given("key-file"));
        assert_eq!(loaded.unknown_keys, ["bogus"]);
    }

    #[test]
    fn wrong_types_fail_with_gos_messages() {
        let prefix = "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal";
        for (yaml, says) in [
            ("heartbeat-interval: \"abc\"", "string into Go struct field configYAML.heartbeat-interval of type uint"),
            ("heartbeat-interval: -1", "number -1 into Go struct field configYAML.heartbeat-interval of type uint"),
            ("heartbeat-interval: 1.5", "number 1.5 into Go struct field configYAML.heartbeat-interval of type uint"),
            ("heartbeat-interval: true", "bool into Go struct field configYAML.heartbeat-interval of type uint"),
            ("heartbeat-interval: [1]", "array into Go struct field configYAML.heartbeat-interval of type uint"),
            ("auto-compaction-retention: 1", "number into Go struct field configYAML.auto-compaction-retention of type string"),
            ("grpc-keepalive-min-time: 5s", "string into Go struct field configYAML.grpc-keepalive-min-time of type time.Duration"),
            ("cipher-suites: foo", "string into Go struct field configYAML.cipher-suites of type []string"),
            ("cipher-suites: [1]", "number into Go struct field configYAML.cipher-suites of type string"),
            ("client-transport-security: 5", "number into Go struct field configYAML.client-transport-security of type embed.securityConfig"),
            ("client-transport-security: {cert-file: 1}", "number into Go struct field securityConfig.client-transport-security.cert-file of type string"),
            ("enable-pprof: \"true\"", "string into Go struct field configYAML.enable-pprof of type bool"),
            ("max-concurrent-streams: 99999999999", "number 99999999999 into Go struct field configYAML.max-concurrent-streams of type uint32"),
            ("- a", "array into Go value of type embed.configYAML"),
        ] {
            assert_eq!(err(yaml), format!("{prefix} {says}"), "{yaml}");
        }
        assert_eq!(
            err("initial-cluster-state: foo"),
            "unexpected clusterState \"foo\""
        );
        assert_eq!(
            err("listen-peer-urls: foo"),
            "unexpected error setting up listen-peer-urls: URL scheme must be http, https, unix, or unixs: foo"
        );
        assert!(err("name: [a").starts_with("error converting YAML to JSON: yaml: "));
    }

    #[test]
    fn an_empty_file_and_nulls_keep_the_defaults() {
        assert_eq!(parse("").unwrap().settings.text("name"), "default");
        assert_eq!(
            parse("name: null").unwrap().settings.text("name"),
            "default"
        );
    }
}
